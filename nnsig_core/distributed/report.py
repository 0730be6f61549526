"""The report's aggregates of :class:`~nnsig_core.distributed.signatures.DaskSignatures`.

``report.data`` asks signatures that have them for their split's entry and
score histogram; these compute the same JSON as its ``_split_entry`` and
``_score_histogram`` (``tests/test_distributed_analysis.py`` compares the
whole report data) from reductions: the joint table with per-row score sums,
the exemplars, per-group histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nnsig_core.analysis.signatures import class_entropy, class_purity
from nnsig_core.distributed.reductions import tree_reduce

if TYPE_CHECKING:
    from nnsig_core.distributed.signatures import DaskSignatures

__all__ = ["report_entry", "score_histogram"]


def _f(x: Any, digits: int = 6) -> float | None:
    """A JSON float (None for NaN/None), rounded as the report rounds it."""
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


def _histogram_part(labels: np.ndarray, preds: np.ndarray, scores: np.ndarray,
                    bins: list[float], train_classes: list[int]) -> dict[str, Any]:
    lab, pred = np.asarray(labels), np.asarray(preds)
    s = np.asarray(scores, dtype=np.float64)
    labelled = lab >= 0
    seen = np.isin(lab, train_classes)
    ok = np.isfinite(s)
    groups = {"correct": labelled & seen & (lab == pred),
              "misclassified": labelled & seen & (lab != pred),
              "unseen": labelled & ~seen}
    return {g: np.histogram(s[m & ok], bins=bins)[0].astype(np.int64) for g, m in groups.items()}


def report_entry(sigs: DaskSignatures, n_classes: int, scores: Any,
                 n_exemplars: int) -> dict[str, Any]:
    """The report's entry of the split (``report.data``'s ``_split_entry``), by reductions."""
    import dask.array as da

    L = len(sigs.layers)
    if scores is not None:
        sc = da.from_array(np.asarray(scores, dtype=np.float64), chunks=sigs.labels.chunks[0])
        j = sigs._reduce_joint(sc)
        if sigs._joint is None:
            sigs._joint = {"rows": j["rows"], "counts": j["counts"]}
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(j["n_scored"] > 0, j["sums"] / np.maximum(j["n_scored"], 1),
                             np.nan)
    else:
        means = None
    T, counts = sigs.joint()
    rows = []
    if T.shape[0]:
        keys = [T[:, L + 1]] + [T[:, 1 + j] for j in reversed(range(L))] + [T[:, 0], -counts]
        for i in np.lexsort(keys):
            u = T[i]
            rows.append({"input": int(u[0]), "path": [int(x) for x in u[1 : L + 1]],
                         "output": int(u[L + 1]), "count": int(counts[i]),
                         "score": None if means is None else _f(means[i], 4)})
    lab, ids, _, w = sigs._cols()
    exemplars = sigs.exemplars(n=n_exemplars)
    comps = sigs._composition(lab, ids, w) if T.shape[0] else [
        np.zeros((k, max(n_classes, 1)), np.int64) for k in sigs.n_clusters]
    clusters, purity, entropy = [], [], []
    for j, k in enumerate(sigs.n_clusters):
        totals = np.bincount(ids[:, j], weights=w, minlength=k).astype(np.int64)
        comp = np.zeros((k, n_classes), dtype=np.int64)
        comp[:, : min(n_classes, comps[j].shape[1])] = comps[j][:, :n_classes]
        purity.append(_f(class_purity(comp)))
        entropy.append(_f(class_entropy(comp)))
        clusters.append([{
            "id": c, "count": int(totals[c]), "by_class": [int(x) for x in comp[c]],
            "purity": _f(comp[c].max() / comp[c].sum()) if comp[c].sum() else None,
            "exemplars": [f"{sigs.split}/{r}" for r in exemplars[j][c]],
        } for c in range(k)])
    return {"n_samples": sigs.n_samples, "accuracy": _f(sigs.accuracy),
            "n_signatures": sigs.n_signatures, "purity": purity, "entropy": entropy,
            "rows": rows, "clusters": clusters}


def score_histogram(sigs: DaskSignatures, scores: Any, bins: list[float],
                    train_classes: Sequence[int], name: str) -> dict[str, Any]:
    """The report's score histogram of the split (``report.data``'s ``_score_histogram``)."""
    import dask.array as da
    from dask import delayed

    sc = da.from_array(np.asarray(scores, dtype=np.float64), chunks=sigs.labels.chunks[0])
    cols = sigs._blocks(sigs.labels, sigs.predictions, sc)
    parts = [delayed(_histogram_part)(*b, list(bins), [int(c) for c in train_classes])
             for b in zip(*cols, strict=True)]
    r = sigs.client.compute(tree_reduce(parts)).result()
    counts = {g: [int(x) for x in r[g]] for g in ("correct", "misclassified", "unseen")}
    return {"name": name, "bins": [_f(b) for b in bins], "counts": counts}
