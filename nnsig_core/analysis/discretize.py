"""Discretization of a layer's activations into bins, fitted from streamed chunks.

KMeans is fed the bin indices (as float32), as in the prototype: with uniform layer-wide
bins they are an affine function of the bin centres, so the partition is the same; with
per-unit bins they put every unit on the same 0..n_bins-1 scale.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import KBinsDiscretizer
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import Interval, NnsigParamsMixin, Options, Satisfies, validate_params
from nnsig_core.analysis._util import Reservoir

log = logging.getLogger("nnsig")

STRATEGIES = ("uniform", "quantile", "binary")
SCOPES = ("layer", "unit")
MAX_BINS = 32767
_TRANSFORM_BLOCK = 4 << 20  # elements compared at once by the per-unit transform


class Discretizer(NnsigParamsMixin, TransformerMixin, BaseEstimator):
    """Bin activations; fittable in one go (:meth:`fit`) or from chunks (:meth:`partial_fit`).

    Parameters
    ----------
    strategy : {"uniform", "quantile", "binary"}
        ``"uniform"``: ``n_bins`` equal-width bins over the range seen in training.
        ``"quantile"``: bins holding equal shares of the training values (estimated on at
        most ``subsample`` rows; repeated edges are merged, so there may be fewer bins).
        ``"binary"``: 1 where the value is above ``threshold``, else 0.
    n_bins : int
        Number of bins (2..32767) of the uniform and quantile strategies.
    scope : {"layer", "unit"}
        One set of edges for the whole layer, or edges per unit (by scikit-learn's
        :class:`~sklearn.preprocessing.KBinsDiscretizer`).
    threshold : float
        Activation threshold of the binary strategy.
    subsample : int or None
        Rows kept to estimate quantiles (``None``: all rows).
    random_state : int or None
        Seed of the quantile subsample.

    Attributes
    ----------
    n_features_in_ : int
    data_min_, data_max_ : ndarray of shape (n_features,)
        Per-unit range seen in training (uniform strategy).
    bin_edges_ : ndarray or None
        ``(n_bins_ + 1,)`` per layer, or ``(n_features, max(n_bins_) + 1)`` per unit (padded
        with NaN); ``None`` for the binary strategy.
    n_bins_ : int or ndarray of int
        Bins actually used (per unit when ``scope="unit"``).

    Notes
    -----
    :meth:`transform` returns ``int16`` bin indices; values outside the training range
    fall into the edge bins. Bin ``i`` holds ``edges[i] <= x < edges[i + 1]``.
    """

    bin_edges_: Any
    n_bins_: Any

    def __init__(self, *, strategy: str = "uniform", n_bins: int = 10, scope: str = "layer",
                 threshold: float = 0.0, subsample: int | None = 200_000,
                 random_state: int | None = None) -> None:
        self.strategy = strategy
        self.n_bins = n_bins
        self.scope = scope
        self.threshold = threshold
        self.subsample = subsample
        self.random_state = random_state

    _nnsig_constraints = {
        "strategy": [Options(STRATEGIES)],
        "n_bins": [Interval(numbers.Integral, 2, MAX_BINS)],
        "scope": [Options(SCOPES)],
        "threshold": [Satisfies(lambda v: np.isfinite(float(v)), "a finite number")],
        "subsample": [Interval(numbers.Integral, 1), None],
        "random_state": [numbers.Integral, None],
    }

    def _validate(self) -> None:
        constraints = dict(self._nnsig_constraints)
        if self.strategy == "binary":  # the binary strategy has no bins to count
            constraints.pop("n_bins")
        validate_params(self, constraints)

    def _validate_params(self) -> None:
        self._validate()

    @staticmethod
    def _as_2d(X: Any) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 1:
            raise ValueError("Discretizer expects a 2-D array (samples, features); got 1-D.")
        X = X.reshape(X.shape[0], -1)
        if not np.issubdtype(X.dtype, np.floating):
            X = X.astype(np.float32)
        return X

    def fit(self, X: Any, y: Any = None) -> Discretizer:
        """Fit the bins on ``X`` (samples x features; extra dimensions are flattened)."""
        for attr in ("n_features_in_", "_reservoir", "_dirty"):
            if hasattr(self, attr):
                delattr(self, attr)
        self.partial_fit(X)
        return self.finalize()

    def partial_fit(self, X: Any, y: Any = None) -> Discretizer:
        """Update the fit with one more chunk of rows (for data that does not fit in memory)."""
        self._validate()
        X = self._as_2d(X)
        if not hasattr(self, "n_features_in_"):
            self.n_features_in_ = int(X.shape[1])
            self._n_seen = 0
            if self.strategy == "uniform":
                self.data_min_ = np.full(self.n_features_in_, np.inf)
                self.data_max_ = np.full(self.n_features_in_, -np.inf)
            elif self.strategy == "quantile":
                size = self.subsample if self.subsample is not None else np.iinfo(np.int64).max
                self._reservoir = Reservoir(int(size), self.random_state)
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"Discretizer was fitted on {self.n_features_in_} features; this "
                             f"chunk has {X.shape[1]}.")
        if X.shape[0] == 0:
            return self
        if self.strategy == "uniform":
            self.data_min_ = np.minimum(self.data_min_, X.min(axis=0))
            self.data_max_ = np.maximum(self.data_max_, X.max(axis=0))
        elif self.strategy == "quantile":
            if not hasattr(self, "_reservoir"):
                raise NotFittedError("This quantile Discretizer was loaded from a store; it cannot "
                                     "be refitted incrementally. Create a new one.")
            self._reservoir.add(X)
        self._n_seen += int(X.shape[0])
        self._dirty = True
        return self

    def finalize(self) -> Discretizer:
        """Compute the bin edges from what :meth:`partial_fit` has seen."""
        check_is_fitted(self, "n_features_in_")
        if not getattr(self, "_dirty", False):
            return self
        if self._n_seen == 0:
            raise ValueError("Discretizer.partial_fit saw no rows; cannot compute bins.")
        f = self.n_features_in_
        if self.strategy == "binary":
            self.bin_edges_ = None
            self.n_bins_ = 2
        elif self.scope == "layer":
            if self.strategy == "uniform":
                lo, hi = float(self.data_min_.min()), float(self.data_max_.max())
                edges = np.linspace(lo, hi, self.n_bins + 1) if hi > lo else np.array([lo, hi])
            else:
                values = self._reservoir.sample().ravel()
                q = np.linspace(0, 100, self.n_bins + 1)
                edges = np.unique(np.percentile(values, q, method="averaged_inverted_cdf"))
                if edges.size < 2:
                    edges = np.array([edges[0], edges[0]])
                if edges.size - 1 < self.n_bins:
                    log.info("Quantile bins: %d of %d bins left once repeated edges were merged.",
                             edges.size - 1, self.n_bins)
            self.bin_edges_ = edges.astype(np.float64)
            self.n_bins_ = int(edges.size - 1)
        else:
            if self.strategy == "uniform":
                data = np.vstack([self.data_min_, self.data_max_])
                kb = KBinsDiscretizer(n_bins=self.n_bins, encode="ordinal", strategy="uniform")
            else:
                data = self._reservoir.sample()
                kb = KBinsDiscretizer(n_bins=self.n_bins, encode="ordinal", strategy="quantile",
                                      subsample=None)
            with warnings.catch_warnings():
                # Constant units (dead ReLUs) and merged quantile bins are expected here.
                warnings.simplefilter("ignore", UserWarning)
                kb.fit(data)
            n_bins = np.asarray(kb.n_bins_, dtype=np.int64).reshape(f)
            edges = np.full((f, int(n_bins.max()) + 1), np.nan)
            for j, e in enumerate(kb.bin_edges_):
                e = np.asarray(e, dtype=np.float64)
                if not np.all(np.isfinite(e)):  # constant unit: one bin
                    e = np.array([data[0, j], data[0, j]], dtype=np.float64)
                edges[j, : e.size] = e
            self.bin_edges_ = edges
            self.n_bins_ = n_bins
        self._dirty = False
        return self

    def _check_fitted(self) -> None:
        check_is_fitted(self, "n_features_in_")
        if getattr(self, "_dirty", False):
            self.finalize()

    def transform(self, X: Any) -> np.ndarray:
        """Bin indices of ``X``: an ``int16`` array (samples, features)."""
        self._check_fitted()
        X = self._as_2d(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"Discretizer was fitted on {self.n_features_in_} features; X has "
                             f"{X.shape[1]}.")
        if self.strategy == "binary":
            return (X > self.threshold).astype(np.int16)
        if self.scope == "layer":
            return np.searchsorted(self.bin_edges_[1:-1], X, side="right").astype(np.int16)
        return self._transform_units(X)

    def _transform_units(self, X: np.ndarray) -> np.ndarray:
        inner = self.bin_edges_[:, 1:-1].copy()
        # Edges past a unit's last bin compare false (x >= +inf never holds for finite x).
        for j, nb in enumerate(self.n_bins_):
            inner[j, max(int(nb) - 1, 0) :] = np.inf
        out = np.empty(X.shape, dtype=np.int16)
        n_inner = max(inner.shape[1], 1)
        step = max(1, _TRANSFORM_BLOCK // max(X.shape[1] * n_inner, 1))
        for s in range(0, X.shape[0], step):
            out[s : s + step] = (X[s : s + step, :, None] >= inner[None, :, :]).sum(axis=2)
        return out

    def inverse_transform(self, Xt: Any) -> np.ndarray:
        """Map bin indices back to bin centres (float32); binary codes are returned as 0.0/1.0."""
        self._check_fitted()
        Xt = np.asarray(Xt).astype(np.int64)
        if self.strategy == "binary":
            return Xt.astype(np.float32)
        e = self.bin_edges_
        if self.scope == "layer":
            centres = (e[:-1] + e[1:]) / 2
            return centres[np.clip(Xt, 0, centres.size - 1)].astype(np.float32)
        centres = (e[:, :-1] + e[:, 1:]) / 2
        idx = np.clip(Xt, 0, np.asarray(self.n_bins_)[None, :] - 1)
        return np.take_along_axis(centres.T, idx, axis=0).astype(np.float32)

    @property
    def spec(self) -> str:
        """A short human-readable form, parsed back by :func:`parse_discretizer_spec`."""
        if self.strategy == "binary":
            s = "binary" if float(self.threshold) == 0.0 else f"binary:{self.threshold:g}"
        else:
            s = f"{self.strategy}:{self.n_bins}"
        return s + (":unit" if self.scope == "unit" else "")

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as JSON attributes and NumPy arrays (for saving in a store)."""
        self._check_fitted()
        attrs: dict[str, Any] = {
            "params": {k: v.item() if isinstance(v, np.generic) else v
                       for k, v in self.get_params().items()},
            "n_features_in": int(self.n_features_in_),
            "n_seen": int(self._n_seen),
        }
        arrays: dict[str, np.ndarray] = {}
        if self.strategy == "uniform":
            arrays["data_min"] = np.asarray(self.data_min_, dtype=np.float64)
            arrays["data_max"] = np.asarray(self.data_max_, dtype=np.float64)
        if self.bin_edges_ is not None:
            arrays["bin_edges"] = np.asarray(self.bin_edges_, dtype=np.float64)
        if self.scope == "unit" and self.strategy != "binary":
            arrays["n_bins"] = np.asarray(self.n_bins_, dtype=np.int64)
        return attrs, arrays

    @classmethod
    def _from_state(cls, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> Discretizer:
        """Rebuild a fitted discretizer from :meth:`_state` output."""
        d = cls(**attrs["params"])
        d.n_features_in_ = int(attrs["n_features_in"])
        d._n_seen = int(attrs.get("n_seen", 0))
        d._dirty = False
        if "data_min" in arrays:
            d.data_min_ = np.asarray(arrays["data_min"])
            d.data_max_ = np.asarray(arrays["data_max"])
        if d.strategy == "binary":
            d.bin_edges_, d.n_bins_ = None, 2
        else:
            d.bin_edges_ = np.asarray(arrays["bin_edges"])
            d.n_bins_ = (int(d.bin_edges_.size - 1) if d.scope == "layer"
                         else np.asarray(arrays["n_bins"], dtype=np.int64))
        return d


def parse_discretizer_spec(spec: str | None) -> Discretizer | None:
    """Build a :class:`Discretizer` from a command-line spec.

    Grammar: ``STRATEGY[:N_BINS][:SCOPE]`` (``uniform:10``, ``quantile:20:unit``),
    ``binary[:THRESHOLD][:SCOPE]``; ``none`` or ``""`` give ``None``. ``N_BINS`` defaults
    to 10, ``SCOPE`` to ``layer``.

    Raises
    ------
    ValueError
        If the spec is malformed; the message shows the grammar.
    """
    if spec is None:
        return None
    text = str(spec).strip().lower()
    if text in ("", "none", "off", "no"):
        return None
    parts = text.split(":")
    strategy, rest = parts[0], parts[1:]
    grammar = (
        f"Cannot parse the discretizer spec {spec!r}. Use STRATEGY[:N_BINS][:SCOPE] with "
        "STRATEGY uniform or quantile (e.g. 'uniform:10', 'quantile:20:unit'), "
        "'binary[:THRESHOLD]', or 'none'."
    )
    if strategy not in STRATEGIES:
        raise ValueError(grammar)
    scope = "layer"
    if rest and rest[-1] in SCOPES:
        scope = rest.pop()
    if len(rest) > 1:
        raise ValueError(grammar)
    try:
        if strategy == "binary":
            threshold = float(rest[0]) if rest else 0.0
            d = Discretizer(strategy="binary", scope=scope, threshold=threshold)
        else:
            n_bins = int(rest[0]) if rest else 10
            d = Discretizer(strategy=strategy, n_bins=n_bins, scope=scope)
    except ValueError as exc:
        raise ValueError(grammar) from exc
    d._validate()
    return d
