"""k-means on a cluster: Lloyd's iterations as per-block reductions, seeded on a sample.

The rows stay on the workers, block by block (:class:`FitRows`). The driver
holds only the ``k x d`` centres and what each iteration's tree reduction
returns: per-cluster sums (``k x d`` float64), counts and the inertia.

Seeding
    k-means++ (scikit-learn's ``kmeans_plusplus``) on a uniform random sample
    of the fit rows (at most :data:`INIT_SAMPLE_BYTES` of features; all of them
    when they fit), after centring the sample on its mean, with the random
    stream ``check_random_state(random_state)``: when the sample is every fit
    row, these are the very seeds ``KMeans(random_state=...)`` draws on the
    same rows, so the distributed fit starts where the single-process exact
    fit starts. With ``n_init > 1``, the seeds with the lowest potential on the
    sample (sum of squared distances to the nearest seed) are kept.
Iterations
    Each iteration assigns every row to its nearest centre (the analysis's
    :func:`~nnsig_core.analysis.assign.assign_nearest`: float32, near ties
    ranked again in float64) and returns per-cluster sums and counts; the
    driver moves the centres to the means. Empty clusters are moved to the
    rows farthest from their centres, as scikit-learn does (one more pass,
    only when a cluster empties). Stopping rule: scikit-learn's, the sum of
    squared centre shifts at most ``tol`` times the mean variance of the
    features (its ``_tolerance``), or ``max_iter`` iterations; unchanged labels
    imply a zero shift, so its strict convergence stops here too.
Cost per iteration
    One task per block plus ``ceil(blocks / 7)`` merge tasks; one
    ``k x d`` float64 partial per block moves up the tree (see docs/design.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core._util import count_matrix
from nnsig_core.analysis.assign import assign_nearest
from nnsig_core.distributed.reductions import broadcast, tree_reduce

__all__ = [
    "INIT_SAMPLE_BYTES",
    "FinalAssignment",
    "FitRows",
    "LloydResult",
    "canonical_from_first",
    "cluster_sums",
    "final_assignment",
    "kmeans_plus_plus_on_sample",
    "lloyd",
    "sample_ranks",
]

log = logging.getLogger("nnsig")

#: Bytes of features (float32) of the seeding sample brought to the driver.
INIT_SAMPLE_BYTES = 256 << 20


# ---------------------------------------------------------------------------- the rows
def _select(raw: np.ndarray, mask: np.ndarray | None, lo: int,
            labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions, labels, rows)`` of a block's fit rows."""
    if mask is None:
        pos = np.arange(lo, lo + raw.shape[0], dtype=np.int64)
        return pos, np.asarray(labels, dtype=np.int64), raw
    keep = np.flatnonzero(mask)
    X = raw if keep.size == raw.shape[0] else raw[keep]
    return keep + lo, np.asarray(labels, dtype=np.int64)[keep], X


