"""Cutting the user's data (the forms :func:`~nnsig_core.capture.capture` takes) into
``(inputs, labels, sample_index)`` batches, the inputs along ``batch_axis``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.capture.errors import CaptureError

#: The keys tried, in order, for the labels of mapping batches when no ``label_key`` is given.
AUTO_LABEL_KEYS = ("labels", "label")


def _is_labels(y: Any) -> bool:
    if y is None or hasattr(y, "shape"):
        return True
    return isinstance(y, (list, tuple)) and (not y or np.isscalar(y[0]))


def _is_inputs(x: Any) -> bool:
    """An array, or a non-empty (nested) tuple, list or mapping of inputs."""
    if hasattr(x, "shape"):
        return True
    if isinstance(x, Mapping):
        return bool(x) and all(_is_inputs(v) for v in x.values())
    return isinstance(x, (tuple, list)) and bool(x) and all(_is_inputs(v) for v in x)


def is_array_pair(data: Any) -> bool:
    """Whether ``data`` is ``(X, y)`` (arrays, ``y`` possibly None) rather than batches."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and _is_inputs(data[0])
        and _is_labels(data[1])
    )


def _arrays(data: Any, batch_axis: int, label_key: str | None) -> tuple[Any, Any, int] | None:
    """``(X, y, n)`` of array data (``(X, y)`` or a mapping of arrays), else None."""
    if isinstance(data, Mapping) and _is_inputs(data):
        X, y = _pop_labels(data, label_key)
    elif is_array_pair(data):
        X, y = data
    else:
        return None
    return X, y, _batch_len(X, batch_axis)


def _label_key(batch: Mapping[str, Any], label_key: str | None) -> str | None:
    if label_key is not None:
        if label_key not in batch:
            raise CaptureError(
                f"The batch has no {label_key!r} (label_key); its keys are {list(batch)}. "
                "Pass label_key= naming the labels, or give (inputs, labels) pairs."
            )
        return label_key
    return next((k for k in AUTO_LABEL_KEYS if k in batch), None)


def _pop_labels(batch: Mapping[str, Any], label_key: str | None) -> tuple[dict[str, Any], Any]:
    key = _label_key(batch, label_key)
    inputs = {k: v for k, v in batch.items() if k != key}
    if not inputs:
        raise CaptureError(f"The batch holds only its labels ({key!r}); no model inputs.")
    if key is None:
        _warn_of_unnamed_labels(inputs)
    return inputs, (batch[key] if key is not None else None)


def _warn_of_unnamed_labels(inputs: Mapping[str, Any]) -> None:
    """Without a labels key, a 1-D integer entry of the batch's length is most likely the
    labels under another name (model inputs per token or pixel have more axes): say so."""
    lengths = {len(v) for v in inputs.values() if hasattr(v, "shape") and len(v.shape)}
    like = [k for k, v in inputs.items() if len(getattr(v, "shape", ())) == 1
            and "int" in str(getattr(v, "dtype", "")) and lengths == {len(v)}]
    if like and len(like) < len(inputs):
        warn(f"The batches have no {' or '.join(map(repr, AUTO_LABEL_KEYS))} key, so the split "
             f"is stored without labels and {like[0]!r} (one integer per sample) goes to the "
             f"model as an input. Pass label_key={like[0]!r} if it holds the labels.")


def n_available(data: Any, batch_axis: int = 0, label_key: str | None = None) -> int | None:
    """How many samples ``data`` holds, when it can tell (arrays, a list of batches, a
    DataLoader's sampler)."""
    arrays = _arrays(data, batch_axis, label_key)
    if arrays is not None:
        X, y, n = arrays
        if y is not None and len(y) != n:
            rows = f"{n} rows" if batch_axis == 0 else f"{n} samples along axis {batch_axis}"
            raise CaptureError(
                f"X has {rows} but y has {len(y)}: one label per sample is needed"
                + _axis_hint(X, len(y), batch_axis)
            )
        return n
    if isinstance(data, (list, tuple)):  # batches in memory: their lengths tell
        inputs = [_pop_labels(b, label_key)[0] if isinstance(b, Mapping)
                  else b[0] if isinstance(b, (tuple, list)) and b else None for b in data]
        if all(x is not None for x in inputs):
            return sum(_batch_len(x, batch_axis) for x in inputs)
        return None
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


