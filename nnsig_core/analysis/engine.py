"""The signature analysis: fit per-layer clusterers on a store's split, map any split onto them.

Typical use::

    from nnsig_core import open_store
    from nnsig_core.analysis import SignatureAnalysis

    store = open_store("runs/mnist.zarr", mode="r+")
    analysis = SignatureAnalysis(n_clusters=10).fit(store, "train")
    test = analysis.transform(store, "test")
    print(test.table(as_frame=True).head())
    analysis.save(store, name="default", splits=["train", "test"])

Everything is read chunk by chunk from the store; a layer's selected rows are
gathered in memory only when they fit ``memory_limit`` (the exact KMeans
path), otherwise MiniBatchKMeans is streamed over the chunks (see
:mod:`nnsig_core.analysis.cluster`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from nnsig_core.analysis._util import parse_bytes
from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.discretize import Discretizer, parse_discretizer_spec
from nnsig_core.analysis.errors import (
    AnalysisError,
    EmptySelectionError,
    MissingLabelsError,
    TooFewSamplesError,
)
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.source import Prefetcher, StoreSource
from nnsig_core.analysis.tables import Table
from nnsig_core.store import ActivationStore, StoreError, open_store

__all__ = ["SignatureAnalysis", "as_store"]

log = logging.getLogger("nnsig")

DEFAULT_CLUSTERS = 10
READ_BYTES = 8 << 20  # target size of one read from the store (whole chunks)


def as_store(store: ActivationStore | str | os.PathLike[str], mode: str = "r") -> ActivationStore:
    """An :class:`ActivationStore` as is, or the store at a path opened with ``mode``."""
    if isinstance(store, ActivationStore):
        return store
    if isinstance(store, (str, os.PathLike)):
        return open_store(store, mode=mode)  # type: ignore[arg-type]
    raise TypeError(f"Expected an ActivationStore or a path, got {type(store).__name__}.")


def split_fingerprint(store: ActivationStore, split: str) -> dict[str, Any]:
    """What identifies a split's capture (to tell whether saved signatures still apply)."""
    info = store.split_attrs(split)
    cap = info.get("capture") or {}
    return {
        "n_samples": store.n_samples(split),
        "capture_id": cap.get("capture_id"),
        "started": cap.get("started"),
        "finished": cap.get("finished"),
    }


