"""Detection metrics and the three evaluation tasks (error, novelty, both).

Every score is *higher = more suspicious*, and the positive class of every
metric is the suspicious samples (see :func:`task_masks`). AUPR-Out ranks the
suspicious samples by ``score``, AUPR-In the normal ones by ``-score``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from nnsig_core._warnings import warn

log = logging.getLogger("nnsig")

TASKS = ("error", "novelty", "both")
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
#: Scores where a lower value is the more suspicious (negated by :func:`evaluate`).
LOWER_IS_SUSPICIOUS = frozenset({"p_value"})


def auroc(positive: Any, scores: Any) -> float:
    """The area under the ROC curve of ``scores`` for the ``positive`` samples (ties count
    half), as scikit-learn's ``roc_auc_score`` gives it (to float rounding), from the ranks
    alone: for the searches over subsets that call it hundreds of times, where
    ``roc_auc_score`` spent 6 ms a call checking its input."""
    from scipy.stats import rankdata

    y = np.asarray(positive).reshape(-1).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs positive and negative samples.")
    ranks = rankdata(np.asarray(scores, dtype=np.float64).reshape(-1))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _check(scores: Any, positive: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(positive).reshape(-1)
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("positive must be boolean (or 0/1): True marks a suspicious sample.")
        y = y.astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores has {s.size} values but positive has {y.size}.")
    if not np.isfinite(s).all():
        raise ValueError(
            f"{int((~np.isfinite(s)).sum())} score(s) are NaN or infinite; "
            "detection metrics need finite scores.")
    if y.all() or not y.any():
        raise ValueError(
            "Detection metrics need both positives (suspicious samples) and negatives; "
            f"got {int(y.sum())} positive(s) among {y.size} sample(s).")
    return s, y


def fpr_at_tpr(scores: Any, positive: Any, *, tpr: float = 0.95) -> float:
    """False-positive rate of ``score >= t`` at the highest ``t`` whose TPR is >= ``tpr``."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1]; got {tpr}.")
    s, y = _check(scores, positive)
    fpr, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    i = int(np.searchsorted(tprs, tpr - 1e-12, side="left"))
    return float(fpr[min(i, fpr.size - 1)])


