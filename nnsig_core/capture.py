"""Streaming capture: run a model batch by batch and write its activations to a store.

The forward passes run in the calling thread; a background writer thread
buffers rows into whole, chunk-aligned blocks, compresses and writes them, so
disk I/O overlaps the next forward pass. A bounded queue between the two keeps
peak memory independent of the data set's size.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm

from nnsig_core._chunkio import DirectChunkWriter
from nnsig_core.adapter import Adapter, ArrayAdapter
from nnsig_core.store import (
    RESERVED_NAMES,
    SPLIT_ATTR,
    ActivationStore,
    StoreError,
    layer_key,
    resolve_compressor,
    to_json_safe,
)

__all__ = ["capture", "capture_arrays", "CaptureError"]

log = logging.getLogger("nnsig")

DEFAULT_CHUNK_BYTES = 4 << 20
MAX_THUMBNAIL = 32
DURABLE_EVERY_S = 1.0
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class CaptureError(ValueError):
    """The model, the data or the store cannot be captured as asked."""


# ---------------------------------------------------------------------------- public API
def capture(
    adapter: Adapter,
    data: Any,
    store_or_path: ActivationStore | str | os.PathLike[str],
    split: str = "train",
    batch_size: int = 1000,
    max_samples: int | None = None,
    class_names: Sequence[str] | None = None,
    keep_inputs: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    dtype: str = "float32",
    compressor: Any = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    predict: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
) -> ActivationStore:
    """Run ``adapter`` over ``data`` and stream every captured layer into a store.

    Parameters
    ----------
    adapter : Adapter
        A framework adapter (``nnsig_torch.TorchAdapter``,
        ``nnsig_keras.KerasAdapter``, :class:`nnsig_core.ArrayAdapter`).
    data : tuple of (X, y) or iterable of (inputs, labels) batches
        Either two arrays (NumPy, torch tensors...) with one row per sample,
        sliced into batches of ``batch_size``, or an iterable of batches such
        as a ``torch.utils.data.DataLoader``. ``y`` (or a batch's labels) may
        be ``None`` when labels are unknown; one-hot labels are converted to
        class indices. A batch may carry a third item, the samples' positions
        in the source data set (stored as ``sample_index``; by default the
        running count), e.g. when a subset of the data is captured.
    store_or_path : ActivationStore or path
        Where to write. A path is created if missing.
    split : str
        Name of the split (``"train"``, ``"test"``, any name of letters,
        digits, ``_ . -``).
    batch_size : int
        Rows per forward pass when ``data`` is ``(X, y)``; ignored for iterables.
    max_samples : int, optional
        Stop after this many samples.
    class_names : sequence of str, optional
        Names of the classes, index = label.
    keep_inputs : bool
        Also store small uint8 thumbnails of image inputs (at most
        32 pixels a side, per-sample min-max scaled) for the viewer.
    resume : bool
        Continue an interrupted capture of ``split`` from its last chunk
        recorded as written. The data must come in the same order as before
        (checked against the stored labels), with the same ``keep_inputs``
        and ``dtype``.
    overwrite : bool
        Replace an existing split of that name.
    dtype : {"float32", "float16"}
        Storage type of activations.
    compressor : None, "lz4", "zstd" or a zarr codec
        ``None`` (the default, chosen by measurement: see
        ``benchmarks/bench_capture.py``) stores raw bytes; ``"lz4"`` is Blosc
        LZ4 with bit shuffle, the fastest codec; ``"zstd"`` the smallest.
    chunk_bytes : int
        Target size of one chunk (uncompressed) of the widest layer; every
        array of the split is chunked with the same number of rows.
    predict : callable, optional
        Maps a batch of outputs to predicted classes. Default: ``argmax``
        over the last axis, or ``output > 0`` for a single logit.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ActivationStore
        The store, with ``split`` complete. When the data ends before the
        expected count (``len(DataLoader)``...), the split is complete with
        the samples the data gave, and the shortfall is logged.

    Raises
    ------
    CaptureError
        For bad arguments, data or model outputs; the message names the fix.
    StoreError
        If the split exists and neither ``resume`` nor ``overwrite`` is set, or
        the model's layers differ from those of the store's other splits.
    """
    if not isinstance(adapter, Adapter):
        raise CaptureError(
            f"{type(adapter).__name__} is not an nnsig adapter (it needs framework, run, "
            "model_summary and to_numpy). Wrap your model: nnsig_torch.TorchAdapter(model), "
            "nnsig_keras.KerasAdapter(model), or nnsig_core.ArrayAdapter for precomputed arrays."
        )
    _check_split_name(split)
    if resume and overwrite:
        raise CaptureError("Pass resume=True or overwrite=True, not both.")
    if dtype not in ("float32", "float16"):
        raise CaptureError(f"dtype must be 'float32' or 'float16', got {dtype!r}.")
    if batch_size < 1:
        raise CaptureError(f"batch_size must be >= 1, got {batch_size}.")
    try:
        codec = resolve_compressor(compressor)
    except ValueError as exc:
        raise CaptureError(str(exc)) from None
    if max_samples is not None and max_samples < 1:
        raise CaptureError(f"max_samples must be >= 1 or None, got {max_samples}.")
    if class_names is not None:
        class_names = [str(c) for c in class_names]

    store = (
        store_or_path
        if isinstance(store_or_path, ActivationStore)
        else ActivationStore.open(store_or_path, mode="a")
    )
    if store.read_only:
        raise StoreError("The store is open read-only; open it with mode='a' to capture into it.")

    start = 0
    existing: dict[str, Any] | None = None
    if split in store.splits:
        if overwrite:
            # Replaced only once the first batch has run and matched the other
            # splits, so a capture refused early leaves the old split as it was.
            log.info("Overwriting split %r of %s", split, store.path)
        elif resume:
            existing = store.split_attrs(split)
            if existing.get("complete"):
                log.info("Split %r is already complete; nothing to resume.", split)
                return store
            _check_resume_settings(split, existing, keep_inputs, dtype, max_samples)
            # Restart at a chunk boundary: a partial last chunk may have been written.
            chunk_rows = int(existing["capture"]["chunk_rows"])
            start = int(existing.get("n_written", 0))
            start -= start % chunk_rows
            log.info("Resuming split %r at sample %d", split, start)
        else:
            state = "complete" if store.is_complete(split) else "incomplete"
            raise StoreError(
                f"Split {split!r} already exists in {store.path} ({state}, "
                f"{store.n_samples(split)} samples). Pass overwrite=True to replace it"
                + (", or resume=True to continue it." if state == "incomplete" else ".")
            )
    elif split in store.root and not overwrite:
        raise StoreError(
            f"{split!r} exists in the store but is not a split (a capture that failed while "
            "creating it?); pass overwrite=True to replace it, or choose another split name."
        )

    n_total = _n_available(data)
    n_expected = n_total if max_samples is None else (
        max_samples if n_total is None else min(max_samples, n_total)
    )
    if existing is not None and existing.get("n_expected") not in (None, n_expected):
        raise CaptureError(
            f"Cannot resume split {split!r}: it was started for {existing['n_expected']} "
            f"samples, this data gives {n_expected}. Pass the same data and max_samples, "
            "or overwrite=True."
        )

    settings = {
        "batch_size": batch_size if _is_array_pair(data) else None,
        "max_samples": max_samples,
        "dtype": dtype,
        "compressor": _codec_name(codec),
        "keep_inputs": bool(keep_inputs),
        "nnsig_version": _version(),
        "capture_id": uuid.uuid4().hex,  # tells results computed from an earlier capture apart
        "started": _now(),
    }
    session = _CaptureSession(
        store=store,
        split=split,
        adapter=adapter,
        n_expected=n_expected,
        class_names=class_names,
        keep_inputs=keep_inputs,
        dtype=np.dtype(dtype),
        compressor=codec,
        chunk_bytes=chunk_bytes,
        predict=predict or default_predict,
        settings=settings,
        existing=existing,
        start=start,
    )
    batches = _iter_batches(data, batch_size, start, store if existing is not None else None, split)
    bar = tqdm(
        total=n_expected,
        initial=start,
        unit="sample",
        unit_scale=True,
        desc=f"capture {split}",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        done = start
        for inputs, labels, index in batches:
            n = len(index)
            if n == 0:  # an empty batch carries nothing, and does not end the data
                continue
            if max_samples is not None and done + n > max_samples:
                keep = max_samples - done
                inputs, labels, index = _take(inputs, keep), _take(labels, keep), index[:keep]
                n = keep
            session.process(inputs, labels, index)
            done += n
            bar.update(n)
            if max_samples is not None and done >= max_samples:
                break
        session.finish()
    except BaseException:
        session.abort()
        raise
    finally:
        bar.close()
    return store


def capture_arrays(
    activations: Mapping[str, Any],
    outputs: Any,
    labels: Any,
    store_or_path: ActivationStore | str | os.PathLike[str],
    split: str = "train",
    model_class: str = "unknown",
    layer_types: Mapping[str, str] | None = None,
    inputs: Any = None,
    batch_size: int = 4096,
    **kwargs: Any,
) -> ActivationStore:
    """Write activations computed elsewhere (any framework) into a store.

    Parameters
    ----------
    activations : mapping of str to array-like
        Layer name to ``(n_samples, *unit_shape)`` arrays, in model order.
    outputs : array-like
        ``(n_samples, n_outputs)`` logits or scores.
    labels : array-like or None
        ``(n_samples,)`` true classes.
    store_or_path, split, batch_size, **kwargs
        As for :func:`capture`.
    model_class, layer_types
        Recorded in the store's model summary.
    inputs : array-like, optional
        Images to keep as thumbnails (``keep_inputs`` is then implied).

    Returns
    -------
    ActivationStore
    """
    adapter = ArrayAdapter(activations, outputs, model_class=model_class, layer_types=layer_types,
                           inputs=inputs)
    n = adapter.n_samples
    if labels is not None and len(labels) != n:
        raise CaptureError(f"labels has {len(labels)} rows but outputs has {n}.")
    if inputs is not None:
        kwargs["keep_inputs"] = True
    return capture(adapter, (np.arange(n), labels), store_or_path, split=split,
                   batch_size=batch_size, **kwargs)


def default_predict(outputs: np.ndarray) -> np.ndarray:
    """Predicted class: argmax over the last axis, or ``logit > 0`` for one output."""
    out = np.asarray(outputs)
    if out.ndim == 1 or out.shape[-1] == 1:
        return (out.reshape(len(out)) > 0).astype(np.int64)
    return np.argmax(out.reshape(len(out), -1), axis=1).astype(np.int64)


# ---------------------------------------------------------------------------- data handling
def _is_array_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and hasattr(data[0], "shape")
        and (data[1] is None or hasattr(data[1], "__len__"))
    )


def _n_available(data: Any) -> int | None:
    if _is_array_pair(data):
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


def _iter_batches(
    data: Any, batch_size: int, start: int, store: ActivationStore | None, split: str
) -> Iterator[tuple[Any, Any, np.ndarray]]:
    """Yield ``(inputs, labels, sample_index)`` from ``start`` on."""
    if _is_array_pair(data):
        X, y = data
        n = int(X.shape[0])
        if store is not None and y is not None and start > 0:
            _check_resume_labels(store, split, 0, np.asarray(y[:start]))
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
            index = _labels_numpy(batch[2]).astype(np.int64).reshape(-1)
            if len(index) != n:
                raise CaptureError(
                    f"A batch has {n} inputs but {len(index)} sample indices (its third item)."
                )
        else:
            index = np.arange(pos, pos + n, dtype=np.int64)
        if pos + n <= start:
            if store is not None and labels is not None:
                _check_resume_labels(store, split, pos, _labels_numpy(labels))
            pos += n
            continue
        if pos < start:
            skip = start - pos
            if store is not None and labels is not None:
                _check_resume_labels(store, split, pos, _labels_numpy(labels)[:skip])
            inputs, labels, index = _drop(inputs, skip), _drop(labels, skip), index[skip:]
            pos, n = start, n - skip
        yield inputs, labels, index
        pos += n


def _class_indices(labels: np.ndarray) -> np.ndarray:
    """Labels as a flat vector: one-hot rows (n, C>1) become their argmax, (n, 1) is flattened."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return labels.argmax(axis=1)
    return labels.reshape(-1)


def _check_resume_settings(
    split: str, existing: dict[str, Any], keep_inputs: bool, dtype: str, max_samples: int | None
) -> None:
    before = existing.get("capture") or {}
    problems = []
    if bool(before.get("keep_inputs")) != bool(keep_inputs):
        problems.append(f"keep_inputs was {bool(before.get('keep_inputs'))}")
    if before.get("dtype") not in (None, dtype):
        problems.append(f"dtype was {before.get('dtype')!r}")
    written = int(existing.get("n_written", 0))
    if max_samples is not None and max_samples < written:
        problems.append(f"{written} samples are already written but max_samples is {max_samples}")
    if problems:
        raise CaptureError(
            f"Cannot resume split {split!r}: {'; '.join(problems)}. Resume with the settings "
            "of the interrupted capture, or pass overwrite=True."
        )


def _check_resume_labels(store: ActivationStore, split: str, lo: int, labels: np.ndarray) -> None:
    stored = np.asarray(store._meta(split, "labels")[lo : lo + len(labels)])
    labels = _class_indices(labels)
    if not np.array_equal(stored, labels.astype(np.int64)):
        raise CaptureError(
            f"Cannot resume split {split!r}: the labels of samples {lo}..{lo + len(labels) - 1} "
            "differ from those already stored, so the data is not in the same order as the "
            "interrupted capture. Use the same data without shuffling, or overwrite=True."
        )


def _batch_len(inputs: Any) -> int:
    if isinstance(inputs, Mapping):
        return _batch_len(next(iter(inputs.values())))
    if _is_input_sequence(inputs):
        return _batch_len(inputs[0])
    shape = getattr(inputs, "shape", None)
    if shape is not None:
        return int(shape[0])
    return len(inputs)


def _take(x: Any, n: int) -> Any:
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: _take(v, n) for k, v in x.items()}
    if _is_input_sequence(x):
        return type(x)(_take(v, n) for v in x)
    return x[:n]


