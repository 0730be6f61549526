"""The executor's one protocol: a per-block *part* with a *merge*, and rows picked by position.

``part(*columns, lo=first_row, **kw)`` returns a dict of NumPy arrays for one block of rows,
``merge(*parts)`` combines several (default: :func:`merge_parts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from nnsig_core.execute.merging import combiner, merge_parts

#: Target bytes of one block of the widest column read by the local driver.
LOCAL_BLOCK_BYTES = 64 << 20
#: Float64 temporaries of a kernel, per slice of its block.
SLICE_BYTES = 16 << 20
#: Layers whose work is on a cluster at the same time (one driver thread each).
MAX_CONCURRENT_LAYERS = 8


def is_lazy(x: Any) -> bool:
    """Whether ``x`` is a dask array (or a collection computed on a cluster)."""
    return hasattr(x, "dask")


def row_slices(m: int, d: int, nbytes: int = SLICE_BYTES) -> list[slice]:
    """Slices of ``m`` rows of ``d`` float64 values, about ``nbytes`` each (bounded temporaries)."""
    step = max(1, nbytes // max(8 * d, 1))
    return [slice(lo, min(lo + step, m)) for lo in range(0, m, step)] or [slice(0, 0)]


def _local_bounds(columns: Sequence[Any],
                  nbytes: int = LOCAL_BLOCK_BYTES) -> list[tuple[int, int]]:
    """Row blocks for the local driver: one for in-memory columns, else whole zarr chunks of
    about ``nbytes`` of the widest column."""
    n = int(np.shape(columns[0])[0]) if columns else 0
    chunked = [c for c in columns if isinstance(c, zarr.Array)]
    if not chunked or n == 0:
        return [(0, n)]
    chunk = int(chunked[0].chunks[0])
    row_bytes = max(int(np.prod(c.shape[1:], dtype=np.int64)) * c.dtype.itemsize
                    for c in chunked)
    step = chunk * max(1, int(nbytes) // max(row_bytes * chunk, 1))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def reduce_columns(part: Callable[..., dict[str, Any]], merge: Callable[..., Any] | None,
                   columns: Sequence[Any], *, merge_kw: Mapping[str, Any] | None = None,
                   client: Any = None, local_bytes: int = LOCAL_BLOCK_BYTES,
                   **kw: Any) -> dict[str, Any]:
    """``part`` over ``columns`` (arrays of one length, ``None`` entries passed through),
    merged by ``merge(*parts, **merge_kw)`` (default :func:`merge_parts`): on the cluster when
    a column is a dask array, else here (zarr columns in blocks of about ``local_bytes``)."""
    if any(is_lazy(c) for c in columns if c is not None):
        from nnsig_core.execute.dask_blocks import reduce_blocks

        return reduce_blocks(part, merge, columns, dict(merge_kw or {}), kw, client)
    present = [c for c in columns if c is not None]
    bounds = _local_bounds(present, local_bytes)
    if len(bounds) == 1:
        return part(*[None if c is None else np.asarray(c) for c in columns], lo=0, **kw)
    return fold(bounds, lambda b: part(*[None if c is None else np.asarray(c[b[0]:b[1]])
                                         for c in columns], lo=b[0], **kw),
                combiner(merge, merge_kw))


def map_blocks(part: Callable[..., dict[str, Any]], columns: Sequence[Any], *,
               client: Any = None, merge: Callable[..., Any] | None = None,
               local_bytes: int = LOCAL_BLOCK_BYTES, **kw: Any) -> dict[str, Any]:
    """``part(*blocks, lo=first_row, **kw)`` over ``columns`` (a row mask first) here or on
    ``client``'s workers, merged by ``merge``, every list concatenated into one array."""
    cols = list(columns)
    if client is not None:
        from nnsig_core.execute.dask_blocks import lazy_columns

        cols = lazy_columns(cols, client)
    out = reduce_columns(part, merge, cols, client=client, local_bytes=local_bytes, **kw)
    inputs = [c for c in cols if isinstance(c, np.ndarray)]
    return {k: _joined(v, inputs) if isinstance(v, list) else v for k, v in out.items()}


def _joined(parts: list[Any], inputs: Sequence[np.ndarray]) -> np.ndarray:
    """The parts as one array: a lone part as it is unless it is a view of an input column
    (the caller may change the result in place), else their concatenation."""
    if len(parts) == 1 and isinstance(parts[0], np.ndarray) and \
            not any(np.may_share_memory(parts[0], c) for c in inputs):
        return parts[0]
    return np.concatenate(parts)


def per_layer(work: Callable[[str], Any], names: Sequence[str], client: Any = None) -> list[Any]:
    """``work(name)`` for each layer, in order: in turn here; with a client, up to
    :data:`MAX_CONCURRENT_LAYERS` at once, so that one layer's tasks fill another's round
    trips (its latency paid once, not once a layer)."""
    if client is None or len(names) < 2:
        return [work(name) for name in names]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(names), MAX_CONCURRENT_LAYERS),
                            thread_name_prefix="nnsig-layer") as pool:
        return list(pool.map(work, names))


def worker_memory(client: Any) -> int | None:
    """The smallest memory limit of ``client``'s workers in bytes (None: no client or limit)."""
    if client is None:
        return None
    from nnsig_core.execute.dask_blocks import smallest_worker_memory

    return smallest_worker_memory(client)


def fold(blocks: Iterable[Any], part: Callable[..., Any], merge: Callable[..., Any] | None = None,
         **kw: Any) -> Any:
    """``part(block, **kw)`` over ``blocks`` in this process, merged as they come by
    ``merge(acc, part)`` (default :func:`merge_parts`)."""
    merge = merge or merge_parts
    acc: Any = None
    for block in blocks:
        p = part(block, **kw)
        acc = p if acc is None else merge(acc, p)
    if acc is None:
        raise ValueError("Nothing to reduce.")
    return acc


def take_all(xs: Sequence[Any], positions: np.ndarray, client: Any = None) -> list[np.ndarray]:
    """``[take(x, positions) for x in xs]``, the dask arrays among them picked on the workers
    in one round trip."""
    positions = np.asarray(positions, dtype=np.int64)
    lazy = [i for i, x in enumerate(xs) if is_lazy(x)]
    out = [None if i in lazy else take(x, positions) for i, x in enumerate(xs)]
    if lazy and positions.size:
        from nnsig_core.execute.dask_blocks import compute

        picked = compute([xs[i][positions] for i in lazy], client)
    else:
        picked = [np.zeros((0, *xs[i].shape[1:]), dtype=xs[i].dtype) for i in lazy]
    for i, got in zip(lazy, picked, strict=True):
        out[i] = np.asarray(got)
    return out  # type: ignore[return-value]


def take(x: Any, positions: np.ndarray, client: Any = None) -> np.ndarray:
    """``x[positions]`` (sorted positions) as a NumPy array (a dask array's on the workers)."""
    positions = np.asarray(positions, dtype=np.int64)
    if is_lazy(x):
        from nnsig_core.execute.dask_blocks import take_rows

        return take_rows(x, positions, client)
    if isinstance(x, zarr.Array) and positions.size:
        return np.asarray(x.get_orthogonal_selection((positions,)))
    return np.asarray(x)[positions]
