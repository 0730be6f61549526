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
    As scikit-learn's Lloyd: in coordinates centred on the seeding sample's
    float32 mean (KMeans' own centring when the sample is every fit row), each
    row goes to ``argmin_j |c_j|^2 - 2 x.c_j`` computed in float32 (the first
    minimum: exact ties, frequent on discretized features, go where KMeans
    sends them); each block returns per-cluster sums (float64) and counts, and
    the driver moves the centres to the means. Empty clusters are moved to the
    rows farthest from their centres, as scikit-learn does (one more pass, only
    when a cluster empties). Stopping rule: scikit-learn's, the sum of squared
    centre shifts at most ``tol`` times the mean variance of the features (its
    ``_tolerance``), or ``max_iter`` iterations; unchanged labels give a zero
    shift, so its strict convergence stops here too. A final pass (KMeans' last
    E-step) gives the counts, the class composition, the inertia and the first
    fit row of each cluster (the canonical order).
Cost per iteration
    One task per block plus ``ceil(blocks / 7)`` merge tasks; one
    ``k x d`` float64 partial per block moves up the tree (see docs/design.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core._util import count_matrix
from nnsig_core._warnings import warn
from nnsig_core.analysis.assign import assign_nearest
from nnsig_core.execute.blocks import row_slices
from nnsig_core.execute.dask_blocks import broadcast, release, tree_reduce

__all__ = [
    "INIT_SAMPLE_BYTES",
    "FinalAssignment",
    "Seeds",
    "FitRows",
    "LloydResult",
    "canonical_from_first",
    "cluster_sums",
    "final_assignment",
    "kmeans_plus_plus_on_sample",
    "lloyd",
    "lloyd_labels",
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
@dataclass
class Seeds:
    """k-means++ seeds and the centring vector of the iterations (the sample's float32 mean)."""

    centers: np.ndarray
    mean: np.ndarray


def kmeans_plus_plus_on_sample(sample: np.ndarray, k: int, random_state: int | None,
                               n_init: int) -> Seeds:
    """k-means++ seeds (rows of ``sample``) drawn as ``KMeans(random_state=...)`` draws them."""
    from sklearn.cluster import kmeans_plusplus
    from sklearn.utils import check_random_state
    from sklearn.utils.extmath import row_norms

    X = np.asarray(sample, dtype=np.float32)
    mean = X.mean(axis=0)
    centred = X - mean  # as KMeans centres its copy of the rows
    norms = row_norms(centred, squared=True)
    rng = check_random_state(random_state)
    best, best_pot = None, np.inf
    for _ in range(max(1, int(n_init))):
        _, idx = kmeans_plusplus(centred, k, x_squared_norms=norms, random_state=rng)
        seeds = X[idx]
        if n_init == 1:
            return Seeds(seeds, mean)
        pot = float((assign_nearest(X, seeds)[1].astype(np.float64) ** 2).sum())
        if pot < best_pot:
            best, best_pot = seeds, pot
    assert best is not None
    return Seeds(best, mean)


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
    """``(k, d)`` float64 sums of the rows of each cluster (NumPy's pairwise float64 sums of
    each cluster's rows; no float64 copy of the block)."""
    out = np.zeros((k, F.shape[1]))
    if F.shape[0] == 0:
        return out
    for c in np.unique(ids):
        out[c] = F[ids == c].sum(axis=0, dtype=np.float64)
    return out


def lloyd_labels(Fc: np.ndarray, Cc: np.ndarray) -> np.ndarray:
    """scikit-learn's Lloyd assignment: ``argmin_j |c_j|^2 - 2 x.c_j`` in float32 (first
    minimum), in centred coordinates, so that exact ties go where KMeans sends them."""
    if Fc.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    scores = Fc @ (-2.0 * Cc.T)
    scores += np.einsum("ij,ij->i", Cc, Cc)[None, :]
    return np.argmin(scores, axis=1)


def _centred(block: tuple[np.ndarray, np.ndarray, np.ndarray],
             state: tuple[np.ndarray, np.ndarray]) -> Iterator[tuple[slice, np.ndarray]]:
    """The block's rows centred as KMeans centres them (float32), slice by slice, so a task
    holds one slice's copy rather than the block's."""
    mean = state[1]
    X = block[2]
    for sl in row_slices(X.shape[0], X.shape[1]):
        yield sl, np.asarray(X[sl], dtype=np.float32) - mean


def _lloyd_part(block: tuple[np.ndarray, np.ndarray, np.ndarray],
                state: tuple[np.ndarray, np.ndarray], moments: bool) -> dict[str, Any]:
    Cc = state[0]
    k, d = Cc.shape
    part: dict[str, Any] = {"sums": np.zeros((k, d)), "counts": np.zeros(k, dtype=np.int64)}
    if moments:  # for the tolerance only
        part["fsum"], part["fsq"] = np.zeros(d), np.zeros(d)
    for _, Fc in _centred(block, state):
        ids = lloyd_labels(Fc, Cc)
        part["sums"] += cluster_sums(Fc, ids, k)
        part["counts"] += np.bincount(ids, minlength=k)
        if moments:
            part["fsum"] += Fc.sum(axis=0, dtype=np.float64)
            part["fsq"] += np.square(Fc).sum(axis=0, dtype=np.float64)
    return part


def _far_part(block: tuple[np.ndarray, np.ndarray, np.ndarray],
              state: tuple[np.ndarray, np.ndarray], m: int) -> dict[str, Any]:
    """The ``m`` rows of the block farthest from their centre: distances, rows, clusters."""
    Cc = state[0]
    far: list[tuple[float, np.ndarray, int]] = []
    for _, Fc in _centred(block, state):
        ids = lloyd_labels(Fc, Cc)
        d2 = ((Fc - Cc[ids]) ** 2).sum(axis=1)
        far += [(float(d2[i]), Fc[i].astype(np.float64), int(ids[i]))
                for i in np.argsort(-d2, kind="stable")[:m]]
    return {"far": sorted(far, key=lambda t: -t[0])[:m]}


def _relocate(far: list[tuple[float, np.ndarray, int]], sums: np.ndarray,
              counts: np.ndarray) -> None:
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
    """Centres (float32, in the order k-means left them, in centred coordinates, and the
    centring vector), iterations run, tolerance used."""

    centred: np.ndarray
    mean: np.ndarray
    n_iter: int
    tol: float
    converged: bool

    @property
    def centers(self) -> np.ndarray:
        """The centres in the features' coordinates (KMeans adds its mean back in float32)."""
        return (self.centred + self.mean).astype(np.float32)


def lloyd(client: Any, blocks: Sequence[Any], init: np.ndarray,
          mean: np.ndarray | None = None, tol: float = 1e-4, max_iter: int = 300,
          name: str = "layer") -> LloydResult:
    """Lloyd's iterations over delayed feature blocks ``(positions, labels, F)`` from ``init``,
    in coordinates centred on ``mean`` (default: none), as KMeans iterates."""
    from dask import delayed

    init = np.asarray(init, dtype=np.float32)
    mean = np.zeros(init.shape[1], np.float32) if mean is None else np.asarray(mean, np.float32)
    Cc = (init - mean).astype(np.float32)
    abs_tol = None
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        shipped = broadcast(client, (Cc, mean))
        parts = [delayed(_lloyd_part)(b, shipped, abs_tol is None) for b in blocks]
        r = client.compute(tree_reduce(parts)).result()
        if abs_tol is None:
            n = max(int(r["counts"].sum()), 1)
            var = r["fsq"] / n - (r["fsum"] / n) ** 2
            abs_tol = float(np.mean(np.maximum(var, 0.0)) * tol)
        sums, counts = r["sums"], r["counts"].copy()
        if (counts == 0).any():
            m = int((counts == 0).sum())
            far = client.compute(tree_reduce([delayed(_far_part)(b, shipped, m)
                                              for b in blocks])).result()["far"]
            _relocate(far, sums, counts)
            log.info("Layer %r: %d empty cluster(s) moved to the farthest rows (iteration %d).",
                     name, m, it)
        release(client, shipped)
        new = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        new[counts == 0] = Cc[counts == 0]
        shift = float(((new.astype(np.float64) - Cc) ** 2).sum())
        Cc = new
        log.debug("Layer %r: Lloyd iteration %d, shift %.3g (tol %.3g)", name, it, shift,
                  abs_tol)
        if shift <= abs_tol:
            converged = True
            break
    if not converged:
        warn(f"Layer {name!r}: k-means did not converge in {max_iter} iterations; raise "
             "max_iter.")
    return LloydResult(Cc, mean, it, float(abs_tol or 0.0), converged)


# ---------------------------------------------------------------------------- final assignment
def _final_part(block: tuple[np.ndarray, np.ndarray, np.ndarray],
                state: tuple[np.ndarray, np.ndarray], n_classes: int) -> dict[str, Any]:
    pos, lab, _ = block
    Cc = state[0]
    k = Cc.shape[0]
    ids = np.empty(pos.shape[0], dtype=np.int64)
    inertia = 0.0
    for sl, Fc in _centred(block, state):
        ids[sl] = lloyd_labels(Fc, Cc)
        inertia += float(((Fc.astype(np.float64) - Cc[ids[sl]]) ** 2).sum())
    first = np.full(k, -1, dtype=np.int64)
    present, idx = np.unique(ids, return_index=True)
    first[present] = pos[idx]
    return {"counts": np.bincount(ids, minlength=k).astype(np.int64),
            "composition": count_matrix(ids, lab, k, n_classes),
            "inertia": inertia, "pos_first": first}


@dataclass
class FinalAssignment:
    """The fit rows against the final centres: counts, composition, inertia, first positions."""

    counts: np.ndarray
    composition: np.ndarray
    inertia: float
    first: np.ndarray


def final_assignment(client: Any, blocks: Sequence[Any], result: LloydResult,
                     n_classes: int) -> FinalAssignment:
    """Assign every fit row to the final centres (KMeans' last E-step), by one reduction."""
    from dask import delayed

    shipped = broadcast(client, (result.centred, result.mean))
    parts = [delayed(_final_part)(b, shipped, n_classes) for b in blocks]
    r = client.compute(tree_reduce(parts)).result()
    release(client, shipped)
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

