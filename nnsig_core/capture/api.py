"""Streaming capture: run a model batch by batch and write its activations to a store
(the background writer is :mod:`~nnsig_core.capture.writer`)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core._progress import ProgressBar  # terminal bars only: no notebook widgets
from nnsig_core.capture.batches import is_array_pair, iter_batches, n_available, take
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.hf_datasets import as_capture_data
from nnsig_core.capture.options import DEFAULT_CHUNK_BYTES, DEFAULT_DURABLE, CaptureOptions
from nnsig_core.capture.policy import (
    check_expected,
    check_weights,
    legacy_fingerprints,
    model_fingerprint,
    plan_split,
    resume_label_check,
)
from nnsig_core.capture.repair import Repairs
from nnsig_core.capture.session import CaptureSession
from nnsig_core.protocol import Adapter, ArrayAdapter
from nnsig_core.store import ActivationStore, open_store

log = logging.getLogger("nnsig")


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
    input_columns: str | Sequence[str] | None = None,
) -> ActivationStore:
    """Run ``adapter`` over ``data`` and stream every captured layer into a store.

    Parameters
    ----------
    adapter : Adapter
        A framework adapter (``nnsig_torch.TorchAdapter``,
        ``nnsig_keras.KerasAdapter``, :class:`nnsig_core.ArrayAdapter`).
    data : tuple of (X, y), mapping of arrays, or iterable of batches
        Arrays with one row per sample, cut into batches of ``batch_size``
        (``X`` may be a tuple of positional inputs or a mapping of keyword
        inputs); one mapping of arrays holding the labels too; an iterable of
        ``(inputs, labels[, sample_index])`` or mapping batches (a
        ``DataLoader``); or a Hugging Face ``Dataset`` / ``IterableDataset``,
        read in its format (a ``ClassLabel`` column gives ``class_names``).
        Labels may be ``None``; one-hot labels become class indices; the
        optional ``sample_index`` is stored (by default the running count).
    store : ActivationStore, path, URL or zarr Store
        A local directory (created if missing), an fsspec URL
        (``s3://bucket/run.zarr``, ``memory://...``) or a zarr ``Store``.
    split, batch_size, max_samples, class_names, keep_inputs, resume, overwrite, dtype, compressor, chunk_bytes, predict, progress, durable, allow_other_weights, storage_options
        See :class:`CaptureOptions`.
    batch_axis : int, optional
        The batch axis of the inputs (1 for sequence-first models); the
        adapter's by default, else 0. Labels always have the batch first.
    label_key : str, optional
        The labels' key in mapping data or batches, or a Hugging Face label
        column; by default ``"labels"``, else ``"label"``, else no labels.
    input_columns : str or sequence of str, optional
        A Hugging Face dataset's input columns: one name (a positional input)
        or several (keyword inputs); by default all but labels and text.

    Returns
    -------
    ActivationStore
        The store, with ``split`` complete (with the samples the data gave,
        and an :class:`~nnsig_core.NnsigWarning`, if it ended early).

    Raises
    ------
    CaptureError
        For bad arguments, data or model outputs; the message names the fix.
    StoreError
        The split exists without ``resume`` or ``overwrite``, or the layers
        differ from the store's other splits.
    ClaimError
        Another capture is writing the split; nothing is changed.
    """
    options = CaptureOptions.from_call(locals())
    if not isinstance(adapter, Adapter):
        raise CaptureError(
            f"{type(adapter).__name__} is not an nnsig adapter (it needs framework, run, "
            "model_summary and to_numpy). Wrap your model: nnsig_torch.TorchAdapter(model), "
            "nnsig_keras.KerasAdapter(model), or nnsig_core.ArrayAdapter for precomputed arrays."
        )
    data, hf_class_names = as_capture_data(data, batch_size=options.batch_size,
                                           input_columns=input_columns, label_column=label_key,
                                           mask_given=callable(getattr(adapter, "mask", None)))
    if options.class_names is None and hf_class_names is not None:
        options = dataclasses.replace(options, class_names=hf_class_names)
    batch_axis = _batch_axis(adapter, batch_axis)
    store = open_store(store, mode="a", storage_options=storage_options)
    store.require_writable(f"split {split!r}")
    _capture(store, adapter, data, options, batch_axis, label_key, model_fingerprint(adapter))
    return store


def _capture(store: ActivationStore, adapter: Any, data: Any, o: CaptureOptions,
             batch_axis: int, label_key: str | None, fingerprint: str | None) -> None:
    """:func:`capture` once its arguments are checked and the store is open."""
    split, max_samples = o.split, o.max_samples
    with store.claim(split, break_stale=o.resume) as claim:  # before anything is read or changed
        plan = plan_split(store, o)
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
            check_weights(store, split, fingerprint, plan.existing, o.allow_other_weights,
                          legacy_fingerprints(adapter))
        except CaptureError as exc:
            if plan.existing is None:
                raise
            weights_error = exc  # after the first batch, which tells which layers changed
        n_total = n_available(data, batch_axis, label_key)
        if (n_total is None and max_samples is None and plan.existing is not None
                and plan.existing.get("complete")):
            # Repairing a complete split from data of unknown length (a generator): its
            # recorded size, as max_samples= would say.
            max_samples = int(plan.existing["n_samples"])
        n_expected = n_total if max_samples is None else (
            max_samples if n_total is None else min(max_samples, n_total)
        )
        check_expected(split, plan.existing, n_expected)
        settings = o.settings(batch_axis=batch_axis)
        if not (is_array_pair(data) or isinstance(data, Mapping)):
            given = getattr(data, "batch_size", None)  # a DataLoader's own
            settings["batch_size"] = given if isinstance(given, int) else None
        session = CaptureSession(
            store=store, adapter=adapter, options=o, n_expected=n_expected, settings=settings,
            existing=plan.existing, start=plan.start, claim=claim, fingerprint=fingerprint,
            weights_error=weights_error,
        )
        check = (resume_label_check(store, split, plan.repairs) if plan.existing is not None
                 else None)
        repairs = Repairs(session, plan.repairs) if plan.repairs else None
        batches = iter_batches(data, o.batch_size, plan.start, on_skipped=check,
                               batch_axis=batch_axis, label_key=label_key, repair=repairs)
        _run(session, batches, n_expected, plan.start, max_samples, f"capture {split}",
             o.progress, batch_axis, repairs)


def _run(session: CaptureSession, batches: Any, n_expected: int | None, start: int,
         max_samples: int | None, desc: str, progress: bool, batch_axis: int = 0,
         repairs: Repairs | None = None) -> None:
    """Feed every batch to the session, then complete the split (or abort on any error)."""
    bar = ProgressBar(total=n_expected, initial=start, unit="sample", unit_scale=True,
                      desc=desc, progress=progress, dynamic_ncols=True)
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
        bar.close()  # before the log line of the finished capture
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
    keep_nonfinite: bool = False,
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
        Recorded in the model summary.
    inputs : array-like, optional
        Images to keep as thumbnails (implies ``keep_inputs``).
    keep_nonfinite : bool
        Store NaN and Inf as they are; by default a batch holding one is
        refused (:class:`~nnsig_core.protocol.NonFiniteActivationError`, naming
        the layer and the sample), as the framework adapters do.

    Returns
    -------
    ActivationStore
    """
    adapter = ArrayAdapter(activations, outputs, model_class=model_class, layer_types=layer_types,
                           inputs=inputs, keep_nonfinite=keep_nonfinite)
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
