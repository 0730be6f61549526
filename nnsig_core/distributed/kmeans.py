"""The fit rows of a layer on a Dask cluster, for the out-of-core k-means.

:class:`FitRows` holds a layer's fit rows as delayed blocks ``(positions,
labels, rows)`` on the workers: mapped through a fitted feature map (computed
per pass or persisted), drawn as the seeding sample, and reduced by the
algorithm of :mod:`nnsig_core.analysis.lloyd`, whose every reduction runs per
block on the workers and merges in a tree (:meth:`FitRows.reducer`). The
driver holds only the ``k x d`` centres and what each reduction returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from nnsig_core.analysis.lloyd import Reduce
from nnsig_core.execute.dask_blocks import broadcast, reduce_delayed


# ---------------------------------------------------------------------------- the rows
def _select(raw: np.ndarray, mask: np.ndarray | None, lo: int,
            labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions, labels, rows)`` of a block's fit rows."""
    if mask is None:
        pos = np.arange(lo, lo + raw.shape[0], dtype=np.int64)
        return pos, np.asarray(labels, dtype=np.int64), raw
    keep = np.flatnonzero(mask)
    X = raw if keep.size == raw.shape[0] else raw[keep]
    return keep + lo, np.asarray(labels, dtype=np.int64)[keep], X


def _featurize(block: tuple[np.ndarray, np.ndarray, np.ndarray],
               fmap: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos, lab, X = block
    return pos, lab, (fmap.features(X) if X.shape[0] else
                      np.empty((0, fmap.features(np.zeros((1, X.shape[1]), np.float32)).shape[1]),
                               np.float32))


@dataclass
class FitRows:
    """A layer's fit rows on the cluster: per block, delayed ``(positions, labels, rows)``.

    ``raw`` are the stored rows (float32, flattened); :meth:`features` maps
    them through a fitted feature map (a ``LayerClusterer`` with its
    discretizer and reducer), computed per pass or persisted on the workers.
    """

    client: Any
    raw: list[Any]
    sizes: list[int]
    n_features: int

    @property
    def n(self) -> int:
        return int(sum(self.sizes))

    def features(self, fmap: Any, persist: bool) -> list[Any]:
        """Delayed feature blocks (persisted in the workers' memory when ``persist``)."""
        from dask import delayed

        shipped = broadcast(self.client, fmap)
        blocks = [delayed(_featurize, pure=True)(b, shipped) for b in self.raw]
        return list(self.client.persist(blocks)) if persist else blocks

    def reducer(self, blocks: Sequence[Any]) -> Reduce:
        """The :data:`~nnsig_core.analysis.lloyd.Reduce` of ``blocks`` (delayed feature blocks,
        see :meth:`features`): every reduction of the k-means runs on the workers."""
        return partial(reduce_delayed, self.client, blocks)

    def sample(self, fmap: Any, ranks: np.ndarray) -> np.ndarray:
        """The rows of the given ranks (sorted positions among the fit rows), as features."""
        from dask import delayed

        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        shipped = broadcast(self.client, fmap)
        parts = []
        for i, b in enumerate(self.raw):
            lo, hi = np.searchsorted(ranks, [starts[i], starts[i + 1]])
            if hi > lo:
                parts.append(delayed(_take_features)(b, ranks[lo:hi] - starts[i], shipped))
        rows = self.client.compute(parts, sync=True)
        return np.concatenate(rows) if rows else np.empty((0, self.n_features), np.float32)


def _take_features(block: tuple[np.ndarray, np.ndarray, np.ndarray], local: np.ndarray,
                   fmap: Any) -> np.ndarray:
    return fmap.features(block[2][local])