def detection_metrics(scores: Any, positive: Any) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR@95TPR of ``scores`` for flagging ``positive``.

    Parameters
    ----------
    scores : array-like (n,)
        Higher = more suspicious; finite.
    positive : array-like of bool (n,)
        True for suspicious samples; both classes must be present.

    Returns
    -------
    dict
        ``{"auroc", "aupr_in", "aupr_out", "fpr95"}``: floats.
    """
    s, y = _check(scores, positive)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr_in": float(average_precision_score(~y, -s)),
        "aupr_out": float(average_precision_score(y, s)),
        "fpr95": fpr_at_tpr(s, y, tpr=0.95),
    }


def task_masks(labels: Any, predictions: Any,
               known_classes: Iterable[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The evaluation tasks of a split: ``{task: (included, positive)}`` masks.

    ``error``: labelled samples of ``known_classes``, the misclassified ones
    positive. ``novelty``: all labelled samples (label -1 is in no task), those
    of unknown classes positive. ``both``: all labelled samples, the
    misclassified and novel ones positive. A task without positives or
    negatives is left out.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels has {y.size} values but predictions has {p.size}.")
    known = np.asarray(sorted({int(c) for c in known_classes}), dtype=np.int64)
    if known.size == 0:
        raise ValueError("known_classes is empty: give the classes the analysis was fitted on.")
    labelled = y >= 0
    is_known = labelled & np.isin(y, known)
    novel = labelled & ~is_known
    wrong = is_known & (y != p)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "error": (is_known, wrong),
        "novelty": (labelled, novel),
        "both": (labelled, wrong | novel),
    }
    kept = {}
    for task, (inc, pos) in out.items():
        n_pos = int((inc & pos).sum())
        n_neg = int((inc & ~pos).sum())
        if n_pos == 0 or n_neg == 0:
            log.info("Task %r skipped: %d positive(s), %d negative(s).", task, n_pos, n_neg)
            continue
        kept[task] = (inc, pos)
    return kept


def evaluate(scores: Mapping[str, Any], labels: Any, predictions: Any,
             known_classes: Iterable[int], *, tasks: Sequence[str] | None = None,
             as_frame: bool | None = None, layout: str | None = None) -> Any:
    """Every score x task x metric, as a table.

    Parameters
    ----------
    scores : mapping of str to array-like (n,)
        Score name to per-sample scores (higher = more suspicious, except
        :data:`LOWER_IS_SUSPICIOUS`: the conformal ``p_value``).
    labels, predictions : array-like of int (n,)
        True labels (-1 unknown) and predicted classes of the same samples.
    known_classes : iterable of int
        Classes the model was trained on (``analysis.known_classes_``: the fit split's
        labels; ``analysis.classes_`` leaves out a class none of whose fit samples was
        classified correctly, which would then count as novel).
    tasks : sequence of str, optional
        Subset of :data:`TASKS`; default all that are defined on these samples
        (without ``both`` when no sample is of a novel class: it is then ``error``).
    as_frame : bool or None
        ``True``: a pandas DataFrame; ``False``: a list of dicts; ``None``
        (default): a DataFrame when pandas is installed, else a list.
    layout : {"wide", "long"} or None
        One row per task and score (default of a DataFrame), or per task, score
        and metric (default of a list).

    Returns
    -------
    list of dict or pandas.DataFrame
        Long: ``score``, ``task``, ``metric``, ``value``, ``n_positive``,
        ``n_negative``. Wide: ``task``, ``score``, one column per metric,
        ``n_positive``, ``n_negative``.
    """
    if labels is None:
        raise ValueError("evaluate needs the true labels (-1 for unknown ones): the tasks ask "
                         "which samples are misclassified or of a novel class. Pass "
                         "store.labels(split).")
    masks = task_masks(labels, predictions, known_classes)
    if not (np.asarray(labels).reshape(-1) >= 0).any():
        warn("No sample has a label: no task is defined, so the table is empty. Score a "
             "labelled split to measure the scores.")
    if tasks is None and "novelty" not in masks:
        masks.pop("both", None)  # no novel sample: the samples and positives of "error"
    if tasks is not None:
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"Unknown task(s) {unknown}; choose among {list(TASKS)}.")
        missing = [t for t in tasks if t not in masks]
        if missing:
            warn(f"Task(s) {missing} undefined on these samples (no positives or negatives).")
        masks = {t: masks[t] for t in tasks if t in masks}
    n = np.asarray(labels).reshape(-1).size
    rows: list[dict[str, Any]] = []
    for name, values in scores.items():
        s = np.asarray(values, dtype=np.float64).reshape(-1)
        if name in LOWER_IS_SUSPICIOUS:
            s = -s
        if s.size != n:
            raise ValueError(f"Score {name!r} has {s.size} values for {n} samples.")
        for task, (inc, pos) in masks.items():
            m = detection_metrics(s[inc], pos[inc])
            n_pos, n_neg = int((inc & pos).sum()), int((inc & ~pos).sum())
            for metric in METRICS:
                rows.append({"score": name, "task": task, "metric": metric, "value": m[metric],
                             "n_positive": n_pos, "n_negative": n_neg})
    if layout not in (None, "wide", "long"):
        raise ValueError(f"layout must be 'wide' or 'long', not {layout!r}.")
    frame = as_frame is not False and importlib.util.find_spec("pandas") is not None
    if (layout or ("wide" if frame else "long")) == "wide":
        rows = _wide(rows)
    return _as_table(rows, as_frame)


def _wide(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, score) with a column per metric, tasks first."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        key = (r["task"], r["score"])
        out.setdefault(key, {"task": r["task"], "score": r["score"]})[r["metric"]] = r["value"]
        counts[key] = {"n_positive": r["n_positive"], "n_negative": r["n_negative"]}
    order = {t: i for i, t in enumerate(TASKS)}
    return [{**out[k], **counts[k]} for k in sorted(out, key=lambda k: order[k[0]])]


def summarize(rows: Iterable[Mapping[str, Any]], *, by: Sequence[str] = ("score", "task", "metric"),
              as_frame: bool | None = None) -> Any:
    """Mean, standard deviation (ddof=1; 0 for one run) and count of ``value`` per group.

    Parameters
    ----------
    rows : iterable of mapping
        Tidy rows (e.g. several :func:`evaluate` tables with a ``seed`` column).
    by : sequence of str
        The grouping columns, kept in first-seen order.
    as_frame : bool or None
        As in :func:`evaluate`.
    """
    groups: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(float(r["value"]))
    out = []
    for key, vals in groups.items():
        v = np.asarray(vals)
        out.append({**dict(zip(by, key, strict=True)), "mean": float(v.mean()),
                    "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)})
    return _as_table(out, as_frame)


def _as_table(rows: list[dict[str, Any]], as_frame: bool | None) -> Any:
    if as_frame is False:
        return rows
    try:
        import pandas as pd
    except ImportError:
        if as_frame:
            raise ImportError("as_frame=True needs pandas: pip install pandas") from None
        return rows
    return pd.DataFrame(rows)
