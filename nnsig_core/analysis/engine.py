"""The signature analysis: fit per-layer clusterers on a store's split, map any split onto them."""

from __future__ import annotations

import difflib
import logging
import numbers
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import (
    MEMORY_SIZE,
    Interval,
    NnsigParamsMixin,
    Options,
    Satisfies,
    validate_params,
)
from nnsig_core._util import parse_bytes, to_json_safe
from nnsig_core.analysis import persist
from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.discretize import Discretizer, parse_discretizer_spec
from nnsig_core.analysis.errors import AnalysisError
from nnsig_core.analysis.fit_rows import FitRows
from nnsig_core.analysis.saved import SavedAnalysis
from nnsig_core.analysis.selection import check_enough_rows, fit_sample_mask
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.source import (
    check_fit_capture,
    check_row_level,
    check_same_weights,
    check_unchanged,
    fitted_level,
    store_identity,
)
from nnsig_core.analysis.split_view import split_view
from nnsig_core.analysis.summary import analysis_summary
from nnsig_core.execute.client import ClientArg, resolve_client
from nnsig_core.store import ActivationStore, StoreError, open_store
from nnsig_core.store.format import layer_differences

log = logging.getLogger("nnsig")

DEFAULT_CLUSTERS = 10
_FITTED = "clusterers_"
StoreArg = ActivationStore | str | os.PathLike


