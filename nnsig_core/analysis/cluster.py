"""Per-layer clustering: optional discretization, optional PCA (both fitted from the fit rows by
either driver), then KMeans (exact, or out of core), with canonical cluster ids."""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any, cast

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import MEMORY_SIZE, Interval, NnsigParamsMixin, Options, validate_params
from nnsig_core._util import count_matrix, format_bytes, parse_bytes
from nnsig_core._warnings import warn
from nnsig_core.analysis._util import Reservoir
from nnsig_core.analysis.assign import assign_nearest, canonical_order
from nnsig_core.analysis.discretize import Discretizer
from nnsig_core.analysis.errors import TooFewSamplesError
from nnsig_core.analysis.fit_rows import DiscretizeOnly, FitRows, SourceRows
from nnsig_core.analysis.lloyd import (
    INIT_SAMPLE_BYTES,
    canonical_from_first,
    final_assignment,
    fit_lloyd,
    sample_ranks,
)
from nnsig_core.analysis.pca import PCAReducer
from nnsig_core.analysis.source import RowSource

log = logging.getLogger("nnsig")

METHODS = ("auto", "exact", "lloyd")


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


class LayerClusterer(NnsigParamsMixin, BaseEstimator):
    """Cluster one layer's rows: discretize, reduce, KMeans (exact or streamed).

    Parameters
    ----------
    n_clusters : int
    discretizer : Discretizer or None
        Template, cloned at fit (its ``random_state`` defaults to ours).
    reduce : int or None
        Number of principal components (``None``, or >= the features: no reduction).
    memory_limit : int or str
        Budget of layer data held in memory.
    random_state : int or None
    n_init : int or "auto"
        KMeans initialisations.
    method : {"auto", "exact", "lloyd"}
        ``"auto"`` chooses by ``memory_limit``.
    progress : bool
        Show tqdm bars.

    Attributes
    ----------
    method_ : str
        The path used, ``"exact"`` or ``"lloyd"`` (``"streaming"``, ``"distributed"`` in
        older saves).
    cached_raw_ : bool
        Whether the raw rows were kept in memory for the passes of the fit.
    n_features_in_ : int
    discretizer_ : Discretizer or None
    reducer_ : PCAReducer or None
    cluster_centers_ : ndarray (n_clusters, n_dims), float32
        Centres in canonical order, in the clustering space.
    fit_counts_ : ndarray (n_clusters,)
    inertia_ : float
    n_fit_samples_ : int
    fit_composition_ : ndarray (n_clusters, n_classes), int64
        Fit rows per cluster and label.
    n_iter_ : int
    """

    def __init__(self, *, n_clusters: int = 10, discretizer: Discretizer | None = None,
                 reduce: int | None = None, memory_limit: int | str = "2GiB",
                 random_state: int | None = 0, n_init: int | str = 1, method: str = "auto",
                 progress: bool = False) -> None:
        self.n_clusters = n_clusters
        self.discretizer = discretizer
        self.reduce = reduce
        self.memory_limit = memory_limit
        self.random_state = random_state
        self.n_init = n_init
        self.method = method
        self.progress = progress

    _nnsig_constraints = {
        "n_clusters": [Interval(numbers.Integral, 1)],
        "discretizer": [Discretizer, None],
        "reduce": [Interval(numbers.Integral, 1), None],
        "memory_limit": [MEMORY_SIZE],
        "random_state": [numbers.Integral, None],
        "n_init": [Interval(numbers.Integral, 1), Options(("auto",))],
        "method": [Options(METHODS)],
        "progress": [bool],
    }

    def fit(self, rows: FitRows | RowSource, *, name: str = "layer",
            n_classes: int | None = None) -> LayerClusterer:
        """Fit on every fit row of ``rows`` (named ``name`` in messages).

        Parameters
        ----------
        rows : FitRows or RowSource
            The layer's fit rows, held by either driver; a plain row source is read here.
        name : str
        n_classes : int, optional
            Columns of :attr:`fit_composition_` (default 1: every row is class 0).
        """
        validate_params(self, self._nnsig_constraints)
        rows = cast(FitRows, rows if hasattr(rows, "reducer") else SourceRows(rows))
        k = int(self.n_clusters)
        n, f = int(rows.n), int(rows.n_features)
        if n < k:
            raise TooFewSamplesError(f"Layer {name!r}: {n} sample(s) selected for fitting but "
                                     f"n_clusters={k}. Lower n_clusters to at most {n}, or fit "
                                     "on more samples (more data, only_correct=False, or a "
                                     "larger class subset).")
        limit = parse_bytes(self.memory_limit)
        n_cls = 1 if n_classes is None else int(n_classes)
        n_comp = self._n_components(n, f, name)
        d_eff = n_comp or f
        eff_bytes = n * d_eff * 4
        transformed = self.discretizer is not None or n_comp is not None
        method = self.method
        if method == "auto":
            method = "exact" if eff_bytes <= limit else "lloyd"
        # Bins, a reduction and Lloyd's iterations read the rows once per pass: keep them.
        kept = (transformed or method == "lloyd") and rows.keep(
            n * f * 4 + (eff_bytes if method == "exact" else 0) <= limit)
        log.info("Layer %r: %d samples x %d features (%s as float32, budget %s): %s KMeans%s",
                 name, n, d_eff, format_bytes(eff_bytes), format_bytes(limit), method,
                 " on rows kept in memory" if kept else "")
        self.n_features_in_ = f
        self.discretizer_ = (None if self.discretizer is None else
                             fit_discretizer(self.discretizer, rows, self.random_state))
        self.reducer_ = (None if n_comp is None else
                         fit_pca(n_comp, rows, self.discretizer_, self.random_state))
        fmap = self if transformed else None
        try:
            if method == "exact":
                X, labels = rows.gather(fmap)
                rows.drop()  # free the kept rows before KMeans
                km = self._kmeans(X, k, name)
                del X
                centers = np.asarray(km.cluster_centers_, dtype=np.float32)
                # KMeans' final labels match its centres (it ends with an assignment step).
                ids = np.asarray(km.labels_)
                order = canonical_order(ids, centers)
                counts = np.bincount(ids, minlength=k)
                composition = count_matrix(ids, labels, k, n_cls)
                inertia, self.n_iter_ = float(km.inertia_), int(km.n_iter_)
            else:
                # The seeding sample: a quarter of the budget, at most INIT_SAMPLE_BYTES.
                budget = int(min(INIT_SAMPLE_BYTES, max(limit // 4, 1)))
                sample = rows.sample(fmap, sample_ranks(n, d_eff, k, self.random_state, budget))
                reduce = rows.reducer(fmap)
                result = fit_lloyd(reduce, sample, n,
                                   lambda X, n_init: self._kmeans(X, k, name, n_init), name=name)
                del sample
                final = final_assignment(reduce, result, n_cls)
                centers = result.centers
                order = canonical_from_first(final.first, centers)
                counts, composition, inertia = final.counts, final.composition, final.inertia
                self.n_iter_ = result.n_iter
        finally:
            rows.drop()
        self.method_ = method
        self.cached_raw_ = bool(kept)
        self.cluster_centers_ = np.ascontiguousarray(centers[order], dtype=np.float32)
        self.fit_counts_ = np.asarray(counts)[order].astype(np.int64)
        self.fit_composition_ = np.asarray(composition)[order].astype(np.int64)
        self.inertia_ = inertia
        self.n_fit_samples_ = n
        n_empty = int((self.fit_counts_ == 0).sum())
        if n_empty:
            warn(f"Layer {name!r}: {n_empty} of {k} clusters hold no fit sample (too few "
                 "distinct activation patterns?); consider fewer clusters.")
        return self

    def _n_components(self, n: int, f: int, name: str) -> int | None:
        if self.reduce is None:
            return None
        r = int(self.reduce)
        if r >= f:
            log.info("Layer %r has %d features <= reduce=%d: not reduced.", name, f, r)
            return None
        if r > n:
            warn(f"Layer {name!r}: reduce={r} > {n} fit samples; using {n} components.")
            return n if n < f else None
        return r

    def _kmeans(self, X: np.ndarray, k: int, name: str, n_init: int | None = None) -> KMeans:
        """scikit-learn's KMeans on ``X`` (``n_init`` at least the estimator's when given)."""
        # KMeans centres a copy of X; without the copy it centres X in place and adds the
        # mean back, which changes X by rounding. Copy when the budget allows it.
        copy = 2 * X.nbytes <= parse_bytes(self.memory_limit)
        runs = self.n_init if n_init is None else max(
            n_init, 1 if self.n_init == "auto" else int(self.n_init))
        km = KMeans(n_clusters=k, n_init=runs, random_state=self.random_state, copy_x=copy)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            km.fit(X)
        for msg in dict.fromkeys(str(w.message) for w in caught):
            warn(f"Layer {name!r}: {msg}")
        return km

    def features(self, block: np.ndarray) -> np.ndarray:
        """Raw rows (m, n_features) -> the clustering space (float32)."""
        x = block
        if self.discretizer_ is not None:
            x = self.discretizer_.transform(block).astype(np.float32)
        if self.reducer_ is not None:
            x = self.reducer_.transform(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _rows(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "cluster_centers_")
        X = np.asarray(X, dtype=np.float32)
        X = X.reshape(X.shape[0], -1)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"The layer was fitted with {self.n_features_in_} features; these "
                             f"rows have {X.shape[1]}.")
        return self.features(X)

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cluster ids (int32) of raw rows and their distances to that centre (float32)."""
        return assign_nearest(self._rows(X), self.cluster_centers_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The cluster id (int32) of each raw row (samples x units, extra axes flattened)."""
        return self.assign(X)[0]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Euclidean distances of each raw row to every centre, ``(n, n_clusters)`` float32,
        in the clustering space (as :meth:`sklearn.cluster.KMeans.transform`)."""
        F = self._rows(X).astype(np.float64)
        c = self.cluster_centers_.astype(np.float64)
        d2 = (F**2).sum(1)[:, None] - 2 * F @ c.T + (c**2).sum(1)[None, :]
        return np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self, "cluster_centers_")
        attrs: dict[str, Any] = {"n_clusters": int(self.n_clusters), "method": self.method_,
                                 "n_features_in": int(self.n_features_in_),
                                 "n_fit_samples": int(self.n_fit_samples_),
                                 "inertia": float(self.inertia_)}
        arrays: dict[str, np.ndarray] = {"centers": self.cluster_centers_,
                                         "fit_counts": self.fit_counts_}
        for key, prefix, part in (("discretizer", "disc_", self.discretizer_),
                                  ("reducer", "pca_", self.reducer_)):
            if part is not None:
                attrs[key], arr = part._state()
                arrays.update({prefix + k: v for k, v in arr.items()})
        return attrs, arrays

    @classmethod
    def _from_state(cls, attrs: dict[str, Any], arrays: dict[str, np.ndarray],
                    params: dict[str, Any]) -> LayerClusterer:
        c = cls(**params)
        c.method_ = attrs["method"]
        c.n_features_in_ = int(attrs["n_features_in"])
        c.n_fit_samples_ = int(attrs["n_fit_samples"])
        c.inertia_ = float(attrs["inertia"])
        c.cluster_centers_ = np.asarray(arrays["centers"], dtype=np.float32)
        c.fit_counts_ = np.asarray(arrays["fit_counts"], dtype=np.int64)
        c.discretizer_ = None
        c.reducer_ = None
        if "discretizer" in attrs:
            sub = {k[5:]: v for k, v in arrays.items() if k.startswith("disc_")}
            c.discretizer_ = Discretizer._from_state(attrs["discretizer"], sub)
        if "reducer" in attrs:
            sub = {k[4:]: v for k, v in arrays.items() if k.startswith("pca_")}
            c.reducer_ = PCAReducer._from_state(attrs["reducer"], sub)
        return c
