"""A layer's fit rows as the per-layer fit reads them, whichever driver holds them.

Every operation maps blocks ``(positions, labels, rows)`` through a *feature map* (``None``:
the stored rows as float32; else an object whose ``features(rows)`` gives the clustering
space). :class:`SourceRows` reads blocks here, ``DaskRows`` on the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from nnsig_core.analysis.source import MemorySource, RowSource, StoreSource, gather
from nnsig_core.execute.blocks import fold, row_slices

#: ``reduce(part, merge=None, **kw)``: ``part((positions, labels, F), **kw)`` over every block
#: of the fit rows' features, merged by ``merge`` (default: sums, lists concatenated).
Reduce = Callable[..., dict[str, Any]]


def features_of(fmap: Any, rows: np.ndarray) -> np.ndarray:
    """``fmap.features(rows)``, or the rows as float32 when ``fmap`` is None."""
    if fmap is None:
        return np.ascontiguousarray(rows, dtype=np.float32)
    return fmap.features(rows)


class DiscretizeOnly:
    """The feature map while a reduction is fitted: the discretizer's bins as float32."""

    def __init__(self, disc: Any) -> None:
        self.disc = disc

    def features(self, X: np.ndarray) -> np.ndarray:
        if self.disc is None:
            return np.ascontiguousarray(X, dtype=np.float32)
        return np.asarray(self.disc.transform(X), dtype=np.float32)


class FitRows(Protocol):
    """What the per-layer fit reads: the operations both drivers implement."""

    @property
    def n(self) -> int:
        """The number of fit rows."""

    @property
    def n_features(self) -> int:
        """Features (flattened units) of a stored row."""

    def reduce(self, fmap: Any, part: Callable[..., Any], merge: Callable[..., Any] | None = None,
               **kw: Any) -> dict[str, Any]:
        """``part((positions, labels, F), **kw)`` over every block, merged."""

    def reduce_slices(self, fmap: Any, part: Callable[..., Any],
                      merge: Callable[..., Any] | None = None, **kw: Any) -> dict[str, Any]:
        """``part(F, **kw)`` over slices of every block (bounded float64 temporaries), merged."""

    def reducer(self, fmap: Any) -> Reduce:
        """A :data:`Reduce` of the features, for the many passes of Lloyd's iterations."""

    def sample(self, fmap: Any, ranks: np.ndarray) -> np.ndarray:
        """The features of the fit rows of the given ranks (sorted), in order."""

    def gather(self, fmap: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every fit row's features ``(n, d)`` float32, and its label, in memory."""

    def keep(self, fits: bool) -> bool:
        """Keep the stored rows in memory for the coming passes when ``fits`` (and the driver
        has room); whether they are kept."""

    def drop(self) -> None:
        """Free what :meth:`keep` kept."""


class SourceRows:
    """The local driver's fit rows: a row source read here, with the split's ``labels``."""

    def __init__(self, source: RowSource, labels: np.ndarray | None = None) -> None:
        self.source: RowSource = source
        self._stored = source
        self.labels = labels
        self.n = int(source.n_rows)
        self.n_features = int(source.n_features)

    def _labels(self, pos: np.ndarray) -> np.ndarray:
        if self.labels is None:
            return np.zeros(pos.shape[0], dtype=np.int64)
        return np.asarray(self.labels[pos], dtype=np.int64)

    def _blocks(self, fmap: Any, desc: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for pos, raw in self.source.blocks(desc):
            yield pos, self._labels(pos), features_of(fmap, raw)

    def reduce(self, fmap: Any, part: Callable[..., Any], merge: Callable[..., Any] | None = None,
               **kw: Any) -> dict[str, Any]:
        return fold(self._blocks(fmap, "read"), part, merge, **kw)

    def reduce_slices(self, fmap: Any, part: Callable[..., Any],
                      merge: Callable[..., Any] | None = None, **kw: Any) -> dict[str, Any]:
        def slices() -> Iterator[np.ndarray]:
            for _, _, F in self._blocks(fmap, "pca"):
                yield from (F[sl] for sl in row_slices(F.shape[0], F.shape[1]))

        return fold(slices(), part, merge, **kw)

    def reducer(self, fmap: Any) -> Reduce:
        def reduce(part: Callable[..., Any], merge: Callable[..., Any] | None = None,
                   **kw: Any) -> dict[str, Any]:
            return fold(self._blocks(fmap, "k-means"), part, merge, **kw)

        return reduce

    def sample(self, fmap: Any, ranks: np.ndarray) -> np.ndarray:
        ranks = np.asarray(ranks, dtype=np.int64)
        out = np.empty((ranks.size, self.n_features), dtype=np.float32)
        offset = 0
        for _, raw in self.source.blocks("sample"):
            lo, hi = np.searchsorted(ranks, [offset, offset + raw.shape[0]])
            if hi > lo:
                out[lo:hi] = raw[ranks[lo:hi] - offset]
            offset += raw.shape[0]
            if hi == ranks.size:
                break
        return features_of(fmap, out)

    def gather(self, fmap: Any) -> tuple[np.ndarray, np.ndarray]:
        src = self.source
        pos = src.rows if isinstance(src, MemorySource | StoreSource) else None
        if fmap is None:
            if isinstance(src, MemorySource) and src.X.dtype == np.float32:
                X = src.X  # rows already in memory (prefetched): no copy
            else:
                X = gather(src, np.empty((self.n, self.n_features), dtype=np.float32))
        else:
            out: np.ndarray | None = None
            pos, o = np.empty(self.n, np.int64), 0
            for p, raw in src.blocks("read"):
                F = fmap.features(raw)
                if out is None:
                    out = np.empty((self.n, F.shape[1]), dtype=np.float32)
                out[o : o + F.shape[0]], pos[o : o + F.shape[0]] = F, p
                o += F.shape[0]
            assert out is not None, "no fit rows"  # the fit refuses fewer rows than clusters
            X = out
        if pos is None:
            pos = np.arange(self.n, dtype=np.int64)
        return X, self._labels(pos)

    def keep(self, fits: bool) -> bool:
        if not fits or isinstance(self.source, MemorySource):
            return False
        X = gather(self.source, np.empty((self.n, self.n_features), dtype=np.float32))
        rows = getattr(self.source, "rows", None)
        self.source = MemorySource(X, np.arange(self.n) if rows is None else rows,
                                   block_rows=getattr(self.source, "chunk_rows", 4096))
        return True

    def drop(self) -> None:
        self.source = self._stored
