"""A fixed probe set captured at checkpoints of a training run, one split per checkpoint
(``docs/design.md``, "The probe")."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from nnsig_core._util import now_iso
from nnsig_core.capture.api import capture
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.policy import model_fingerprint
from nnsig_core.protocol import Adapter
from nnsig_core.store import ActivationStore, open_store

log = logging.getLogger("nnsig")

#: The key of a checkpoint's record in its split's attributes.
CHECKPOINT_KEY = "checkpoint"
DEFAULT_PREFIX = "step"
_DIGITS = 8


def checkpoint_split(step: int, prefix: str = DEFAULT_PREFIX) -> str:
    """The split name of the checkpoint at ``step``: ``"step_00000100"``."""
    if int(step) < 0:
        raise CaptureError(f"a checkpoint's step must be >= 0, not {step}")
    return f"{prefix}_{int(step):0{_DIGITS}d}"


def list_checkpoints(store: ActivationStore | str | os.PathLike[str], *,
                     prefix: str | None = None) -> list[dict[str, Any]]:
    """The checkpoints recorded in ``store``, in step order.

    Parameters
    ----------
    store : ActivationStore or path
    prefix : str, optional
        Only the checkpoints whose split starts with ``<prefix>_``.

    Returns
    -------
    list of dict
        ``{"split", "step", "epoch", "fingerprint", "seconds", "captured"}`` of
        each complete split with a checkpoint record.
    """
    store = open_store(store)
    out = []
    for split in store.splits:
        if prefix is not None and not split.startswith(prefix + "_"):
            continue
        rec = store.split_attrs(split).get(CHECKPOINT_KEY)
        if not rec or not store.is_complete(split):
            continue
        out.append({"split": split, **rec})
    out.sort(key=lambda r: (int(r["step"]), r["split"]))
    return out


class Schedule:
    """When a checkpoint is due: before training, every N epochs, every N steps (the training
    callbacks' ``every_n_epochs``, ``every_n_steps`` and ``at_start``)."""

    def __init__(self, every_n_epochs: int | None = 1, every_n_steps: int | None = None,
                 at_start: bool = True) -> None:
        for name, v in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps)):
            if v is not None and int(v) < 1:
                raise ValueError(f"{name} must be >= 1 or None, not {v}")
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.at_start = bool(at_start)

    def epoch_due(self, epochs_done: int) -> bool:
        """Whether a checkpoint is due after ``epochs_done`` whole epochs."""
        n = self.every_n_epochs
        return n is not None and n > 0 and epochs_done % int(n) == 0

    def step_due(self, step: int) -> bool:
        """Whether a checkpoint is due after optimiser step ``step``."""
        n = self.every_n_steps
        return n is not None and n > 0 and step > 0 and step % int(n) == 0


class Probe:
    """A fixed set of samples captured at checkpoints of a training run into one store.

    Parameters
    ----------
    data : tuple of (X, y), mapping of arrays, or iterable of batches
        The probe set, as :func:`~nnsig_core.capture.capture` takes it: the same
        samples in the same order at every checkpoint.
    store : ActivationStore, path or URL
        The store every checkpoint goes into.
    make_adapter : callable
        ``make_adapter(model) -> Adapter``; called once per model object.
    prefix : str
        Split names are ``<prefix>_<step>``.
    batch_size : int
        Rows per forward pass for array data.
    class_names : sequence of str, optional
    keep_inputs : bool
        Keep thumbnails of image inputs.
    **options
        Passed on to :func:`~nnsig_core.capture.capture`.

    Attributes
    ----------
    timings : list of float
        Seconds taken by each capture this object ran (skipped steps excluded).
    """

    def __init__(self, data: Any, store: ActivationStore | str | os.PathLike[str], *,
                 make_adapter: Callable[[Any], Any], prefix: str = DEFAULT_PREFIX,
                 batch_size: int = 1000, class_names: Sequence[str] | None = None,
                 keep_inputs: bool = False, **options: Any) -> None:
        for bad in ("split", "resume", "overwrite", "allow_other_weights"):
            if bad in options:
                raise TypeError(f"Probe sets {bad!r} itself (one split per checkpoint)")
        checkpoint_split(0, prefix)  # a valid prefix gives valid split names
        self.data = data
        self.store = store
        self.make_adapter = make_adapter
        self.prefix = prefix
        self.batch_size = int(batch_size)
        self.class_names = list(class_names) if class_names is not None else None
        self.keep_inputs = bool(keep_inputs)
        self.options = {"progress": False, **options}
        self.timings: list[float] = []
        self._model: Any = None
        self._adapter: Adapter | None = None

    def adapter(self, model: Any) -> Adapter:
        """The adapter of ``model`` (made once per model object)."""
        if self._adapter is None or self._model is not model:
            self._adapter = self.make_adapter(model)
            self._model = model
        return self._adapter

    def _store(self) -> ActivationStore:
        if not isinstance(self.store, ActivationStore):
            self.store = open_store(self.store, mode="a",
                                    storage_options=self.options.get("storage_options"))
        return self.store

    def _existing(self, store: ActivationStore, split: str, fingerprint: str | None) -> str:
        """What to do with ``split``: "new", "skip", "record" (complete, same weights, the
        record missing) or "replace"."""
        if split not in store.refresh().splits:
            return "new"
        info = store.split_attrs(split)
        same = fingerprint is None or info.get("model_fingerprint") == fingerprint
        if not info.get("complete"):
            return "replace"
        if not same:
            log.warning("checkpoint %s was captured with other weights: replacing it", split)
            return "replace"
        return "skip" if info.get(CHECKPOINT_KEY) else "record"

    def capture(self, model: Any, *, step: int, epoch: int | float | None = None,
                **extra: Any) -> str | None:
        """Capture the probe set through ``model`` as the checkpoint at ``step``.

        Parameters
        ----------
        model : object
            The model being trained (its training mode is restored).
        step : int
            The training step (or any increasing count).
        epoch : int or float, optional
            The epoch, recorded with the step.
        **extra
            JSON-serialisable values recorded with the checkpoint (a loss...).

        Returns
        -------
        str or None
            The split written, or None when that checkpoint was already in the
            store with these weights.
        """
        split = checkpoint_split(step, self.prefix)
        store = self._store()
        adapter = self.adapter(model)
        fingerprint = model_fingerprint(adapter)
        what = self._existing(store, split, fingerprint)
        if what == "skip":
            log.info("checkpoint %s is already in the store: skipped", split)
            return None
        t0 = time.perf_counter()
        if what != "record":
            capture(adapter, self.data, store, split=split, batch_size=self.batch_size,
                    class_names=self.class_names, keep_inputs=self.keep_inputs,
                    overwrite=what == "replace", allow_other_weights=f"checkpoint {split}",
                    **self.options)
        seconds = time.perf_counter() - t0
        record = {"step": int(step), "epoch": epoch, "fingerprint": fingerprint,
                  "seconds": round(seconds, 4), "captured": now_iso(), **extra}
        store.write_split_attrs(split, {**store.split_attrs(split), CHECKPOINT_KEY: record})
        if what != "record":
            self.timings.append(seconds)
        log.info("checkpoint %s (epoch %s) captured in %.2f s", split, epoch, seconds)
        return split

    def checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints of this probe in the store (see :func:`list_checkpoints`)."""
        return list_checkpoints(self._store(), prefix=self.prefix)
