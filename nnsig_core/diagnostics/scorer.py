r"""Signature-based suspicion scores: does a sample take a path its predicted class takes?

Every score is *higher = more suspicious*, against the *training samples* (the
analysis's fit samples the model classifies correctly): the path components of
:mod:`~nnsig_core.diagnostics.components` (statistics of the paths through the
analysis's clusters), the neighbour components of
:mod:`~nnsig_core.diagnostics.neighbours` (the scorer's own, finer statistics
of the layers), and ``combined``: the
:class:`~nnsig_core.diagnostics.combine.LayerCombiner` of the per-layer
neighbour components (``method="layers"``) or the
:class:`~nnsig_core.diagnostics.combine.ScoreCombiner` of the components
(``"rank"``, ``"logistic"``).

The reference the components are standardised on and the target the layers are
chosen on come from the fit split (a random ``n_reference`` of the training
samples scored leave-one-out, and its misclassified samples) or, with a
validation split (:meth:`SignatureScorer.calibrate`, ``validation_split=`` of
:meth:`SignatureScorer.fit`), from that split's correct and misclassified
samples; never from test labels or novel classes (``docs/design.md``,
"Diagnostics"). The fit split itself is scored leave-one-out.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import (
    MEMORY_SIZE,
    Interval,
    NnsigParamsMixin,
    Options,
    Satisfies,
    validate_params,
)
from nnsig_core.analysis.selection import fit_sample_mask, require_fit_labels
from nnsig_core.diagnostics.arrays import PathArraysMixin
from nnsig_core.diagnostics.calibration import ReferenceChoice
from nnsig_core.diagnostics.components import (
    DISTANCE_COMBINE,
    PATH_SCORES,
    SCORES,
    PathStatistics,
)
from nnsig_core.diagnostics.conformal import conformal_p_values
from nnsig_core.diagnostics.geometry import Distances, cluster_owners, split_distances
from nnsig_core.diagnostics.neighbours import ClassNeighbours, neighbour_scores
from nnsig_core.execute.blocks import take
from nnsig_core.execute.client import ClientArg, resolve_client
from nnsig_core.store import ActivationStore, open_store

log = logging.getLogger("nnsig")

GEOMETRIES = ("cosine", "euclidean")
METHODS = ("layers", "rank", "logistic")
StoreArg = ActivationStore | str | os.PathLike
LayerScores = dict[str, dict[str, np.ndarray]]


class SignatureScorer(ReferenceChoice, PathArraysMixin, NnsigParamsMixin, BaseEstimator):
    """Per-sample suspicion scores from a fitted signature analysis (see the module doc).

    Parameters
    ----------
    alpha : float
        Additive smoothing of the path and transition probabilities.
    beta : float
        Additive smoothing of the cluster class shares (``disagreement``).
    geometry : {"cosine", "euclidean"}
        Distances of ``centroid_distance``, ``class_distance`` and
        ``class_margin``: between L2-normalised features and centroids
        (default), or the analysis's plain Euclidean distances.
    distance_combine : {"fisher", "minp"}
        How ``centroid_distance`` combines its per-layer p-values.
    min_cluster_size : int
        Clusters with fewer training samples take their distance p-value
        against the whole layer's training distances.
    n_neighbors : int
        The neighbour components use the distance to the ``n_neighbors``-th
        nearest training sample of a class.
    n_components : int
        Dimension of the reduced space of the neighbour components.
    method : {"layers", "rank", "logistic"}
        How ``combined`` is formed (see the module doc).
    components : sequence of str or None
        Scores to compute and return (default: all of :data:`SCORES`); with
        ``method="rank"`` or ``"logistic"`` also those combined.
    n_reference : int
        Training samples scored leave-one-out as the reference when no
        validation split is given; also the most misclassified training
        samples the layers are chosen on (a random subsample beyond: their
        neighbour search is what a large fit split's scoring costs).
    memory_limit : int or str
        Budget for the neighbour statistics (the reduced training rows of
        every layer get half of it; a class-stratified subsample beyond).
    random_state : int or None
        Seed of the subsamples.

    Attributes
    ----------
    analysis_ : SignatureAnalysis or None
        None when fitted with :meth:`fit_arrays`.
    layers_ : list of str
    classes_ : list of int
        The known classes (``analysis.classes_``).
    n_train_ : int
        Training samples (correct fit samples) the statistics come from.
    n_paths_ : int
        Distinct training paths.
    n_misclassified_ : int or None
        Misclassified fit samples (of the known classes) the layers were
        chosen on: all of them, or ``n_reference`` drawn at random (None
        when fitted with :meth:`fit_arrays`).
    owners_ : list of dict
        Per layer, class -> the clusters counted as that class's.
    stats_ : PathStatistics
    neighbours_ : ClassNeighbours or None
    components_ : list of str
        The components computed.
    layer_combiner_ : LayerCombiner or None
        Standardises the neighbour components (and forms ``combined`` with
        ``method="layers"``).
    combiner_ : LayerCombiner or ScoreCombiner
        What forms ``combined``.
    reference_ : dict of str to ndarray or None
        Component scores of the internal reference (training samples, leave-one-out);
        None when fitted with ``validation_split``.
    validation_split_ : str or None
        Split the reference and the layers were taken from (None: the fit split).
    conformal_scores_ : ndarray or None
        Sorted ``combined`` scores of the validation split's held-out correct
        samples: the conformal calibration (None before :meth:`calibrate`).
    conformal_split_ : str or None
        The split they come from.
    fingerprint_ : str
        A hash of the settings and of what the scorer was fitted and calibrated
        on; saved with every score it gives.
    """

    _nnsig_constraints = {
        "alpha": [Interval(numbers.Real, 1e-300)],
        "beta": [Interval(numbers.Real, 1e-300)],
        "geometry": [Options(GEOMETRIES)],
        "distance_combine": [Options(DISTANCE_COMBINE)],
        "min_cluster_size": [Interval(numbers.Integral, 0)],
        "n_neighbors": [Interval(numbers.Integral, 1)],
        "n_components": [Interval(numbers.Integral, 1)],
        "method": [Options(METHODS)],
        "components": [None, Satisfies(lambda v: len(v) > 0 and set(v) <= set(SCORES),
                                       f"a non-empty list of components among {list(SCORES)}")],
        "n_reference": [Interval(numbers.Integral, 2)],
        "conformal_holdout": [Interval(numbers.Real, 0.0, 0.9)],
        "memory_limit": [MEMORY_SIZE],
        "random_state": [numbers.Integral, None],
    }

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        geometry: str = "cosine",
        distance_combine: str = "fisher",
        min_cluster_size: int = 5,
        n_neighbors: int = 1,
        n_components: int = 64,
        method: str = "layers",
        components: Sequence[str] | None = None,
        n_reference: int = 5000,
        conformal_holdout: float = 0.5,
        memory_limit: int | str = "1GiB",
        random_state: int | None = 0,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.geometry = geometry
        self.distance_combine = distance_combine
        self.min_cluster_size = min_cluster_size
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.method = method
        self.components = components
        self.n_reference = n_reference
        self.conformal_holdout = conformal_holdout
        self.memory_limit = memory_limit
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def fit(self, analysis: Any, store: StoreArg, *, validation_split: str | None = None,
            client: ClientArg = None) -> SignatureScorer:
        """Collect the statistics from ``analysis``'s fit samples in ``store`` (see the module doc).

        With ``validation_split`` the reference, the layers and the conformal threshold come
        from that split, as :meth:`calibrate` takes them, and the internal reference of the
        fit split (a leave-one-out search) is not computed: the same scorer as ``fit`` then
        ``calibrate``, for less.

        Reads each analysed layer of the fit split a few times: for the
        distances to the analysis's centroids, for the neighbour statistics,
        and for the reference and the misclassified samples; each by one
        kernel on a block of rows, run here, chunk by chunk within
        ``memory_limit``, or with a Dask client (given or active) on its
        cluster's workers.
        """
        validate_params(self, self._nnsig_constraints)
        check_is_fitted(analysis, "clusterers_")
        store = open_store(store)
        self._calibration_components = None
        split = analysis.fit_split_
        require_fit_labels(store, split, "the signature scores")
        labels, preds = store.labels(split), store.predictions(split)
        mask = fit_sample_mask(store, split, classes=analysis.fit_classes_, only_correct=True)
        rows = np.flatnonzero(mask)
        self.analysis_ = analysis
        self.layers_ = list(analysis.layers_)
        client = resolve_client(client)
        on = False if client is None else client
        sigs = analysis.signatures(store, split, client=on)
        y = labels[rows]
        self.owners_ = cluster_owners(take(sigs.cluster_ids, rows, client), y,
                                      analysis.n_clusters_)
        ids, dist = self._distances(store, split, sigs, preds, mask, client)
        nearest = None if np.isnan(dist.own).any() else (dist.own, dist.other)
        self._fit_paths(ids, dist.assigned, y, analysis.n_clusters_, analysis.classes_,
                        analysis.layers_, nearest)
        self.neighbours_ = ClassNeighbours(n_components=self.n_components,
                                           memory_limit=self.memory_limit,
                                           random_state=self.random_state)
        self.neighbours_.fit(store, split, rows, y, self.layers_, client=on)
        if validation_split is not None:
            self._fit_validation(store, validation_split, nearest is not None, on)
        else:
            self._fit_reference(store, split, labels, preds, rows, ids, dist, y, on)
        return self

    def _fit_paths(self, ids: np.ndarray, dist: np.ndarray, y: np.ndarray,
                   n_clusters: Sequence[int], classes: Sequence[int], layers: Sequence[str],
                   nearest: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.layers_ = list(layers)
        self.n_clusters_ = [int(k) for k in n_clusters]
        self.classes_ = sorted(int(c) for c in classes)
        own = None if nearest is None else nearest[0]
        self.stats_ = PathStatistics(alpha=self.alpha, beta=self.beta,
                                     distance_combine=self.distance_combine,
                                     min_cluster_size=self.min_cluster_size).fit(
            ids, dist, y, self.n_clusters_, self.classes_, own)
        self.n_train_ = self.stats_.n_train_
        self.n_paths_ = self.stats_.n_paths_
        self.validation_split_ = None

    def _check_fitted(self, need_analysis: bool = False) -> None:
        check_is_fitted(self, "combiner_", msg="SignatureScorer is not fitted; call "
                                               "fit(analysis, store) first.")
        if need_analysis and self.analysis_ is None:
            raise NotFittedError("This SignatureScorer was fitted from arrays (fit_arrays); "
                                 "scoring a store's split needs fit(analysis, store).")

    # ------------------------------------------------------------------ distances
    def _needs_features(self) -> bool:
        comps = set(self.components) if self.components is not None else set(SCORES)
        return self.geometry == "cosine" or bool({"class_margin", "class_distance"} & comps)

    def _distances(self, store: ActivationStore, split: str, sigs: Any, preds: np.ndarray,
                   keep: np.ndarray, client: Any) -> tuple[np.ndarray, Distances]:
        """Cluster ids and distances to the analysis's centroids of the samples where ``keep``
        holds; without features to read (Euclidean geometry, no class distances) the
        signatures' own distances."""
        return split_distances(self.analysis_, self.owners_, store, split, sigs, preds, keep,
                               cosine=self.geometry == "cosine",
                               features=self._needs_features(), client=client)

    # ------------------------------------------------------------------ scoring
    def _aggregate(self, layer: LayerScores) -> dict[str, np.ndarray]:
        """``neighbour_distance`` and ``neighbour_margin``: per-layer z-scores averaged."""
        Z = self.layer_combiner_.standardised(layer)
        return {"neighbour_distance": Z[:, :, 0].mean(axis=1),
                "neighbour_margin": Z[:, :, 1].mean(axis=1)}

    def _path_components(self, store: ActivationStore, split: str, ids: np.ndarray,
                         preds: np.ndarray, dist: Distances) -> dict[str, np.ndarray]:
        """The path components of every sample; the fit split's training samples are scored
        without their own contribution (leave-one-out), whichever driver read the layers."""
        nearest = None if np.isnan(dist.own).any() else (dist.own, dist.other)
        comp = self.stats_.scores(ids, dist.assigned, preds, nearest=nearest)
        if split == self.analysis_.fit_split_:
            tr = np.flatnonzero(fit_sample_mask(store, split, classes=self.analysis_.fit_classes_,
                                                only_correct=True))
            near = None if nearest is None else (nearest[0][tr], nearest[1][tr])
            loo = self.stats_.scores(ids[tr], dist.assigned[tr], preds[tr], loo=True,
                                     nearest=near)
            for k, v in loo.items():
                comp[k][tr] = v
        return comp

    def _split_components(self, store: ActivationStore, split: str, client: ClientArg = None,
                          aggregate: bool = True,
                          ) -> tuple[dict[str, np.ndarray], LayerScores, np.ndarray, np.ndarray]:
        """The components of every sample of ``split``, its per-layer neighbour components,
        its labels and its predictions. The layers are read and the distances computed by the
        driver of ``client`` (here, or on a Dask cluster's workers); the components are then
        computed here from the compact per-sample vectors, by the same code either way.
        Without ``aggregate``, the neighbour components are left out (they need
        ``layer_combiner_``)."""
        client = resolve_client(client)
        on = False if client is None else client
        sigs = self.analysis_.signatures(store, split, client=on)
        if list(sigs.layers) != self.layers_:
            raise ValueError(f"Signatures are over layers {sigs.layers}; the scorer was "
                             f"fitted on {self.layers_}.")
        labels, preds = store.labels(split), store.predictions(split)
        ids, dist = self._distances(store, split, sigs, preds, np.ones(preds.size, dtype=bool),
                                    client)
        comp: dict[str, np.ndarray] = {}
        if any(c in PATH_SCORES for c in self.components_) or self.method != "layers":
            comp.update(self._path_components(store, split, ids, preds, dist))
        layer = neighbour_scores(self.neighbours_, store, split, None, preds,
                                 n_neighbors=self.n_neighbors,
                                 leave_one_out=split == self.analysis_.fit_split_, client=on)
        if aggregate:
            comp.update(self._aggregate(layer))
        return comp, layer, labels, preds

    def score(self, store: StoreArg, split: str, *, return_layers: bool = False,
              client: ClientArg = None) -> Any:
        """Scores of every sample of ``split``, in store order: ``{name: (n,) float64}``.

        Keys: the components (all of :data:`SCORES` unless ``components`` was
        given), ``"combined"`` and, once calibrated on a validation split,
        ``"p_value"``: the conformal p-value of ``combined`` (lower = more
        suspicious; at most ``alpha`` exactly when above :meth:`threshold`). With ``return_layers``, also the per-layer
        neighbour components, ``{layer: {"distance": (n,), "margin": (n,)}}``
        (before standardisation; ``layer_combiner_.standardised`` gives the
        z-scores that say which layer flags a sample), as a second value.
        """
        self._check_fitted(need_analysis=True)
        store = open_store(store)
        kept = getattr(self, "_calibration_components", None)
        if kept is not None and kept.of(store, split):  # scored by calibrate already
            comp, layer = dict(kept.components), kept.layers
            comp.update(self._aggregate(layer))
        else:
            comp, layer, _, _ = self._split_components(store, split, client)
        out = {k: comp[k] for k in self.components_}
        if self.method == "layers":
            out["combined"] = self.combiner_.transform(layer)
        else:
            out["combined"] = self.combiner_.transform(comp)
        cal = getattr(self, "conformal_scores_", None)
        if cal is not None and cal.size:
            out["p_value"] = conformal_p_values(cal, out["combined"])
        return (out, layer) if return_layers else out

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings and combination (stored with saved scores)."""
        self._check_fitted()
        return {
            "alpha": float(self.alpha),
            "beta": float(self.beta),
            "geometry": self.geometry,
            "distance_combine": self.distance_combine,
            "min_cluster_size": int(self.min_cluster_size),
            "n_neighbors": int(self.n_neighbors),
            "n_components": int(self.n_components),
            "method": self.method,
            "fit_split": None if self.analysis_ is None else self.analysis_.fit_split_,
            "n_train": self.n_train_,
            "n_neighbour_reference": (None if self.neighbours_ is None
                                      else self.neighbours_.n_reference_),
            "n_misclassified": self.n_misclassified_,
            "classes": self.classes_,
            "validation_split": self.validation_split_,
            "conformal_holdout": float(self.conformal_holdout),
            "n_conformal": (None if (cal := getattr(self, "conformal_scores_", None)) is None
                            else int(cal.size)),
            "scorer_fingerprint": getattr(self, "fingerprint_", None),
            "combination": self.combiner_.describe(),
        }
