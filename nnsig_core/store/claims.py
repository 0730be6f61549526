"""One writer per split: an exclusive claim taken before a capture touches a split (a local
``flock``, or on object stores a marker refreshed by compare-and-swap; ``docs/design.md``,
"One writer per split"). The loser gets a :class:`ClaimError` naming the other writer."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zarr
import zarr.errors

from nnsig_core._util import now_iso
from nnsig_core.store.conditional import conditional_writes
from nnsig_core.store.errors import StoreError

log = logging.getLogger("nnsig")

CLAIMS_GROUP = ".nnsig-claims"
#: Seconds without a heartbeat after which an object-store claim is stale.
STALE_AFTER_S = 120.0


class ClaimError(StoreError):
    """Another writer holds the split (the message names it)."""


@dataclass
class WriterInfo:
    """Who holds a claim."""

    id: str
    pid: int
    host: str
    started: str
    heartbeat: float

    @classmethod
    def mine(cls) -> WriterInfo:
        return cls(uuid.uuid4().hex, os.getpid(), socket.gethostname(), now_iso(), time.time())

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host!r}, started {self.started}"


def _read_info(data: bytes | None) -> WriterInfo | None:
    if not data:
        return None
    try:
        d = json.loads(data)
        return WriterInfo(str(d["id"]), int(d["pid"]), str(d["host"]), str(d["started"]),
                          float(d.get("heartbeat", 0.0)))
    except (ValueError, KeyError, TypeError):
        return None


#: The claims this process released (or tried to: their marker may be left behind).
_RELEASED: set[str] = set()


def _alive(info: WriterInfo) -> bool:
    """Whether the writer's process runs (only known on this host; elsewhere assumed)."""
    if info.host != socket.gethostname():
        return True
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _seconds(s: float | None) -> str:
    return "?" if s is None else f"{max(0.0, s):.0f} s"


