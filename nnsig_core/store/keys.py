"""What zarr lacks: listing which chunks of an array exist, and fsyncing a split's metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zarr.core.sync import sync
from zarr.storage import LocalStore

from nnsig_core._util import fsync_dir
from nnsig_core.store.format import COORDINATE_ARRAYS


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


def sync_metadata(root: Path, group: str) -> None:
    """fsync the metadata files of ``group`` and of its arrays, the chunk of its coordinate
    arrays (written with the metadata), and their directories."""
    base = root / group
    coordinates = [f for key in COORDINATE_ARRAYS for f in (base / key / "c").rglob("*")
                   if f.is_file()]
    for meta in [*coordinates, root / "zarr.json", base / "zarr.json", *base.glob("*/zarr.json")]:
        with open(meta, "rb") as f:
            os.fsync(f.fileno())
    for directory in [root, base, *(p for p in base.iterdir() if p.is_dir()),
                      *(base / key / "c" for key in COORDINATE_ARRAYS if (base / key / "c").is_dir())]:
        fsync_dir(directory)