def _featurize(block: tuple[np.ndarray, np.ndarray, np.ndarray],
               fmap: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos, lab, X = block
    return pos, lab, (fmap.features(X) if X.shape[0] else
                      np.empty((0, fmap.features(np.zeros((1, X.shape[1]), np.float32)).shape[1]),
                               np.float32))


@dataclass
class FitRows:
    """A layer's fit rows on the cluster: per block, delayed ``(positions, labels, rows)``.

    ``raw`` are the stored rows (float32, flattened); :meth:`features` maps
    them through a fitted feature map (a ``LayerClusterer`` with its
    discretizer and reducer), computed per pass or persisted on the workers.
    """

    client: Any
    raw: list[Any]
    sizes: list[int]
    n_features: int

    @property
    def n(self) -> int:
        return int(sum(self.sizes))

    def features(self, fmap: Any, persist: bool) -> list[Any]:
        """Delayed feature blocks (persisted in the workers' memory when ``persist``)."""
        from dask import delayed

        shipped = broadcast(self.client, fmap)
        blocks = [delayed(_featurize, pure=True)(b, shipped) for b in self.raw]
        return list(self.client.persist(blocks)) if persist else blocks

    def sample(self, fmap: Any, ranks: np.ndarray) -> np.ndarray:
        """The rows of the given ranks (sorted positions among the fit rows), as features."""
        from dask import delayed

        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        shipped = broadcast(self.client, fmap)
        parts = []
        for i, b in enumerate(self.raw):
            lo, hi = np.searchsorted(ranks, [starts[i], starts[i + 1]])
            if hi > lo:
                parts.append(delayed(_take_features)(b, ranks[lo:hi] - starts[i], shipped))
        rows = self.client.compute(parts, sync=True)
        return np.concatenate(rows) if rows else np.empty((0, self.n_features), np.float32)


def _take_features(block: tuple[np.ndarray, np.ndarray, np.ndarray], local: np.ndarray,
                   fmap: Any) -> np.ndarray:
    return fmap.features(block[2][local])


# ---------------------------------------------------------------------------- seeding
def kmeans_plus_plus_on_sample(sample: np.ndarray, k: int, random_state: int | None,
                               n_init: int) -> np.ndarray:
    """k-means++ seeds (rows of ``sample``) drawn as ``KMeans(random_state=...)`` draws them."""
    from sklearn.cluster import kmeans_plusplus
    from sklearn.utils import check_random_state
    from sklearn.utils.extmath import row_norms

    X = np.asarray(sample, dtype=np.float32)
    centred = X - X.mean(axis=0)  # as KMeans centres its copy of the rows
    norms = row_norms(centred, squared=True)
    rng = check_random_state(random_state)
    best, best_pot = None, np.inf
    for _ in range(max(1, int(n_init))):
        _, idx = kmeans_plusplus(centred, k, x_squared_norms=norms, random_state=rng)
        seeds = X[idx]
        if n_init == 1:
            return seeds
        pot = float((assign_nearest(X, seeds)[1].astype(np.float64) ** 2).sum())
        if pot < best_pot:
            best, best_pot = seeds, pot
    assert best is not None
    return best


def sample_ranks(n: int, d: int, k: int, random_state: int | None,
                 sample_bytes: int = INIT_SAMPLE_BYTES) -> np.ndarray:
    """Sorted ranks of the seeding sample: every row when they fit ``sample_bytes``."""
    m = int(min(n, max(20 * k, sample_bytes // max(4 * d, 1))))
    if m >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


# ---------------------------------------------------------------------------- Lloyd
def cluster_sums(F: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """``(k, d)`` float64 sums of the rows of each cluster."""
    out = np.zeros((k, F.shape[1]))
    if F.shape[0] == 0:
        return out
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    out[sid[starts]] = np.add.reduceat(F[order].astype(np.float64), starts, axis=0)
    return out


def _lloyd_part(block: tuple[np.ndarray, np.ndarray, np.ndarray], centers: np.ndarray,
                moments: bool) -> dict[str, Any]:
    _, _, F = block
    k = centers.shape[0]
    ids, dist = assign_nearest(F, centers)
    part: dict[str, Any] = {"sums": cluster_sums(F, ids, k),
                            "counts": np.bincount(ids, minlength=k).astype(np.int64),
                            "inertia": float((dist.astype(np.float64) ** 2).sum())}
    if moments:
        F64 = F.astype(np.float64)
        part["fsum"] = F64.sum(axis=0)
        part["fsq"] = (F64**2).sum(axis=0)
    return part


def _far_part(block: tuple[np.ndarray, np.ndarray, np.ndarray], centers: np.ndarray,
              m: int) -> dict[str, Any]:
    """The ``m`` rows of the block farthest from their centre: distances, rows, clusters."""
    _, _, F = block
    ids, dist = assign_nearest(F, centers)
    d2 = ((F.astype(np.float64) - centers[ids]) ** 2).sum(axis=1) if F.shape[0] else dist
    top = np.argsort(-d2, kind="stable")[:m]
    return {"far": [(float(d2[i]), F[i].copy(), int(ids[i])) for i in top]}


def _relocate(parts_sum: dict[str, Any], far: list[tuple[float, np.ndarray, int]],
              sums: np.ndarray, counts: np.ndarray) -> None:
    """scikit-learn's ``_relocate_empty_clusters_dense`` on the reduced sums and counts."""
    empty = np.flatnonzero(counts == 0)
    far = sorted(far, key=lambda t: -t[0])[: empty.size]
    for new, (_, row, old) in zip(empty, far, strict=False):
        sums[old] -= row
        sums[new] = row
        counts[new] = 1
        counts[old] -= 1


@dataclass
class LloydResult:
    """Centres (float32, in the order k-means left them), iterations run, tolerance used."""

    centers: np.ndarray
    n_iter: int
    tol: float
    converged: bool


def lloyd(client: Any, blocks: Sequence[Any], init: np.ndarray, tol: float = 1e-4,
          max_iter: int = 300, name: str = "layer") -> LloydResult:
    """Lloyd's iterations over delayed feature blocks ``(positions, labels, F)`` from ``init``."""
    from dask import delayed

    centers = np.asarray(init, dtype=np.float32)
    abs_tol = None
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        shipped = broadcast(client, centers)
        parts = [delayed(_lloyd_part)(b, shipped, abs_tol is None) for b in blocks]
        r = client.compute(tree_reduce(parts)).result()
        client.cancel(shipped)
        if abs_tol is None:
            n = max(int(r["counts"].sum()), 1)
            var = r["fsq"] / n - (r["fsum"] / n) ** 2
            abs_tol = float(np.mean(np.maximum(var, 0.0)) * tol)
        sums, counts = r["sums"], r["counts"].copy()
        if (counts == 0).any():
            far = _farthest(client, blocks, centers, int((counts == 0).sum()))
            _relocate(r, far, sums, counts)
            log.info("Layer %r: %d empty cluster(s) moved to the farthest rows (iteration %d).",
                     name, int((r["counts"] == 0).sum()), it)
        new = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        new[counts == 0] = centers[counts == 0]
        shift = float(((new.astype(np.float64) - centers) ** 2).sum())
        centers = new
        log.debug("Layer %r: Lloyd iteration %d, inertia %.6g, shift %.3g (tol %.3g)", name, it,
                  r["inertia"], shift, abs_tol)
        if shift <= abs_tol:
            converged = True
            break
    if not converged:
        log.warning("Layer %r: k-means did not converge in %d iterations; raise max_iter.", name,
                    max_iter)
    return LloydResult(centers, it, float(abs_tol or 0.0), converged)


def _farthest(client: Any, blocks: Sequence[Any], centers: np.ndarray,
              m: int) -> list[tuple[float, np.ndarray, int]]:
    from dask import delayed

    shipped = broadcast(client, centers)
    parts = [delayed(_far_part)(b, shipped, m) for b in blocks]
    r = client.compute(tree_reduce(parts)).result()
    return list(r["far"])


# ---------------------------------------------------------------------------- final assignment
def _final_part(block: tuple[np.ndarray, np.ndarray, np.ndarray], centers: np.ndarray,
                n_classes: int) -> dict[str, Any]:
    pos, lab, F = block
    k = centers.shape[0]
    ids, dist = assign_nearest(F, centers)
    first = np.full(k, -1, dtype=np.int64)
    present, idx = np.unique(ids, return_index=True)
    first[present] = pos[idx]
    return {"counts": np.bincount(ids, minlength=k).astype(np.int64),
            "composition": count_matrix(ids, lab, k, n_classes),
            "inertia": float((dist.astype(np.float64) ** 2).sum()),
            "pos_first": first}


@dataclass
class FinalAssignment:
    """The fit rows against the final centres: counts, composition, inertia, first positions."""

    counts: np.ndarray
    composition: np.ndarray
    inertia: float
    first: np.ndarray


def final_assignment(client: Any, blocks: Sequence[Any], centers: np.ndarray,
                     n_classes: int) -> FinalAssignment:
    """Assign every fit row to the final centres, by one reduction."""
    from dask import delayed

    shipped = broadcast(client, np.asarray(centers, dtype=np.float32))
    parts = [delayed(_final_part)(b, shipped, n_classes) for b in blocks]
    r = client.compute(tree_reduce(parts)).result()
    client.cancel(shipped)
    return FinalAssignment(r["counts"], r["composition"], float(r["inertia"]), r["pos_first"])


def canonical_from_first(first: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """:func:`~nnsig_core.analysis.assign.canonical_order` from each cluster's first position."""
    k = centers.shape[0]
    present = np.flatnonzero(first >= 0)
    order = present[np.argsort(first[present], kind="stable")]
    missing = np.setdiff1d(np.arange(k), present)
    if missing.size:
        missing = missing[np.lexsort(centers[missing].T[::-1])]
    return np.concatenate([order, missing]).astype(np.int64)

