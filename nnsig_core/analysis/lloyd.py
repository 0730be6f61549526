"""k-means out of core: Lloyd's iterations as reductions over blocks of rows, seeded on a sample
(run by either driver; ``docs/design.md``, "Distributed analysis")."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core._util import count_matrix
from nnsig_core._warnings import warn
from nnsig_core.analysis.assign import order_by_first
from nnsig_core.analysis.fit_rows import Reduce
from nnsig_core.execute.blocks import row_slices

log = logging.getLogger("nnsig")

#: Bytes of features (float32) of the seeding sample held in memory.
INIT_SAMPLE_BYTES = 256 << 20
#: Rows of the seeding sample at least (when the fit has as many).
MIN_SAMPLE_ROWS = 1024
#: Seedings (at least) of the KMeans on a seeding sample smaller than the fit rows: a poor
#: seeding costs every pass over the data (MNIST MLP: 1.23x the exact inertia with one, 1.005x
#: with three).
SAMPLE_N_INIT = 3
#: scikit-learn's KMeans defaults.
TOL, MAX_ITER = 1e-4, 300


def sample_ranks(n: int, d: int, k: int, random_state: int | None,
                 sample_bytes: int = INIT_SAMPLE_BYTES) -> np.ndarray:
    """Sorted ranks of the seeding sample: every row when they fit ``sample_bytes``, and at
    least :data:`MIN_SAMPLE_ROWS` (or ``20 * k``) rows whatever the budget."""
    m = int(min(n, max(MIN_SAMPLE_ROWS, 20 * k, sample_bytes // max(4 * d, 1))))
    if m >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def cluster_sums(F: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """``(k, d)`` float64 sums of the rows of each cluster (no float64 copy of the block)."""
    out = np.zeros((k, F.shape[1]))
    for c in np.unique(ids):
        out[c] = F[ids == c].sum(axis=0, dtype=np.float64)
    return out


def lloyd_labels(Fc: np.ndarray, Cc: np.ndarray) -> np.ndarray:
    """scikit-learn's Lloyd assignment: ``argmin_j |c_j|^2 - 2 x.c_j`` in float32 (first
    minimum), in centred coordinates, so that exact ties go where KMeans sends them."""
    scores = Fc @ (-2.0 * Cc.T)
    scores += np.einsum("ij,ij->i", Cc, Cc)[None, :]
    return np.argmin(scores, axis=1)


def _centred(block: tuple[np.ndarray, np.ndarray, np.ndarray],
             state: tuple[np.ndarray, np.ndarray]) -> Iterator[tuple[slice, np.ndarray]]:
    """The block's rows centred as KMeans centres them (float32), slice by slice."""
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


def lloyd(reduce: Reduce, init: np.ndarray, mean: np.ndarray | None = None, tol: float = TOL,
          max_iter: int = MAX_ITER, name: str = "layer") -> LloydResult:
    """Lloyd's iterations over the feature blocks ``(positions, labels, F)`` that ``reduce``
    visits (see :data:`Reduce`), from ``init``, in coordinates centred on ``mean`` (default:
    none), as KMeans iterates."""
    init = np.asarray(init, dtype=np.float32)
    mean = np.zeros(init.shape[1], np.float32) if mean is None else np.asarray(mean, np.float32)
    Cc = (init - mean).astype(np.float32)
    abs_tol = None
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        state = (Cc, mean)
        r = reduce(_lloyd_part, state=state, moments=abs_tol is None)
        if abs_tol is None:
            n = max(int(r["counts"].sum()), 1)
            var = r["fsq"] / n - (r["fsum"] / n) ** 2
            abs_tol = float(np.mean(np.maximum(var, 0.0)) * tol)
        sums, counts = r["sums"], r["counts"].copy()
        if (counts == 0).any():
            m = int((counts == 0).sum())
            far = reduce(_far_part, state=state, m=m)["far"]
            _relocate(far, sums, counts)
            log.info("Layer %r: %d empty cluster(s) moved to the farthest rows (iteration %d).",
                     name, m, it)
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


def fit_lloyd(reduce: Reduce, sample: np.ndarray, n_rows: int,
              kmeans: Callable[[np.ndarray, int | None], Any], tol: float = TOL,
              max_iter: int = MAX_ITER, name: str = "layer") -> LloydResult:
    """The out-of-core k-means of ``n_rows`` fit rows: ``kmeans(X, n_init)`` on the seeding
    ``sample``, then (unless it is every row) :func:`lloyd` from its centres."""
    X = np.asarray(sample, dtype=np.float32)
    mean = X.mean(axis=0)
    whole = X.shape[0] >= n_rows
    km = kmeans(X, None if whole else SAMPLE_N_INIT)
    centres = np.asarray(km.cluster_centers_, dtype=np.float32)
    if whole:
        return LloydResult((centres - mean).astype(np.float32), mean, int(km.n_iter_), 0.0,
                           True)
    del X
    return lloyd(reduce, centres, mean, tol=tol, max_iter=max_iter, name=name)


def _assign(block: tuple[np.ndarray, np.ndarray, np.ndarray],
            state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float]:
    """The block's rows assigned to the centres by KMeans' rule, and their inertia."""
    Cc = state[0]
    ids = np.empty(block[2].shape[0], dtype=np.int64)
    inertia = 0.0
    for sl, Fc in _centred(block, state):
        ids[sl] = lloyd_labels(Fc, Cc)
        inertia += float(((Fc.astype(np.float64) - Cc[ids[sl]]) ** 2).sum())
    return ids, inertia


def _final_part(block: tuple[np.ndarray, np.ndarray, np.ndarray],
                state: tuple[np.ndarray, np.ndarray], n_classes: int) -> dict[str, Any]:
    pos, lab, _ = block
    k = state[0].shape[0]
    ids, inertia = _assign(block, state)
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


def final_assignment(reduce: Reduce, result: LloydResult, n_classes: int) -> FinalAssignment:
    """Assign every fit row to the final centres (KMeans' last E-step), by one reduction."""
    r = reduce(_final_part, state=(result.centred, result.mean), n_classes=n_classes)
    return FinalAssignment(r["counts"], r["composition"], float(r["inertia"]), r["pos_first"])


def canonical_from_first(first: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """:func:`~nnsig_core.analysis.assign.canonical_order` from each cluster's first position."""
    present = np.flatnonzero(first >= 0)
    return order_by_first(present, first[present], centers)

