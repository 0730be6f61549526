"""Baseline detectors computed by nnsig on the same model, samples and features as the analysis.

The feature baselines (Mahalanobis, k-NN, activation patterns) are fitted on one
layer of the analysis's correctly classified fit samples, read chunk by chunk;
the fit and the scores are each one kernel on a block of rows (:func:`_fit_part`,
:func:`_score_part`), run here or on a Dask cluster's workers. See docs/design.md,
"Diagnostics".
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import MEMORY_SIZE, Interval, NnsigParamsMixin, Satisfies, validate_params
from nnsig_core._util import parse_bytes
from nnsig_core._warnings import warn
from nnsig_core.analysis.pca import merge_moments
from nnsig_core.analysis.selection import fit_sample_mask, require_fit_labels
from nnsig_core.analysis.source import check_row_level, fitted_level
from nnsig_core.diagnostics.detectors import (
    DEFAULT_BUDGET,
    ActivationPatternMonitor,
    KNNDistance,
    MahalanobisDistance,
    energy_score,
    max_softmax_score,
    pack_patterns,
)
from nnsig_core.diagnostics.reference import LayerRows
from nnsig_core.execute.blocks import map_blocks, row_slices
from nnsig_core.execute.client import ClientArg, resolve_client
from nnsig_core.execute.merging import merge_parts
from nnsig_core.store import ActivationStore, open_store

BASELINES = ("msp", "energy", "mahalanobis", "knn", "pattern")
_FEATURE_BASELINES = ("mahalanobis", "knn", "pattern")
StoreArg = ActivationStore | str | os.PathLike


class Baselines(NnsigParamsMixin, BaseEstimator):
    """Fit the baselines on a store's split and score any split.

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
    memory_limit : int or str
        Memory budget: the k-NN rows and the packed patterns get half each at
        most (a random subsample of the training rows beyond).
    which : iterable of str
        Baselines to compute, among :data:`BASELINES`.
    random_state : int or None
        Seed of the training subsample.

    Attributes
    ----------
    layer_ : str
    n_fit_samples_ : int
        Training samples the class statistics come from.
    n_knn_samples_, n_pattern_samples_ : int
        Training samples kept for k-NN and the patterns (fewer when subsampled).
    """

    _nnsig_constraints = {
        "layer": [str, None],
        "k": [Interval(numbers.Integral, 1)],
        "threshold": [Satisfies(lambda v: np.isfinite(float(v)), "a finite number")],
        "rcond": [Interval(numbers.Real, 0.0)],
        "memory_limit": [MEMORY_SIZE],
        "which": [Satisfies(lambda v: len(v) > 0 and set(v) <= set(BASELINES),
                            f"a non-empty list among {list(BASELINES)}")],
        "random_state": [numbers.Integral, None],
    }

    def __init__(self, *, layer: str | None = None, k: int = 50, threshold: float = 0.0,
                 rcond: float = 1e-6, memory_limit: int | str = DEFAULT_BUDGET,
                 which: Iterable[str] = BASELINES, random_state: int | None = 0) -> None:
        self.layer = layer
        self.k = k
        self.threshold = threshold
        self.rcond = rcond
        self.memory_limit = memory_limit
        self.which = tuple(which)
        self.random_state = random_state

    @classmethod
    def from_analysis(cls, analysis: Any, store: StoreArg, *, client: ClientArg = None,
                      **kwargs: Any) -> Baselines:
        """Baselines fitted on ``analysis``'s correctly classified fit samples.

        ``layer`` defaults to ``analysis.layers_[-1]``; keyword arguments go to the constructor.
        """
        check_is_fitted(analysis, "clusterers_")
        store = open_store(store)
        split = analysis.fit_split_
        require_fit_labels(store, split, "the baselines")
        mask = fit_sample_mask(store, split, classes=analysis.fit_classes_, only_correct=True)
        kwargs.setdefault("layer", analysis.layers_[-1])
        return cls(**kwargs).fit(store, split, mask=mask, client=client)

    def _budget(self) -> int:
        return max(parse_bytes(self.memory_limit), 1)

    def fit(self, store: StoreArg, split: str = "train", *, mask: np.ndarray | None = None,
            client: ClientArg = None) -> Baselines:
        """Fit on the samples of ``split`` where ``mask`` holds (default: the correct ones).

        With a Dask client (given or active) the layer is read on its cluster.
        """
        validate_params(self, self._nnsig_constraints)
        store = open_store(store)
        if mask is None:
            mask = fit_sample_mask(store, split, only_correct=True)
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError(f"No sample of split {split!r} is selected to fit the baselines.")
        self.layer_ = self.layer or store.layers(split)[-1]
        labels = store.labels(split)
        y = labels[mask]
        self.fit_split_ = split
        self.n_fit_samples_ = int(y.size)
        self.classes_ = sorted(int(c) for c in np.unique(y))
        if any(w in self.which for w in _FEATURE_BASELINES):
            self._fit_features(store, split, mask, labels, resolve_client(client))
        return self

    def _fit_features(self, store: ActivationStore, split: str, mask: np.ndarray,
                      labels: np.ndarray, client: Any) -> None:
        budget = self._budget()
        layer = store.activations(split, self.layer_)
        d = int(np.prod(layer.shape[1:], dtype=np.int64))
        rng = np.random.default_rng(self.random_state)
        n = int(mask.sum())
        knn_keep, pat_keep = np.zeros_like(mask), np.zeros_like(mask)
        knn_keep[mask] = _subsample(n, (budget // 2) // (4 * d), rng, "k-NN", self.layer_,
                                    "knn" in self.which)
        pat_keep[mask] = _subsample(n, (budget // 2) // (8 * (d // 64 + 1)), rng,
                                    "activation-pattern", self.layer_, "pattern" in self.which)
        got = map_blocks(_fit_part, [mask, labels, knn_keep, pat_keep, layer], client=client,
                         merge=_fit_merge, local_bytes=max(budget // 8, 1),
                         read=LayerRows(store, split, self.layer_),
                         which=tuple(self.which), threshold=float(self.threshold))
        if "mahalanobis" in self.which:
            s = got["maha"]
            maha = MahalanobisDistance(rcond=self.rcond)
            maha._shift, maha._moment = s["mean"], s["m2"]
            maha._sums = {int(c): v - s["counts"][c] * s["mean"] for c, v in s["sums"].items()}
            maha._counts = {int(c): int(v) for c, v in s["counts"].items()}
            maha._dirty = True
            self.mahalanobis_ = maha._finish()
        memory = max(budget // 4, 1)
        if "knn" in self.which:
            self.knn_ = KNNDistance(k=self.k, memory_limit=memory).fit(got["knn"])
            self.n_knn_samples_ = int(knn_keep.sum())
        if "pattern" in self.which:
            monitor = ActivationPatternMonitor(threshold=self.threshold, memory_limit=memory)
            self.pattern_ = monitor.fit_packed(got["pattern"], labels[pat_keep], d)
            self.n_pattern_samples_ = int(pat_keep.sum())

    def score(self, store: StoreArg, split: str, *,
              client: ClientArg = None) -> dict[str, np.ndarray]:
        """Baseline scores of every sample of ``split``: ``{name: (n,) float64}``."""
        store = open_store(store)
        if "msp" in self.which or "energy" in self.which:
            _check_logits(store, split)
        check_is_fitted(self, "layer_", msg="Baselines are not fitted; call fit(store, split) "
                                            "first.")
        store.require_complete(split)
        fit = self.fit_split_
        check_row_level(store, split, fit, fitted_level(store, fit))
        if split == fit and set(_FEATURE_BASELINES) & set(self.which):
            warn(f"Baseline scores of split {split!r}, which the baselines were fitted on, are "
                 "in-sample (a sample is its own nearest neighbour; the signature scores are "
                 "leave-one-out there): they are not comparable. Score a split held out from "
                 "the fit.")
        keys = [k for k in BASELINES if k in self.which]
        logits = store.outputs(split) if {"msp", "energy"} & set(keys) else None
        layer = (store.activations(split, self.layer_)
                 if set(_FEATURE_BASELINES) & set(keys) else None)
        got = map_blocks(_score_part, [store.predictions(split), logits, layer],
                         client=resolve_client(client), local_bytes=max(self._budget() // 8, 1),
                         model=self, keys=tuple(keys),
                         read=LayerRows(store, split, self.layer_))
        return {k: got[k] for k in keys}


def _maha_part(X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """The Mahalanobis class sums, counts, mean and scatter of a block's rows, slice by slice."""
    return _maha_merge(*[_maha_slice(X[sl], y[sl]) for sl in row_slices(X.shape[0], X.shape[1])])


