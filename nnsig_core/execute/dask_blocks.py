"""The Dask driver of the executor: the same parts and merges, run per block on the workers
and merged up a tree of tasks, and dask arrays written into the store by the workers.
Imported only when a column is a dask array or a client given.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from nnsig_core.execute.merging import combiner, merge_parts
from nnsig_core.store.format import array_options

#: Target bytes of one block of the widest layer (one task reads one block).
BLOCK_BYTES = 64 << 20
#: A block is at most this fraction of a worker's memory limit (a task holds a few copies).
BLOCK_SHARE = 1 / 16
_BLOCK_BYTES: dict[str, int] = {}
#: Objects pickled to at least this many bytes are scattered, not embedded in the graph.
SCATTER_BYTES = 1 << 20
#: Partial results merged by one task of a tree reduction.
SPLIT_EVERY = 8


def broadcast(client: Any, obj: Any) -> Any:
    """``obj`` sent once for every task that uses it: a graph key when small (below
    :data:`SCATTER_BYTES` pickled), else scattered (a future; :func:`release` it when done)."""
    from dask import delayed

    try:
        small = len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)) < SCATTER_BYTES
    except Exception:  # noqa: BLE001 - not picklable by pickle: let Dask's serializers try
        small = False
    if small or client is None:
        return delayed(obj, pure=False, traverse=False)
    return client.scatter(obj, broadcast=True, hash=False)


def release(client: Any, *shipped: Any) -> None:
    """Let the workers drop what :func:`broadcast` scattered (nothing to do for graph keys)."""
    futures = [x for x in shipped if type(x).__name__ == "Future"]
    if futures:
        client.cancel(futures)


def smallest_worker_memory(client: Any) -> int | None:
    """The smallest memory limit of the cluster's workers in bytes (None when none is set)."""
    workers = client.scheduler_info().get("workers", {}).values()
    return min([int(w.get("memory_limit") or 0) for w in workers if w.get("memory_limit")],
               default=None)


def block_bytes(client: Any) -> int:
    """Bytes of the widest layer per block on this client's cluster: :data:`BLOCK_BYTES`, or
    :data:`BLOCK_SHARE` of the smallest worker memory when less (at least 1 MiB). Fixed per
    client at first use, so that every computation cuts a split the same way."""
    key = str(getattr(client, "id", id(client)))
    if key not in _BLOCK_BYTES:
        worker = smallest_worker_memory(client)
        share = [] if worker is None else [int(worker * BLOCK_SHARE)]
        _BLOCK_BYTES[key] = max(1 << 20, min([BLOCK_BYTES, *share]))
    return _BLOCK_BYTES[key]


