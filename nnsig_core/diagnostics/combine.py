"""Combine several suspicion scores into one, tuned on the error-detection task of known classes.

:class:`ScoreCombiner` turns each component score into a common scale fitted
on a *reference* set of samples, then averages them with weights.

``method="rank"`` (default)
    Each component ``s_j`` is mapped to its mid-rank empirical CDF on the
    reference samples, ``F_j(s) = (#{r < s} + #{r <= s}) / (2 n_ref)``, and
    ``combined = sum_j w_j F_j(s_j) / sum_j w_j``. Without a tuning target all
    ``w_j = 1``; with one, ``w`` is the 0/1 vector (a non-empty subset of the
    components, equal weights) whose combination has the highest AUROC for
    the target on the reference samples (ties: the larger subset).
``method="logistic"``
    Each component is standardised with the reference mean and standard
    deviation, ``z_j = (s_j - m_j) / sd_j``, and ``combined = sum_j w_j z_j``
    with ``w`` the coefficients of an L2-regularised logistic regression
    (``C``, balanced class weights) of the target on ``z``.

The tuning target is always the *error-detection* task (misclassified vs
correctly classified) on samples whose labels are all among the known classes:
:meth:`ScoreCombiner.fit` takes labels, predictions and the known classes and
raises :class:`NovelClassError` if any label is not a known class, so a
combination can never be tuned on novel classes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from nnsig_core.analysis.errors import AnalysisError, MissingLabelsError

__all__ = ["NovelClassError", "ScoreCombiner", "check_known_labels", "ecdf_ranks"]

METHODS = ("rank", "logistic")
_MAX_SUBSET_COMPONENTS = 12


class NovelClassError(AnalysisError):
    """Tuning data holds labels of classes the analysis was not fitted on (or unknown labels)."""


def check_known_labels(labels: Any, known_classes: Iterable[int], what: str = "validation") -> np.ndarray:
    """Return ``labels`` as int64, raising unless every one is a known class.

    Raises
    ------
    MissingLabelsError
        Some label is unknown (-1): it cannot be shown to be a known class.
    NovelClassError
        Some label is not among ``known_classes``.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    known = sorted({int(c) for c in known_classes})
    if y.size == 0:
        raise MissingLabelsError(f"The {what} data is empty.")
    if (y < 0).any():
        raise MissingLabelsError(
            f"{int((y < 0).sum())} {what} sample(s) have no label: the combined score is tuned on "
            "error detection of known classes only, which needs every label. Use a labelled split."
        )
    novel = sorted(set(np.unique(y).tolist()) - set(known))
    if novel:
        raise NovelClassError(
            f"The {what} data holds classes {novel} that the analysis was not fitted on "
            f"(fitted classes: {known}). Scores must never be tuned on novel classes: hold out "
            "a validation split of known classes only (e.g. part of the training classes' data)."
        )
    return y


def ecdf_ranks(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of ``values`` against the sorted ``reference``: in [0, 1]."""
    ref = np.asarray(reference, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    lo = np.searchsorted(ref, v, side="left")
    hi = np.searchsorted(ref, v, side="right")
    return (lo + hi) / (2.0 * max(ref.size, 1))


class ScoreCombiner(BaseEstimator):
    """Fit-then-apply combination of component scores (see the module doc).

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

    def __init__(self, method: str = "rank", components: Sequence[str] | None = None,
                 C: float = 1.0) -> None:
        self.method = method
        self.components = components
        self.C = C

    def fit(
        self,
        reference: Mapping[str, Any],
        labels: Any = None,
        predictions: Any = None,
        known_classes: Iterable[int] | None = None,
    ) -> ScoreCombiner:
        """Fit the scales on ``reference`` scores; tune the weights when labels are given.

        Parameters
        ----------
        reference : mapping of str to array-like (n,)
            Component scores of the reference samples.
        labels, predictions : array-like of int (n,), optional
            The reference samples' labels and predicted classes: when given,
            the weights are tuned to detect ``labels != predictions``.
        known_classes : iterable of int
            Required with ``labels``: every label must be one of them
            (:class:`NovelClassError` otherwise).
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
                raise ValueError(
                    "Cannot tune on error detection: the tuning samples are all "
                    f"{'misclassified' if target.all() else 'correctly classified'}."
                )
        if self.method == "logistic":
            if target is None:
                raise ValueError("method='logistic' needs a target: pass labels, predictions "
                                 "and known_classes (a validation split).")
            Z = (R - self.mean_) / self.scale_
            lr = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000)
            lr.fit(Z, target)
            self.weights_ = lr.coef_[0].astype(np.float64)
        else:
            F = np.column_stack([ecdf_ranks(self.sorted_reference_[j], R[:, j])
                                 for j in range(R.shape[1])])
            self.weights_ = np.ones(len(comps))
            if target is not None:
                self.weights_ = self._best_subset(F, target)
        if target is not None:
            self.tuning_auroc_ = float(roc_auc_score(target, self._combine(R)))
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
                auc = roc_auc_score(target, F @ w)
                if auc >= best - 1e-12:
                    best, best_w = auc, w
        return best_w

    def _combine(self, R: np.ndarray) -> np.ndarray:
        if self.method == "logistic":
            return ((R - self.mean_) / self.scale_) @ self.weights_
        F = np.column_stack([ecdf_ranks(self.sorted_reference_[j], R[:, j])
                             for j in range(R.shape[1])])
        return F @ self.weights_ / max(self.weights_.sum(), 1e-12)

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
