"""Diagnostic scores in the report: checks, histograms and the default threshold.

The report shows one per-sample score (the combined signature score by
default) as a histogram per split, split into correct, misclassified,
unseen-class and unlabelled samples. Its default threshold flags
:data:`FLAG_RATE` (5%) of the *correct* samples of a reference split: the
split named ``val`` or ``validation`` when it was scored, else the split the
analysis was fitted on. The test split's rates at that threshold are then
held-out rates, not rates tuned on the split they are read from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core.store import ActivationStore

__all__ = [
    "FLAG_RATE",
    "VALIDATION_SPLITS",
    "check_scores",
    "default_threshold",
    "flagged_counts",
    "flagging_threshold",
    "sample_groups",
    "score_edges",
    "score_histogram",
]

log = logging.getLogger("nnsig")

#: Share of the reference split's correct samples the default threshold flags.
FLAG_RATE = 0.05
#: Split names taken as the validation split, in this order.
VALIDATION_SPLITS = ("val", "validation")


def _f(x: Any, digits: int = 6) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


def check_scores(
    scores: Mapping[str, Any] | None, store: ActivationStore
) -> dict[str, np.ndarray]:
    """The scores as float64 arrays, one value per sample of each split, in store order.

    Splits that are not in the store are an error (a typo would otherwise
    silently drop them); so is a wrong length.
    """
    out: dict[str, np.ndarray] = {}
    for s, values in (scores or {}).items():
        if s not in store.splits:
            raise ValueError(
                f"scores given for split {s!r}, which is not in the store "
                f"(splits: {', '.join(store.splits)})."
            )
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        n = store.n_samples(s)
        if arr.size != n:
            raise ValueError(
                f"scores[{s!r}] has {arr.size} values but split {s!r} has {n} samples; "
                "give one score per sample, in store order."
            )
        out[s] = arr
    return out


def sample_groups(
    labels: np.ndarray, predictions: np.ndarray, train_classes: Sequence[int]
) -> dict[str, np.ndarray]:
    """Boolean masks of the histogram's groups: correct, misclassified, unseen, unlabelled.

    A sample with label -1 (unknown) is *unlabelled*: neither correct nor
    misclassified. A labelled sample of a class the analysis was not fitted
    on is *unseen*, right or wrong.
    """
    lab = labels >= 0
    seen = np.isin(labels, np.asarray(list(train_classes), dtype=np.int64))
    return {
        "correct": lab & seen & (labels == predictions),
        "misclassified": lab & seen & (labels != predictions),
        "unseen": lab & ~seen,
        "unlabelled": ~lab,
    }


def default_threshold(
    scores: Mapping[str, np.ndarray],
    store: ActivationStore,
    fit_split: str,
    train_classes: Sequence[int],
    rate: float = FLAG_RATE,
) -> dict[str, Any] | None:
    """The score at or above which ``rate`` of the reference split's correct samples lie.

    Parameters
    ----------
    scores : mapping of split to array
        Checked scores (:func:`check_scores`).
    store : ActivationStore
    fit_split : str
        The analysis's fit split, the reference when no validation split was scored.
    train_classes : sequence of int
    rate : float

    Returns
    -------
    dict or None
        ``{"value", "split", "rate", "n_correct"}``; ``None`` when neither a
        validation split nor the fit split was scored, or the reference split
        has no correct sample with a finite score.
    """
    ref = next((s for s in VALIDATION_SPLITS if s in scores), None)
    if ref is None and fit_split in scores:
        ref = fit_split
    if ref is None:
        if scores:
            log.info("No default score threshold: neither a validation split (%s) nor the fit "
                     "split %r was scored.", "/".join(VALIDATION_SPLITS), fit_split)
        return None
    groups = sample_groups(store.labels(ref), store.predictions(ref), train_classes)
    values = scores[ref][groups["correct"]]
    values = values[np.isfinite(values)]
    if values.size == 0:
        log.warning("No default score threshold: split %r has no correct sample with a "
                    "finite score.", ref)
        return None
    t = flagging_threshold(values, rate)
    return {"value": t, "split": ref, "rate": float(rate), "n_correct": int(values.size)}


def flagging_threshold(values: np.ndarray, rate: float) -> float:
    """The smallest score ``t`` with at most ``floor(rate * n)`` of ``values`` at or above it."""
    v = np.sort(values)
    n = v.size
    k = n - int(np.floor(rate * n + 1e-9))  # the first position allowed to be flagged
    if k >= n:
        return float(np.nextafter(v[-1], np.inf))
    t = v[k]
    if np.searchsorted(v, t, side="left") < k:  # ties straddle k: the next distinct value
        j = int(np.searchsorted(v, t, side="right"))
        return float(v[j]) if j < n else float(np.nextafter(t, np.inf))
    return float(t)


def score_edges(score_arrays: Mapping[str, np.ndarray], n_bins: int,
                extra: Sequence[float] = ()) -> list[float] | None:
    """Histogram edges over [0, 1] when every score lies there, else over their range."""
    finite = [a[np.isfinite(a)] for a in score_arrays.values()]
    finite = [a for a in finite if a.size]
    if not finite:
        return None
    lo = min(float(a.min()) for a in finite)
    hi = max(float(a.max()) for a in finite)
    for x in extra:
        if np.isfinite(x):
            lo, hi = min(lo, float(x)), max(hi, float(x))
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif hi <= lo:
        hi = lo + 1.0
    return [float(x) for x in np.linspace(lo, hi, max(1, int(n_bins)) + 1)]


def flagged_counts(groups: Mapping[str, np.ndarray], scores: np.ndarray,
                   threshold: float) -> dict[str, int]:
    """Per group, the samples whose (finite) score is at or above ``threshold``."""
    with np.errstate(invalid="ignore"):
        flag = np.isfinite(scores) & (scores >= threshold)
    return {g: int((m & flag).sum()) for g, m in groups.items()}


def score_histogram(
    labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray, bins: list[float],
    train_classes: Sequence[int], name: str, threshold: float | None,
) -> dict[str, Any]:
    """A split's ``scores`` entry of the report data (``docs/report-data.md``)."""
    groups = sample_groups(labels, predictions, train_classes)
    ok = np.isfinite(scores)
    counts = {g: [int(x) for x in np.histogram(scores[m & ok], bins=bins)[0]]
              for g, m in groups.items() if g != "unlabelled" or m.any()}
    out: dict[str, Any] = {"name": name, "bins": [_f(b) for b in bins], "counts": counts}
    if threshold is not None:
        totals = {g: int((m & ok).sum()) for g, m in groups.items() if g in counts}
        flagged = flagged_counts({g: groups[g] for g in counts}, scores, threshold)
        out["at_threshold"] = {"flagged": flagged, "total": totals}
    return out
