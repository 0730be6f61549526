"""Whole-chunk writes straight to a local Zarr v3 array's chunk files.

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
import sys
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

__all__ = ["DirectChunkWriter"]

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
