"""Chunked reading of a layer's rows, and the analysis's feature map (clustering space)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from nnsig_core.analysis.source import StoreSource
from nnsig_core.store import ActivationStore

__all__ = ["clustering_features", "iter_rows", "read_rows"]


def iter_rows(
    store: ActivationStore, split: str, layer: str, rows: np.ndarray | None = None
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(out_slice, block)``: the selected rows (sorted positions; None = all) of a
    layer, flattened to float32, read by the analysis's :class:`StoreSource` (whole chunks,
    only those holding selected rows, NaN/Inf refused); ``out_slice`` is where the block's
    rows go among the selected ones."""
    o = 0
    for _, block in StoreSource(store, split, layer, rows).blocks():
        yield slice(o, o + block.shape[0]), block
        o += block.shape[0]


def read_rows(store: ActivationStore, split: str, layer: str,
              rows: np.ndarray | None = None) -> np.ndarray:
    """The selected rows of a layer in memory, flattened to float32."""
    source = StoreSource(store, split, layer, rows)
    return source.gather(np.empty((source.n_rows, source.n_features), dtype=np.float32))


def clustering_features(clusterer: Any, block: np.ndarray) -> np.ndarray:
    """Raw rows -> the space a fitted ``LayerClusterer`` clusters in (float32)."""
    return np.asarray(clusterer.features(block), dtype=np.float32)
