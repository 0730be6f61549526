"""A zarr store wrapper whose reads raise on a missing chunk, a chunk failing its crc32c or
a ``zarr.json`` that is not JSON, naming the store, split, array, rows and the fix
(``docs/design.md``, "Integrity"). It runs in zarr's event loop: async reads only."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from nnsig_core.store.errors import StoreError, unreachable
from nnsig_core.store.format import ANALYSIS_GROUP, SCORES_GROUP, SIGNATURES_GROUP, SPLIT_ATTR
from nnsig_core.store.pointers import read_json

METADATA = "zarr.json"
_VERIFY = "nnsig verify"


class MissingChunkError(StoreError):
    """A chunk whose rows were written is absent from the store (deleted or lost)."""


class DamagedChunkError(StoreError):
    """A chunk's bytes no longer match their checksum (altered or truncated after writing)."""


class DamagedMetadataError(StoreError):
    """A ``zarr.json`` document of the store is not valid JSON."""


def chunk_key_parts(key: str) -> tuple[str, tuple[int, ...]] | None:
    """``(array path, chunk coordinates)`` of a chunk key in zarr v3's default encoding
    (``<array>/c/<i>/<j>...``), or None for any other key."""
    head, sep, tail = key.rpartition("/c/")
    if not sep:
        head, sep, tail = ("", "c/", key[2:]) if key.startswith("c/") else ("", "", "")
        if not sep:
            return None
    try:
        coords = tuple(int(p) for p in tail.split("/"))
    except ValueError:
        return None
    return head, coords


def crc32c_ok(data: Any) -> bool:
    """Whether the last four bytes of ``data`` (bytes or a uint8 array) are the little-endian
    crc32c of the rest."""
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else np.asarray(data)
    if arr.size < 4:
        return False
    return int(google_crc32c.value(arr[:-4])) == int.from_bytes(arr[-4:].tobytes(), "little")


@dataclass
class _ArrayInfo:
    checksummed: bool
    split: str | None
    name: str  # the layer's name, or the array's key
    what: str  # "layer" or "array"
    chunk_rows: int


