"""A split on the cluster: its arrays as dask arrays in row blocks, the fit rows, tree reductions.

Every distributed computation of the analysis and the diagnostics is built
from the pieces here:

- :class:`SplitBlocks`: one split's arrays read with ``dask.array.from_zarr``
  in *blocks* of whole chunks (about :func:`block_bytes` of the widest layer:
  :data:`BLOCK_BYTES`, or a sixteenth of the smallest worker's memory limit
  when that is less, fixed per client; and at least :data:`MIN_BLOCKS` blocks
  when the split has that many chunks), so all arrays of a split share row
  boundaries; the metadata arrays (labels, predictions) and a layer's rows,
  flattened to float32 and checked for NaN/Inf as the single-process reader
  checks them.
- :func:`fit_mask`: which rows the fit uses (``only_correct``, ``classes``),
  as a dask array, with the errors of
  :func:`~nnsig_core.analysis.fit_sample_mask` computed from counts.
- :func:`tree_reduce`: per-block partial results (dicts of NumPy arrays)
  merged pairwise up a tree of tasks on the workers; only the root reaches
  the driver.

Large objects that every task needs (centroids, a fitted feature map) are
scattered to the workers once (:func:`broadcast`) and passed to tasks as
futures, never embedded in each task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.adapter import check_finite, nonfinite_rows
from nnsig_core.analysis.errors import EmptySelectionError, MissingLabelsError
from nnsig_core.analysis.source import STORE_FIX
from nnsig_core.store import ActivationStore, StoreError

__all__ = [
    "BLOCK_BYTES",
    "SplitBlocks",
    "SplitCounts",
    "block_bytes",
    "broadcast",
    "fit_mask",
    "masked_rows",
    "merge",
    "release",
    "row_slices",
    "smallest_worker_memory",
    "tree_reduce",
]


#: Target bytes of one block of the widest layer (one task reads one block).
BLOCK_BYTES = 64 << 20
#: A block is at most this fraction of a worker's memory limit (a task holds a few copies).
BLOCK_SHARE = 1 / 16
_BLOCK_BYTES: dict[str, int] = {}
#: Float64 temporaries of a task, per slice of its block.
SLICE_BYTES = 16 << 20
#: Blocks a split is cut into at least (when it has as many chunks): work for 16 workers.
MIN_BLOCKS = 16
#: Objects pickled to at least this many bytes are scattered, not embedded in the graph.
SCATTER_BYTES = 1 << 20
#: Partial results merged by one task of a tree reduction.
SPLIT_EVERY = 8


def broadcast(client: Any, obj: Any) -> Any:
    """``obj`` for the tasks of the next computations, sent once however many tasks use it:
    embedded in the task graph as one key when small (below :data:`SCATTER_BYTES` pickled),
    else scattered to every worker (a future). Pass the result to tasks instead of ``obj``
    and :func:`release` it when done."""
    import pickle

    from dask import delayed

    try:
        small = len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)) < SCATTER_BYTES
    except Exception:  # noqa: BLE001 - not picklable by pickle: let Dask's serializers try
        small = False
    if small:
        return delayed(obj, pure=False, traverse=False)
    return client.scatter(obj, broadcast=True, hash=False)


def release(client: Any, *shipped: Any) -> None:
    """Let the workers drop what :func:`broadcast` scattered (nothing to do for graph keys)."""
    futures = [x for x in shipped if type(x).__name__ == "Future"]
    if futures:
        client.cancel(futures)


def smallest_worker_memory(client: Any) -> int | None:
    """The smallest memory limit of the cluster's workers in bytes (None when none is set)."""
    workers = client.scheduler_info().get("workers", {}).values()
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    limits = [v for v in limits if v > 0]
    return min(limits) if limits else None


def block_bytes(client: Any) -> int:
    """Bytes of the widest layer per block on this client's cluster: :data:`BLOCK_BYTES`, or
    :data:`BLOCK_SHARE` of the smallest worker memory limit when less (at least 1 MiB). Fixed
    for a client at its first use, so that every computation cuts a split the same way."""
    key = str(getattr(client, "id", id(client)))
    if key not in _BLOCK_BYTES:
        worker = smallest_worker_memory(client)
        share = [] if worker is None else [int(worker * BLOCK_SHARE)]
        _BLOCK_BYTES[key] = max(1 << 20, min([BLOCK_BYTES, *share]))
    return _BLOCK_BYTES[key]


