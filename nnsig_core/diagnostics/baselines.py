"""Baseline detectors, computed by nnsig on the same model and features (NumPy and scikit-learn).

Every score is *higher = more suspicious*. The feature-based baselines are
fitted on the same samples as the signature analysis (by default its fit
samples that the model classifies correctly) and on one layer, by default the
last analysed (hidden) layer.

``msp``
    Maximum softmax probability (Hendrycks & Gimpel, 2017):
    ``score(x) = -max_c softmax(z(x))_c`` for logits ``z``.
``energy``
    Free energy (Liu et al., 2020) at temperature 1:
    ``score(x) = -log sum_c exp(z_c(x))``.
``mahalanobis``
    Class means ``mu_c`` and one shared covariance
    ``S = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T`` of the layer's
    features ``h`` (Lee et al., 2018, without input preprocessing):
    ``score(x) = min_c (h - mu_c)^T S^+ (h - mu_c)``, ``S^+`` the
    pseudo-inverse (eigenvalues below ``rcond * max`` dropped: dead ReLU units
    make ``S`` singular).
``knn``
    Deep nearest neighbours (Sun et al., 2022): with ``u = h / ||h||``,
    ``score(x) = ||u(x) - u_(k)||``, the distance to the k-th nearest
    normalised training feature (k = 50).
``pattern``
    Activation-pattern monitor (Cheng et al., 2019): the on/off pattern
    ``b(x) = [h > threshold]`` and
    ``score(x) = min_{i: y_i = c} Hamming(b(x), b(x_i))`` over training
    samples of the predicted class ``c``; the monitor accepts ``x`` at
    Hamming radius ``gamma`` when ``score(x) <= gamma``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn import config_context
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import NearestNeighbors

from nnsig_core.diagnostics._io import read_rows
from nnsig_core.store import ActivationStore

__all__ = [
    "ActivationPatternMonitor",
    "BASELINES",
    "Baselines",
    "KNNDistance",
    "MahalanobisDistance",
    "baseline_scores",
    "energy_score",
    "hamming_min_bruteforce",
    "max_softmax_score",
    "popcount",
]

log = logging.getLogger("nnsig")

BASELINES = ("msp", "energy", "mahalanobis", "knn", "pattern")

_DEFAULT_BUDGET = 256 << 20  # bytes of temporary memory for the chunked computations


# ---------------------------------------------------------------------------- logit scores
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
    """``-max_c softmax(z)_c`` per row of ``logits`` (n, n_classes); higher = more suspicious.

    A single logit column is read as a binary classifier's logit ``z``, i.e.
    the logits ``(0, z)``.
    """
    z = _logits_2d(logits)
    return -np.exp(z.max(axis=1) - _logsumexp(z))


def energy_score(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """``-T log sum_c exp(z_c / T)`` per row; higher = more suspicious."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    z = _logits_2d(logits)
    return -temperature * _logsumexp(z / temperature)


def _flat(X: Any) -> np.ndarray:
    X = np.asarray(X)
    return X.reshape(X.shape[0], int(np.prod(X.shape[1:], dtype=np.int64)))


