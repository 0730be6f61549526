"""Whole chunks of a capture, encoded byte for byte as zarr would and written to a local
store's files or through the store's async ``set`` (``docs/design.md``, "Writing")."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc, Zstd
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from nnsig_core._util import fsync_dir
from nnsig_core.store.keys import local_root

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}

#: Write a local store's chunks as files directly (measured faster than ``LocalStore.set``,
#: see ``benchmarks/bench_capture.py``); False sends every chunk through the store's API.
LOCAL_FAST_PATH = True

#: An encoded chunk: its store key and the pieces of its bytes, in order.
EncodedChunk = tuple[str, list[Any]]


class ChunkEncoder:
    """Encodes whole chunks of one array exactly as zarr would."""

    def __init__(self, array: zarr.Array, compressor: Any, checksum: bool) -> None:
        self.array = array
        self.compressor = compressor
        self.checksum = checksum
        self.chunk_rows = int(array.chunks[0])
        self.row_shape = tuple(int(s) for s in array.shape[1:])
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill = np.asarray(array.fill_value, dtype=self.dtype)
        self.prefix = array.store_path.path

    @classmethod
    def for_array(cls, array: zarr.Array) -> ChunkEncoder | None:
        """An encoder for ``array``, or None when its layout is not the plain case."""
        meta = array.metadata
        if getattr(meta, "zarr_format", None) != 3 or sys.byteorder != "little":
            return None
        if tuple(array.chunks[1:]) != tuple(array.shape[1:]):
            return None  # chunked along samples only
        codecs = list(meta.codecs)  # type: ignore[union-attr]  # zarr_format 3: v3 metadata
        if not codecs or not isinstance(codecs[0], BytesCodec):
            return None
        if getattr(codecs[0].endian, "value", codecs[0].endian) not in (None, "little"):
            return None
        rest = codecs[1:]
        checksum = bool(rest) and isinstance(rest[-1], Crc32cCodec)
        if checksum:
            rest = rest[:-1]
        compressor = None
        if len(rest) == 1 and isinstance(rest[0], BloscCodec):
            c = rest[0]
            compressor = Blosc(cname=c.cname.value, clevel=int(c.clevel),
                               shuffle=_SHUFFLE[c.shuffle.value], blocksize=int(c.blocksize),
                               typesize=int(c.typesize))
        elif len(rest) == 1 and isinstance(rest[0], ZstdCodec):
            compressor = Zstd(level=int(rest[0].level), checksum=bool(rest[0].checksum))
        elif rest:
            return None
        return cls(array, compressor, checksum)

    def key(self, index: int) -> str:
        """The store key of chunk ``index`` (along samples)."""
        chunk_key = self.array.metadata.encode_chunk_key((index,) + (0,) * len(self.row_shape))
        return f"{self.prefix}/{chunk_key}" if self.prefix else chunk_key

    def encode(self, lo: int, block: np.ndarray) -> list[EncodedChunk]:
        """Encode rows ``lo : lo + len(block)`` (``lo`` starts a chunk; the array's last
        chunk may be partial, padded with the fill value as zarr does)."""
        if lo % self.chunk_rows:
            raise ValueError(f"row {lo} does not start a chunk of {self.chunk_rows} rows")
        block = np.ascontiguousarray(block, dtype=self.dtype)
        out = []
        for start in range(0, len(block), self.chunk_rows):
            part = block[start : start + self.chunk_rows]
            if len(part) < self.chunk_rows:
                padded = np.empty((self.chunk_rows, *self.row_shape), dtype=self.dtype)
                padded[: len(part)] = part
                padded[len(part) :] = self.fill
                part = padded
            # google_crc32c takes bytes or a NumPy array (not a memoryview)
            data: Any = self.compressor.encode(part) if self.compressor is not None else part
            pieces = [data]
            if self.checksum:
                pieces.append(int(google_crc32c.value(data)).to_bytes(4, "little"))
            out.append((self.key((lo + start) // self.chunk_rows), pieces))
        return out


def write_chunks(store: Any, chunks: Sequence[EncodedChunk], durable: bool = False,
                 made_dirs: set[Path] | None = None) -> None:
    """Write encoded chunks: as files of a local store (fsync'd with their directories when
    ``durable``), else concurrently through the store's async ``set``."""
    root = local_root(store) if LOCAL_FAST_PATH else None
    if root is None:
        proto = default_buffer_prototype()

        async def put_all() -> None:
            await asyncio.gather(*(
                store.set(key, proto.buffer.from_bytes(b"".join(bytes(p) for p in pieces)))
                for key, pieces in chunks))

        sync(put_all())
        return
    made = made_dirs if made_dirs is not None else set()
    touched: set[Path] = set()
    for key, pieces in chunks:
        path = root / key
        _make_dirs(path.parent, made, touched)
        with open(path, "wb") as f:
            for p in pieces:
                f.write(p)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        touched.add(path.parent)
    if durable:
        for d in touched:
            fsync_dir(d)


def _make_dirs(directory: Path, made: set[Path], touched: set[Path]) -> None:
    if directory in made:
        return
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    if missing:
        os.makedirs(directory, exist_ok=True)
        touched.update(m.parent for m in missing)  # their entries are new in the parent
    made.add(directory)
