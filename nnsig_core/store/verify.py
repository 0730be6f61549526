"""``nnsig verify``: read every chunk of a store, check its checksum and that none is missing.

The report says what is damaged or missing and which rows of which split a re-capture
must redo (``docs/design.md``, "Integrity").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import TYPE_CHECKING, Any

from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from nnsig_core._progress import ProgressBar  # terminal bars only: no notebook widgets
from nnsig_core.store.format import POINTER_ATTR, SPLIT_ATTR, finish_advice
from nnsig_core.store.guard import crc32c_ok
from nnsig_core.store.leftovers import unreferenced
from nnsig_core.store.pointers import HIDDEN, raw_store

if TYPE_CHECKING:
    from nnsig_core.store.split_reading import SplitReading

@dataclass
class ChunkProblem:
    """A missing or damaged chunk (or metadata file)."""

    kind: str  # "missing", "damaged", "metadata"
    key: str  # the store key
    split: str | None = None
    name: str | None = None  # the layer's name or the array's key
    rows: tuple[int, int] | None = None  # first and last row of the chunk (split arrays)

    def describe(self) -> str:
        if self.kind == "metadata":
            return f"damaged metadata: {self.key} (not valid JSON)"
        if self.key.endswith("zarr.json"):
            return f"missing array: {self.name!r} of split {self.split!r} ({self.key})"
        where = f"{self.name!r} of split {self.split!r}" if self.split else repr(self.key)
        rows = f", rows {self.rows[0]}-{self.rows[1]}" if self.rows else ""
        return f"{self.kind} chunk: {where}{rows} ({self.key})"


@dataclass
class VerifyReport:
    """What :func:`verify_store` found. ``ok`` when nothing is missing or damaged."""

    location: str
    chunks_checked: int = 0
    unchecked: int = 0  # chunks without a checksum (stores written before nnsig 0.2)
    problems: list[ChunkProblem] = field(default_factory=list)
    incomplete: dict[str, str] = field(default_factory=dict)  # split -> state
    #: Copies of results no pointer leads to: left by killed saves, or being written.
    leftovers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows_to_recapture(self) -> dict[str, list[tuple[int, int]]]:
        """Per split, the merged row ranges (first, last) a re-capture must redo."""
        out: dict[str, list[tuple[int, int]]] = {}
        for p in self.problems:
            if p.split is not None and p.rows is not None:
                out.setdefault(p.split, []).append(p.rows)
        for split, ranges in out.items():
            merged: list[tuple[int, int]] = []
            for lo, hi in sorted(ranges):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
                else:
                    merged.append((lo, hi))
            out[split] = merged
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (``nnsig verify --json``)."""
        return {
            "location": self.location, "ok": self.ok, "chunks_checked": self.chunks_checked,
            "chunks_without_checksum": self.unchecked,
            "problems": [p.__dict__ for p in self.problems],
            "rows_to_recapture": {s: [list(r) for r in v]
                                  for s, v in self.rows_to_recapture().items()},
            "incomplete_splits": self.incomplete, "unreferenced_copies": self.leftovers,
        }

    def format(self) -> str:
        """The report as text."""
        lines = [f"store: {self.location}", f"chunks checked: {self.chunks_checked}"]
        if self.unchecked:
            lines.append(f"chunks without a checksum (written before nnsig 0.2): {self.unchecked}")
        for split, state in sorted(self.incomplete.items()):
            lines.append(f"split {split!r}: {state}")
        if self.leftovers:
            lines.append(f"copies no pointer leads to (left by killed saves, or saves running "
                         f"now; store.clean() removes those whose writer is gone): "
                         f"{', '.join(self.leftovers)}")
        if self.ok:
            lines.append("OK: no chunk is missing or damaged" + (
                f"; INCOMPLETE: {len(self.incomplete)} split(s) (above)." if self.incomplete
                else "."))
            return "\n".join(lines)
        lines.append(f"PROBLEMS: {len(self.problems)}")
        lines.extend("  " + p.describe() for p in self.problems)
        # A resume re-captures rows into the arrays there are; an array without its metadata
        # is captured again whole.
        whole = {p.split for p in self.problems if p.split and p.key.endswith("zarr.json")}
        for split, ranges in sorted(self.rows_to_recapture().items()):
            if split in whole:
                lines.append(f"split {split!r}: an array's metadata is missing or damaged, which "
                             "a resume cannot restore: capture the split again "
                             f"(capture(..., split={split!r}, overwrite=True))")
                continue
            spans = ", ".join(f"{lo}-{hi}" for lo, hi in ranges)
            lines.append(f"split {split!r}: rows {spans} must be captured again "
                         f"(capture(..., split={split!r}, resume=True) re-captures them)")
        if any(p.split is None and p.kind != "metadata" for p in self.problems):
            lines.append("damaged analyses or scores: save them again (overwrite=True)")
        return "\n".join(lines)