def tree_reduce(parts: Sequence[Any], combine: Callable[..., Any] | None = None,
                split_every: int = SPLIT_EVERY) -> Any:
    """A delayed tree merging ``parts`` (delayed partial results) ``split_every`` at a time
    with ``combine(*parts)`` (default :func:`~nnsig_core.execute.blocks.merge_parts`)."""
    from dask import delayed

    level = list(parts)
    if not level:
        raise ValueError("Nothing to reduce.")
    merge = delayed(combine or merge_parts)
    if len(level) == 1:
        return merge(level[0])
    while len(level) > 1:
        level = [merge(*level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]


def reduce_delayed(client: Any, blocks: Sequence[Any], part: Callable[..., Any],
                   merge: Callable[..., Any] | None = None, **kw: Any) -> Any:
    """``part(block, **kw)`` on every delayed block on the workers, merged in a tree by
    ``merge(*parts)``; array and tuple arguments are sent once (:func:`broadcast`)."""
    from dask import delayed

    sent = {k: broadcast(client, v) if isinstance(v, np.ndarray | tuple) else v
            for k, v in kw.items()}
    try:
        parts = [delayed(part)(b, **sent) for b in blocks]
        return client.compute(tree_reduce(parts, merge)).result()
    finally:
        release(client, *sent.values())


def compute(x: Any, client: Any = None) -> Any:
    """``x`` computed on ``client`` (dask's default scheduler when None)."""
    if client is not None:
        return client.compute(x, sync=True)
    import dask

    return dask.compute(x)[0]


def as_dask(values: Any, rows: Any = None) -> Any:
    """``values`` as a dask array, cut into ``rows`` (row chunks) or one block."""
    import dask.array as da

    if hasattr(values, "dask"):
        return values
    if isinstance(values, zarr.Array):
        return da.from_zarr(values, chunks=None if rows is None else (rows, *values.shape[1:]))
    arr = np.asarray(values)
    return da.from_array(arr, chunks=(rows if rows is not None else arr.shape[0], *arr.shape[1:]))


def positions_like(x: Any) -> Any:
    """The row positions ``0..n-1`` of a dask array, as a dask array with its row chunks."""
    import dask.array as da

    return da.arange(x.shape[0], chunks=x.chunks[0], dtype=np.int64)


#: Blocks a split is cut into at least (when it has as many chunks).
MIN_BLOCKS = 16


def rows_per_block(client: Any, n: int, chunk: int, widest: int) -> int:
    """Rows per block of ``n`` rows: whole chunks, about :func:`block_bytes` of the widest row
    (``widest`` bytes), in at least :data:`MIN_BLOCKS` blocks."""
    by_bytes = max(1, block_bytes(client) // max(widest * chunk, 1))
    return chunk * min(by_bytes, max(1, -(-n // (MIN_BLOCKS * chunk))))


def lazy_columns(columns: Sequence[Any], client: Any) -> list[Any]:
    """The columns of :func:`~nnsig_core.execute.blocks.map_blocks` for the workers: zarr
    columns as dask arrays of their first ``n`` rows in blocks of whole chunks (about
    :func:`block_bytes` of the widest, at least :data:`MIN_BLOCKS` blocks)."""
    import dask.array as da

    n = int(np.shape(columns[0])[0])
    stored = [c for c in columns if isinstance(c, zarr.Array)]
    if not stored or n == 0:
        return list(columns)
    chunk = int(stored[0].chunks[0])
    widest = max(int(np.prod(c.shape[1:], dtype=np.int64)) * 4 for c in stored)
    rows = rows_per_block(client, n, chunk, widest)
    out = []
    for c in columns:
        if isinstance(c, zarr.Array):
            c = da.from_zarr(c, chunks=(rows, *c.shape[1:]))[:n]
        elif hasattr(c, "dask"):
            c = c.rechunk({0: rows})
        out.append(c)
    return out


def _aligned(columns: Sequence[Any]) -> list[Any]:
    """The columns as dask arrays sharing the first dask column's row blocks (None stays)."""
    import dask.array as da

    first = next(c for c in columns if hasattr(c, "dask"))
    rows = first.chunks[0]
    out = []
    for c in columns:
        if c is None:
            pass
        elif not hasattr(c, "dask"):
            c = da.from_array(np.asarray(c), chunks=(rows, *np.shape(c)[1:]))
        elif c.chunks[0] != rows:
            c = c.rechunk({0: rows})
        out.append(c)
    return out


def _run_part(part: Callable[..., Any], lo: int, kw: Mapping[str, Any], *blocks: Any) -> Any:
    return part(*blocks, lo=lo, **kw)


def reduce_blocks(part: Callable[..., Any], merge: Callable[..., Any] | None,
                  columns: Sequence[Any], merge_kw: Mapping[str, Any], kw: Mapping[str, Any],
                  client: Any = None) -> Any:
    """``part`` on every block of ``columns`` on the workers, merged in a tree; the arrays and
    objects of ``kw`` are sent once (:func:`broadcast`)."""
    from dask import delayed

    cols = _aligned(columns)
    lead = next(c for c in cols if c is not None)
    sizes = np.asarray(lead.chunks[0], dtype=np.float64)
    # Blocks of unknown length (a boolean subset) have no first row: ``lo`` is -1 there.
    bounds = (np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64) if np.isfinite(sizes).all()
              else np.full(sizes.size + 1, -1, dtype=np.int64))
    blocks = [[None] * sizes.size if c is None else list(c.to_delayed().ravel()) for c in cols]
    if not sizes.size:
        return part(*[None if c is None else np.asarray(c)[:0] for c in columns], lo=0, **kw)
    sent = {k: v if isinstance(v, _PLAIN) else broadcast(client, v) for k, v in kw.items()}
    try:
        parts = [delayed(_run_part, pure=True)(part, int(bounds[i]), sent, *b)
                 for i, b in enumerate(zip(*blocks, strict=True))]
        return compute(tree_reduce(parts, combiner(merge, merge_kw)), client)
    finally:
        if client is not None:
            release(client, *sent.values())


#: Arguments embedded in every task as they are (small by nature).
_PLAIN = (bool, int, float, str, type(None), np.integer, np.floating)


def take_rows(x: Any, positions: np.ndarray, client: Any = None) -> np.ndarray:
    """``x[positions]`` picked on the workers (only those rows reach this process)."""
    if positions.size == 0:
        return np.zeros((0, *x.shape[1:]), dtype=x.dtype)
    return np.asarray(compute(x[positions], client))


def _features(raw: np.ndarray, clusterer: Any) -> np.ndarray:
    block = np.asarray(raw).reshape(raw.shape[0], -1).astype(np.float32, copy=False)
    return np.asarray(clusterer.features(block), dtype=np.float32)


def take_features(layer: Any, positions: np.ndarray, clusterer: Any, client: Any) -> np.ndarray:
    """The clustering-space features of rows ``positions`` of a layer, mapped on the workers."""
    if positions.size == 0:
        return np.zeros((0, 0), dtype=np.float32)
    picked = layer[positions]
    width = int(np.asarray(clusterer.cluster_centers_).shape[1])
    lc = broadcast(client, clusterer) if client is not None else clusterer
    feats = picked.map_blocks(_features, lc, dtype=np.float32,
                              chunks=(picked.chunks[0], (width,)),
                              drop_axis=list(range(2, picked.ndim)) or None)
    return np.asarray(compute(feats, client))


def _write_block(target: Any, lo: int, block: np.ndarray) -> int:
    target[lo : lo + block.shape[0]] = block
    return int(block.shape[0])


def write_blocks(group: Any, key: str, values: Any, client: Any) -> None:
    """Create ``group[key]`` and have the workers write the dask array ``values`` into it, one
    chunk per block; every task has ended on return, so the caller may clean up a failure."""
    from dask import delayed
    from distributed import wait

    rows = values.chunks[0][0]
    values = values.rechunk((rows, *values.shape[1:]))
    target = group.create_array(key, shape=values.shape, dtype=values.dtype,
                                chunks=(rows, *values.shape[1:]), fill_value=0,
                                **array_options())
    starts = np.concatenate([[0], np.cumsum(values.chunks[0])[:-1]]).astype(int)
    tasks = [delayed(_write_block)(target, int(lo), block)
             for lo, block in zip(starts, values.to_delayed().ravel(), strict=True)]
    futures = client.compute(tasks)
    with client.as_current():
        wait(futures)
    failed = [f for f in futures if f.status == "error"]
    if failed:
        failed[0].result()  # raises the first block's error