class SignatureAnalysis(SavedAnalysis, NnsigParamsMixin, BaseEstimator):
    """Cluster each layer's activations and follow every sample's signature.

    Parameters
    ----------
    n_clusters : int or mapping of str to int
        Clusters per layer; a mapping gives them per layer name (others get 10).
    discretizer : Discretizer, str or None
        Bin activations before clustering (a string is parsed by
        :func:`parse_discretizer_spec`, e.g. ``"uniform:10"``); fitted on the fit samples.
    only_correct : bool
        Fit only on samples the model classifies correctly; needs labels.
    reduce : int or None
        Principal components kept per layer before clustering; ``None`` keeps all.
    memory_limit : int or str
        Budget for a layer's fit rows (``"2GiB"``, bytes): rows that fit (float32, after
        reduction) get exact KMeans, others out-of-core Lloyd's iterations.
    layers : sequence of str or None
        Layers to analyse (model order is kept); ``None``: all.
    random_state : int or None
        Seed of everything random; same seed, same result.
    n_init : int or "auto"
        KMeans initialisations.
    progress : bool
        Show tqdm progress bars.

    Attributes
    ----------
    layers_ : list of str
        Analysed layers, in model order.
    clusterers_ : dict of str to LayerClusterer
    n_clusters_ : list of int
    fit_split_ : str
    fit_weights_ : str or None
        The weights fingerprint of the fit split's capture (None: not known); a split
        captured with other weights is transformed with a warning.
    fit_capture_ : dict or None
        The fit split's capture fingerprint (count, capture id, times) and its store's
        location; the analysis warns when it is used on that store after the fit split
        was captured again.
    fit_classes_ : list of int or None
        The ``classes`` argument of :meth:`fit`.
    classes_ : list of int
        Labels present among the fit samples.
    known_classes_ : list of int
        The classes the model was trained on, as far as the fit split tells: its labels
        (of ``classes``), also those of which no sample was classified correctly (left out
        of ``classes_`` by ``only_correct``). A class outside them is novel
        (:func:`~nnsig_core.diagnostics.evaluate`'s ``known_classes``).
    n_fit_samples_ : int
    n_classes_ : int
        Number of classes of the model.
    fit_composition_ : list of ndarray (n_clusters, n_classes_)
        Per layer, fit samples per cluster and label.
    layer_shapes_ : list of list of int
        Unit shape of each analysed layer.
    name_ : str or None
        Name under which the analysis was saved or loaded.
    prefetched_ : list of str
        Layers whose fit rows were read ahead while the previous one was clustered.
    """

    _nnsig_constraints = {
        "n_clusters": [Interval(numbers.Integral, 1), Mapping],
        "discretizer": [Discretizer, str, None],
        "only_correct": [bool],
        "reduce": [Interval(numbers.Integral, 1), None],
        "memory_limit": [MEMORY_SIZE],
        "layers": [str, Satisfies(lambda v: len(v) > 0 and all(isinstance(x, str) for x in v),
                                  "a non-empty sequence of layer names"), None],
        "random_state": [numbers.Integral, None],
        "n_init": [Interval(numbers.Integral, 1), Options(("auto",))],
        "progress": [bool],
    }

    def __init__(self, *, n_clusters: int | Mapping[str, int] = DEFAULT_CLUSTERS,
                 discretizer: Discretizer | str | None = None, only_correct: bool = True,
                 reduce: int | None = None, memory_limit: int | str = "2GiB",
                 layers: Sequence[str] | None = None, random_state: int | None = 0,
                 n_init: int | str = 1, progress: bool = True) -> None:
        self.n_clusters = n_clusters
        self.discretizer = discretizer
        self.only_correct = only_correct
        self.reduce = reduce
        self.memory_limit = memory_limit
        self.layers = layers
        self.random_state = random_state
        self.n_init = n_init
        self.progress = progress

    def _discretizer_template(self) -> Discretizer | None:
        d = self.discretizer
        if isinstance(d, str):
            return parse_discretizer_spec(d)
        if d is not None:
            d._validate()
        return d

    @property
    def discretizer_spec(self) -> str | None:
        """The discretizer in spec form (``"uniform:10"``), or None."""
        d = self._discretizer_template()
        return d.spec if d is not None else None

    def resolve_layers(self, store: StoreArg, split: str) -> list[str]:
        """The layers :meth:`fit` would analyse in ``split`` of ``store``, in model order.

        Raises
        ------
        StoreError
            ``split`` is not in the store, or ``layers`` names a layer it lacks (the error
            lists the available ones, and the closest names).
        """
        store = open_store(store)
        available = store.layers(split)
        if not available:
            tokens = store.token_split(split)
            raise StoreError(f"Split {split!r} holds no layer"
                             + (f": its capture kept every layer's tokens, in split {tokens!r}. "
                                f"Fit on {tokens!r}, or capture a pooled row per sample too "
                                "(pool=('mean', 'tokens'))." if tokens else
                                "; capture at least one layer into it."))
        if self.layers is None:
            return list(available)
        wanted = [self.layers] if isinstance(self.layers, str) else list(self.layers)
        missing = [n for n in wanted if n not in available]
        if missing:
            hints = [f"{m!r} -> did you mean {', '.join(map(repr, close))}?" for m in missing
                     if (close := difflib.get_close_matches(m, available, n=2, cutoff=0.5))]
            raise StoreError(
                f"Layer(s) {', '.join(map(repr, missing))} not in split {split!r} of the store. "
                f"Available layers: {', '.join(available)}."
                + (" " + " ".join(hints) if hints else "")
            )
        return [n for n in available if n in set(wanted)]

    def _layer_clusters(self, layers: list[str]) -> list[int]:
        k = self.n_clusters
        if not isinstance(k, Mapping):
            return [int(k)] * len(layers)
        unknown = [n for n in k if n not in layers]
        if unknown:
            raise AnalysisError(f"n_clusters names layer(s) {unknown} that are not analysed; "
                                f"analysed layers: {layers}.")
        ks = [k.get(n, DEFAULT_CLUSTERS) for n in layers]
        bad = {n: v for n, v in zip(layers, ks, strict=True)
               if not Interval(numbers.Integral, 1).accepts(v)}
        if bad:
            raise AnalysisError(f"n_clusters must be an int >= 1 for every layer; got {bad}.")
        return [int(v) for v in ks]

    def selection_mask(self, store: StoreArg, split: str, *,
                       classes: Iterable[int] | None = None) -> np.ndarray:
        """Which samples of ``split`` the fit rule keeps (see
        :func:`~nnsig_core.analysis.fit_sample_mask`); ``classes`` defaults to :meth:`fit`'s."""
        if classes is None:
            classes = getattr(self, "fit_classes_", None)
        return fit_sample_mask(open_store(store), split, classes=classes,
                               only_correct=self.only_correct)

    def fit(self, store: StoreArg, split: str = "train", *,
            classes: Iterable[int] | None = None, client: ClientArg = None) -> SignatureAnalysis:
        """Fit one clusterer per layer on the selected samples of ``split``.

        Parameters
        ----------
        store : ActivationStore or path
        split : str
            The split to fit on (must be complete).
        classes : iterable of int, optional
            Fit only on samples with these labels.
        client : dask.distributed.Client, None or False
            Fit on this Dask cluster (``None``: the active client, if any; ``False``: in this
            process); both drivers give the same clusters.

        Returns
        -------
        SignatureAnalysis
            ``self``.

        Raises
        ------
        InvalidParameterError, StoreError, MissingLabelsError, EmptySelectionError,
        TooFewSamplesError, NonFiniteActivationError
        """
        client = resolve_client(client)
        validate_params(self, self._nnsig_constraints)
        store = open_store(store)
        store.require_complete(split)
        limit = parse_bytes(self.memory_limit)
        disc = self._discretizer_template()
        layers = self.resolve_layers(store, split)
        ks = self._layer_clusters(layers)
        fit_classes = None if classes is None else sorted({int(c) for c in classes})
        view = split_view(store, split, client, progress=self.progress)
        before = view.fingerprint
        n_fit = view.select(fit_classes, self.only_correct)
        check_enough_rows(split, n_fit, layers, ks)
        n_classes = view.n_classes()
        shapes = {d["name"]: list(d["shape"]) for d in store.layer_info(split)}

        def fit_layer(name: str, rows: FitRows) -> LayerClusterer:
            t0 = time.perf_counter()
            lc = LayerClusterer(n_clusters=ks[layers.index(name)], discretizer=disc,
                                reduce=self.reduce, memory_limit=self.memory_limit,
                                random_state=self.random_state, n_init=self.n_init,
                                progress=self.progress)
            lc.fit(rows, name=name, n_classes=n_classes)
            log.info("Fitted layer %r (%s, %d clusters) in %.2f s", name, lc.method_,
                     lc.n_clusters, time.perf_counter() - t0)
            return lc

        fitted = view.fit_layers(layers, fit_layer, limit=limit,
                                 plain=disc is None and self.reduce is None)
        check_unchanged(store, split, before)
        compositions = [lc.fit_composition_ for lc in fitted]
        self.prefetched_ = list(view.prefetched)
        self.layers_ = layers
        self.clusterers_ = dict(zip(layers, fitted, strict=True))
        self.n_clusters_ = ks
        self.fit_split_ = split
        self.fit_weights_ = store.split_attrs(split).get("model_fingerprint")
        self.fit_capture_ = {"location": store_identity(store), **to_json_safe(before)}
        self.fit_classes_ = fit_classes
        self.classes_ = [int(c) for c in np.flatnonzero(compositions[0].sum(axis=0))]
        labelled = {int(c) for c in np.unique(store.labels(split)) if c >= 0}
        self.known_classes_ = sorted(
            (labelled if fit_classes is None else labelled & set(fit_classes)) | set(self.classes_))
        self.n_fit_samples_ = n_fit
        self.n_classes_ = n_classes
        self.fit_composition_ = compositions
        self.layer_shapes_ = [shapes[n] for n in layers]
        self.name_ = None
        self._cache: dict[tuple[Any, ...], Signatures] = {}
        return self

    def transform(self, store: StoreArg, split: str = "test", *,
                  client: ClientArg = None) -> Signatures:
        """Map every sample of ``split`` onto the fitted clusters.

        Parameters
        ----------
        store : ActivationStore or path
        split : str
        client : dask.distributed.Client, None or False
            Assign on this Dask cluster (``None``: the active client, if any; ``False``:
            here); the result is then :class:`Signatures` over dask arrays.

        Returns
        -------
        Signatures

        Raises
        ------
        sklearn.exceptions.NotFittedError, StoreError, NonFiniteActivationError
        """
        check_is_fitted(self, _FITTED)
        store = open_store(store)
        view = split_view(store, split, resolve_client(client), progress=self.progress)
        store.require_complete(split)
        before = view.fingerprint
        self._check_split_layers(store, split)
        ids, dist = view.assign([self.clusterers_[n] for n in self.layers_], self.layers_)
        ids, dist = view.materialize(self, ids, dist)
        check_unchanged(store, split, before)
        sigs = view.signatures(self, ids, dist)
        self._cache_put(store, split, sigs, view.cache_tag)
        return sigs

    def row_level(self, store: ActivationStore) -> str:
        """The row level of the fit split: ``"samples"``, or ``"tokens"`` for a token row
        space (see :meth:`~nnsig_core.store.ActivationStore.level`)."""
        check_is_fitted(self, _FITTED)
        return fitted_level(store, self.fit_split_)

    def _check_split_layers(self, store: ActivationStore, split: str) -> None:
        """Raise :class:`StoreError` unless ``split`` has the analysed layers, with their shapes
        and the fit split's pooling, and rows of the fit split's level (samples, or tokens);
        warn when it comes from other weights, or the fit split was captured again."""
        check_row_level(store, split, self.fit_split_, self.row_level(store))
        check_same_weights(store, split, self.fit_split_, getattr(self, "fit_weights_", None),
                           self.name_)
        self._check_fit_capture(store)
        info = {d["name"]: list(d["shape"]) for d in store.layer_info(split)}
        missing = [n for n in self.layers_ if n not in info]
        if missing:
            raise StoreError(f"Split {split!r} lacks the analysed layer(s) {missing}; its layers "
                             f"are {list(info)}. Capture the same layers as the fit split "
                             f"{self.fit_split_!r}.")
        for name, shape in zip(self.layers_, self.layer_shapes_, strict=False):
            if info[name] != list(shape):
                raise StoreError(f"Layer {name!r} has unit shape {info[name]} in split {split!r} "
                                 f"but {shape} in the fit split {self.fit_split_!r}: not the "
                                 "same model.")
        if self.fit_split_ in store.splits and split != self.fit_split_:
            fit = [d for d in store.layer_info(self.fit_split_) if d["name"] in self.layers_]
            pooled = layer_differences(
                [d for d in store.layer_info(split) if d["name"] in self.layers_], fit,
                self.fit_split_, store.level(split))
            if pooled:
                raise StoreError(f"Split {split!r} does not hold the rows the analysis was "
                                 f"fitted on ({'; '.join(pooled)}): its clusters do not apply. "
                                 "Capture the split with the fit split's pooling.")

    def _check_fit_capture(self, store: ActivationStore) -> None:
        check_fit_capture(store, self.fit_split_, getattr(self, "fit_capture_", None),
                          self.name_)

    def fit_transform(self, store: StoreArg, split: str = "train", *,
                      classes: Iterable[int] | None = None,
                      client: ClientArg = None) -> Signatures:
        """:meth:`fit` on ``split``, then :meth:`transform` of the same split (every sample)."""
        store = open_store(store)
        return self.fit(store, split, classes=classes, client=client).transform(store, split,
                                                                          client=client)

    def signatures(self, store: StoreArg, split: str, *, client: ClientArg = None) -> Signatures:
        """Signatures of ``split``: cached in this session, saved in the store, or computed now.

        Cached and saved signatures are used only while the split's fingerprint is the one
        they were computed from; with a client they are over dask arrays on that cluster.
        """
        check_is_fitted(self, _FITTED)
        client = resolve_client(client)
        store = open_store(store)
        view = split_view(store, split, client, progress=self.progress)
        key = (*self._cache_key(store, split), *view.cache_tag)
        cache = getattr(self, "_cache", {})
        if key in cache:
            self._check_fit_capture(store)
            return cache[key]
        name = self._saved_name(store)
        grp = (None if name is None else
               persist.signatures_group(store, name, split, self.layers_))
        if grp is None:
            return self.transform(store, split, client=client)  # which checks the fit split
        self._check_fit_capture(store)
        sigs = view.signatures(self, *view.read_saved(grp))
        self._cache_put(store, split, sigs, view.cache_tag)
        return sigs

    def typical_clusters(self, *, min_share: float = 0.1) -> list[list[list[int]]]:
        """Per layer, per class: clusters holding >= ``min_share`` of the class's fit samples."""
        check_is_fitted(self, _FITTED)
        out = []
        for comp in self.fit_composition_:
            totals = comp.sum(axis=0)
            out.append([[] if totals[c] == 0 else
                         [int(i) for i in np.flatnonzero(comp[:, c] / totals[c] >= min_share)]
                         for c in range(comp.shape[1])])
        return out

    def summary(self, store: StoreArg, split: str) -> dict[str, Any]:
        """A JSON-serialisable summary of the analysis on ``split`` (``nnsig analyze``)."""
        store = open_store(store)
        return analysis_summary(self, self.signatures(store, split), self.row_level(store))
