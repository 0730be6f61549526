"""Writing a split: its creation, its progress and the claim of its one writer
(:mod:`~nnsig_core.store.claims`); what is written updates the metadata cache of
:class:`~nnsig_core.store.split_reading.SplitReading`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import zarr
from zarr.core.sync import sync

from nnsig_core._util import to_json_safe
from nnsig_core.store.claims import SplitClaim
from nnsig_core.store.create import create_arrays
from nnsig_core.store.errors import StoreError
from nnsig_core.store.format import (
    COORDINATE_ARRAYS,
    SPLIT_ATTR,
    coordinate_values,
    layer_differences,
)
from nnsig_core.store.keys import chunk_indices, sync_metadata
from nnsig_core.store.split_reading import SplitReading


class SplitWriting(SplitReading):
    """The writing of splits, a mixin of :class:`~nnsig_core.store.ActivationStore`."""

    def create_split(
        self, split: str, info: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, zarr.Array]:
        """Create ``split``'s group, arrays and metadata, replacing a group of that name; a
        failure removes the half-made group."""
        self.require_writable(f"split {split!r}")
        self._remove(split)
        group = self.root.create_group(split)
        try:
            arrays = create_arrays(group, specs)
            for key in COORDINATE_ARRAYS:
                if key in arrays:
                    arrays.pop(key)[...] = coordinate_values(key, specs[key])
            group.attrs[SPLIT_ATTR] = to_json_safe(dict(info))
        except BaseException:
            self._remove(split)
            raise
        self._groups[split] = group
        self._meta[split] = to_json_safe(dict(info))
        self._splits = None
        self.consolidate_metadata()
        return arrays

    def remove_split(self, split: str) -> None:
        """Delete the group ``split`` and everything under it, without reading its metadata
        (which may be damaged: ``overwrite=True`` is then the fix)."""
        self._remove(split)
        self.consolidate_metadata()

    def _remove(self, split: str) -> None:
        self.require_writable(f"split {split!r}")
        sync(self.root.store_path.store.delete_dir(split))
        self._forget(split)
        self._damaged.pop(split, None)

    def split_arrays(self, split: str) -> dict[str, zarr.Array]:
        """Every array of ``split`` with one row per sample, by key (to continue or complete a
        capture); the coordinate arrays of other axes (``output``) are left out."""
        return {k: a for k, a in self._group(split).arrays() if k not in COORDINATE_ARRAYS}

    def chunk_indices(self, split: str, key: str) -> set[int]:
        """Indices (along samples) of the chunks of array ``key`` of ``split`` present in the
        store (one listing, no chunk read)."""
        return chunk_indices(self.root.store_path.store, f"{split}/{key}")

    def write_split_attrs(self, split: str, info: Mapping[str, Any]) -> None:
        """Replace the split's metadata (capture progress, completion); once the split is
        complete, the store's consolidated metadata is written again."""
        safe = to_json_safe(dict(info))
        self._group(split).attrs[SPLIT_ATTR] = safe
        self._meta[split] = safe
        if safe.get("complete"):
            self.consolidate_metadata()

    def sync_split(self, split: str) -> None:
        """fsync the split's metadata files and directories (local stores; a no-op elsewhere,
        where a completed write is durable), so what they record survives a power cut."""
        if self.path is not None:
            sync_metadata(self.path, split)

    def _forget(self, split: str) -> None:
        self._groups.pop(split, None)
        self._meta.pop(split, None)
        self._splits = None
        forget = getattr(self.root.store_path.store, "forget", None)
        if callable(forget):
            forget()

    def check_compatible(self, split: str, layers: Sequence[Mapping[str, Any]],
                         include_self: bool = False, level: str = "samples") -> None:
        """Raise :class:`StoreError` unless ``layers`` match every other split of the same
        ``level`` (and ``split`` itself with ``include_self``, for a resumed capture)."""
        for other in self.splits:
            if other == split and not include_self:
                continue
            if self.level(other) != level:
                continue
            problems = layer_differences(layers, self.layer_info(other), other, level)
            if problems:
                raise StoreError(f"This model does not match split {other!r} of the store "
                                 f"({'; '.join(problems)}). Capture the same layers of the same "
                                 "model, or use a new store.")

    def claim(self, split: str, break_stale: bool = False) -> SplitClaim:
        """Take the exclusive claim of one writer on ``split``, then forget cached metadata;
        ClaimError, naming the holder, when another capture holds it."""
        self.require_writable(f"split {split!r}")
        claim = SplitClaim(self.root, split, self.path, self.location).acquire(break_stale)
        self.refresh()
        return claim
