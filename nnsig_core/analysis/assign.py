"""Nearest-centre assignment and the canonical numbering of clusters."""

from __future__ import annotations

import numpy as np


def canonical_order(ids: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The canonical order of clusters: ``order[new_id] = old_id``.

    Clusters are numbered by first occurrence in ``ids``; clusters absent from
    ``ids`` follow, sorted lexicographically by their centre coordinates.
    """
    present, first = np.unique(ids, return_index=True)
    return order_by_first(present, first, centers)


def order_by_first(present: np.ndarray, first: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """:func:`canonical_order` from the clusters ``present`` and their first positions."""
    order = present[np.argsort(first, kind="stable")]
    missing = np.setdiff1d(np.arange(centers.shape[0]), present)
    if missing.size:
        missing = missing[np.lexsort(centers[missing].T[::-1])]
    return np.concatenate([order, missing]).astype(np.int64)


def assign_nearest(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each row (int32) and the Euclidean distance to it (float32).

    Rows whose two best candidates are within float32 rounding are ranked again in float64,
    so the choice does not depend on how rows are grouped into blocks.
    """
    m = X.shape[0]
    if m == 0:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32)
    x = np.ascontiguousarray(X, dtype=np.float32)
    c = np.ascontiguousarray(centers, dtype=np.float32)
    c_sq = np.einsum("ij,ij->i", c, c)
    scores = x @ (-2.0 * c.T)
    scores += c_sq[None, :]
    ids = np.argmin(scores, axis=1)
    if c.shape[0] > 1:
        two = np.partition(scores, 1, axis=1)[:, :2]
        x_sq = np.einsum("ij,ij->i", x, x)
        # float32 error of |c|^2 - 2 x.c is below ~ d * eps * (|x|^2 + |c|^2); be generous.
        tol = 8 * x.shape[1] * np.finfo(np.float32).eps * (x_sq + c_sq.max())
        near = np.flatnonzero(two[:, 1] - two[:, 0] <= tol)
        if near.size:
            c64 = c.astype(np.float64)
            s64 = x[near].astype(np.float64) @ (-2.0 * c64.T) + np.einsum("ij,ij->i", c64, c64)
            ids[near] = np.argmin(s64, axis=1)
    diff = x - c[ids]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return ids.astype(np.int32), dist.astype(np.float32)
