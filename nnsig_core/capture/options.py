"""The options that `capture` and `capture_distributed` share, documented and checked once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from nnsig_core._util import check_name, now_iso, package_version
from nnsig_core.capture.errors import CaptureError
from nnsig_core.store.format import (
    RESERVED_NAMES,
    TOKENS_SUFFIX,
    codec_description,
    resolve_compressor,
)

DEFAULT_CHUNK_BYTES = 4 << 20
#: fsync chunk files before a split is marked complete (see ``CaptureOptions.durable``).
DEFAULT_DURABLE = False


def default_predict(outputs: np.ndarray) -> np.ndarray:
    """Predicted class: argmax over the last axis, or ``logit > 0`` for one output."""
    out = np.asarray(outputs)
    if out.ndim == 1 or out.shape[-1] == 1:
        return (out.reshape(len(out)) > 0).astype(np.int64)
    return np.argmax(out.reshape(len(out), -1), axis=1).astype(np.int64)


@dataclass(frozen=True)
class CaptureOptions:
    """The options of every capture (:func:`~nnsig_core.capture.capture`,
    :func:`~nnsig_core.distributed.capture_distributed`), checked when created.

    Parameters
    ----------
    split : str
        Name of the split (letters, digits, ``_ . -``; names ending in
        ``.tokens`` are reserved).
    batch_size : int
        Rows per forward pass, for array data (an iterable of batches brings
        its own) and the shards of ``capture_distributed``.
    max_samples : int, optional
        Stop after this many samples.
    class_names : sequence of str, optional
        Names of the classes, index = label (one per class, no duplicate).
    keep_inputs : bool
        Also store uint8 thumbnails of image inputs (at most 32 pixels a side)
        for the viewer.
    resume : bool
        Continue an interrupted capture from its last chunk written, and
        capture again the rows whose chunks ``nnsig verify`` finds missing or
        damaged (recorded as ``capture.repaired``). The data must come in the
        same order (checked against the stored labels), with the same
        ``keep_inputs`` and ``dtype``.
    overwrite : bool
        Replace an existing split of that name.
    dtype : {"float32", "float16"}
        Storage type of activations.
    compressor : None, "lz4", "zstd" or a zarr codec
        ``None`` (measured fastest: ``benchmarks/bench_capture.py``) stores
        raw bytes; ``"lz4"`` is Blosc LZ4 with bit shuffle; ``"zstd"`` the
        smallest.
    chunk_bytes : int
        Target size of one chunk of the widest layer; every array of the split
        has the same chunk rows.
    predict : callable, optional
        Maps a batch of outputs to predicted classes (default:
        :func:`default_predict`).
    progress : bool
        Show a tqdm progress bar.
    durable : bool
        fsync the chunks, their directories and the metadata before the split
        is marked complete, so it survives a power cut, not only a killed
        process (local stores).
    allow_other_weights : bool or str
        Resuming a split, or adding one to a store, with a model whose weights
        fingerprint differs is refused unless this is True or a reason
        (recorded with the split, e.g. ``"epoch 5 vs epoch 10"``).
    storage_options : dict, optional
        Options of a store URL's fsspec filesystem (endpoint, credentials).

    Attributes
    ----------
    codec : zarr codec or None
        The codec ``compressor`` names.

    Raises
    ------
    CaptureError
        For a bad option; the message names the fix.
    """

    split: str = "train"
    batch_size: int = 1000
    max_samples: int | None = None
    class_names: Sequence[str] | None = None
    keep_inputs: bool = False
    resume: bool = False
    overwrite: bool = False
    dtype: str = "float32"
    compressor: Any = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    progress: bool = True
    durable: bool = DEFAULT_DURABLE
    allow_other_weights: bool | str = False
    storage_options: dict[str, Any] | None = None
    codec: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            check_name(self.split, "split", RESERVED_NAMES)
        except ValueError as exc:
            raise CaptureError(str(exc)) from None
        if self.split.endswith(TOKENS_SUFFIX):
            raise CaptureError(
                f"Split names ending in {TOKENS_SUFFIX!r} are reserved for the token rows of a "
                f"split (pool='tokens' writes them to '<split>{TOKENS_SUFFIX}'); choose another "
                "name."
            )
        if self.resume and self.overwrite:
            raise CaptureError("Pass resume=True or overwrite=True, not both.")
        if self.dtype not in ("float32", "float16"):
            raise CaptureError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}.")
        if self.batch_size < 1:
            raise CaptureError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise CaptureError(f"max_samples must be >= 1 or None, got {self.max_samples}.")
        try:
            codec = resolve_compressor(self.compressor)
        except ValueError as exc:
            raise CaptureError(str(exc)) from None
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "class_names", _class_names(self.class_names))
        object.__setattr__(self, "predict", self.predict or default_predict)

    @classmethod
    def from_call(cls, arguments: Mapping[str, Any]) -> CaptureOptions:
        """The options among a capture function's arguments (its ``locals()``)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.init})

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The ``capture`` record of a new split: these options, nnsig's version, a capture
        id, the start time and ``extra``."""
        settings = {
            "batch_size": self.batch_size, "max_samples": self.max_samples, "dtype": self.dtype,
            "compressor": codec_description(self.codec), "keep_inputs": bool(self.keep_inputs),
            "durable": bool(self.durable), "nnsig_version": package_version(),
            "capture_id": uuid.uuid4().hex,  # tells results of an earlier capture apart
            "started": now_iso(),
            "started_ns": time.time_ns(),  # orders splits captured within one second
            **extra,
        }
        if isinstance(self.allow_other_weights, str) and self.allow_other_weights:
            settings["other_weights"] = self.allow_other_weights  # the reason given
        return settings


def _class_names(class_names: Any) -> list[str] | None:
    """Class names as strings; duplicates refused."""
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)):
        raise CaptureError(
            f"class_names must be a sequence of names, one per class; got the string "
            f"{class_names!r}. Pass e.g. class_names=['cat', 'dog']."
        )
    names = [str(c) for c in class_names]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if seen.setdefault(name, i) != i:
            raise CaptureError(
                f"class_names has {name!r} twice (classes {seen[name]} and {i}); every class "
                "needs its own name."
            )
    return names
