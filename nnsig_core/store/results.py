"""The results area of a store: the groups of analyses, their signatures and scores.

Everything fitted or computed on the captured splits lives under
``analysis/`` (:data:`~nnsig_core.store.format.ANALYSIS_GROUP`); the paths come
from :mod:`~nnsig_core.store.format` and the analysis and diagnostics write
the groups' contents. :class:`ResultsArea` lists the analyses and opens,
creates, deletes and replaces groups by path: those under ``analysis/``, and
the few other paths capture asks about (whether a split's group exists, a
stale token row space to delete).
"""

from __future__ import annotations

import zarr
from zarr.core.sync import sync

from nnsig_core.store.errors import StoreError
from nnsig_core.store.format import ANALYSIS_GROUP
from nnsig_core.store.pointers import pointer_store
from nnsig_core.store.split_reading import SplitReading


class ResultsArea(SplitReading):
    """The groups of results, a mixin of :class:`~nnsig_core.store.ActivationStore`."""

    @property
    def analyses(self) -> list[str]:
        """Names of the analyses saved in the store."""
        if ANALYSIS_GROUP not in self.root:
            return []
        groups = self.root[ANALYSIS_GROUP].groups()  # type: ignore[union-attr]
        return sorted(name for name, _ in groups if not name.startswith("."))

    def group(self, path: str, create: bool = False) -> zarr.Group | None:
        """The group at ``path`` (``layout.analysis_path(name)``...), created when asked, else
        None when absent."""
        if create:
            self.require_writable(f"group {path!r}")
            return self.root.require_group(path)
        try:
            node = self.root[path]
        except KeyError:
            return None
        return node if isinstance(node, zarr.Group) else None

    def delete(self, path: str) -> None:
        """Remove the group or array at ``path`` (nothing when absent); under ``analysis/``
        the pointer goes first, then the copy it pointed to."""
        self.require_writable(f"the deletion of {path!r}")
        pointers = pointer_store(self.root.store_path.store)
        if pointers is not None and path.startswith(ANALYSIS_GROUP + "/"):
            sync(pointers.delete_dir(path))
        elif path in self.root:
            del self.root[path]
        else:
            return
        if not path.rpartition("/")[2].startswith("."):
            self.consolidate_metadata()

    def replace_group(self, new_path: str, path: str) -> None:
        """Make the whole group written at ``new_path`` (a sibling of ``path`` under
        ``analysis/``) the group at ``path``: one pointer document switched last, then the
        old copy deleted (:mod:`~nnsig_core.store.pointers`). A process killed at any moment
        leaves either the old group or the new one at ``path``, never a mix."""
        self.require_writable(f"group {path!r}")
        parent, _, leaf = new_path.rpartition("/")
        pointers = pointer_store(self.root.store_path.store)
        if (pointers is None or parent != path.rpartition("/")[0]
                or not path.startswith(ANALYSIS_GROUP + "/")):
            raise StoreError(f"Cannot replace {path!r} by {new_path!r}: a replacement is written "
                             f"as a sibling of the group it replaces, under {ANALYSIS_GROUP}/.")
        sync(pointers.switch(path, leaf))
        self.consolidate_metadata()
