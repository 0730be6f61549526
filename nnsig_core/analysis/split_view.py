"""A split as one driver reads it: :class:`LocalSplit` (here, no Dask) or ``DaskSplit``
(:mod:`nnsig_core.distributed.split_view`), with the same operations for fit and transform."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from nnsig_core.analysis import persist
from nnsig_core.analysis.fit_rows import FitRows, SourceRows
from nnsig_core.analysis.selection import fit_sample_mask
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.source import Prefetcher, StoreSource
from nnsig_core.store import ActivationStore

#: Target size of one read from the store (whole chunks).
READ_BYTES = 8 << 20


def split_view(store: ActivationStore, split: str, client: Any = None, *,
               progress: bool = False) -> Any:
    """The view of ``split`` for the driver of ``client`` (resolved; None: this process);
    its ``fingerprint`` is the split's, read from the storage first (which forgets what the
    store cached of an earlier capture)."""
    fingerprint = store.fingerprint(split)
    if client is None:
        view: Any = LocalSplit(store, split, progress=progress)
    else:
        from nnsig_core.distributed.split_view import DaskSplit

        view = DaskSplit(client, store, split)
    view.fingerprint = fingerprint
    return view


class LocalSplit:
    """A split read in this process (``progress``: tqdm bars for the passes over the store)."""

    client = None
    cache_tag: tuple[Any, ...] = ()

    def __init__(self, store: ActivationStore, split: str, *, progress: bool = False) -> None:
        self.store, self.split, self.progress = store, split, progress
        self.n = store.n_samples(split)
        self.rows = np.arange(0)
        self.prefetched: list[str] = []

    def select(self, classes: Iterable[int] | None, only_correct: bool) -> int:
        """Choose the fit rows (:func:`~nnsig_core.analysis.fit_sample_mask`); their number."""
        self.rows = np.flatnonzero(fit_sample_mask(self.store, self.split, classes=classes,
                                                   only_correct=only_correct, warn_dropped=True))
        return int(self.rows.size)

    def n_classes(self) -> int:
        return self.store.n_classes(self.split)

    def fit_layers(self, layers: list[str], fit_one: Callable[[str, FitRows], Any], *,
                   limit: int, plain: bool) -> list[Any]:
        """``fit_one(name, rows)`` for each layer in turn, reading the next one ahead when
        ``plain`` and within ``limit``."""
        labels = self.store.labels(self.split)
        sources = {name: StoreSource(self.store, self.split, name, self.rows,
                                     progress=self.progress,
                                     read_bytes=min(READ_BYTES, max(limit // 4, 1)))
                   for name in layers}
        prefetch = Prefetcher(sources, layers, limit, plain)
        try:
            out = [fit_one(name, SourceRows(prefetch.source(name), labels)) for name in layers]
        finally:
            prefetch.close()
        self.prefetched = prefetch.served
        return out

    def assign(self, clusterers: list[Any], layers: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cluster ids (int32) and distances (float32), ``(n, n_layers)``, of every sample."""
        ids = np.empty((self.n, len(layers)), dtype=np.int32)
        dist = np.empty((self.n, len(layers)), dtype=np.float32)
        for j, (name, lc) in enumerate(zip(layers, clusterers, strict=True)):
            src = StoreSource(self.store, self.split, name, None, progress=self.progress)
            for rows, block in src.blocks("assign"):
                ids[rows, j], dist[rows, j] = lc.assign(block)
        return ids, dist

    def materialize(self, analysis: Any, ids: np.ndarray,
                    dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Here the arrays are already in memory."""
        return ids, dist

    def read_saved(self, group: Any) -> tuple[np.ndarray, np.ndarray]:
        """The cluster ids and distances saved in ``group``."""
        arrays = persist._read_arrays(group)
        return arrays["cluster_ids"], arrays["distances"]

    def signatures(self, analysis: Any, ids: np.ndarray, dist: np.ndarray) -> Signatures:
        store, split = self.store, self.split
        return Signatures(
            split, analysis.layers_, ids, store.labels(split), store.predictions(split), dist,
            store.sample_index(split), analysis.n_clusters_,
            n_classes=max(analysis.n_classes_, store.n_classes(split)),
            class_names=store.class_names(),
        )
