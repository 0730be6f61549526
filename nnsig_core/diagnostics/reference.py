"""One layer's fitted neighbour statistics: the projection and the class-grouped reference rows.

The per-block work of :mod:`nnsig_core.diagnostics.neighbours` (read a block's
rows, normalise, reduce, search the reference): the kernels both drivers of
the executor run, here or on a Dask cluster's workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core._util import l2_normalise
from nnsig_core.analysis.source import STORE_FIX
from nnsig_core.diagnostics.cells import Cells
from nnsig_core.protocol import check_finite, nonfinite_rows


@dataclass(frozen=True)
class LayerRows:
    """A layer of a store's split, as a block kernel reads it: ``rows(raw, lo, keep)`` is the
    block ``raw`` (its first row at ``lo``) flattened to float32, its rows where ``keep``
    holds (all when None), checked for NaN/Inf (the error names the sample)."""

    store: Any
    split: str
    layer: str

    def __getitem__(self, row: int) -> int:
        """The data-set index of the split's row ``row`` (read only when a check fails)."""
        return int(self.store.sample_index(self.split, int(row), int(row) + 1)[0])

    def __call__(self, raw: Any, lo: int, keep: Any = None) -> np.ndarray:
        block = np.asarray(raw).reshape(np.shape(raw)[0], -1)
        where = None if keep is None else np.flatnonzero(np.asarray(keep, dtype=bool))
        if where is not None and where.size < block.shape[0]:
            block = block[where]
        block = block.astype(np.float32, copy=False)
        if nonfinite_rows(block).size:
            rows = lo + (np.arange(block.shape[0]) if where is None else where)
            check_finite(block, layer=self.layer, split=self.split, rows=rows,
                         sample_index=None if self.store is None else self,  # type: ignore[arg-type]
                         fix=STORE_FIX, scope="this chunk")
        return block


def normalise_rows(X: Any, copy: bool = True) -> np.ndarray:
    """Rows divided by their Euclidean norm (zero rows stay zero), float32 (``X`` itself when
    it is float32 and not ``copy``)."""
    return l2_normalise(X, np.float32, copy=copy)


def reduce_rows(block: np.ndarray, mean: np.ndarray,
                components: np.ndarray | None) -> np.ndarray:
    """Reduced coordinates ``(n, r)`` of a layer's rows: normalised, centred on ``mean`` and
    projected on ``components`` (only centred when None)."""
    U = normalise_rows(block) - mean
    return U if components is None else project_rows(U, components)


#: Rows per product of :func:`project_rows`.
PROJECT_ROWS = 256