def _expected_chunks(meta: dict[str, Any], rows_written: int | None) -> Iterator[tuple[int, ...]]:
    shape = list(meta.get("shape") or [])
    chunks = list(((meta.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
                  or shape)
    grid = [math.ceil(s / c) if c else 0 for s, c in zip(shape, chunks, strict=True)]
    if rows_written is not None and grid:
        grid[0] = min(grid[0], math.ceil(rows_written / chunks[0]))
    return product(*(range(g) for g in grid))


def _live_copies(docs: dict[str, dict[str, Any]]) -> set[str]:
    """The paths of the copies pointers lead to (:mod:`~nnsig_core.store.pointers`)."""
    live = set()
    for path, doc in docs.items():
        target = ((doc.get("attributes") or {}).get(POINTER_ATTR) or {}).get("target")
        if target:
            parent = path.rpartition("/")[0]
            live.add(f"{parent}/{target}" if parent else str(target))
    return live


def _live(path: str, live: set[str]) -> bool:
    """Whether ``path`` is not inside a copy no pointer leads to (being written, or garbage)."""
    parts = path.split("/")
    return all(not seg.startswith(HIDDEN) or "/".join(parts[: i + 1]) in live
               for i, seg in enumerate(parts))


def verify_store(store: SplitReading, progress: bool = False,
                 split: str | None = None) -> VerifyReport:
    """Check every chunk and metadata document of ``store`` (see the module docstring), or
    only those of ``split`` (what a resumed capture repairs)."""
    inner = raw_store(store.root.store_path.store)  # the raw bytes, not through the guard
    proto = default_buffer_prototype()
    report = VerifyReport(store.location)

    async def keys() -> list[str]:
        if split is None:
            return [k async for k in inner.list()]
        return [k async for k in inner.list_prefix(f"{split}/")]

    def get(key: str) -> bytes | None:
        buf = sync(inner.get(key, prototype=proto))
        return None if buf is None else buf.to_bytes()

    existing = set(sync(keys()))
    if split is None:
        report.leftovers = sync(unreferenced(inner))
    docs: dict[str, dict[str, Any]] = {}
    for key in sorted(k for k in existing if k == "zarr.json" or k.endswith("/zarr.json")):
        try:
            docs[key[: -len("zarr.json")].rstrip("/")] = json.loads(get(key) or b"")
        except ValueError:
            report.problems.append(ChunkProblem("metadata", key))
    found = {path: (doc.get("attributes") or {}).get(SPLIT_ATTR) for path, doc in docs.items()
             if doc.get("node_type") == "group" and "/" not in path and path}
    splits: dict[str, dict[str, Any]] = {k: v for k, v in found.items() if isinstance(v, dict)}
    live = _live_copies(docs)
    arrays = {p: d for p, d in docs.items() if d.get("node_type") == "array" and _live(p, live)}
    for split, meta in sorted(splits.items()):
        if not meta.get("complete"):
            report.incomplete[split] = (
                f"incomplete ({meta.get('n_written', 0)} of {meta.get('n_expected') or '?'} "
                f"samples written): {finish_advice(split, meta)}")
        n_rows = int(meta.get("n_samples", 0) if meta.get("complete") else meta.get("n_written", 0))
        wanted = {d.get("key"): d.get("name") for d in meta.get("layers") or []}
        wanted.update({k: k for k in ("outputs", "labels", "predictions", "sample_index")})
        if (meta.get("capture") or {}).get("keep_inputs"):
            wanted["inputs"] = "inputs"
        for key, name in wanted.items():
            if f"{split}/{key}" not in arrays:
                doc_key, rows = f"{split}/{key}/zarr.json", (0, n_rows - 1) if n_rows else None
                damaged = next((p for p in report.problems if p.key == doc_key), None)
                if damaged is not None:  # one problem: its metadata, now with its split
                    damaged.split, damaged.name, damaged.rows = split, name, rows
                else:
                    report.problems.append(ChunkProblem("missing", doc_key, split, name, rows))
    todo = []
    for path, meta in sorted(arrays.items()):
        split, _, key = path.partition("/")
        info = splits.get(split) if key and "/" not in key else None
        written: int | None = None
        name = path
        if info is not None:
            written = int(info.get("n_samples", 0) if info.get("complete")
                          else info.get("n_written", 0))
            names = {d.get("key"): d.get("name") for d in info.get("layers") or []}
            name = names.get(key) or key
        codecs = meta.get("codecs") or []
        checksummed = bool(codecs) and (codecs[-1] or {}).get("name") == "crc32c"
        rows = ((meta.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
        for coords in _expected_chunks(meta, written):
            chunk_key = f"{path}/c/" + "/".join(map(str, coords)) if coords else f"{path}/c"
            span = None
            if info is not None and rows:
                lo = coords[0] * int(rows[0])
                span = (lo, min(lo + int(rows[0]), written or 0) - 1)
            todo.append((chunk_key, checksummed, split if info is not None else None, name, span))
    for chunk_key, checksummed, split, name, span in ProgressBar(
            todo, desc="verify", unit="chunk", progress=progress, leave=False):
        if chunk_key not in existing:
            report.problems.append(ChunkProblem("missing", chunk_key, split, name, span))
            continue
        report.chunks_checked += 1
        if not checksummed:
            report.unchecked += 1
            continue
        data = get(chunk_key)
        if data is None or not crc32c_ok(data):
            report.problems.append(ChunkProblem("damaged", chunk_key, split, name, span))
    return report
