"""Combine several suspicion scores into one, tuned on error detection of known classes only.

:class:`LayerCombiner` forms the default ``combined`` score from each layer's
neighbour components; :class:`ScoreCombiner` combines the path components.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import NnsigParamsMixin
from nnsig_core._warnings import warn
from nnsig_core.analysis.errors import AnalysisError, MissingLabelsError
from nnsig_core.diagnostics.metrics import auroc

METHODS = ("rank", "logistic")
_MAX_SUBSET_COMPONENTS = 12


class NovelClassError(AnalysisError):
    """Tuning data holds labels of classes the analysis was not fitted on (or unknown labels)."""


def check_known_labels(labels: Any, known_classes: Iterable[int], what: str = "validation",
                       fit_labels: Any = None) -> np.ndarray:
    """``labels`` as int64; MissingLabelsError if one is -1, NovelClassError if one is not known
    (``fit_labels``, the fit split's labels: a class among them that the analysis left out is
    named as such)."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    known = sorted({int(c) for c in known_classes})
    if y.size == 0:
        raise MissingLabelsError(f"The {what} data is empty.")
    if (y < 0).any():
        raise MissingLabelsError(
            f"{int((y < 0).sum())} {what} sample(s) have no label: the combined score is tuned on "
            "error detection of known classes only, which needs every label. Use a labelled split.")
    novel = sorted(set(np.unique(y).tolist()) - set(known))
    dropped = sorted(set(novel) & set(np.unique(np.asarray(fit_labels)).tolist())
                     ) if fit_labels is not None else []
    if dropped:
        raise NovelClassError(
            f"The {what} data holds classes {dropped} that the fit split has but the analysis "
            f"left out (fitted classes: {known}): the model classifies none of their fit "
            "samples correctly, and the analysis fits on correct samples only. Fit it on every "
            "sample (SignatureAnalysis(only_correct=False), nnsig analyze --all-samples), or "
            f"leave classes {dropped} out of the {what}.")
    if novel:
        raise NovelClassError(
            f"The {what} data holds classes {novel} that the analysis was not fitted on "
            f"(fitted classes: {known}). Scores must never be tuned on novel classes: hold out "
            "a validation split of known classes only (e.g. part of the training classes' data).")
    return y


