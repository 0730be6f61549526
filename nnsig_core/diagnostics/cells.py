r"""An exact nearest-neighbour search that skips most reference rows: cells with bounds.

Each class's reference rows are cut into cells of about :data:`CELL_ROWS`
rows (a few Lloyd iterations) with a centre :math:`c` and a radius
:math:`\rho`; no row of a cell is nearer a query :math:`q` than
:math:`\max(\lVert q - c \rVert - \rho, 0)`. A query searches the cell of its
nearest centre on each side (own class, other classes), which bounds the two
distances, then only the cells whose bound is below them (:data:`SLACK` for
float32 rounding). Before a cell of that second round is searched, the
distances over the first :data:`PARTIAL_DIMS` coordinates (a lower bound of
the whole distance: the coordinates are orthogonal) rule it out for the
queries none of its rows can reach. Each searched cell is the brute force's
product ``[q, 1] @ [-2 r, |r|^2]``, so the rows found are the brute force's; a
leave-one-out row is left out of its own cell. The search returns the rows,
not its float32 distances, which round by the shape of each product: the
caller measures the distances to them again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

#: Reference rows per cell, about.
CELL_ROWS = 256
#: Lloyd iterations of a class's cells.
CELL_ITERATIONS = 4
#: A cell is searched while its bound is below ``best * (1 + SLACK) + SLACK`` (float32 error).
SLACK = 2e-3
#: Scored rows per step at most (their bounds to every cell are held at once).
STEP_ROWS = 16384
#: Leading coordinates of the partial-distance test (when rows have over twice as many).
PARTIAL_DIMS = 16


def search_threads() -> int:
    """Threads the search runs its steps on: as many as BLAS may use here (its products run
    on one thread each). One in a Dask worker, whose nanny limits BLAS to one thread."""
    blas = [int(i.get("num_threads", 1)) for i in threadpool_info()
            if i.get("user_api") == "blas"]
    return max(1, min(blas, default=1))


def _sq_dists(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    return np.maximum((X * X).sum(1)[:, None] - 2.0 * X @ C.T + (C * C).sum(1)[None], 0.0)


class Cells:
    """The cells of a class-grouped reference (see the module doc).

    Parameters
    ----------
    reference : ndarray (N, r) float32
        Rows grouped by class: class ``i`` owns ``reference[offsets[i]:offsets[i + 1]]``.
    offsets : ndarray (C + 1,) int64
    augmented : ndarray (r + 1, N) float32
        ``[-2 r, |r|^2]`` per reference row (columns in reference order).
    seed : int
    """

    def __init__(self, reference: np.ndarray, offsets: np.ndarray, augmented: np.ndarray,
                 seed: int = 0) -> None:
        with threadpool_limits(1, user_api="blas"):  # small products: one thread each
            self._build(reference, offsets, augmented, np.random.default_rng(seed))

    def _build(self, reference: np.ndarray, offsets: np.ndarray, augmented: np.ndarray,
               rng: np.random.Generator) -> None:
        order, bounds, centres, radii, owner = [], [0], [], [], []
        for i in range(offsets.size - 1):
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            if hi == lo:
                continue
            X = reference[lo:hi].astype(np.float64)
            k = max(1, (hi - lo) // CELL_ROWS)
            C = X[rng.choice(hi - lo, k, replace=False)]
            for _ in range(CELL_ITERATIONS):
                a = _sq_dists(X, C).argmin(1)
                n = np.bincount(a, minlength=k)
                filled = np.flatnonzero(n)
                starts = np.r_[0, np.cumsum(n)[:-1]][filled]
                C[filled] = np.add.reduceat(X[np.argsort(a, kind="stable")], starts) / \
                    n[filled, None]
            d2 = _sq_dists(X, C)
            a = d2.argmin(1)
            for j in range(k):
                mine = np.flatnonzero(a == j)
                if mine.size:
                    order.append(lo + mine)
                    bounds.append(bounds[-1] + mine.size)
                    centres.append(C[j])
                    radii.append(float(np.sqrt(d2[mine, j].max())))
                    owner.append(i)
        self.order = np.concatenate(order) if order else np.zeros(0, np.int64)
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.centres = np.asarray(centres, dtype=np.float64).reshape(len(centres), -1)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.owner = np.asarray(owner, dtype=np.int64)
        self.augmented = [np.ascontiguousarray(augmented[:, self.order[a:b]])
                          for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True)]
        #: ``[-2 r[:m], |r[:m]|^2]`` per cell (None: rows too narrow for the test).
        self.partial_dims = PARTIAL_DIMS if reference.shape[1] > 2 * PARTIAL_DIMS else None
        self.partial: list[np.ndarray] = []
        if self.partial_dims is not None:
            m = self.partial_dims
            for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True):
                R = reference[self.order[a:b], :m].astype(np.float64)
                self.partial.append(np.ascontiguousarray(
                    np.vstack([-2.0 * R.T, (R * R).sum(1)[None]]), dtype=np.float32))
        #: Position, in cell order, of each reference row.
        self.position = np.empty(self.order.size, dtype=np.int64)
        self.position[self.order] = np.arange(self.order.size)
        self.cell_of = np.repeat(np.arange(self.owner.size), np.diff(self.bounds))

    def own_other(self, Z: np.ndarray, own_class: np.ndarray, exclude: np.ndarray | None,
                  block_bytes: int = 64 << 20) -> tuple[np.ndarray, np.ndarray]:
        """The reference columns (reference order; -1 when none) of the nearest reference row
        of class index ``own_class`` and of any other class, for each row of ``Z`` (float32
        ``(n, r)``), as the brute force's float32 ``|q - r|^2 - |q|^2`` ranks them.

        ``exclude``: per row, a reference column (reference order) left out of its search,
        or -1. ``block_bytes``: memory for a step's bounds (rows x cells, a few arrays).
        """
        n = Z.shape[0]
        own = np.full(n, -1, dtype=np.int64)
        other = np.full(n, -1, dtype=np.int64)
        threads = search_threads()
        # Steps share block_bytes; at least two per thread, so that both keep busy.
        step = max(1, min(STEP_ROWS, int(block_bytes) // max(24 * self.owner.size * threads, 1),
                          -(-n // (2 * threads))))

        def run(s: int) -> None:
            sl = slice(s, min(s + step, n))
            ex = None if exclude is None else exclude[sl]
            own[sl], other[sl] = self._step(Z[sl], own_class[sl], ex)

        # Many small products: one BLAS thread each, the steps on `threads` threads (the limit
        # is process-wide, so it is set once here, around them all).
        with threadpool_limits(1, user_api="blas"):
            if threads == 1:
                for s in range(0, n, step):
                    run(s)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(run, range(0, n, step)))
        return own, other

    def _step(self, Z: np.ndarray, mine: np.ndarray,
              exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The reference columns of the nearest own and other rows of a step's rows."""
        n = Z.shape[0]
        Z64 = Z.astype(np.float64)
        q2 = (Z64**2).sum(1)
        Q = np.empty((n, Z.shape[1] + 1), dtype=np.float32)
        Q[:, :-1], Q[:, -1] = Z, 1.0
        centre = np.sqrt(_sq_dists(Z64, self.centres))
        lower = np.maximum(centre - self.radii[None], 0.0)
        same = self.owner[None, :] == mine[:, None]
        best = np.full((2, n), np.inf, dtype=np.float32)  # |q - r|^2 - |q|^2: own, other
        at = np.full((2, n), -1, dtype=np.int64)  # their positions in cell order
        # 1. the cell of the nearest centre on each side: upper bounds
        first = np.zeros(lower.shape, dtype=bool)
        rows = np.arange(n)
        for side in (same, ~same):
            has = side.any(1)
            pick = np.where(side, centre, np.inf).argmin(1)
            first[rows[has], pick[has]] = True
        self._search(Q, first, same, exclude, best, at)
        # 2. every other cell that may hold a nearer row
        upper = np.sqrt(np.maximum(best + q2[None], 0.0))
        reach = upper * (1 + SLACK) + SLACK  # (2, n): own, other
        near = lower < np.where(same, reach[0][:, None], reach[1][:, None])
        partial = None
        if self.partial_dims is not None:
            m = self.partial_dims
            P = np.empty((n, m + 1), dtype=np.float32)
            P[:, :-1], P[:, -1] = Z[:, :m], 1.0
            # Searched where a row's partial |q - r|^2 may be below reach^2.
            partial = (P, (reach * reach - (Z64[:, :m] ** 2).sum(1)[None]).astype(np.float32))
        self._search(Q, near & ~first, same, exclude, best, at, partial)
        found = at >= 0
        return (np.where(found[0], self.order[np.maximum(at[0], 0)], -1),
                np.where(found[1], self.order[np.maximum(at[1], 0)], -1))

    def _search(self, Q: np.ndarray, need: np.ndarray, same: np.ndarray,
                exclude: np.ndarray | None, best: np.ndarray, at: np.ndarray,
                partial: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Search the cells ``need[:, k]`` for the rows that need them, into ``best`` and
        ``at`` (``partial``: the rows ``[q[:m], 1]`` and, per side, the bound below which the
        partial ``|q - r|^2 - |q[:m]|^2`` of one of a cell's rows makes it searched)."""
        need_t = np.ascontiguousarray(need.T)
        for k in np.flatnonzero(need_t.any(1)):
            self._cell(int(k), Q, need_t[k], same, exclude, best, at, partial)

    def _cell(self, k: int, Q: np.ndarray, need: np.ndarray, same: np.ndarray,
              exclude: np.ndarray | None, best: np.ndarray, at: np.ndarray,
              partial: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Search cell ``k`` for the rows ``need`` (a mask), into ``best`` and ``at``."""
        qs = np.flatnonzero(need)
        if partial is not None:
            P, bound = partial
            lowest = (P[qs] @ self.partial[k]).min(1)
            qs = qs[lowest < bound[np.where(same[qs, k], 0, 1), qs]]
            if not qs.size:
                return
        D = Q[qs] @ self.augmented[k]
        if exclude is not None:
            ex = exclude[qs]
            hit = np.flatnonzero(ex >= 0)
            hit = hit[self.cell_of[self.position[ex[hit]]] == k]
            D[hit, self.position[ex[hit]] - self.bounds[k]] = np.inf
        side = np.where(same[qs, k], 0, 1)
        j = D.argmin(1)
        d = D[np.arange(qs.size), j]
        nearer = d < best[side, qs]
        qs, side = qs[nearer], side[nearer]
        best[side, qs] = d[nearer]
        at[side, qs] = self.bounds[k] + j[nearer]
