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

from nnsig_core.store.format import ANALYSIS_GROUP
from nnsig_core.store.keys import move_group
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
        """Remove the group or array at ``path`` (nothing when absent)."""
        self.require_writable(f"the deletion of {path!r}")
        if path in self.root:
            del self.root[path]

    def replace_group(self, new_path: str, path: str) -> None:
        """Move the group at ``new_path`` to ``path``, replacing what was there only once the
        new one is whole (see :func:`~nnsig_core.store.keys.move_group`)."""
        self.require_writable(f"group {path!r}")
        move_group(self.root.store_path.store, new_path, path)