def _local_holder(info_path: Path, wait_s: float = 2.0) -> WriterInfo | None:
    """The live holder of a local lock (from its info file), or None after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = _read_info(info_path.read_bytes())
        except OSError:
            info = None
        if info is not None and _alive(info):
            return info
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


class SplitClaim:
    """An exclusive claim of this process on one split of a store (a context manager):
    ``flock`` in ``local_dir`` for a local store, else a marker; ``location`` names the store.
    """

    def __init__(self, root: zarr.Group, split: str, local_dir: Path | None,
                 location: str) -> None:
        self.root = root
        self.split = split
        self.local_dir = local_dir
        self.location = location
        self.me = WriterInfo.mine()
        self._fd: int | None = None
        self._held = False
        self._version: str | None = None  # of the marker this writer last wrote
        self._writes = conditional_writes(root.store_path.store)

    @property
    def _key(self) -> str:
        return f"{CLAIMS_GROUP}/{self.split}.json"

    def _busy(self, other: WriterInfo | None, stale: bool = False) -> ClaimError:
        who = other.describe() if other else "another process"
        age = None if other is None or self.local_dir is not None else \
            max(0.0, time.time() - other.heartbeat)
        if stale:
            return ClaimError(f"Split {self.split!r} of {self.location} is claimed by a writer "
                              f"({who}) that has given no sign of life for {_seconds(age)} (over "
                              f"{STALE_AFTER_S:.0f} s): it was probably killed. Pass resume=True "
                              "to break its claim and continue the capture, or overwrite=True to "
                              "start again. Nothing was changed.")
        when = "" if age is None else (
            f" Its last heartbeat was {_seconds(age)} ago; if it stays silent, resume=True "
            f"may break its claim in {_seconds(STALE_AFTER_S - age)} (after "
            f"{STALE_AFTER_S:.0f} s without one).")
        return ClaimError(f"Split {self.split!r} of {self.location} is being written by another "
                          f"capture ({who}). Wait for it to finish, or capture into another split "
                          f"or store.{when} Nothing was changed.")

    def acquire(self, break_stale: bool = False) -> SplitClaim:
        """Take the claim, or raise :class:`ClaimError` naming the holder."""
        try:
            self.root.require_group(CLAIMS_GROUP)
        except zarr.errors.ContainsGroupError:
            pass  # created meanwhile by another writer
        if self.local_dir is not None:
            self._acquire_local()
        else:
            self._acquire_marker(break_stale)
        self._held = True
        return self

    def _acquire_local(self) -> None:
        import fcntl

        assert self.local_dir is not None  # called for local stores only
        directory = self.local_dir / CLAIMS_GROUP
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / f"{self.split}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy(_local_holder(directory / f"{self.split}.json")) from None
        self._fd = fd
        info_path = directory / f"{self.split}.json"
        if info_path.exists():
            old = _read_info(info_path.read_bytes())
            if old is not None:
                log.warning("Split %r had a claim left by a writer that ended without "
                            "releasing it (%s); taking it over.", self.split, old.describe())
        tmp = directory / f".{self.split}.json.{self.me.id}"
        tmp.write_text(json.dumps(asdict(self.me)), encoding="utf-8")
        os.replace(tmp, info_path)

    def _get_marker(self) -> WriterInfo | None:
        got = self._writes.read(self._key)
        return None if got is None else _read_info(got[0])

    def _acquire_marker(self, break_stale: bool) -> None:
        data = json.dumps(asdict(self.me)).encode()
        self._version = self._writes.create(self._key, data)
        if self._version is not None:
            return
        got = self._writes.read(self._key)
        holder = None if got is None else _read_info(got[0])
        if holder is not None and holder.id == self.me.id:
            self._version = got[1] if got else None
            return
        dead = holder is not None and (holder.id in _RELEASED or not _alive(holder))
        stale = holder is None or time.time() - holder.heartbeat > STALE_AFTER_S
        if not (dead or (stale and break_stale)):
            raise self._busy(holder, stale=stale)
        log.warning("Taking over the claim of split %r from %s (%s).", self.split,
                    holder.describe() if holder else "an unreadable marker",
                    "its process is dead" if dead else "silent for over "
                    f"{STALE_AFTER_S:.0f} s")
        # Compare-and-swap: of two writers breaking one claim, one wins.
        self._version = (self._writes.replace(self._key, data, got[1]) if got is not None
                         else self._writes.create(self._key, data))
        if self._version is None:
            raise self._busy(self._get_marker())

    def check(self) -> None:
        """Raise :class:`ClaimError` when the claim is no longer ours (object stores: another
        writer broke it); refresh the heartbeat otherwise, by a compare-and-swap on the
        version this writer last wrote. A no-op for local locks."""
        if self.local_dir is not None or not self._held:
            return
        self.me.heartbeat = time.time()
        version = self._writes.replace(self._key, json.dumps(asdict(self.me)).encode(),
                                       self._version)
        if version is None:
            holder = self._get_marker()
            raise ClaimError(f"The claim of this capture on split {self.split!r} of "
                             f"{self.location} was taken by another writer "
                             f"({holder.describe() if holder else 'unknown'}); stopping without "
                             "writing more.")
        self._version = version

    def release(self) -> None:
        """Give the claim up (the split may be written by others again)."""
        if not self._held:
            return
        self._held = False
        if self.local_dir is not None:
            info_path = self.local_dir / CLAIMS_GROUP / f"{self.split}.json"
            try:
                if (_read_info(info_path.read_bytes()) or self.me).id == self.me.id:
                    info_path.unlink()
            except OSError:
                pass
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor releases the flock
                self._fd = None
            return
        _RELEASED.add(self.me.id)
        try:
            holder = self._get_marker()
            if holder is not None and holder.id == self.me.id:
                self._writes.delete(self._key)
        except StoreError as exc:  # e.g. the store stopped answering: a resume takes it over
            log.warning("The claim of split %r of %s could not be released (%s); "
                        "capture(..., resume=True) takes it over.", self.split, self.location, exc)

    def __enter__(self) -> SplitClaim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
