r"""Signature-based suspicion scores: does a sample take a path its predicted class takes?

A fitted :class:`~nnsig_core.analysis.SignatureAnalysis` assigns every sample
a *signature* (path) :math:`s = (k_1, \dots, k_L)`, its cluster in each of the
:math:`L` analysed layers. The *training paths* are those of the analysis's
fit samples that the model classifies correctly (label = prediction). Every
score below is computed for a sample predicted as class :math:`c` and is
*higher = more suspicious*.

Notation: :math:`N_c` training samples of class :math:`c`, :math:`n(s, c)` of
them on path :math:`s`; :math:`V = U + 1` with :math:`U` the number of
distinct training paths (all classes; the :math:`+1` stands for "unseen");
:math:`n_l(k, c)` training samples of class :math:`c` in cluster :math:`k` of
layer :math:`l`, :math:`n_l(k)` of any class; :math:`K_l` clusters in layer
:math:`l`; :math:`C` known classes; :math:`\alpha, \beta` additive smoothing.
:math:`d_l` is the distance of the sample's layer-:math:`l` features (in the
analysis's clustering space) to its assigned centroid; with
``geometry="cosine"`` (default) distances are between L2-normalised vectors,
:math:`\|x/\|x\| - \mu/\|\mu\|\|`; with ``"euclidean"`` they are the plain
distances of the analysis's signatures.

``path_surprisal``
    :math:`-\log \frac{n(s, c) + \alpha}{N_c + \alpha V}`: how rare the exact
    path is among class :math:`c`'s training paths.
``path_hamming``
    :math:`\min_{s' \in S_c} \#\{l : s_l \ne s'_l\}`: the number of layers by
    which :math:`s` differs from the closest training path of class :math:`c`
    (:math:`L` when the class has none); computed over distinct paths.
``disagreement``
    :math:`\frac{1}{L} \sum_l \bigl(1 - \frac{n_l(k_l, c) + \beta}{n_l(k_l) + \beta C}\bigr)`:
    how strongly the visited clusters belong to other classes.
``centroid_distance``
    Per layer the empirical p-value of :math:`d_l` against the training
    distances *of the same cluster*,
    :math:`p_l = \frac{1 + \#\{i : k_{il} = k_l, d_{il} \ge d_l\}}{1 + n_l(k_l)}`
    (against the whole layer's when the cluster holds fewer than
    ``min_cluster_size`` training samples), combined by Fisher's method
    :math:`-2 \sum_l \log p_l` (``distance_combine="fisher"``; the
    :math:`\chi^2_{2L}` reference would need independent layers, which they
    are not: it is a score, not a test) or by the Bonferroni-corrected minimum
    :math:`-\log \min(1, L \min_l p_l)` (``"minp"``).
``transition_surprisal``
    Negative log-likelihood of the path under a class-conditional first-order
    Markov chain over layers:
    :math:`-\log \frac{n_1(k_1, c) + \alpha}{N_c + \alpha K_1} - \sum_{l=1}^{L-1}
    \log \frac{n_{l,l+1}(k_l, k_{l+1}, c) + \alpha}{n_l(k_l, c) + \alpha K_{l+1}}`,
    :math:`n_{l,l+1}(a, b, c)` counting class-:math:`c` training samples going
    from cluster :math:`a` of layer :math:`l` to cluster :math:`b` of layer
    :math:`l + 1`.
``class_distance``
    With :math:`\delta^{c}_l` the distance to the nearest centroid of a
    cluster *of class* :math:`c` (one whose training majority is :math:`c`;
    any cluster holding class :math:`c` if none is; the farthest centroid if
    the class was never seen), its p-value against the same distance of
    class :math:`c`'s training samples,
    :math:`q_l = \frac{1 + \#\{i : y_i = c, \delta^{c}_{il} \ge \delta^{c}_l\}}{1 + N_c}`,
    Fisher-combined: :math:`-2 \sum_l \log q_l`. Unlike
    ``centroid_distance`` it does not renormalise each cluster's spread (a
    sample in a loose, ambiguous cluster stays suspicious) and it measures
    the distance to the predicted class, not to whatever cluster the sample
    fell in (a class never seen gets :math:`q_l = 1 / (1 + N)`).
``class_margin``
    :math:`\sum_l \log \frac{\delta^{c}_l}{\delta^{\neg c}_l}` with
    :math:`\delta^{\neg c}_l` the distance to the nearest centroid of a
    cluster of another class: a soft, distance-aware ``disagreement``,
    positive when the sample sits closer to another class's clusters.
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
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError

from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.diagnostics._io import clustering_features, iter_rows
from nnsig_core.diagnostics.combine import ScoreCombiner, check_known_labels
from nnsig_core.store import ActivationStore

__all__ = ["GEOMETRIES", "SCORES", "SignatureScorer", "signature_scores"]

log = logging.getLogger("nnsig")

SCORES = (
    "path_surprisal",
    "path_hamming",
    "disagreement",
    "centroid_distance",
    "transition_surprisal",
    "class_distance",
    "class_margin",
)
DISTANCE_COMBINE = ("fisher", "minp")
GEOMETRIES = ("cosine", "euclidean")
_HAMMING_BUDGET = 64 << 20
_EPS = 1e-9


def _void(rows: np.ndarray) -> np.ndarray:
    """Each row of an int matrix as one opaque (void) value, for sorting and lookup."""
    r = np.ascontiguousarray(rows, dtype=np.int64)
    if r.ndim == 1:
        r = r[:, None]
    return r.view(np.dtype((np.void, 8 * r.shape[1]))).reshape(-1)


class _RowCounter:
    """Counts of distinct integer rows, looked up for new rows (0 when unseen)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.keys, self.counts = np.unique(_void(rows), return_counts=True)

    def __len__(self) -> int:
        return int(self.keys.size)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        v = _void(rows)
        if self.keys.size == 0:
            return np.zeros(v.size, dtype=np.int64)
        i = np.minimum(np.searchsorted(self.keys, v), self.keys.size - 1)
        return np.where(self.keys[i] == v, self.counts[i], 0).astype(np.int64)


