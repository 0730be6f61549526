"""The results area of a store: the groups of analyses, their signatures and scores."""

from __future__ import annotations

import logging

import zarr
from zarr.core.sync import sync

from nnsig_core.store.errors import StoreError
from nnsig_core.store.format import ANALYSIS_GROUP
from nnsig_core.store.leftovers import COPY_ATTR, LEFTOVER_AGE_S, collect, copy_record
from nnsig_core.store.pointers import HIDDEN, pointer_store, raw_store
from nnsig_core.store.split_reading import SplitReading

log = logging.getLogger("nnsig")


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
            if path.rpartition("/")[2].startswith(HIDDEN):  # a copy: who writes it
                return self.root.create_group(path, attributes={COPY_ATTR: copy_record()})
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
        """Make the group written at ``new_path`` (a sibling under ``analysis/``) the group at
        ``path`` by switching its pointer, then delete the old copy: never a mix of the two."""
        self.require_writable(f"group {path!r}")
        parent, _, leaf = new_path.rpartition("/")
        pointers = pointer_store(self.root.store_path.store)
        if (pointers is None or parent != path.rpartition("/")[0]
                or not path.startswith(ANALYSIS_GROUP + "/")):
            raise StoreError(f"Cannot replace {path!r} by {new_path!r}: a replacement is written "
                             f"as a sibling of the group it replaces, under {ANALYSIS_GROUP}/.")
        sync(pointers.switch(path, leaf))
        self.remove_leftovers_beside(path)
        self.consolidate_metadata()

    def remove_leftovers_beside(self, path: str) -> None:
        """Remove the copies killed saves left beside ``path`` (under ``analysis/``) whose
        writer is gone; a failure is logged, never raised (the save it follows is done)."""
        pointers = pointer_store(self.root.store_path.store)
        if pointers is None or self.read_only:
            return
        try:
            sync(collect(raw_store(pointers), sync(pointers.resolve(path.rpartition("/")[0]))))
        except Exception as exc:  # noqa: BLE001 - the save is done; the rest can wait
            log.warning("Copies left by killed saves beside %r were not removed (%s: %s); "
                        "store.clean() removes them.", path, type(exc).__name__, exc)

    def clean(self, older_than: float = LEFTOVER_AGE_S, dry_run: bool = False) -> list[str]:
        """Remove the copies left by killed saves that no pointer leads to and whose writer is
        gone; returns their paths.

        Parameters
        ----------
        older_than : float
            Seconds after which a copy's writer on another host is taken to be gone.
        dry_run : bool
            List them, remove nothing.
        """
        if not dry_run:
            self.require_writable("the removal of copies left by killed saves")
        inner = raw_store(self.root.store_path.store)
        return list(sync(collect(inner, None, older_than, dry_run)))
