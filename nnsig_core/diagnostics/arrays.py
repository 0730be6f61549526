"""The path components from signatures given as arrays (no store): a mixin of
:class:`~nnsig_core.diagnostics.SignatureScorer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nnsig_core._params import validate_params
from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.diagnostics.calibration import ScorerState
from nnsig_core.diagnostics.combine import ScoreCombiner, check_known_labels
from nnsig_core.diagnostics.components import NEIGHBOUR_SCORES, PATH_SCORES
from nnsig_core.diagnostics.geometry import cluster_owners


class PathArraysMixin(ScorerState):
    """``fit_arrays``, ``component_scores`` and ``calibrate_arrays`` of the scorer."""

    if TYPE_CHECKING:
        def _fit_paths(self, ids: np.ndarray, dist: np.ndarray, y: np.ndarray,
                       n_clusters: Sequence[int], classes: Sequence[int],
                       layers: Sequence[str],
                       nearest: tuple[np.ndarray, np.ndarray] | None) -> None: ...

    def fit_arrays(self, cluster_ids: Any, distances: Any, labels: Any, *,
                   n_clusters: Sequence[int] | None = None,
                   classes: Sequence[int] | None = None, layers: Sequence[str] | None = None,
                   nearest: tuple[Any, Any] | None = None) -> Any:
        """Fit the path components from training signatures given as arrays.

        Only the path components exist then, combined by their mean rank on the
        training samples scored leave-one-out; :meth:`score` and
        :meth:`calibrate` need :meth:`fit`.

        Parameters
        ----------
        cluster_ids, distances : array-like (n, L)
            Of the correctly classified training samples.
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
            clusters; without them ``class_margin`` is left out.
        """
        validate_params(self, self._nnsig_constraints)
        ids = np.asarray(cluster_ids, dtype=np.int64)
        dist = np.asarray(distances, dtype=np.float64)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        if ids.ndim != 2 or dist.shape != ids.shape or y.size != ids.shape[0] or ids.size == 0:
            raise ValueError("cluster_ids and distances must be (n, L) with n >= 1, labels (n,).")
        if (y < 0).any():
            raise MissingLabelsError("Every training sample needs a label.")
        L = ids.shape[1]
        layers = [str(j) for j in range(L)] if layers is None else list(layers)
        if n_clusters is None:
            n_clusters = (ids.max(axis=0) + 1).tolist()
        if len(n_clusters) != L or len(layers) != L:
            raise ValueError(f"n_clusters and layers need one entry per layer ({L}).")
        known = [int(c) for c in (np.unique(y) if classes is None else classes)]
        self.owners_ = cluster_owners(ids, y, n_clusters)
        near = (None if nearest is None else
                (np.asarray(nearest[0], np.float64), np.asarray(nearest[1], np.float64)))
        self._fit_paths(ids, dist, y, n_clusters, known, layers, near)
        comps = list(self.components) if self.components is not None else list(PATH_SCORES)
        bad = [c for c in comps if c in NEIGHBOUR_SCORES]
        if bad:
            raise ValueError(f"{bad} need the layers' activations: use fit(analysis, store).")
        if nearest is None and "class_margin" in comps:
            if self.components is not None:
                raise ValueError("class_margin needs the nearest-centroid distances (nearest=).")
            comps.remove("class_margin")
        self.components_ = comps
        self.reference_ = self.stats_.scores(ids, dist, y, loo=True, nearest=near)
        self.combiner_ = ScoreCombiner(method="rank", components=self.components_).fit(
            self.reference_)
        self.neighbours_ = self.layer_combiner_ = self.analysis_ = None
        self.n_misclassified_ = None
        return self

    def component_scores(self, cluster_ids: Any, distances: Any, predictions: Any, *,
                         loo: bool = False,
                         nearest: tuple[Any, Any] | None = None) -> dict[str, np.ndarray]:
        """The path components of samples given their signatures (``PathStatistics.scores``)."""
        self._check_fitted()
        return self.stats_.scores(cluster_ids, distances, predictions, loo=loo, nearest=nearest)

    def calibrate_arrays(self, cluster_ids: Any, distances: Any, labels: Any, predictions: Any, *,
                         method: str | None = None,
                         nearest: tuple[Any, Any] | None = None) -> Any:
        """Tune the combination of the path components on validation signatures given as arrays
        (after :meth:`fit_arrays`); :class:`NovelClassError` unless every label is known."""
        self._check_fitted()
        check_known_labels(labels, self.classes_, "validation")
        comp = self.stats_.scores(cluster_ids, distances, predictions, nearest=nearest)
        m = method or (self.method if self.method != "layers" else "rank")
        self.combiner_ = ScoreCombiner(method=m, components=self.components_).fit(
            {c: comp[c] for c in self.components_}, labels, predictions, self.classes_)
        self.validation_split_ = "(arrays)"
        return self

