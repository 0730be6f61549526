"""The feature map of a layer fitted on the cluster: discretizer edges and PCA as reductions.

Discretizer
    ``uniform``: per-unit minimum and maximum, a tree reduction; the edges are
    then exactly the single-process ones. ``quantile``: the single-process
    fit keeps a reservoir sample (algorithm R) whose kept rows depend only on
    the number of rows and the seed, not on the values; the same reservoir is
    run here on the rows' ranks (one random draw per fit row, on the driver),
    the kept rows are fetched from the workers, and the edges are computed
    from the very rows the single-process fit would have kept. ``binary``:
    nothing to learn.
PCA (``reduce=``)
    :meth:`~nnsig_core.analysis.pca.PCAReducer.fit_reduce`, the one algorithm
    of both drivers, with its reductions run per block on the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import clone

from nnsig_core.analysis._util import Reservoir
from nnsig_core.analysis.discretize import Discretizer
from nnsig_core.analysis.pca import PCAReducer
from nnsig_core.distributed.kmeans import FitRows
from nnsig_core.execute.blocks import row_slices
from nnsig_core.execute.dask_blocks import broadcast, release, tree_reduce

log = logging.getLogger("nnsig")



class Identity:
    """The feature map of a layer before anything is fitted: float32 rows as they are."""

    @staticmethod
    def features(X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(X, dtype=np.float32)


class DiscretizeOnly:
    """The feature map while the reduction is fitted: the discretizer's bins as float32."""

    def __init__(self, disc: Discretizer | None) -> None:
        self.disc = disc

    def features(self, X: np.ndarray) -> np.ndarray:
        if self.disc is None:
            return np.ascontiguousarray(X, dtype=np.float32)
        return self.disc.transform(X).astype(np.float32)


# ---------------------------------------------------------------------------- discretizer
def _minmax(block: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
    X = block[2]
    if X.shape[0] == 0:
        return {}
    return {"x_min": X.min(axis=0).astype(np.float64), "x_max": X.max(axis=0).astype(np.float64)}


def _reservoir_ranks(n: int, size: int, seed: int | None) -> np.ndarray:
    """Ranks of the rows a :class:`Reservoir` of ``size`` keeps from ``n`` rows with ``seed``."""
    res = Reservoir(size, seed)
    step = 1 << 20
    for lo in range(0, n, step):
        res.add(np.arange(lo, min(lo + step, n), dtype=np.int64)[:, None])
    return np.sort(res.sample()[:, 0]).astype(np.int64)


def fit_discretizer(template: Discretizer, rows: FitRows, random_state: int | None) -> Discretizer:
    """A clone of ``template`` fitted on ``rows`` (seeded as ``LayerClusterer`` seeds it)."""
    disc = clone(template)
    if disc.random_state is None:
        disc.set_params(random_state=random_state)
    disc._validate()
    n, f = rows.n, rows.n_features
    if disc.strategy == "uniform":
        from dask import delayed

        parts = [delayed(_minmax)(b) for b in rows.raw]
        r = rows.client.compute(tree_reduce(parts)).result()
        disc.partial_fit(np.vstack([r["x_min"], r["x_max"]]))
    elif disc.strategy == "quantile":
        size = disc.subsample if disc.subsample is not None else n
        ranks = _reservoir_ranks(n, int(size), disc.random_state)
        disc.partial_fit(rows.sample(Identity(), ranks))
    else:
        disc.partial_fit(np.zeros((1, f), dtype=np.float32))
    disc._n_seen = n  # rows seen by the fit, as the single-process fit records it
    return disc.finalize()


# ---------------------------------------------------------------------------- PCA
def _reduce_block(block: tuple[np.ndarray, np.ndarray, np.ndarray], fmap: Any,
                  part: Callable[..., dict[str, Any]], merge: Callable[..., dict[str, Any]],
                  kw: dict[str, Any]) -> dict[str, Any]:
    X = block[2]
    return merge(*[part(fmap.features(X[sl]), **kw)
                   for sl in row_slices(X.shape[0], X.shape[1])])


def fit_pca(n_components: int, rows: FitRows, fmap: Any, random_state: int | None) -> PCAReducer:
    """PCA of ``fmap.features`` of the fit rows (:meth:`PCAReducer.fit_reduce`), each of its
    reductions run per block on the workers and merged in a tree."""
    from dask import delayed

    client = rows.client
    shipped = broadcast(client, fmap)

    def reduce(part: Callable[..., dict[str, Any]], merge: Callable[..., dict[str, Any]],
               **kw: Any) -> dict[str, Any]:
        sent = {k: broadcast(client, v) if isinstance(v, np.ndarray) else v
                for k, v in kw.items()}
        parts = [delayed(_reduce_block)(b, shipped, part, merge, sent) for b in rows.raw]
        try:
            return client.compute(tree_reduce(parts, merge)).result()
        finally:
            release(client, *sent.values())

    try:
        return PCAReducer(n_components).fit_reduce(reduce, rows.n_features, random_state)
    finally:
        release(client, shipped)
