"""What a capture may do: argument checks, and whether to create, replace or resume a split."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnsig_core.capture.batches import class_indices
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.options import CaptureOptions
from nnsig_core.store import ActivationStore, StoreError
from nnsig_core.store.format import recorded_fingerprints

log = logging.getLogger("nnsig")


def model_fingerprint(adapter: Any) -> str | None:
    """The adapter's ``model_fingerprint()`` (optional in the protocol), or None."""
    fingerprint = getattr(adapter, "model_fingerprint", None)
    if not callable(fingerprint):
        return None
    value = fingerprint()
    return None if value is None else str(value)


def legacy_fingerprints(adapter: Any) -> list[str]:
    """Fingerprints of the adapter's weights by earlier schemes (optional in the protocol:
    Keras' of nnsig 0.2), recorded beside the current one so that splits captured before
    still match."""
    legacy = getattr(adapter, "legacy_fingerprints", None)
    return [str(v) for v in legacy()] if callable(legacy) else []


def check_weights(
    store: ActivationStore, split: str, fingerprint: str | None, existing: dict[str, Any] | None,
    allow_other_weights: bool | str, legacy: Sequence[str] = (),
) -> None:
    """Refuse to resume a split, or add one to a store, with other weights than were recorded
    (unless ``allow_other_weights``); splits captured with ``allow_other_weights`` are not
    compared with."""
    if fingerprint is None or allow_other_weights:
        return
    mine = {fingerprint, *legacy}
    if existing is not None:
        before = existing.get("model_fingerprint")
        if before is not None and not recorded_fingerprints(existing) & mine:
            raise CaptureError(
                f"Cannot resume split {split!r}: it was started with a model whose weights "
                f"differ from this one's (fingerprint {before} then, {fingerprint} now), so its "
                "rows would mix two models. Resume with the same weights, or start again "
                "with overwrite=True (or pass allow_other_weights='reason' if you mean it)."
            )
        return
    for other in _other_splits(store, split):
        attrs = store.split_attrs(other)
        if (attrs.get("capture") or {}).get("other_weights"):
            continue  # captured with other weights on purpose: not what the store's are
        theirs = attrs.get("model_fingerprint")
        if theirs is not None and not recorded_fingerprints(attrs) & mine:
            raise CaptureError(
                f"This model's weights differ from those that captured split {other!r} "
                f"(fingerprint {theirs} there, {fingerprint} here): signatures of the two "
                "splits would not be comparable. Capture with the same weights, use a new "
                "store, or pass allow_other_weights='reason' (e.g. 'epoch 5 vs epoch 10') "
                "to record that you mean it."
            )


def check_class_names(store: ActivationStore, split: str, names: Any) -> None:
    """Refuse class names other than those of the store's other splits: class ``i`` must be
    one class in every split (a report shows one list of names)."""
    if names is None:
        return
    for other in _other_splits(store, split):
        theirs = store.split_attrs(other).get("class_names")
        if theirs is not None and list(theirs) != list(names):
            raise CaptureError(
                f"class_names {list(names)} differ from those of split {other!r} "
                f"({list(theirs)}): label i must be the same class in every split of a store. "
                f"Pass class_names={list(theirs)!r} (with labels numbered as there), or use "
                "a new store."
            )


def _other_splits(store: ActivationStore, split: str) -> list[str]:
    """The store's splits but ``split`` and its token rows (replaced with it)."""
    return [s for s in store.splits
            if s != split and store.split_attrs(s).get("parent") != split]


@dataclass
class Plan:
    """How a capture starts: at which sample, continuing which interrupted split, if any."""

    start: int = 0
    existing: dict[str, Any] | None = None
    done: bool = False
    #: Row ranges (first, last) below ``start`` to capture again: missing or damaged chunks.
    repairs: list[tuple[int, int]] = field(default_factory=list)


