"""The background writer of a capture: disk I/O overlaps the next forward pass, and a
bounded queue keeps memory to a few batches."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import zarr

from nnsig_core.capture.chunks import ChunkEncoder, write_chunks
from nnsig_core.capture.errors import CaptureError
from nnsig_core.store.errors import StoreError


class ChunkWriter:
    """Buffers rows into whole chunks and writes them in order, in a thread (``submit``
    blocks while ``max_pending`` batches wait). Only whole chunks are written until
    ``close``, so the count reported to ``on_written`` is where a resume restarts."""

    def __init__(self, arrays: dict[str, zarr.Array], chunk_rows: int, start_row: int,
                 on_written: Callable[[int], None], max_pending: int = 2,
                 durable: bool = False) -> None:
        self.arrays = arrays
        self.chunk_rows = chunk_rows
        self.on_written = on_written
        self.written = start_row
        self.bytes_written = 0  # encoded bytes of the chunks written
        self.durable = durable
        self.store = next(iter(arrays.values())).store_path.store
        self.encoders = {k: ChunkEncoder.for_array(a) for k, a in arrays.items()}
        self.made_dirs: set[Path] = set()
        self.buffers = {
            k: np.empty((chunk_rows, *a.shape[1:]), dtype=a.dtype) for k, a in arrays.items()
        }
        self.fill = 0
        self.queue: queue.Queue[dict[str, np.ndarray] | None] = queue.Queue(max_pending)
        self.error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="nnsig-writer", daemon=True)
        self.thread.start()

    def submit(self, rows: dict[str, np.ndarray]) -> None:
        while True:
            if self.error is not None:
                self._raise()
            try:
                self.queue.put(rows, timeout=0.5)
                return
            except queue.Full:
                continue

    def _loop(self) -> None:
        try:
            while True:
                rows = self.queue.get()
                if rows is None or self.stopping:
                    return
                self._append(rows)
        except BaseException as exc:  # surfaced in submit/close
            self.error = exc

    def _append(self, rows: dict[str, np.ndarray]) -> None:
        n = len(next(iter(rows.values())))
        pos = 0
        while pos < n:
            if self.fill == 0 and n - pos >= self.chunk_rows:
                # Whole chunks straight from the batch, no copy into the buffer.
                m = (n - pos) // self.chunk_rows * self.chunk_rows
                self._write({k: v[pos : pos + m] for k, v in rows.items()}, m)
                pos += m
                continue
            take = min(self.chunk_rows - self.fill, n - pos)
            for k, v in rows.items():
                self.buffers[k][self.fill : self.fill + take] = v[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.chunk_rows:
                self._write(self.buffers, self.chunk_rows)
                self.fill = 0

    def _write(self, blocks: Mapping[str, np.ndarray], m: int) -> None:
        lo, hi = self.written, self.written + m
        encoded = []
        for k, arr in self.arrays.items():
            if arr.shape[0] < hi:
                arr.resize((hi, *arr.shape[1:]))
            encoder = self.encoders[k]
            if encoder is not None:
                encoded.extend(encoder.encode(lo, blocks[k][:m]))
            else:
                arr[lo:hi] = blocks[k][:m]
        write_chunks(self.store, encoded, self.durable, self.made_dirs)
        self.bytes_written += sum(memoryview(p).nbytes for _, pieces in encoded for p in pieces)
        self.written = hi
        self.on_written(hi)

    def close(self) -> int:
        while self.error is None and self.thread.is_alive():
            try:  # a writer that died with the queue full would never take a blocking put
                self.queue.put(None, timeout=0.5)
                break
            except queue.Full:
                continue
        self.thread.join()
        if self.error is not None:
            self._raise()
        if self.fill:
            try:
                self._write(self.buffers, self.fill)
            except OSError as exc:
                raise CaptureError(f"Writing to the store failed: {exc}") from exc
            self.fill = 0
        return self.written

    def _raise(self) -> None:
        assert self.error is not None
        if isinstance(self.error, StoreError):  # names the store, the key and the fix
            raise self.error
        raise CaptureError(f"Writing to the store failed: {self.error}") from self.error

    def abort(self) -> None:
        self.stopping = True
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        self.thread.join()  # stops after the chunk it is writing: nothing may write after us
