"""A fixed probe set captured at checkpoints of a training run, one split per checkpoint
(``docs/design.md``, "The probe")."""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core._util import now_iso
from nnsig_core._warnings import warn
from nnsig_core.capture.api import capture
from nnsig_core.capture.batches import n_available
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.policy import legacy_fingerprints, model_fingerprint
from nnsig_core.protocol import Adapter
from nnsig_core.store import ActivationStore, open_store
from nnsig_core.store.format import recorded_fingerprints, token_split_name

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
        if prefix is not None and checkpoint_prefix(split) != prefix:
            continue
        rec = store.split_attrs(split).get(CHECKPOINT_KEY)
        if not rec or not store.is_complete(split):
            continue
        out.append({"split": split, **rec})
    out.sort(key=lambda r: (int(r["step"]), r["split"]))
    return out


def checkpoint_prefix(split: str) -> str | None:
    """The probe prefix of a checkpoint split's name (``"step"`` of ``"step_00000100"``),
    else None."""
    prefix, _, step = split.rpartition("_")
    return prefix if prefix and len(step) >= _DIGITS and step.isdigit() else None


def unfinished_checkpoints(store: ActivationStore, prefix: str | None = None) -> list[str]:
    """The checkpoint splits (named ``<prefix>_<step>``) whose capture did not finish, which
    :func:`list_checkpoints` leaves out."""
    return [s for s in store.splits
            if checkpoint_prefix(s) is not None and (prefix is None or checkpoint_prefix(s) == prefix)
            and not store.is_complete(s)]


