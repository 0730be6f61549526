"""The report's per-block work on a Dask cluster (see :mod:`nnsig_core.report.reduce`).

Every figure of a report is an aggregate: the joint table of (label, path,
prediction) rows with counts and score sums, cluster compositions, score
histograms, the default threshold (from the largest scores only), the layer
map's draw (counts per kind and class, then the drawn positions). Here each
is computed per block of the split on the workers and merged in a tree; the
driver receives the merged results, then the bounded per-point data of the
drawn map points and exemplars (their ids, labels, scores, features and
thumbnails), picked by the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from nnsig_core.distributed.reductions import tree_reduce

__all__ = ["reduce_blocks", "take_features", "take_rows"]


def _aligned(columns: Sequence[Any]) -> list[Any]:
    """The columns as dask arrays sharing the first dask column's row blocks."""
    import dask.array as da

    first = next(c for c in columns if hasattr(c, "dask"))
    rows = first.chunks[0]
    out = []
    for c in columns:
        if not hasattr(c, "dask"):
            c = da.from_array(np.asarray(c), chunks=(rows, *np.shape(c)[1:]))
        elif c.chunks[0] != rows:
            c = c.rechunk({0: rows})
        out.append(c)
    return out


def _run_part(part: Callable[..., Any], lo: int, kw: Mapping[str, Any], *blocks: Any) -> Any:
    return part(*blocks, lo=lo, **kw)


def _compute(x: Any, client: Any) -> Any:
    if client is not None:
        return client.compute(x, sync=True)
    import dask

    return dask.compute(x)[0]


def reduce_blocks(part: Callable[..., Any], merge: Callable[..., Any] | None,
                  columns: Sequence[Any], merge_kw: Mapping[str, Any], kw: Mapping[str, Any],
                  client: Any = None) -> Any:
    """``part`` on every block of ``columns`` on the workers, merged in a tree."""
    from dask import delayed

    cols = _aligned(columns)
    bounds = np.concatenate([[0], np.cumsum(cols[0].chunks[0])]).astype(np.int64)
    blocks = [list(c.to_delayed().ravel()) for c in cols]
    parts = [delayed(_run_part, pure=True)(part, int(bounds[i]), dict(kw), *b)
             for i, b in enumerate(zip(*blocks, strict=True))]
    combine = partial(merge, **merge_kw) if merge is not None else None
    if not parts:
        return part(*[np.asarray(c)[:0] for c in columns], lo=0, **kw)
    return _compute(tree_reduce(parts, combine), client)


def take_rows(x: Any, positions: np.ndarray, client: Any = None) -> np.ndarray:
    """``x[positions]`` picked on the workers (only those rows reach the driver)."""
    if positions.size == 0:
        return np.zeros((0, *x.shape[1:]), dtype=x.dtype)
    return np.asarray(_compute(x[positions], client))


def _features(raw: np.ndarray, clusterer: Any) -> np.ndarray:
    block = np.asarray(raw).reshape(raw.shape[0], -1).astype(np.float32, copy=False)
    return np.asarray(clusterer.features(block), dtype=np.float32)


def take_features(layer: Any, positions: np.ndarray, clusterer: Any, client: Any) -> np.ndarray:
    """The clustering-space features of rows ``positions`` of a layer (a dask array): read
    and mapped by the workers; only the features of those rows reach the driver."""
    from nnsig_core.distributed.reductions import broadcast

    if positions.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    picked = layer[positions]
    width = int(np.asarray(clusterer.cluster_centers_).shape[1])
    lc = broadcast(client, clusterer) if client is not None else clusterer
    feats = picked.map_blocks(_features, lc, dtype=np.float32,
                              chunks=(picked.chunks[0], (width,)),
                              drop_axis=list(range(2, picked.ndim)) or None)
    return np.asarray(_compute(feats, client))
