"""Diagnostic scores in the report: checks and histograms (per split: correct, misclassified,
unseen-class and unlabelled samples); :mod:`~nnsig_core.report.run_scores` picks the scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from nnsig_core.execute.blocks import reduce_columns
from nnsig_core.store import ActivationStore

#: The histogram's groups of samples, in order (:func:`sample_groups`).
GROUPS = ("correct", "misclassified", "unseen", "unlabelled")


def rounded(x: Any, digits: int = 6) -> float | None:
    """A JSON float (None for NaN/None), rounded to keep the file small."""
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


def check_scores(scores: Mapping[str, Any] | None, store: ActivationStore,
                 lazy: bool = False) -> dict[str, Any]:
    """The scores as float64 arrays, one value per sample of each split, in store order; a
    split not in the store or a wrong length is an error. With ``lazy`` (signatures on a Dask
    cluster), dask and zarr arrays stay where they are, as dask arrays."""
    out: dict[str, Any] = {}
    for s, values in (scores or {}).items():
        if s not in store.splits:
            raise ValueError(f"scores given for split {s!r}, which is not in the store "
                             f"(splits: {', '.join(store.splits)}).")
        if lazy and (hasattr(values, "dask") or isinstance(values, zarr.Array)):
            from nnsig_core.execute.dask_blocks import as_dask

            arr = as_dask(values).reshape(-1).astype(np.float64)
        else:
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
        n = store.n_samples(s)
        if arr.shape[0] != n:
            raise ValueError(f"scores[{s!r}] has {arr.shape[0]} values but split {s!r} has {n} "
                             "samples; give one score per sample, in store order.")
        out[s] = arr
    return out


def sample_groups(labels: np.ndarray, predictions: np.ndarray,
                  train_classes: Sequence[int]) -> dict[str, np.ndarray]:
    """Boolean masks of the histogram's groups: correct, misclassified, *unseen* (labelled with
    a class the analysis was not fitted on) and *unlabelled* (label -1)."""
    lab = labels >= 0
    seen = np.isin(labels, np.asarray(list(train_classes), dtype=np.int64))
    return {"correct": lab & seen & (labels == predictions),
            "misclassified": lab & seen & (labels != predictions),
            "unseen": lab & ~seen, "unlabelled": ~lab}


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
    flagged = {}
    if threshold is not None:
        with np.errstate(invalid="ignore"):
            flag = ok & (scores >= threshold)
        flagged = {g: int((m & flag).sum()) for g, m in groups.items()}
    return {
        "hist": np.array([np.histogram(scores[groups[g] & ok], bins=bins)[0] for g in GROUPS],
                         dtype=np.int64),
        "size": np.array([int(groups[g].sum()) for g in GROUPS], dtype=np.int64),
        "finite": np.array([int((groups[g] & ok).sum()) for g in GROUPS], dtype=np.int64),
        "flagged": np.array([flagged.get(g, 0) for g in GROUPS], dtype=np.int64),
    }


def score_histogram(
    labels: np.ndarray, predictions: np.ndarray, scores: np.ndarray, bins: list[float],
    train_classes: Sequence[int], name: str, threshold: float | None, client: Any = None,
) -> dict[str, Any]:
    """A split's ``scores`` entry of the report data (``docs/report-data.md``); the arrays
    are NumPy arrays, or dask arrays reduced on their cluster (``client``)."""
    part = reduce_columns(histogram_part, None, (labels, predictions, scores), bins=bins,
                          train_classes=train_classes, threshold=threshold, client=client)
    shown = [i for i, g in enumerate(GROUPS) if g != "unlabelled" or part["size"][i] > 0]
    out: dict[str, Any] = {"name": name, "bins": [rounded(b) for b in bins],
                           "counts": {GROUPS[i]: [int(x) for x in part["hist"][i]]
                                      for i in shown}}
    if threshold is not None:
        out["at_threshold"] = {"flagged": {GROUPS[i]: int(part["flagged"][i]) for i in shown},
                               "total": {GROUPS[i]: int(part["finite"][i]) for i in shown}}
    return out
