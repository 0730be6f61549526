"""Which Dask client a computation runs on: the one given, the active one, or one made here.

Nothing here imports Dask unless ``dask.distributed`` is already loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger("nnsig")

#: Seconds :func:`connect` waits for a scheduler at an address.
CONNECT_TIMEOUT_S = 30.0

#: What ``client=`` accepts: a client, ``None`` (the active client, if any) or ``False`` (none).
ClientArg = Any

INSTALL_HINT = 'install it with: pip install "nnsig[dask]"'


def require_dask() -> None:
    """Import ``dask.array`` and ``dask.distributed``, or say how to install them."""
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"Distributed capture and analysis need dask[distributed] ({exc}); "
                          f"{INSTALL_HINT}.") from exc


def _is_client(obj: Any) -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import Client

    return isinstance(obj, Client)


def _running(client: Client) -> bool:
    return getattr(client, "status", "running") in ("running", "connecting", "newly-created")


def resolve_client(client: ClientArg = None) -> Client | None:
    """The client to run on, or None for nnsig's single-process code.

    Parameters
    ----------
    client : dask.distributed.Client, None or False
        A client is used as given; ``None`` means the running default client, if any;
        ``False`` means none.

    Returns
    -------
    dask.distributed.Client or None

    Raises
    ------
    TypeError, ValueError
        For anything else, or a closed client.
    """
    if client is False:
        return None
    if client is None:
        if "distributed" not in sys.modules:  # no client can be active: do not import Dask
            return None
        from distributed import default_client

        try:
            active = default_client()
        except ValueError:
            return None
        return active if _running(active) else None
    if not _is_client(client):
        raise TypeError("client must be a dask.distributed.Client, None (the active client, if "
                        f"any) or False (run in this process); got {type(client).__name__}.")
    if not _running(client):
        raise ValueError(f"The Dask client {client!r} is closed ({client.status}); pass a running "
                         "client.")
    return client


def require_client(client: ClientArg, what: str) -> Client:
    """:func:`resolve_client`, raising a ValueError naming ``what`` when there is no client."""
    require_dask()
    found = resolve_client(client)
    if found is None:
        raise ValueError(f"{what} needs a Dask cluster: pass client=dask.distributed.Client(...) "
                         "or start one first (e.g. Client(LocalCluster(n_workers=2))).")
    return found


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler``: ``local`` workers (``n_workers``) or an ``address``."""

    address: str | None = None
    n_workers: int | None = None

    @property
    def is_local(self) -> bool:
        return self.address is None

    def __str__(self) -> str:
        return f"local:{self.n_workers}" if self.is_local else str(self.address)


_LOCAL = re.compile(r"^local(?::(\d+))?$")


def parse_scheduler(spec: str) -> SchedulerSpec:
    """Parse ``--scheduler``: ``local:N`` (N >= 1 worker processes here) or a scheduler address.

    Raises
    ------
    ValueError
        When ``spec`` is neither; the message shows both forms.
    """
    text = str(spec).strip()
    m = _LOCAL.match(text)
    if m:
        if m.group(1) is None:
            raise ValueError(f"--scheduler {spec!r}: give the number of local workers, "
                             "e.g. local:2.")
        n = int(m.group(1))
        if n < 1:
            raise ValueError(f"--scheduler {spec!r}: local:N needs N >= 1 workers.")
        return SchedulerSpec(n_workers=n)
    # An address is a URL (tcp://host:8786) or host:port, as dask's Client takes it;
    # "localhost:8786" is one, "local:x" or "2" is not.
    address = "://" in text or re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[\w.\-]+):\d+", text)
    if not address or any(c.isspace() for c in text) or text.startswith("local:"):
        raise ValueError(f"Cannot read --scheduler {spec!r}: give a scheduler address "
                         "(tcp://host:8786) or local:N for N worker processes on this machine.")
    return SchedulerSpec(address=text)


@contextlib.contextmanager
def connect(spec: SchedulerSpec | str, **cluster_options: Any) -> Iterator[Client]:
    """A client for ``spec`` (see :func:`parse_scheduler`), closed on exit with the local
    cluster it started, if any.

    Parameters
    ----------
    spec : SchedulerSpec or str
    **cluster_options
        Passed to ``LocalCluster`` for ``local:N``.
    """
    require_dask()
    from distributed import Client, LocalCluster

    if isinstance(spec, str):
        spec = parse_scheduler(spec)
    if spec.is_local:
        options = {"n_workers": spec.n_workers, "threads_per_worker": 1, "processes": True,
                   "dashboard_address": ":0", **cluster_options}
        # The nannies set OMP_NUM_THREADS=1 and the like for their workers in this process's
        # environment too, where a numeric library loaded later would then run on one thread
        # (and round differently): this process keeps its own settings.
        import dask

        names = list(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
        own = {k: os.environ.get(k) for k in names}
        with LocalCluster(**options) as cluster, Client(cluster) as client:
            client.wait_for_workers(spec.n_workers)
            for k, v in own.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            log.info("Started a local Dask cluster of %d workers (%s).", spec.n_workers,
                     cluster.scheduler_address)
            yield client
        return
    try:
        client = Client(spec.address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except OSError as exc:
        raise OSError(
            f"Cannot reach the Dask scheduler at {spec.address!r} ({exc}); is it running? "
            "Start one with `dask scheduler`, or use --scheduler local:N."
        ) from exc
    with client:
        log.info("Connected to the Dask scheduler at %s.", spec.address)
        yield client
