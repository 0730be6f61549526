"""The worker side of :func:`~nnsig_core.distributed.capture.capture_distributed`: the job,
each worker's adapter, the prepare, shard and repair tasks, and the shard markers."""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from nnsig_core._util import now_iso
from nnsig_core.capture.batches import class_indices, is_array_pair, labels_numpy
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.options import CaptureOptions
from nnsig_core.capture.policy import check_weights, legacy_fingerprints, model_fingerprint
from nnsig_core.capture.repair import Repairs
from nnsig_core.capture.session import CaptureSession
from nnsig_core.protocol import Adapter, NonFiniteActivationError
from nnsig_core.store import ActivationStore, StoreError, open_store
from nnsig_core.store.claims import CLAIMS_GROUP

log = logging.getLogger("nnsig")

#: Seconds between two checks of the stop flag by a shard task, and two progress records.
CHECK_EVERY_S = 1.0
#: Errors of the data, the model or the store: not retried, the capture stops.
_FINAL_ERRORS = (CaptureError, StoreError, NonFiniteActivationError)


def shard_marker_prefix(split: str) -> str:
    """Store key prefix of the shard markers of ``split`` (under the claims group)."""
    return f"{CLAIMS_GROUP}/{split}.shards/"


def default_collate(items: Sequence[Any]) -> tuple[Any, Any]:
    """``(inputs, labels)`` of a list of ``dataset[i]`` items, ``(x, y)`` pairs or bare ``x``:
    inputs stacked into a NumPy array (or a mapping of them), labels into a vector or None."""
    if not items:
        raise CaptureError("An empty batch cannot be collated.")
    first = items[0]
    if isinstance(first, (tuple, list)):
        if not first:
            raise CaptureError("dataset[i] returned an empty tuple; return (input, label).")
        xs = [it[0] for it in items]
        ys = [it[1] for it in items] if len(first) > 1 else None
    else:
        xs, ys = list(items), None
    if isinstance(xs[0], Mapping):
        inputs: Any = {k: np.stack([labels_numpy(x[k]) for x in xs]) for k in xs[0]}
    else:
        inputs = np.stack([labels_numpy(x) for x in xs])
    if ys is None or all(y is None for y in ys):
        return inputs, None
    if any(y is None for y in ys):
        raise CaptureError("Some samples have a label and others None; label all or none.")
    return inputs, np.stack([labels_numpy(y) for y in ys])


def dataset_len(dataset: Any) -> int:
    if is_array_pair(dataset):
        n = int(dataset[0].shape[0])
        if dataset[1] is not None and len(dataset[1]) != n:
            raise CaptureError(f"X has {n} rows but y has {len(dataset[1])}: one label per sample "
                               "is needed.")
        return n
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise CaptureError("dataset must be map-style (len(dataset) and dataset[i], e.g. a torch "
                           f"Dataset) or (X, y) arrays; got {type(dataset).__name__}. An iterable "
                           "of batches (a DataLoader) cannot be split into shards: pass its "
                           "dataset, or use capture().")
    return int(len(dataset))


@dataclass
class Job:
    """Everything a task needs, shipped to every worker once."""

    make_adapter: Callable[[], Adapter]
    adapter_token: str
    dataset: Any
    store: Any  # what the workers open: a path or URL given by the user, or the ActivationStore
    options: CaptureOptions
    n: int
    collate: Callable[[Sequence[Any]], tuple[Any, Any]]
    capture_id: str
    settings: dict[str, Any] = field(default_factory=dict)

    def batch(self, lo: int, hi: int) -> tuple[Any, Any, np.ndarray]:
        index = np.arange(lo, hi, dtype=np.int64)
        if is_array_pair(self.dataset):
            X, y = self.dataset
            return X[lo:hi], (None if y is None else y[lo:hi]), index
        inputs, labels = self.collate([self.dataset[i] for i in range(lo, hi)])
        return inputs, labels, index

    def open(self) -> ActivationStore:
        """The store, opened afresh for one task (its metadata cache is the task's own)."""
        if isinstance(self.store, ActivationStore):
            return pickle.loads(pickle.dumps(self.store)).refresh()
        return open_store(self.store, mode="r+")


class _TaskClaim:
    """The driver holds the split's claim; a task acts under it and checks nothing itself."""

    def check(self) -> None:
        pass


_ADAPTERS: dict[tuple[str, str], tuple[Adapter, threading.Lock, str | None]] = {}
_ADAPTERS_LOCK = threading.Lock()
_MAX_ADAPTERS = 4


