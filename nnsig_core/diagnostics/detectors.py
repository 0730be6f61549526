"""Standard detectors on one layer's features or on logits (NumPy and scikit-learn).

Every score is *higher = more suspicious*: maximum softmax probability (Hendrycks &
Gimpel, 2017), energy (Liu et al., 2020), Mahalanobis (Lee et al., 2018, without input
preprocessing), deep k-NN (Sun et al., 2022) and the activation-pattern monitor (Cheng
et al., 2019). :mod:`~nnsig_core.diagnostics.baselines` fits them on a store's split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import config_context
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import NnsigParamsMixin
from nnsig_core._util import l2_normalise
from nnsig_core._warnings import warn

DEFAULT_BUDGET = 256 << 20  # bytes of temporary memory for the chunked computations


def _logits_2d(logits: Any) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    z = z.reshape(z.shape[0], -1)
    if z.shape[1] == 1:  # one logit of a binary classifier: the logits are (0, z)
        z = np.hstack([np.zeros_like(z), z])
    return z


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def max_softmax_score(logits: Any) -> np.ndarray:
    """``-max_c softmax(z)_c`` per row of ``logits`` (one column ``z``: the logits ``(0, z)``)."""
    z = _logits_2d(logits)
    return -np.exp(z.max(axis=1) - _logsumexp(z))


def energy_score(logits: Any, *, temperature: float = 1.0) -> np.ndarray:
    """``-T log sum_c exp(z_c / T)`` per row of ``logits``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    z = _logits_2d(logits)
    return -temperature * _logsumexp(z / temperature)


def _flat(X: Any) -> np.ndarray:
    X = np.asarray(X)
    return X.reshape(X.shape[0], int(np.prod(X.shape[1:], dtype=np.int64)))