def plan_split(store: ActivationStore, o: CaptureOptions) -> Plan:
    """Decide whether ``o.split`` is created, replaced (by the session, once the first batch
    has matched) or continued."""
    split, max_samples = o.split, o.max_samples
    if split in store.splits:
        if o.overwrite:
            log.info("Overwriting split %r of %s", split, store.location)
            return Plan()
        if o.resume:
            existing = store.split_attrs(split)
            repairs = rows_to_repair(store, split)
            if existing.get("complete"):
                if not repairs:
                    log.info("Split %r is complete and every chunk of it is sound; nothing to "
                             "resume.", split)
                    return Plan(done=True)
                _check_resume_settings(split, existing, o.keep_inputs, o.dtype, None)
                log.warning("Split %r is complete but rows %s are missing or damaged: capturing "
                            "them again.", split, _spans(repairs))
                return Plan(start=int(existing.get("n_samples", 0)), existing=existing,
                            repairs=repairs)
            _check_resume_settings(split, existing, o.keep_inputs, o.dtype, max_samples)
            # Restart at a chunk boundary: a partial last chunk may have been written.
            chunk_rows = int(existing["capture"]["chunk_rows"])
            start = int(existing.get("n_written", 0))
            start -= start % chunk_rows
            repairs = [(a, min(b, start - 1)) for a, b in repairs if a < start]
            if repairs:
                log.warning("Rows %s of split %r are missing or damaged: capturing them again.",
                            _spans(repairs), split)
            log.info("Resuming split %r at sample %d", split, start)
            return Plan(start=start, existing=existing, repairs=repairs)
        state = "complete" if store.is_complete(split) else "incomplete"
        raise StoreError(
            f"Split {split!r} already exists in {store.location} ({state}, "
            f"{store.n_samples(split)} samples). Pass overwrite=True to replace it"
            + (", or resume=True to continue it." if state == "incomplete" else ".")
        )
    damaged = store.damaged_splits.get(split)
    if damaged is not None:
        if o.overwrite:
            log.info("Overwriting split %r of %s (its metadata is damaged)", split, store.location)
            return Plan()
        raise damaged
    if store.group(split) is not None and not o.overwrite:
        raise StoreError(
            f"{split!r} exists in the store but is not a split (a capture that failed while "
            "creating it?); pass overwrite=True to replace it, or choose another split name."
        )
    return Plan()


def _spans(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a}-{b}" for a, b in ranges)


def rows_to_repair(store: ActivationStore, split: str) -> list[tuple[int, int]]:
    """The row ranges of ``split`` whose chunks ``nnsig verify`` finds missing or damaged
    (a StoreError when its metadata is damaged or an array is gone)."""
    report = store.verify(split=split)
    lost = [p for p in report.problems if p.kind == "metadata" or p.key.endswith("zarr.json")]
    if lost:
        raise StoreError(
            f"Cannot resume split {split!r} of {store.location}: {lost[0].describe()}, which a "
            f"resume cannot restore. Capture it again with overwrite=True."
        )
    return [(int(a), int(b)) for a, b in report.rows_to_recapture().get(split, [])]


def check_expected(split: str, existing: dict[str, Any] | None, n_expected: int | None) -> None:
    """A resumed capture must be given as many samples as the interrupted one."""
    if existing is not None and existing.get("n_expected") not in (None, n_expected):
        gives = (f"this data gives {n_expected}" if n_expected is not None else
                 "this data cannot tell its length (a generator?)")
        raise CaptureError(
            f"Cannot resume split {split!r}: it was started for {existing['n_expected']} "
            f"samples, {gives}. Pass the same data with max_samples={existing['n_expected']}, "
            "or overwrite=True."
        )


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The ``[start, stop)`` runs of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


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


def resume_label_check(store: ActivationStore, split: str,
                       repairs: Sequence[tuple[int, int]] = ()) -> Callable[[int, np.ndarray], None]:
    """A check that the labels of the samples a resume skips are those stored (but those of
    the ``repairs`` rows, which may be lost)."""
    def check(lo: int, labels: np.ndarray) -> None:
        labels = class_indices(labels).astype(np.int64)
        keep = np.ones(len(labels), dtype=bool)
        for a, b in repairs:
            keep[max(a - lo, 0) : max(b + 1 - lo, 0)] = False
        if not keep.any():
            return
        first, last = int(np.argmax(keep)), len(keep) - int(np.argmax(keep[::-1]))
        stored = np.full(len(labels), -2, dtype=np.int64)
        for a, b in _runs(keep[first:last]):
            stored[first + a : first + b] = store.labels(split, lo + first + a, lo + first + b)
        if not np.array_equal(stored[keep], labels[keep]):
            raise CaptureError(
                f"Cannot resume split {split!r}: the labels of samples {lo}..{lo + len(labels) - 1} "
                "differ from those already stored, so the data is not in the same order as the "
                "interrupted capture. Use the same data without shuffling, or overwrite=True."
            )
    return check
