"""Opening (or creating) an nnsig store: a local directory or ``file://`` URL (zarr's
``LocalStore``), any other fsspec URL (``FsspecStore``) or a zarr Store, always read and
written through the guard of :mod:`~nnsig_core.store.guard`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr
import zarr.errors
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from nnsig_core.store.errors import REMOTE_PACKAGES, StoreError
from nnsig_core.store.format import FORMAT_VERSION, ROOT_ATTR
from nnsig_core.store.guard import DamagedMetadataError, GuardedStore
from nnsig_core.store.pointers import PointerStore

log = logging.getLogger("nnsig")

#: The modes of :meth:`ActivationStore.open <nnsig_core.store.ActivationStore.open>`.
MODES = ("r", "r+", "a", "w")

StoreLike = str | os.PathLike[str] | Store


def split_location(where: StoreLike) -> tuple[Path | None, str | None]:
    """``(local directory, None)`` for a path or ``file://`` URL, ``(None, url)`` for any other
    URL, ``(None, None)`` for a Store object."""
    if isinstance(where, Store):
        return None, None
    text = os.fspath(where)
    if "://" not in text:
        return Path(text), None
    if text.startswith("file://"):
        return Path(text[len("file://"):]), None
    return None, text


@dataclass
class OpenedRoot:
    """The root group of an opened store, with where it lives."""

    group: zarr.Group
    path: Path | None
    location: str


def open_root(where: StoreLike, mode: str, storage_options: dict[str, Any] | None = None,
              *, any_version: bool = False) -> OpenedRoot:
    """The root group of the nnsig store at ``where``, opened with ``mode`` (see
    :meth:`ActivationStore.open <nnsig_core.store.ActivationStore.open>`); a store of
    another format version is refused unless ``any_version`` (what ``nnsig migrate``
    opens)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))} ('r' read-only, 'r+' "
                         "read-write, 'a' read-write and created if missing, 'w' created afresh); "
                         f"got {mode!r}.")
    path, url = split_location(where)
    if path is not None:
        if storage_options:
            raise ValueError(f"storage_options apply to URLs, not to the local path {str(path)!r}.")
        inner: Store = _local(path, mode)
        location = str(path)
    elif url is not None:
        from zarr.storage import FsspecStore

        if url.split("://", 1)[0] in ("s3", "s3a") and "max_concurrency" not in (
                storage_options or {}):
            # s3fs asks each object's size (a HEAD) before reading it whole, to split reads
            # over max_concurrency > 1 connections: a chunk's read took two requests.
            storage_options = {**(storage_options or {}), "max_concurrency": 1}
        try:
            inner = FsspecStore.from_url(url, storage_options=storage_options,
                                         read_only=mode == "r")
        except (ImportError, ValueError) as exc:
            raise StoreError(f"Cannot open {url!r}: {exc}. URLs need fsspec and the package of "
                             "their protocol (s3fs for s3://, gcsfs for gs://).") from exc
        location = url
        _check_remote(inner, location, mode)
    else:
        assert isinstance(where, Store)
        inner = where if where.read_only == (mode == "r") else where.with_read_only(mode == "r")
        location = f"{type(where).__name__}({where})"
        _check_remote(inner, location, mode)
    group = _root_group(GuardedStore(PointerStore(inner), location=location),
                        create=mode in ("a", "w"), location=location)
    _check_root(group, location, mode, any_version)
    return OpenedRoot(group, path, location)


def _local(p: Path, mode: str) -> LocalStore:
    if p.exists() and not p.is_dir():
        raise StoreError(f"{str(p)!r} is a file, not a store (a store is a directory); "
                         "choose a new path for the store.")
    if mode in ("r", "r+"):
        if not p.exists():
            raise StoreError(f"No store at {str(p)!r}: the path does not exist. "
                             "Create one with nnsig_core.capture(...).")
        if not (p / "zarr.json").is_file():
            raise StoreError(f"{str(p)!r} is not a Zarr v3 store (no zarr.json); "
                             "give the directory that capture() wrote.")
    if mode != "r" and p.is_dir() and not os.access(p, os.W_OK):
        # Up front: a read-only disk or a directory of another user failed only at the first
        # write, after a fit or a scoring had run, with the file system's error.
        raise StoreError(f"The store {str(p)!r} cannot be written here (a read-only file "
                         "system, or no write permission): copy it where you can write, or "
                         "only read it (open_store(path) or mode='r'; nnsig info, report, "
                         "export and verify only read).")
    if mode == "w" and p.exists():
        shutil.rmtree(p)
    # Another process creating the same store may be writing its zarr.json (a ``.partial``
    # file until it is moved into place): that directory is not someone else's data. The
    # entries are listed before zarr.json is looked for: a store's zarr.json is written
    # before anything else, so entries seen first mean it is there when looked for after.
    if p.is_dir() and any(not e.name.endswith(".partial") for e in list(p.iterdir())) \
            and not (p / "zarr.json").exists():
        raise StoreError(f"{str(p)!r} is a directory that is not empty and holds no Zarr store; "
                         "choose a new path for the store.")
    return LocalStore(p, read_only=mode == "r")