def _worker_key() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def _adapter(job: Job) -> tuple[Adapter, threading.Lock, str | None]:
    """This worker's adapter of the job's model (built once per worker), its lock and
    fingerprint."""
    key = (job.adapter_token, _worker_key())
    with _ADAPTERS_LOCK:
        entry = _ADAPTERS.get(key)
        if entry is None:
            adapter = job.make_adapter()
            if not isinstance(adapter, Adapter):
                raise CaptureError(f"make_adapter() returned {type(adapter).__name__}, not an "
                                   "nnsig adapter: return e.g. nnsig_torch.TorchAdapter(model) "
                                   "or nnsig_core.ArrayAdapter(...).")
            entry = (adapter, threading.Lock(), model_fingerprint(adapter))
            while len(_ADAPTERS) >= _MAX_ADAPTERS:
                _ADAPTERS.pop(next(iter(_ADAPTERS)))
            _ADAPTERS[key] = entry
    return entry


class _ShardSession(CaptureSession):
    """A capture session writing one shard: progress and completion are the driver's."""

    def _record_written(self, n_written: int, always: bool = False) -> None:
        pass

    def _arrays_to_resume(self, chunk_rows: int) -> dict[str, Any]:
        """The split's arrays (the driver checks other shards' chunks when it resumes)."""
        return self.store.split_arrays(self.split)


def _session(job: Job, store: ActivationStore, adapter: Adapter, existing: dict[str, Any] | None,
             start: int, fingerprint: str | None) -> CaptureSession:
    return _ShardSession(store=store, adapter=adapter, options=job.options, n_expected=job.n,
                         settings=dict(job.settings), existing=existing, start=start,
                         claim=_TaskClaim(),  # type: ignore[arg-type]
                         fingerprint=fingerprint)


def _final(exc: BaseException) -> dict[str, Any]:
    try:
        pickle.dumps(exc)
        return {"error": exc}
    except Exception:  # an exception that does not pickle: its words
        return {"error": CaptureError(f"{type(exc).__name__}: {exc}")}


def prepare_task(job: Job, create: bool, check_rows: Sequence[int] = ()) -> dict[str, Any]:
    """Build the model on this worker and check its weights; create a new split's arrays from
    the first batch, or, resuming, check the data's labels at ``check_rows`` against the store."""
    try:
        adapter, lock, fingerprint = _adapter(job)
        store, split = job.open(), job.options.split
        existing = None if create else store.split_attrs(split)
        check_weights(store, split, fingerprint, existing, job.options.allow_other_weights,
                      legacy_fingerprints(adapter))
        if not create:
            stored: Any = store.split_arrays(split)["labels"]  # rows past n_written too
            for row in check_rows:
                _, labels, _ = job.batch(int(row), int(row) + 1)
                got = -1 if labels is None else int(class_indices(labels_numpy(labels))[0])
                if got != int(stored[int(row)]):
                    raise CaptureError(f"Cannot resume split {split!r}: sample {row} has label "
                                       f"{got} in this data but {int(stored[int(row)])} in the "
                                       "store, so the data is not in the same order as the "
                                       "interrupted capture. Use the same data without shuffling, "
                                       "or overwrite=True.")
            return {"fingerprint": fingerprint}
        session = _session(job, store, adapter, None, 0, fingerprint)
        inputs, labels, index = job.batch(0, min(job.options.batch_size, job.n))
        try:
            with lock:
                session.process(inputs, labels, index)
        finally:
            session.abort()  # the shard tasks write the rows
        return {"fingerprint": fingerprint}
    except _FINAL_ERRORS as exc:
        return _final(exc)


def _stopped(name: str | None, last: list[float]) -> bool:
    if name is None or time.monotonic() - last[0] < CHECK_EVERY_S:
        return False
    last[0] = time.monotonic()
    from distributed import Event

    return bool(Event(name).is_set())


def _open(job: Job, fingerprint: str | None
          ) -> tuple[Adapter, threading.Lock, str | None, ActivationStore, dict[str, Any]]:
    """This worker's adapter and the store with the split's metadata, after checking the
    weights and that the split is still this capture's."""
    adapter, lock, mine = _adapter(job)
    if fingerprint is not None and mine != fingerprint and not job.options.allow_other_weights:
        raise CaptureError("make_adapter() built a model with other weights on worker "
                           f"{_worker_key()} (fingerprint {mine}, the split's is {fingerprint}): "
                           "every worker must load the same weights.")
    store = job.open()
    info = store.split_attrs(job.options.split)
    if (info.get("capture") or {}).get("capture_id") != job.capture_id:
        raise StoreError(f"Split {job.options.split!r} of {store.location} no longer belongs to "
                         "this capture (it was replaced); stopping without writing.")
    return adapter, lock, mine, store, info