def stale_checkpoints(store: ActivationStore, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The checkpoints of ``records`` (in step order) captured before an earlier step was
    captured again with other weights: left by an earlier training run, whose later steps
    the new one did not reach (checkpoints merely captured out of order are not)."""
    def started(split: str) -> int:
        return int((store.split_attrs(split).get("capture") or {}).get("started_ns") or 0)

    stale, rerun = [], 0  # the latest start of an earlier step captured again
    for r in records:
        t = started(r["split"])
        if t and t < rerun:
            stale.append(str(r["split"]))
        if r.get("replaced"):
            rerun = max(rerun, t)
    return stale


def row_settings(layers: Any, pool: Any, layout: Any, adapter_options: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """What makes a framework probe's rows, for :class:`Probe`'s ``settings``: its layers,
    pooling and layout, and the adapter options that change the rows (not ``device``)."""
    return {"layers": layers, "pool": pool, "layout": layout,
            **{k: v for k, v in adapter_options.items()
               if k in ("mask", "token_key", "batch_axis")}}


def adapter_options(adapter_class: type, options: dict[str, Any]) -> dict[str, Any]:
    """Take out of ``options`` the keyword arguments of ``adapter_class`` (``mask=``,
    ``token_key=``...): a probe gives them to its adapter, the rest to capture."""
    names = set(inspect.signature(adapter_class).parameters) - {"model", "self"}
    return {k: options.pop(k) for k in list(options) if k in names}


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
    settings : mapping, optional
        What else makes this probe (the adapter's layers, pooling...), recorded with
        each checkpoint: a checkpoint of the store recorded with other settings, or
        another sample count, is refused rather than skipped or joined.
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
                 keep_inputs: bool = False, settings: Mapping[str, Any] | None = None,
                 **options: Any) -> None:
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
        self.settings = {"n": _array_count(data, options), "max_samples": options.get("max_samples"),
                         **{k: describe_setting(v) for k, v in (settings or {}).items()}}
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

    def _existing(self, store: ActivationStore, split: str, step: int,
                  fingerprint: str | None, legacy: Sequence[str] = ()) -> str:
        """What to do with ``split``: "new", "skip", "record" (complete, same weights, the
        record missing), "replace" (incomplete) or "rerun" (complete, other weights)."""
        if split not in store.refresh().splits:
            return "new"
        info = store.split_attrs(split)
        self._check_settings(store, split, info.get(CHECKPOINT_KEY))
        same = fingerprint is None or bool(recorded_fingerprints(info) & {fingerprint, *legacy})
        if not info.get("complete"):
            return "replace"
        if not same:
            later = [c["split"] for c in list_checkpoints(store, prefix=self.prefix)
                     if int(c["step"]) > int(step)]
            warn(f"Checkpoint {split} was captured with other weights (another training run, "
                 "or a step given twice?): it is replaced"
                 + (f", while the later checkpoints {later} stay and would join this run's "
                    "timeline" if later else "")
                 + ". Give each checkpoint its own step; for a new training run, capture "
                   "into a new store (or delete this one first).")
            return "rerun"
        return "skip" if info.get(CHECKPOINT_KEY) else "record"

    def _check_settings(self, store: ActivationStore, split: str,
                        record: Mapping[str, Any] | None) -> None:
        """Refuse a checkpoint recorded by a probe of other settings: skipping it would keep
        the other probe's data, replacing it would mix two probes in one timeline."""
        theirs = (record or {}).get("probe")
        if theirs is None:
            return
        ours = self.settings
        differ = [f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} here"
                  for k in sorted(set(theirs) | set(ours))
                  if theirs.get(k) != ours.get(k) and None not in (theirs.get(k), ours.get(k))]
        if differ:
            # Another prefix in the same store only fits a probe of the same layers: the
            # splits of a store hold the same layers.
            same_layers = all(theirs.get(k) == ours.get(k) for k in ours if k != "n")
            raise CaptureError(
                f"Checkpoint {split} of {store.location!r} was captured by a probe with other "
                f"settings ({'; '.join(differ)}); the checkpoints of one prefix follow one "
                "probe. Capture into a new store"
                + (f", give this probe its own prefix= (not {self.prefix!r})" if same_layers
                   else "")
                + f", or remove the old checkpoints first (open_store(..., mode='r+')"
                  f".remove_split('{split}')).")

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
        what = self._existing(store, split, step, fingerprint, legacy_fingerprints(adapter))
        if what == "skip":
            log.info("checkpoint %s is already in the store: skipped", split)
            return None
        t0 = time.perf_counter()
        if what != "record":
            capture(adapter, self.data, store, split=split, batch_size=self.batch_size,
                    class_names=self.class_names, keep_inputs=self.keep_inputs,
                    overwrite=what in ("replace", "rerun"),
                    allow_other_weights=f"checkpoint {split}",
                    **self.options)
        seconds = time.perf_counter() - t0
        if what != "record":
            self._check_same_samples(store, split)
        record = {"step": int(step), "epoch": _scalar(epoch), "fingerprint": fingerprint,
                  "seconds": round(seconds, 4), "captured": now_iso(),
                  "probe": {**self.settings, "n": store.n_samples(split)},
                  **({"replaced": True} if what == "rerun" else {}),
                  **{k: _scalar(v) for k, v in extra.items()}}
        store.write_split_attrs(split, {**store.split_attrs(split), CHECKPOINT_KEY: record})
        if what != "record":
            self.timings.append(seconds)
        log.info("checkpoint %s (epoch %s) captured in %.2f s", split, epoch, seconds)
        return split

    def checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints of this probe in the store (see :func:`list_checkpoints`)."""
        return list_checkpoints(self._store(), prefix=self.prefix)

    def _check_same_samples(self, store: ActivationStore, split: str) -> None:
        """A new checkpoint holds the samples of the others, in their order (else it is
        removed): a timeline follows each sample, so data that changes order between
        checkpoints is refused at the second, not after training."""
        other = next((c["split"] for c in list_checkpoints(store, prefix=self.prefix)
                      if c["split"] != split), None)
        if other is None:
            return
        n, n_other = store.n_samples(split), store.n_samples(other)
        same = n == n_other and all(np.array_equal(a, b) for a, b in (
            (store.labels(split), store.labels(other)),
            (store.sample_index(split), store.sample_index(other))))
        if not same:
            for gone in (split, token_split_name(split)):
                if gone in store.refresh().splits:
                    store.delete(gone)
            why = (f"{n} samples, where checkpoint {other} holds {n_other}" if n != n_other else
                   f"other samples, or the same in another order, than at checkpoint {other} (a "
                   "DataLoader with shuffle=True, or random augmentation?)")
            raise CaptureError(
                f"The probe data gave {why}; a timeline follows each sample from one "
                "checkpoint to the next, so this checkpoint was not kept. Give the probe the "
                "same samples each time: a Dataset or (X, y) arrays, or a DataLoader that does "
                f"not shuffle. If checkpoint {other} is the odd one (an earlier run into this "
                "store), capture into a new store or remove it first "
                f"(open_store(..., mode='r+').remove_split('{other}')).")


def _array_count(data: Any, options: Mapping[str, Any]) -> int | None:
    """The samples a probe of arrays captures (None for a loader or a stream, whose count is
    known only once read: ``drop_last``, a sampler...)."""
    if not isinstance(data, (tuple, Mapping)):
        return None
    try:
        n = n_available(data, options.get("batch_axis", 0), options.get("label_key"))
    except CaptureError:
        return None  # capture says what is wrong with the data
    most = options.get("max_samples")
    return n if n is None or most is None else min(n, int(most))


def _scalar(value: Any) -> Any:
    """A 0-d tensor or NumPy value (a loss) as its Python number, for the record; inside
    dicts, lists and tuples too (``metrics={"acc": tensor(0.9)}``)."""
    if isinstance(value, Mapping):
        return {str(k): _scalar(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scalar(v) for v in value]
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "ndim", None) == 0 else value


def describe_setting(value: Any) -> Any:
    """A probe setting as JSON that is the same from one run to the next: classes and
    functions by their qualified name, not by ``repr`` (which holds an address)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): describe_setting(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [describe_setting(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text


def epoch_progress(epochs_before: float, batches_done: int, n_batches: Any) -> float | int:
    """Epochs done at a mid-epoch checkpoint: ``epochs_before`` plus the part of this epoch
    (3 decimals; whole numbers as int), the convention of the epoch-end checkpoints (the
    epochs done) and of Hugging Face's ``state.epoch``."""
    try:
        frac = float(batches_done) / float(n_batches) if n_batches else 0.0
    except (TypeError, ValueError):
        frac = 0.0
    if not 0.0 <= frac <= 1.0 or frac != frac:
        frac = 0.0
    value = round(float(epochs_before) + frac, 3)
    return int(value) if value.is_integer() else value
