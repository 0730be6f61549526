"""Split-conformal thresholds and p-values: a false-positive rate with a guarantee.

A new correctly classified input exchangeable with the ``n`` calibration samples
scores above the threshold at ``alpha`` with probability in
``[alpha - 1 / (n + 1), alpha]`` (Vovk et al., 2005; Angelopoulos & Bates, 2021,
sec. 1.1); see docs/design.md, "The scoring workflow".
"""

from __future__ import annotations

import math

import numpy as np


def _calibration(scores: np.ndarray) -> np.ndarray:
    v = np.asarray(scores, dtype=np.float64).reshape(-1)
    return np.sort(v[np.isfinite(v)])


def conformal_threshold(calibration_scores: np.ndarray, alpha: float) -> float:
    """The split-conformal threshold at false-positive rate ``alpha``: flag a score above it.

    The ``ceil((n + 1)(1 - alpha))``-th smallest of the ``n`` finite calibration scores,
    or ``inf`` (nothing flagged) when ``n < 1 / alpha - 1``.
    """
    if not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha!r}.")
    v = _calibration(calibration_scores)
    if v.size == 0:
        raise ValueError("No finite calibration score: the calibration split has no correctly "
                         "classified sample with a score.")
    k = math.ceil((v.size + 1) * (1 - float(alpha)) - 1e-12)
    return float("inf") if k > v.size else float(v[k - 1])


def conformal_p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Conformal p-values of ``scores``: ``(1 + #{calibration >= s}) / (n + 1)``; NaN where a
    score is not finite. Lower is more suspicious."""
    cal = _calibration(calibration_scores)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    at_least = cal.size - np.searchsorted(cal, s, side="left")
    p = (1.0 + at_least) / (cal.size + 1.0)
    return np.where(np.isfinite(s), p, np.nan)


def false_positive_spread(n: int, alpha: float, n_test: int) -> tuple[float, float]:
    """Mean and sd of the false-positive rate of the threshold at ``alpha`` on ``n_test`` samples,
    over random calibration sets of ``n`` (a Beta-binomial proportion)."""
    k = math.ceil((n + 1) * (1 - float(alpha)) - 1e-12)
    if k > n:
        return 0.0, 0.0
    a, b = n + 1 - k, k
    mean = a / (a + b)
    beta_var = a * b / ((a + b) ** 2 * (a + b + 1))
    var = mean * (1 - mean) / n_test + beta_var * (1 - 1 / n_test)
    return mean, math.sqrt(var)
