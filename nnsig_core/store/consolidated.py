"""Consolidated metadata: every node's metadata in the root's ``zarr.json``, for xarray
(``docs/design.md``, "Format versions"); nnsig itself never reads it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from nnsig_core.store.pointers import raw_store

log = logging.getLogger("nnsig")

_META = "zarr.json"


async def _nodes(store: Store) -> dict[str, dict[str, Any]]:
    """Path -> metadata document of every node below the root, one level at a time."""
    proto = default_buffer_prototype()
    found: dict[str, dict[str, Any]] = {}

    async def read(path: str) -> tuple[str, dict[str, Any] | None]:
        buf = await store.get(f"{path}/{_META}", proto)
        if buf is None:
            return path, None
        try:
            return path, dict(json.loads(buf.to_bytes()))
        except ValueError:
            log.warning("Consolidated metadata: %s/%s is not valid JSON; left out.", path, _META)
            return path, None

    level = [""]
    while level:
        names = await asyncio.gather(*(_children(store, p) for p in level))
        paths = [f"{p}/{n}" if p else n for p, ns in zip(level, names, strict=True) for n in ns]
        docs = await asyncio.gather(*(read(p) for p in paths))
        level = []
        for path, doc in docs:
            if doc is None or doc.get("zarr_format") != 3:
                continue
            found[path] = doc
            if doc.get("node_type") == "group":
                level.append(path)
    return found


async def _children(store: Store, path: str) -> list[str]:
    prefix = f"{path}/" if path else ""
    return sorted(k.rstrip("/") for k in [k async for k in store.list_dir(prefix)]
                  if k.rstrip("/") != _META and not k.startswith("."))


async def _consolidate(group: zarr.Group, attributes: dict[str, Any] | None) -> None:
    from zarr.core.group import AsyncGroup, ConsolidatedMetadata, GroupMetadata
    from zarr.core.metadata import ArrayV3Metadata

    root = await AsyncGroup.open(group.store_path, zarr_format=3, use_consolidated=False)
    members: dict[str, Any] = {}
    for path, doc in (await _nodes(raw_store(group.store_path.store))).items():
        doc = {k: v for k, v in doc.items() if k != "consolidated_metadata"}
        try:
            if doc.get("node_type") == "group":
                members[path] = GroupMetadata.from_dict(
                    {**doc, "consolidated_metadata": {"kind": "inline", "metadata": {},
                                                      "must_understand": False}})
            else:
                members[path] = ArrayV3Metadata.from_dict(doc)
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("Consolidated metadata: %s left out (%s).", path, exc)
    ConsolidatedMetadata._flat_to_nested(members)
    changes: dict[str, Any] = {"consolidated_metadata": ConsolidatedMetadata(metadata=members)}
    if attributes is not None:
        changes["attributes"] = attributes
    metadata = dataclasses.replace(root.metadata, **changes)
    await dataclasses.replace(root, metadata=metadata)._save_metadata()


def consolidate(group: zarr.Group, attributes: dict[str, Any] | None = None) -> None:
    """Write the metadata of every node under the root ``group`` (opened through nnsig's guard
    and pointers) into the root's ``zarr.json``, in one write; ``attributes``, when given,
    replace the root's own in the same document (a migration switches the format version so).
    """
    sync(_consolidate(group, attributes))
