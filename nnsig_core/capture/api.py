"""Streaming capture: run a model batch by batch and write its activations to a store.

The forward passes run in the calling thread; a background writer thread
(:mod:`~nnsig_core.capture.writer`) buffers rows into whole, chunk-aligned
blocks and writes them, so disk I/O overlaps the next forward pass. A bounded
queue between the two keeps peak memory independent of the data set's size.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nnsig_core._util import now_iso, package_version
from nnsig_core.capture.batches import is_array_pair, iter_batches, n_available, take
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.policy import (
    check_arguments,
    check_class_names,
    check_expected,
    check_weights,
    model_fingerprint,
    plan_split,
    resume_label_check,
)
from nnsig_core.capture.repair import Repairs
from nnsig_core.capture.session import CaptureSession
from nnsig_core.protocol import Adapter, ArrayAdapter
from nnsig_core.store import ActivationStore, open_store
from nnsig_core.store.format import TOKENS_SUFFIX, codec_description

log = logging.getLogger("nnsig")

DEFAULT_CHUNK_BYTES = 4 << 20
#: fsync chunk files before a split is marked complete (see ``capture(durable=...)``).
DEFAULT_DURABLE = False


def capture(
    adapter: Adapter,
    data: Any,
    store: ActivationStore | str | os.PathLike[str],
    *,
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
    durable: bool = DEFAULT_DURABLE,
    allow_other_weights: bool | str = False,
    storage_options: dict[str, Any] | None = None,
    batch_axis: int | None = None,
    label_key: str | None = None,
) -> ActivationStore:
    """Run ``adapter`` over ``data`` and stream every captured layer into a store.

    Parameters
    ----------
    adapter : Adapter
        A framework adapter (``nnsig_torch.TorchAdapter``,
        ``nnsig_keras.KerasAdapter``, :class:`nnsig_core.ArrayAdapter`).
    data : tuple of (X, y), mapping of arrays, or iterable of batches
        Two arrays (NumPy, torch tensors...) with one row per sample, sliced
        into batches of ``batch_size``: ``X`` may be a tuple/list of arrays (the
        model's positional inputs) or a mapping (its keyword inputs, e.g.
        ``input_ids`` and ``attention_mask``). Or one mapping of arrays holding
        the labels too (a tokenizer's output with ``labels``). Or an iterable
        of batches such as a ``torch.utils.data.DataLoader``, each an
        ``(inputs, labels[, sample_index])`` tuple or a mapping (keyword
        inputs plus the labels, see ``label_key``). ``y`` (or a batch's
        labels) may be ``None`` when labels are unknown; one-hot labels are
        converted to class indices. The optional third item holds the
        samples' positions in the source data set (stored as
        ``sample_index``; by default the running count).
    store : ActivationStore, path, URL or zarr Store
        Where to write: a local directory (created if missing), an fsspec
        URL (``s3://bucket/run.zarr``, ``gs://...``, ``memory://...``) or a
        zarr ``Store``.
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
    durable : bool
        fsync every chunk file and its directory, and the split's metadata,
        before the split is marked complete, so a complete split survives a
        power cut (local stores; object stores are durable once written).
        Without it a complete split survives a killed process, not a power cut.
    allow_other_weights : bool or str
        The model's weights are fingerprinted (adapters that can) and recorded
        with the split; resuming a split, or adding one to a store, with a model
        whose weights differ is refused unless this is True or a reason
        (recorded with the split, e.g. ``"epoch 5 vs epoch 10"``).
    storage_options : dict, optional
        Options of the URL's fsspec filesystem (endpoint, credentials).
    batch_axis : int, optional
        The batch axis of the inputs (1 for sequence-first models, whose
        inputs are ``(seq, batch, ...)``); the adapter's ``batch_axis`` by
        default (0 when it has none). Labels always have the batch first.
    label_key : str, optional
        The key of the labels in mapping data or batches; by default
        ``"labels"``, else ``"label"``, else no labels.

    Returns
    -------
    ActivationStore
        The store, with ``split`` complete. When the data ends before the
        expected count (``len(DataLoader)``...), the split is complete with
        the samples the data gave, with an :class:`~nnsig_core.NnsigWarning`.

    Raises
    ------
    CaptureError
        For bad arguments, data or model outputs; the message names the fix.
    StoreError
        If the split exists and neither ``resume`` nor ``overwrite`` is set, or
        the model's layers differ from those of the store's other splits.
    ClaimError
        Another capture is writing the split (it is named); nothing is changed.
    """
    codec = check_arguments(adapter, split, resume=resume, overwrite=overwrite, dtype=dtype,
                            batch_size=batch_size, compressor=compressor, max_samples=max_samples)
    batch_axis = _batch_axis(adapter, batch_axis)
    if isinstance(split, str) and split.endswith(TOKENS_SUFFIX):
        raise CaptureError(
            f"Split names ending in {TOKENS_SUFFIX!r} are reserved for the token rows of a "
            f"split (pool='tokens' writes them to '<split>{TOKENS_SUFFIX}'); choose another name."
        )
    class_names = check_class_names(class_names)
    store = open_store(store, mode="a", storage_options=storage_options)
    store.require_writable(f"split {split!r}")
    fingerprint = model_fingerprint(adapter)
    _capture(store, adapter, data, split=split, batch_size=batch_size,
             max_samples=max_samples, class_names=class_names, keep_inputs=keep_inputs,
             resume=resume, overwrite=overwrite, dtype=dtype, codec=codec,
             chunk_bytes=chunk_bytes, predict=predict, progress=progress, durable=durable,
             allow_other_weights=allow_other_weights, batch_axis=batch_axis,
             label_key=label_key, fingerprint=fingerprint)
    return store


def _capture(store: ActivationStore, adapter: Any, data: Any, *, split: str,
             batch_size: int, max_samples: int | None, class_names: list[str] | None,
             keep_inputs: bool, resume: bool, overwrite: bool, dtype: str, codec: Any,
             chunk_bytes: int, predict: Any, progress: bool, durable: bool,
             allow_other_weights: bool | str, batch_axis: int, label_key: str | None,
             fingerprint: str | None) -> None:
    """:func:`capture` once its arguments are checked and the store is open."""
    with store.claim(split, break_stale=resume) as claim:  # before anything is read or changed
        plan = plan_split(store, split, resume=resume, overwrite=overwrite,
                          keep_inputs=keep_inputs, dtype=dtype, max_samples=max_samples)
        if plan.done:
            return
        if plan.existing is not None and plan.existing.get("token_split"):
            raise CaptureError(
                f"Cannot resume split {split!r}: its capture has token-level layers "
                f"({plan.existing['token_split']!r}), whose rows cannot be matched to a restart "
                "point. Capture it again with overwrite=True."
            )
        weights_error = None
        try:
            check_weights(store, split, fingerprint, plan.existing, allow_other_weights)
        except CaptureError as exc:
            if plan.existing is None:
                raise
            weights_error = exc  # after the first batch, which tells which layers changed
        n_total = n_available(data, batch_axis, label_key)
        n_expected = n_total if max_samples is None else (
            max_samples if n_total is None else min(max_samples, n_total)
        )
        check_expected(split, plan.existing, n_expected)
        settings = {
            "batch_size": batch_size if is_array_pair(data) or isinstance(data, Mapping) else None,
            "batch_axis": batch_axis,
            "max_samples": max_samples,
            "dtype": dtype,
            "compressor": codec_description(codec),
            "keep_inputs": bool(keep_inputs),
            "durable": bool(durable),
            "nnsig_version": package_version(),
            "capture_id": uuid.uuid4().hex,  # tells results of an earlier capture apart
            "started": now_iso(),
            "started_ns": time.time_ns(),  # orders splits captured within one second
        }
        if allow_other_weights and isinstance(allow_other_weights, str):
            settings["other_weights"] = allow_other_weights
        session = CaptureSession(
            store=store, split=split, adapter=adapter, n_expected=n_expected,
            class_names=class_names, keep_inputs=keep_inputs, dtype=np.dtype(dtype),
            compressor=codec, chunk_bytes=chunk_bytes, predict=predict or default_predict,
            settings=settings, existing=plan.existing, start=plan.start, claim=claim,
            fingerprint=fingerprint, durable=durable, weights_error=weights_error,
        )
        check = (resume_label_check(store, split, plan.repairs) if plan.existing is not None
                 else None)
        repairs = Repairs(session, plan.repairs) if plan.repairs else None
        batches = iter_batches(data, batch_size, plan.start, on_skipped=check,
                               batch_axis=batch_axis, label_key=label_key, repair=repairs)
        _run(session, batches, n_expected, plan.start, max_samples, f"capture {split}",
             progress, batch_axis, repairs)


def _run(session: CaptureSession, batches: Any, n_expected: int | None, start: int,
         max_samples: int | None, desc: str, progress: bool, batch_axis: int = 0,
         repairs: Repairs | None = None) -> None:
    """Feed every batch to the session, then complete the split (or abort on any error)."""
    bar = tqdm(total=n_expected, initial=start, unit="sample", unit_scale=True, desc=desc,
               disable=None if progress else True, dynamic_ncols=True)
    try:
        done = start
        for inputs, labels, index in batches:
            n = len(index)
            if n == 0:  # an empty batch carries nothing, and does not end the data
                continue
            if max_samples is not None and done + n > max_samples:
                keep = max_samples - done
                inputs, labels = take(inputs, keep, batch_axis), take(labels, keep)
                index = index[:keep]
                n = keep
            session.process(inputs, labels, index)
            done += n
            bar.update(n)
            if max_samples is not None and done >= max_samples:
                break
        if repairs is not None:
            repairs.close(session.split)
            session.repaired = repairs.record()
        session.finish()
    except BaseException:
        if repairs is not None:
            repairs.abort()
        session.abort()
        session.discard_if_empty()
        raise
    finally:
        bar.close()


def capture_arrays(
    activations: Mapping[str, Any],
    outputs: Any,
    labels: Any,
    store: ActivationStore | str | os.PathLike[str],
    *,
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
    store, split, batch_size, **kwargs
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
    return capture(adapter, (np.arange(n), labels), store, split=split,
                   batch_size=batch_size, **kwargs)


def _batch_axis(adapter: Any, batch_axis: int | None) -> int:
    own = getattr(adapter, "batch_axis", None)
    if batch_axis is None:
        batch_axis = 0 if own is None else int(own)
    elif own is not None and int(own) != batch_axis:
        raise CaptureError(
            f"capture(batch_axis={batch_axis}) but the adapter has batch_axis={own}; give it once."
        )
    if batch_axis not in (0, 1):
        raise CaptureError(f"batch_axis must be 0 or 1, got {batch_axis!r}.")
    return batch_axis


def default_predict(outputs: np.ndarray) -> np.ndarray:
    """Predicted class: argmax over the last axis, or ``logit > 0`` for one output."""
    out = np.asarray(outputs)
    if out.ndim == 1 or out.shape[-1] == 1:
        return (out.reshape(len(out)) > 0).astype(np.int64)
    return np.argmax(out.reshape(len(out), -1), axis=1).astype(np.int64)