def iter_batches(data: Any, batch_size: int, start: int = 0,
                 on_skipped: Callable[[int, np.ndarray], None] | None = None, batch_axis: int = 0,
                 label_key: str | None = None,
                 repair: Any = None) -> Iterator[tuple[Any, Any, np.ndarray]]:
    """Yield ``(inputs, labels, sample_index)`` from sample ``start`` on.

    ``on_skipped(lo, labels)`` gets the labels of the samples before ``start`` (a resume
    checks them); ``repair`` (:class:`~nnsig_core.capture.repair.Repairs`) is fed the
    batches before ``start`` holding rows it re-captures, cut as the first capture cut them.
    """
    arrays = _arrays(data, batch_axis, label_key)
    if arrays is not None:
        X, y, n = arrays
        if on_skipped is not None and y is not None and start > 0:
            on_skipped(0, np.asarray(y[:start]))
        for lo in range(0, start, batch_size) if repair is not None else ():
            hi = min(lo + batch_size, n)
            if repair.wants(lo, hi):
                repair.feed(_cut(X, slice(lo, hi), batch_axis), None if y is None else y[lo:hi],
                            np.arange(lo, hi, dtype=np.int64), lo)
        for lo in range(start, n, batch_size):
            hi = min(lo + batch_size, n)
            yield (_cut(X, slice(lo, hi), batch_axis), None if y is None else y[lo:hi],
                   np.arange(lo, hi, dtype=np.int64))
        return
    if hasattr(data, "shape"):
        raise CaptureError(
            f"data is one array of shape {tuple(data.shape)}: give (X, y), or (X, None) when "
            "there are no labels."
        )
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise CaptureError(
            f"data must be (X, y) arrays, a mapping of arrays, or an iterable of (inputs, "
            f"labels) batches (a DataLoader), got {type(data).__name__}."
        )
    pos = 0
    for batch in data:
        index = None
        if isinstance(batch, Mapping):
            inputs, labels = _pop_labels(batch, label_key)
        elif isinstance(batch, (tuple, list)) and len(batch) >= 1:
            inputs = batch[0]
            labels = batch[1] if len(batch) > 1 else None
            index = batch[2] if len(batch) > 2 else None
        else:
            raise CaptureError(
                "Each batch must be an (inputs, labels) pair or a mapping of arrays, got "
                f"{type(batch).__name__}; wrap your data so it yields (inputs, labels), or "
                "(inputs, None) without labels."
            )
        if labels is not None and (np.ndim(labels) == 0 if not hasattr(labels, "ndim")
                                   else labels.ndim == 0):
            raise CaptureError(
                f"A batch's labels are one number ({labels!r}): the data gives single examples, "
                "not batches. Batch them: a DataLoader (torch.utils.data.DataLoader(examples, "
                "batch_size=64), with collate_fn= for padding), or (X, y) arrays stacked from "
                "the examples.")
        n = _batch_len(inputs, batch_axis)
        if labels is not None and hasattr(labels, "__len__") and len(labels) != n:
            raise CaptureError(
                f"A batch has {n} inputs (along axis {batch_axis} of its inputs) but "
                f"{len(labels)} labels: one label per sample is needed"
                + _axis_hint(inputs, len(labels), batch_axis)
            )
        if index is not None:
            index = labels_numpy(index).astype(np.int64).reshape(-1)
            if len(index) != n:
                raise CaptureError(
                    f"A batch has {n} inputs but {len(index)} sample indices (its third item)."
                )
        else:
            index = np.arange(pos, pos + n, dtype=np.int64)
        if repair is not None and pos < start and repair.wants(pos, pos + n):
            repair.feed(inputs, labels, index, pos)
        if pos + n <= start:
            if on_skipped is not None and labels is not None:
                on_skipped(pos, labels_numpy(labels))
            pos += n
            continue
        if pos < start:
            skip = start - pos
            if on_skipped is not None and labels is not None:
                on_skipped(pos, labels_numpy(labels)[:skip])
            inputs = _cut(inputs, slice(skip, None), batch_axis)
            labels, index = _cut(labels, slice(skip, None), 0), index[skip:]
            pos, n = start, n - skip
        yield inputs, labels, index
        pos += n


