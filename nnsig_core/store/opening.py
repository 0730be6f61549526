"""Opening (or creating) the root group of a local store, behind the guard of :mod:`.guard`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import zarr
import zarr.errors
from zarr.storage import LocalStore

from nnsig_core.store.errors import StoreError
from nnsig_core.store.guard import GuardedStore
from nnsig_core.store.layout import FORMAT_VERSION, ROOT_ATTR

__all__ = ["MODES", "open_root"]

#: The modes of :meth:`ActivationStore.open <nnsig_core.store.ActivationStore.open>`.
MODES = ("r", "r+", "a", "w")


def open_root(path: str | os.PathLike[str], mode: str) -> zarr.Group:
    """The root group of the nnsig store at ``path``, opened with ``mode`` (see
    :meth:`ActivationStore.open <nnsig_core.store.ActivationStore.open>`)."""
    if mode not in MODES:
        raise ValueError(
            f"mode must be one of {', '.join(map(repr, MODES))} ('r' read-only, 'r+' "
            "read-write, 'a' read-write and created if missing, 'w' created afresh); "
            f"got {mode!r}."
        )
    p = Path(path)
    if mode in ("r", "r+"):
        if not p.exists():
            raise StoreError(
                f"No store at {str(p)!r}: the path does not exist. "
                "Create one with nnsig_core.capture(...)."
            )
        if not (p / "zarr.json").is_file():
            raise StoreError(
                f"{str(p)!r} is not a Zarr v3 store (no zarr.json); "
                "give the directory that capture() wrote."
            )
    if mode == "w" and p.exists():
        shutil.rmtree(p)
    if p.is_dir() and not (p / "zarr.json").exists() and any(p.iterdir()):
        raise StoreError(
            f"{str(p)!r} is a directory that is not empty and holds no Zarr store; "
            "choose a new path for the store."
        )
    store = GuardedStore(LocalStore(p, read_only=mode == "r"), location=str(p))
    group = _root_group(store, create=mode in ("a", "w"), location=str(p))
    attrs = dict(group.attrs)
    if ROOT_ATTR not in attrs:
        if mode in ("r", "r+"):
            raise StoreError(
                f"{str(p)!r} is a Zarr group but not an nnsig store "
                f"(no {ROOT_ATTR!r} attribute)."
            )
        if len(list(group.keys())) > 0:
            raise StoreError(
                f"{str(p)!r} is a non-empty Zarr group that nnsig did not write; "
                "choose another path."
            )
        group.attrs[ROOT_ATTR] = {"format_version": FORMAT_VERSION}
    version = dict(group.attrs)[ROOT_ATTR].get("format_version")
    if version != FORMAT_VERSION:
        raise StoreError(
            f"{str(p)!r} has nnsig store format {version}; this nnsig reads "
            f"format {FORMAT_VERSION}. Re-capture with this version."
        )
    return group


def _root_group(store: GuardedStore, create: bool, location: str) -> zarr.Group:
    """The root group; created with the nnsig attribute in one metadata write when asked and
    absent. Two processes creating the same new store both succeed."""
    try:
        if create:
            try:
                return zarr.create_group(
                    store, zarr_format=3,
                    attributes={ROOT_ATTR: {"format_version": FORMAT_VERSION}})
            except zarr.errors.ContainsGroupError:
                pass  # created meanwhile (by us before, or by another process)
        return zarr.open_group(store, mode="r" if store.read_only else "r+", zarr_format=3)
    except (zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError,
            FileNotFoundError) as exc:
        raise StoreError(f"Cannot open {location!r} as a Zarr v3 group: {exc}") from exc
