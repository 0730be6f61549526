"""Linear reduction of a layer before clustering (``SignatureAnalysis(reduce=N)``): one exact PCA.

Computed from the driver's reductions over the fit rows' features: the covariance up to
:data:`COVARIANCE_MAX_FEATURES` features, else a randomized subspace iteration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnsig_core.analysis.fit_rows import Reduce
from nnsig_core.execute.merging import merge_parts

COVARIANCE_MAX_FEATURES = 4096
POWER_ITERATIONS = 7
OVERSAMPLE = 10


def moments_part(F: np.ndarray, scatter: bool = True) -> dict[str, Any]:
    """``{n, mean, m2}`` of a block of features: ``m2`` the centred scatter matrix (``d x d``),
    or per-feature sums of squares when not ``scatter``."""
    F = np.asarray(F, dtype=np.float64)
    if F.shape[0] == 0:
        return {"n": 0}
    mean = F.mean(axis=0)
    C = F - mean
    return {"n": F.shape[0], "mean": mean, "m2": C.T @ C if scatter else (C**2).sum(axis=0)}


def merge_moments(*parts: dict[str, Any]) -> dict[str, Any]:
    """Chan et al.'s pairwise merge of ``{n, mean, m2}`` partials (matrix or per-feature)."""
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


def product_part(F: np.ndarray, mean: np.ndarray, Q: np.ndarray) -> dict[str, Any]:
    """``C^T C Q`` of a block (``C`` the centred features): one pass of the subspace iteration."""
    C = np.asarray(F, dtype=np.float64) - mean
    return {"z": C.T @ (C @ Q)}


def _flip(components: np.ndarray) -> np.ndarray:
    """scikit-learn's ``svd_flip`` sign convention: each component's largest coefficient > 0."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1
    return components * signs[:, None]


def _top(matrix: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``r`` largest eigenvalues (clipped at 0) and eigenvectors of a symmetric matrix."""
    w, V = np.linalg.eigh((matrix + matrix.T) / 2)
    order = np.argsort(w)[::-1][:r]
    return np.maximum(w[order], 0.0), V[:, order]


class PCAReducer:
    """Linear reduction to the top ``n_components`` principal components of the fit rows,
    in float32 (so results are identical after a save and a load)."""

    def __init__(self, n_components: int) -> None:
        self.n_components = int(n_components)

    def fit_reduce(self, reduce: Reduce, n_features: int,
                   random_state: int | None = None) -> PCAReducer:
        """Fit from the driver's reduction over the fit rows' features; ``random_state`` seeds
        the subspace iteration."""
        f, r = int(n_features), self.n_components
        if f <= COVARIANCE_MAX_FEATURES:
            s = reduce(moments_part, merge_moments, scatter=True)
            n, mean = s["n"], s["mean"]
            w, V = _top(s["m2"] / max(n - 1, 1), f)
            total = float(w.sum())
            ev, comps = w[:r], V[:, :r].T
        else:
            m = reduce(moments_part, merge_moments, scatter=False)
            n, mean = m["n"], m["mean"]
            total = float(m["m2"].sum() / max(n - 1, 1))
            rng = np.random.default_rng(random_state)
            Q, _ = np.linalg.qr(rng.normal(size=(f, min(f, r + OVERSAMPLE))))
            for i in range(POWER_ITERATIONS + 1):
                Z = reduce(product_part, merge_parts, mean=mean, Q=Q)["z"] / max(n - 1, 1)
                if i == POWER_ITERATIONS:
                    ev, U = _top(Q.T @ Z, r)  # Q^T C Q
                    comps = (Q @ U).T
                Q = np.linalg.qr(Z)[0]
        self.components_ = np.ascontiguousarray(_flip(comps), dtype=np.float32)
        self.mean_ = np.asarray(mean, dtype=np.float32)
        self.explained_variance_ = np.asarray(ev, dtype=np.float64)
        self.explained_variance_ratio_ = np.asarray(ev / total if total > 0 else ev * 0,
                                                    dtype=np.float64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.asarray((X.astype(np.float32, copy=False) - self.mean_) @ self.components_.T,
                          dtype=np.float32)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"n_components": self.n_components}, {
            "components": self.components_, "mean": self.mean_,
            "explained_variance": self.explained_variance_,
            "explained_variance_ratio": self.explained_variance_ratio_}

    @classmethod
    def _from_state(cls, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> PCAReducer:
        r = cls(attrs["n_components"])
        r.components_ = np.asarray(arrays["components"], dtype=np.float32)
        r.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
        r.explained_variance_ = np.asarray(arrays["explained_variance"])
        r.explained_variance_ratio_ = np.asarray(arrays["explained_variance_ratio"])
        return r
