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
    From the covariance of the (discretized) fit rows: each block returns its
    count, mean and centred scatter matrix, merged pairwise (Chan et al.'s
    update, stable in float64); the driver takes the top eigenvectors. This is
    the exact PCA, which scikit-learn's ``IncrementalPCA`` of the
    single-process path approximates batch by batch, so reduced features
    differ slightly between the two paths. Layers wider than
    :data:`COVARIANCE_MAX_FEATURES` (a ``d x d`` matrix per block would not be
    a small aggregate) use a randomized subspace iteration instead: each pass
    returns ``d x (r + 10)`` products, seven passes and a final one.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.base import clone

from nnsig_core.analysis._util import Reservoir
from nnsig_core.analysis.discretize import Discretizer
from nnsig_core.analysis.reduce import PCAReducer
from nnsig_core.distributed.kmeans import FitRows
from nnsig_core.distributed.reductions import broadcast, release, row_slices, tree_reduce

__all__ = ["COVARIANCE_MAX_FEATURES", "Identity", "fit_discretizer", "fit_pca", "merge_moments"]

log = logging.getLogger("nnsig")

COVARIANCE_MAX_FEATURES = 4096
_POWER_ITERATIONS = 7
_OVERSAMPLE = 10


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
def _scatter_part(block: tuple[np.ndarray, np.ndarray, np.ndarray], fmap: Any) -> dict[str, Any]:
    X = block[2]
    parts = [_scatter_of(fmap.features(X[sl]).astype(np.float64))
             for sl in row_slices(X.shape[0], X.shape[1])]
    return merge_moments(*parts)


def _scatter_of(F: np.ndarray) -> dict[str, Any]:
    if F.shape[0] == 0:
        return {"n": 0}
    mean = F.mean(axis=0)
    C = F - mean
    return {"n": F.shape[0], "mean": mean, "m2": C.T @ C}


def merge_moments(*parts: dict[str, Any]) -> dict[str, Any]:
    """Chan et al.'s pairwise merge of ``{n, mean, m2}`` partials: ``m2`` is a scatter
    matrix (``d x d``) or per-feature sums of squares (``d``), and merges as it came."""
    out: dict[str, Any] = {"n": 0}
    for p in parts:
        if not p["n"]:
            continue
        if not out["n"]:
            out = dict(p)
            continue
        na, nb = out["n"], p["n"]
        n = na + nb
        delta = p["mean"] - out["mean"]
        cross = np.outer(delta, delta) if np.ndim(p["m2"]) == 2 else delta**2
        out = {"n": n, "mean": out["mean"] + delta * (nb / n),
               "m2": out["m2"] + p["m2"] + cross * (na * nb / n)}
    return out


def _moments_part(block: tuple[np.ndarray, np.ndarray, np.ndarray], fmap: Any) -> dict[str, Any]:
    X = block[2]
    parts = []
    for sl in row_slices(X.shape[0], X.shape[1]):
        F = fmap.features(X[sl]).astype(np.float64)
        if F.shape[0]:
            mean = F.mean(axis=0)
            parts.append({"n": F.shape[0], "mean": mean, "m2": ((F - mean) ** 2).sum(axis=0)})
    return merge_moments(*parts) if parts else {"n": 0}


def _product_part(block: tuple[np.ndarray, np.ndarray, np.ndarray], fmap: Any, mean: np.ndarray,
                  Q: np.ndarray) -> dict[str, Any]:
    X = block[2]
    z = np.zeros_like(Q)
    for sl in row_slices(X.shape[0], X.shape[1]):
        C = fmap.features(X[sl]).astype(np.float64) - mean
        z += C.T @ (C @ Q)
    return {"z": z}


def _flip(components: np.ndarray) -> np.ndarray:
    """scikit-learn's sign convention (``svd_flip``, V-based): each component's largest
    absolute coefficient is positive."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1
    return components * signs[:, None]


def fit_pca(n_components: int, rows: FitRows, fmap: Any, random_state: int | None) -> PCAReducer:
    """PCA of ``fmap.features`` of the fit rows, as a :class:`PCAReducer`."""
    from dask import delayed

    client = rows.client
    shipped = broadcast(client, fmap)
    f = rows.n_features
    r = int(n_components)
    if f <= COVARIANCE_MAX_FEATURES:
        parts = [delayed(_scatter_part)(b, shipped) for b in rows.raw]
        s = client.compute(tree_reduce(parts, merge_moments)).result()
        n = s["n"]
        cov = s["m2"] / max(n - 1, 1)
        w, V = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(w)[::-1]
        w, V = np.maximum(w[order], 0.0), V[:, order]
        total = float(w.sum())
        comps, ev = V[:, :r].T, w[:r]
        mean = s["mean"]
    else:
        m = client.compute(tree_reduce([delayed(_moments_part)(b, shipped) for b in rows.raw],
                                       merge_moments)).result()
        n, mean = m["n"], m["mean"]
        total = float(m["m2"].sum() / max(n - 1, 1))
        rng = np.random.default_rng(random_state)
        Q, _ = np.linalg.qr(rng.normal(size=(f, min(f, r + _OVERSAMPLE))))
        for i in range(_POWER_ITERATIONS + 1):
            q = broadcast(client, Q)
            z = client.compute(tree_reduce(
                [delayed(_product_part)(b, shipped, mean, q) for b in rows.raw])).result()["z"]
            release(client, q)
            Z = z / max(n - 1, 1)
            Qn = np.linalg.qr(Z)[0]
            if i == _POWER_ITERATIONS:
                B = Q.T @ Z  # Q^T C Q
                w, U = np.linalg.eigh((B + B.T) / 2)
                order = np.argsort(w)[::-1]
                comps = (Q @ U[:, order[:r]]).T
                ev = np.maximum(w[order[:r]], 0.0)
            Q = Qn
    release(client, shipped)
    reducer = PCAReducer(r)
    reducer.components_ = np.ascontiguousarray(_flip(comps), dtype=np.float32)
    reducer.mean_ = np.asarray(mean, dtype=np.float32)
    reducer.explained_variance_ = np.asarray(ev, dtype=np.float64)
    reducer.explained_variance_ratio_ = np.asarray(ev / total if total > 0 else ev * 0,
                                                   dtype=np.float64)
    return reducer
