"""Linear reduction of a layer before clustering (``SignatureAnalysis(reduce=N)``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.decomposition import IncrementalPCA

__all__ = ["PCAReducer"]


class PCAReducer:
    """Linear reduction fitted with :class:`~sklearn.decomposition.IncrementalPCA`.

    ``transform(X) = (X - mean_) @ components_.T`` in float32, with the
    fitted arrays kept (and saved) in float32, so results are identical before
    and after a save/load round trip.

    Parameters
    ----------
    n_components : int
    """

    def __init__(self, n_components: int) -> None:
        self.n_components = int(n_components)

    def fit_batches(self, batches: Iterator[np.ndarray]) -> PCAReducer:
        """Fit with ``partial_fit`` on each batch (each must have >= n_components rows)."""
        ipca = IncrementalPCA(n_components=self.n_components)
        for batch in batches:
            ipca.partial_fit(batch)
        self.components_ = np.ascontiguousarray(ipca.components_, dtype=np.float32)
        self.mean_ = np.asarray(ipca.mean_, dtype=np.float32)
        self.explained_variance_ = np.asarray(ipca.explained_variance_, dtype=np.float64)
        self.explained_variance_ratio_ = np.asarray(ipca.explained_variance_ratio_, dtype=np.float64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.asarray((X.astype(np.float32, copy=False) - self.mean_) @ self.components_.T,
                          dtype=np.float32)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return (
            {"n_components": self.n_components},
            {
                "components": self.components_,
                "mean": self.mean_,
                "explained_variance": self.explained_variance_,
                "explained_variance_ratio": self.explained_variance_ratio_,
            },
        )

    @classmethod
    def _from_state(cls, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> PCAReducer:
        r = cls(attrs["n_components"])
        r.components_ = np.asarray(arrays["components"], dtype=np.float32)
        r.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
        r.explained_variance_ = np.asarray(arrays["explained_variance"])
        r.explained_variance_ratio_ = np.asarray(arrays["explained_variance_ratio"])
        return r
