"""The results area of a store: the groups of analyses, their signatures and scores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import zarr
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from nnsig_core.store.errors import StoreError
from nnsig_core.store.format import ANALYSIS_GROUP
from nnsig_core.store.leftovers import COPY_ATTR, LEFTOVER_AGE_S, collect, copy_record
from nnsig_core.store.pointers import HIDDEN, pointer_store, raw_store, unwrap
from nnsig_core.store.split_reading import SplitReading

log = logging.getLogger("nnsig")


class ResultsArea(SplitReading):
    """The groups of results, a mixin of :class:`~nnsig_core.store.ActivationStore`."""

    @property
    def analyses(self) -> list[str]:
        """Names of the analyses saved in the store."""
        if ANALYSIS_GROUP not in self.root:
            return []
        groups = self.root[ANALYSIS_GROUP].groups()  # type: ignore[union-attr]
        return sorted(name for name, _ in groups if not name.startswith("."))

    def group(self, path: str, create: bool = False) -> zarr.Group | None:
        """The group at ``path`` (``layout.analysis_path(name)``...), created when asked, else
        None when absent."""
        if create:
            self.require_writable(f"group {path!r}")
            if path.rpartition("/")[2].startswith(HIDDEN):  # a copy: who writes it
                return self.root.create_group(path, attributes={COPY_ATTR: copy_record()})
            return self.root.require_group(path)
        try:
            node = self.root[path]
        except KeyError:
            return None
        return node if isinstance(node, zarr.Group) else None

    @contextmanager
    def new_copy(self, path: str, replaces: str, staged: bool = True) -> Iterator[zarr.Group]:
        """The group of a new copy at ``path`` (a hidden sibling of ``replaces``), for the
        caller to fill; on a clean exit it replaces ``replaces`` (:meth:`replace_group`), on
        an error it is deleted.

        ``staged``: the copy is filled in memory and written in one concurrent batch on exit
        (its group with the writer's record first, its final attributes last), instead of a
        request per group and array check: an analysis saved to S3 took 555 requests (with
        False: arrays that Dask workers write must go to the store itself).
        """
        stage: MemoryStore | None = None
        first: Buffer | None = None
        target: zarr.Group | None
        if staged:
            self.require_writable(f"group {path!r}")
            self.root.require_group(path.rpartition("/")[0])
            stage = MemoryStore()
            target = zarr.open_group(stage, mode="w", zarr_format=3).create_group(
                path, attributes={COPY_ATTR: copy_record()})
            first = sync(stage.get(f"{path}/zarr.json", default_buffer_prototype()))
        else:
            target = self.group(path, create=True)
        assert target is not None  # created
        try:
            yield target
            if stage is not None:
                assert first is not None
                sync(_publish(stage, self.root.store_path.store, path, first))
            self.replace_group(path, replaces)
        except BaseException:
            self.delete(path)
            raise

    def delete(self, path: str) -> None:
        """Remove the group or array at ``path`` (nothing when absent); under ``analysis/``
        the pointer goes first, then the copy it pointed to."""
        self.require_writable(f"the deletion of {path!r}")
        pointers = pointer_store(self.root.store_path.store)
        if pointers is not None and path.startswith(ANALYSIS_GROUP + "/"):
            sync(pointers.delete_dir(path))
        elif path in self.root:
            del self.root[path]
        else:
            return
        if not path.rpartition("/")[2].startswith("."):
            self.consolidate_metadata()

    def replace_group(self, new_path: str, path: str) -> None:
        """Make the group written at ``new_path`` (a sibling under ``analysis/``) the group at
        ``path`` by switching its pointer, then delete the old copy: never a mix of the two."""
        self.require_writable(f"group {path!r}")
        parent, _, leaf = new_path.rpartition("/")
        pointers = pointer_store(self.root.store_path.store)
        if (pointers is None or parent != path.rpartition("/")[0]
                or not path.startswith(ANALYSIS_GROUP + "/")):
            raise StoreError(f"Cannot replace {path!r} by {new_path!r}: a replacement is written "
                             f"as a sibling of the group it replaces, under {ANALYSIS_GROUP}/.")
        sync(pointers.switch(path, leaf))
        self.remove_leftovers_beside(path)
        self.consolidate_metadata()

    def remove_leftovers_beside(self, path: str) -> None:
        """Remove the copies killed saves left beside ``path`` (under ``analysis/``) whose
        writer is gone; a failure is logged, never raised (the save it follows is done)."""
        pointers = pointer_store(self.root.store_path.store)
        if pointers is None or self.read_only:
            return
        try:
            sync(collect(raw_store(pointers), sync(pointers.resolve(path.rpartition("/")[0]))))
        except Exception as exc:  # noqa: BLE001 - the save is done; the rest can wait
            log.warning("Copies left by killed saves beside %r were not removed (%s: %s); "
                        "store.clean() removes them.", path, type(exc).__name__, exc)

    def clean(self, older_than: float = LEFTOVER_AGE_S, dry_run: bool = False) -> list[str]:
        """Remove the copies left by killed saves that no pointer leads to and whose writer is
        gone; returns their paths.

        Parameters
        ----------
        older_than : float
            Seconds after which a copy's writer on another host is taken to be gone.
        dry_run : bool
            List them, remove nothing.
        """
        if not dry_run:
            self.require_writable("the removal of copies left by killed saves")
        inner = raw_store(self.root.store_path.store)
        return list(sync(collect(inner, None, older_than, dry_run)))


async def _publish(stage: MemoryStore, store: Store, path: str, first: Buffer,
                   concurrency: int = 32) -> None:
    """Copy the objects under ``path`` from ``stage`` into ``store``: the group's document
    ``first`` (naming the copy's writer) first, the rest concurrently, the group's final
    document last; the first error cancels the rest and is raised."""
    proto = default_buffer_prototype()
    root = f"{path}/zarr.json"
    final = await stage.get(root, proto)
    assert final is not None
    keys = [k async for k in stage.list_prefix(path + "/") if k != root]
    # A new copy holds no pointer: its keys are written where its path leads, unwrapped
    # (following the pointers for each key would read the copy's groups once per key).
    pointers = pointer_store(store)
    phys = path if pointers is None else await pointers.resolve(path)
    guard, raw = unwrap(store, "set_below"), raw_store(store)  # the guard, if any

    async def write(key: str, buf: Buffer) -> None:
        where = phys + key[len(path):]
        if guard is None:
            await raw.set(where, buf)
        else:  # a refusal or a lost connection named as the guard names it
            await guard.set_below(raw, where, buf, key)

    await write(root, first)
    limit = asyncio.Semaphore(concurrency)

    async def put(key: str) -> None:
        async with limit:
            buf = await stage.get(key, proto)
            assert buf is not None
            await write(key, buf)

    tasks = [asyncio.ensure_future(put(key)) for key in keys]
    if tasks:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
    await write(root, final)
