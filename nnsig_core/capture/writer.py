"""The background writer of a capture, and whole-chunk writes straight to a local array's files.

:class:`ChunkWriter` receives each batch from the capture loop through a
bounded queue, assembles whole chunks and writes them in order, so disk I/O
overlaps the next forward pass and memory stays a few batches whatever the
data set's size.

Capture writes every array in whole, aligned chunks, in order. For that access
pattern zarr's general write path (selection, asyncio, a copy per codec) costs
about three times the encoding and the file write themselves, which is what
makes capture slower than the forward pass it records. :class:`DirectChunkWriter`
encodes a chunk with the array's own codec settings and writes the chunk file
at the key the array's metadata gives, exactly as the Zarr v3 spec lays it out;
zarr reads it back like any other chunk (the tests check this on every path).

Only the plain case is handled: a ``LocalStore``, the ``bytes`` codec
(little-endian) optionally followed by ``blosc``, no sharding. Anything else
returns ``None`` from :meth:`DirectChunkWriter.for_array` and the caller uses
zarr's ordinary ``array[lo:hi] = block``.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from nnsig_core.capture.errors import CaptureError

__all__ = ["ChunkWriter", "DirectChunkWriter"]

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


class DirectChunkWriter:
    """Encode and write whole chunks of one array (see the module docstring)."""

    def __init__(self, array: zarr.Array, directory: Path, blosc: Blosc | None) -> None:
        self.array = array
        self.directory = directory
        self.blosc = blosc
        self.chunk_rows = int(array.chunks[0])
        self.row_shape = tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill = np.asarray(array.fill_value, dtype=self.dtype)
        self.made_dirs: set[Path] = set()

    @classmethod
    def for_array(cls, array: zarr.Array) -> DirectChunkWriter | None:
        """A writer for ``array``, or None when its layout is not the plain case."""
        store = array.store_path.store
        meta = array.metadata
        if not isinstance(store, LocalStore) or getattr(meta, "zarr_format", None) != 3:
            return None
        if tuple(array.chunks[1:]) != tuple(array.shape[1:]):
            return None  # chunked along samples only
        codecs = list(meta.codecs)
        if not codecs or not isinstance(codecs[0], BytesCodec):
            return None
        endian = getattr(codecs[0].endian, "value", codecs[0].endian)
        if endian not in (None, "little") or sys.byteorder != "little":
            return None
        blosc = None
        if len(codecs) == 2 and isinstance(codecs[1], BloscCodec):
            c = codecs[1]
            blosc = Blosc(
                cname=c.cname.value,
                clevel=int(c.clevel),
                shuffle=_SHUFFLE[c.shuffle.value],
                blocksize=int(c.blocksize),
                typesize=int(c.typesize),
            )
        elif len(codecs) != 1:
            return None
        directory = Path(str(store.root)) / array.store_path.path
        return cls(array, directory, blosc)

    def write(self, lo: int, block: np.ndarray) -> None:
        """Write rows ``lo : lo + len(block)``; ``lo`` must start a chunk.

        ``block`` holds whole chunks, except that the last chunk of the array
        may be partial (it is padded with the fill value, as zarr stores edge
        chunks).
        """
        if lo % self.chunk_rows:
            raise ValueError(f"row {lo} does not start a chunk of {self.chunk_rows} rows")
        block = np.ascontiguousarray(block, dtype=self.dtype)
        for start in range(0, len(block), self.chunk_rows):
            part = block[start : start + self.chunk_rows]
            if len(part) < self.chunk_rows:
                padded = np.empty((self.chunk_rows, *self.row_shape), dtype=self.dtype)
                padded[: len(part)] = part
                padded[len(part) :] = self.fill
                part = padded
            self._write_chunk((lo + start) // self.chunk_rows, part)

    def _write_chunk(self, index: int, chunk: np.ndarray) -> None:
        coords = (index,) + (0,) * len(self.row_shape)
        path = self.directory / self.array.metadata.encode_chunk_key(coords)
        parent = path.parent
        if parent not in self.made_dirs:
            os.makedirs(parent, exist_ok=True)
            self.made_dirs.add(parent)
        data: Any = self.blosc.encode(chunk) if self.blosc is not None else chunk.data
        with open(path, "wb") as f:
            f.write(data)


class ChunkWriter:
    """Background writer: buffers rows into whole chunks and writes them in order.

    ``submit`` blocks when two batches are already waiting, which bounds
    memory. Only whole chunks are written until ``close``, so the written
    count reported through ``on_written`` is always a multiple of the chunk
    length until the last, partial chunk; a resumed capture restarts there.
    """

    def __init__(
        self,
        arrays: dict[str, zarr.Array],
        chunk_rows: int,
        start_row: int,
        on_written: Callable[[int], None],
        max_pending: int = 2,
    ) -> None:
        self.arrays = arrays
        self.chunk_rows = chunk_rows
        self.on_written = on_written
        self.written = start_row
        self.direct = {k: DirectChunkWriter.for_array(a) for k, a in arrays.items()}
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
                raise CaptureError(f"Writing to the store failed: {self.error}") from self.error
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
        for k, arr in self.arrays.items():
            if arr.shape[0] < hi:
                arr.resize((hi, *arr.shape[1:]))
            direct = self.direct[k]
            if direct is not None:
                direct.write(lo, blocks[k][:m])
            else:
                arr[lo:hi] = blocks[k][:m]
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
            raise CaptureError(f"Writing to the store failed: {self.error}") from self.error
        if self.fill:
            try:
                self._write(self.buffers, self.fill)
            except OSError as exc:
                raise CaptureError(f"Writing to the store failed: {exc}") from exc
            self.fill = 0
        return self.written

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
