"""Nearest-centre assignment and the canonical numbering of clusters."""

from __future__ import annotations

import numpy as np


def canonical_order(ids: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The canonical order of clusters: ``order[new_id] = old_id``.

    Clusters are numbered by first occurrence in ``ids``; clusters absent from
    ``ids`` follow, sorted lexicographically by their centre coordinates.
    """
    k = centers.shape[0]
    present, first = np.unique(ids, return_index=True)
    order = present[np.argsort(first, kind="stable")]
    missing = np.setdiff1d(np.arange(k), present)
    if missing.size:
        missing = missing[np.lexsort(centers[missing].T[::-1])]
    return np.concatenate([order, missing]).astype(np.int64)


def assign_nearest(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each row (int32) and the Euclidean distance to it (float32).

    The argmin ranks ``|c|^2 - 2 x.c`` in float32; rows whose two best
    candidates are within float32 rounding of each other are ranked again in
    float64 (ties go to the lower id), so the choice does not depend on how
    rows are grouped into blocks. The distance is computed directly as
    ``|x - c|``, without cancellation. Plain NumPy: scikit-learn's threaded
    pairwise reductions cost more in start-up than they save on chunk-sized
    blocks.
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
