"""A split on the cluster: its arrays as dask arrays in the same row blocks, and its fit rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core.analysis.selection import (
    check_selected,
    check_selection,
    label_counts_part,
    merge_label_counts,
    selection_block,
)
from nnsig_core.analysis.source import STORE_FIX
from nnsig_core.execute.blocks import reduce_columns
from nnsig_core.execute.dask_blocks import broadcast, rows_per_block
from nnsig_core.protocol import check_finite, nonfinite_rows
from nnsig_core.store import ActivationStore


@dataclass
class _LayerCheck:
    """What a block's NaN/Inf check needs to name the bad sample (read only on failure)."""

    store: ActivationStore
    split: str
    layer: str


class _SampleIndex:
    """``sample_index[row]`` read from the store on demand (a failing check reads one value)."""

    def __init__(self, store: ActivationStore, split: str) -> None:
        self.store, self.split = store, split

    def __getitem__(self, row: int) -> int:
        return int(self.store.sample_index(self.split, int(row), int(row) + 1)[0])


def _flat_checked(raw: np.ndarray, lo: int, check: _LayerCheck,
                  idx: np.ndarray | None = None) -> np.ndarray:
    """A block starting at row ``lo`` (its rows ``idx`` when given), flattened to float32 and
    checked for NaN/Inf."""
    block = np.asarray(raw).reshape(raw.shape[0], -1)
    if idx is not None:
        block = block[np.asarray(idx, dtype=np.int64)]
    if block.dtype != np.float32:
        block = block.astype(np.float32)
    if nonfinite_rows(block).size:
        check_finite(block, layer=check.layer, split=check.split,
                     rows=lo + (np.arange(block.shape[0]) if idx is None else np.asarray(idx)),
                     sample_index=_SampleIndex(check.store, check.split),  # type: ignore[arg-type]
                     fix=STORE_FIX, scope="this chunk")
    return block


class SplitBlocks:
    """One split's arrays on the cluster, cut into the same row blocks (``block_rows``, a
    multiple of the chunk length; default :func:`rows_per_block` of the widest layer)."""

    def __init__(self, client: Any, store: ActivationStore, split: str,
                 block_rows: int | None = None) -> None:
        self.client = client
        self.store = store
        self.split = split
        self.n = store.n_samples(split)
        chunk = int(store.split_attrs(split)["capture"]["chunk_rows"])
        if block_rows is None:
            widest = max([int(np.prod(d["shape"], dtype=np.int64)) * 4
                          for d in store.layer_info(split)] or [4])
            block_rows = rows_per_block(client, self.n, chunk, widest)
        if block_rows % chunk:
            raise ValueError(f"block_rows={block_rows} is not a multiple of the split's "
                             f"{chunk} rows per chunk.")
        self.block_rows = int(block_rows)
        self.bounds = [(lo, min(lo + self.block_rows, self.n))
                       for lo in range(0, max(self.n, 1), self.block_rows)] if self.n else []

    def _from_zarr(self, array: Any) -> Any:
        import dask.array as da

        x = da.from_zarr(array, chunks=(self.block_rows, *array.shape[1:]))
        return x[: self.n] if array.shape[0] != self.n else x

    def meta(self, name: str) -> Any:
        """A metadata array (``labels``, ``predictions``, ``sample_index``) as a dask array."""
        if name not in ("labels", "predictions", "sample_index"):
            raise ValueError(f"Unknown metadata array {name!r}.")
        group: Any = self.store.root[self.split]
        return self._from_zarr(group[name])

    def meta_blocks(self, name: str) -> list[Any]:
        """Delayed blocks of a metadata array."""
        return list(self.meta(name).to_delayed().ravel())

    def layer(self, layer: str) -> Any:
        """A layer as a dask array ``(n, *unit shape)`` (from_zarr, one chunk per block)."""
        return self._from_zarr(self.store.activations(self.split, layer))

    def layer_blocks(self, layer: str) -> list[Any]:
        """Delayed float32 blocks ``(rows, n_features)`` of a layer, checked for NaN/Inf."""
        from dask import delayed

        check = broadcast(self.client, _LayerCheck(self.store, self.split, layer))
        raw = self.layer(layer).to_delayed().ravel()
        return [delayed(_flat_checked, pure=True)(r, lo, check)
                for r, (lo, _) in zip(raw, self.bounds, strict=True)]


@dataclass
class SplitCounts:
    """Aggregates of a split's labels and predictions."""

    n: int
    label_counts: np.ndarray  # samples per label >= 0
    max_label: int
    max_prediction: int
    correct_counts: np.ndarray | None = None  # correctly classified samples per label


def split_counts(blocks: SplitBlocks) -> SplitCounts:
    """Label counts and the largest label and prediction of a split, by one reduction."""
    if blocks.n == 0:
        return SplitCounts(0, np.zeros(0, np.int64), -1, -1)
    r = reduce_columns(label_counts_part, merge_label_counts,
                       (blocks.meta("labels"), blocks.meta("predictions")), client=blocks.client)
    return SplitCounts(blocks.n, np.asarray(r["labels"], dtype=np.int64), int(r["label_max"]),
                       int(r["pred_max"]), np.asarray(r["correct"], dtype=np.int64))


def n_classes_of(store: ActivationStore, split: str, counts: SplitCounts | None) -> int:
    """:meth:`ActivationStore.n_classes` from the split's aggregates (nothing per sample);
    without ``counts``, from its outputs' width and class names only (the labels and
    predictions left to whoever holds them: :attr:`Signatures.n_classes` adds them)."""
    width = int(store.outputs(split).shape[1])
    n = 2 if width == 1 else width
    if counts is not None:
        n = max(n, counts.max_label + 1, counts.max_prediction + 1)
    names = store.class_names(split)
    return max(n, len(names)) if names else n


def _count_mask(mask: np.ndarray) -> dict[str, Any]:
    return {"n": np.int64(mask.sum())}


def fit_mask(blocks: SplitBlocks, counts: SplitCounts, classes: Iterable[int] | None,
             only_correct: bool) -> tuple[list[Any], list[int]]:
    """The fit rows of a split, per block: delayed boolean masks, and how many rows each keeps
    (raises as :func:`~nnsig_core.analysis.fit_sample_mask`)."""
    from dask import delayed

    wanted = check_selection(blocks.split, blocks.store.has_labels(blocks.split),
                             counts.label_counts, counts.n, classes, only_correct)
    masks = [delayed(selection_block, pure=True)(lab, pred, wanted, only_correct)
             for lab, pred in zip(blocks.meta_blocks("labels"), blocks.meta_blocks("predictions"),
                                  strict=True)]
    masks = blocks.client.persist(masks)
    sizes = [int(r["n"]) for r in blocks.client.compute(
        [delayed(_count_mask)(m) for m in masks], sync=True)]
    check_selected(blocks.split, sum(sizes), counts.label_counts, counts.n, wanted,
                   only_correct, counts.correct_counts)
    return masks, sizes
