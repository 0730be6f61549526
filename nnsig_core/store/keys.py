"""Operations on a zarr store's keys (and, for a local store, its files) that zarr lacks.

Listing which chunks of an array exist, moving a group into place whole, and
fsyncing a split's metadata, for a local directory or any other store.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from nnsig_core._util import fsync_dir


def local_root(store: Any) -> Path | None:
    """The directory of a local store (looking through wrapper stores), else None."""
    while not isinstance(store, LocalStore) and hasattr(store, "_store"):
        store = store._store
    return Path(str(store.root)) if isinstance(store, LocalStore) else None


def chunk_indices(store: Any, array: str) -> set[int]:
    """Indices along the first axis of the chunks of ``array`` (its path) present in ``store``:
    one listing, no chunk read."""
    prefix = f"{array}/c/"

    async def listed() -> set[int]:
        found = set()
        async for key in store.list_prefix(prefix):
            head = key[len(prefix):].split("/", 1)[0]
            if head.isdigit():
                found.add(int(head))
        return found

    return sync(listed())


def move_group(store: Any, new_path: str, path: str) -> None:
    """Move the group at ``new_path`` to ``path``, replacing what was there.

    On a local store the old group is renamed aside (under a unique name) and
    the new one renamed into place, each an atomic directory rename, so
    ``path`` always holds a whole group. Other stores copy the new group's
    keys, its own metadata last, then delete the copy's source.
    """
    root = local_root(store)
    if root is not None:
        parent, _, leaf = path.rpartition("/")
        old = root / parent / f".replaced-{leaf}-{uuid.uuid4().hex[:8]}"
        if (root / path).exists():
            os.replace(root / path, old)
        os.replace(root / new_path, root / path)
        shutil.rmtree(old, ignore_errors=True)
        return

    async def move() -> None:
        prefix = f"{new_path}/"
        keys = [k async for k in store.list_prefix(prefix)]
        keys.sort(key=lambda k: k == f"{prefix}zarr.json")  # the group's metadata last
        await store.delete_dir(path)
        for k in keys:
            buf = await store.get(k, prototype=default_buffer_prototype())
            if buf is not None:
                await store.set(f"{path}/{k[len(prefix):]}", buf)
        await store.delete_dir(new_path)

    sync(move())


def sync_metadata(root: Path, group: str) -> None:
    """fsync the metadata files of ``group`` and of its arrays, and their directories."""
    base = root / group
    for meta in [base / "zarr.json", *base.glob("*/zarr.json")]:
        with open(meta, "rb") as f:
            os.fsync(f.fileno())
    for directory in [root, base, *(p for p in base.iterdir() if p.is_dir())]:
        fsync_dir(directory)