def _chunk_rows(bytes_per_row: int, budget: int) -> int:
    return int(max(1, budget // max(int(bytes_per_row), 1)))


_MAHA_NOT_FITTED = "MahalanobisDistance is not fitted; call fit(X, y) first."


class MahalanobisDistance(NnsigParamsMixin, BaseEstimator):
    """``min_c (h - mu_c)^T S^+ (h - mu_c)``: class means, one pooled within-class covariance.

    ``S^+`` drops eigenvalues below ``rcond * max eigenvalue`` (dead ReLU units
    make ``S`` singular).
    """

    def __init__(self, *, rcond: float = 1e-6) -> None:
        self.rcond = rcond

    def fit(self, X: Any, y: Any) -> MahalanobisDistance:
        """Fit on features ``X`` (n, d) of classes ``y``."""
        for attr in ("_sums", "whiten_"):
            if hasattr(self, attr):
                delattr(self, attr)
        return self.partial_fit(X, y)._finish()

    def partial_fit(self, X: Any, y: Any) -> MahalanobisDistance:
        """Add a block of rows; :meth:`score` once every block is in (:meth:`fit` restarts)."""
        X = _flat(X).astype(np.float64)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if X.shape[0] != y.size:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.size}.")
        if not hasattr(self, "_sums"):
            # Moments about a reference point near the data, so the second moment
            # minus the means does not cancel catastrophically.
            self._shift = X.mean(axis=0) if X.shape[0] else np.zeros(X.shape[1])
            self._sums: dict[int, np.ndarray] = {}
            self._counts: dict[int, int] = {}
            self._moment = np.zeros((X.shape[1], X.shape[1]))
        Xs = X - self._shift
        self._moment += Xs.T @ Xs
        for c in np.unique(y):
            rows = Xs[y == c]
            self._sums[int(c)] = self._sums.get(int(c), 0) + rows.sum(axis=0)
            self._counts[int(c)] = self._counts.get(int(c), 0) + rows.shape[0]
        self._dirty = True
        return self

    def _finish(self) -> MahalanobisDistance:
        if not getattr(self, "_dirty", False):
            return self
        check_is_fitted(self, "_sums", msg=_MAHA_NOT_FITTED)
        self.classes_ = np.array(sorted(self._sums), dtype=np.int64)
        n = sum(self._counts.values())
        centred = np.stack([self._sums[int(c)] / self._counts[int(c)] for c in self.classes_])
        self.means_ = centred + self._shift
        # Pooled within-class scatter: sum x x^T - sum_c n_c mu_c mu_c^T (about the shift).
        counts = np.array([self._counts[int(c)] for c in self.classes_], dtype=np.float64)
        cov = (self._moment - (centred * counts[:, None]).T @ centred) / max(n, 1)
        w, V = np.linalg.eigh((cov + cov.T) / 2)
        keep = w > self.rcond * max(float(w.max()), np.finfo(float).tiny)
        # Whitening map: ||W^T (h - mu)||^2 = (h - mu)^T S^+ (h - mu).
        self.whiten_ = V[:, keep] / np.sqrt(w[keep])
        self.white_means_ = self.means_ @ self.whiten_
        self.rank_ = int(keep.sum())
        self._dirty = False
        return self

    def score(self, X: Any) -> np.ndarray:
        """``min_c`` squared Mahalanobis distance of each row of ``X``."""
        self._finish()
        check_is_fitted(self, "whiten_", msg=_MAHA_NOT_FITTED)
        Z = _flat(X).astype(np.float64) @ self.whiten_
        M = self.white_means_
        d = (Z**2).sum(1)[:, None] - 2 * Z @ M.T + (M**2).sum(1)[None, :]
        return np.maximum(d.min(axis=1), 0.0)


class KNNDistance(NnsigParamsMixin, BaseEstimator):
    """Distance to the ``k``-th nearest L2-normalised training feature (exact, brute force), in
    chunks of ``memory_limit`` bytes."""

    def __init__(self, *, k: int = 50, memory_limit: int = DEFAULT_BUDGET) -> None:
        self.k = k
        self.memory_limit = memory_limit

    def fit(self, X: Any) -> KNNDistance:
        U = l2_normalise(_flat(X), np.float32)
        if U.shape[0] == 0:
            raise ValueError("KNNDistance needs at least one training sample.")
        self.k_ = int(min(max(int(self.k), 1), U.shape[0]))
        if self.k_ < int(self.k):
            warn(f"kNN: only {U.shape[0]} training samples; using k={self.k_}.")
        self.nn_ = NearestNeighbors(n_neighbors=self.k_, algorithm="brute").fit(U)
        self.n_train_ = int(U.shape[0])
        return self

    def score(self, X: Any) -> np.ndarray:
        """Distance of each row of ``X`` to its k-th nearest normalised training feature."""
        check_is_fitted(self, "nn_", msg="KNNDistance is not fitted; call fit(X) first.")
        X = _flat(X)
        out = np.empty(X.shape[0], dtype=np.float64)
        budget = int(self.memory_limit)
        step = _chunk_rows(8 * X.shape[1], budget // 2)  # normalised copies of the queries
        # scikit-learn chunks the distance matrix itself within working_memory (MiB).
        with config_context(working_memory=max(budget / 2, 1 << 16) / 2**20):
            for s in range(0, X.shape[0], step):
                U = l2_normalise(X[s : s + step], np.float32)
                out[s : s + step] = self.nn_.kneighbors(U, n_neighbors=self.k_)[0][:, -1]
        return out


def pack_patterns(B: np.ndarray) -> np.ndarray:
    """Boolean rows -> uint64 words (bits packed with np.packbits, zero-padded)."""
    packed = np.packbits(B.astype(bool), axis=1)
    pad = (-packed.shape[1]) % 8
    if pad or packed.shape[1] == 0:
        packed = np.hstack([packed, np.zeros((packed.shape[0], pad or 8), dtype=np.uint8)])
    return np.ascontiguousarray(packed).view(np.uint64)


_BYTE_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of each unsigned integer (``np.bitwise_count``, or a byte table on NumPy < 2)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    w = np.ascontiguousarray(words)
    b = w.view(np.uint8).reshape(*w.shape, w.dtype.itemsize)
    return _BYTE_POP[b].sum(axis=-1, dtype=np.uint16)


class ActivationPatternMonitor(NnsigParamsMixin, BaseEstimator):
    """``min_{i: y_i = c} Hamming([h > t], [h_i > t])`` to the predicted class ``c``'s patterns.

    A unit is "on" above ``threshold``; the number of units when ``c`` has no training
    sample. Patterns are bit-packed, compared with XOR and popcount within ``memory_limit``.
    """

    def __init__(self, *, threshold: float = 0.0, memory_limit: int = DEFAULT_BUDGET) -> None:
        self.threshold = threshold
        self.memory_limit = memory_limit

    def patterns(self, X: Any) -> np.ndarray:
        """Boolean on/off patterns (n, d) of the rows of ``X``."""
        return _flat(X) > self.threshold

    def fit(self, X: Any, y: Any) -> ActivationPatternMonitor:
        """Fit on the on/off patterns of features ``X`` (n, d) of classes ``y``."""
        return self.fit_patterns(self.patterns(X), y)

    def fit_packed(self, W: Any, y: Any, n_units: int) -> ActivationPatternMonitor:
        """Fit from patterns already packed by :func:`pack_patterns` (n, words)."""
        W = np.asarray(W, dtype=np.uint64)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if W.shape[0] != y.size:
            raise ValueError(f"{W.shape[0]} patterns but {y.size} labels.")
        self.n_units_ = int(n_units)
        self.patterns_ = {int(c): np.unique(W[y == c], axis=0) for c in np.unique(y)}
        return self

    def fit_patterns(self, B: Any, y: Any) -> ActivationPatternMonitor:
        """Fit directly from boolean patterns (n, d)."""
        B = np.asarray(B, dtype=bool)
        return self.fit_packed(pack_patterns(B), y, int(B.shape[1]))

    def score(self, X: Any, predictions: Any) -> np.ndarray:
        """Min Hamming distance of the patterns of ``X`` to their predicted class's."""
        return self.score_patterns(self.patterns(X), predictions)

    def score_patterns(self, B: Any, predictions: Any) -> np.ndarray:
        """Min Hamming distance of boolean patterns ``B`` (n, d) to their class's training patterns."""
        check_is_fitted(self, "patterns_", msg="ActivationPatternMonitor is not fitted; call "
                                               "fit(X, y) first.")
        B = np.asarray(B, dtype=bool)
        if B.shape[1] != self.n_units_:
            raise ValueError(f"Patterns have {B.shape[1]} units; the monitor was fitted on "
                             f"{self.n_units_}.")
        pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
        out = np.full(B.shape[0], self.n_units_, dtype=np.int64)
        if B.shape[0] == 0:
            return out
        W = pack_patterns(B)
        words = W.shape[1]
        for c in np.unique(pred):
            P = self.patterns_.get(int(c))
            rows = np.flatnonzero(pred == c)
            if P is None or P.shape[0] == 0:
                continue
            uq, inv = np.unique(W[rows], axis=0, return_inverse=True)
            best = np.empty(uq.shape[0], dtype=np.int64)
            step = _chunk_rows(P.shape[0] * words * 8, int(self.memory_limit))
            for s in range(0, uq.shape[0], step):
                x = uq[s : s + step, None, :] ^ P[None, :, :]
                best[s : s + step] = popcount(x).sum(axis=2, dtype=np.int64).min(axis=1)
            out[rows] = best[inv.reshape(-1)]
        return out

    def accepts(self, X: Any, predictions: Any, *, gamma: int = 0) -> np.ndarray:
        """The monitor's verdict: True where the pattern lies within Hamming ``gamma`` of its class."""
        return self.score(X, predictions) <= gamma
