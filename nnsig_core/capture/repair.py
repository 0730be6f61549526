"""Repairs: the rows of a split that ``nnsig verify`` finds missing or damaged, re-captured
whole chunks at a time (``docs/design.md``, "Repairs")."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from nnsig_core._util import now_iso
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.writer import ChunkWriter

log = logging.getLogger("nnsig")


class Repairs:
    """The row ranges ``[(first, last), ...]`` of ``session``'s split to capture again, fed
    the batches that hold them; ``rows`` and ``bytes`` count what is written."""

    def __init__(self, session: Any, ranges: list[tuple[int, int]]) -> None:
        self.session = session
        self.ranges = sorted((int(a), int(b)) for a, b in ranges)
        self.rows = 0
        self.bytes = 0
        self._writer: ChunkWriter | None = None
        self._current: tuple[int, int] | None = None
        self._done: set[tuple[int, int]] = set()

    def wants(self, lo: int, hi: int) -> bool:
        """Whether rows ``lo:hi`` hold any row to re-capture."""
        return any(a < hi and b >= lo for a, b in self.ranges)

    def feed(self, inputs: Any, labels: Any, index: np.ndarray, lo: int) -> None:
        """Run the batch of rows ``lo : lo + len(index)`` and write the rows it holds."""
        rows, _tokens = self.session.compute(inputs, labels, index)
        n = len(index)
        for a, b in self.ranges:
            s, e = max(a, lo), min(b + 1, lo + n)
            if s >= e:
                continue
            if self._current != (a, b):
                self._close()
                self._writer = ChunkWriter(arrays=self.session.writer.arrays,
                                           chunk_rows=self.session.writer.chunk_rows,
                                           start_row=a, on_written=lambda _n: None,
                                           durable=self.session.durable)
                self._current = (a, b)
            assert self._writer is not None
            self._writer.submit({k: v[s - lo : e - lo] for k, v in rows.items()})
            self.rows += e - s
            if e == b + 1:
                self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.bytes += self._writer.bytes_written
            assert self._current is not None
            self._done.add(self._current)
        self._writer, self._current = None, None

    def close(self, split: str) -> None:
        """Write what is buffered; raise when the data ended before a range's last row."""
        self._close()
        left = [r for r in self.ranges if r not in self._done]
        if left:
            raise CaptureError(
                f"Cannot repair split {split!r}: the data ended before rows "
                f"{', '.join(f'{a}-{b}' for a, b in left)}. Resume with the data of the "
                "first capture, or capture the split again with overwrite=True."
            )
        if self.ranges:
            log_repair(split, self.record())

    def record(self) -> dict[str, Any]:
        """What was re-captured, as recorded in the split's ``capture.repaired``."""
        return {"at": now_iso(), "ranges": [list(r) for r in self.ranges], "rows": self.rows,
                "bytes": self.bytes}

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


def log_repair(split: str, record: dict[str, Any]) -> None:
    """Log what a repair re-captured (:meth:`Repairs.record`)."""
    log.info("Repaired split %r: re-captured rows %s (%d rows, %d bytes of chunks).", split,
             ", ".join(f"{a}-{b}" for a, b in record["ranges"]), record["rows"], record["bytes"])
