"""The joint table of a split: its distinct (label, cluster ids..., prediction) rows and counts,
from which every count of a report or table follows. Built per block and merged."""

from __future__ import annotations

from typing import Any

import numpy as np


def joint_part(labels: np.ndarray, ids: np.ndarray, preds: np.ndarray,
               scores: np.ndarray | None = None, lo: int = 0) -> dict[str, Any]:
    """The joint table of a block: ``rows`` (distinct, sorted) and their ``counts``; with
    ``scores``, each row's ``sums`` of finite scores and their number, ``n_scored``."""
    M = np.column_stack([np.asarray(labels, np.int64), np.asarray(ids, np.int64),
                         np.asarray(preds, np.int64)])
    if M.shape[0] == 0:
        out: dict[str, Any] = {"rows": M, "counts": np.zeros(0, np.int64)}
        if scores is not None:
            out.update(sums=np.zeros(0), n_scored=np.zeros(0, np.int64))
        return out
    uniq, inv, counts = np.unique(M, axis=0, return_inverse=True, return_counts=True)
    out = {"rows": uniq, "counts": counts.astype(np.int64)}
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        ok = np.isfinite(s)
        inv = inv.reshape(-1)
        out["sums"] = np.bincount(inv[ok], weights=s[ok], minlength=len(uniq))
        out["n_scored"] = np.bincount(inv[ok], minlength=len(uniq)).astype(np.int64)
    return out


def joint_merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Merge the joint tables of several blocks."""
    parts = tuple(p for p in parts if p["rows"].shape[0]) or parts[:1]
    rows = np.concatenate([p["rows"] for p in parts])
    uniq, inv = np.unique(rows, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    out = {"rows": uniq}
    for key in ("counts", "sums", "n_scored"):
        if key in parts[0]:
            vals = np.concatenate([p[key] for p in parts])
            summed = np.bincount(inv, weights=vals, minlength=len(uniq))
            out[key] = summed if key == "sums" else summed.astype(np.int64)
    return out


def joint_compositions(classes: np.ndarray, ids: np.ndarray, counts: np.ndarray,
                       n_clusters: list[int], n_classes: int) -> list[np.ndarray]:
    """Per layer, the ``(clusters, n_classes)`` sample counts of the joint table's rows (rows
    of class < 0 left out)."""
    keep = (classes >= 0) & (classes < n_classes)
    out = []
    for j, k in enumerate(n_clusters):
        m = np.zeros((k, n_classes), dtype=np.int64)
        np.add.at(m, (ids[keep, j], classes[keep]), counts[keep])
        out.append(m)
    return out
