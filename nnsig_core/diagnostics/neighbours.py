r"""Class-conditional nearest neighbours: the scorer's own, finer statistics of each layer.

The clusters a person reads are too coarse to score samples with, so the
scorer fits, per analysed layer, from the analysis's correct fit samples: the
rows L2-normalised, reduced on the first ``n_components`` principal axes (plus
the squared residual :math:`\rho^2` the axes leave out), and kept, grouped by
class, as the reference (a class-stratified subsample beyond ``memory_limit``).
A sample gets, per known class :math:`c`, :math:`\delta_c = \sqrt{d_{(k)}^2 +
\rho^2}` (:math:`d_{(k)}`: the reduced distance to the ``n_neighbors``-th
nearest reference row of :math:`c`); :math:`\delta_{own}` is that of its
predicted class (the largest one for an unknown class), :math:`\delta_{other}`
the smallest of the others. Fit samples are scored leave-one-out. Each step is
one block kernel (:func:`_pca_part`, :func:`_reduce_part`,
:func:`_search_part`) run by the executor's driver, here or on a Dask cluster
(``docs/design.md``, "Diagnostics").
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.extmath import randomized_svd
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import MEMORY_SIZE, Interval, NnsigParamsMixin, validate_params
from nnsig_core._util import parse_bytes
from nnsig_core._warnings import warn
from nnsig_core.analysis.pca import COVARIANCE_MAX_FEATURES
from nnsig_core.diagnostics.reference import (
    LayerNeighbours,
    LayerRows,
    normalise_rows,
    project_rows,
    reduce_rows,
)
from nnsig_core.execute.blocks import map_blocks, per_layer, worker_memory
from nnsig_core.execute.client import ClientArg, resolve_client
from nnsig_core.store import ActivationStore, open_store

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
        and reduced on its workers, by the same kernels; the result is the same up to float
        rounding.
        """
        validate_params(self, self._nnsig_constraints)
        store = open_store(store)
        rows = np.asarray(rows, dtype=np.int64)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        if rows.size != y.size or rows.size == 0:
            raise ValueError("rows and labels must be non-empty and of the same length.")
        self.classes_ = sorted(int(c) for c in np.unique(y))
        self.n_fit_samples_ = int(rows.size)
        budget = self._budget()
        client = resolve_client(client)
        # Every worker holds the reference: at most an eighth of the smallest one's memory.
        worker = worker_memory(client)
        if worker is not None and worker // 4 < budget:
            log.info("The scorer's reference is bounded by the workers' memory limit "
                     "(%d MiB) rather than memory_limit.", worker >> 20)
            budget = worker // 4
        rows, y = self._select(rows, y, len(layers), int(self.n_components), budget)
        self.n_reference_ = int(rows.size)
        keep = np.zeros(store.n_samples(split), dtype=bool)
        keep[rows] = True
        self.layers_: dict[str, LayerNeighbours] = {
            name: self._fit_layer(keep, store.activations(split, name),
                                  LayerRows(store, split, name), rows, y, client)
            for name in layers}
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
        keep = np.ones(y.size, dtype=bool)
        self.layers_ = {name: self._fit_layer(keep, np.asarray(X).reshape(y.size, -1),
                                              LayerRows(None, "", name), rows, y, None)
                        for name, X in features.items()}
        return self

    def layer(self, name: str) -> LayerNeighbours:
        """The fitted statistics of layer ``name``."""
        check_is_fitted(self, "layers_")
        return self.layers_[name]

    # ------------------------------------------------------------------ internals
    def _fit_layer(self, keep: np.ndarray, layer: Any, read: LayerRows, rows: np.ndarray,
                   y: np.ndarray, client: Any) -> LayerNeighbours:
        """One layer from its rows where ``keep`` holds (``layer``: the split's array). When
        their normalised rows fit (:meth:`_fits`) one pass brings them all back and they are
        reduced here; else one pass brings back those the mean and axes are computed from
        (:meth:`_pca_pick`) and a second the reduced rows."""
        n, d = int(rows.size), int(np.prod(layer.shape[1:], dtype=np.int64))
        local = max(self._budget() // 16, 1 << 20)
        if self._fits(n, d):
            U = map_blocks(_pca_part, [keep, layer], client=client, local_bytes=local,
                           read=read)["rows"]
            mean, comps, explained = self._pca(U)
            U -= mean
            return self._layer(mean, comps, U if comps is None else project_rows(U, comps),
                               rows, y, explained)
        picked = np.zeros_like(keep)
        picked[np.flatnonzero(keep)[self._pca_pick(n, d, read.layer)]] = True
        S = map_blocks(_pca_part, [picked, layer], client=client, local_bytes=local,
                       read=read)["rows"]
        mean, comps, explained = self._pca(S)
        Z = map_blocks(_reduce_part, [keep, layer], client=client, local_bytes=local,
                       read=read, model=(mean, comps))["z"]
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
        total = float(np.einsum("ij,ij->", C, C, dtype=np.float64))  # no float64 copy of C
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


def _pca_part(picked: np.ndarray, raw: Any, *, lo: int, read: LayerRows) -> dict[str, Any]:
    """A block's normalised rows where ``picked`` holds."""
    block = read(raw, lo, picked)  # in place when ``read`` copied it
    return {"rows": [normalise_rows(block, copy=np.may_share_memory(block, raw))]}


def _reduce_part(keep: np.ndarray, raw: Any, *, lo: int, read: LayerRows,
                 model: tuple[np.ndarray, np.ndarray | None]) -> dict[str, Any]:
    return {"z": [reduce_rows(read(raw, lo, keep), *model)]}


def _search_part(keep: np.ndarray, preds: np.ndarray, raw: Any, *, lo: int, read: LayerRows,
                 model: LayerNeighbours, n_neighbors: int, leave_one_out: bool,
                 block_bytes: int) -> dict[str, Any]:
    """The own and other distances of a block's rows where ``keep`` holds."""
    keep = np.asarray(keep, dtype=bool)
    pos = lo + np.flatnonzero(keep) if leave_one_out else None
    own, other = model.own_other_of(read(raw, lo, keep), np.asarray(preds)[keep], n_neighbors,
                                    pos, block_bytes)
    return {"own": [own], "other": [other]}


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
        any; ``False``: here), with the fitted statistics sent once to its workers.
    """
    store = open_store(store)
    client = resolve_client(client)
    n = store.n_samples(split)
    keep = np.ones(n, dtype=bool)
    if rows is not None:
        keep[:] = False
        keep[np.asarray(rows, dtype=np.int64)] = True
    preds = np.zeros(n, dtype=np.int64)
    preds[keep] = np.asarray(predictions, dtype=np.int64).reshape(-1)
    worker = worker_memory(client)
    if worker is not None:  # a distance matrix of at most 1/32 of a worker's memory
        block_bytes = max(1 << 20, min(int(block_bytes), worker // 32))

    def search(name: str) -> dict[str, np.ndarray]:
        got = map_blocks(_search_part, [keep, preds, store.activations(split, name)],
                         client=client, read=LayerRows(store, split, name),
                         model=neighbours.layers_[name], n_neighbors=int(n_neighbors),
                         leave_one_out=bool(leave_one_out), block_bytes=int(block_bytes))
        return component_logs(got["own"], got["other"])

    names = list(neighbours.layers_)
    return dict(zip(names, per_layer(search, names, client), strict=True))


def component_logs(own: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """``{"distance": log own, "margin": log own - log other}`` (a tiny floor keeps a zero
    distance finite; with no other class the margin is 0)."""
    lo = np.log(np.maximum(own, 1e-9))
    with np.errstate(invalid="ignore"):
        margin = np.where(np.isfinite(other), lo - np.log(np.maximum(other, 1e-9)), 0.0)
    return {"distance": lo, "margin": margin}
