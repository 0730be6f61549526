"""The Dask driver's split view: a split on a cluster, its fit rows as delayed blocks.

Layers are fitted at the same time (:func:`~nnsig_core.execute.blocks.per_layer`), so
that one layer's tasks fill another's round trips; rows
kept for the passes share a budget of :data:`PERSIST_FRACTION` of the cluster's memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np

from nnsig_core.analysis import persist
from nnsig_core.analysis.fit_rows import FitRows, Reduce, features_of
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.distributed.reductions import (
    SplitBlocks,
    SplitCounts,
    _flat_checked,
    _LayerCheck,
    fit_mask,
    n_classes_of,
    split_counts,
)
from nnsig_core.execute.blocks import per_layer, row_slices
from nnsig_core.execute.dask_blocks import broadcast, reduce_delayed, release
from nnsig_core.execute.merging import combiner
from nnsig_core.store.format import signatures_path

log = logging.getLogger("nnsig")

#: Share of the cluster's total memory limit the kept fit rows may occupy.
PERSIST_FRACTION = 0.25


def _memory_limit(client: Any) -> int:
    workers = client.scheduler_info().get("workers", {}).values()
    return int(sum(int(w.get("memory_limit") or 0) for w in workers))


class _Budget:
    """Bytes of fit rows the layers fitted at the same time may keep in the workers' memory."""

    def __init__(self, total: float) -> None:
        self.left = float(total)
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self.lock:
            if nbytes > self.left:
                return False
            self.left -= nbytes
            return True

    def give(self, nbytes: int) -> None:
        with self.lock:
            self.left += nbytes


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
    return pos, lab, features_of(fmap, X)


def _reduce_slices(block: tuple[np.ndarray, np.ndarray, np.ndarray], fmap: Any,
                   kernel: Callable[..., Any], combine: Callable[..., Any],
                   **kw: Any) -> dict[str, Any]:
    F = features_of(fmap, block[2])
    return combine(*[kernel(F[sl], **kw) for sl in row_slices(F.shape[0], F.shape[1])])


def _take(block: tuple[np.ndarray, np.ndarray, np.ndarray], local: np.ndarray,
          fmap: Any) -> np.ndarray:
    return features_of(fmap, block[2][local])


def _assign_block(raw: np.ndarray, lc: Any, check: _LayerCheck,
                  block_info: Any = None) -> np.ndarray:
    """``(rows, 2)`` float64: cluster id and distance of each row of a block (exact in
    float64), the block checked for NaN/Inf first."""
    lo = block_info[0]["array-location"][0][0] if block_info else 0
    ids, dist = lc.assign(_flat_checked(raw, lo, check))
    return np.column_stack([ids.astype(np.float64), dist.astype(np.float64)])


