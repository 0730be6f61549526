"""The scorer's neighbour statistics on a Dask cluster, fitted and searched per block.

:class:`~nnsig_core.diagnostics.neighbours.ClassNeighbours` (behind the
default ``combined`` score) delegates here when it has a client
(:func:`fit_neighbours`, :func:`neighbour_scores_on`): the reference rows of
each layer are read, normalised and reduced on the workers; only the rows the
principal axes are computed from (the single-process fit's draws, at most
``pca_rows``), the per-block sums of the normalised rows and the reduced
reference rows (bounded by ``memory_limit``, and on a cluster by an eighth of
the smallest worker's memory) come back. The fitted state (mean, axes,
reference rows per class) is a bounded model like the centroids: it is
computed on the driver and broadcast, and each block of a scored split (or of
the fit split's reference and misclassified samples, leave-one-out) returns
its samples' own and other distances, two floats per sample and layer. The
block functions (:func:`~nnsig_core.diagnostics.reference.reduce_rows`,
:meth:`~nnsig_core.diagnostics.reference.LayerNeighbours.own_other_of`) are
those of the single-process path, so the numbers are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nnsig_core.diagnostics.reference import LayerNeighbours, normalise_rows, reduce_rows
from nnsig_core.distributed.reductions import SplitBlocks, _flat_checked, _LayerCheck
from nnsig_core.execute.dask_blocks import broadcast, release, smallest_worker_memory
from nnsig_core.store import open_store


def _held(blocks: SplitBlocks, rows: np.ndarray | None) -> list[tuple[int, slice, Any]]:
    """Per block holding any of ``rows`` (sorted positions; None: all): its index, the slice of
    the rows' vectors it holds (of the split's when ``rows`` is None), and their positions in
    the block (None: all its rows)."""
    out: list[tuple[int, slice, Any]] = []
    for i, (lo, hi) in enumerate(blocks.bounds):
        if rows is None:
            out.append((i, slice(lo, hi), None))
            continue
        a, b = (int(v) for v in np.searchsorted(rows, [lo, hi]))
        if a < b:
            out.append((i, slice(a, b), None if b - a == hi - lo else rows[a:b] - lo))
    return out


def _compute_by_name(client: Any, parts: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Compute every list of delayed values of ``parts`` in one go, results by key."""
    flat = [p for v in parts.values() for p in v]
    got = client.compute(flat, sync=True)
    out, o = {}, 0
    for name, v in parts.items():
        out[name], o = got[o : o + len(v)], o + len(v)
    return out


