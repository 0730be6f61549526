"""One call for the report's per-block work, on NumPy arrays here or dask arrays on a cluster.

The report's figures (histograms, thresholds, the map's draw) are written as
*parts*: ``part(*columns, lo=first_row, **kw)`` returns a dict of NumPy
arrays for a block of rows, and a *merge* combines several parts. On NumPy
columns the part runs once on the whole arrays; on dask columns (a split on
a Dask cluster) it runs per block on the workers and only the merged parts
reach the driver (:func:`nnsig_core.distributed.report.reduce_blocks`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["is_lazy", "reduce_columns", "take"]


def is_lazy(x: Any) -> bool:
    """Whether ``x`` is a dask array (or a collection computed on a cluster)."""
    return hasattr(x, "dask")


def reduce_columns(part: Callable[..., dict[str, Any]], merge: Callable[..., Any] | None,
                   columns: Sequence[Any], *, merge_kw: Mapping[str, Any] | None = None,
                   client: Any = None, **kw: Any) -> dict[str, Any]:
    """``part`` over ``columns`` (arrays of one length), merged by ``merge(*parts,
    **merge_kw)`` (default: entries summed, ``_min``/``_max`` keys by min/max).

    NumPy columns: ``part(*columns, lo=0, **kw)``. When any column is a dask array, each
    block runs on the cluster (``client``, else dask's default scheduler)."""
    if any(is_lazy(c) for c in columns):
        from nnsig_core.distributed.report import reduce_blocks

        return reduce_blocks(part, merge, columns, dict(merge_kw or {}), kw, client)
    return part(*columns, lo=0, **kw)


def take(x: Any, positions: np.ndarray, client: Any = None) -> np.ndarray:
    """``x[positions]`` (sorted positions) as a NumPy array; a dask array's rows are picked
    by the workers, and only those rows reach the driver."""
    positions = np.asarray(positions, dtype=np.int64)
    if is_lazy(x):
        from nnsig_core.distributed.report import take_rows

        return take_rows(x, positions, client)
    return np.asarray(x)[positions]