def _waves(sizes: list[int], row_bytes: int, wave_bytes: float) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` ranges of blocks of at most ``wave_bytes`` each (one
    block at least)."""
    waves, lo, nbytes = [], 0, 0
    for i, size in enumerate(sizes):
        if i > lo and nbytes + size * row_bytes > wave_bytes:
            waves.append((lo, i))
            lo, nbytes = i, 0
        nbytes += size * row_bytes
    return waves + [(lo, len(sizes))] if sizes else waves


def _futures(obj: Any) -> list[Any]:
    from distributed import futures_of

    return list(futures_of(obj))


class DaskRows:
    """A layer's fit rows on the cluster: per block, delayed ``(positions, labels, rows)``
    (the :class:`~nnsig_core.analysis.fit_rows.FitRows` of the Dask driver)."""

    def __init__(self, client: Any, raw: list[Any], sizes: list[int], n_features: int,
                 budget: _Budget) -> None:
        self.client, self.sizes, self.n_features, self.budget = client, sizes, n_features, budget
        self._stored = self._raw = raw
        self._kept = 0
        self._shipped: list[Any] = []

    @property
    def n(self) -> int:
        return int(sum(self.sizes))

    def _ship(self, obj: Any) -> Any:
        sent = broadcast(self.client, obj)
        self._shipped.append(sent)
        return sent

    def _blocks(self, fmap: Any) -> list[Any]:
        from dask import delayed

        if fmap is None:
            return self._raw
        shipped = self._ship(fmap)
        return [delayed(_featurize, pure=True)(b, shipped) for b in self._raw]

    def reduce(self, fmap: Any, part: Callable[..., Any], merge: Callable[..., Any] | None = None,
               **kw: Any) -> dict[str, Any]:
        return reduce_delayed(self.client, self._blocks(fmap), part, merge, **kw)

    def reduce_slices(self, fmap: Any, part: Callable[..., Any],
                      merge: Callable[..., Any] | None = None, **kw: Any) -> dict[str, Any]:
        merge = combiner(merge)
        return reduce_delayed(self.client, self._raw, _reduce_slices, merge,
                              fmap=self._ship(fmap), kernel=part, combine=merge, **kw)

    def reducer(self, fmap: Any) -> Reduce:
        return partial(reduce_delayed, self.client, self._blocks(fmap))

    def sample(self, fmap: Any, ranks: np.ndarray) -> np.ndarray:
        from dask import delayed

        ranks = np.asarray(ranks, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        shipped = self._ship(fmap)
        cuts = np.searchsorted(ranks, starts)
        parts = [delayed(_take)(b, ranks[cuts[i]:cuts[i + 1]] - starts[i], shipped)
                 for i, b in enumerate(self._raw) if cuts[i + 1] > cuts[i]]
        rows = self.client.compute(parts, sync=True)
        if rows:
            return np.concatenate(rows)
        return features_of(fmap, np.empty((0, self.n_features), np.float32))

    def gather(self, fmap: Any) -> tuple[np.ndarray, np.ndarray]:
        # In waves of at most PERSIST_FRACTION of the cluster's memory: computed at once,
        # rows that fit the driver's budget but not the workers' would kill the workers.
        wave_bytes = PERSIST_FRACTION * _memory_limit(self.client) or float("inf")
        todo, blocks = self._blocks(fmap), []
        for lo, hi in _waves(self.sizes, self.n_features * 4, wave_bytes):
            blocks += self.client.compute(todo[lo:hi], sync=True)
        X = np.concatenate([b[2] for b in blocks])
        return np.ascontiguousarray(X, dtype=np.float32), np.concatenate([b[1] for b in blocks])

    def keep(self, fits: bool) -> bool:
        """Keep the rows in the workers' memory while the cluster's budget allows."""
        nbytes = self.n * self.n_features * 4
        if self._kept or not self.budget.take(nbytes):
            return bool(self._kept)
        self._raw, self._kept = list(self.client.persist(self._stored)), nbytes
        return True

    def drop(self) -> None:
        if self._kept:
            self.client.cancel([f for b in self._raw for f in _futures(b)])
            self.budget.give(self._kept)
            self._raw, self._kept = self._stored, 0
        release(self.client, *self._shipped)
        self._shipped = []


class DaskSplit(SplitBlocks):
    """A split on the cluster of ``client``, with the operations of the local view."""

    prefetched: list[str] = []

    @property
    def cache_tag(self) -> tuple[Any, ...]:
        return ("dask", self.client.id)

    def __init__(self, client: Any, store: Any, split: str,
                 block_rows: int | None = None) -> None:
        super().__init__(client, store, split, block_rows)
        self._counts: SplitCounts | None = None
        self._masks: list[Any] = []
        self._sizes: list[int] = []

    def counts(self) -> SplitCounts:
        if self._counts is None:
            self._counts = split_counts(self)
        return self._counts

    def select(self, classes: Iterable[int] | None, only_correct: bool) -> int:
        self._masks, self._sizes = fit_mask(self, self.counts(), classes, only_correct)
        return int(sum(self._sizes))

    def n_classes(self) -> int:
        return n_classes_of(self.store, self.split, self.counts())

    def fit_layers(self, layers: list[str], fit_one: Callable[[str, FitRows], Any], *,
                   limit: int, plain: bool) -> list[Any]:
        from dask import delayed

        labels = self.meta_blocks("labels")
        shapes = {d["name"]: int(np.prod(d["shape"], dtype=np.int64))
                  for d in self.store.layer_info(self.split)}
        budget = _Budget(PERSIST_FRACTION * _memory_limit(self.client))

        def rows(name: str) -> DaskRows:
            raw = [delayed(_select, pure=True)(r, m, lo, lab) for r, m, (lo, _), lab in
                   zip(self.layer_blocks(name), self._masks, self.bounds, labels, strict=True)]
            return DaskRows(self.client, raw, self._sizes, shapes[name], budget)

        try:
            return per_layer(lambda name: fit_one(name, rows(name)), layers, self.client)
        finally:
            self.client.cancel(self._masks)

    def assign(self, clusterers: list[Any], layers: list[str]) -> tuple[Any, Any]:
        """Lazy cluster ids (int32) and distances (float32), ``(n, n_layers)`` dask arrays."""
        import dask.array as da

        ids, dist = [], []
        for name, lc in zip(layers, clusterers, strict=True):
            x = self.layer(name)
            check = broadcast(self.client, _LayerCheck(self.store, self.split, name))
            both = x.map_blocks(_assign_block, broadcast(self.client, lc), check,
                                chunks=(x.chunks[0], (2,)), drop_axis=list(range(2, x.ndim)),
                                dtype=np.float64)
            ids.append(both[:, 0].astype(np.int32))
            dist.append(both[:, 1].astype(np.float32))
        return (da.stack(ids, axis=1).rechunk((self.block_rows, -1)),
                da.stack(dist, axis=1).rechunk((self.block_rows, -1)))

    def materialize(self, analysis: Any, ids: Any, dist: Any) -> tuple[Any, Any]:
        """Written next to the analysis when the store holds it and is writable, else kept in
        the workers' memory."""
        home = analysis._saved_name(self.store)
        if home is not None and not self.store.read_only:
            analysis._forget(self.store, self.split)  # they may read the group replaced here
            persist.save_signature_arrays(self.store, home, self.split, analysis.layers_, ids,
                                          dist, self.client)
            grp = self.store.group(signatures_path(home, self.split))
            return self.read_saved(grp)
        log.info("Cluster ids of split %r kept in the workers' memory (%s); "
                 "analysis.save(store, name, client=...) writes them to the store.", self.split,
                 "the store is open read-only" if home is not None
                 else "the analysis is not saved in this store")
        from distributed import wait

        ids, dist = self.client.persist([ids, dist])
        with self.client.as_current():
            wait([ids, dist])
        return ids, dist

    def read_saved(self, group: Any) -> tuple[Any, Any]:
        import dask.array as da

        ids, dist = [da.from_zarr(group[key]).rechunk((self.block_rows, -1))
                     for key in ("cluster_ids", "distances")]
        return ids.astype(np.int32), dist.astype(np.float32)

    def signatures(self, analysis: Any, ids: Any, dist: Any) -> Signatures:
        return Signatures(
            self.split, analysis.layers_, ids, self.meta("labels"), self.meta("predictions"),
            dist, self.meta("sample_index"), analysis.n_clusters_,
            # The labels' and predictions' part of the class count comes with the signatures'
            # own joint table when asked for: no pass over the split here.
            n_classes=max(analysis.n_classes_, n_classes_of(self.store, self.split, None)),
            class_names=self.store.class_names(), client=self.client, n_samples=self.n)
