r"""Class-conditional nearest neighbours: the scorer's own, finer statistics of each layer.

The clusters a person reads (about ten per layer, shared by the classes) are
too coarse to score samples with: a misclassified or unfamiliar input often
lands in a big cluster of its predicted class all the same. The scorer
therefore keeps its own statistics, fitted from the analysis's fit samples
(the correctly classified ones of the fitted classes) without changing the
analysis. For each analysed layer:

1. **Normalise**: :math:`u = h / \lVert h \rVert` (in a ReLU layer the norm
   mostly says how strongly the units fire, the direction which ones fire).
2. **Reduce**: :math:`z = (u - \bar u) V_r` on the first ``n_components``
   principal axes of the normalised fit rows (computed on a random subsample
   of at most ``pca_rows`` rows), and the squared residual
   :math:`\rho^2 = \lVert u - \bar u \rVert^2 - \lVert z \rVert^2` that the
   axes leave out. A layer with at most ``n_components`` units is only centred
   (:math:`\rho = 0`).
3. **Reference**: the reduced fit rows, grouped by class: every fit sample is
   its own tiny cluster of one class (a random, class-stratified subsample when
   they do not fit ``memory_limit``).

A sample in a layer then gets, for each known class :math:`c`,
:math:`\delta_c = \sqrt{d_{(k)}^2 + \rho^2}` where :math:`d_{(k)}` is the
distance in the reduced space to the ``n_neighbors``-th nearest reference row
of class :math:`c` (so :math:`\delta_c` is the distance from the sample to
that reference row's projection). With :math:`\hat c` its predicted class:
:math:`\delta_{own} = \delta_{\hat c}` and :math:`\delta_{other} =
\min_{c \ne \hat c} \delta_c`. A prediction that is not a known class gets
the largest :math:`\delta_c` as :math:`\delta_{own}`.

When the scored split is the fit split, each reference row is left out of
its own search (leave-one-out), so fit samples are scored like unseen ones.

Cost: one matrix product of the scored rows with the reference per layer,
``n x N x n_components`` multiply-adds, in blocks bounded by
``memory_limit``.

What runs where: without a client, everything here, reading the store chunk
by chunk. With a Dask client (``client=`` of :meth:`ClassNeighbours.fit` and
:func:`neighbour_scores`), the layers are read and reduced per block on the
workers (:func:`~nnsig_core.distributed.neighbours.fit_neighbours`,
:func:`~nnsig_core.distributed.neighbours.neighbour_scores_on`): the fit
brings back only the normalised rows the principal axes are computed from (at
most ``pca_rows``), the per-block sums of the normalised rows when the mean is
taken over every reference row, and the reduced reference rows; the fitted
:class:`LayerNeighbours` (a bounded model, like centroids) is broadcast to the
workers, which search each block of the scored rows and return two floats
per sample and layer. The block functions (:func:`reduce_rows`,
:meth:`LayerNeighbours.own_other_of`) are the same in both paths.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.extmath import randomized_svd
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import MEMORY_SIZE, Interval, NnsigParamsMixin, validate_params
from nnsig_core._util import parse_bytes
from nnsig_core._warnings import warn
from nnsig_core.analysis.pca import COVARIANCE_MAX_FEATURES
from nnsig_core.analysis.source import StoreSource
from nnsig_core.diagnostics.reference import LayerNeighbours, normalise_rows, reduce_rows
from nnsig_core.execute.client import ClientArg, resolve_client
from nnsig_core.store import ActivationStore

log = logging.getLogger("nnsig")

class ClassNeighbours(NnsigParamsMixin, BaseEstimator):
    """Fit :class:`LayerNeighbours` for the layers of a store's split (see the module doc).

    Parameters
    ----------
    n_components : int
        Dimension of the reduced space.
    pca_rows : int
        Fit rows the principal axes are computed from, at most.
    memory_limit : int or str
        Budget for the reference rows of all layers together (half of it) and
        for reading a layer's fit rows.
    random_state : int or None

    Attributes
    ----------
    layers_ : dict of str to LayerNeighbours
    classes_ : list of int
    n_fit_samples_ : int
    n_reference_ : int
        Reference rows per layer (fewer than the fit samples when subsampled).
    """

    _nnsig_constraints = {
        "n_components": [Interval(numbers.Integral, 1)],
        "pca_rows": [Interval(numbers.Integral, 2)],
        "memory_limit": [MEMORY_SIZE],
        "random_state": [numbers.Integral, None],
    }

    def __init__(self, *, n_components: int = 64, pca_rows: int = 20000,
                 memory_limit: int | str = "1GiB", random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.pca_rows = pca_rows
        self.memory_limit = memory_limit
        self.random_state = random_state

    def _budget(self) -> int:
        return max(parse_bytes(self.memory_limit), 1)

    def _select(self, rows: np.ndarray, y: np.ndarray, n_layers: int, width: int,
                budget: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The reference rows (sorted positions) and labels: all, or a class-stratified
        random subsample when the reduced rows of every layer would exceed half ``budget``
        (default: ``memory_limit``)."""
        budget = self._budget() if budget is None else budget
        cap = max(1, (budget // 2) // max(4 * width * n_layers, 1))
        if rows.size <= cap:
            return rows, y
        rng = np.random.default_rng(self.random_state)
        keep = np.zeros(rows.size, dtype=bool)
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            take = max(1, int(round(cap * idx.size / rows.size)))
            keep[rng.choice(idx, min(take, idx.size), replace=False)] = True
        warn(f"The scorer keeps {int(keep.sum())} of {rows.size} fit samples as its "
             "nearest-neighbour reference (a class-stratified random subsample) to stay within "
             "memory_limit; raise memory_limit to use all.")
        return rows[keep], y[keep]

    def fit(self, store: ActivationStore, split: str, rows: np.ndarray, labels: np.ndarray,
            layers: Sequence[str], *, client: ClientArg = None) -> ClassNeighbours:
        """Fit on the samples ``rows`` (sorted positions) of ``split``, of classes ``labels``.

        With a Dask client (given, or the active one; ``False``: here) the layers are read
        and reduced on its workers (:func:`~nnsig_core.distributed.neighbours.fit_neighbours`);
        the result is the same up to float rounding.
        """
        validate_params(self, self._nnsig_constraints)
        rows = np.asarray(rows, dtype=np.int64)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        if rows.size != y.size or rows.size == 0:
            raise ValueError("rows and labels must be non-empty and of the same length.")
        self.classes_ = sorted(int(c) for c in np.unique(y))
        self.n_fit_samples_ = int(rows.size)
        budget = self._budget()
        if (client := resolve_client(client)) is not None:
            from nnsig_core.execute.dask_blocks import smallest_worker_memory

            # Every worker holds the reference: at most an eighth of the smallest one's memory.
            worker = smallest_worker_memory(client)
            if worker is not None and worker // 4 < budget:
                log.info("The scorer's reference is bounded by the workers' memory limit "
                         "(%d MiB) rather than memory_limit.", worker >> 20)
                budget = worker // 4
        rows, y = self._select(rows, y, len(layers), int(self.n_components), budget)
        self.n_reference_ = int(rows.size)
        self.layers_: dict[str, LayerNeighbours] = {}
        if client is not None:
            from nnsig_core.distributed.neighbours import fit_neighbours

            self.layers_ = fit_neighbours(self, store, split, rows, y, layers, client)
            return self
        read = max(self._budget() // 16, 1 << 20)
        for name in layers:
            def source(idx: np.ndarray | None, name: str = name) -> StoreSource:
                return StoreSource(store, split, name, rows if idx is None else rows[idx],
                                   read_bytes=read)
            self.layers_[name] = self._fit_layer(source, rows, y, name)
        return self

    def fit_arrays(self, features: dict[str, Any], labels: Any,
                   rows: Any | None = None) -> ClassNeighbours:
        """Fit from rows in memory: ``{layer: (n, ...)}``, their classes, and optionally their
        positions in the fit split (default ``0..n-1``)."""
        validate_params(self, self._nnsig_constraints)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        rows = np.arange(y.size) if rows is None else np.asarray(rows, dtype=np.int64)
        self.classes_ = sorted(int(c) for c in np.unique(y))
        self.n_fit_samples_ = self.n_reference_ = int(y.size)
        self.layers_ = {}
        for name, X in features.items():
            X = np.asarray(X, dtype=np.float32).reshape(y.size, -1)
            def source(idx: np.ndarray | None, X: np.ndarray = X) -> _ArraySource:
                return _ArraySource(X if idx is None else X[idx])
            self.layers_[name] = self._fit_layer(source, rows, y, name)
        return self

    def layer(self, name: str) -> LayerNeighbours:
        """The fitted statistics of layer ``name``."""
        check_is_fitted(self, "layers_")
        return self.layers_[name]

    # ------------------------------------------------------------------ internals
    def _fit_layer(self, source: Callable[[np.ndarray | None], Any], rows: np.ndarray,
                   y: np.ndarray, name: str) -> LayerNeighbours:
        """``source(idx)``: the layer's rows ``rows[idx]`` (all when None), readable by
        ``gather`` and ``blocks``."""
        src = source(None)
        d = src.n_features
        if self._fits(src.n_rows, d):
            U = normalise_rows(src.gather(np.empty((src.n_rows, d), np.float32), "neighbours"))
            mean, comps, explained = self._pca(U)
            U -= mean
            Z = U if comps is None else U @ comps
            del U
        else:
            pick = self._pca_pick(src.n_rows, d, name)
            S = source(pick).gather(np.empty((pick.size, d), np.float32), "neighbours")
            mean, comps, explained = self._pca(normalise_rows(S))
            del S
            Z = np.empty((src.n_rows, d if comps is None else comps.shape[1]), np.float32)
            o = 0
            for _, block in src.blocks("neighbours"):
                Z[o : o + block.shape[0]] = reduce_rows(block, mean, comps)
                o += block.shape[0]
        return self._layer(mean, comps, Z, rows, y, explained)

    def _fits(self, n_rows: int, d: int) -> bool:
        """A layer's normalised reference rows fit half the budget: its mean is taken over all
        of them (else over :meth:`_pca_pick`'s)."""
        return n_rows * d * 4 <= self._budget() // 2

    def _pca_pick(self, n_rows: int, d: int, name: str) -> np.ndarray:
        """Sorted positions, among layer ``name``'s reference rows, of the rows its mean and
        axes are computed from when they do not all fit (:meth:`_fits`)."""
        rng = np.random.default_rng(self.random_state)
        cap = max(2, min(int(self.pca_rows), (self._budget() // 4) // max(4 * d, 1)))
        pick = np.sort(rng.choice(n_rows, min(cap, n_rows), replace=False))
        log.info("Layer %r: principal axes from %d of %d rows (memory_limit).", name,
                 pick.size, n_rows)
        return pick

    def _layer(self, mean: np.ndarray, comps: np.ndarray | None, Z: np.ndarray,
               rows: np.ndarray, y: np.ndarray, explained: float) -> LayerNeighbours:
        """The fitted layer from its reduced reference rows ``Z`` (in ``rows`` order)."""
        order = np.argsort(y, kind="stable")
        classes = np.asarray(self.classes_, dtype=np.int64)
        offsets = np.r_[np.searchsorted(y[order], classes), y.size].astype(np.int64)
        return LayerNeighbours(mean, comps, Z[order], rows[order], offsets, classes, explained)

    def _pca(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        mean = U.mean(axis=0, dtype=np.float64).astype(np.float32)
        if U.shape[1] <= int(self.n_components):
            return mean, None, 1.0
        pick = self._svd_pick(U.shape[0])
        return (mean, *self._axes(U if pick is None else U[pick], mean))

    def _svd_pick(self, n_rows: int) -> np.ndarray | None:
        """Sorted positions of the (at most ``pca_rows``) rows the axes are computed from;
        None: all."""
        if n_rows <= self.pca_rows:
            return None
        rng = np.random.default_rng(self.random_state)
        return np.sort(rng.choice(n_rows, int(self.pca_rows), replace=False))

    def _axes(self, sub: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray | None, float]:
        """The first ``n_components`` principal axes ``(d, r)`` of the normalised rows ``sub``
        about ``mean``, and the share of their variance kept (None, 1.0 for a narrow layer)."""
        r = int(self.n_components)
        if sub.shape[1] <= r:
            return None, 1.0
        C = sub - mean
        total = float((C.astype(np.float64) ** 2).sum())
        k = min(r, *C.shape)
        if C.shape[1] <= COVARIANCE_MAX_FEATURES and C.shape[0] > C.shape[1]:
            # Exact, and cheaper than a randomized SVD of the rows: the eigenvectors of the
            # d x d scatter matrix (one float32 product over the rows, an eigh in float64).
            w, V = np.linalg.eigh((C.T @ C).astype(np.float64))
            top = np.argsort(w)[::-1][:k]
            s, Vt = np.sqrt(np.maximum(w[top], 0.0)), V[:, top].T
        elif min(C.shape) > 4 * k:
            _, s, Vt = randomized_svd(C, k, n_oversamples=16, n_iter=4,
                                      random_state=self.random_state)
        else:
            _, s, Vt = np.linalg.svd(C, full_matrices=False)
            s, Vt = s[:k], Vt[:k]
        explained = float((s.astype(np.float64) ** 2).sum() / total) if total > 0 else 1.0
        return np.ascontiguousarray(Vt.T, dtype=np.float32), explained


class _ArraySource:
    """In-memory rows with the part of :class:`StoreSource`'s interface the fit uses."""

    def __init__(self, X: np.ndarray, block_rows: int = 4096) -> None:
        self.X = X
        self.n_rows, self.n_features = int(X.shape[0]), int(X.shape[1])
        self.block_rows = block_rows

    def gather(self, out: np.ndarray, desc: str = "") -> np.ndarray:
        out[...] = self.X
        return out

    def blocks(self, desc: str = "") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for s in range(0, self.n_rows, self.block_rows):
            yield np.arange(s, min(s + self.block_rows, self.n_rows)), self.X[s : s + self.block_rows]


def neighbour_scores(
    neighbours: ClassNeighbours,
    store: ActivationStore,
    split: str,
    rows: np.ndarray | None,
    predictions: np.ndarray,
    *,
    n_neighbors: int = 1,
    leave_one_out: bool = False,
    block_bytes: int = 64 << 20,
    client: ClientArg = None,
) -> dict[str, dict[str, np.ndarray]]:
    r"""Per layer, the distance and margin components of the samples ``rows`` of ``split``.

    ``distance`` is :math:`\log \delta_{own}` and ``margin`` is
    :math:`\log \delta_{own} - \log \delta_{other}` (positive when the sample
    sits nearer another class's reference rows than its predicted class's);
    see the module doc.

    Parameters
    ----------
    neighbours : ClassNeighbours
        Fitted.
    store, split
        Where the rows are read from (each analysed layer once, chunk by chunk).
    rows : ndarray of int or None
        Sorted positions in ``split``; None: every sample.
    predictions : ndarray (n,)
        Predicted classes of those samples.
    n_neighbors : int
    leave_one_out : bool
        ``split`` is the fit split: leave each sample's own reference row out.
    block_bytes : int
        Memory for one block of the distance matrix.
    client : dask.distributed.Client, None or False
        Read and search the blocks on this Dask cluster (``None``: the active client, if
        any; ``False``: here), with the fitted statistics broadcast to its workers
        (:func:`~nnsig_core.distributed.neighbours.neighbour_scores_on`).
    """
    p = np.asarray(predictions, dtype=np.int64).reshape(-1)
    if (client := resolve_client(client)) is not None:
        from nnsig_core.distributed.neighbours import neighbour_scores_on

        pairs = neighbour_scores_on(neighbours, store, split, rows, p, n_neighbors,
                                    leave_one_out, block_bytes, client)
        return {name: component_logs(own, other) for name, (own, other) in pairs.items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, ln in neighbours.layers_.items():
        own = np.empty(p.size)
        other = np.empty(p.size)
        o = 0
        for pos, block in StoreSource(store, split, name, rows).blocks("scores"):
            sl = slice(o, o + block.shape[0])
            o += block.shape[0]
            own[sl], other[sl] = ln.own_other_of(block, p[sl], n_neighbors,
                                                 pos if leave_one_out else None, block_bytes)
        out[name] = component_logs(own, other)
    return out


def component_logs(own: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """``{"distance": log own, "margin": log own - log other}`` (a tiny floor keeps a zero
    distance finite; with no other class the margin is 0)."""
    lo = np.log(np.maximum(own, 1e-9))
    with np.errstate(invalid="ignore"):
        margin = np.where(np.isfinite(other), lo - np.log(np.maximum(other, 1e-9)), 0.0)
    return {"distance": lo, "margin": margin}