def class_indices(labels: np.ndarray) -> np.ndarray:
    """Labels as a flat vector: one-hot rows (n, C>1) become their argmax, (n, 1) is flattened.

    Rows that are not one-hot or class probabilities (each non-negative, summing to 1) are
    refused: they are most likely a second model input read as the labels.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        sums = labels.sum(axis=1, dtype=np.float64)
        if labels.size and (labels.min() < 0 or not np.allclose(sums, 1.0, atol=1e-3)):
            r = int(np.argmax(np.abs(sums - 1.0)))
            raise CaptureError(
                f"The labels of shape {labels.shape} are not one-hot: row {r} sums to "
                f"{sums[r]:g}. Labels are class indices (n,), or one-hot or probability rows "
                "summing to 1. A batch (a, b, c) is read as (inputs, labels, sample_index), so "
                "a model taking several inputs (input_ids and attention_mask, ...) needs "
                "mapping batches {'input_ids': ..., 'attention_mask': ..., 'labels': ...} or "
                "((a, b), labels)."
            )
        return labels.argmax(axis=1)
    return labels.reshape(-1)


def labels_numpy(labels: Any) -> np.ndarray:
    """Labels (or indices) of any framework as a NumPy array (CPU tensors have ``.numpy()``)."""
    to_numpy = getattr(labels, "numpy", None)
    return np.asarray(to_numpy() if callable(to_numpy) else labels)


def _batch_len(inputs: Any, axis: int = 0) -> int:
    if isinstance(inputs, Mapping):
        return _batch_len(next(iter(inputs.values())), axis)
    if _is_input_sequence(inputs):
        return _batch_len(inputs[0], axis)
    shape = getattr(inputs, "shape", None)
    if shape is not None:
        if len(shape) <= axis:
            raise CaptureError(
                f"An input of shape {tuple(shape)} has no batch axis {axis} (batch_axis)."
            )
        return int(shape[axis])
    return len(inputs)


def _first_shape(inputs: Any) -> tuple[int, ...] | None:
    if isinstance(inputs, Mapping):
        return _first_shape(next(iter(inputs.values()))) if inputs else None
    if _is_input_sequence(inputs):
        return _first_shape(inputs[0])
    shape = getattr(inputs, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def _axis_hint(inputs: Any, n_labels: int, batch_axis: int) -> str:
    """How to fix a labels/inputs length mismatch: the batch axis the labels fit, if any."""
    shape = _first_shape(inputs)
    other = 1 - batch_axis
    if shape is not None and len(shape) > other and shape[other] == n_labels:
        if batch_axis == 0:
            return (f". The labels match axis 1 of the inputs {shape}: a sequence-first model, "
                    "whose inputs are (seq, batch, ...)? Pass batch_axis=1 "
                    "(TorchAdapter(model, batch_axis=1); capture() then cuts along it too).")
        return (f". The labels match axis 0 of the inputs {shape}: the inputs are batch-first; "
                "leave batch_axis at 0.")
    return (" (for sequence-first inputs (seq, batch, ...), pass batch_axis=1)."
            if batch_axis == 0 else ".")


def take(x: Any, n: int, axis: int = 0) -> Any:
    """The first ``n`` samples of a batch's inputs (batch ``axis``) or labels (any of their forms)."""
    return _cut(x, slice(None, n), axis)


def _cut(x: Any, rows: slice, axis: int = 0) -> Any:
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: _cut(v, rows, axis) for k, v in x.items()}
    if _is_input_sequence(x):
        return type(x)(_cut(v, rows, axis) for v in x)
    if axis == 0 or getattr(x, "ndim", 1) <= axis:
        return x[rows]
    return x[(slice(None),) * axis + (rows,)]


def _is_input_sequence(x: Any) -> bool:
    """A (nested) tuple or list of per-input arrays, not a list of labels."""
    return (isinstance(x, (tuple, list)) and len(x) > 0
            and (hasattr(x[0], "shape") or _is_input_sequence(x[0])))