class GuardedStore(WrapperStore[Store]):
    """Wraps a zarr store; reads of missing chunks, damaged chunks or damaged metadata raise.

    ``location`` is how messages name the store (a path or URL).
    """

    def __init__(self, store: Store, location: str = "") -> None:
        super().__init__(store)
        self.location = location
        self._arrays: dict[str, _ArrayInfo] = {}
        self._docs: dict[str, dict[str, Any]] = {}  # array documents zarr has just read

    def _with_store(self, store: Store) -> GuardedStore:
        return type(self)(store, self.location)

    def __repr__(self) -> str:
        return f"GuardedStore({self._store!r})"

    def forget(self) -> None:
        """Drop what was learned of arrays (their codecs and chunking): they were re-created."""
        self._arrays.clear()
        self._docs.clear()
        forget = getattr(self._store, "forget", None)
        if callable(forget):
            forget()

    def _denied(self, what: str, key: str, exc: BaseException) -> StoreError:
        return StoreError(f"The store {self.location} refused to {what} {self._where(key)} "
                          f"({exc}): these credentials may not write there. Use credentials that "
                          "can write to it (for S3, s3:PutObject and s3:DeleteObject on its "
                          "keys), or another store.")

    async def _io(self, what: str, key: str, call: Awaitable[Any]) -> Any:
        """Await ``call``; a refusal or a silent store is a :class:`StoreError` with the fix."""
        try:
            return await call
        except PermissionError as exc:
            if what == "read":
                raise StoreError(f"The store {self.location} refused to read {self._where(key)} "
                                 f"({exc}). Use credentials that may read it (for S3, s3:GetObject "
                                 "and s3:ListBucket).") from exc
            raise self._denied(what, key, exc) from exc
        except Exception as exc:
            lost = unreachable(self.location, exc, f"{what} {self._where(key)}")
            if lost is None:
                raise
            raise lost from exc

    async def set(self, key: str, value: Buffer) -> None:
        await self._io("write", key, self._store.set(key, value))

    async def set_below(self, store: Store, key: str, value: Buffer, shown: str) -> None:
        """``store.set(key, value)`` on a store this one wraps (a physical key), its errors
        those of :meth:`set` of ``shown``."""
        await self._io("write", shown, store.set(key, value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._io("write", key, self._store.set_if_not_exists(key, value))

    async def delete(self, key: str) -> None:
        await self._io("delete", key, self._store.delete(key))

    async def delete_dir(self, prefix: str) -> None:
        await self._io("delete", prefix, self._store.delete_dir(prefix))

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        value = await self._io("read", key, self._store.get(key, prototype, byte_range))
        if byte_range is None:
            await self._check(key, value)
        return value

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        for (key, byte_range), value in zip(key_ranges, values, strict=True):
            if byte_range is None:
                await self._check(key, value)
        return values

    async def _check(self, key: str, value: Buffer | None) -> None:
        if key == METADATA or key.endswith("/" + METADATA):
            if value is not None:
                try:
                    doc = json.loads(value.to_bytes())
                except ValueError as exc:
                    raise DamagedMetadataError(f"The metadata file {self._where(key)} is damaged "
                                               f"(not valid JSON: {exc}). Run `{_VERIFY} "
                                               f"{self.location}` to see what else is; "
                                               f"{metadata_fix(key)}") from None
                if isinstance(doc, dict) and doc.get("node_type") == "array":
                    self._docs[key[: -len(METADATA)].rstrip("/")] = doc  # for its chunks' check
            return
        parts = chunk_key_parts(key)
        if parts is None:
            return
        array, coords = parts
        if value is None:
            await self._check_missing(key, array, coords)
            return
        info = await self._array_info(array)
        if info.checksummed and not crc32c_ok(value.as_numpy_array()):
            raise DamagedChunkError(f"Chunk {coords[0]} of {self._describe(info)} "
                                    f"({self._rows(info, coords)}) is damaged: its checksum does "
                                    f"not match ({self._where(key)} was altered or truncated after "
                                    f"it was written). Run `{_VERIFY} {self.location}` to list "
                                    f"every damaged chunk; {self._fix(info)}")

    async def _check_missing(self, key: str, array: str, coords: tuple[int, ...]) -> None:
        info = await self._array_info(array)
        if info.split is None:
            # Arrays of analyses, signatures and scores hold every chunk of their shape
            # (written whole, empty chunks included): any absent one was lost.
            if info.checksummed and array.startswith(ANALYSIS_GROUP + "/"):
                raise MissingChunkError(
                    f"Chunk {'/'.join(map(str, coords))} of {self._describe(info)} is missing "
                    f"from the store ({self._where(key)} was deleted or lost). Run `{_VERIFY} "
                    f"{self.location}` to list every missing chunk; {self._fix(info)}"
                )
            return
        meta = await self._split_meta(info.split)
        if meta is None:
            return
        written = int(meta.get("n_samples", meta.get("n_written", 0)) if meta.get("complete")
                      else meta.get("n_written", 0))
        if coords[0] * info.chunk_rows < written:
            raise MissingChunkError(
                f"Chunk {coords[0]} of {self._describe(info)} ({self._rows(info, coords)}) is "
                f"missing from the store ({self._where(key)} was deleted or lost), although "
                f"the split's first {written} rows were written. Run `{_VERIFY} "
                f"{self.location}` to list every missing chunk; {self._fix(info)}"
            )

    async def _split_meta(self, split: str) -> dict[str, Any] | None:
        doc = await read_json(self._store, f"{split}/{METADATA}")
        if doc is None:
            return None
        meta = (doc.get("attributes") or {}).get(SPLIT_ATTR)
        return dict(meta) if isinstance(meta, dict) else None

    async def _array_info(self, array: str) -> _ArrayInfo:
        if array in self._arrays:
            return self._arrays[array]
        doc = self._docs.pop(array, None) or await read_json(self._store, f"{array}/{METADATA}") or {}
        codecs = doc.get("codecs") or []
        checksummed = bool(codecs) and isinstance(codecs[-1], dict) and \
            codecs[-1].get("name") == "crc32c"
        chunk_shape = ((doc.get("chunk_grid") or {}).get("configuration") or {}).get(
            "chunk_shape") or [1]
        split, _, key = array.partition("/")
        meta = await self._split_meta(split) if key and "/" not in key else None
        if meta is None:
            info = _ArrayInfo(checksummed, None, array, "array", int(chunk_shape[0]))
        else:
            names = {d.get("key"): d.get("name") for d in meta.get("layers") or []}
            layer = names.get(key)
            info = _ArrayInfo(checksummed, split, layer if layer is not None else key,
                              "layer" if layer is not None else "array", int(chunk_shape[0]))
        self._arrays[array] = info
        return info

    def _where(self, key: str) -> str:
        return f"{self.location.rstrip('/')}/{key}" if self.location else key

    @staticmethod
    def _describe(info: _ArrayInfo) -> str:
        if info.split is None:
            return f"array {info.name!r}"
        return f"{info.what} {info.name!r} of split {info.split!r}"

    @staticmethod
    def _rows(info: _ArrayInfo, coords: tuple[int, ...]) -> str:
        lo = coords[0] * info.chunk_rows
        return f"rows {lo}-{lo + info.chunk_rows - 1}"

    @staticmethod
    def _fix(info: _ArrayInfo) -> str:
        return fix_for(info.name if info.split is None else None, info.split)


def metadata_fix(key: str) -> str:
    """What restores the damaged metadata document ``key``."""
    parts = key.split("/")
    if len(parts) == 1:
        return ("it holds only the store's format version: open_store(..., mode='a') writes "
                "it again.")
    if parts[0] == ANALYSIS_GROUP:
        return fix_for("/".join(parts[:-1]))
    split = parts[0]
    return (f"capture split {split!r} again (capture(..., split={split!r}, overwrite=True)); "
            "the store's other splits stay readable.")


def fix_for(array: str | None, split: str | None = None) -> str:
    """What to do about a lost or damaged chunk of a split (``split``) or of a saved result
    (``array``, its path under ``analysis/``): a command that restores it."""
    if split is not None:
        return (f"capture split {split!r} again with the same data and model "
                f"(capture(..., split={split!r}, resume=True) re-captures the rows that are "
                "missing or damaged).")
    parts = (array or "").split("/")
    name = parts[1] if len(parts) > 1 else "?"
    if len(parts) > 3 and parts[2] == SIGNATURES_GROUP:
        return (f"save analysis {name!r} again (analysis.save(store, {name!r}, "
                "overwrite=True)), which computes its signatures again.")
    if len(parts) > 3 and parts[2] == SCORES_GROUP:
        return (f"compute the scores of split {parts[3]!r} again (signature_scores(analysis, "
                f"store, {parts[3]!r}, save=True), or nnsig evaluate).")
    return (f"fit analysis {name!r} again and save it with overwrite=True "
            f"(SignatureAnalysis(...).fit(store).save(store, {name!r}, overwrite=True)).")
