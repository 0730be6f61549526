"""Baseline detectors computed by nnsig on the same model, samples and features as the analysis.

The feature baselines (:mod:`~nnsig_core.diagnostics.detectors`: Mahalanobis,
k-NN, activation patterns) are fitted on the analysis's fit samples that the
model classifies correctly, on one layer (by default the last analysed one);
the logit baselines (max softmax, energy) need only the outputs. Every score
is *higher = more suspicious*.

Memory: the layer is read chunk by chunk, never whole. The Mahalanobis fit
accumulates class sums and one ``d x d`` moment; the k-NN reference set and
the activation patterns are kept in memory, and when the training rows do not
fit ``memory_limit`` a uniform random subsample of them is used (with a warning), as
Sun et al. do for ImageNet. Scoring reads the scored split block by block.
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
from nnsig_core.analysis.selection import fit_sample_mask
from nnsig_core.analysis.source import StoreSource
from nnsig_core.diagnostics.detectors import (
    DEFAULT_BUDGET,
    ActivationPatternMonitor,
    KNNDistance,
    MahalanobisDistance,
    energy_score,
    max_softmax_score,
    pack_patterns,
)
from nnsig_core.execute.client import ClientArg, resolve_client
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
        Budget of memory for the layer's rows: the k-NN reference set and the
        packed patterns get half of it each at most (a random subsample of
        the training rows when they do not fit), reads and the chunked
        searches the rest.
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

    def __init__(
        self,
        *,
        layer: str | None = None,
        k: int = 50,
        threshold: float = 0.0,
        rcond: float = 1e-6,
        memory_limit: int | str = DEFAULT_BUDGET,
        which: Iterable[str] = BASELINES,
        random_state: int | None = 0,
    ) -> None:
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
        """Baselines fitted on ``analysis``'s fit samples that the model classifies correctly.

        The features are the last analysed layer (``analysis.layers_[-1]``)
        unless ``layer=`` is given; other keyword arguments go to the constructor.
        """
        check_is_fitted(analysis, "clusterers_")
        store = open_store(store)
        split = analysis.fit_split_
        mask = fit_sample_mask(store, split, classes=analysis.fit_classes_, only_correct=True)
        kwargs.setdefault("layer", analysis.layers_[-1])
        return cls(**kwargs).fit(store, split, mask=mask, client=client)

    def _budget(self) -> int:
        return max(parse_bytes(self.memory_limit), 1)

    def fit(self, store: StoreArg, split: str = "train", *, mask: np.ndarray | None = None,
            client: ClientArg = None) -> Baselines:
        """Fit on the samples of ``split`` where ``mask`` holds.

        ``mask`` defaults to the correctly classified labelled samples
        (:func:`~nnsig_core.analysis.fit_sample_mask`). With a Dask client (given or
        active) the layer is read on its cluster.
        """
        if (client := resolve_client(client)) is not None:
            from nnsig_core.distributed.baselines import fit_baselines

            return fit_baselines(self, store, split, mask, client)
        validate_params(self, self._nnsig_constraints)
        store = open_store(store)
        if mask is None:
            mask = fit_sample_mask(store, split, only_correct=True)
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            raise ValueError(f"No sample of split {split!r} is selected to fit the baselines.")
        self.layer_ = self.layer or store.layers(split)[-1]
        rows = np.flatnonzero(mask)
        y = store.labels(split)[rows]
        self.fit_split_ = split
        self.n_fit_samples_ = int(rows.size)
        self.classes_ = sorted(int(c) for c in np.unique(y))
        if any(w in self.which for w in _FEATURE_BASELINES):
            self._fit_features(store, split, rows, y)
        return self

    def _fit_features(self, store: ActivationStore, split: str, rows: np.ndarray,
                      y: np.ndarray) -> None:
        budget = self._budget()
        src = StoreSource(store, split, self.layer_, rows, read_bytes=max(budget // 8, 1))
        d = src.n_features
        rng = np.random.default_rng(self.random_state)
        knn_keep = _subsample(rows.size, (budget // 2) // (4 * d), rng, "k-NN", self.layer_)
        pat_keep = _subsample(rows.size, (budget // 2) // (8 * (d // 64 + 1)), rng,
                              "activation-pattern", self.layer_)
        maha = MahalanobisDistance(rcond=self.rcond) if "mahalanobis" in self.which else None
        knn_rows: list[np.ndarray] = []
        patterns: list[np.ndarray] = []
        o = 0
        for _, block in src.blocks("baselines"):
            sel = slice(o, o + block.shape[0])
            o += block.shape[0]
            if maha is not None:
                maha.partial_fit(block, y[sel])
            if "knn" in self.which:
                knn_rows.append(block[knn_keep[sel]])
            if "pattern" in self.which:
                patterns.append(pack_patterns(block[pat_keep[sel]] > self.threshold))
        if maha is not None:
            self.mahalanobis_ = maha
        memory = max(budget // 4, 1)
        if "knn" in self.which:
            self.knn_ = KNNDistance(k=self.k, memory_limit=memory).fit(np.concatenate(knn_rows))
            self.n_knn_samples_ = int(knn_keep.sum())
        if "pattern" in self.which:
            monitor = ActivationPatternMonitor(threshold=self.threshold, memory_limit=memory)
            self.pattern_ = monitor.fit_packed(np.concatenate(patterns), y[pat_keep], d)
            self.n_pattern_samples_ = int(pat_keep.sum())

    def score(self, store: StoreArg, split: str, *,
              client: ClientArg = None) -> dict[str, np.ndarray]:
        """Baseline scores of every sample of ``split``: ``{name: (n,) float64}`` (computed on
        the Dask cluster of ``client``, given or active, if any)."""
        if "msp" in self.which or "energy" in self.which:
            _check_logits(open_store(store), split)
        if (client := resolve_client(client)) is not None:
            from nnsig_core.distributed.baselines import score_baselines

            return score_baselines(self, store, split, client)
        check_is_fitted(self, "layer_", msg="Baselines are not fitted; call fit(store, split) "
                                            "first.")
        store = open_store(store)
        store.require_complete(split)
        n = store.n_samples(split)
        out: dict[str, np.ndarray] = {}
        if "msp" in self.which or "energy" in self.which:
            logits = np.asarray(store.outputs(split)[:n])
            if "msp" in self.which:
                out["msp"] = max_softmax_score(logits)
            if "energy" in self.which:
                out["energy"] = energy_score(logits)
        features = [w for w in _FEATURE_BASELINES if w in self.which]
        if features:
            for w in features:
                out[w] = np.empty(n)
            preds = store.predictions(split)
            src = StoreSource(store, split, self.layer_, None,
                              read_bytes=max(self._budget() // 8, 1))
            for rows, block in src.blocks("baselines"):
                if "mahalanobis" in out:
                    out["mahalanobis"][rows] = self.mahalanobis_.score(block)
                if "knn" in out:
                    out["knn"][rows] = self.knn_.score(block)
                if "pattern" in out:
                    out["pattern"][rows] = self.pattern_.score(block, preds[rows])
        return {k: out[k] for k in BASELINES if k in out}


def _check_logits(store: ActivationStore, split: str, n_rows: int = 2048) -> None:
    """Warn when the outputs of ``split`` look like probabilities rather than logits (rows in
    [0, 1] summing to 1: a model ending in softmax), on which msp and energy are other
    scores than the published ones."""
    out = np.asarray(store.outputs(split)[: min(n_rows, store.n_samples(split))],
                     dtype=np.float64)
    if out.ndim != 2 or out.shape[1] < 2 or out.size == 0:
        return
    if (out.min() >= 0 and out.max() <= 1
            and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)):
        warn(f"The outputs of split {split!r} look like probabilities (every row in [0, 1], "
             "summing to 1: the model ends in a softmax): the msp and energy baselines expect "
             "logits, and energy on probabilities is not the energy score. Capture the logits "
             "(the model without its final softmax, or its pre-softmax layer as the output).")


def _subsample(n: int, cap: int, rng: np.random.Generator, what: str, layer: str) -> np.ndarray:
    """A mask keeping ``min(n, cap)`` of ``n`` rows, uniformly at random."""
    keep = np.ones(n, dtype=bool)
    cap = max(int(cap), 1)
    if n > cap:
        keep[:] = False
        keep[rng.choice(n, size=cap, replace=False)] = True
        warn(f"The {what} baseline keeps {cap} of {n} training samples of layer {layer!r} (a "
             "random subsample) to stay within memory_limit; raise memory_limit to use all.")
    return keep


def baseline_scores(analysis: Any, store: StoreArg, split: str, **kwargs: Any) -> dict[str, np.ndarray]:
    """The baselines fitted on ``analysis``'s fit samples (correct ones only) and applied to ``split``.

    The features are the last analysed layer (``analysis.layers_[-1]``) unless
    ``layer=`` is given; other keyword arguments go to :class:`Baselines`.
    To score several splits, fit a :class:`Baselines` once instead (see
    :meth:`Baselines.from_analysis`).
    """
    client = kwargs.pop("client", None)
    return Baselines.from_analysis(analysis, store, client=client, **kwargs).score(
        store, split, client=client)
