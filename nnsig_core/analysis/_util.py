"""A reservoir sample of a stream of rows (the quantile discretizer's fit)."""

from __future__ import annotations

import numpy as np


class Reservoir:
    """A uniform random sample of at most ``size`` rows of a stream (algorithm R), the same
    however the stream is cut."""

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
