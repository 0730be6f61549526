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
import zarr

from nnsig_core._warnings import warn
from nnsig_core.execute.blocks import reduce_columns
from nnsig_core.store import ActivationStore

log = logging.getLogger("nnsig")

#: Share of the reference split's correct samples the default threshold flags.
FLAG_RATE = 0.05
#: The histogram's groups of samples, in order (:func:`sample_groups`).
GROUPS = ("correct", "misclassified", "unseen", "unlabelled")
#: Split names taken as the validation split, in this order.
VALIDATION_SPLITS = ("val", "validation")


def _f(x: Any, digits: int = 6) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


def check_scores(
    scores: Mapping[str, Any] | None, store: ActivationStore, lazy: bool = False
) -> dict[str, Any]:
    """The scores as float64 arrays, one value per sample of each split, in store order.

    Splits that are not in the store are an error (a typo would otherwise
    silently drop them); so is a wrong length. With ``lazy`` (signatures on a
    Dask cluster), dask arrays and zarr arrays stay where they are, as dask
    arrays: only their length is checked here.
    """
    out: dict[str, Any] = {}
    for s, values in (scores or {}).items():
        if s not in store.splits:
            raise ValueError(
                f"scores given for split {s!r}, which is not in the store "
                f"(splits: {', '.join(store.splits)})."
            )
        if lazy and (hasattr(values, "dask") or isinstance(values, zarr.Array)):
            from nnsig_core.execute.dask_blocks import as_dask

            arr = as_dask(values).reshape(-1).astype(np.float64)
        else:
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
        n = store.n_samples(s)
        if arr.shape[0] != n:
            raise ValueError(
                f"scores[{s!r}] has {arr.shape[0]} values but split {s!r} has {n} samples; "
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
    client: Any = None,
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
    client : dask.distributed.Client, optional
        The cluster of dask score arrays (the count and the largest scores are
        reductions there).

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
    n, top = reference_top(scores[ref], store, ref, train_classes, rate, client)
    if n == 0:
        warn(f"No default score threshold: split {ref!r} has no correct sample with a "
             "finite score.")
        return None
    t = threshold_from_top(top, n, rate)
    return {"value": t, "split": ref, "rate": float(rate), "n_correct": int(n)}


def _flagged_max(n: int, rate: float) -> int:
    """How many of ``n`` values a threshold at ``rate`` may flag."""
    return int(np.floor(rate * n + 1e-9))


def correct_top_part(labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray, *,
                     train_classes: Sequence[int], m: int, lo: int = 0) -> dict[str, Any]:
    """A block's number ``n`` of correct samples with a finite score, and the ``m`` largest
    of those scores (ascending)."""
    values = _correct_values(labels, predictions, scores, train_classes)
    return {"n": np.int64(values.size), "top": np.sort(values)[-m:]}


def merge_tops(*parts: dict[str, Any], m: int) -> dict[str, Any]:
    """Merge several :func:`correct_top_part` results."""
    return {"n": np.int64(sum(int(p["n"]) for p in parts)),
            "top": np.sort(np.concatenate([p["top"] for p in parts]))[-m:]}


def _correct_values(labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray,
                    train_classes: Sequence[int]) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)[
        sample_groups(np.asarray(labels), np.asarray(predictions), train_classes)["correct"]]
    return values[np.isfinite(values)]


def reference_top(values: Any, store: ActivationStore, split: str,
                  train_classes: Sequence[int], rate: float,
                  client: Any = None) -> tuple[int, np.ndarray]:
    """The number of correct samples of ``split`` with a finite score, and the
    ``floor(rate * n) + 1`` largest of their scores (ascending): all a threshold needs.
    ``values`` is a NumPy array, or a dask array reduced on its cluster."""
    cols = (store_column(store, split, "labels", values),
            store_column(store, split, "predictions", values), values)
    # One pass: n is at most the split's size, so its top floor(rate * n) + 1 are among these.
    m = _flagged_max(store.n_samples(split), rate) + 1
    got = reduce_columns(correct_top_part, merge_tops, cols, train_classes=train_classes, m=m,
                         merge_kw={"m": m}, client=client)
    n = int(got["n"])
    return n, np.asarray(got["top"], dtype=np.float64)[-(_flagged_max(n, rate) + 1):]


def store_column(store: ActivationStore, split: str, name: str, like: Any) -> Any:
    """``labels`` or ``predictions`` of ``split``: a NumPy array, or a dask array chunked like
    ``like`` when ``like`` is one."""
    if hasattr(like, "dask"):
        from nnsig_core.execute.dask_blocks import as_dask

        return as_dask(store.root[split][name], like.chunks[0])[: like.shape[0]]
    return store.labels(split) if name == "labels" else store.predictions(split)


