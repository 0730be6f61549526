"""How nnsig runs a computation over a split: in this process, or on a Dask cluster.

One protocol, two drivers. Work over a split is written once, as a per-block
*part* with a *merge* (:func:`reduce_columns`) and rows picked by position
(:func:`take`); the local driver runs it here over chunk-aligned row blocks and
imports no Dask, the Dask driver (:mod:`nnsig_core.execute.dask_blocks`) runs
the same part on the workers and merges in a tree. Which driver runs is
decided once, at the public entry point: by the client (:func:`resolve_client`:
the one given, the active one, or none) and so by the columns it reads.
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
