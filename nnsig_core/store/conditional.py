"""Conditional writes of small documents on object stores: create-only and compare-and-swap
(S3's ``If-None-Match``/``If-Match``; elsewhere :class:`Unconditional`, the best they allow)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from nnsig_core.store.errors import StoreError, unreachable
from nnsig_core.store.pointers import raw_store


class Unconditional:
    """Create-only and replace through zarr's store API (not atomic where the store is not)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def read(self, key: str) -> tuple[bytes, str] | None:
        """``(data, version)`` of ``key``, or None when absent."""
        buf = sync(self.store.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else (buf.to_bytes(), buf.to_bytes().hex())

    def create(self, key: str, data: bytes) -> str | None:
        """Write ``key`` if absent: its version, or None when it existed."""
        buf = default_buffer_prototype().buffer.from_bytes(data)
        sync(self.store.set_if_not_exists(key, buf))
        got = self.read(key)
        return got[1] if got is not None and got[0] == data else None

    def replace(self, key: str, data: bytes, version: str | None) -> str | None:
        """Write ``key`` if its version is still ``version`` (None: whatever it is): the new
        version, or None when another writer changed it."""
        if version is not None:
            got = self.read(key)
            if got is None or got[1] != version:
                return None
        sync(self.store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
        return data.hex()

    def delete(self, key: str) -> None:
        sync(self.store.delete(key))


class S3Conditional(Unconditional):
    """S3's conditional ``PUT`` (``If-None-Match``, ``If-Match``) through s3fs's ``call_s3``."""

    def __init__(self, store: Any, fs: Any, root: str) -> None:
        super().__init__(store)
        options = dict(getattr(fs, "storage_options", {}) or {})
        options.pop("asynchronous", None)
        options.pop("loop", None)
        self.fs = type(fs)(**options, asynchronous=False, skip_instance_cache=True)
        self.root = root.rstrip("/")

    @contextmanager
    def _answering(self, what: str, key: str) -> Iterator[None]:
        """A store that does not answer is a :class:`StoreError` saying so, and the fix."""
        try:
            yield
        except Exception as exc:
            lost = unreachable(f"s3://{self.root}", exc, f"{what} s3://{self.root}/{key}")
            if lost is None:
                raise
            raise lost from exc

    def read(self, key: str) -> tuple[bytes, str] | None:
        path = f"{self.root}/{key}"
        with self._answering("read", key):
            for _ in range(5):  # the data and the ETag of one version
                try:
                    before = self.fs.info(path, refresh=True)["ETag"]
                    data = self.fs.cat_file(path)
                    after = self.fs.info(path, refresh=True)["ETag"]
                except FileNotFoundError:
                    return None
                if before == after:
                    return data, str(after)
        return None

    def _put(self, key: str, data: bytes, **condition: str) -> str | None:
        bucket, path, _ = self.fs.split_path(f"{self.root}/{key}")
        with self._answering("write", key):
            try:
                out = self.fs.call_s3("put_object", Bucket=bucket, Key=path, Body=data,
                                      **condition)
            except FileExistsError:
                return None
            except PermissionError as exc:
                raise StoreError(f"The store s3://{self.root} refused to write "
                                 f"s3://{self.root}/{key} ({exc}): these credentials may not write "
                                 "there. Use credentials that can write to it (s3:PutObject and "
                                 "s3:DeleteObject on its keys), or another store.") from exc
            except OSError as exc:  # 412 Precondition Failed (If-Match), 409 conflict
                if "precondition" in str(exc).lower() or "conflict" in str(exc).lower() or \
                        getattr(exc, "errno", None) == 22:
                    return None
                raise
            finally:
                self.fs.invalidate_cache()
        return str(out.get("ETag"))

    def create(self, key: str, data: bytes) -> str | None:
        return self._put(key, data, IfNoneMatch="*")

    def replace(self, key: str, data: bytes, version: str | None) -> str | None:
        return self._put(key, data, **({} if version is None else {"IfMatch": version}))

    def delete(self, key: str) -> None:
        with self._answering("delete", key):
            self.fs.rm_file(f"{self.root}/{key}")


def conditional_writes(store: Any) -> Unconditional:
    """The conditional writes ``store`` (a zarr store, wrapped or not) allows."""
    inner = raw_store(store)
    fs = getattr(inner, "fs", None)
    protocols = getattr(fs, "protocol", ())
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols or ())
    if fs is not None and "s3" in protocols and callable(getattr(fs, "call_s3", None)):
        return S3Conditional(inner, fs, str(getattr(inner, "path", "")))
    return Unconditional(store)
