"""Cutting the user's data into ``(inputs, labels, sample_index)`` batches.

Data is either two arrays ``(X, y)`` sliced into batches, or an iterable of
batches (a ``DataLoader``) whose items are ``(inputs, labels[, sample_index])``.
Inputs may be one array, a tuple or list of per-input arrays, or a mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from nnsig_core.capture.errors import CaptureError

__all__ = [
    "class_indices",
    "is_array_pair",
    "iter_batches",
    "labels_numpy",
    "n_available",
    "take",
]


def is_array_pair(data: Any) -> bool:
    """Whether ``data`` is ``(X, y)``: two arrays (``y`` may be None) rather than batches."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and hasattr(data[0], "shape")
        and (data[1] is None or hasattr(data[1], "__len__"))
    )


def n_available(data: Any) -> int | None:
    """How many samples ``data`` holds, when it can tell (arrays, a DataLoader's sampler)."""
    if is_array_pair(data):
        n = int(data[0].shape[0])
        if data[1] is not None and len(data[1]) != n:
            raise CaptureError(
                f"X has {n} rows but y has {len(data[1])}: one label per sample is needed."
            )
        return n
    ds = getattr(data, "dataset", None)
    if ds is not None and hasattr(ds, "__len__"):
        try:
            sampler = getattr(data, "sampler", None)
            if sampler is not None and hasattr(sampler, "__len__"):
                return int(len(sampler))
            return int(len(ds))
        except TypeError:
            return None
    return None


def iter_batches(
    data: Any,
    batch_size: int,
    start: int = 0,
    on_skipped: Callable[[int, np.ndarray], None] | None = None,
) -> Iterator[tuple[Any, Any, np.ndarray]]:
    """Yield ``(inputs, labels, sample_index)`` from sample ``start`` on.

    ``on_skipped(lo, labels)`` is called with the labels of the samples before
    ``start`` (a resumed capture checks them against the stored ones).
    """
    if is_array_pair(data):
        X, y = data
        n = int(X.shape[0])
        if on_skipped is not None and y is not None and start > 0:
            on_skipped(0, np.asarray(y[:start]))
        for lo in range(start, n, batch_size):
            hi = min(lo + batch_size, n)
            yield X[lo:hi], (None if y is None else y[lo:hi]), np.arange(lo, hi, dtype=np.int64)
        return
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise CaptureError(
            f"data must be (X, y) arrays or an iterable of (inputs, labels) batches "
            f"(a DataLoader), got {type(data).__name__}."
        )
    pos = 0
    for batch in data:
        if isinstance(batch, Mapping) or not isinstance(batch, (tuple, list)) or len(batch) < 1:
            raise CaptureError(
                "Each batch must be an (inputs, labels) pair, got "
                f"{type(batch).__name__}; wrap your data so it yields (inputs, labels)."
            )
        inputs = batch[0]
        labels = batch[1] if len(batch) > 1 else None
        n = _batch_len(inputs)
        if len(batch) > 2:
            index = labels_numpy(batch[2]).astype(np.int64).reshape(-1)
            if len(index) != n:
                raise CaptureError(
                    f"A batch has {n} inputs but {len(index)} sample indices (its third item)."
                )
        else:
            index = np.arange(pos, pos + n, dtype=np.int64)
        if pos + n <= start:
            if on_skipped is not None and labels is not None:
                on_skipped(pos, labels_numpy(labels))
            pos += n
            continue
        if pos < start:
            skip = start - pos
            if on_skipped is not None and labels is not None:
                on_skipped(pos, labels_numpy(labels)[:skip])
            inputs, labels, index = _drop(inputs, skip), _drop(labels, skip), index[skip:]
            pos, n = start, n - skip
        yield inputs, labels, index
        pos += n


def class_indices(labels: np.ndarray) -> np.ndarray:
    """Labels as a flat vector: one-hot rows (n, C>1) become their argmax, (n, 1) is flattened."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return labels.argmax(axis=1)
    return labels.reshape(-1)


def labels_numpy(labels: Any) -> np.ndarray:
    """Labels (or indices) of any framework as a NumPy array (CPU tensors have ``.numpy()``)."""
    to_numpy = getattr(labels, "numpy", None)
    return np.asarray(to_numpy() if callable(to_numpy) else labels)


def _batch_len(inputs: Any) -> int:
    if isinstance(inputs, Mapping):
        return _batch_len(next(iter(inputs.values())))
    if _is_input_sequence(inputs):
        return _batch_len(inputs[0])
    shape = getattr(inputs, "shape", None)
    if shape is not None:
        return int(shape[0])
    return len(inputs)


def take(x: Any, n: int) -> Any:
    """The first ``n`` samples of a batch's inputs or labels (any of their forms)."""
    return _cut(x, slice(None, n))


def _drop(x: Any, n: int) -> Any:
    return _cut(x, slice(n, None))


def _cut(x: Any, rows: slice) -> Any:
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: _cut(v, rows) for k, v in x.items()}
    if _is_input_sequence(x):
        return type(x)(_cut(v, rows) for v in x)
    return x[rows]


def _is_input_sequence(x: Any) -> bool:
    """A tuple or list of per-input arrays (several model inputs), not a list of labels."""
    return isinstance(x, (tuple, list)) and len(x) > 0 and hasattr(x[0], "shape")
