"""nnsig on a Dask cluster: capture and analysis as per-chunk tasks that ``dask.distributed`` moves.

Nothing here is a scheduler or a cluster protocol: the per-chunk work is written here,
Dask runs it. Dask is imported only when a distributed function runs
(``pip install "nnsig[dask]"``); without a client nnsig runs its single-process code.

- :func:`capture_distributed`: one task per shard of rows.
- ``SignatureAnalysis.fit/transform/save(..., client=...)``: the fit rows as blocks on the
  workers, whose reductions give the bins, the PCA and Lloyd's k-means; the signatures are
  :class:`~nnsig_core.analysis.Signatures` over dask arrays, whose tables are reductions.
- ``signature_scores``/``Baselines`` with a client: the diagnostics' block kernels on the
  workers.
- :func:`connect`, :func:`parse_scheduler`, :func:`resolve_client`: the CLI's ``--scheduler``.
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