def _chunk_rows(bytes_per_row: int, budget: int) -> int:
    return int(max(1, budget // max(int(bytes_per_row), 1)))


# ---------------------------------------------------------------------------- Mahalanobis
class MahalanobisDistance:
    """Minimum over classes of the Mahalanobis distance with a shared covariance.

    ``score(h) = min_c (h - mu_c)^T S^+ (h - mu_c)`` (squared distance), with
    class means ``mu_c``, the pooled within-class covariance ``S`` and its
    pseudo-inverse ``S^+`` computed from the eigendecomposition of ``S``,
    dropping eigenvalues below ``rcond * max eigenvalue``.

    Parameters
    ----------
    rcond : float
        Relative eigenvalue cut-off of the pseudo-inverse.
    """

    def __init__(self, rcond: float = 1e-6) -> None:
        self.rcond = rcond

    def fit(self, X: Any, y: Any) -> MahalanobisDistance:
        X = _flat(X).astype(np.float64)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if X.shape[0] != y.size:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.size}.")
        self.classes_ = np.unique(y)
        self.means_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        idx = np.searchsorted(self.classes_, y)
        R = X - self.means_[idx]
        cov = R.T @ R / max(X.shape[0], 1)
        w, V = np.linalg.eigh(cov)
        keep = w > self.rcond * max(float(w.max()), np.finfo(float).tiny)
        # Whitening map: ||W^T (h - mu)||^2 = (h - mu)^T S^+ (h - mu).
        self.whiten_ = V[:, keep] / np.sqrt(w[keep])
        self.white_means_ = self.means_ @ self.whiten_
        self.rank_ = int(keep.sum())
        return self

    def score(self, X: Any) -> np.ndarray:
        if not hasattr(self, "whiten_"):
            raise NotFittedError("MahalanobisDistance is not fitted; call fit(X, y) first.")
        X = _flat(X)
        Z = X.astype(np.float64) @ self.whiten_
        M = self.white_means_
        d = (Z**2).sum(1)[:, None] - 2 * Z @ M.T + (M**2).sum(1)[None, :]
        return np.maximum(d.min(axis=1), 0.0)


# ---------------------------------------------------------------------------- kNN
def _l2_normalise(X: np.ndarray) -> np.ndarray:
    X = X.astype(np.float32, copy=True)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    X /= np.maximum(norm, 1e-12)
    return X


class KNNDistance:
    """Distance to the k-th nearest L2-normalised training feature.

    ``score(h) = ||u - u_(k)||`` with ``u = h / ||h||`` and ``u_(k)`` the k-th
    nearest normalised training vector (exact search with scikit-learn's
    :class:`~sklearn.neighbors.NearestNeighbors`, brute force). Queries are
    processed in chunks so the distance blocks stay within ``memory_limit``
    bytes.

    Parameters
    ----------
    k : int
        Neighbour rank (clipped to the number of training samples).
    memory_limit : int
        Bytes of temporary distance matrix per chunk.
    """

    def __init__(self, k: int = 50, memory_limit: int = _DEFAULT_BUDGET) -> None:
        self.k = k
        self.memory_limit = memory_limit

    def fit(self, X: Any) -> KNNDistance:
        U = _l2_normalise(_flat(X))
        if U.shape[0] == 0:
            raise ValueError("KNNDistance needs at least one training sample.")
        self.k_ = int(min(max(int(self.k), 1), U.shape[0]))
        if self.k_ < int(self.k):
            log.warning("kNN: only %d training samples; using k=%d.", U.shape[0], self.k_)
        self.nn_ = NearestNeighbors(n_neighbors=self.k_, algorithm="brute").fit(U)
        self.n_train_ = int(U.shape[0])
        return self

    def score(self, X: Any) -> np.ndarray:
        if not hasattr(self, "nn_"):
            raise NotFittedError("KNNDistance is not fitted; call fit(X) first.")
        X = _flat(X)
        out = np.empty(X.shape[0], dtype=np.float64)
        step = _chunk_rows(self.n_train_ * 8, int(self.memory_limit))
        mib = max(1, int(self.memory_limit) >> 20)
        with config_context(working_memory=mib):
            for s in range(0, X.shape[0], step):
                d, _ = self.nn_.kneighbors(_l2_normalise(X[s : s + step]), n_neighbors=self.k_)
                out[s : s + step] = d[:, -1]
        return out


# ---------------------------------------------------------------------------- activation patterns
def _pack(B: np.ndarray) -> np.ndarray:
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


def hamming_min_bruteforce(queries: Any, patterns: Any) -> np.ndarray:
    """Reference implementation: min over rows of ``patterns`` of the Hamming distance to each query.

    Both are boolean (n, d) arrays; an empty ``patterns`` gives ``d``.
    """
    Q = np.asarray(queries, dtype=bool)
    P = np.asarray(patterns, dtype=bool)
    if P.shape[0] == 0:
        return np.full(Q.shape[0], Q.shape[1], dtype=np.int64)
    return np.array([(q[None, :] != P).sum(axis=1).min() for q in Q], dtype=np.int64)


class ActivationPatternMonitor:
    """On/off activation patterns of each class; distance of a new pattern to its predicted class.

    ``score(h, c) = min_{i: y_i = c} Hamming([h > t], [h_i > t])``: the number
    of units whose on/off state differs from the nearest training pattern of
    the predicted class ``c`` (``d``, the number of units, when ``c`` has no
    training sample). Patterns are bit-packed (``np.packbits``) into 64-bit
    words and compared with XOR and popcount, over each class's *distinct*
    patterns, in query chunks bounded by ``memory_limit`` bytes.

    Parameters
    ----------
    threshold : float
        A unit is "on" when its activation is above this (0 for ReLU).
    memory_limit : int
        Bytes of temporary XOR block per chunk.
    """

    def __init__(self, threshold: float = 0.0, memory_limit: int = _DEFAULT_BUDGET) -> None:
        self.threshold = threshold
        self.memory_limit = memory_limit

    def patterns(self, X: Any) -> np.ndarray:
        """Boolean on/off patterns (n, d) of the rows of ``X``."""
        return _flat(X) > self.threshold

    def fit(self, X: Any, y: Any) -> ActivationPatternMonitor:
        B = self.patterns(X)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if B.shape[0] != y.size:
            raise ValueError(f"X has {B.shape[0]} rows but y has {y.size}.")
        self.n_units_ = int(B.shape[1])
        W = _pack(B)
        self.patterns_: dict[int, np.ndarray] = {}
        for c in np.unique(y):
            self.patterns_[int(c)] = np.unique(W[y == c], axis=0)
        return self

    def fit_patterns(self, B: Any, y: Any) -> ActivationPatternMonitor:
        """Fit directly from boolean patterns (n, d)."""
        B = np.asarray(B, dtype=bool)
        saved = self.threshold
        self.threshold = 0.5
        try:
            return self.fit(B.astype(np.float32), y)
        finally:
            self.threshold = saved

    def score(self, X: Any, predictions: Any) -> np.ndarray:
        return self.score_patterns(self.patterns(X), predictions)

    def score_patterns(self, B: Any, predictions: Any) -> np.ndarray:
        """Min Hamming distance of boolean patterns ``B`` (n, d) to their class's training patterns."""
        if not hasattr(self, "patterns_"):
            raise NotFittedError("ActivationPatternMonitor is not fitted; call fit(X, y) first.")
        B = np.asarray(B, dtype=bool)
        if B.shape[1] != self.n_units_:
            raise ValueError(f"Patterns have {B.shape[1]} units; the monitor was fitted on "
                             f"{self.n_units_}.")
        pred = np.asarray(predictions, dtype=np.int64).reshape(-1)
        out = np.full(B.shape[0], self.n_units_, dtype=np.int64)
        if B.shape[0] == 0:
            return out
        W = _pack(B)
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

    def accepts(self, X: Any, predictions: Any, gamma: int = 0) -> np.ndarray:
        """The monitor's verdict: True where the pattern lies within Hamming ``gamma`` of its class."""
        return self.score(X, predictions) <= gamma


# ---------------------------------------------------------------------------- from a store
class Baselines:
    """Fit the feature baselines on a store's split and score any split.

    Parameters
    ----------
    layer : str or None
        The layer of the Mahalanobis, kNN and pattern baselines; ``None``: the
        last captured layer of the fit split (the last hidden layer).
    k : int
        Neighbour rank of the kNN baseline.
    threshold : float
        On/off threshold of the activation-pattern monitor.
    rcond : float
        Pseudo-inverse cut-off of the Mahalanobis baseline.
    memory_limit : int
        Bytes of temporary memory of the chunked kNN and pattern searches.
    which : iterable of str
        Baselines to compute, among :data:`BASELINES`.
    """

    def __init__(
        self,
        layer: str | None = None,
        k: int = 50,
        threshold: float = 0.0,
        rcond: float = 1e-6,
        memory_limit: int = _DEFAULT_BUDGET,
        which: Iterable[str] = BASELINES,
    ) -> None:
        self.layer = layer
        self.k = k
        self.threshold = threshold
        self.rcond = rcond
        self.memory_limit = memory_limit
        self.which = tuple(which)
        bad = [w for w in self.which if w not in BASELINES]
        if bad:
            raise ValueError(f"Unknown baseline(s) {bad}; choose among {list(BASELINES)}.")

    @classmethod
    def from_analysis(cls, analysis: Any, store: ActivationStore | str | os.PathLike[str],
                      **kwargs: Any) -> Baselines:
        """Baselines fitted on ``analysis``'s fit samples that the model classifies correctly.

        The features are the last analysed layer (``analysis.layers_[-1]``)
        unless ``layer=`` is given; other keyword arguments go to the constructor.
        """
        from nnsig_core.analysis.engine import as_store

        analysis._check_fitted()
        store = as_store(store)
        split = analysis.fit_split_
        mask = analysis.selection_mask(store, split)
        labels, preds = store.labels(split), store.predictions(split)
        mask = mask & (labels >= 0) & (labels == preds)
        kwargs.setdefault("layer", analysis.layers_[-1])
        return cls(**kwargs).fit(store, split, mask)

    def fit(self, store: ActivationStore | str | os.PathLike[str], split: str = "train",
            mask: np.ndarray | None = None) -> Baselines:
        """Fit on the samples of ``split`` where ``mask`` holds.

        ``mask`` defaults to the correctly classified labelled samples, the
        analysis's default selection; pass ``analysis.selection_mask(store,
        split)`` to use exactly its fit samples.
        """
        from nnsig_core.analysis.engine import as_store

        store = as_store(store)
        labels = store.labels(split)
        if mask is None:
            mask = (labels >= 0) & (labels == store.predictions(split))
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError(f"No sample of split {split!r} is selected to fit the baselines.")
        self.layer_ = self.layer or store.layers(split)[-1]
        rows = np.flatnonzero(mask)
        y = labels[rows]
        self.fit_split_ = split
        self.n_fit_samples_ = int(rows.size)
        self.classes_ = sorted(int(c) for c in np.unique(y))
        need_features = any(w in self.which for w in ("mahalanobis", "knn", "pattern"))
        if need_features:
            H = read_rows(store, split, self.layer_, rows)
            if "mahalanobis" in self.which:
                self.mahalanobis_ = MahalanobisDistance(self.rcond).fit(H, y)
            if "knn" in self.which:
                self.knn_ = KNNDistance(self.k, self.memory_limit).fit(H)
            if "pattern" in self.which:
                self.pattern_ = ActivationPatternMonitor(self.threshold, self.memory_limit).fit(H, y)
        return self

    def score(self, store: ActivationStore | str | os.PathLike[str], split: str) -> dict[str, np.ndarray]:
        """Baseline scores of every sample of ``split``: ``{name: (n,) float64}``."""
        from nnsig_core.analysis.engine import as_store

        if not hasattr(self, "layer_"):
            raise NotFittedError("Baselines are not fitted; call fit(store, split) first.")
        store = as_store(store)
        store.require_complete(split)
        out: dict[str, np.ndarray] = {}
        n = store.n_samples(split)
        if "msp" in self.which or "energy" in self.which:
            logits = np.asarray(store.outputs(split)[:n])
            if "msp" in self.which:
                out["msp"] = max_softmax_score(logits)
            if "energy" in self.which:
                out["energy"] = energy_score(logits)
        if any(w in self.which for w in ("mahalanobis", "knn", "pattern")):
            H = read_rows(store, split, self.layer_, None)
            if "mahalanobis" in self.which:
                out["mahalanobis"] = self.mahalanobis_.score(H)
            if "knn" in self.which:
                out["knn"] = self.knn_.score(H)
            if "pattern" in self.which:
                out["pattern"] = self.pattern_.score(H, store.predictions(split)).astype(np.float64)
        return {k: out[k] for k in BASELINES if k in out}


def baseline_scores(analysis: Any, store: ActivationStore | str | os.PathLike[str], split: str,
                    **kwargs: Any) -> dict[str, np.ndarray]:
    """The baselines fitted on ``analysis``'s fit samples (correct ones only) and applied to ``split``.

    The features are the last analysed layer (``analysis.layers_[-1]``) unless
    ``layer=`` is given; other keyword arguments go to :class:`Baselines`.
    To score several splits, fit a :class:`Baselines` once instead (see
    :meth:`Baselines.from_analysis`).
    """
    return Baselines.from_analysis(analysis, store, **kwargs).score(store, split)
