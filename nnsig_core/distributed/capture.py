"""Capture on a Dask cluster: one task per shard of rows, each writing its own whole chunks
(byte-identical to a single-process ``capture`` of the same data and ``batch_size``)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core._progress import ProgressBar  # terminal bars only: no notebook widgets
from nnsig_core._util import now_iso
from nnsig_core._warnings import warn
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.options import DEFAULT_CHUNK_BYTES, DEFAULT_DURABLE, CaptureOptions
from nnsig_core.capture.policy import check_expected, plan_split
from nnsig_core.capture.repair import log_repair
from nnsig_core.distributed.shards import (
    CHECK_EVERY_S,
    Job,
    clear_markers,
    dataset_len,
    default_collate,
    done_shards,
    lost_chunks,
    prepare_task,
    repair_task,
    shard_task,
)
from nnsig_core.execute.client import ClientArg, require_client
from nnsig_core.protocol import Adapter
from nnsig_core.store import ActivationStore, open_store

log = logging.getLogger("nnsig")

#: Target bytes of the widest layer per shard when ``shard_rows`` is not given.
SHARD_BYTES = 256 << 20


def _shard_rows(requested: int | None, chunk_rows: int, batch_size: int, row_bytes: int,
                n: int, n_workers: int) -> int:
    """Rows per shard: a multiple of the chunk length (and of the batch size when given so)."""
    if requested is not None:
        if requested < 1 or requested % chunk_rows:
            raise CaptureError(f"shard_rows={requested} is not a multiple of the split's "
                               f"{chunk_rows} rows per chunk: shards must own whole chunks. Use "
                               f"e.g. {max(1, round(requested / chunk_rows)) * chunk_rows}.")
        if requested % batch_size:
            warn(f"shard_rows={requested} is not a multiple of batch_size={batch_size}: the "
                 "batches differ from a single-process capture's (the bytes are the same only "
                 "for a model whose results do not depend on the batch).")
        return int(requested)
    unit = chunk_rows * batch_size // math.gcd(chunk_rows, batch_size)
    by_bytes = max(1, SHARD_BYTES // max(row_bytes * unit, 1))
    by_spread = max(1, math.ceil(n / (4 * max(n_workers, 1) * unit)))  # >= 4 shards per worker
    return unit * min(by_bytes, by_spread)


def _row_bytes(info: Mapping[str, Any]) -> int:
    width = [int(np.prod(d["shape"], dtype=np.int64)) * np.dtype(d.get("dtype", "float32")).itemsize
             for d in info.get("layers", [])]
    return max(width or [4])


def capture_distributed(make_adapter: Callable[[], Adapter], dataset: Any,
                        store: ActivationStore | str | os.PathLike[str], *, split: str = "train",
                        client: ClientArg = None, shard_rows: int | None = None,
                        batch_size: int = 256, max_samples: int | None = None,
                        class_names: Sequence[str] | None = None, keep_inputs: bool = False,
                        resume: bool = False, overwrite: bool = False, dtype: str = "float32",
                        compressor: Any = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                        predict: Callable[[np.ndarray], np.ndarray] | None = None,
                        collate: Callable[[Sequence[Any]], tuple[Any, Any]] | None = None,
                        progress: bool = True, durable: bool = DEFAULT_DURABLE,
                        allow_other_weights: bool | str = False, retries: int = 3,
                        storage_options: dict[str, Any] | None = None) -> ActivationStore:
    """Capture ``dataset`` on a Dask cluster: one task per shard of rows (see the module doc).

    Parameters
    ----------
    make_adapter : callable
        Builds the adapter on a worker, once per worker process: a picklable callable (e.g.
        a module-level function loading the weights from a file).
    dataset : map-style data set or (X, y)
        ``dataset[i]`` is an ``(input, label)`` pair or an input; or two arrays. Sample
        ``i`` is stored at row ``i``.
    store : ActivationStore, path, URL or zarr Store
        As for :func:`nnsig_core.capture`; the workers open it too.
    split, batch_size, max_samples, class_names, keep_inputs, resume, overwrite, dtype, compressor, chunk_bytes, predict, progress, durable, allow_other_weights, storage_options
        See :class:`~nnsig_core.capture.CaptureOptions`; ``resume=True`` runs the shards
        not yet done and repairs the chunks of those done.
    client : dask.distributed.Client, optional
        The cluster (default: the active client).
    shard_rows : int, optional
        Rows per task, a multiple of the split's chunk length (default: about 256 MiB of
        the widest layer, at least four shards per worker).
    collate : callable, optional
        Turns a list of ``dataset[i]`` items into ``(inputs, labels)``.
    retries : int
        Times a failed shard task is run again.

    Returns
    -------
    ActivationStore
        The store, with ``split`` complete.

    Raises
    ------
    CaptureError, StoreError, ClaimError, NonFiniteActivationError
        As :func:`nnsig_core.capture`.
    ValueError
        No Dask client.
    """
    options = CaptureOptions.from_call(locals())
    if not callable(make_adapter):
        raise CaptureError("make_adapter must be a picklable callable building the adapter on a "
                           "worker (e.g. a module-level function loading the weights from a "
                           f"file); got {type(make_adapter).__name__}.")
    if retries < 0:
        raise CaptureError(f"retries must be >= 0, got {retries}.")
    client = require_client(client, "capture_distributed")
    from dask.base import tokenize

    n_total = dataset_len(dataset)
    n = n_total if max_samples is None else min(n_total, int(max_samples))
    if n == 0:
        raise CaptureError("The data set is empty; nothing to capture.")
    opened = open_store(store, mode="a", storage_options=storage_options)
    opened.require_writable(f"split {split!r}")
    reopen = store if isinstance(store, (str, os.PathLike)) and not storage_options else opened
    with opened.claim(split, break_stale=resume) as claim:
        plan = plan_split(opened, options)
        if plan.done:
            return opened
        existing = plan.existing
        if existing is not None:
            check_expected(split, existing, n)
            settings = dict(existing.get("capture") or {})
            if settings.get("shard_rows") is None:
                raise CaptureError(
                    f"Split {split!r} was stopped before its first shard; capture it again "
                    "with overwrite=True." if settings.get("distributed") else
                    f"Split {split!r} was started by a single-process capture; resume it with "
                    "capture(..., resume=True).")
            if shard_rows is not None and shard_rows != settings["shard_rows"]:
                raise CaptureError(f"Cannot resume split {split!r} with shard_rows={shard_rows}: "
                                   f"it was started with {settings['shard_rows']}. Leave "
                                   "shard_rows out to resume.")
            shard_rows = int(settings["shard_rows"])
        else:
            settings = options.settings(distributed=True)
        job = Job(make_adapter=make_adapter, adapter_token=tokenize(make_adapter),
                  dataset=dataset, store=reopen, options=options, n=n,
                  collate=collate or default_collate, capture_id=str(settings["capture_id"]),
                  settings=settings)
        shipped = client.scatter(job, broadcast=True, hash=False)
        try:
            done: dict[int, bool] = {}
            check_rows: list[int] = []
            lost: dict[int, list[int]] = {}
            if existing is None:
                clear_markers(opened, split)  # markers of an earlier capture of the split
            else:
                assert shard_rows is not None  # a resume takes the started capture's
                shards = _plan(n, int(shard_rows))
                done = ({i: bool(existing.get("has_labels")) for i, _, _ in shards}
                        if existing.get("complete")
                        else done_shards(opened, split, job.capture_id, shards))
                chunk_rows = int(existing["capture"]["chunk_rows"])
                lost = _lost(opened, split, shards, done, plan.repairs, chunk_rows)
                check_rows = sorted({r for i, lo, hi in shards if i in done for r in (lo, hi - 1)
                                     if r // chunk_rows not in lost.get(i, ())})
            _raise(client.submit(prepare_task, shipped, existing is None, check_rows,
                                 pure=False, retries=retries).result())
            opened.refresh()
            info = opened.split_attrs(split)
            chunk_rows = int(info["capture"]["chunk_rows"])
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
            try:
                shard_rows = _shard_rows(shard_rows, chunk_rows, batch_size, _row_bytes(info), n,
                                         n_workers)
            except CaptureError:
                if existing is None:  # refused before any shard: leave no split behind
                    for name in (info.get("token_split"), split):
                        if name and name in opened.refresh().splits:
                            opened.remove_split(name)
                raise
            if existing is None:
                info["capture"] = dict(info["capture"], shard_rows=shard_rows)
                claim.check()
                opened.write_split_attrs(split, info)
            shards = _plan(n, shard_rows)
            if done:
                log.info("Resuming split %r: %d of %d shards already written.", split,
                         len(done), len(shards))
            repaired = _run_repairs(client, shipped, split, shards, lost, chunk_rows, n,
                                    info.get("model_fingerprint"), retries)
            labels = _run_shards(client, shipped, opened, split, info, shards, done,
                                 info.get("model_fingerprint"), retries, progress, claim)
        except Exception as exc:
            if type(exc).__name__ in _LOST_WORKERS:
                raise CaptureError(f"The capture of split {split!r} lost its workers "
                                   f"({type(exc).__name__}: {exc}); the shards they had finished "
                                   "are in the store. Run capture_distributed(..., resume=True) "
                                   "with workers to continue from the shards done.") from exc
            raise
        finally:
            client.cancel(shipped)
        if len(set(labels.values())) > 1:
            raise CaptureError(f"Some samples of split {split!r} have labels and others do not "
                               f"(shards {sorted(i for i, v in labels.items() if v)} have them); "
                               "label all or none.")
        info.update(complete=True, n_written=n, n_samples=n, n_expected=n,
                    has_labels=bool(next(iter(labels.values()), False)))
        # A repaired complete split keeps its fingerprint: its rows are those it had.
        stamp = {} if existing is not None and existing.get("complete") else {
            "finished": now_iso()}
        info["capture"] = dict(info["capture"], **stamp,
                               **({"repaired": repaired} if repaired else {}))
        claim.check()
        if durable:
            opened.sync_split(split)
        opened.write_split_attrs(split, info)
        if durable:
            opened.sync_split(split)
        clear_markers(opened, split)
    log.info("Captured %d samples of split %r into %s on %d shards", n, split, opened.location,
             len(shards))
    return opened


#: Errors of a Dask client whose workers died with the job or the tasks.
_LOST_WORKERS = frozenset({"FutureCancelledError", "CancelledError", "KilledWorker",
                           "CommClosedError", "FutureLostError"})


def _lost(store: ActivationStore, split: str, shards: list[tuple[int, int, int]],
          done: Mapping[int, bool], repairs: list[tuple[int, int]], chunk_rows: int
          ) -> dict[int, list[int]]:
    """Done shard -> its chunks to capture again (``repairs``' rows, and chunks missing from
    shards marked done)."""
    chunks = {c for a, b in repairs for c in range(a // chunk_rows, b // chunk_rows + 1)}
    chunks |= lost_chunks(store, split, done, shards, chunk_rows)
    lost = {i: [c for c in sorted(chunks) if lo <= c * chunk_rows < hi]
            for i, lo, hi in shards if i in done}
    lost = {i: cs for i, cs in lost.items() if cs}
    if lost:
        log.warning("Shards %s of split %r hold missing or damaged chunks: capturing their rows "
                    "again.", sorted(lost), split)
    return lost


def _run_repairs(client: Any, shipped: Any, split: str, shards: list[tuple[int, int, int]],
                 lost: dict[int, list[int]], chunk_rows: int, n: int,
                 fingerprint: str | None, retries: int) -> dict[str, Any] | None:
    """Capture again the ``lost`` chunks of done shards, one task per shard; what was redone."""
    if not lost:
        return None
    futures = [client.submit(repair_task, shipped, [(i, lo, hi)], _ranges(lost[i], chunk_rows, n),
                             fingerprint, pure=False, retries=retries)
               for i, lo, hi in shards if i in lost]
    records = [_raise(f.result()) for f in futures]
    record = {"at": now_iso(), "ranges": [r for rec in records for r in rec["ranges"]],
              "rows": sum(r["rows"] for r in records),
              "bytes": sum(r["bytes"] for r in records)}
    log_repair(split, record)
    return record


def _ranges(chunks: Sequence[int], chunk_rows: int, n: int) -> list[tuple[int, int]]:
    """The rows ``(first, last)`` of sorted chunk indices, consecutive chunks merged."""
    out: list[tuple[int, int]] = []
    for c in chunks:
        a, b = c * chunk_rows, min((c + 1) * chunk_rows, n) - 1
        if out and out[-1][1] == a - 1:
            a = out.pop()[0]
        out.append((a, b))
    return out


def _plan(n: int, shard_rows: int) -> list[tuple[int, int, int]]:
    """The shards of ``n`` rows: (index, first row, end row)."""
    return [(i, lo, min(lo + shard_rows, n)) for i, lo in enumerate(range(0, n, shard_rows))]


def _raise(result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        raise result["error"]
    return result


def _run_shards(client: Any, shipped: Any, store: ActivationStore, split: str,
                info: dict[str, Any], shards: list[tuple[int, int, int]], done: dict[int, bool],
                fingerprint: str | None, retries: int, progress: bool,
                claim: Any) -> dict[int, bool]:
    """Run the shards not in ``done``, recording progress; shard -> whether it had labels."""
    from distributed import Event, as_completed, wait

    stop_name = f"nnsig-stop-{uuid.uuid4().hex}"
    stop = Event(stop_name, client=client)
    todo = [s for s in shards if s[0] not in done]
    futures = [client.submit(shard_task, shipped, i, lo, hi, fingerprint, stop_name,
                             key=f"nnsig-capture-{split}-{i}-{uuid.uuid4().hex[:8]}",
                             retries=retries, pure=False)
               for i, lo, hi in todo]
    labels = dict(done)
    bar = ProgressBar(total=shards[-1][2], initial=sum(hi - lo for i, lo, hi in shards if i in done),
               unit="sample", unit_scale=True, desc=f"capture {split}",
               progress=progress, dynamic_ncols=True)
    bounds = {i: (lo, hi) for i, lo, hi in shards}
    last = time.monotonic()
    recorded = _prefix(bounds, labels)
    try:
        for fut in as_completed(futures, loop=client.loop):
            result = _raise(fut.result())
            labels[int(result["shard"])] = bool(result["has_labels"])
            bar.update(result["hi"] - result["lo"])
            prefix = _prefix(bounds, labels)
            if prefix > recorded and time.monotonic() - last >= CHECK_EVERY_S:
                info.update(n_written=prefix, n_samples=prefix)
                claim.check()
                store.write_split_attrs(split, info)
                recorded, last = prefix, time.monotonic()
    except BaseException:
        stop.set()  # running tasks stop after their batch; those not started return at once
        try:
            with client.as_current():  # wait() and as_completed() use the default client
                wait(futures, timeout=300)
        except (TimeoutError, asyncio.TimeoutError):  # distinct before Python 3.11
            warn(f"Some shard tasks of split {split!r} did not stop within 300 s: they may "
                 "still write; resume once they have stopped.")
        except Exception:  # noqa: BLE001 - lost workers, a cancelled wait: say what still runs
            running = sum(f.status == "pending" for f in futures)
            if running:
                warn(f"{running} shard task(s) of split {split!r} were still pending when the "
                     "capture stopped: they may still write; resume once they have stopped.")
        prefix = _prefix(bounds, labels)
        if prefix > recorded:
            info.update(n_written=prefix, n_samples=prefix)
            store.write_split_attrs(split, info)
        raise
    finally:
        bar.close()
        stop.clear()
    return labels


def _prefix(bounds: Mapping[int, tuple[int, int]], done: Mapping[int, Any]) -> int:
    """Rows written without a gap from row 0 (what ``n_written`` may claim)."""
    end = 0
    for i in sorted(bounds):
        if i not in done:
            break
        end = bounds[i][1]
    return end
