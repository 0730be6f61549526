"""Row sources: a layer's (selected) samples, block by block, from a store or from memory.

A source yields ``(rows, block)`` pairs: the positions of the block's samples in the split
and their float32 ``(m, n_features)`` rows. A store-backed source reads each chunk at most
once per pass and checks every value is finite.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nnsig_core._progress import ProgressBar  # terminal bars only: no notebook widgets
from nnsig_core._util import to_json_safe
from nnsig_core._warnings import warn
from nnsig_core.protocol import check_finite, nonfinite_rows
from nnsig_core.store import ActivationStore, StoreError
from nnsig_core.store.format import recorded_fingerprints


class RowSource(Protocol):
    """What the per-layer clusterer reads from."""

    n_rows: int
    n_features: int

    def blocks(self, desc: str = "") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, block)`` pairs covering the source once, in order."""
        ...


#: What a reader of the store advises when a stored activation is NaN or Inf.
STORE_FIX = ("The model produced NaN/inf (diverged training, overflow in float16 storage?): "
             "fix the model or capture with dtype='float32', then re-capture the split.")


class StoreSource:
    """The rows ``rows`` (sorted positions; ``None`` = all) of one layer of a split.

    One read takes whole chunks together up to ``read_bytes`` (uncompressed), so zarr decodes
    them concurrently. ``progress``: a tqdm bar per pass.
    """

    def __init__(self, store: ActivationStore, split: str, layer: str,
                 rows: np.ndarray | None = None, progress: bool = False,
                 read_bytes: int = 32 << 20) -> None:
        self.store = store
        self.split = split
        self.layer = layer
        self.array = store.activations(split, layer)
        self.n_total = store.n_samples(split)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.n_rows = self.n_total if self.rows is None else int(self.rows.size)
        self.unit_shape = tuple(int(s) for s in self.array.shape[1:])
        self.n_features = int(np.prod(self.unit_shape, dtype=np.int64))
        self.chunk_rows = int(self.array.chunks[0])
        row_bytes = max(self.n_features * self.array.dtype.itemsize, 1)
        per_read = max(1, int(read_bytes) // max(self.chunk_rows * row_bytes, 1))
        self.rows_per_read = self.chunk_rows * per_read
        self.progress = progress
        self._sample_index: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the selected rows as float32."""
        return self.n_rows * self.n_features * 4

    def _si(self) -> np.ndarray:
        if self._sample_index is None:
            self._sample_index = self.store.sample_index(self.split)
        return self._sample_index

    def _check(self, block: np.ndarray, rows: np.ndarray) -> None:
        if nonfinite_rows(block).size:
            check_finite(block, layer=self.layer, split=self.split, rows=rows,
                         sample_index=self._si(), fix=STORE_FIX, scope="this chunk")

    def gather(self, out: np.ndarray, desc: str = "read") -> np.ndarray:
        """Read the selected rows straight into ``out`` (as :meth:`blocks`, one copy fewer)."""
        o = 0
        for rows, raw, first in self._reads(desc):
            m = rows.size
            dst = out[o : o + m]
            if m == raw.shape[0]:
                dst[...] = raw
            else:
                np.take(raw, rows - first, axis=0, out=dst)
            self._check(dst, rows)
            o += m
        return out

    def _reads(self, desc: str) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Yield ``(rows, raw, first)``: selected positions, the 2-D rows read, their start."""
        n, step = self.n_total, self.rows_per_read
        bar = ProgressBar(total=self.n_rows, desc=f"{desc} {self.layer}".strip(), unit="sample",
                          progress=self.progress, leave=False)
        try:
            for start in range(0, n, step):
                stop = min(start + step, n)
                if self.rows is None:
                    rows = np.arange(start, stop, dtype=np.int64)
                else:
                    lo, hi = np.searchsorted(self.rows, [start, stop])
                    if lo == hi:
                        continue
                    rows = self.rows[lo:hi]
                if rows.size == stop - start:
                    first, last = start, stop
                else:
                    # Read only the chunks that hold selected rows.
                    first = (int(rows[0]) // self.chunk_rows) * self.chunk_rows
                    last = min(n, (int(rows[-1]) // self.chunk_rows + 1) * self.chunk_rows)
                raw = np.asarray(self.array[first:last]).reshape(last - first, -1)
                if raw.dtype != np.float32:
                    raw = raw.astype(np.float32)
                bar.update(rows.size)
                yield rows, raw, first
        finally:
            bar.close()

    def blocks(self, desc: str = "") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, block)``: selected positions and their float32 rows, flattened."""
        for rows, raw, first in self._reads(desc):
            block = raw if rows.size == raw.shape[0] else np.take(raw, rows - first, axis=0)
            self._check(block, rows)
            yield rows, block


def gather(source: RowSource, out: np.ndarray, desc: str = "read") -> np.ndarray:
    """Copy every row of ``source`` into ``out`` (n_rows, n_features), in order."""
    if isinstance(source, StoreSource):
        return source.gather(out, desc)
    o = 0
    for _, block in source.blocks(desc):
        out[o : o + block.shape[0]] = block
        o += block.shape[0]
    return out


class MemorySource:
    """Rows ``X`` in memory (at positions ``rows`` of their split), in blocks of ``block_rows``."""

    def __init__(self, X: np.ndarray, rows: np.ndarray, block_rows: int = 4096) -> None:
        self.X = X
        self.rows = np.asarray(rows, dtype=np.int64)
        self.n_rows = int(X.shape[0])
        self.n_features = int(X.shape[1])
        self.block_rows = max(1, int(block_rows))

    def blocks(self, desc: str = "") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for s in range(0, self.n_rows, self.block_rows):
            yield self.rows[s : s + self.block_rows], self.X[s : s + self.block_rows]


class Prefetcher:
    """Reads the next layer's fit rows in a background thread while the current one is clustered.

    Only for layers clustered as they are (``plain``) when three such layers fit the budget
    (the one clustered, KMeans' copy of it, the one read).
    """

    def __init__(self, sources: dict[str, StoreSource], layers: list[str], limit: int,
                 plain: bool) -> None:
        self.sources = sources
        self.order = [n for n in layers if plain and 3 * sources[n].nbytes <= limit]
        self.futures: dict[str, Any] = {}
        self.served: list[str] = []  # layers handed out from memory, in order
        self.pool: Any = None
        if len(self.order) > 1:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnsig-read")

    def _read(self, name: str) -> np.ndarray:
        src = self.sources[name]
        return gather(src, np.empty((src.n_rows, src.n_features), dtype=np.float32))

    def _submit_after(self, name: str) -> None:
        i = self.order.index(name)
        if self.pool is not None and i + 1 < len(self.order):
            nxt = self.order[i + 1]
            if nxt not in self.futures:
                self.futures[nxt] = self.pool.submit(self._read, nxt)

    def source(self, name: str) -> Any:
        """The layer's rows: in memory when prefetched (or prefetchable), else the store."""
        if self.pool is None or name not in self.order:
            return self.sources[name]
        fut = self.futures.pop(name, None)
        X = fut.result() if fut is not None else self._read(name)
        self._submit_after(name)
        self.served.append(name)
        src = self.sources[name]
        return MemorySource(X, src.rows if src.rows is not None else np.arange(src.n_rows),
                            block_rows=src.chunk_rows)

    def close(self) -> None:
        if self.pool is not None:
            for fut in self.futures.values():
                fut.cancel()
            self.pool.shutdown(wait=True)


def check_unchanged(store: ActivationStore, split: str, before: dict[str, Any]) -> None:
    """Refuse results read while the split was captured again (``before``: its fingerprint)."""
    if store.fingerprint(split) != before:
        raise StoreError(f"Split {split!r} of {store.location} was captured again while it was "
                         "being read, so what was read may mix the two captures. Run the "
                         "analysis again.")


def fitted_level(store: ActivationStore, fit_split: str) -> str:
    """The row level of an estimator's fit split: the store's, or from its name when the
    store (another one) lacks it."""
    if fit_split in store.splits:
        return store.level(fit_split)
    return "tokens" if str(fit_split).endswith(".tokens") else "samples"


def check_row_level(store: ActivationStore, split: str, fit_split: str, fitted: str) -> None:
    """Raise :class:`StoreError` unless ``split`` has rows of the level ``fitted``."""
    level = store.level(split)
    if level != fitted:
        other = (store.token_split(split) or f"{split}.tokens" if fitted == "tokens"
                 else split.removesuffix(".tokens"))
        raise StoreError(
            f"This analysis was fitted on {fitted} (split {fit_split!r}); split {split!r} has "
            f"one row per {level[:-1]}: its clusters do not apply. Use split {other!r}, or an "
            f"analysis fitted on {level}.")


def check_same_weights(store: ActivationStore, split: str, fit_split: str,
                       fit_weights: str | None, name: str | None) -> None:
    """Warn when ``split`` was captured with other model weights than the analysis's fit
    split was when it was fitted (both known): its clusters are another model's. A
    warning, not an error: following a fine-tuned model on its earlier clusters is a
    deliberate use."""
    info = store.split_attrs(split)
    weights = info.get("model_fingerprint")
    if fit_weights is None or weights is None:
        return
    fitted = {fit_weights}
    if fit_split in store.splits:  # its earlier schemes' fingerprints too, if still the same
        now = store.split_attrs(fit_split)
        if now.get("model_fingerprint") == fit_weights:
            fitted = recorded_fingerprints(now)
    if fitted & recorded_fingerprints(info):
        return
    what = f"analysis {name!r}" if name else "this analysis"
    warn(f"Split {split!r} was captured with other model weights ({weights}) than the fit "
         f"split {fit_split!r} had when {what} was fitted ({fit_weights}): its signatures "
         "are on another model's clusters. If the model was retrained, fit the analysis "
         f"again ({_refit(fit_split, name)}); if you compare weights on purpose, ignore this.")


def check_fit_capture(store: ActivationStore, fit_split: str, fit_capture: dict[str, Any] | None,
                      name: str | None) -> None:
    """Warn when the fit split was captured again since the analysis was fitted on it (its
    clusters, fit composition and typical clusters describe samples no longer there)."""
    where = store_identity(store)
    if fit_capture is None or fit_capture.get("location") != where or fit_split not in store.splits:
        return  # another store (an analysis applied to new data) has its own captures
    now = {"location": where, **to_json_safe(store.fingerprint(fit_split))}
    if now == fit_capture:
        return
    what = f"analysis {name!r}" if name else "this analysis"
    warn(f"Split {fit_split!r}, which {what} was fitted on, was captured again since "
         f"({fit_capture.get('n_samples')} samples then, {now.get('n_samples')} now): its "
         "clusters, class compositions and typical clusters describe the earlier capture. "
         f"Fit it again ({_refit(fit_split, name)}).")


def _refit(fit_split: str, name: str | None) -> str:
    """How to fit an analysis again with its own settings (nnsig analyze would take its
    defaults)."""
    save = f".save(store, {name!r}, overwrite=True)" if name else ""
    return (f"sklearn.base.clone(analysis).fit(store, {fit_split!r}){save}, or nnsig analyze "
            "STORE --overwrite with the settings it was fitted with")


def store_identity(store: ActivationStore) -> str:
    """Where ``store`` is, spelt one way: a local store's resolved path, else its URL."""
    return str(Path(store.path).resolve()) if store.path is not None else store.location
