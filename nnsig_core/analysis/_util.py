"""Small helpers shared by the analysis modules (byte sizes, sampling, batching)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np

__all__ = ["Reservoir", "format_bytes", "parse_bytes", "rebatch"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(value: int | float | str) -> int:
    """Parse a memory size: an int of bytes, or a string such as ``"2GiB"``, ``"500MB"``.

    Parameters
    ----------
    value : int, float or str
        Bytes, or a number followed by a unit (``B``, ``kB``, ``MB``, ``GB``,
        ``TB`` in powers of 1000, ``KiB``, ``MiB``, ``GiB``, ``TiB`` in powers
        of 1024; case-insensitive).

    Returns
    -------
    int
        The size in bytes (>= 0).

    Raises
    ------
    ValueError
        If the value cannot be parsed or is negative.
    """
    if isinstance(value, bool):
        raise ValueError(f"memory_limit must be a number of bytes or a size string, got {value!r}.")
    if isinstance(value, (int, np.integer)):
        n = int(value)
    elif isinstance(value, (float, np.floating)):
        n = int(value)
    elif isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise ValueError(
                f"Cannot parse the memory size {value!r}: give bytes (e.g. 500000000) or a "
                "number with a unit such as '512MiB', '2GiB', '4GB'."
            )
        n = int(float(m.group(1)) * _UNITS[unit])
    else:
        raise ValueError(f"memory_limit must be a number of bytes or a size string, got {value!r}.")
    if n < 0:
        raise ValueError(f"memory_limit must be >= 0 bytes, got {value!r}.")
    return n


def format_bytes(n: float) -> str:
    """Human-readable size in powers of 1024 (``"1.5 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class Reservoir:
    """A uniform random sample of at most ``size`` rows of a stream (algorithm R).

    One uniform float is drawn per row after the first ``size`` rows, in
    stream order, so the sample depends only on the rows and the seed, not on
    how the stream is cut into blocks.

    Parameters
    ----------
    size : int
        Maximum rows kept.
    seed : int or None
        Seed of the random generator.
    """

    def __init__(self, size: int, seed: int | None) -> None:
        self.size = int(size)
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.rows: np.ndarray | None = None
        self.filled = 0

    def add(self, block: np.ndarray) -> None:
        """Offer the rows of ``block`` (2-D) to the sample."""
        m = block.shape[0]
        if m == 0 or self.size == 0:
            return
        take = min(max(self.size - self.filled, 0), m)
        need = self.filled + take
        if self.rows is None or self.rows.shape[0] < need:
            # Grow geometrically up to ``size``: a huge ``size`` costs nothing up front.
            cap = min(self.size, max(2 * need, 1024))
            grown = np.empty((cap, *block.shape[1:]), dtype=block.dtype)
            if self.rows is not None:
                grown[: self.filled] = self.rows[: self.filled]
            self.rows = grown
        if take:
            self.rows[self.filled : self.filled + take] = block[:take]
            self.filled += take
        rest = block[take:]
        if rest.shape[0]:
            t = self.seen + take + np.arange(rest.shape[0], dtype=np.float64)
            j = np.floor(self.rng.random(rest.shape[0]) * (t + 1)).astype(np.int64)
            hit = np.flatnonzero(j < self.size)
            if hit.size:
                # Later rows overwrite earlier ones in the same slot: keep the last.
                slots = j[hit][::-1]
                _, first = np.unique(slots, return_index=True)
                keep = hit[::-1][first]
                self.rows[j[keep]] = rest[keep]
        self.seen += m

    def sample(self) -> np.ndarray:
        """The rows kept so far (a copy is not made)."""
        if self.rows is None:
            return np.empty((0,))
        return self.rows[: self.filled]


def rebatch(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of 2-D blocks into batches of exactly ``size`` rows.

    The last batch holds the remainder; when that remainder would be shorter
    than ``size`` and a previous batch exists, it is merged into it, so every
    batch has at least ``size`` rows whenever the stream has. The batches
    depend only on the rows, not on how the input was cut.
    """
    size = max(1, int(size))
    pending: list[np.ndarray] = []
    n_pending = 0
    held: np.ndarray | None = None
    for block in blocks:
        if block.shape[0] == 0:
            continue
        pending.append(block)
        n_pending += block.shape[0]
        while n_pending >= size:
            cat = np.concatenate(pending) if len(pending) > 1 else pending[0]
            batch, rest = cat[:size], cat[size:]
            pending = [rest] if rest.shape[0] else []
            n_pending = rest.shape[0]
            if held is not None:
                yield held
            held = batch
    if n_pending:
        cat = np.concatenate(pending) if len(pending) > 1 else pending[0]
        if held is not None:
            yield np.concatenate([held, cat])
            held = None
        else:
            yield cat
    if held is not None:
        yield held
