"""How nnsig runs a computation over a split: in this process, or on a Dask cluster.

Work is written once, as a per-block *part* with a *merge* (:func:`reduce_columns`); the
local driver runs it here (without Dask), the Dask driver
(:mod:`nnsig_core.execute.dask_blocks`) on the workers, as the client decides.
"""

from __future__ import annotations

from nnsig_core.execute.blocks import is_lazy, reduce_columns, take
from nnsig_core.execute.client import (
    ClientArg,
    SchedulerSpec,
    connect,
    parse_scheduler,
    require_client,
    require_dask,
    resolve_client,
)
from nnsig_core.execute.merging import merge_parts

__all__ = [
    "ClientArg",
    "SchedulerSpec",
    "connect",
    "is_lazy",
    "merge_parts",
    "parse_scheduler",
    "reduce_columns",
    "require_client",
    "require_dask",
    "resolve_client",
    "take",
]
