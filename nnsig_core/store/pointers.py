"""Atomic replacement of saved results: groups under ``analysis/`` are pointers to hidden
sibling copies, switched in one write (``docs/design.md``, "Atomic replacement of
results"); :class:`PointerStore` follows them, so zarr reads and writes logical paths."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from nnsig_core._util import now_iso
from nnsig_core.store.format import ANALYSIS_GROUP, POINTER_ATTR

_META = "zarr.json"
_PLAIN = ""  # cached: a plain group (not a pointer)
_ARRAY = "\0"  # cached: an array (it never becomes a group: a chunk's read needs no lookup)
#: How the copies (current, being written, or left by a killed save) are named: hidden
#: siblings of their place, left out of zarr's listings.
HIDDEN = ".new-"


def pointer_document(target: str) -> bytes:
    """The ``zarr.json`` of a pointer to the sibling group ``target``."""
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        POINTER_ATTR: {"target": target, "switched": now_iso()}}}).encode()


async def read_json(store: Store, key: str) -> dict[str, Any] | None:
    """The JSON object at ``key`` of ``store``: None when absent, ``{}`` when not an object."""
    buf = await store.get(key, default_buffer_prototype())
    if buf is None:
        return None
    try:
        doc = json.loads(buf.to_bytes())
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def pointer_target(doc: bytes | None) -> str | None:
    """The sibling a ``zarr.json`` points to, or None for any other document."""
    if not doc:
        return None
    try:
        attrs = json.loads(doc).get("attributes") or {}
    except (ValueError, AttributeError):
        return None
    target = (attrs.get(POINTER_ATTR) or {}).get("target") if isinstance(attrs, dict) else None
    return str(target) if target else None


class PointerStore(WrapperStore[Store]):
    """Wraps a zarr store; keys under ``analysis/`` follow pointers, cached per instance (a
    read that finds nothing where a cached pointer led reads the pointers again)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._slots: dict[str, str] = {}

    def _with_store(self, store: Store) -> PointerStore:
        return type(self)(store)

    def __repr__(self) -> str:
        return f"PointerStore({self._store!r})"

    def forget(self) -> None:
        """Drop the cached pointers (another process may have switched them)."""
        self._slots.clear()

    async def _raw(self, key: str) -> bytes | None:
        buf = await self._store.get(key, default_buffer_prototype())
        return None if buf is None else buf.to_bytes()

    async def _node(self, path: str) -> str | None:
        """A pointer's target, ``_PLAIN`` for a group, None for an array or nothing at ``path``."""
        if path in self._slots:
            return None if self._slots[path] == _ARRAY else self._slots[path]
        doc = await self._raw(f"{path}/{_META}")
        if doc is None:
            return None
        target = pointer_target(doc)
        if target is None:
            try:
                kind = json.loads(doc).get("node_type")
            except (ValueError, AttributeError):
                return None  # damaged: the guard names it when zarr reads it
            if kind != "group":
                if kind == "array":
                    self._slots[path] = _ARRAY
                return None
        self._slots[path] = target or _PLAIN
        return self._slots[path]

    async def resolve(self, path: str) -> str:
        """The physical path of the logical group or array path ``path``."""
        path = path.strip("/")
        if not path.startswith(ANALYSIS_GROUP + "/"):
            return path
        parts = path.split("/")
        phys = parts[0]
        for i, seg in enumerate(parts[1:], start=1):
            node = await self._node(f"{phys}/{seg}")
            if node is None:
                return "/".join([phys, *parts[i:]])
            phys = f"{phys}/{node or seg}"
        return phys

    async def _key(self, key: str) -> str:
        if not key.startswith(ANALYSIS_GROUP + "/"):
            return key
        head, _, leaf = key.rpartition("/")
        return f"{await self.resolve(head)}/{leaf}"

    async def slot(self, path: str) -> tuple[str, str | None]:
        """``(physical path of the place, its current target or None)`` of the logical
        ``path``: where a pointer to a new copy is written, and what it points to now."""
        parent, _, leaf = path.strip("/").rpartition("/")
        place = f"{await self.resolve(parent)}/{leaf}" if parent else leaf
        self._slots.pop(place, None)
        return place, pointer_target(await self._raw(f"{place}/{_META}"))

    async def switch(self, path: str, target: str) -> None:
        """Make the logical ``path`` point to its sibling ``target`` (one atomic write of the
        pointer), then delete the copy it pointed to before."""
        place, old = await self.slot(path)
        parent = place.rpartition("/")[0]
        plain = old is None and await self._raw(f"{place}/{_META}") is not None
        buf = default_buffer_prototype().buffer.from_bytes(pointer_document(target))
        await self._store.set(f"{place}/{_META}", buf)
        self._slots[place] = target
        if old is not None and old != target:
            await self._store.delete_dir(f"{parent}/{old}" if parent else old)
        elif plain:  # a group written before pointers: everything but the pointer goes
            keys = [k async for k in self._store.list_prefix(f"{place}/")]
            for k in keys:
                if k != f"{place}/{_META}":
                    await self._store.delete(k)

    async def remove(self, path: str) -> None:
        """Delete the logical ``path``: the pointer first (readers then see nothing), then
        the copy it pointed to."""
        place, old = await self.slot(path)
        parent = place.rpartition("/")[0]
        await self._store.delete_dir(place)
        if old is not None:
            await self._store.delete_dir(f"{parent}/{old}" if parent else old)
        self._slots = {k: v for k, v in self._slots.items()
                       if k != place and not k.startswith(place + "/")}

    async def get(self, key: str, prototype: BufferPrototype | None = None,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        phys = await self._key(key)
        value = await self._store.get(phys, prototype, byte_range)
        if value is None and phys != key and self._slots:
            self.forget()  # a pointer switched by another process: read the pointers again
            again = await self._key(key)
            if again != phys:
                value = await self._store.get(again, prototype, byte_range)
        return value

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        return await self._store.exists(await self._key(key))

    async def set(self, key: str, value: Buffer) -> None:
        await self._store.set(await self._key(key), value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._store.set_if_not_exists(await self._key(key), value)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        for key, value in values:
            await self.set(key, value)

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def delete(self, key: str) -> None:
        await self._store.delete(await self._key(key))

    async def is_empty(self, prefix: str) -> bool:
        return await self._store.is_empty(await self.resolve(prefix) if prefix else prefix)

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async def listed() -> AsyncIterator[str]:
            logical = prefix.rstrip("/")
            phys = await self.resolve(logical) if logical else logical
            async for k in self._store.list_prefix(phys + "/" if phys else ""):
                yield logical + k[len(phys):] if phys else k
        return listed()

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        async def listed() -> AsyncIterator[str]:
            phys = await self.resolve(prefix) if prefix.strip("/") else prefix
            under = phys.startswith(ANALYSIS_GROUP)
            async for k in self._store.list_dir(phys):
                if not (under and k.startswith(HIDDEN)):  # copies: reached through pointers
                    yield k
        return listed()

    async def delete_dir(self, prefix: str) -> None:
        path = prefix.strip("/")
        if path.startswith(ANALYSIS_GROUP + "/"):
            place, old = await self.slot(path)
            if old is not None:
                await self.remove(path)
                return
            await self._store.delete_dir(place)
            return
        await self._store.delete_dir(prefix)

    async def getsize(self, key: str) -> int:
        return await self._store.getsize(await self._key(key))


def unwrap(store: Any, attribute: str) -> Any:
    """The first store, going inwards through wrapper stores, that has ``attribute``."""
    while store is not None and not hasattr(store, attribute):
        store = getattr(store, "_store", None)
    return store


def raw_store(store: Any) -> Any:
    """The store under nnsig's wrappers (guard, pointers): physical keys, raw bytes."""
    inner = pointer_store(store)
    return store if inner is None else inner._store


def pointer_store(store: Any) -> PointerStore | None:
    """The :class:`PointerStore` among ``store``'s wrappers, if any."""
    while store is not None and not isinstance(store, PointerStore):
        store = getattr(store, "_store", None)
    return store