def threshold_from_top(top: np.ndarray, n: int, rate: float) -> float:
    """:func:`flagging_threshold` of ``n`` values from their ``floor(rate * n) + 1`` largest
    (ascending)."""
    f = _flagged_max(n, rate)
    if f == 0:
        return float(np.nextafter(top[-1], np.inf))
    if f >= n:  # every value may be flagged: the smallest
        return float(top[0])
    t = top[1]  # the value at position n - f of all of them, sorted
    if top[0] == t:  # ties straddle the limit: the next distinct value
        above = top[top > t]
        return float(above[0]) if above.size else float(np.nextafter(t, np.inf))
    return float(t)


def flagging_threshold(values: np.ndarray, rate: float) -> float:
    """The smallest score ``t`` with at most ``floor(rate * n)`` of ``values`` at or above it."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    return threshold_from_top(v[max(v.size - _flagged_max(v.size, rate) - 1, 0) :], v.size, rate)


def score_edges(score_arrays: Mapping[str, Any], n_bins: int,
                extra: Sequence[float] = (), client: Any = None) -> list[float] | None:
    """Histogram edges over [0, 1] when every score lies there, else over their range (the
    arrays are NumPy arrays, or dask arrays reduced on their cluster)."""
    ranges = [reduce_columns(range_part, None, (a,), client=client)
              for a in score_arrays.values()]
    lo = min([float(r["score_min"]) for r in ranges], default=np.inf)
    hi = max([float(r["score_max"]) for r in ranges], default=-np.inf)
    if not np.isfinite(lo):
        return None
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


def range_part(scores: np.ndarray, lo: int = 0) -> dict[str, Any]:
    """A block's smallest and largest finite score (``inf``/``-inf`` when none)."""
    v = np.asarray(scores, dtype=np.float64)
    v = v[np.isfinite(v)]
    return {"score_min": np.float64(v.min() if v.size else np.inf),
            "score_max": np.float64(v.max() if v.size else -np.inf)}


def histogram_part(labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray, *,
                   bins: Sequence[float], train_classes: Sequence[int],
                   threshold: float | None, lo: int = 0) -> dict[str, Any]:
    """A block's histogram counts per group (:data:`GROUPS` order), the group sizes, the
    finite scores and the flagged samples per group; summed over blocks."""
    scores = np.asarray(scores, dtype=np.float64)
    groups = sample_groups(np.asarray(labels), np.asarray(predictions), train_classes)
    ok = np.isfinite(scores)
    flagged = flagged_counts(groups, scores, threshold) if threshold is not None else {}
    return {
        "hist": np.array([np.histogram(scores[groups[g] & ok], bins=bins)[0] for g in GROUPS],
                         dtype=np.int64),
        "size": np.array([int(groups[g].sum()) for g in GROUPS], dtype=np.int64),
        "finite": np.array([int((groups[g] & ok).sum()) for g in GROUPS], dtype=np.int64),
        "flagged": np.array([flagged.get(g, 0) for g in GROUPS], dtype=np.int64),
    }


def histogram_entry(part: Mapping[str, Any], bins: list[float], name: str,
                    threshold: float | None) -> dict[str, Any]:
    """A split's ``scores`` entry of the report data (``docs/report-data.md``) from the sum of
    its blocks' :func:`histogram_part`."""
    shown = [i for i, g in enumerate(GROUPS) if g != "unlabelled" or part["size"][i] > 0]
    out: dict[str, Any] = {"name": name, "bins": [_f(b) for b in bins],
                           "counts": {GROUPS[i]: [int(x) for x in part["hist"][i]]
                                      for i in shown}}
    if threshold is not None:
        out["at_threshold"] = {"flagged": {GROUPS[i]: int(part["flagged"][i]) for i in shown},
                               "total": {GROUPS[i]: int(part["finite"][i]) for i in shown}}
    return out


def score_histogram(
    labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray, bins: list[float],
    train_classes: Sequence[int], name: str, threshold: float | None, client: Any = None,
) -> dict[str, Any]:
    """A split's ``scores`` entry of the report data (``docs/report-data.md``); the arrays
    are NumPy arrays, or dask arrays reduced on their cluster (``client``)."""
    part = reduce_columns(histogram_part, None, (labels, predictions, scores), bins=bins,
                          train_classes=train_classes, threshold=threshold, client=client)
    return histogram_entry(part, bins, name, threshold)
