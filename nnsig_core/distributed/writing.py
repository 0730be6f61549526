"""Dask arrays written into the store by the workers that hold them (the Dask driver's write)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nnsig_core.store.format import array_options


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