def project_rows(U: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``U @ components`` in products of :data:`PROJECT_ROWS` rows (the last one padded), so
    that a row's coordinates do not depend on the rows projected with it: BLAS rounds a
    product by its shape (a block of 7 rows, or one, against one of many chunks)."""
    n, d = U.shape
    out = np.empty((n, components.shape[1]), dtype=np.result_type(U, components))
    full = n - n % PROJECT_ROWS
    if full:
        np.matmul(U[:full].reshape(-1, PROJECT_ROWS, d), components,
                  out=out[:full].reshape(-1, PROJECT_ROWS, components.shape[1]))
    if full < n:
        tail = np.zeros((PROJECT_ROWS, d), dtype=U.dtype)
        tail[: n - full] = U[full:]
        out[full:] = (tail @ components)[: n - full]
    return out


class LayerNeighbours:
    """One layer's projection and class-grouped reference rows (see the module doc).

    Attributes
    ----------
    mean_ : ndarray (d,) float32
    components_ : ndarray (d, r) float32 or None
    reference_ : ndarray (N, r) float32
        Reduced reference rows, grouped by class in ``classes_`` order.
    reference_rows_ : ndarray (N,) int64
        Their positions in the fit split (for leave-one-out).
    classes_ : ndarray (C,) int64
    offsets_ : ndarray (C + 1,) int64
        Class ``classes_[i]`` owns ``reference_[offsets_[i]:offsets_[i + 1]]``.
    explained_variance_ratio_ : float
        Share of the normalised rows' variance the reduced space keeps.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray | None, reference: np.ndarray,
                 reference_rows: np.ndarray, offsets: np.ndarray, classes: np.ndarray,
                 explained: float = 1.0) -> None:
        self.mean_ = np.asarray(mean, dtype=np.float32)
        self.components_ = None if components is None else np.asarray(components, np.float32)
        self.reference_ = np.ascontiguousarray(reference, dtype=np.float32)
        self.reference_rows_ = np.asarray(reference_rows, dtype=np.int64)
        self.offsets_ = np.asarray(offsets, dtype=np.int64)
        self.classes_ = np.asarray(classes, dtype=np.int64)
        self.explained_variance_ratio_ = float(explained)
        sq = (self.reference_.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
        # [-2 r, |r|^2] per reference row r: [q, 1] times it is |q - r|^2 - |q|^2, one product.
        self._augmented = np.ascontiguousarray(
            np.hstack([-2.0 * self.reference_, sq[:, None]]).T, dtype=np.float32)
        self._by_row = np.argsort(self.reference_rows_, kind="stable")
        self._cells = Cells(self.reference_, self.offsets_, self._augmented)

    def transform(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reduced coordinates ``(n, r)`` and squared residuals ``(n,)`` of a layer's rows."""
        U = normalise_rows(block) - self.mean_
        if self.components_ is None:
            return U, np.zeros(U.shape[0])
        Z = project_rows(U, self.components_)
        res2 = np.maximum(np.einsum("ij,ij->i", U, U, dtype=np.float64)
                          - np.einsum("ij,ij->i", Z, Z, dtype=np.float64), 0.0)
        return Z, res2

    def _columns_of(self, rows: np.ndarray) -> np.ndarray:
        """Reference column of each fit-split position in ``rows`` (-1 when not a reference row)."""
        sorted_rows = self.reference_rows_[self._by_row]
        i = np.minimum(np.searchsorted(sorted_rows, rows), max(sorted_rows.size - 1, 0))
        hit = sorted_rows.size > 0
        found = hit & (sorted_rows[i] == rows) if hit else np.zeros(rows.size, dtype=bool)
        return np.where(found, self._by_row[i], -1)

    def class_distances(self, block: np.ndarray, n_neighbors: int = 1,
                        exclude_rows: np.ndarray | None = None,
                        block_bytes: int = 64 << 20) -> np.ndarray:
        """``(n, C)``: distance of each row to its ``n_neighbors``-th nearest reference row of
        each class (see the module doc).

        Parameters
        ----------
        block : ndarray (n, d)
            The layer's rows.
        n_neighbors : int
            Which neighbour (1 = the nearest). Capped by the class's reference size.
        exclude_rows : ndarray (n,) of int, optional
            Fit-split positions of the rows: a reference row at the same position is left
            out of that row's search (leave-one-out when scoring the fit split).
        block_bytes : int
            Memory for one block of the distance matrix.
        """
        Z, res2 = self.transform(block)
        n, N = Z.shape[0], self.reference_.shape[0]
        out = np.empty((n, self.classes_.size), dtype=np.float32)
        cols = None if exclude_rows is None else self._columns_of(np.asarray(exclude_rows))
        step = max(1, int(block_bytes) // max(4 * N, 1))
        k = int(n_neighbors)
        q_aug = np.empty((min(step, n), Z.shape[1] + 1), dtype=np.float32)
        q_aug[:, -1] = 1.0
        for s in range(0, n, step):
            q = Z[s : s + step]
            qa = q_aug[: q.shape[0]]
            qa[:, :-1] = q
            D = qa @ self._augmented  # |q - r|^2 - |q|^2: adding |q|^2 keeps every order
            if cols is not None:
                c = cols[s : s + step]
                hit = np.flatnonzero(c >= 0)
                D[hit, c[hit]] = np.inf
            out[s : s + step] = self._kth_per_class(D, k)
            out[s : s + step] += (q * q).sum(axis=1)[:, None]
        np.maximum(out, 0.0, out=out)
        np.sqrt(out + res2[:, None], out=out)
        return out

    def _kth_per_class(self, D2: np.ndarray, k: int) -> np.ndarray:
        if k == 1:
            return np.minimum.reduceat(D2, self.offsets_[:-1], axis=1)
        res = np.empty((D2.shape[0], self.classes_.size), dtype=np.float32)
        for i in range(self.classes_.size):
            part = D2[:, self.offsets_[i] : self.offsets_[i + 1]]
            kk = min(k, part.shape[1]) - 1
            res[:, i] = np.partition(part, kk, axis=1)[:, kk]
        return res

    def own_other(self, distances: np.ndarray, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
        """From :meth:`class_distances`: the distance of the predicted class and the smallest
        distance of another class. An unknown predicted class takes the largest distance."""
        p = np.asarray(predictions, dtype=np.int64).reshape(-1)
        i = np.minimum(np.searchsorted(self.classes_, p), self.classes_.size - 1)
        known = self.classes_[i] == p
        rows = np.arange(p.size)
        own = np.where(known, distances[rows, i], distances.max(axis=1))
        masked = np.array(distances, dtype=np.float64)
        masked[rows[known], i[known]] = np.inf
        other = masked.min(axis=1) if masked.shape[1] > 1 else np.full(p.size, np.inf)
        return own.astype(np.float64), other

    def _distances_to(self, Z: np.ndarray, res2: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float64 distances of the rows ``Z`` (and their squared residuals) to the reference
        rows ``cols`` (inf where -1)."""
        out = np.full(Z.shape[0], np.inf)
        hit = np.flatnonzero(cols >= 0)
        diff = Z[hit].astype(np.float64) - self.reference_[cols[hit]]
        out[hit] = np.sqrt(np.einsum("ij,ij->i", diff, diff) + res2[hit])
        return out

    def own_other_of(self, block: np.ndarray, predictions: Any, n_neighbors: int = 1,
                     exclude_rows: np.ndarray | None = None,
                     block_bytes: int = 64 << 20) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`own_other` of :meth:`class_distances`: a block of rows scored (the block
        function of :func:`neighbour_scores`). With ``n_neighbors=1`` the search skips the
        reference cells that cannot hold the nearest row
        (:class:`~nnsig_core.diagnostics.cells.Cells`; the same distances)."""
        p = np.asarray(predictions, dtype=np.int64).reshape(-1)
        if int(n_neighbors) != 1 or self.classes_.size == 0:
            D = self.class_distances(block, n_neighbors, exclude_rows, block_bytes)
            return self.own_other(D, p)
        i = np.minimum(np.searchsorted(self.classes_, p), self.classes_.size - 1)
        known = self.classes_[i] == p
        Z, res2 = self.transform(block)
        cols = None if exclude_rows is None else self._columns_of(np.asarray(exclude_rows))
        nearest = self._cells.own_other(Z, np.where(known, i, -1), cols, block_bytes)
        # The float32 search ranks; the distances to the rows it found are taken again in
        # float64 row by row, so that they do not depend on the rows searched with them (the
        # search's products, and its |q|^2 - 2 q.r + |r|^2, round by the block's shape).
        own, other = (self._distances_to(Z, res2, cols_) for cols_ in nearest)
        if not known.all():  # an unknown class takes the largest class distance
            u = np.flatnonzero(~known)
            D = self.class_distances(np.asarray(block)[u], 1,
                                     None if exclude_rows is None else
                                     np.asarray(exclude_rows)[u], block_bytes)
            own[u], other[u] = self.own_other(D, p[u])
        return own, other