def _pca_block(raw: np.ndarray, lo: int, idx: np.ndarray | None, check: _LayerCheck,
               take: np.ndarray, with_sum: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A block's normalised reference rows at ``take`` (positions among them) and, with
    ``with_sum``, the float64 sum of all of them."""
    U = normalise_rows(_flat_checked(raw, lo, check, idx))
    return U[take], (U.sum(axis=0, dtype=np.float64) if with_sum else None)


def _reduced_block(raw: np.ndarray, lo: int, idx: np.ndarray | None, check: _LayerCheck,
                   model: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
    return reduce_rows(_flat_checked(raw, lo, check, idx), *model)


def fit_neighbours(neighbours: Any, store: Any, split: str, rows: np.ndarray, y: np.ndarray,
                   layers: Sequence[str], client: Any) -> dict[str, LayerNeighbours]:
    """``ClassNeighbours.fit``'s layers read and reduced on the cluster, from its reference
    rows ``rows`` (sorted positions in ``split``, already subsampled) of classes ``y``.

    Two passes over the blocks holding reference rows, all layers together. The first brings
    back, per layer, the normalised rows the mean and axes are computed from (the
    single-process fit's draws: at most ``pca_rows``) and, when the mean is taken over every
    reference row, each block's float64 sum of them; the axes are computed here and
    broadcast. The second brings back the reduced reference rows (bounded by
    ``memory_limit``).
    """
    from dask import delayed

    store = open_store(store)
    blocks = SplitBlocks(client, store, split)
    held = _held(blocks, rows)
    n, r = int(rows.size), int(neighbours.n_components)
    checks: dict[str, Any] = {}
    raws: dict[str, Any] = {}
    pca_parts: dict[str, list[Any]] = {}
    plans: dict[str, Any] = {}
    for name in layers:
        d = int(np.prod(store.activations(split, name).shape[1:], dtype=np.int64))
        fits = neighbours._fits(n, d)
        if fits:
            pick = neighbours._svd_pick(n) if d > r else np.empty(0, np.int64)
            pick = np.arange(n) if pick is None else pick
        else:
            pick = neighbours._pca_pick(n, d, name)
        plans[name] = fits
        checks[name] = broadcast(client, _LayerCheck(store, split, name))
        raws[name] = blocks.layer(name).to_delayed().ravel()
        pca_parts[name] = []
        for i, sl, idx in held:
            a, b = np.searchsorted(pick, [sl.start, sl.stop])
            if fits or a < b:
                pca_parts[name].append(delayed(_pca_block)(
                    raws[name][i], blocks.bounds[i][0], idx, checks[name],
                    pick[a:b] - sl.start, fits))
    got = _compute_by_name(client, pca_parts)
    models, fitted = {}, {}
    for name in layers:
        S = np.concatenate([g[0] for g in got[name]])
        if plans[name]:
            mean = (np.sum([g[1] for g in got[name]], axis=0) / n).astype(np.float32)
            fitted[name] = (mean, *neighbours._axes(S, mean))
        else:
            fitted[name] = neighbours._pca(S)
        models[name] = broadcast(client, fitted[name][:2])
    reduced = {name: [delayed(_reduced_block)(raws[name][i], blocks.bounds[i][0], idx,
                                              checks[name], models[name])
                      for i, _, idx in held] for name in layers}
    got = _compute_by_name(client, reduced)
    release(client, *checks.values(), *models.values())
    return {name: neighbours._layer(fitted[name][0], fitted[name][1], np.concatenate(got[name]),
                                    rows, y, fitted[name][2]) for name in layers}


def _neighbour_block(raw: np.ndarray, lo: int, idx: np.ndarray | None, check: _LayerCheck,
                     ln: LayerNeighbours, preds: np.ndarray, n_neighbors: int,
                     leave_one_out: bool, block_bytes: int) -> np.ndarray:
    """``(m, 2)``: the own and other distances of a block's rows ``idx`` (None: all)."""
    X = _flat_checked(raw, lo, check, idx)
    pos = None
    if leave_one_out:
        pos = lo + (np.arange(X.shape[0]) if idx is None else np.asarray(idx, dtype=np.int64))
    return np.column_stack(ln.own_other_of(X, preds, n_neighbors, pos, block_bytes))


def neighbour_scores_on(neighbours: Any, store: Any, split: str, rows: np.ndarray | None,
                        predictions: np.ndarray, n_neighbors: int, leave_one_out: bool,
                        block_bytes: int, client: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``neighbour_scores``' search on the cluster: each layer's fitted
    :class:`~nnsig_core.diagnostics.neighbours.LayerNeighbours` is broadcast and every block of
    the rows ``rows`` (sorted positions; None: all) is searched on a worker. Returns, per
    layer, the own and other distances (the only per-sample results that come back)."""
    from dask import delayed

    store = open_store(store)
    blocks = SplitBlocks(client, store, split)
    held = _held(blocks, None if rows is None else np.asarray(rows, dtype=np.int64))
    worker = smallest_worker_memory(client)
    if worker is not None:  # a distance matrix of at most 1/32 of a worker's memory
        block_bytes = max(1 << 20, min(int(block_bytes), worker // 32))
    shipped, parts = [], {}
    for name, ln in neighbours.layers_.items():
        model, check = broadcast(client, ln), broadcast(client, _LayerCheck(store, split, name))
        shipped += [model, check]
        raw = blocks.layer(name).to_delayed().ravel()
        parts[name] = [delayed(_neighbour_block)(raw[i], blocks.bounds[i][0], idx, check, model,
                                                 predictions[sl], n_neighbors, leave_one_out,
                                                 block_bytes) for i, sl, idx in held]
    got = _compute_by_name(client, parts)
    release(client, *shipped)
    out = {}
    for name, g in got.items():
        v = np.concatenate(g) if g else np.empty((0, 2))
        out[name] = (v[:, 0], v[:, 1])
    return out
