"""A layer's feature map fitted from its fit rows, by either driver: the bins, then the PCA.

Quantile bins come from a reservoir sample whose ranks are drawn first, then those rows read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone

from nnsig_core.analysis._util import Reservoir
from nnsig_core.analysis.discretize import Discretizer
from nnsig_core.analysis.fit_rows import DiscretizeOnly, FitRows
from nnsig_core.analysis.pca import PCAReducer


def _minmax(block: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Any]:
    X = block[2]
    if X.shape[0] == 0:
        return {}
    return {"x_min": X.min(axis=0).astype(np.float64), "x_max": X.max(axis=0).astype(np.float64)}


def reservoir_ranks(n: int, size: int, seed: int | None) -> np.ndarray:
    """Sorted ranks of the rows a :class:`Reservoir` of ``size`` keeps from ``n`` rows."""
    res = Reservoir(size, seed)
    step = 1 << 20
    for lo in range(0, n, step):
        res.add(np.arange(lo, min(lo + step, n), dtype=np.int64)[:, None])
    return np.sort(res.sample()[:, 0]).astype(np.int64)


def fit_discretizer(template: Discretizer, rows: FitRows,
                    random_state: int | None) -> Discretizer:
    """A clone of ``template`` fitted on ``rows`` (seeded with ``random_state`` by default)."""
    disc = clone(template)
    if disc.random_state is None:
        disc.set_params(random_state=random_state)
    disc._validate()
    n, f = rows.n, rows.n_features
    if disc.strategy == "uniform":
        r = rows.reduce(None, _minmax)
        disc.partial_fit(np.vstack([r["x_min"], r["x_max"]]))
    elif disc.strategy == "quantile":
        size = disc.subsample if disc.subsample is not None else n
        disc.partial_fit(rows.sample(None, reservoir_ranks(n, int(size), disc.random_state)))
    else:
        disc.partial_fit(np.zeros((1, f), dtype=np.float32))
    disc._n_seen = n  # rows the fit saw, as a fit chunk by chunk records it
    return disc.finalize()


def fit_pca(n_components: int, rows: FitRows, disc: Discretizer | None,
            random_state: int | None) -> PCAReducer:
    """The PCA of the fit rows' features after ``disc`` (:meth:`PCAReducer.fit_reduce`)."""
    fmap = DiscretizeOnly(disc)
    return PCAReducer(n_components).fit_reduce(
        lambda part, merge, **kw: rows.reduce_slices(fmap, part, merge, **kw),
        rows.n_features, random_state)
