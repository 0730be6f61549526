"""Chunked reading of a layer's rows, and the analysis's feature map (clustering space)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from nnsig_core.store import ActivationStore

__all__ = ["clustering_features", "iter_rows", "read_rows"]


def iter_rows(
    store: ActivationStore, split: str, layer: str, rows: np.ndarray | None = None
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(out_slice, block)``: the selected rows (sorted positions; None = all) of a
    layer, flattened to float32, chunk by chunk; ``out_slice`` is where the block's rows go
    among the selected ones."""
    sel = None if rows is None else np.asarray(rows, dtype=np.int64)
    o = 0
    for start, block in store.iter_chunks(split, layer):
        block = block.reshape(block.shape[0], -1)
        if sel is not None:
            lo, hi = np.searchsorted(sel, [start, start + block.shape[0]])
            if hi == lo:
                continue
            block = block[sel[lo:hi] - start]
        block = np.ascontiguousarray(block, dtype=np.float32)
        yield slice(o, o + block.shape[0]), block
        o += block.shape[0]


def read_rows(store: ActivationStore, split: str, layer: str,
              rows: np.ndarray | None = None) -> np.ndarray:
    """The selected rows of a layer in memory, flattened to float32."""
    arr = store.activations(split, layer)
    d = int(np.prod(arr.shape[1:], dtype=np.int64))
    n = store.n_samples(split) if rows is None else int(np.asarray(rows).size)
    out = np.empty((n, d), dtype=np.float32)
    for sl, block in iter_rows(store, split, layer, rows):
        out[sl] = block
    return out


def clustering_features(clusterer: Any, block: np.ndarray) -> np.ndarray:
    """Raw rows -> the space a fitted ``LayerClusterer`` clusters in (float32)."""
    return np.asarray(clusterer.features(block), dtype=np.float32)