class SignatureAnalysis(BaseEstimator):
    """Cluster each layer's activations and follow every sample's signature.

    Parameters
    ----------
    n_clusters : int or mapping of str to int
        Clusters per layer; a mapping gives them per layer name (layers it
        does not name get 10).
    discretizer : Discretizer, str or None
        Bin activations before clustering (the bin indices are clustered; see
        :mod:`nnsig_core.analysis.discretize`). A string is parsed with
        :func:`parse_discretizer_spec` (``"uniform:10"``). Bins are fitted on
        the fit samples and reused for every split.
    only_correct : bool
        Fit only on samples the model classifies correctly (the prototype's
        choice); needs labels.
    reduce : int or None
        Reduce each layer to this many IncrementalPCA components before
        clustering (useful for wide, flattened conv maps); ``None`` keeps all.
    memory_limit : int or str
        Budget for a layer's fit rows in memory (``"2GiB"``, bytes...). A layer
        whose selected rows (float32, after reduction) fit is clustered with
        exact KMeans, otherwise MiniBatchKMeans is streamed over the chunks.
    layers : sequence of str or None
        Layers to analyse, in any order (model order is kept); ``None``: all.
    random_state : int or None
        Seed of everything random (KMeans, subsamples); same seed, same result.
    n_init : int or "auto"
        KMeans initialisations.
    batch_size : int
        Rows per MiniBatchKMeans update (streaming path only).
    streaming_passes : int
        Passes over the data of MiniBatchKMeans (streaming path only).
    progress : bool
        Show tqdm progress bars.

    Attributes
    ----------
    layers_ : list of str
        Analysed layers, in model order.
    clusterers_ : dict of str to LayerClusterer
        The fitted per-layer clusterers.
    n_clusters_ : list of int
        Clusters per analysed layer.
    fit_split_ : str
        The split fitted on.
    fit_classes_ : list of int or None
        The ``classes`` argument of :meth:`fit`.
    classes_ : list of int
        Labels present among the fit samples (the classes fitted on).
    n_fit_samples_ : int
        Samples the clusterers were fitted on.
    n_classes_ : int
        Number of classes of the model.
    fit_composition_ : list of ndarray (n_clusters, n_classes_)
        Per layer, fit samples per cluster and label.
    layer_shapes_ : list of list of int
        Unit shape of each analysed layer.
    name_ : str or None
        Name under which the analysis was saved or loaded.
    """

    def __init__(
        self,
        n_clusters: int | Mapping[str, int] = DEFAULT_CLUSTERS,
        discretizer: Discretizer | str | None = None,
        only_correct: bool = True,
        reduce: int | None = None,
        memory_limit: int | str = "2GiB",
        layers: Sequence[str] | None = None,
        random_state: int | None = 0,
        n_init: int | str = 1,
        batch_size: int = 1024,
        streaming_passes: int = 2,
        progress: bool = True,
    ) -> None:
        self.n_clusters = n_clusters
        self.discretizer = discretizer
        self.only_correct = only_correct
        self.reduce = reduce
        self.memory_limit = memory_limit
        self.layers = layers
        self.random_state = random_state
        self.n_init = n_init
        self.batch_size = batch_size
        self.streaming_passes = streaming_passes
        self.progress = progress

    # ------------------------------------------------------------------ parameters
    def _discretizer_template(self) -> Discretizer | None:
        d = self.discretizer
        if d is None or isinstance(d, Discretizer):
            if d is not None:
                d._validate()
            return d
        if isinstance(d, str):
            return parse_discretizer_spec(d)
        raise ValueError(
            f"discretizer must be a Discretizer, a spec string such as 'uniform:10', or None; "
            f"got {type(d).__name__}."
        )

    @property
    def discretizer_spec(self) -> str | None:
        """The discretizer in spec form (``"uniform:10"``), or None."""
        d = self._discretizer_template()
        return d.spec if d is not None else None

    def _resolve_layers(self, store: ActivationStore, split: str) -> list[str]:
        available = store.layers(split)
        if self.layers is None:
            return list(available)
        wanted = [self.layers] if isinstance(self.layers, str) else list(self.layers)
        if not wanted:
            raise AnalysisError("layers is empty; pass layer names, or None for all layers.")
        missing = [n for n in wanted if n not in available]
        if missing:
            import difflib

            hints = []
            for m in missing:
                close = difflib.get_close_matches(m, available, n=2, cutoff=0.5)
                if close:
                    hints.append(f"{m!r} -> did you mean {', '.join(map(repr, close))}?")
            raise StoreError(
                f"Layer(s) {', '.join(map(repr, missing))} not in split {split!r} of the store. "
                f"Available layers: {', '.join(available)}."
                + (" " + " ".join(hints) if hints else "")
            )
        return [n for n in available if n in set(wanted)]

    def _layer_clusters(self, layers: list[str]) -> list[int]:
        k = self.n_clusters
        if isinstance(k, Mapping):
            unknown = [n for n in k if n not in layers]
            if unknown:
                raise AnalysisError(
                    f"n_clusters names layer(s) {unknown} that are not analysed; "
                    f"analysed layers: {layers}."
                )
            ks = [int(k.get(n, DEFAULT_CLUSTERS)) for n in layers]
        else:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise AnalysisError(f"n_clusters must be an int or a mapping; got {k!r}.")
            ks = [int(k)] * len(layers)
        for n, v in zip(layers, ks, strict=False):
            if v < 1:
                raise AnalysisError(f"n_clusters for layer {n!r} must be >= 1; got {v}.")
        return ks

    def _check_fitted(self) -> None:
        if not hasattr(self, "clusterers_"):
            raise NotFittedError(
                "This SignatureAnalysis is not fitted yet: call fit(store, split) or "
                "SignatureAnalysis.load(store, name) first."
            )

    # ------------------------------------------------------------------ selection
    def selection_mask(
        self, store: ActivationStore | str | os.PathLike[str], split: str,
        classes: Iterable[int] | None = None,
    ) -> np.ndarray:
        """Which samples of ``split`` the fit rule keeps (``only_correct``, ``classes``).

        Parameters
        ----------
        store, split
        classes : iterable of int, optional
            Keep only these labels; by default the classes given to :meth:`fit`
            when fitted, else all.

        Raises
        ------
        MissingLabelsError, EmptySelectionError
        """
        if classes is None:
            classes = getattr(self, "fit_classes_", None)
        return self._select(as_store(store), split, classes)

    def _select(
        self, store: ActivationStore, split: str, classes: Iterable[int] | None
    ) -> np.ndarray:
        n = store.n_samples(split)
        labels = store.labels(split)
        preds = store.predictions(split)
        need = self.only_correct or classes is not None
        if need and (not store.has_labels(split) or not (labels >= 0).any()):
            why = "only_correct=True" if self.only_correct else "a class subset"
            raise MissingLabelsError(
                f"Split {split!r} has no labels, but {why} needs them (and so do class counts). "
                "Capture the split with its labels, or pass only_correct=False (and no classes) "
                "to fit on every sample."
            )
        mask = np.ones(n, dtype=bool)
        where = ""
        if classes is not None:
            wanted = sorted({int(c) for c in classes})
            if not wanted:
                raise EmptySelectionError(
                    "classes is empty: give the labels to fit on (e.g. classes=range(5)), "
                    "or classes=None for all."
                )
            present = sorted(int(c) for c in np.unique(labels[labels >= 0]))
            mask &= np.isin(labels, wanted)
            if not mask.any():
                raise EmptySelectionError(
                    f"No sample of split {split!r} has a label in {wanted}; the labels present "
                    f"are {present}. Choose classes among those."
                )
            absent = sorted(set(wanted) - set(present))
            if absent:
                log.warning("Classes %s have no sample in split %r.", absent, split)
            where = f" among classes {wanted}"
        if self.only_correct:
            n_cand = int(mask.sum())
            mask &= (labels >= 0) & (labels == preds)
            if not mask.any():
                raise EmptySelectionError(
                    f"No sample of split {split!r}{where} is classified correctly "
                    f"(0 of {n_cand}): is the model trained, and do labels and predictions "
                    "use the same class indices? Pass only_correct=False to fit on all samples."
                )
        return mask

    # ------------------------------------------------------------------ fit / transform
    def fit(
        self,
        store: ActivationStore | str | os.PathLike[str],
        split: str = "train",
        classes: Iterable[int] | None = None,
    ) -> SignatureAnalysis:
        """Fit one clusterer per layer on the selected samples of ``split``.

        Parameters
        ----------
        store : ActivationStore or path
        split : str
            The split to fit on (must be complete).
        classes : iterable of int, optional
            Fit only on samples with these labels (e.g. ``range(5)`` for a
            novelty study where 5..9 stay unseen).

        Returns
        -------
        SignatureAnalysis
            ``self``.

        Raises
        ------
        StoreError
            Missing split or layer, or an incomplete split
            (:class:`~nnsig_core.store.IncompleteStoreError`).
        MissingLabelsError, EmptySelectionError, TooFewSamplesError, NonFiniteActivationError
        """
        store = as_store(store)
        store.require_complete(split)
        limit = parse_bytes(self.memory_limit)
        disc = self._discretizer_template()
        layers = self._resolve_layers(store, split)
        ks = self._layer_clusters(layers)
        if self.n_init != "auto" and (not isinstance(self.n_init, (int, np.integer))
                                      or self.n_init < 1):
            raise AnalysisError(f"n_init must be a positive int or 'auto'; got {self.n_init!r}.")
        fit_classes = None if classes is None else sorted({int(c) for c in classes})
        mask = self._select(store, split, fit_classes)
        rows = np.flatnonzero(mask)
        too_many = [(n, k) for n, k in zip(layers, ks, strict=False) if k > rows.size]
        if too_many:
            desc = ", ".join(f"{n!r}: {k}" for n, k in too_many)
            raise TooFewSamplesError(
                f"Only {rows.size} sample(s) of split {split!r} are selected for fitting, fewer "
                f"than the clusters asked for ({desc}). Lower n_clusters to at most {rows.size}, "
                "or fit on more samples (only_correct=False, more classes, more data)."
            )
        labels = store.labels(split)
        n_classes = _n_classes(store, split)
        shapes = {d["name"]: list(d["shape"]) for d in store.layer_info(split)}

        clusterers: dict[str, LayerClusterer] = {}
        compositions = []
        sources = {
            name: StoreSource(store, split, name, rows, progress=self.progress,
                              read_bytes=min(READ_BYTES, max(limit // 4, 1)))
            for name in layers
        }
        prefetch = Prefetcher(sources, layers, limit, disc is None and self.reduce is None)
        try:
            for name, k in zip(layers, ks, strict=True):
                t0 = time.perf_counter()
                lc = LayerClusterer(
                    n_clusters=k, discretizer=disc, reduce=self.reduce,
                    memory_limit=self.memory_limit, random_state=self.random_state,
                    n_init=self.n_init, batch_size=self.batch_size,
                    streaming_passes=self.streaming_passes, progress=self.progress,
                )
                lc.fit(prefetch.source(name), name=name)
                lab = labels[rows]
                comp = np.zeros((k, n_classes), dtype=np.int64)
                ok = lab >= 0
                np.add.at(comp, (lc.fit_ids_[ok], lab[ok]), 1)
                compositions.append(comp)
                clusterers[name] = lc
                log.info("Fitted layer %r (%s, %d clusters) in %.2f s", name, lc.method_, k,
                         time.perf_counter() - t0)
        finally:
            prefetch.close()

        self.layers_ = layers
        self.clusterers_ = clusterers
        self.n_clusters_ = ks
        self.fit_split_ = split
        self.fit_classes_ = fit_classes
        self.classes_ = sorted(int(c) for c in np.unique(labels[rows]) if c >= 0)
        self.n_fit_samples_ = int(rows.size)
        self.n_classes_ = n_classes
        self.fit_composition_ = compositions
        self.layer_shapes_ = [shapes[n] for n in layers]
        self.name_ = None
        self._cache: dict[tuple[Any, ...], Signatures] = {}
        return self

    def transform(
        self, store: ActivationStore | str | os.PathLike[str], split: str = "test"
    ) -> Signatures:
        """Map every sample of ``split`` onto the fitted clusters.

        Returns
        -------
        Signatures
            Cluster ids and distances per sample and layer, with labels and
            predictions.

        Raises
        ------
        sklearn.exceptions.NotFittedError, StoreError, NonFiniteActivationError
        """
        self._check_fitted()
        store = as_store(store)
        store.require_complete(split)
        info = {d["name"]: list(d["shape"]) for d in store.layer_info(split)}
        missing = [n for n in self.layers_ if n not in info]
        if missing:
            raise StoreError(
                f"Split {split!r} lacks the analysed layer(s) {missing}; its layers are "
                f"{list(info)}. Capture the same layers as the fit split {self.fit_split_!r}."
            )
        for name, shape in zip(self.layers_, self.layer_shapes_, strict=False):
            if info[name] != list(shape):
                raise StoreError(
                    f"Layer {name!r} has unit shape {info[name]} in split {split!r} but "
                    f"{shape} in the fit split {self.fit_split_!r}: not the same model."
                )
        n = store.n_samples(split)
        L = len(self.layers_)
        ids = np.empty((n, L), dtype=np.int32)
        dist = np.empty((n, L), dtype=np.float32)
        for j, name in enumerate(self.layers_):
            lc = self.clusterers_[name]
            src = StoreSource(store, split, name, None, progress=self.progress)
            for rows, block in src.blocks("assign"):
                ids[rows, j], dist[rows, j] = lc.predict(block)
        sigs = Signatures(
            split, self.layers_, ids, store.labels(split), store.predictions(split), dist,
            store.sample_index(split), self.n_clusters_,
            n_classes=max(self.n_classes_, _n_classes(store, split)),
            class_names=store.class_names(),
        )
        self._cache_put(store, split, sigs)
        return sigs

    def fit_transform(
        self,
        store: ActivationStore | str | os.PathLike[str],
        split: str = "train",
        classes: Iterable[int] | None = None,
    ) -> Signatures:
        """:meth:`fit` on ``split``, then :meth:`transform` of the same split (every sample)."""
        store = as_store(store)
        return self.fit(store, split, classes).transform(store, split)

    # ------------------------------------------------------------------ signature cache
    def _cache_key(self, store: ActivationStore, split: str) -> tuple[Any, ...]:
        where = str(store.path) if store.path is not None else id(store.root)
        fp = split_fingerprint(store, split)
        return (where, split, fp["n_samples"], fp["started"], fp["finished"])

    def _cache_put(self, store: ActivationStore, split: str, sigs: Signatures) -> None:
        if not hasattr(self, "_cache"):
            self._cache = {}
        self._cache[self._cache_key(store, split)] = sigs

    def signatures(self, store: ActivationStore | str | os.PathLike[str], split: str) -> Signatures:
        """Signatures of ``split``: computed earlier in this session, saved in the store, or now.

        Saved signatures (``save(..., splits=...)``) are used only when the
        split has not been re-captured since.
        """
        self._check_fitted()
        store = as_store(store)
        key = self._cache_key(store, split)
        cache = getattr(self, "_cache", {})
        if key in cache:
            return cache[key]
        if self.name_ is not None:
            from nnsig_core.analysis.persist import load_signatures

            sigs = load_signatures(self, store, split, name=self.name_)
            if sigs is not None:
                self._cache_put(store, split, sigs)
                return sigs
        return self.transform(store, split)

    # ------------------------------------------------------------------ views
    def table(self, store: ActivationStore | str | os.PathLike[str], split: str,
              as_frame: bool = False) -> Any:
        """The prototype's table of ``split`` (see :meth:`Signatures.table`)."""
        return self.signatures(store, split).table(as_frame=as_frame)

    def cluster_composition(self, store: ActivationStore | str | os.PathLike[str], split: str,
                            by: str = "input", as_frame: bool = False) -> Any:
        """Per layer, per cluster, counts per class on ``split`` (see :class:`Signatures`)."""
        return self.signatures(store, split).cluster_composition(by=by, as_frame=as_frame)

    def transitions(self, store: ActivationStore | str | os.PathLike[str], split: str,
                    include_io: bool = False, as_frame: bool = False) -> Any:
        """Counts between consecutive layers' clusters by input class (the Sankey links)."""
        return self.signatures(store, split).transitions(include_io=include_io, as_frame=as_frame)

    def purity(self, store: ActivationStore | str | os.PathLike[str], split: str) -> np.ndarray:
        """Per-layer purity on ``split``."""
        return self.signatures(store, split).purity()

    def entropy(self, store: ActivationStore | str | os.PathLike[str], split: str) -> np.ndarray:
        """Per-layer mean class entropy (bits) on ``split``."""
        return self.signatures(store, split).entropy()

    def exemplars(self, store: ActivationStore | str | os.PathLike[str], split: str,
                  n: int = 5) -> list[list[list[int]]]:
        """Per layer, per cluster, the positions of the ``n`` samples of ``split`` nearest the centre."""
        return self.signatures(store, split).exemplars(n=n)

    def typical_clusters(self, min_share: float = 0.1) -> list[list[list[int]]]:
        """Per layer, per class: clusters holding >= ``min_share`` of the class's fit samples."""
        self._check_fitted()
        out = []
        for comp in self.fit_composition_:
            per_class = []
            totals = comp.sum(axis=0)
            for c in range(comp.shape[1]):
                if totals[c] == 0:
                    per_class.append([])
                    continue
                share = comp[:, c] / totals[c]
                per_class.append([int(i) for i in np.flatnonzero(share >= min_share)])
            out.append(per_class)
        return out

    # ------------------------------------------------------------------ diagnostics
    def score(
        self,
        store: ActivationStore | str | os.PathLike[str],
        split: str,
        validation_split: str | None = None,
        **kwargs: Any,
    ) -> dict[str, np.ndarray]:
        """Per-sample suspicion scores of ``split`` (higher = more suspicious).

        Delegates to :func:`nnsig_core.diagnostics.signature_scores`: path and
        transition surprisal, layer/class disagreement, centroid and class
        distance p-values, class margin, and ``"combined"``, chosen on the
        error-detection task of ``validation_split`` (known classes only;
        novel classes there are refused). Scores are also saved next to the
        analysis when the store is writable and the analysis saved.
        """
        from nnsig_core.diagnostics import signature_scores

        return signature_scores(self, store, split, validation_split=validation_split, **kwargs)

    # ------------------------------------------------------------------ summary and export
    def summary(self, store: ActivationStore | str | os.PathLike[str], split: str) -> dict[str, Any]:
        """A JSON-serialisable summary of the analysis on ``split`` (printed by ``nnsig analyze``).

        Keys: ``split``, ``n_samples``, ``accuracy`` (None without labels),
        ``n_signatures``, ``n_signatures_correct``, ``fit`` (split, samples,
        classes, settings) and ``layers`` (per layer: name, clusters, method,
        features, purity, entropy; None without labels).
        """
        sigs = self.signatures(store, split)
        purity, entropy = sigs.purity(), sigs.entropy()
        layers = []
        for j, name in enumerate(self.layers_):
            lc = self.clusterers_[name]
            layers.append({
                "name": name,
                "n_clusters": int(self.n_clusters_[j]),
                "method": lc.method_,
                "features": int(lc.n_features_in_),
                "reduced_to": None if lc.reducer_ is None else int(lc.reducer_.n_components),
                "empty_clusters": int((lc.fit_counts_ == 0).sum()),
                "purity": None if np.isnan(purity[j]) else float(purity[j]),
                "entropy": None if np.isnan(entropy[j]) else float(entropy[j]),
            })
        return {
            "split": split,
            "n_samples": sigs.n_samples,
            "accuracy": sigs.accuracy,
            "n_signatures": sigs.n_signatures,
            "n_signatures_correct": sigs.subset(sigs.correct).n_signatures,
            "fit": {
                "name": self.name_,
                "split": self.fit_split_,
                "n_samples": self.n_fit_samples_,
                "classes": self.classes_,
                "only_correct": bool(self.only_correct),
                "discretizer": self.discretizer_spec,
                "reduce": self.reduce,
                "random_state": self.random_state,
            },
            "layers": layers,
        }

    def export_prototype(
        self, store: ActivationStore | str | os.PathLike[str], split: str,
        out_dir: str | os.PathLike[str],
    ) -> dict[str, Path]:
        """Write the prototype's two files into ``out_dir``.

        ``clusters_info.json``
            One list per layer of ``{"layer": l, "class": c, "instances_count":
            n, "cluster_index": i}`` records (``l`` 1-based, as in the CSV
            header; non-zero counts only): how many fit samples (those the
            analysis was fitted on: the correctly classified training samples
            by default) of class ``c`` fall in cluster ``i``.
        ``clusterized_values.csv``
            Header ``input_class,cluster_in_layer1,...,cluster_in_layerL,output_class``;
            one line per sample of ``split`` in store order.

        Returns
        -------
        dict
            ``{"clusters_info": path, "clusterized_values": path}``.
        """
        self._check_fitted()
        store = as_store(store)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        info = []
        for j, comp in enumerate(self.fit_composition_):
            info.append([
                {"layer": j + 1, "class": int(c), "instances_count": int(comp[i, c]),
                 "cluster_index": int(i)}
                for c in range(comp.shape[1]) for i in range(comp.shape[0]) if comp[i, c]
            ])
        p_info = out / "clusters_info.json"
        p_info.write_text(json.dumps(info, indent=1), encoding="utf-8")
        sigs = self.signatures(store, split)
        header = ["input_class", *[f"cluster_in_layer{j + 1}" for j in range(len(self.layers_))],
                  "output_class"]
        rows = [
            (int(a), *(int(x) for x in ids), int(b))
            for a, ids, b in zip(sigs.labels, sigs.cluster_ids, sigs.predictions, strict=False)
        ]
        p_csv = out / "clusterized_values.csv"
        Table(header, rows).to_csv(p_csv)
        return {"clusters_info": p_info, "clusterized_values": p_csv}

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        store: ActivationStore | str | os.PathLike[str],
        name: str = "default",
        overwrite: bool = False,
        splits: Iterable[str] | None = None,
    ) -> SignatureAnalysis:
        """Save the fitted analysis into ``store`` under ``analysis/<name>``.

        Parameters
        ----------
        store : ActivationStore or path
            Opened with mode ``"r+"`` or ``"a"`` (a path is opened ``"r+"``).
        name : str
        overwrite : bool
            Replace an analysis of that name.
        splits : iterable of str, optional
            Also save the signatures of these splits (computed if not done
            yet), so reports and exports need not recompute them. ``None``
            (default): every complete split of the store; ``()``: none.

        Raises
        ------
        StoreError
            Read-only store, or the name is taken and ``overwrite`` is False.
        """
        from nnsig_core.analysis.persist import save_analysis

        self._check_fitted()
        store = as_store(store, mode="r+")
        save_analysis(self, store, name=name, overwrite=overwrite, splits=splits)
        self.name_ = name
        return self

    @classmethod
    def load(cls, store: ActivationStore | str | os.PathLike[str],
             name: str = "default") -> SignatureAnalysis:
        """Load an analysis saved with :meth:`save` (gives identical signatures)."""
        from nnsig_core.analysis.persist import load_analysis

        return load_analysis(cls, as_store(store), name=name)


def _n_classes(store: ActivationStore, split: str) -> int:
    """Number of classes: output width (2 for one logit), labels, predictions, names."""
    width = int(store.outputs(split).shape[1])
    n = 2 if width == 1 else width
    labels, preds = store.labels(split), store.predictions(split)
    n = max(n, int(labels.max(initial=-1)) + 1, int(preds.max(initial=-1)) + 1)
    names = store.class_names(split)
    if names:
        n = max(n, len(names))
    return n