def shard_task(job: Job, shard: int, lo: int, hi: int, fingerprint: str | None,
               stop: str | None) -> dict[str, Any]:
    """Capture rows ``lo:hi`` (whole chunks, the last shard excepted), then mark the shard done."""
    try:
        adapter, lock, mine, store, info = _open(job, fingerprint)
        session = _session(job, store, adapter, info, lo, mine)
        last = [time.monotonic()]
        try:
            for b in range(lo, hi, job.options.batch_size):
                if _stopped(stop, last):
                    session.abort()
                    return {"shard": shard, "stopped": True}
                inputs, labels, index = job.batch(b, min(b + job.options.batch_size, hi))
                with lock:
                    session.process(inputs, labels, index)
            if session.writer is None:
                raise CaptureError(f"Shard {shard} (rows {lo}-{hi - 1}) yielded no samples.")
            written = session.writer.close()
        except BaseException:
            session.abort()
            raise
        if written != hi:
            raise CaptureError(f"Shard {shard} wrote rows up to {written}, expected {hi}.")
        _put_marker(store, job.options.split, shard, {
            "shard": shard, "rows": [lo, hi], "capture_id": job.capture_id,
            "has_labels": bool(session.has_labels), "host": socket.gethostname(),
            "pid": os.getpid(), "finished": now_iso(),
        })
        return {"shard": shard, "lo": lo, "hi": hi, "has_labels": bool(session.has_labels)}
    except _FINAL_ERRORS as exc:
        return {"shard": shard, **_final(exc)}


def repair_task(job: Job, shards: Sequence[tuple[int, int, int]],
                ranges: Sequence[tuple[int, int]], fingerprint: str | None) -> dict[str, Any]:
    """Capture again the rows ``ranges`` (whole chunks) of the done ``shards``, batch by batch
    as the shards cut them; returns :meth:`Repairs.record`."""
    try:
        adapter, lock, mine, store, info = _open(job, fingerprint)
        session = _session(job, store, adapter, info, shards[0][1], mine)
        repairs = Repairs(session, list(ranges))
        try:
            for _, lo, hi in shards:
                for b in range(lo, hi, job.options.batch_size):
                    e = min(b + job.options.batch_size, hi)
                    if repairs.wants(b, e):
                        inputs, labels, index = job.batch(b, e)
                        with lock:
                            repairs.feed(inputs, labels, index, b)
            repairs.close(job.options.split)
        except BaseException:
            repairs.abort()
            raise
        finally:
            session.abort()  # its own writer was given nothing
        return repairs.record()
    except _FINAL_ERRORS as exc:
        return _final(exc)


def _zstore(store: ActivationStore) -> Any:
    return store.root.store_path.store


def _put_marker(store: ActivationStore, split: str, shard: int, doc: dict[str, Any]) -> None:
    buf = default_buffer_prototype().buffer.from_bytes(json.dumps(doc).encode())
    sync(_zstore(store).set(f"{shard_marker_prefix(split)}{shard:06d}.json", buf))


def _markers(store: ActivationStore, split: str) -> list[dict[str, Any]]:
    zs = _zstore(store)
    prefix = shard_marker_prefix(split)

    async def read() -> list[dict[str, Any]]:
        out = []
        async for key in zs.list_prefix(prefix):
            buf = await zs.get(key, prototype=default_buffer_prototype())
            if buf is None:
                continue
            try:
                out.append(dict(json.loads(buf.to_bytes())))
            except ValueError:
                log.warning("Unreadable shard marker %s ignored (its shard runs again).", key)
        return out

    return sync(read())


def clear_markers(store: ActivationStore, split: str) -> None:
    sync(_zstore(store).delete_dir(shard_marker_prefix(split).rstrip("/")))


def lost_chunks(store: ActivationStore, split: str, done: Mapping[int, Any],
                shards: Sequence[tuple[int, int, int]], chunk_rows: int) -> set[int]:
    """The chunk indices of the ``done`` shards missing from the store in any array."""
    present = {key: store.chunk_indices(split, key) for key in store.split_arrays(split)}
    need = {c for i, lo, hi in shards if i in done
            for c in range(lo // chunk_rows, -(-hi // chunk_rows))}
    return {c for c in need if any(c not in have for have in present.values())}


def done_shards(store: ActivationStore, split: str, capture_id: str,
                shards: Sequence[tuple[int, int, int]]) -> dict[int, bool]:
    """Shards with a marker of this capture and the planned rows -> whether they had labels."""
    plan = {i: (lo, hi) for i, lo, hi in shards}
    return {int(m["shard"]): bool(m.get("has_labels")) for m in _markers(store, split)
            if m.get("capture_id") == capture_id and m.get("shard") in plan
            and tuple(m.get("rows", ())) == plan[m["shard"]]}
