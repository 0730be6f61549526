"""One capture: runs each batch through the adapter, checks it, and feeds the writer (the
split's arrays are created on the first batch, once its layers are matched to the store)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from nnsig_core._util import now_iso, to_json_safe
from nnsig_core._warnings import warn
from nnsig_core.capture.batches import class_indices
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.options import CaptureOptions, default_predict
from nnsig_core.capture.policy import check_class_names, legacy_fingerprints
from nnsig_core.capture.thumbnails import make_thumbnails
from nnsig_core.capture.token_split import (
    TokenSpace,
    layer_records,
    mark_complete,
    trim,
    widest_row,
)
from nnsig_core.capture.writer import ChunkWriter
from nnsig_core.protocol import Adapter
from nnsig_core.protocol.token_rows import split_token_rows
from nnsig_core.store import ActivationStore
from nnsig_core.store.claims import SplitClaim
from nnsig_core.store.format import (
    changed_layers,
    chunk_rows_for,
    layer_key,
    split_array_specs,
    token_split_name,
)

log = logging.getLogger("nnsig")

#: Seconds between two updates of the written count in the split's metadata.
RECORD_EVERY_S = 1.0


class CaptureSession:
    """Per-capture state: creates the arrays on the first batch, feeds the writer."""

    def __init__(
        self,
        *,
        store: ActivationStore,
        adapter: Adapter,
        options: CaptureOptions,
        n_expected: int | None,
        settings: dict[str, Any],
        existing: dict[str, Any] | None,
        start: int,
        claim: SplitClaim,
        fingerprint: str | None = None,
        weights_error: Exception | None = None,
    ) -> None:
        self.store = store
        self.adapter = adapter
        self.n_expected = n_expected
        o = options
        self.split, self.class_names, self.keep_inputs = o.split, o.class_names, o.keep_inputs
        self.dtype, self.compressor, self.chunk_bytes = np.dtype(o.dtype), o.codec, o.chunk_bytes
        self.predict, self.durable = o.predict or default_predict, o.durable
        self.settings = settings
        self.existing = existing
        self.start = start
        self.claim = claim
        self.fingerprint = fingerprint
        self.weights_error = weights_error  # raised once the layers are known to match
        self.writer: ChunkWriter | None = None
        self.created = False  # this capture created the split's group
        self.batches = 0  # batches handed to the writer
        self._last_recorded = time.monotonic()
        self.layer_names: list[str] = []
        self.info: dict[str, Any] = {}
        self.has_labels: bool | None = None if existing is None else existing.get("has_labels")
        self.rows_seen = start  # the split row of the next batch's first sample
        self.tokens = TokenSpace(store, self.split, self.dtype, self.compressor,
                                 self.chunk_bytes, self._token_info, self.durable)
        self.has_tokens: bool | None = None
        #: What a repair re-captured (``Repairs.record()``), recorded as ``capture.repaired``.
        self.repaired: dict[str, Any] | None = None

    def process(self, inputs: Any, labels: Any, index: np.ndarray) -> None:
        """Run one batch and hand its rows to the writer (the split's next rows)."""
        rows, token_acts = self.compute(inputs, labels, index)
        assert self.writer is not None
        if token_acts:
            self.tokens.submit(token_acts, rows["outputs"], rows["labels"], rows["predictions"],
                               index, self.rows_seen, self.n_expected)
        self.writer.submit(rows)
        self.rows_seen += len(index)
        self.batches += 1

    def compute(self, inputs: Any, labels: Any,
                index: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Run one batch and check it: its rows by array key, and its token-level layers."""
        n = len(index)
        outputs, acts = self.adapter.run(inputs)
        acts, token_acts = split_token_rows(acts)
        if self.has_tokens is None:
            self.has_tokens = bool(token_acts)
        elif self.has_tokens != bool(token_acts):
            raise CaptureError("Some batches have token-level layers and others do not.")
        outputs = np.asarray(outputs)
        if outputs.ndim == 1:
            outputs = outputs[:, None]
        if outputs.shape[0] != n:
            raise CaptureError(
                f"The model returned {outputs.shape[0]} output rows for a batch of {n} samples."
            )
        # Adapters flatten the outputs per sample; ``output_shape`` (optional in the
        # protocol) is the model's own.
        shape = tuple(getattr(self.adapter, "output_shape", None) or outputs.shape[1:])
        if self.predict is default_predict and sum(d != 1 for d in shape) > 1:  # (C, 1, 1) is C
            raise CaptureError(
                f"The model's outputs have shape {shape} per sample (a score "
                "per position, as a language model's logits, or the hidden states of a model "
                "without a head?), not one score per class: their argmax is no class. Give a "
                "model returning one score per class (a wrapper whose forward returns the "
                "logits to classify by, e.g. the last real token's), or pass capture(..., "
                "predict=f), f mapping the batch's outputs, flattened per sample, to one class "
                "per sample (the last position's token: predict=lambda out: out.reshape("
                f"len(out), -1, {shape[-1]})[:, -1].argmax(-1); without classes: predict="
                "lambda out: numpy.zeros(len(out), int)); the outputs are then stored whole.")
        outputs = outputs.reshape(n, -1)
        lab = self._labels(labels, index)
        pred = np.asarray(self.predict(outputs)).astype(np.int64).reshape(-1)
        if pred.shape[0] != n:
            raise CaptureError("predict(outputs) must return one class per sample.")

        if self.writer is None:
            self._create(acts, outputs, inputs, token_acts)
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
        return rows, token_acts

    def _labels(self, labels: Any, index: np.ndarray) -> np.ndarray:
        """A batch's labels as int64 class indices (-1 for a batch without labels), checked."""
        n = len(index)
        if self.has_labels is not None and self.has_labels != (labels is not None):
            raise CaptureError("Some batches have labels and others do not.")
        self.has_labels = labels is not None
        if labels is None:
            return np.full(n, -1, dtype=np.int64)
        lab = class_indices(self.adapter.to_numpy(labels))
        if lab.shape[0] != n:
            raise CaptureError(f"A batch has {n} inputs but {lab.shape[0]} labels.")
        if not np.issubdtype(lab.dtype, np.integer):
            if not (np.issubdtype(lab.dtype, np.floating) and np.all(lab == np.round(lab))):
                raise CaptureError(
                    f"Labels must be integer class indices (or one-hot), got dtype {lab.dtype}"
                    + (": map the names to indices first (a Hugging Face dataset: "
                       "ds.class_encode_column('label'); else numpy.unique(y, "
                       "return_inverse=True)[1], with class_names= the unique names)."
                       if lab.dtype.kind in "USO" else ".")
                )
        lab = lab.astype(np.int64, copy=False)
        bad = np.flatnonzero(lab < -1)
        if bad.size:
            raise CaptureError(
                f"Sample {int(index[bad[0]])} has label {int(lab[bad[0]])}: labels are class "
                "indices from 0, or -1 for an unknown class "
                f"({bad.size} sample(s) of this batch below -1)."
            )
        if self.class_names is not None and lab.size and lab.max() >= len(self.class_names):
            i = int(np.argmax(lab))
            raise CaptureError(
                f"Sample {int(index[i])} has label {int(lab[i])}, but class_names names only "
                f"{len(self.class_names)} classes (0-{len(self.class_names) - 1}): give one "
                "name per class."
            )
        return lab

    def _thumbs(self, inputs: Any, index: np.ndarray) -> np.ndarray:
        batch_images = getattr(self.adapter, "batch_images", None)  # optional in the protocol
        if callable(batch_images):
            raw = np.asarray(batch_images(inputs))
        else:
            if isinstance(inputs, (Mapping, tuple, list)):
                raise CaptureError(
                    "keep_inputs=True keeps thumbnails of image inputs, and needs one input "
                    f"array per batch (this batch is a {type(inputs).__name__}): leave it out "
                    "for text and for inputs given as several arrays.")
            raw = np.asarray(self.adapter.to_numpy(inputs))
        return make_thumbnails(raw)

    def _token_info(self) -> dict[str, Any]:
        keep = ("framework", "model", "class_names", "has_labels", "model_fingerprint",
                "legacy_fingerprints", "capture")
        return {k: self.info[k] for k in keep if k in self.info}

    def _create(self, acts: Mapping[str, np.ndarray], outputs: np.ndarray, inputs: Any,
                tokens: Mapping[str, Any]) -> None:
        if not acts and not tokens:
            raise CaptureError("The adapter captured no layer; select at least one layer.")
        self.layer_names = list(acts.keys())
        self.keys = [layer_key(n) for n in self.layer_names]
        if len(set(self.keys)) != len(self.keys):
            raise CaptureError(f"Layer names collide once escaped: {self.layer_names}.")
        self.shapes = {n: tuple(int(s) for s in np.shape(a)[1:]) for n, a in acts.items()}
        self.n_outputs = int(outputs.shape[1])
        n_classes = 2 if self.n_outputs == 1 else self.n_outputs
        if self.class_names is not None and len(self.class_names) < n_classes:
            raise CaptureError(
                f"class_names has {len(self.class_names)} names but the model has "
                f"{n_classes} classes ({self.n_outputs} outputs): give one name per class."
            )
        summary = to_json_safe(self.adapter.model_summary())
        layers = layer_records(self.layer_names, self.keys, self.shapes, self.dtype,
                               summary.get("layers", []))
        if self.existing is not None:
            changed = changed_layers(layers, self.existing.get("layers") or [])
            if changed:
                raise CaptureError(
                    f"Cannot resume split {self.split!r}: this model is not the one that "
                    f"started it ({'; '.join(changed)}). Resume with that model, or start "
                    "again with overwrite=True."
                )
            if self.weights_error is not None:
                raise self.weights_error
        self.store.check_compatible(self.split, layers, include_self=self.existing is not None)
        check_class_names(self.store, self.split, self.class_names)
        if tokens:  # checked before anything is created, like the sample-level layers
            self.tokens.prepare(tokens, summary)

        if self.existing is not None:
            chunk_rows = int(self.existing["capture"]["chunk_rows"])
            self.info = dict(self.existing, n_expected=self.n_expected)
            arrays = self._arrays_to_resume(chunk_rows)
        else:
            chunk_rows = chunk_rows_for(self.chunk_bytes,
                                        widest_row(self.shapes, self.dtype, self.n_outputs),
                                        len(outputs), self.n_expected)
            tshape = None
            if self.keep_inputs:  # before anything is created: non-image inputs fail here
                tshape = self._thumbs(inputs, np.arange(self.start, self.start + 1)).shape[1:]
            self.settings["chunk_rows"] = chunk_rows
            stale = token_split_name(self.split)
            if stale in self.store.splits and not tokens:
                self.store.delete(stale)  # the token rows of the split this capture replaces
            self.info = {
                "complete": False, "n_written": 0, "n_samples": 0, "n_expected": self.n_expected,
                "framework": getattr(self.adapter, "framework", "unknown"), "model": summary,
                "layers": layers, "class_names": self.class_names,
                "has_labels": bool(self.has_labels), "model_fingerprint": self.fingerprint,
                "capture": self.settings,
            }
            legacy = legacy_fingerprints(self.adapter) if self.fingerprint else []
            if legacy:
                self.info["legacy_fingerprints"] = legacy
            if tokens:
                self.info["token_split"] = token_split_name(self.split)
            specs = split_array_specs(
                [(n, k, self.shapes[n]) for n, k in zip(self.layer_names, self.keys, strict=True)],
                self.n_outputs, self.n_expected or 0, chunk_rows, self.dtype, self.compressor,
                tshape,
            )
            # overwrite=True: the old split goes only now, once the model has matched.
            self.claim.check()
            arrays = self.store.create_split(self.split, self.info, specs)
            self.created = True
        self.writer = ChunkWriter(arrays=arrays, chunk_rows=chunk_rows, start_row=self.start,
                                  on_written=self._record_written, durable=self.durable)

    def _arrays_to_resume(self, chunk_rows: int) -> dict[str, Any]:
        """The interrupted split's arrays (one missing must be captured again)."""
        arrays = self.store.split_arrays(self.split)
        wanted = [*self.keys, "outputs", "labels", "predictions", "sample_index"]
        wanted += ["inputs"] if self.keep_inputs else []
        missing = [k for k in wanted if k not in arrays]
        if missing:
            raise CaptureError(
                f"Cannot resume split {self.split!r}: arrays {', '.join(missing)} are missing "
                f"from the store. Run `nnsig verify {self.store.location}`, and capture the "
                "split again with overwrite=True."
            )
        return arrays

    def _record_written(self, n_written: int, always: bool = False) -> None:
        # About once a second: a lower bound is all a resume needs.
        now = time.monotonic()
        if now - self._last_recorded < RECORD_EVERY_S and not always:
            return
        self._last_recorded = now
        self.info["n_written"] = n_written
        self.info["n_samples"] = n_written
        self.claim.check()
        self.store.write_split_attrs(self.split, self.info)

    def finish(self) -> None:
        if self.existing is not None and self.existing.get("complete"):
            self._finish_repair()
            return
        if self.writer is None:
            if self.existing is not None and self.start > 0:
                # Interrupted after its last chunk was written: only the end was missing.
                self._complete_as_is()
                return
            raise CaptureError("The data yielded no samples; nothing was captured.")
        if self.has_tokens:
            self.tokens.finish()  # complete before the sample-level split is
        total = self.writer.close()
        if self.n_expected is not None and total < self.n_expected:
            warn(f"The data ended at {total} of {self.n_expected} expected samples; the split "
                 f"holds {total}.")
            trim(self.writer.arrays.values(), total)
        self.info.update(
            complete=True,
            n_written=total,
            n_samples=total,
            n_expected=self.n_expected if self.n_expected is not None else total,
            has_labels=bool(self.has_labels),
        )
        self.info["capture"] = dict(self.info["capture"], finished=now_iso())
        if self.repaired is not None:
            self.info["capture"]["repaired"] = self.repaired
        self._mark_complete()
        log.info("Captured %d samples of split %r into %s", total, self.split, self.store.location)

    def _finish_repair(self) -> None:
        """A complete split whose lost rows were re-captured records the repair."""
        if self.writer is not None:
            self.writer.close()
        self.info = dict(self.existing or {})
        self.info["capture"] = dict(self.info.get("capture") or {},
                                    repaired=self.repaired or {"at": now_iso()})
        self._mark_complete()

    def _complete_as_is(self) -> None:
        total = self.start
        trim(self.store.split_arrays(self.split).values(), total)
        self.info = dict(self.existing or {})
        self.info.update(complete=True, n_written=total, n_samples=total,
                         n_expected=self.n_expected if self.n_expected is not None else total)
        self.info["capture"] = dict(self.info.get("capture") or {}, finished=now_iso())
        self._mark_complete()
        log.info("Split %r had all its %d samples written; marked complete.", self.split, total)

    def _mark_complete(self) -> None:
        self.claim.check()
        mark_complete(self.store, self.split, self.info, self.durable)

    def abort(self) -> None:
        self.tokens.abort()
        if self.writer is not None:
            self.writer.abort()
            # Where a resume restarts: the chunks written since the last record count too.
            if self.writer.written > int(self.info.get("n_written") or 0):
                try:
                    self._record_written(self.writer.written, always=True)
                except Exception as exc:  # noqa: BLE001 - the store may be what failed
                    log.debug("Could not record the rows written (%s): a resume redoes them.",
                              exc)

    def discard_if_empty(self) -> None:
        """After :meth:`abort`: remove a split this capture created if its first batch was
        refused, so a refused capture leaves no trace."""
        if self.created and self.batches == 0:
            self.store.remove_split(self.split)
            if self.has_tokens and token_split_name(self.split) in self.store.splits:
                self.store.remove_split(token_split_name(self.split))
