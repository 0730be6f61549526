"""Dask arrays written into the store by the workers that hold them (the Dask driver's write)."""

from __future__ import annotations

from typing import Any

from nnsig_core.store.format import array_options


def write_blocks(group: Any, key: str, values: Any, client: Any) -> None:
    """Create ``group[key]`` and have the workers write the dask array ``values`` into it,
    block by block (one chunk per block)."""
    import dask.array as da

    rows = values.chunks[0][0]
    values = values.rechunk((rows, *values.shape[1:]))
    target = group.create_array(key, shape=values.shape, dtype=values.dtype,
                                chunks=(rows, *values.shape[1:]), fill_value=0,
                                **array_options())
    client.compute(da.store(values, target, lock=False, compute=False), sync=True)
