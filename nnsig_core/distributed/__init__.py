"""nnsig on a Dask cluster: capture and analysis as per-chunk tasks that ``dask.distributed`` runs.

Dask is imported only when a distributed function runs (``pip install "nnsig[dask]"``);
without a client nnsig runs its single-process code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nnsig_core._util import lazy_attributes
from nnsig_core.execute.client import (
    SchedulerSpec,
    connect,
    parse_scheduler,
    require_client,
    resolve_client,
)

__all__ = [
    "SchedulerSpec",
    "capture_distributed",
    "connect",
    "parse_scheduler",
    "require_client",
    "resolve_client",
]

if TYPE_CHECKING:
    from nnsig_core.distributed.capture import capture_distributed

__getattr__ = lazy_attributes(__name__, {"capture_distributed": "nnsig_core.distributed.capture"})