def _check_remote(store: Store, location: str, mode: str) -> None:
    """The checks :func:`_local` makes, through the store's API."""
    try:
        # Emptiness before the root, as in _local: another process may be creating the store.
        empty = mode == "a" and sync(store.is_empty(""))
        has_root = sync(store.exists("zarr.json"))
        if mode in ("r", "r+") and not has_root:
            bucket = _missing_bucket(store)
            if bucket is not None:  # capture() could not create a store there either
                raise StoreError(f"No store at {location!r}: the bucket {bucket!r} does not "
                                 "exist. Create it, or check the URL's bucket name.")
            raise StoreError(f"No store at {location!r} (no zarr.json there). "
                             "Create one with nnsig_core.capture(...).")
        if mode == "w":
            sync(store.delete_dir(""))
        elif not has_root and not empty:
            raise StoreError(f"{location!r} is not empty and holds no Zarr store; choose a new "
                             "location for the store.")
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - the network's and the SDK's errors, whatever they are
        if isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc):
            raise StoreError(
                f"Cannot open the store {location!r}: a storage option is not one its "
                f"filesystem takes ({exc}). The endpoint's option is endpoint_url; the "
                "others are the filesystem's own (for s3://, s3fs.S3FileSystem's)."
            ) from exc
        if not isinstance(exc, OSError) and not type(exc).__module__.startswith(REMOTE_PACKAGES):
            raise
        bucket = _missing_bucket(store) if isinstance(exc, FileNotFoundError) else None
        if bucket is not None:  # a capture's first write: the cause first, as when reading
            raise StoreError(f"Cannot create a store at {location!r}: the bucket {bucket!r} "
                             "does not exist. Create it, or check the URL's bucket name."
                             ) from exc
        raise StoreError(
            f"Cannot reach the store {location!r} ({type(exc).__name__}: {exc}). Check its "
            "URL, the endpoint (open_store(url, storage_options={'endpoint_url': ...}), then "
            "pass the opened store; on the command line --storage-option endpoint_url=... "
            "before the command), the credentials and the network."
        ) from exc


def _missing_bucket(store: Store) -> str | None:
    """The bucket of an object store URL when it does not exist (None: it does, or this is
    not a bucket store)."""
    fs: Any = getattr(store, "fs", None)
    path = str(getattr(store, "path", ""))
    protocols = getattr(fs, "protocol", ())
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols or ())
    if not {"s3", "s3a", "gs", "gcs"} & set(protocols) or not path:
        return None
    bucket = path.split("/", 1)[0]
    try:
        exists = sync(fs._exists(bucket)) if getattr(fs, "async_impl", False) \
            else fs.exists(bucket)
    except Exception:  # noqa: BLE001 - no answer: the generic message stands
        return None
    return None if exists else bucket


def _root_group(store: GuardedStore, create: bool, location: str) -> zarr.Group:
    """The root group, created with the nnsig attribute in one write when asked and absent."""
    try:
        if create:
            _rewrite_damaged_root(store, location)
            try:
                return zarr.create_group(
                    store, zarr_format=3,
                    attributes={ROOT_ATTR: {"format_version": FORMAT_VERSION}})
            except zarr.errors.ContainsGroupError:
                pass  # created meanwhile (by us before, or by another process)
        # nnsig reads the nodes' own documents, never the consolidated copy (written for
        # xarray), which a capture in progress outdates.
        return zarr.open_group(store, mode="r" if store.read_only else "r+", zarr_format=3,
                               use_consolidated=False)
    except (zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError,
            FileNotFoundError) as exc:
        raise StoreError(f"Cannot open {location!r} as a Zarr v3 group: {exc}") from exc


def _rewrite_damaged_root(store: GuardedStore, location: str) -> None:
    """Write the root's metadata again when it is damaged (it holds only the format version)."""
    try:
        sync(store.get("zarr.json", default_buffer_prototype()))
    except DamagedMetadataError:
        log.warning("The root metadata of %s was damaged; writing it again.", location)
        doc = {"zarr_format": 3, "node_type": "group",
               "attributes": {ROOT_ATTR: {"format_version": FORMAT_VERSION}}}
        sync(store.set("zarr.json", default_buffer_prototype().buffer.from_bytes(
            json.dumps(doc).encode())))


def _check_root(group: zarr.Group, location: str, mode: str, any_version: bool) -> None:
    attrs = dict(group.attrs)
    if ROOT_ATTR not in attrs:
        if mode in ("r", "r+"):
            raise StoreError(f"{location!r} is a Zarr group but not an nnsig store "
                             f"(no {ROOT_ATTR!r} attribute).")
        if len(list(group.keys())) > 0:
            raise StoreError(f"{location!r} is a non-empty Zarr group that nnsig did not write; "
                             "choose another path.")
        group.attrs[ROOT_ATTR] = {"format_version": FORMAT_VERSION}
    root: Any = dict(group.attrs)[ROOT_ATTR]
    version = root.get("format_version")
    if version == FORMAT_VERSION or any_version:
        return
    if isinstance(version, int) and version < FORMAT_VERSION:
        raise StoreError(f"{location!r} has nnsig store format {version} (written by an older "
                         f"nnsig); this nnsig reads format {FORMAT_VERSION}. Upgrade it in place "
                         f"with `nnsig migrate {location}` (or nnsig_core.migrate_store(...)); "
                         "`nnsig migrate --dry-run` says what it would change.")
    raise StoreError(f"{location!r} has nnsig store format {version}; this nnsig reads format "
                     f"{FORMAT_VERSION} (and upgrades older ones with `nnsig migrate`). Use the "
                     "nnsig version that wrote it (a newer one), or re-capture with this version.")
