"""Consolidated metadata: every node's metadata in the root's ``zarr.json`` (format 2).

xarray (``xr.open_zarr(path, group="train")``) and zarr's ``open_consolidated``
read the root's ``zarr.json`` once and find every group's and array's metadata
there: one read on an object store instead of one per array. nnsig writes it
again after every operation that changes the hierarchy (a split created,
completed or removed; an analysis, signatures or scores saved or deleted), so
it describes the store as of the last completed operation. nnsig itself never
reads it (the root is opened with ``use_consolidated=False``): the documents of
the nodes stay the truth, and a split being captured (whose arrays grow) is
read from them.

Hidden nodes (``.nnsig-claims``, the copies of saves, ``.``-names) are left out.
The root's own document is replaced in one write (one ``PUT``, or zarr's
atomic rename on a local disk), so a reader sees the old or the new one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import zarr
from zarr.core.sync import sync


async def _consolidate(group: zarr.Group, attributes: dict[str, Any] | None) -> None:
    from zarr.core.group import AsyncGroup, ConsolidatedMetadata, GroupMetadata

    root = await AsyncGroup.open(group.store_path, zarr_format=3, use_consolidated=False)
    members: dict[str, Any] = {}

    async def walk(node: AsyncGroup, prefix: str) -> None:
        # One level at a time, so hidden groups (claims, copies) are never listed.
        async for name, child in node.members(max_depth=0, use_consolidated_for_children=False):
            if name.startswith("."):
                continue
            meta = child.metadata
            if isinstance(meta, GroupMetadata):
                meta = dataclasses.replace(
                    meta, consolidated_metadata=ConsolidatedMetadata(metadata={}))
            members[prefix + name] = meta
            if isinstance(child, AsyncGroup):
                await walk(child, f"{prefix}{name}/")

    await walk(root, "")
    ConsolidatedMetadata._flat_to_nested(members)
    changes: dict[str, Any] = {"consolidated_metadata": ConsolidatedMetadata(metadata=members)}
    if attributes is not None:
        changes["attributes"] = attributes
    metadata = dataclasses.replace(root.metadata, **changes)
    await dataclasses.replace(root, metadata=metadata)._save_metadata()


def consolidate(group: zarr.Group, attributes: dict[str, Any] | None = None) -> None:
    """Write the metadata of every node under the root ``group`` into the root's ``zarr.json``
    (zarr's consolidated metadata), in one write.

    Parameters
    ----------
    group : zarr.Group
        The root group of the store (opened through nnsig's guard and pointers,
        so saved results are consolidated at their logical paths).
    attributes : dict, optional
        New attributes of the root, written in the same document (a migration
        switches the format version this way); the root's own by default.
    """
    sync(_consolidate(group, attributes))