def row_slices(m: int, d: int, nbytes: int = SLICE_BYTES) -> list[slice]:
    """Slices of ``m`` rows of ``d`` float64 values, about ``nbytes`` each: a task works on a
    block slice by slice, so its temporaries stay a fraction of the block."""
    step = max(1, nbytes // max(8 * d, 1))
    return [slice(lo, min(lo + step, m)) for lo in range(0, m, step)] or [slice(0, 0)]


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two partial results: keys ending in ``_min``/``_max`` by min/max, ``_first`` by
    the smaller non-negative position (-1 is none), lists by concatenation, the rest summed."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif k.endswith("_min"):
            out[k] = np.minimum(out[k], v)
        elif k.endswith("_max"):
            out[k] = np.maximum(out[k], v)
        elif k.endswith("_first"):
            x, y = np.asarray(out[k]), np.asarray(v)
            out[k] = np.where(x < 0, y, np.where(y < 0, x, np.minimum(x, y)))
        elif isinstance(v, list):
            out[k] = out[k] + v
        else:
            out[k] = out[k] + v
    return out


def _merge_all(*parts: Mapping[str, Any], combine: Callable[..., Any] | None = None) -> Any:
    if combine is not None:
        return combine(*parts)
    out: dict[str, Any] = {}
    for p in parts:
        out = merge(out, p) if out else dict(p)
    return out


def tree_reduce(parts: Sequence[Any], combine: Callable[..., Any] | None = None,
                split_every: int = SPLIT_EVERY) -> Any:
    """A delayed tree merging ``parts`` (delayed partial results) ``split_every`` at a time
    with ``combine(*parts)`` (default :func:`merge` of dicts)."""
    from dask import delayed

    level = list(parts)
    if not level:
        raise ValueError("Nothing to reduce.")
    if len(level) == 1:
        return delayed(_merge_all)(level[0], combine=combine)
    while len(level) > 1:
        level = [delayed(_merge_all)(*level[i : i + split_every], combine=combine)
                 for i in range(0, len(level), split_every)]
    return level[0]


# ---------------------------------------------------------------------------- blocks
@dataclass
class _LayerCheck:
    """What a block's NaN/Inf check needs to name the bad sample (read only on failure)."""

    store: ActivationStore
    split: str
    layer: str


class _SampleIndex:
    """``sample_index[row]`` read from the store on demand (a failing check reads one value)."""

    def __init__(self, store: ActivationStore, split: str) -> None:
        self.store, self.split = store, split

    def __getitem__(self, row: int) -> int:
        return int(self.store.sample_index(self.split, int(row), int(row) + 1)[0])


def _flat_checked(raw: np.ndarray, lo: int, check: _LayerCheck,
                  idx: np.ndarray | None = None) -> np.ndarray:
    """A block starting at row ``lo`` (its rows ``idx`` when given, positions in the block),
    flattened to float32 and checked for NaN/Inf."""
    block = np.asarray(raw).reshape(raw.shape[0], -1)
    if idx is not None:
        block = block[np.asarray(idx, dtype=np.int64)]
    if block.dtype != np.float32:
        block = block.astype(np.float32)
    if nonfinite_rows(block).size:
        check_finite(block, layer=check.layer, split=check.split,
                     rows=lo + (np.arange(block.shape[0]) if idx is None else np.asarray(idx)),
                     sample_index=_SampleIndex(check.store, check.split),  # type: ignore[arg-type]
                     fix=STORE_FIX, scope="this chunk")
    return block


class SplitBlocks:
    """One split's arrays on the cluster, cut into the same row blocks.

    Parameters
    ----------
    client : dask.distributed.Client
    store : ActivationStore
    split : str
    block_rows : int, optional
        Rows per block (a multiple of the split's chunk length); default:
        :func:`block_bytes` of the widest layer, at least :data:`MIN_BLOCKS` blocks.
    """

    def __init__(self, client: Any, store: ActivationStore, split: str,
                 block_rows: int | None = None) -> None:
        self.client = client
        self.store = store
        self.split = split
        self.n = store.n_samples(split)
        chunk = int(store.split_attrs(split)["capture"]["chunk_rows"])
        if block_rows is None:
            widest = max([int(np.prod(d["shape"], dtype=np.int64)) * 4
                          for d in store.layer_info(split)] or [4])
            by_bytes = max(1, block_bytes(client) // max(widest * chunk, 1))
            by_spread = max(1, math.ceil(self.n / (MIN_BLOCKS * chunk)))
            block_rows = chunk * min(by_bytes, by_spread)
        if block_rows % chunk:
            raise ValueError(f"block_rows={block_rows} is not a multiple of the split's "
                             f"{chunk} rows per chunk.")
        self.block_rows = int(block_rows)
        self.bounds = [(lo, min(lo + self.block_rows, self.n))
                       for lo in range(0, max(self.n, 1), self.block_rows)] if self.n else []

    @property
    def n_blocks(self) -> int:
        return len(self.bounds)

    def _from_zarr(self, array: Any) -> Any:
        import dask.array as da

        x = da.from_zarr(array, chunks=(self.block_rows, *array.shape[1:]))
        return x[: self.n] if array.shape[0] != self.n else x

    def meta(self, name: str) -> Any:
        """A metadata array (``labels``, ``predictions``, ``sample_index``) as a dask array."""
        if name not in ("labels", "predictions", "sample_index"):
            raise ValueError(f"Unknown metadata array {name!r}.")
        return self._from_zarr(self.store.root[self.split][name])

    def meta_blocks(self, name: str) -> list[Any]:
        """Delayed blocks of a metadata array."""
        return list(self.meta(name).to_delayed().ravel())

    def layer(self, layer: str) -> Any:
        """A layer as a dask array ``(n, *unit shape)`` (from_zarr, one chunk per block)."""
        return self._from_zarr(self.store.activations(self.split, layer))

    def layer_blocks(self, layer: str) -> list[Any]:
        """Delayed float32 blocks ``(rows, n_features)`` of a layer, checked for NaN/Inf."""
        from dask import delayed

        check = broadcast(self.client, _LayerCheck(self.store, self.split, layer))
        raw = self.layer(layer).to_delayed().ravel()
        return [delayed(_flat_checked, pure=True)(r, lo, check)
                for r, (lo, _) in zip(raw, self.bounds, strict=True)]


# ---------------------------------------------------------------------------- counts and fit rows
@dataclass
class SplitCounts:
    """Aggregates of a split's labels and predictions."""

    n: int
    label_counts: np.ndarray  # samples per label >= 0
    n_unlabelled: int
    max_label: int
    max_prediction: int

    @property
    def present(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.label_counts)]


def _count_block(labels: np.ndarray, preds: np.ndarray) -> dict[str, Any]:
    lab = np.asarray(labels, dtype=np.int64)
    known = lab[lab >= 0]
    return {"labels": np.bincount(known), "unlabelled": int((lab < 0).sum()),
            "label_max": np.int64(lab.max(initial=-1)),
            "pred_max": np.int64(np.asarray(preds).max(initial=-1))}


def _merge_counts(*parts: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(parts[0])
    for p in parts[1:]:
        a, b = out["labels"], p["labels"]
        size = max(a.size, b.size)
        out = merge({**out, "labels": np.pad(a, (0, size - a.size))},
                    {**p, "labels": np.pad(b, (0, size - b.size))})
    return out


def split_counts(blocks: SplitBlocks) -> SplitCounts:
    """Label counts and the largest label and prediction of a split, by one reduction."""
    from dask import delayed

    if blocks.n == 0:
        return SplitCounts(0, np.zeros(0, np.int64), 0, -1, -1)
    parts = [delayed(_count_block)(lab, pred) for lab, pred in
             zip(blocks.meta_blocks("labels"), blocks.meta_blocks("predictions"), strict=True)]
    r = blocks.client.compute(tree_reduce(parts, _merge_counts)).result()
    return SplitCounts(blocks.n, np.asarray(r["labels"], dtype=np.int64), int(r["unlabelled"]),
                       int(r["label_max"]), int(r["pred_max"]))


def n_classes_of(store: ActivationStore, split: str, counts: SplitCounts) -> int:
    """:meth:`ActivationStore.n_classes` from the split's aggregates (nothing per sample)."""
    width = int(store.outputs(split).shape[1])
    n = 2 if width == 1 else width
    n = max(n, counts.max_label + 1, counts.max_prediction + 1)
    names = store.class_names(split)
    return max(n, len(names)) if names else n


def _mask_block(labels: np.ndarray, preds: np.ndarray, classes: np.ndarray | None,
                only_correct: bool) -> np.ndarray:
    lab = np.asarray(labels, dtype=np.int64)
    mask = np.ones(lab.shape, dtype=bool)
    if classes is not None:
        mask &= np.isin(lab, classes)
    if only_correct:
        mask &= (lab >= 0) & (lab == np.asarray(preds, dtype=np.int64))
    return mask


def _count_mask(mask: np.ndarray) -> dict[str, Any]:
    return {"n": np.int64(mask.sum())}


def masked_rows(values: Any, mask: Any) -> np.ndarray:
    """The rows of ``values`` where ``mask`` is True (all of them when ``mask`` is None): a
    block's part of the fit rows."""
    v = np.asarray(values)
    return v if mask is None else v[np.asarray(mask, dtype=bool)]


def fit_mask(blocks: SplitBlocks, counts: SplitCounts, classes: Iterable[int] | None,
             only_correct: bool) -> tuple[list[Any], list[int]]:
    """The fit rows of a split, per block: delayed boolean masks, and how many rows each keeps.

    Raises the errors of :func:`~nnsig_core.analysis.fit_sample_mask`
    (:class:`MissingLabelsError`, :class:`EmptySelectionError`).
    """
    from dask import delayed

    split = blocks.split
    need = only_correct or classes is not None
    if need and (not blocks.store.has_labels(split) or not counts.label_counts.any()):
        why = "only_correct=True" if only_correct else "a class subset"
        raise MissingLabelsError(
            f"Split {split!r} has no labels, but {why} needs them (and so do class counts). "
            "Capture the split with its labels, or pass only_correct=False (and no classes) "
            "to fit on every sample."
        )
    wanted = None
    where = ""
    if classes is not None:
        wanted = np.array(sorted({int(c) for c in classes}), dtype=np.int64)
        if wanted.size == 0:
            raise EmptySelectionError(
                "classes is empty: give the labels to fit on (e.g. classes=range(5)), "
                "or classes=None for all."
            )
        present = counts.present
        if not set(wanted.tolist()) & set(present):
            raise EmptySelectionError(
                f"No sample of split {split!r} has a label in {wanted.tolist()}; the labels "
                f"present are {present}. Choose classes among those."
            )
        absent = sorted(set(wanted.tolist()) - set(present))
        if absent:
            warn(f"Classes {absent} have no sample in split {split!r}.")
        where = f" among classes {wanted.tolist()}"
    masks = [delayed(_mask_block, pure=True)(lab, pred, wanted, only_correct)
             for lab, pred in zip(blocks.meta_blocks("labels"), blocks.meta_blocks("predictions"),
                                  strict=True)]
    masks = blocks.client.persist(masks)
    sizes = [int(r["n"]) for r in blocks.client.compute(
        [delayed(_count_mask)(m) for m in masks], sync=True)]
    if only_correct and sum(sizes) == 0:
        n_cand = (int(counts.label_counts[wanted[wanted < counts.label_counts.size]].sum())
                  if wanted is not None else counts.n)
        raise EmptySelectionError(
            f"No sample of split {split!r}{where} is classified correctly "
            f"(0 of {n_cand}): is the model trained, and do labels and predictions "
            "use the same class indices? Pass only_correct=False to fit on all samples."
        )
    return masks, sizes


def require_rows(store: ActivationStore, split: str) -> None:
    """Refuse an incomplete split (as the single-process analysis does)."""
    store.require_complete(split)
    if store.n_samples(split) == 0:
        raise StoreError(f"Split {split!r} of {store.location} holds no samples.")