def _drop(x: Any, n: int) -> Any:
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: _drop(v, n) for k, v in x.items()}
    if _is_input_sequence(x):
        return type(x)(_drop(v, n) for v in x)
    return x[n:]


def _is_input_sequence(x: Any) -> bool:
    """A tuple or list of per-input arrays (several model inputs), not a list of labels."""
    return isinstance(x, (tuple, list)) and len(x) > 0 and hasattr(x[0], "shape")


def _labels_numpy(labels: Any) -> np.ndarray:
    to_numpy = getattr(labels, "numpy", None)  # CPU tensors of any framework
    return np.asarray(to_numpy() if callable(to_numpy) else labels)


def _check_split_name(split: str) -> None:
    if not isinstance(split, str) or not _SPLIT_NAME.match(split) or split in RESERVED_NAMES:
        raise CaptureError(
            f"Invalid split name {split!r}: use letters, digits, '_', '.', '-' "
            f"(not starting with a symbol), and not one of {sorted(RESERVED_NAMES)}."
        )


# ---------------------------------------------------------------------------- the session
class _CaptureSession:
    """Per-capture state: creates the arrays on the first batch, feeds the writer."""

    def __init__(
        self,
        *,
        store: ActivationStore,
        split: str,
        adapter: Adapter,
        n_expected: int | None,
        class_names: list[str] | None,
        keep_inputs: bool,
        dtype: np.dtype,
        compressor: Any,
        chunk_bytes: int,
        predict: Callable[[np.ndarray], np.ndarray],
        settings: dict[str, Any],
        existing: dict[str, Any] | None,
        start: int,
    ) -> None:
        self.store = store
        self.split = split
        self.adapter = adapter
        self.n_expected = n_expected
        self.class_names = class_names
        self.keep_inputs = keep_inputs
        self.dtype = dtype
        self.compressor = compressor
        self.chunk_bytes = chunk_bytes
        self.predict = predict
        self.settings = settings
        self.existing = existing
        self.start = start
        self.writer: _ChunkWriter | None = None
        self._last_durable = time.monotonic()
        self.batch_rows: int | None = None
        self.layer_names: list[str] = []
        self.info: dict[str, Any] = {}
        self.has_labels: bool | None = None if existing is None else existing.get("has_labels")

    # -- per batch
    def process(self, inputs: Any, labels: Any, index: np.ndarray) -> None:
        n = len(index)
        outputs, acts = self.adapter.run(inputs)
        outputs = np.asarray(outputs)
        if outputs.ndim == 1:
            outputs = outputs[:, None]
        if outputs.shape[0] != n:
            raise CaptureError(
                f"The model returned {outputs.shape[0]} output rows for a batch of {n} samples."
            )
        outputs = outputs.reshape(n, -1)
        if labels is None:
            if self.has_labels:
                raise CaptureError("Some batches have labels and others do not.")
            self.has_labels = False
            lab = np.full(n, -1, dtype=np.int64)
        else:
            if self.has_labels is False:
                raise CaptureError("Some batches have labels and others do not.")
            self.has_labels = True
            lab = _class_indices(self.adapter.to_numpy(labels))
            if lab.shape[0] != n:
                raise CaptureError(f"A batch has {n} inputs but {lab.shape[0]} labels.")
            if not np.issubdtype(lab.dtype, np.integer):
                if np.issubdtype(lab.dtype, np.floating) and np.all(lab == np.round(lab)):
                    lab = lab.astype(np.int64)
                else:
                    raise CaptureError(
                        f"Labels must be integer class indices (or one-hot), got dtype {lab.dtype}."
                    )
            lab = lab.astype(np.int64, copy=False)
        pred = np.asarray(self.predict(outputs)).astype(np.int64).reshape(-1)
        if pred.shape[0] != n:
            raise CaptureError("predict(outputs) must return one class per sample.")

        if self.writer is None:
            self.batch_rows = n
            self._create(acts, outputs, inputs)
        assert self.writer is not None
        if list(acts.keys()) != self.layer_names:
            raise CaptureError(
                f"The adapter returned layers {list(acts.keys())} for this batch but "
                f"{self.layer_names} for the first one; captured layers must not change."
            )
        rows: dict[str, np.ndarray] = {}
        for name, key in zip(self.layer_names, self.keys, strict=False):
            a = np.asarray(acts[name])
            if a.shape[0] != n or a.shape[1:] != self.shapes[name]:
                raise CaptureError(
                    f"Layer {name!r} gave shape {a.shape} for a batch of {n}; expected "
                    f"({n}, {', '.join(map(str, self.shapes[name]))}). Inputs of varying size "
                    "need pooling (e.g. TorchAdapter(pool='mean'))."
                )
            rows[key] = a.astype(self.dtype, copy=False)
        if outputs.shape[1] != self.n_outputs:
            raise CaptureError(f"Outputs changed width from {self.n_outputs} to {outputs.shape[1]}.")
        rows["outputs"] = outputs.astype(np.float32, copy=False)
        rows["labels"] = lab
        rows["predictions"] = pred
        rows["sample_index"] = index
        if self.keep_inputs:
            rows["inputs"] = self._thumbs(inputs, index)
        self.writer.submit(rows)

    def _thumbs(self, inputs: Any, index: np.ndarray) -> np.ndarray:
        batch_images = getattr(self.adapter, "batch_images", None)  # optional in the protocol
        if callable(batch_images):
            raw = np.asarray(batch_images(inputs))
        else:
            if isinstance(inputs, (Mapping, tuple, list)):
                raise CaptureError("keep_inputs=True needs a single input array per batch.")
            raw = np.asarray(self.adapter.to_numpy(inputs))
        return make_thumbnails(raw)

    # -- array creation
    def _create(self, acts: Mapping[str, np.ndarray], outputs: np.ndarray, inputs: Any) -> None:
        if not acts:
            raise CaptureError("The adapter captured no layer; select at least one layer.")
        self.layer_names = list(acts.keys())
        self.keys = [layer_key(n) for n in self.layer_names]
        if len(set(self.keys)) != len(self.keys):
            raise CaptureError(f"Layer names collide once escaped: {self.layer_names}.")
        self.shapes = {n: tuple(int(s) for s in np.shape(a)[1:]) for n, a in acts.items()}
        self.n_outputs = int(outputs.shape[1])
        summary = to_json_safe(self.adapter.model_summary())
        by_name = {d.get("name"): d for d in summary.get("layers", [])}
        layers = []
        for name, key in zip(self.layer_names, self.keys, strict=False):
            meta = dict(by_name.get(name, {}))
            meta.update(
                name=name,
                key=key,
                shape=list(self.shapes[name]),
                dtype=self.dtype.name,
            )
            meta.setdefault("type", "unknown")
            meta.setdefault("parameters", 0)
            layers.append(meta)
        self._check_compatible(layers)

        widest = max(
            [int(np.prod(s, dtype=np.int64)) * self.dtype.itemsize for s in self.shapes.values()]
            + [self.n_outputs * 4]
        )
        chunk_rows = _chunk_rows(self.chunk_bytes, widest, self.batch_rows)
        g = self.store.root
        if self.existing is not None:
            group = g[self.split]
            chunk_rows = int(self.existing["capture"]["chunk_rows"])
            self.info = dict(self.existing, n_expected=self.n_expected)
            arrays = {k: group[k] for k in [*self.keys, "outputs", "labels", "predictions", "sample_index"]}
            if self.keep_inputs:  # the settings were checked against the interrupted capture
                arrays["inputs"] = group["inputs"]
        else:
            tshape: tuple[int, ...] = ()
            if self.keep_inputs:  # before anything is created: non-image inputs fail here
                tshape = self._thumbs(inputs, np.arange(self.start, self.start + 1)).shape[1:]
            if self.split in g:  # overwrite=True: the old split goes only now
                del g[self.split]
            group = g.create_group(self.split)
            try:
                arrays = self._create_arrays(group, chunk_rows, tshape)
            except BaseException:
                del g[self.split]  # never leave a group without split metadata
                raise
            self.settings["chunk_rows"] = chunk_rows
            self.info = {
                "complete": False,
                "n_written": 0,
                "n_samples": 0,
                "n_expected": self.n_expected,
                "framework": getattr(self.adapter, "framework", "unknown"),
                "model": summary,
                "layers": layers,
                "class_names": self.class_names,
                "has_labels": bool(self.has_labels),
                "capture": self.settings,
            }
            group.attrs[SPLIT_ATTR] = to_json_safe(self.info)
        self.group = group
        self.writer = _ChunkWriter(
            arrays=arrays,
            chunk_rows=chunk_rows,
            start_row=self.start,
            on_durable=self._durable,
        )

    def _create_arrays(
        self, group: zarr.Group, chunk_rows: int, tshape: tuple[int, ...]
    ) -> dict[str, zarr.Array]:
        n0 = self.n_expected or 0
        arrays = {}
        for name, key in zip(self.layer_names, self.keys, strict=False):
            shape = self.shapes[name]
            arrays[key] = group.create_array(
                key,
                shape=(n0, *shape),
                chunks=(chunk_rows, *shape),
                dtype=self.dtype,
                compressors=self.compressor,
                fill_value=0,
                dimension_names=("sample", *_unit_dims(key, len(shape))),
                attributes={"layer": name},
            )
        arrays["outputs"] = group.create_array(
            "outputs", shape=(n0, self.n_outputs), chunks=(chunk_rows, self.n_outputs),
            dtype="float32", compressors=self.compressor, fill_value=0,
            dimension_names=("sample", "output"),
        )
        for key in ("labels", "predictions", "sample_index"):
            arrays[key] = group.create_array(
                key, shape=(n0,), chunks=(chunk_rows,), dtype="int64",
                compressors=self.compressor, fill_value=-1, dimension_names=("sample",),
            )
        if self.keep_inputs:
            arrays["inputs"] = group.create_array(
                "inputs", shape=(n0, *tshape), chunks=(chunk_rows, *tshape), dtype="uint8",
                compressors=self.compressor, fill_value=0,
                dimension_names=("sample", *("input_h", "input_w", "input_rgb")[: len(tshape)]),
            )
        return arrays

    def _check_compatible(self, layers: list[dict[str, Any]]) -> None:
        mine = {d["name"]: tuple(d["shape"]) for d in layers}
        for other in self.store.splits:
            if other == self.split and self.existing is None:
                continue
            theirs = {d["name"]: tuple(d["shape"]) for d in self.store.layer_info(other)}
            if list(mine) == list(theirs) and mine == theirs:
                continue
            problems = []
            missing = [n for n in theirs if n not in mine]
            extra = [n for n in mine if n not in theirs]
            if missing:
                problems.append(f"layers missing from this model: {missing}")
            if extra:
                problems.append(f"layers not in split {other!r}: {extra}")
            for n in mine:
                if n in theirs and mine[n] != theirs[n]:
                    problems.append(f"layer {n!r} has shape {mine[n]} here but {theirs[n]} in {other!r}")
            if not problems:
                problems.append("the layers come in a different order")
            raise StoreError(
                f"This model does not match split {other!r} of the store "
                f"({'; '.join(problems)}). Capture the same layers of the same model, "
                "or use a new store."
            )

    def _durable(self, n_written: int) -> None:
        # Rewriting the group's metadata costs milliseconds, so the durable count
        # is recorded about once a second; it is a lower bound, which is all a
        # resumed capture needs (it rewrites from there).
        now = time.monotonic()
        if now - self._last_durable < DURABLE_EVERY_S:
            return
        self._last_durable = now
        self.info["n_written"] = n_written
        self.info["n_samples"] = n_written
        self.group.attrs[SPLIT_ATTR] = to_json_safe(self.info)

    # -- end
    def finish(self) -> None:
        if self.writer is None:
            if self.existing is not None and self.start > 0:
                # Interrupted after its last chunk was written: only the end was missing.
                self._complete_as_is()
                return
            raise CaptureError("The data yielded no samples; nothing was captured.")
        total = self.writer.close()
        if self.n_expected is not None and total < self.n_expected:
            log.warning("The data ended at %d of %d expected samples; the split holds %d.",
                        total, self.n_expected, total)
            for arr in self.writer.arrays.values():
                arr.resize((total, *arr.shape[1:]))
        self.info.update(
            complete=True,
            n_written=total,
            n_samples=total,
            n_expected=self.n_expected if self.n_expected is not None else total,
            has_labels=bool(self.has_labels),
        )
        self.info["capture"] = dict(self.info["capture"], finished=_now())
        self.group.attrs[SPLIT_ATTR] = to_json_safe(self.info)
        log.info("Captured %d samples of split %r into %s", total, self.split, self.store.path)

    def _complete_as_is(self) -> None:
        group = self.store.root[self.split]
        total = self.start
        for _, arr in group.arrays():
            if arr.shape[0] != total:
                arr.resize((total, *arr.shape[1:]))
        self.group = group
        self.info = dict(self.existing or {})
        self.info.update(complete=True, n_written=total, n_samples=total,
                         n_expected=self.n_expected if self.n_expected is not None else total)
        self.info["capture"] = dict(self.info.get("capture") or {}, finished=_now())
        group.attrs[SPLIT_ATTR] = to_json_safe(self.info)
        log.info("Split %r had all its %d samples written; marked complete.", self.split, total)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _chunk_rows(chunk_bytes: int, row_bytes: int, batch_rows: int | None) -> int:
    """Rows per chunk: about ``chunk_bytes`` of the widest array.

    When a batch is within a factor of four of that size, the chunk is exactly
    one batch, so batches are written without being copied into a buffer.
    """
    rows = int(max(1, min(65536, chunk_bytes // max(row_bytes, 1))))
    if batch_rows and rows // 4 <= batch_rows <= rows * 4:
        return batch_rows
    return rows


def _unit_dims(key: str, ndim: int) -> tuple[str, ...]:
    if ndim == 1:
        return (f"{key}_unit",)
    return tuple(f"{key}_dim{i}" for i in range(ndim))


# ---------------------------------------------------------------------------- the writer
class _ChunkWriter:
    """Background writer: buffers rows into whole chunks and writes them in order.

    ``submit`` blocks when two batches are already waiting, which bounds
    memory. Only whole chunks are written until ``close``, so the durable
    count reported through ``on_durable`` is always a multiple of the chunk
    length until the last, partial chunk; a resumed capture restarts there.
    """

    def __init__(
        self,
        arrays: dict[str, zarr.Array],
        chunk_rows: int,
        start_row: int,
        on_durable: Callable[[int], None],
        max_pending: int = 2,
    ) -> None:
        self.arrays = arrays
        self.chunk_rows = chunk_rows
        self.on_durable = on_durable
        self.written = start_row
        self.direct = {k: DirectChunkWriter.for_array(a) for k, a in arrays.items()}
        self.buffers = {
            k: np.empty((chunk_rows, *a.shape[1:]), dtype=a.dtype) for k, a in arrays.items()
        }
        self.fill = 0
        self.queue: queue.Queue[dict[str, np.ndarray] | None] = queue.Queue(max_pending)
        self.error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="nnsig-writer", daemon=True)
        self.thread.start()

    def submit(self, rows: dict[str, np.ndarray]) -> None:
        while True:
            if self.error is not None:
                raise CaptureError(f"Writing to the store failed: {self.error}") from self.error
            try:
                self.queue.put(rows, timeout=0.5)
                return
            except queue.Full:
                continue

    def _loop(self) -> None:
        try:
            while True:
                rows = self.queue.get()
                if rows is None or self.stopping:
                    return
                self._append(rows)
        except BaseException as exc:  # surfaced in submit/close
            self.error = exc

    def _append(self, rows: dict[str, np.ndarray]) -> None:
        n = len(next(iter(rows.values())))
        pos = 0
        while pos < n:
            if self.fill == 0 and n - pos >= self.chunk_rows:
                # Whole chunks straight from the batch, no copy into the buffer.
                m = (n - pos) // self.chunk_rows * self.chunk_rows
                self._write({k: v[pos : pos + m] for k, v in rows.items()}, m)
                pos += m
                continue
            take = min(self.chunk_rows - self.fill, n - pos)
            for k, v in rows.items():
                self.buffers[k][self.fill : self.fill + take] = v[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.chunk_rows:
                self._write(self.buffers, self.chunk_rows)
                self.fill = 0

    def _write(self, blocks: Mapping[str, np.ndarray], m: int) -> None:
        lo, hi = self.written, self.written + m
        for k, arr in self.arrays.items():
            if arr.shape[0] < hi:
                arr.resize((hi, *arr.shape[1:]))
            direct = self.direct[k]
            if direct is not None:
                direct.write(lo, blocks[k][:m])
            else:
                arr[lo:hi] = blocks[k][:m]
        self.written = hi
        self.on_durable(hi)

    def close(self) -> int:
        while self.error is None and self.thread.is_alive():
            try:  # a writer that died with the queue full would never take a blocking put
                self.queue.put(None, timeout=0.5)
                break
            except queue.Full:
                continue
        self.thread.join()
        if self.error is not None:
            raise CaptureError(f"Writing to the store failed: {self.error}") from self.error
        if self.fill:
            try:
                self._write(self.buffers, self.fill)
            except OSError as exc:
                raise CaptureError(f"Writing to the store failed: {exc}") from exc
            self.fill = 0
        return self.written

    def abort(self) -> None:
        self.stopping = True
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        self.thread.join()  # stops after the chunk it is writing: nothing may write after us


# ---------------------------------------------------------------------------- thumbnails
def make_thumbnails(x: np.ndarray, max_side: int = MAX_THUMBNAIL) -> np.ndarray:
    """Turn a batch of images into uint8 thumbnails of at most ``max_side`` pixels a side.

    Accepts ``(n, h, w)``, ``(n, 1|3, h, w)``, ``(n, h, w, 1|3)`` and flat
    ``(n, s*s)`` inputs (reshaped to ``s x s``). Each sample is min-max scaled
    to 0-255 unless it is already uint8; sides are reduced by block averaging.
    Returns ``(n, h', w')`` for grey images and ``(n, h', w', 3)`` for colour.
    """
    x = np.asarray(x)
    n = x.shape[0]
    if x.ndim == 2:
        side = int(math.isqrt(x.shape[1]))
        if side * side != x.shape[1]:
            raise CaptureError(
                f"keep_inputs=True needs image-like inputs; got flat inputs of width {x.shape[1]}, "
                "which is not a square image."
            )
        x = x.reshape(n, side, side)
    elif x.ndim == 4:
        if x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
            x = np.moveaxis(x, 1, -1)
        elif x.shape[3] not in (1, 3):
            raise CaptureError(f"keep_inputs=True: cannot read {x.shape[1:]} inputs as images.")
        if x.shape[-1] == 1:
            x = x[..., 0]
    elif x.ndim != 3:
        raise CaptureError(f"keep_inputs=True: cannot read inputs of shape {x.shape[1:]} as images.")
    if x.dtype != np.uint8:
        xf = x.astype(np.float32)
        axes = tuple(range(1, xf.ndim))
        lo = xf.min(axis=axes, keepdims=True)
        hi = xf.max(axis=axes, keepdims=True)
        x = np.round((xf - lo) / np.maximum(hi - lo, 1e-12) * 255).astype(np.uint8)
    h, w = x.shape[1], x.shape[2]
    f = max(1, math.ceil(max(h, w) / max_side))
    if f > 1:
        h2, w2 = h // f, w // f
        x = x[:, : h2 * f, : w2 * f].reshape(n, h2, f, w2, f, *x.shape[3:]).mean(axis=(2, 4))
        x = np.round(x).astype(np.uint8)
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------- small helpers
def _codec_name(compressor: Any) -> Any:
    """A JSON description of the codec, recorded in the capture settings."""
    if compressor is None:
        return None
    to_dict = getattr(compressor, "to_dict", None)
    return to_dict() if callable(to_dict) else repr(compressor)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nnsig")
    except Exception:
        return "unknown"

