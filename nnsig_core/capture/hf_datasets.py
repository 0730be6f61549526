"""Hugging Face datasets as capture data, read batch by batch in their own format (only
the input and label columns; ``datasets`` is never imported)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.capture.errors import CaptureError

_LABEL_DEFAULTS = ("labels", "label")


def is_hf_dataset(data: Any) -> bool:
    """Whether ``data`` is a Hugging Face ``datasets.Dataset`` or ``IterableDataset``."""
    return any(c.__module__.startswith("datasets.") and c.__name__ in ("Dataset", "IterableDataset")
               for c in type(data).__mro__)


class HFBatches:
    """``(inputs, labels)`` batches of a Hugging Face dataset; ``dataset`` is the dataset
    when its length is known (capture's expected count), else None."""

    def __init__(self, data: Any, *, batch_size: int, inputs: list[str], positional: bool,
                 label: str | None) -> None:
        # A label column that is also an input (a model computing its loss) is read once.
        columns = list(dict.fromkeys([*inputs, *([label] if label else [])]))
        self.source = _formatted_columns(data.select_columns(columns))
        self.batch_size = batch_size
        self.inputs = inputs
        self.positional = positional
        self.label = label
        self.dataset = data if _has_len(data) else None
        self.sampler = None

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for batch in self.source.iter(batch_size=self.batch_size):
            inputs = {c: _stacked(batch[c], c) for c in self.inputs}
            labels = None if self.label is None else _stacked(batch[self.label], self.label)
            yield (inputs[self.inputs[0]] if self.positional else inputs), labels


def as_capture_data(data: Any, *, batch_size: int, input_columns: str | Sequence[str] | None,
                    label_column: str | None, mask_given: bool = False
                    ) -> tuple[Any, list[str] | None]:
    """``data`` as capture reads it (a Hugging Face dataset as :class:`HFBatches`), and the
    class names of a ``ClassLabel`` label column (or None). ``mask_given``: the adapter
    computes its mask itself (a callable), so a mask column left out is no loss."""
    if not is_hf_dataset(data):
        if input_columns is not None:
            raise CaptureError(
                f"input_columns names the columns of a Hugging Face dataset, but data is a "
                f"{type(data).__name__}; leave input_columns out for arrays and DataLoaders.")
        return data, None
    columns = list(data.column_names or [])
    features = dict(getattr(data, "features", None) or {})
    if not columns:  # a stream whose columns are unknown until read: its first example tells
        first = next(iter(data.take(1)), None) or {}
        columns = list(first)
        features = {c: _Text() for c, v in first.items() if isinstance(v, str)}
    if label_column is None:
        label = next((c for c in _LABEL_DEFAULTS if c in columns), None)
    elif label_column in columns:
        label = label_column
    else:
        raise CaptureError(f"The dataset has no label column {label_column!r}; its columns are "
                           f"{columns}. Pass label_key=<one of them>, or None for no labels.")
    if input_columns is None:
        inputs = [c for c in columns if c != label and not _is_text(features.get(c))]
        positional = len(inputs) == 1
    else:
        positional = isinstance(input_columns, str)
        inputs = [input_columns] if isinstance(input_columns, str) else list(input_columns)
        unknown = [c for c in inputs if c not in columns]
        if unknown:
            raise CaptureError(f"The dataset has no column {', '.join(map(repr, unknown))}; its "
                               f"columns are {columns}. Pass input_columns=<some of them>.")
    left_out = [c for c in _MASK_COLUMNS if c in columns and c not in inputs]
    if input_columns is not None and left_out and not mask_given:
        # The callable gets the batch as the model does: the column itself, or a dict.
        ids = (f"{inputs[0]}: {inputs[0]}" if positional and inputs[0].isidentifier()
               else f"x: x[{inputs[0]!r}]")
        warn(f"The dataset's column {left_out[0]!r} is not in input_columns, so neither the "
             "model nor nnsig sees it: layers pooled over the tokens (mean, max, last, "
             "token rows) include the padding. Add it to input_columns if the model takes "
             f"it; else give the adapter the mask, e.g. TorchAdapter(model, mask=lambda {ids} "
             "!= PAD_ID) with your padding id.")
    if not inputs:
        raise CaptureError(
            f"No input column: the dataset's columns are {columns} (the label column "
            f"{label!r} and text columns are not inputs). Tokenise the text first "
            "(dataset.map(tokenizer, batched=True)) or pass input_columns=[...].")
    if label is None and label_column is None:
        _warn_of_unnamed_labels(inputs, features)
    names = getattr(features.get(label), "names", None) if label else None
    return (HFBatches(data, batch_size=batch_size, inputs=inputs, positional=positional,
                      label=label), list(names) if names else None)


#: Columns holding a real-token mask (Hugging Face's and Keras Hub's names).
_MASK_COLUMNS = ("attention_mask", "padding_mask")


def _formatted_columns(source: Any) -> Any:
    """``source`` with every one of its columns in its format: a format listing only the
    model's inputs (``set_format("torch", columns=[...])``) would leave the labels out of its
    batches."""
    fmt = getattr(source, "format", None)
    if not isinstance(fmt, dict) or fmt.get("columns") is None:
        return source
    if set(fmt["columns"]) >= set(source.column_names):
        return source
    return source.with_format(fmt.get("type"), columns=list(source.column_names),
                              **dict(fmt.get("format_kwargs") or {}))


def _warn_of_unnamed_labels(inputs: list[str], features: dict[str, Any]) -> None:
    """No ``labels``/``label`` column: an input column of one integer (or class) per example
    is most likely the labels under another name; say so, as for dict batches."""
    like = [c for c in inputs if type(features.get(c)).__name__ == "ClassLabel"
            or (type(features.get(c)).__name__ == "Value" and "int" in str(features[c].dtype))]
    if like and len(like) < len(inputs):
        warn(f"The dataset has no {' or '.join(map(repr, _LABEL_DEFAULTS[::-1]))} column, so "
             f"the split is stored without labels and {like[0]!r} (one integer per example) "
             f"goes to the model as an input. Pass label_key={like[0]!r} if it holds the "
             "labels.")


class _Text:
    dtype = "string"


def _has_len(data: Any) -> bool:
    try:
        len(data)
    except TypeError:
        return False
    return True


def _is_text(feature: Any) -> bool:
    dtype = getattr(feature, "dtype", None)
    return dtype in ("string", "large_string")


def _stacked(values: Any, column: str) -> Any:
    """A batch of one column as one array: tensors and arrays as they come, Python lists
    stacked; values of several shapes are refused."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "O":
        raise _ragged(column)
    if not isinstance(values, list):
        return values
    if values and hasattr(values[0], "shape") and not isinstance(values[0], np.ndarray):
        raise _ragged(column)  # a list of tensors: their shapes differ
    try:
        out = np.asarray([np.asarray(v) for v in values])
    except ValueError as exc:
        raise _ragged(column) from exc
    if out.dtype == object:
        raise _ragged(column)
    return out


def _ragged(column: str) -> CaptureError:
    return CaptureError(
        f"Column {column!r} holds values of different lengths within a batch, which cannot "
        "make one array: pad them to one length (tokenizer(..., padding='max_length', "
        "truncation=True)) or resize the images to one size, e.g. in dataset.map(...).")
