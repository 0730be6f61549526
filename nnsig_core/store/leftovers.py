"""Copies left by killed saves, found and removed: never one a pointer leads to, nor one a
live writer holds (each records its writer, :data:`COPY_ATTR`; ``docs/design.md``,
"Leftovers are collected")."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from nnsig_core._util import now_iso
from nnsig_core.store.format import ANALYSIS_GROUP, POINTER_ATTR
from nnsig_core.store.pointers import HIDDEN, read_json

log = logging.getLogger("nnsig")

#: The attribute of a copy's group naming its writer.
COPY_ATTR = "nnsig_copy"
#: Seconds after which a copy no pointer leads to is garbage whoever wrote it.
LEFTOVER_AGE_S = 24 * 3600.0


def copy_record() -> dict[str, Any]:
    """The writer of a copy being created: this host and process, now."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": now_iso(),
            "started_s": round(time.time(), 3)}


def writer_gone(record: Any, older_than: float) -> bool:
    """Whether no live writer may hold a copy whose :data:`COPY_ATTR` is ``record``."""
    if not isinstance(record, dict):
        return older_than <= 0
    if time.time() - float(record.get("started_s", 0.0)) >= older_than:
        return True
    pid = int(record.get("pid", -1))
    if record.get("host") != socket.gethostname() or pid == os.getpid() or os.name != "posix":
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


async def unreferenced(raw: Any, parent: str | None = None) -> list[str]:
    """The copies (paths) under ``analysis/`` no pointer leads to, outermost only: among the
    children of ``parent``, or anywhere in the store."""
    children: dict[str, set[str]] = {}
    if parent is not None:
        children[parent] = {c.rstrip("/") async for c in raw.list_dir(parent.rstrip("/") + "/")}
    else:
        async for key in raw.list_prefix(ANALYSIS_GROUP + "/"):
            parts = key.split("/")[:-1]  # the groups holding the key
            for i in range(1, len(parts)):
                children.setdefault("/".join(parts[:i]), set()).add(parts[i])
    live = set()
    for p, names in children.items():
        if not any(n.startswith(HIDDEN) for n in names):
            continue
        for name in names - {n for n in names if n.startswith(HIDDEN)}:
            doc = await read_json(raw, f"{p}/{name}/zarr.json") or {}
            target = ((doc.get("attributes") or {}).get(POINTER_ATTR) or {}).get("target")
            if target:
                live.add(f"{p}/{target}")
    found = {f"{p}/{n}" for p, names in children.items() for n in names
             if n.startswith(HIDDEN) and f"{p}/{n}" not in live}
    return sorted(c for c in found if not any(c.startswith(o + "/") for o in found))


async def collect(raw: Any, parent: str | None = None, older_than: float = LEFTOVER_AGE_S,
                  dry_run: bool = False) -> list[str]:
    """Remove the copies :func:`unreferenced` finds whose writer is gone (see the module doc);
    returns their paths (with ``dry_run``, removes nothing)."""
    gone = []
    for path in await unreferenced(raw, parent):
        doc = await read_json(raw, f"{path}/zarr.json")
        if doc is None or writer_gone((doc.get("attributes") or {}).get(COPY_ATTR), older_than):
            gone.append(path)
            if not dry_run:
                await raw.delete_dir(path)
    if gone and not dry_run:
        log.info("Removed %d copies left by killed saves: %s", len(gone), ", ".join(gone))
    return gone