def ecdf_ranks(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of ``values`` against the sorted ``reference``: in [0, 1]."""
    ref = np.asarray(reference, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    lo = np.searchsorted(ref, v, side="left")
    hi = np.searchsorted(ref, v, side="right")
    return (lo + hi) / (2.0 * max(ref.size, 1))


class ScoreCombiner(NnsigParamsMixin, BaseEstimator):
    """Component scores on a common scale fitted on a reference set, averaged with weights.

    ``method="rank"`` maps each component to its mid-rank empirical CDF on the
    reference and averages them with 0/1 weights: all ones untuned, else the
    non-empty subset with the best tuning AUROC (ties: the larger subset).
    ``method="logistic"`` standardises each component on the reference and
    weighs them by an L2-regularised, class-balanced logistic regression.
    The target is always error detection on labels of known classes only
    (:class:`NovelClassError` otherwise).

    Parameters
    ----------
    method : {"rank", "logistic"}
    components : sequence of str or None
        Components to combine (default: every key of the reference scores).
    C : float
        Inverse regularisation strength of the logistic method.

    Attributes
    ----------
    components_ : list of str
    weights_ : ndarray
        One weight per component.
    tuned_ : bool
        Whether the weights were chosen on a target (else all equal).
    tuning_auroc_ : float or None
        AUROC of the combination for the target on the reference samples.
    """

    def __init__(self, *, method: str = "rank", components: Sequence[str] | None = None,
                 C: float = 1.0) -> None:
        self.method = method
        self.components = components
        self.C = C

    def fit(self, reference: Mapping[str, Any], labels: Any = None, predictions: Any = None,
            known_classes: Iterable[int] | None = None) -> ScoreCombiner:
        """Fit the scales on ``reference`` scores; tune the weights when labels are given.

        Parameters
        ----------
        reference : mapping of str to array-like (n,)
            Component scores of the reference samples.
        labels, predictions : array-like of int (n,), optional
            When given, the weights are tuned to detect ``labels != predictions``.
        known_classes : iterable of int
            Required with ``labels``, which must all be among them.
        """
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}.")
        comps = list(self.components) if self.components is not None else list(reference)
        missing = [c for c in comps if c not in reference]
        if missing or not comps:
            raise ValueError(f"Reference scores lack component(s) {missing or '(none given)'}.")
        R = np.column_stack([np.asarray(reference[c], dtype=np.float64).reshape(-1) for c in comps])
        if R.shape[0] == 0:
            raise ValueError("The reference set is empty.")
        self.components_ = comps
        self.sorted_reference_ = [np.sort(R[:, j]) for j in range(R.shape[1])]
        self.mean_ = R.mean(axis=0)
        sd = R.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        self.tuned_ = labels is not None
        self.tuning_auroc_ = None
        target = None
        if labels is not None:
            if known_classes is None or predictions is None:
                raise ValueError("Tuning needs labels, predictions and known_classes together.")
            y = check_known_labels(labels, known_classes, "tuning")
            p = np.asarray(predictions, dtype=np.int64).reshape(-1)
            if y.size != R.shape[0] or p.size != R.shape[0]:
                raise ValueError("labels/predictions do not match the reference scores' length.")
            target = y != p
            if target.all() or not target.any():
                raise ValueError("Cannot tune on error detection: the tuning samples are all "
                                 f"{'misclassified' if target.all() else 'correctly classified'}.")
        if self.method == "logistic":
            if target is None:
                raise ValueError("method='logistic' needs a target: pass labels, predictions "
                                 "and known_classes (a validation split).")
            Z = (R - self.mean_) / self.scale_
            lr = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000)
            lr.fit(Z, target)
            self.weights_ = lr.coef_[0].astype(np.float64)
        else:
            self.weights_ = np.ones(len(comps))
            if target is not None:
                self.weights_ = self._best_subset(self._ranks(R), target)
        if target is not None:
            self.tuning_auroc_ = float(auroc(target, self._combine(R)))
        return self

    @staticmethod
    def _best_subset(F: np.ndarray, target: np.ndarray) -> np.ndarray:
        m = F.shape[1]
        if m > _MAX_SUBSET_COMPONENTS:
            raise ValueError(f"Subset search over {m} components is too large "
                             f"(at most {_MAX_SUBSET_COMPONENTS}).")
        best, best_w = -np.inf, np.ones(m)
        for size in range(1, m + 1):
            for subset in itertools.combinations(range(m), size):
                w = np.zeros(m)
                w[list(subset)] = 1.0
                auc = auroc(target, F @ w)
                if auc >= best - 1e-12:
                    best, best_w = auc, w
        return best_w

    def _ranks(self, R: np.ndarray) -> np.ndarray:
        return np.column_stack([ecdf_ranks(ref, R[:, j])
                                for j, ref in enumerate(self.sorted_reference_)])

    def _combine(self, R: np.ndarray) -> np.ndarray:
        if self.method == "logistic":
            return ((R - self.mean_) / self.scale_) @ self.weights_
        return self._ranks(R) @ self.weights_ / max(self.weights_.sum(), 1e-12)

    def transform(self, scores: Mapping[str, Any]) -> np.ndarray:
        """The combined score (higher = more suspicious) of samples' component ``scores``."""
        check_is_fitted(self, "weights_", msg="ScoreCombiner is not fitted; call fit first.")
        missing = [c for c in self.components_ if c not in scores]
        if missing:
            raise ValueError(f"Scores lack component(s) {missing}.")
        R = np.column_stack([np.asarray(scores[c], dtype=np.float64).reshape(-1)
                             for c in self.components_])
        return self._combine(R)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (method, components, weights, tuning)."""
        return {
            "method": self.method,
            "components": list(self.components_),
            "weights": [float(w) for w in self.weights_],
            "tuned": bool(self.tuned_),
            "tuning_auroc": self.tuning_auroc_,
        }


class LayerCombiner(NnsigParamsMixin, BaseEstimator):
    r"""The default ``combined`` score (see docs/design.md, "Diagnostics").

    Each layer's distance and margin are standardised on a reference set,
    :math:`z_{l,t} = (s_{l,t} - \mu_{l,t}) / \sigma_{l,t}`, and
    :math:`M_l = \max_{\text{ref}} z_{l,\text{distance}}`. Then

    .. math::

        \text{combined} = \frac{1}{2|S|} \sum_{l \in S} (z_{l,\text{distance}} +
        z_{l,\text{margin}}) + \log\Bigl(1 + \sum_{l} \max(0, z_{l,\text{distance}} - M_l)\Bigr)

    with :math:`S` (``selected_``) the non-empty subset of layers that best detects the
    tuning target (ties: the larger subset; every layer without a target or
    ``select_layers``; forward selection beyond ``max_exhaustive`` layers). ``guard``
    adds the second term.
    """

    COMPONENTS = ("distance", "margin")

    def __init__(self, *, select_layers: bool = True, guard: bool = True,
                 max_exhaustive: int = 10) -> None:
        self.select_layers = select_layers
        self.guard = guard
        self.max_exhaustive = max_exhaustive

    @classmethod
    def _matrix(cls, scores: Mapping[str, Mapping[str, Any]], layers: Sequence[str]) -> np.ndarray:
        """``(n, L, 2)``: the components of ``scores[layer][component]``."""
        try:
            cols = [[np.asarray(scores[lay][t], dtype=np.float64).reshape(-1)
                     for t in cls.COMPONENTS] for lay in layers]
        except KeyError as exc:
            raise ValueError(f"Layer scores lack {exc.args[0]!r}: every layer needs "
                             f"{list(cls.COMPONENTS)}.") from None
        return np.stack([np.stack(c, axis=1) for c in cols], axis=1)

    def fit(self, reference: Mapping[str, Mapping[str, Any]],
            tuning: Mapping[str, Mapping[str, Any]] | None = None,
            target: Any = None) -> LayerCombiner:
        """Standardise on ``reference`` (``{layer: {"distance": (n,), "margin": (n,)}}``); choose
        the layers on ``tuning`` (the same form) to detect ``target`` (m,) bool."""
        self.layers_ = list(reference)
        if not self.layers_:
            raise ValueError("The reference holds no layer.")
        R = self._matrix(reference, self.layers_)
        finite = np.isfinite(R).all(axis=(1, 2))
        if not finite.all():
            warn(f"{int((~finite).sum())} of {R.shape[0]} reference samples have no finite "
                 "neighbour score (their class has no other training sample to be their "
                 "neighbour); they are left out of the reference.")
            R = R[finite]
        if R.shape[0] < 2:
            raise ValueError(f"The reference set has {R.shape[0]} sample(s) with finite scores; "
                             "at least 2 are needed to standardise the scores.")
        mu, sd = R.mean(axis=0), R.std(axis=0)
        # A layer whose components do not vary over the reference says nothing: it is dropped.
        self._usable = (sd > 0).all(axis=1)
        if not self._usable.any():
            raise ValueError("Every layer's neighbour components are constant over the "
                             "reference samples: nothing to combine. A reference of one class "
                             "(the fit split's correctly classified samples: is the model "
                             "trained?) has no margin to another class; constant layers have "
                             "no distances.")
        if not self._usable.all():
            warn(f"Layer(s) {[n for n, u in zip(self.layers_, self._usable, strict=True) if not u]}"
                 " have constant neighbour components over the reference samples: the "
                 "combined score leaves them out.")
        sd = np.where(sd > 0, sd, 1.0)
        self._mu, self._sd = mu, sd
        self._range = np.where(self._usable, ((R[:, :, 0] - mu[:, 0]) / sd[:, 0]).max(axis=0),
                               np.inf)
        self.mean_, self.scale_ = self._per_component(mu), self._per_component(sd)
        self.range_ = {lay: float(m) for lay, m in zip(self.layers_, self._range, strict=True)}
        self.n_reference_ = int(R.shape[0])
        self.tuned_, self.tuning_auroc_ = False, None
        chosen = self._usable.copy()
        if tuning is not None and target is not None and self.select_layers:
            T = self._z(self._matrix(tuning, self.layers_))[:, self._usable]
            y = np.asarray(target, dtype=bool).reshape(-1)
            if y.size != T.shape[0]:
                raise ValueError(f"target has {y.size} values for {T.shape[0]} tuning samples.")
            rows = np.isfinite(T).all(axis=(1, 2))
            T, y = T[rows], y[rows]
            if y.all() or not y.any():
                raise ValueError("Cannot choose layers: the tuning samples are all "
                                 f"{'positives' if y.all() else 'negatives'}.")
            chosen[self._usable], self.tuning_auroc_ = self._choose(T.mean(axis=2), y)
            self.tuned_ = True
        self._chosen = chosen
        self.selected_ = [lay for lay, c in zip(self.layers_, chosen, strict=True) if c]
        return self

    def _per_component(self, a: np.ndarray) -> dict[tuple[str, str], float]:
        return {(lay, t): float(a[i, j]) for i, lay in enumerate(self.layers_)
                for j, t in enumerate(self.COMPONENTS)}

    def _z(self, X: np.ndarray) -> np.ndarray:
        return (X - self._mu) / self._sd

    def _choose(self, P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """The subset of layers (columns of ``P``, per-layer mean z) with the best AUROC."""
        L = P.shape[1]
        best, best_mask = -np.inf, np.ones(L, dtype=bool)
        if L <= self.max_exhaustive:
            for size in range(1, L + 1):
                for subset in itertools.combinations(range(L), size):
                    auc = auroc(y, P[:, list(subset)].mean(axis=1))
                    if auc >= best - 1e-12:
                        best, best_mask = auc, np.isin(np.arange(L), subset)
            return best_mask, float(best)
        mask = np.zeros(L, dtype=bool)
        while not mask.all():
            gains = [(auroc(y, P[:, mask | (np.arange(L) == j)].mean(axis=1)), j)
                     for j in np.flatnonzero(~mask)]
            auc, j = max(gains)
            if auc < best - 1e-12:
                break
            best, mask[j] = auc, True
        return mask, float(best)

    def transform(self, scores: Mapping[str, Mapping[str, Any]], *,
                  layers: Sequence[str] | None = None) -> np.ndarray:
        """The combined score (higher = more suspicious) of samples' per-layer components.

        ``layers`` overrides the chosen layers :math:`S` (e.g. to compare choices).
        """
        Z = self.standardised(scores)
        chosen = self._chosen
        if layers is not None:
            unknown = sorted(set(layers) - set(self.layers_))
            if unknown or not layers:
                raise ValueError(f"layers must be a non-empty subset of {self.layers_}; got "
                                 f"{list(layers)}.")
            chosen = np.isin(self.layers_, list(layers))
        out = Z[:, chosen & self._usable, :].mean(axis=(1, 2))
        if self.guard:  # the range of a dropped layer is +inf: it adds nothing
            out = out + np.log1p(np.maximum(Z[:, :, 0] - self._range, 0.0).sum(axis=1))
        return out

    def standardised(self, scores: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
        """``(n, L, 2)``: the standardised components :math:`z_{l,t}`."""
        check_is_fitted(self, "selected_", msg="LayerCombiner is not fitted; call fit first.")
        return self._z(self._matrix(scores, self.layers_))

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (layers chosen, reference statistics)."""
        return {
            "method": "layers",
            "layers": list(self.layers_),
            "selected": list(self.selected_),
            "guard": bool(self.guard),
            "tuned": bool(self.tuned_),
            "tuning_auroc": self.tuning_auroc_,
            "n_reference": self.n_reference_,
            "mean": {f"{lay}/{t}": v for (lay, t), v in self.mean_.items()},
            "scale": {f"{lay}/{t}": v for (lay, t), v in self.scale_.items()},
            "range": dict(self.range_),
        }
