r"""Signature-based suspicion scores: does a sample take a path its predicted class takes?

A fitted :class:`~nnsig_core.analysis.SignatureAnalysis` assigns every sample
a *signature* (path), its cluster in each analysed layer. The *training
paths* are those of the analysis's fit samples that the model classifies
correctly. :mod:`~nnsig_core.diagnostics.components` defines the component
scores (``path_surprisal``, ``path_hamming``, ``disagreement``,
``centroid_distance``, ``transition_surprisal``, ``class_distance``,
``class_margin``), all *higher = more suspicious*; this module fits them on an
analysis and a store and combines them:

``combined``
    A :class:`~nnsig_core.diagnostics.combine.ScoreCombiner` of the
    components: by default the mean of their empirical-CDF ranks on a
    reference set; after :meth:`SignatureScorer.calibrate` on a validation
    split of known classes, the combination that best detects that split's
    misclassified samples (error detection only, never novel classes).

The default reference of the ranks is the training samples themselves, scored
*leave-one-out* (each one's own contribution removed from every count,
distance list and path set; the centroids are kept), so that they behave like
unseen samples of known classes; after calibration it is the validation split.

Cost: ``class_distance`` and ``class_margin`` (and any distance in the
cosine geometry) need the distances to *all* centroids, so the scorer reads
each analysed layer of the scored split once more, chunk by chunk, through the
analysis's feature map; the other scores need only the signatures (pass
``geometry="euclidean"`` and ``components`` without those two to skip the
read).

Choices, measured in ``benchmarks/bench_diagnostics.py`` (MNIST MLP, 100
clusters per layer): in the raw ReLU space Euclidean distances mostly measure
the activation norm, and cosine distances detect errors and novel classes far
better; p-values per cluster (``centroid_distance``) forgive samples in loose
clusters, hence ``class_distance``; exact paths become sparse with many
clusters, so ``path_*`` and ``transition_surprisal`` are weak there.
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

from nnsig_core._params import Interval, Options, Satisfies, validate_params
from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.analysis.selection import fit_sample_mask
from nnsig_core.diagnostics.combine import ScoreCombiner, check_known_labels
from nnsig_core.diagnostics.components import DISTANCE_COMBINE, SCORES, PathStatistics
from nnsig_core.diagnostics.geometry import Distances, cluster_owners, split_distances
from nnsig_core.diagnostics.persist import save_scores
from nnsig_core.distributed.client import ClientArg, resolve_client
from nnsig_core.store import ActivationStore, open_store

__all__ = ["GEOMETRIES", "SignatureScorer", "signature_scores"]

log = logging.getLogger("nnsig")

GEOMETRIES = ("cosine", "euclidean")
StoreArg = ActivationStore | str | os.PathLike


class SignatureScorer(BaseEstimator):
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
        How ``centroid_distance`` combines its per-layer p-values
        (``class_distance`` always uses Fisher's method).
    min_cluster_size : int
        Clusters with fewer training samples take their distance p-value
        against the whole layer's training distances.
    method : {"rank", "logistic"}
        Combination used by :meth:`calibrate` (see
        :class:`~nnsig_core.diagnostics.combine.ScoreCombiner`).
    components : sequence of str or None
        Scores entering ``combined`` (default: all of :data:`SCORES`).

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
        Distinct training paths ``U``.
    owners_ : list of dict
        Per layer, class -> the clusters counted as that class's in
        ``class_margin`` (majority class, see the module doc).
    stats_ : PathStatistics
        The training statistics behind the components.
    components_ : list of str
        The components computed and combined.
    reference_ : dict of str to ndarray
        Leave-one-out scores of the training samples.
    combiner_ : ScoreCombiner
    validation_split_ : str or None
        Split the combination was tuned on (None: untuned rank average).
    """

    _parameter_constraints = {
        "alpha": [Interval(numbers.Real, 1e-300)],
        "beta": [Interval(numbers.Real, 1e-300)],
        "geometry": [Options(GEOMETRIES)],
        "distance_combine": [Options(DISTANCE_COMBINE)],
        "min_cluster_size": [Interval(numbers.Integral, 0)],
        "method": [Options(("rank", "logistic"))],
        "components": [None, Satisfies(lambda v: len(v) > 0 and set(v) <= set(SCORES),
                                       f"a non-empty list of components among {list(SCORES)}")],
    }

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        geometry: str = "cosine",
        distance_combine: str = "fisher",
        min_cluster_size: int = 5,
        method: str = "rank",
        components: Sequence[str] | None = None,
    ) -> None:
        self.alpha = alpha
        self.beta = beta
        self.geometry = geometry
        self.distance_combine = distance_combine
        self.min_cluster_size = min_cluster_size
        self.method = method
        self.components = components

    # ------------------------------------------------------------------ fitting
    def fit(self, analysis: Any, store: StoreArg, client: ClientArg = None) -> SignatureScorer:
        """Collect the training statistics from ``analysis``'s fit samples in ``store``.

        The training samples are the analysis's fit samples that the model
        classifies correctly (:func:`~nnsig_core.analysis.fit_sample_mask`
        on its fit split and classes); their signatures come from the
        analysis (computed, cached or loaded); the fit split's layers are read
        once more for the distances to all centroids. With a Dask client (given or
        active) the layers are read and the distances computed on its cluster.
        """
        if (client := resolve_client(client)) is not None:
            from nnsig_core.distributed.diagnostics import fit_scorer

            return fit_scorer(self, analysis, store, client)
        validate_params(self, self._parameter_constraints)
        check_is_fitted(analysis, "clusterers_")
        store = open_store(store)
        split = analysis.fit_split_
        sigs = analysis.signatures(store, split)
        if not sigs.has_labels:
            raise MissingLabelsError(
                f"The fit split {split!r} has no labels; the diagnostics need the training "
                "samples' classes."
            )
        rows = np.flatnonzero(fit_sample_mask(store, split, analysis.fit_classes_,
                                              only_correct=True))
        ids, y = sigs.cluster_ids[rows], sigs.labels[rows]
        self.analysis_ = analysis
        self.layers_ = list(analysis.layers_)
        self.owners_ = cluster_owners(ids, y, analysis.n_clusters_)
        dist = self._distances(store, split, rows, ids, y)
        nearest = None if np.isnan(dist.own).any() else (dist.own, dist.other)
        self.fit_arrays(ids, dist.assigned, y, n_clusters=analysis.n_clusters_,
                        classes=analysis.classes_, layers=analysis.layers_, nearest=nearest)
        self.analysis_ = analysis
        return self

    def fit_arrays(
        self,
        cluster_ids: Any,
        distances: Any,
        labels: Any,
        n_clusters: Sequence[int] | None = None,
        classes: Sequence[int] | None = None,
        layers: Sequence[str] | None = None,
        nearest: tuple[Any, Any] | None = None,
    ) -> SignatureScorer:
        """Fit from the training samples' signatures directly (no analysis or store needed).

        Parameters
        ----------
        cluster_ids, distances : array-like (n, L)
            Cluster ids and distances to the assigned centroid of the
            training samples (all correctly classified, of known classes).
        labels : array-like (n,)
            Their classes.
        n_clusters : sequence of int, optional
            Clusters per layer (default: largest id + 1 per layer).
        classes : sequence of int, optional
            The known classes (default: the labels present).
        layers : sequence of str, optional
            Layer names (default ``"0"``, ``"1"``...).
        nearest : (array-like (n, L), array-like (n, L)), optional
            Distances to the nearest centroid of the own and of another class's
            clusters (``class_distance``, ``class_margin``); without them
            ``class_margin`` is left out of ``combined`` and ``class_distance``
            uses ``distances`` instead.

        :meth:`component_scores` works after this; :meth:`score` and
        :meth:`calibrate` need :meth:`fit` (an analysis and a store).
        """
        validate_params(self, self._parameter_constraints)
        ids = np.asarray(cluster_ids, dtype=np.int64)
        dist = np.asarray(distances, dtype=np.float64)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        if ids.ndim != 2 or dist.shape != ids.shape or y.size != ids.shape[0] or ids.size == 0:
            raise ValueError("cluster_ids and distances must be (n, L) with n >= 1, labels (n,).")
        if (y < 0).any():
            raise MissingLabelsError("Every training sample needs a label.")
        L = ids.shape[1]
        self.layers_ = [str(j) for j in range(L)] if layers is None else list(layers)
        if n_clusters is None:
            n_clusters = (ids.max(axis=0) + 1).tolist()
        self.n_clusters_ = [int(k) for k in n_clusters]
        if len(self.n_clusters_) != L or len(self.layers_) != L:
            raise ValueError(f"n_clusters and layers need one entry per layer ({L}).")
        self.classes_ = sorted({int(c) for c in (np.unique(y) if classes is None else classes)})
        self.owners_ = cluster_owners(ids, y, self.n_clusters_)
        own = None if nearest is None else np.asarray(nearest[0], dtype=np.float64)
        self.stats_ = PathStatistics(self.alpha, self.beta, self.distance_combine,
                                     self.min_cluster_size).fit(
            ids, dist, y, self.n_clusters_, self.classes_, own)
        self.n_train_ = self.stats_.n_train_
        self.n_paths_ = self.stats_.n_paths_
        comps = list(self.components) if self.components is not None else list(SCORES)
        if nearest is None and "class_margin" in comps:
            if self.components is not None:
                raise ValueError("class_margin needs the nearest-centroid distances (nearest=).")
            comps.remove("class_margin")
        self.components_ = comps
        self.reference_ = self.stats_.scores(ids, dist, y, loo=True, nearest=nearest)
        self.combiner_ = ScoreCombiner("rank", self.components_).fit(self.reference_)
        self.validation_split_: str | None = None
        self.analysis_ = None
        return self

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

    def _distances(self, store: ActivationStore, split: str, rows: np.ndarray | None,
                   ids: np.ndarray, predictions: np.ndarray) -> Distances:
        """Distances of the selected samples of ``split``; without features to read (Euclidean
        geometry, no class distances) the signatures' own distances."""
        if self._needs_features():
            return split_distances(self.analysis_, self.owners_, store, split, rows, ids,
                                   predictions, cosine=self.geometry == "cosine")
        n, L = ids.shape
        sigs_dist = self.analysis_.signatures(store, split).distances
        assigned = np.asarray(sigs_dist if rows is None else sigs_dist[rows], dtype=np.float64)
        return Distances(assigned, np.full((n, L), np.nan), np.full((n, L), np.nan))

    # ------------------------------------------------------------------ scoring
    def component_scores(self, cluster_ids: Any, distances: Any, predictions: Any,
                         loo: bool = False,
                         nearest: tuple[Any, Any] | None = None) -> dict[str, np.ndarray]:
        """The component scores of samples given their signatures (see
        :meth:`~nnsig_core.diagnostics.components.PathStatistics.scores`); ``distances`` are
        in the scorer's geometry."""
        self._check_fitted()
        return self.stats_.scores(cluster_ids, distances, predictions, loo=loo, nearest=nearest)

    def _split_components(self, store: ActivationStore, split: str,
                          client: ClientArg = None) -> tuple[dict[str, np.ndarray], Any]:
        if (client := resolve_client(client)) is not None:
            from nnsig_core.distributed.diagnostics import split_components

            return split_components(self, store, split, client)
        sigs = self.analysis_.signatures(store, split)
        if list(sigs.layers) != self.layers_:
            raise ValueError(f"Signatures are over layers {sigs.layers}; the scorer was fitted "
                             f"on {self.layers_}.")
        dist = self._distances(store, split, None, sigs.cluster_ids, sigs.predictions)
        nearest = None if np.isnan(dist.own).any() else (dist.own, dist.other)
        comp = self.stats_.scores(sigs.cluster_ids, dist.assigned, sigs.predictions,
                                  nearest=nearest)
        return comp, sigs

    def score(self, store: StoreArg, split: str, client: ClientArg = None) -> dict[str, np.ndarray]:
        """Scores of every sample of ``split``, in store order: ``{name: (n,) float64}``.

        Keys: the components (all of :data:`SCORES` unless ``components`` was
        given) and ``"combined"``.
        """
        self._check_fitted(need_analysis=True)
        comp, _ = self._split_components(open_store(store), split, client)
        out = {k: comp[k] for k in self.components_}
        out["combined"] = self.combiner_.transform(out)
        return out

    # ------------------------------------------------------------------ calibration
    def calibrate(self, store: StoreArg, split: str, method: str | None = None,
                  client: ClientArg = None) -> SignatureScorer:
        """Choose the ``combined`` score on a validation split's error-detection task.

        Every label of ``split`` must be one of the analysis's known classes
        (``classes_``): the combination is tuned to separate the misclassified
        from the correctly classified samples of known classes, never on novel
        classes.

        Raises
        ------
        NovelClassError
            ``split`` holds a label the analysis was not fitted on.
        MissingLabelsError
            ``split`` has samples without labels.
        """
        self._check_fitted(need_analysis=True)
        store = open_store(store)
        check_known_labels(store.labels(split), self.classes_, f"validation split {split!r}")
        if split == self.analysis_.fit_split_:
            log.warning("Calibrating on the fit split %r: its paths are all seen in training, "
                        "so the combination is tuned in-sample. Hold out a validation split.",
                        split)
        comp, sigs = self._split_components(store, split, client)
        self._tune(comp, sigs.labels, sigs.predictions, method)
        self.validation_split_ = split
        return self

    def calibrate_arrays(self, cluster_ids: Any, distances: Any, labels: Any, predictions: Any,
                         method: str | None = None,
                         nearest: tuple[Any, Any] | None = None) -> SignatureScorer:
        """:meth:`calibrate` from validation signatures given as arrays.

        Raises :class:`NovelClassError` unless every label is a known class.
        """
        self._check_fitted()
        check_known_labels(labels, self.classes_, "validation")
        comp = self.stats_.scores(cluster_ids, distances, predictions, nearest=nearest)
        self._tune(comp, labels, predictions, method)
        self.validation_split_ = "(arrays)"
        return self

    def _tune(self, comp: dict[str, np.ndarray], labels: Any, predictions: Any,
              method: str | None) -> None:
        self.combiner_ = ScoreCombiner(method or self.method, self.components_).fit(
            comp, labels, predictions, self.classes_)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings and combination (stored with saved scores)."""
        self._check_fitted()
        return {
            "alpha": float(self.alpha),
            "beta": float(self.beta),
            "geometry": self.geometry,
            "distance_combine": self.distance_combine,
            "min_cluster_size": int(self.min_cluster_size),
            "fit_split": None if self.analysis_ is None else self.analysis_.fit_split_,
            "n_train": self.n_train_,
            "classes": self.classes_,
            "validation_split": self.validation_split_,
            "combination": self.combiner_.describe(),
        }


def signature_scores(
    analysis: Any,
    store: StoreArg,
    split: str,
    *,
    validation_split: str | None = None,
    method: str = "rank",
    save: bool = False,
    name: str | None = None,
    scorer: SignatureScorer | None = None,
    client: ClientArg = None,
    **params: Any,
) -> dict[str, np.ndarray]:
    """Signature-based suspicion scores of every sample of ``split`` (higher = more suspicious).

    Parameters
    ----------
    analysis : SignatureAnalysis
        Fitted; its fit samples (correctly classified) are the training paths.
    store : ActivationStore or path
        A path is opened read-write when ``save`` (read-only otherwise).
    split : str
        The split to score.
    validation_split : str, optional
        A labelled split of known classes only, held out from training, on
        which ``combined`` is tuned for error detection
        (:meth:`SignatureScorer.calibrate`; raises
        :class:`~nnsig_core.diagnostics.NovelClassError` if it holds a class
        the analysis was not fitted on). Without it, ``combined`` is the
        untuned mean rank.
    method : {"rank", "logistic"}
        Combination tuned on ``validation_split``.
    save : bool
        Also write the scores to ``analysis/<name>/scores/<split>/<score>``
        in the store (skipped, with a warning, when the store is read-only or
        the analysis was never saved), where ``nnsig report`` finds them.
    name : str, optional
        The analysis name to save under (default: the name the analysis was
        saved or loaded with).
    scorer : SignatureScorer, optional
        A fitted scorer to reuse (scoring several splits).
    client : dask.distributed.Client, None or False
        Read the layers and score on this Dask cluster (``None``: the active
        client, if any; ``False``: here).
    **params
        :class:`SignatureScorer` parameters (``alpha``, ``beta``,
        ``geometry``, ``distance_combine``, ``min_cluster_size``,
        ``components``).

    Returns
    -------
    dict of str to ndarray (n,)
        The components of :data:`SCORES` and ``combined``.
    """
    store = open_store(store, mode="r+" if save else "r")
    if scorer is None:
        scorer = SignatureScorer(method=method, **params).fit(analysis, store, client=client)
    elif params:
        raise TypeError(f"Parameters {sorted(params)} cannot be applied to a given scorer.")
    if validation_split is not None:
        scorer.calibrate(store, validation_split, method=method, client=client)
    scores = scorer.score(store, split, client=client)
    if save:
        save_scores(store, name or getattr(analysis, "name_", None), split, scores,
                    attrs=scorer.describe())
    return scores