def _row_index(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Index in ``P`` (distinct rows) of each row of ``Q``; -1 when absent."""
    pv = _void(P)
    order = np.argsort(pv, kind="stable")
    sv = pv[order]
    qv = _void(Q)
    if sv.size == 0:
        return np.full(qv.size, -1, dtype=np.int64)
    i = np.minimum(np.searchsorted(sv, qv), sv.size - 1)
    return np.where(sv[i] == qv, order[i], -1).astype(np.int64)


def _min_hamming(Q: np.ndarray, P: np.ndarray, exclude: np.ndarray | None = None,
                 budget: int = _HAMMING_BUDGET) -> np.ndarray:
    """Min over rows of ``P`` of the Hamming distance to each row of ``Q`` (chunked).

    ``exclude[i]``, when >= 0, is a row of ``P`` ignored for query ``i``.
    Returns ``L + 1`` (``L`` = row length) where nothing is left to compare.
    """
    L = Q.shape[1]
    out = np.full(Q.shape[0], L + 1, dtype=np.int64)
    if P.shape[0] == 0 or Q.shape[0] == 0:
        return out
    step = max(1, budget // max(P.shape[0] * max(L, 1), 1))
    for s in range(0, Q.shape[0], step):
        D = (Q[s : s + step, None, :] != P[None, :, :]).sum(axis=2, dtype=np.int32)
        if exclude is not None:
            ex = exclude[s : s + step]
            hit = np.flatnonzero(ex >= 0)
            D[hit, ex[hit]] = L + 1
        out[s : s + step] = D.min(axis=1)
    return out


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class _Geometry:
    """Per-sample distances of a split: to the assigned centroid, to the nearest centroid of
    the predicted class's clusters, and to the nearest centroid of another class's clusters."""

    def __init__(self, assigned: np.ndarray, own: np.ndarray, other: np.ndarray) -> None:
        self.assigned, self.own, self.other = assigned, own, other


class SignatureScorer:
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
    reference_ : dict of str to ndarray
        Leave-one-out scores of the training samples.
    combiner_ : ScoreCombiner
    validation_split_ : str or None
        Split the combination was tuned on (None: untuned rank average).
    """

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
    def fit(self, analysis: Any, store: ActivationStore | str | os.PathLike[str]) -> SignatureScorer:
        """Collect the training statistics from ``analysis``'s fit samples in ``store``.

        The training samples are the analysis's fit samples (its
        ``selection_mask`` on its fit split) that the model classifies
        correctly; their signatures come from the analysis (computed, cached
        or loaded); the fit split's layers are read once more for the
        distances to all centroids.
        """
        from nnsig_core.analysis.engine import as_store

        self._check_params()
        analysis._check_fitted()
        store = as_store(store)
        split = analysis.fit_split_
        sigs = analysis.signatures(store, split)
        if not sigs.has_labels:
            raise MissingLabelsError(
                f"The fit split {split!r} has no labels; the diagnostics need the training "
                "samples' classes."
            )
        mask = analysis.selection_mask(store, split) & sigs.correct
        if not mask.any():
            raise MissingLabelsError(f"No correctly classified fit sample in split {split!r}.")
        rows = np.flatnonzero(mask)
        ids, y = sigs.cluster_ids[rows], sigs.labels[rows]
        self.analysis_ = analysis
        self.layers_ = list(analysis.layers_)
        self.owners_ = self._owners(ids, y, analysis.n_clusters_)
        geo = self._geometry(store, split, rows, ids, y)
        nearest = None if np.isnan(geo.own).any() else (geo.own, geo.other)
        self.fit_arrays(ids, geo.assigned, y, n_clusters=analysis.n_clusters_,
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
        self._check_params()
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
        self.owners_ = self._owners(ids, y, self.n_clusters_)
        own = None if nearest is None else np.asarray(nearest[0], dtype=np.float64)
        self._fit_stats(ids, dist, y, dist if own is None else own)
        comps = list(self.components) if self.components is not None else list(SCORES)
        if nearest is None and "class_margin" in comps:
            if self.components is not None:
                raise ValueError("class_margin needs the nearest-centroid distances (nearest=).")
            comps.remove("class_margin")
        self.components_ = comps
        self.reference_ = self.component_scores(ids, dist, y, loo=True, nearest=nearest)
        self.combiner_ = ScoreCombiner("rank", self.components_).fit(self.reference_)
        self.validation_split_: str | None = None
        self.analysis_ = None
        return self

    def _check_params(self) -> None:
        if self.distance_combine not in DISTANCE_COMBINE:
            raise ValueError(f"distance_combine must be one of {DISTANCE_COMBINE}; "
                             f"got {self.distance_combine!r}.")
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}; got {self.geometry!r}.")
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError("alpha and beta must be > 0.")
        comps = list(self.components) if self.components is not None else list(SCORES)
        bad = [c for c in comps if c not in SCORES]
        if bad or not comps:
            raise ValueError(f"Unknown component(s) {bad}; choose among {list(SCORES)}.")

    @staticmethod
    def _owners(ids: np.ndarray, y: np.ndarray, n_clusters: Sequence[int]) -> list[dict[int, np.ndarray]]:
        """Per layer, class -> its clusters: those whose training majority is the class, or,
        for a class that is the majority nowhere, every cluster holding one of its samples."""
        ids = np.asarray(ids, dtype=np.int64)
        y = np.asarray(y, dtype=np.int64)
        classes = np.unique(y)
        out = []
        for j in range(ids.shape[1]):
            K = max(int(n_clusters[j]), int(ids[:, j].max(initial=-1)) + 1)
            comp = np.zeros((K, classes.size), dtype=np.int64)
            np.add.at(comp, (ids[:, j], np.searchsorted(classes, y)), 1)
            filled = comp.sum(axis=1) > 0
            major = np.where(filled, comp.argmax(axis=1), -1)
            owners: dict[int, np.ndarray] = {}
            for ci, c in enumerate(classes):
                mine = np.flatnonzero(major == ci)
                if mine.size == 0:
                    mine = np.flatnonzero(comp[:, ci] > 0)
                owners[int(c)] = mine
            out.append(owners)
        return out

    def _fit_stats(self, ids: np.ndarray, dist: np.ndarray, y: np.ndarray,
                   own: np.ndarray) -> None:
        L = ids.shape[1]
        self.n_layers_ = L
        self.n_train_ = int(ids.shape[0])
        self.n_paths_ = int(np.unique(ids, axis=0).shape[0])
        self._class_n = _RowCounter(y[:, None])
        self._path_n = _RowCounter(np.column_stack([y, ids]))
        self._class_paths: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for c in np.unique(y):
            P, cnt = np.unique(ids[y == c], axis=0, return_counts=True)
            self._class_paths[int(c)] = (P, cnt)
        self._comp = [_RowCounter(np.column_stack([ids[:, j], y])) for j in range(L)]
        self._size = [_RowCounter(ids[:, j : j + 1]) for j in range(L)]
        self._trans = [_RowCounter(np.column_stack([y, ids[:, j], ids[:, j + 1]]))
                       for j in range(L - 1)]
        # Sorted training distances per (layer, cluster), stored flat with offsets,
        # per (layer, class), and per layer.
        self._dist: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._class_dist: list[dict[int, np.ndarray]] = []
        for j in range(L):
            K = max(self.n_clusters_[j], int(ids[:, j].max(initial=-1)) + 1)
            order = np.lexsort((dist[:, j], ids[:, j]))
            flat = dist[order, j]
            offsets = np.searchsorted(ids[order, j], np.arange(K + 1))
            self._dist.append((flat, offsets, np.sort(dist[:, j])))
            self._class_dist.append({int(c): np.sort(own[y == c, j]) for c in np.unique(y)})

    def _check_fitted(self, need_analysis: bool = False) -> None:
        if not hasattr(self, "combiner_"):
            raise NotFittedError("SignatureScorer is not fitted; call fit(analysis, store) first.")
        if need_analysis and self.analysis_ is None:
            raise NotFittedError("This SignatureScorer was fitted from arrays (fit_arrays); "
                                 "scoring a store's split needs fit(analysis, store).")

    # ------------------------------------------------------------------ geometry
    def _needs_features(self) -> bool:
        comps = set(self.components) if self.components is not None else set(SCORES)
        return self.geometry == "cosine" or bool({"class_margin", "class_distance"} & comps)

    def _geometry(self, store: ActivationStore, split: str, rows: np.ndarray | None,
                  ids: np.ndarray, c: np.ndarray) -> _Geometry:
        """Distances of the selected samples of ``split`` (chunk by chunk, layer by layer)."""
        n, L = ids.shape
        assigned = np.empty((n, L))
        own = np.full((n, L), np.nan)
        other = np.full((n, L), np.nan)
        if not self._needs_features():
            sigs_dist = self.analysis_.signatures(store, split).distances
            assigned[:] = sigs_dist if rows is None else sigs_dist[rows]
            return _Geometry(assigned, own, other)
        ids = np.asarray(ids, dtype=np.int64)
        c = np.asarray(c, dtype=np.int64)
        for j, name in enumerate(self.layers_):
            lc = self.analysis_.clusterers_[name]
            centers = np.asarray(lc.cluster_centers_, dtype=np.float64)
            if self.geometry == "cosine":
                centers = _unit(centers)
            c2 = (centers**2).sum(axis=1)
            for sl, block in iter_rows(store, split, name, rows):
                F = clustering_features(lc, block).astype(np.float64)
                if self.geometry == "cosine":
                    F = _unit(F)
                D = np.sqrt(np.maximum((F**2).sum(1)[:, None] - 2 * F @ centers.T + c2[None], 0))
                k = ids[sl, j]
                assigned[sl, j] = D[np.arange(D.shape[0]), k]
                own[sl, j], other[sl, j] = self._nearest(j, D, c[sl])
        return _Geometry(assigned, own, other)

    def _nearest(self, j: int, D: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance to the nearest centroid of the predicted class's clusters and of the
        other classes' clusters (the farthest centroid for a class never seen)."""
        owners = self.owners_[j]
        K = D.shape[1]
        mine = np.zeros(D.shape, dtype=bool)
        held = np.zeros(K, dtype=bool)
        for idx in owners.values():
            held[idx[idx < K]] = True
        for cls in np.unique(c):
            idx = owners.get(int(cls))
            if idx is not None and idx.size:
                r = np.flatnonzero(c == cls)
                mine[np.ix_(r, idx[idx < K])] = True
        own = np.where(mine, D, np.inf).min(axis=1)
        unseen = ~mine.any(axis=1)
        own[unseen] = D[unseen].max(axis=1)
        other = np.where(~mine & held[None, :], D, np.inf).min(axis=1)
        return own, other

    # ------------------------------------------------------------------ scoring
    def component_scores(self, cluster_ids: Any, distances: Any, predictions: Any,
                         loo: bool = False,
                         nearest: tuple[Any, Any] | None = None) -> dict[str, np.ndarray]:
        """The component scores of samples given their signatures.

        Parameters
        ----------
        cluster_ids, distances : array-like (n, L)
            Cluster ids and distances to the assigned centroid (in the
            scorer's geometry).
        predictions : array-like (n,)
            Predicted classes.
        loo : bool
            The samples are themselves training samples (of class
            ``predictions``): remove each one's own contribution (leave one out).
        nearest : (array-like (n, L), array-like (n, L)), optional
            Distances to the nearest centroid of the predicted class's and of
            another class's clusters; ``class_margin`` is computed only with
            them, and ``class_distance`` uses ``distances`` without them.
        """
        ids = np.asarray(cluster_ids, dtype=np.int64)
        dist = np.asarray(distances, dtype=np.float64)
        c = np.asarray(predictions, dtype=np.int64).reshape(-1)
        L = self.n_layers_
        if ids.ndim != 2 or ids.shape[1] != L or dist.shape != ids.shape or c.size != ids.shape[0]:
            raise ValueError(f"Expected cluster_ids and distances of shape (n, {L}) and n "
                             "predictions.")
        delta = 1 if loo else 0
        a, b = float(self.alpha), float(self.beta)
        N_c = self._class_n(c[:, None]) - delta
        n_sc = self._path_n(np.column_stack([c, ids])) - delta
        V = self.n_paths_ + 1
        out: dict[str, np.ndarray] = {}
        out["path_surprisal"] = -np.log((n_sc + a) / (N_c + a * V))
        out["path_hamming"] = self._hamming(ids, c, loo).astype(np.float64)
        C = max(len(self.classes_), 1)
        dis = np.zeros(ids.shape[0])
        for j in range(L):
            n_kc = self._comp[j](np.column_stack([ids[:, j], c])) - delta
            n_k = self._size[j](ids[:, j : j + 1]) - delta
            dis += 1.0 - (n_kc + b) / (n_k + b * C)
        out["disagreement"] = dis / L
        logp = np.column_stack([np.log(self._pvalues(j, ids[:, j], dist[:, j], delta))
                                for j in range(L)])
        if self.distance_combine == "fisher":
            out["centroid_distance"] = -2.0 * logp.sum(axis=1)
        else:
            out["centroid_distance"] = -np.minimum(0.0, np.log(L) + logp.min(axis=1))
        n1 = self._comp[0](np.column_stack([ids[:, 0], c])) - delta
        ts = -np.log((n1 + a) / (N_c + a * self.n_clusters_[0]))
        for j in range(L - 1):
            n_t = self._trans[j](np.column_stack([c, ids[:, j], ids[:, j + 1]])) - delta
            n_from = self._comp[j](np.column_stack([ids[:, j], c])) - delta
            ts -= np.log((n_t + a) / (n_from + a * self.n_clusters_[j + 1]))
        out["transition_surprisal"] = ts
        own = dist
        if nearest is not None:
            own = np.asarray(nearest[0], dtype=np.float64)
            other = np.asarray(nearest[1], dtype=np.float64)
            if own.shape != ids.shape or other.shape != ids.shape:
                raise ValueError(f"nearest distances must be of shape (n, {L}).")
        logq = np.column_stack([np.log(self._class_pvalues(j, c, own[:, j], delta))
                                for j in range(L)])
        out["class_distance"] = -2.0 * logq.sum(axis=1)
        if nearest is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                term = np.log((own + _EPS) / (other + _EPS))
            term[~np.isfinite(other)] = 0.0  # no other class's cluster to compare with
            out["class_margin"] = term.sum(axis=1)
        return out

    def _pvalues(self, j: int, k: np.ndarray, d: np.ndarray, delta: int) -> np.ndarray:
        flat, offsets, pooled = self._dist[j]
        p = np.empty(k.size)
        K = offsets.size - 1
        for kk in np.unique(k):
            rows = np.flatnonzero(k == kk)
            ref = flat[offsets[kk] : offsets[kk + 1]] if 0 <= kk < K else flat[:0]
            if ref.size - delta < int(self.min_cluster_size):
                ref = pooled
            ge = ref.size - np.searchsorted(ref, d[rows], side="left")
            p[rows] = (1.0 + ge - delta) / (1.0 + ref.size - delta)
        return np.clip(p, 1e-300, 1.0)

    def _class_pvalues(self, j: int, c: np.ndarray, d: np.ndarray, delta: int) -> np.ndarray:
        by_class = self._class_dist[j]
        p = np.full(c.size, 1.0 / (1.0 + self.n_train_))  # a class never seen
        for cls in np.unique(c):
            ref = by_class.get(int(cls))
            if ref is None or ref.size - delta < 1:
                continue
            rows = np.flatnonzero(c == cls)
            ge = ref.size - np.searchsorted(ref, d[rows], side="left")
            p[rows] = (1.0 + ge - delta) / (1.0 + ref.size - delta)
        return np.clip(p, 1e-300, 1.0)

    def _hamming(self, ids: np.ndarray, c: np.ndarray, loo: bool) -> np.ndarray:
        L = self.n_layers_
        out = np.full(ids.shape[0], L, dtype=np.int64)
        for cls in np.unique(c):
            entry = self._class_paths.get(int(cls))
            if entry is None:
                continue
            P, cnt = entry
            rows = np.flatnonzero(c == cls)
            uq, inv = np.unique(ids[rows], axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            exclude = None
            if loo:
                idx = _row_index(P, uq)
                # A path followed by another training sample of the class is still seen.
                exclude = np.where((idx >= 0) & (cnt[np.maximum(idx, 0)] <= 1), idx, -1)
            h = np.minimum(_min_hamming(uq, P, exclude), L)
            out[rows] = h[inv]
        return out

    def _split_components(self, store: ActivationStore, split: str) -> tuple[dict[str, np.ndarray], Any]:
        sigs = self.analysis_.signatures(store, split)
        if list(sigs.layers) != self.layers_:
            raise ValueError(f"Signatures are over layers {sigs.layers}; the scorer was fitted "
                             f"on {self.layers_}.")
        geo = self._geometry(store, split, None, sigs.cluster_ids, sigs.predictions)
        nearest = None if np.isnan(geo.own).any() else (geo.own, geo.other)
        comp = self.component_scores(sigs.cluster_ids, geo.assigned, sigs.predictions,
                                     nearest=nearest)
        return comp, sigs

    def score(self, store: ActivationStore | str | os.PathLike[str], split: str) -> dict[str, np.ndarray]:
        """Scores of every sample of ``split``, in store order: ``{name: (n,) float64}``.

        Keys: the components (all of :data:`SCORES` unless ``components`` was
        given) and ``"combined"``.
        """
        from nnsig_core.analysis.engine import as_store

        self._check_fitted(need_analysis=True)
        comp, _ = self._split_components(as_store(store), split)
        out = {k: comp[k] for k in self.components_}
        out["combined"] = self.combiner_.transform(out)
        return out

    # ------------------------------------------------------------------ calibration
    def calibrate(self, store: ActivationStore | str | os.PathLike[str], split: str,
                  method: str | None = None) -> SignatureScorer:
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
        from nnsig_core.analysis.engine import as_store

        self._check_fitted(need_analysis=True)
        store = as_store(store)
        check_known_labels(store.labels(split), self.classes_, f"validation split {split!r}")
        if split == self.analysis_.fit_split_:
            log.warning("Calibrating on the fit split %r: its paths are all seen in training, "
                        "so the combination is tuned in-sample. Hold out a validation split.",
                        split)
        comp, sigs = self._split_components(store, split)
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
        comp = self.component_scores(cluster_ids, distances, predictions, nearest=nearest)
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
    store: ActivationStore | str | os.PathLike[str],
    split: str,
    *,
    validation_split: str | None = None,
    method: str = "rank",
    save: bool = True,
    name: str | None = None,
    scorer: SignatureScorer | None = None,
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
        in the store (skipped, with a warning, when the store is read-only).
    name : str, optional
        The analysis name to save under (default: the name the analysis was
        saved or loaded with; nothing is saved when it has none).
    scorer : SignatureScorer, optional
        A fitted scorer to reuse (scoring several splits).
    **params
        :class:`SignatureScorer` parameters (``alpha``, ``beta``,
        ``geometry``, ``distance_combine``, ``min_cluster_size``,
        ``components``).

    Returns
    -------
    dict of str to ndarray (n,)
        The components of :data:`SCORES` and ``combined``.
    """
    from nnsig_core.analysis.engine import as_store
    from nnsig_core.diagnostics.persist import save_scores

    store = as_store(store, mode="r+" if save else "r")
    if scorer is None:
        scorer = SignatureScorer(method=method, **params).fit(analysis, store)
    elif params:
        raise TypeError(f"Parameters {sorted(params)} cannot be applied to a given scorer.")
    if validation_split is not None:
        scorer.calibrate(store, validation_split, method=method)
    scores = scorer.score(store, split)
    if save:
        save_scores(store, name or getattr(analysis, "name_", None), split, scores,
                    attrs=scorer.describe())
    return scores