def _maha_slice(block: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    X = np.asarray(block, dtype=np.float64)
    if X.shape[0] == 0:
        return {"n": 0}
    mean = X.mean(axis=0)
    C = X - mean
    classes, inv = np.unique(y, return_inverse=True)
    sums = np.zeros((classes.size, X.shape[1]))
    np.add.at(sums, inv.reshape(-1), X)
    return {"n": X.shape[0], "mean": mean, "m2": C.T @ C,
            "sums": dict(zip(classes.tolist(), sums, strict=True)),
            "counts": dict(zip(classes.tolist(), np.bincount(inv.reshape(-1)).tolist(),
                               strict=True))}


def _maha_merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out = merge_moments(*parts)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for p in parts:
        for c, v in p.get("sums", {}).items():
            sums[c] = sums.get(c, 0) + v
            counts[c] = counts.get(c, 0) + p["counts"][c]
    out["sums"], out["counts"] = sums, counts
    return out


def _fit_part(mask: np.ndarray, labels: np.ndarray, knn: np.ndarray, pat: np.ndarray, raw: Any,
              *, lo: int, read: LayerRows, which: tuple[str, ...],
              threshold: float) -> dict[str, Any]:
    """A block's share of the fit: Mahalanobis moments, k-NN rows and packed patterns."""
    mask = np.asarray(mask, dtype=bool)
    X = read(raw, lo, mask)
    out: dict[str, Any] = {}
    if "mahalanobis" in which:
        out["maha"] = _maha_part(X, np.asarray(labels, dtype=np.int64)[mask])
    if "knn" in which:
        out["knn"] = [X[np.asarray(knn, dtype=bool)[mask]]]
    if "pattern" in which:
        out["pattern"] = [pack_patterns(X[np.asarray(pat, dtype=bool)[mask]] > threshold)]
    return out


def _fit_merge(*parts: dict[str, Any]) -> dict[str, Any]:
    maha = [p["maha"] for p in parts if "maha" in p]
    out = merge_parts(*[{k: v for k, v in p.items() if k != "maha"} for p in parts])
    if maha:
        out["maha"] = _maha_merge(*maha)
    return out


def _score_part(preds: np.ndarray, logits: Any, raw: Any, *, lo: int, model: Baselines,
                keys: tuple[str, ...], read: LayerRows) -> dict[str, Any]:
    """A block's baseline scores, one list of floats per baseline."""
    out: dict[str, Any] = {}
    if logits is not None:
        z = np.asarray(logits)
        if "msp" in keys:
            out["msp"] = max_softmax_score(z)
        if "energy" in keys:
            out["energy"] = energy_score(z)
    if raw is not None:
        X = read(raw, lo)
        if "mahalanobis" in keys:
            out["mahalanobis"] = model.mahalanobis_.score(X)
        if "knn" in keys:
            out["knn"] = model.knn_.score(X)
        if "pattern" in keys:
            out["pattern"] = model.pattern_.score(X, np.asarray(preds))
    return {k: [np.asarray(v, dtype=np.float64)] for k, v in out.items()}


def _check_logits(store: ActivationStore, split: str, n_rows: int = 2048) -> None:
    """Warn when the outputs of ``split`` look like probabilities rather than logits."""
    out = np.asarray(store.outputs(split)[: min(n_rows, store.n_samples(split))],
                     dtype=np.float64)
    if out.ndim != 2 or out.shape[1] < 2 or out.size == 0:
        return
    if (out.min() >= 0 and out.max() <= 1
            and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)):
        warn(f"The outputs of split {split!r} look like probabilities (every row in [0, 1], "
             "summing to 1: the model ends in a softmax): the msp and energy baselines expect "
             "logits, and energy on probabilities is not the energy score. Capture the logits "
             "(the model without its final softmax, or its pre-softmax layer as the output; "
             "for a Keras model ending in Dense(..., activation='softmax'), set "
             "model.layers[-1].activation = keras.activations.linear before capturing).")


def _subsample(n: int, cap: int, rng: np.random.Generator, what: str, layer: str,
               used: bool = True) -> np.ndarray:
    """A mask of ``min(n, cap)`` of ``n`` rows at random (drawn even when not ``used``, so the
    next baseline's draws stay the same)."""
    keep = np.ones(n, dtype=bool)
    cap = max(int(cap), 1)
    if n > cap:
        keep[:] = False
        keep[rng.choice(n, size=cap, replace=False)] = True
    if n > cap and used:
        warn(f"The {what} baseline keeps {cap} of {n} training samples of layer {layer!r} (a "
             "random subsample) to stay within memory_limit; raise memory_limit to use all.")
    return keep


def baseline_scores(analysis: Any, store: StoreArg, split: str, **kwargs: Any) -> dict[str, np.ndarray]:
    """:meth:`Baselines.from_analysis` (keyword arguments go there) applied to ``split``.

    To score several splits, fit a :class:`Baselines` once instead.
    """
    client = kwargs.pop("client", None)
    return Baselines.from_analysis(analysis, store, client=client, **kwargs).score(
        store, split, client=client)
