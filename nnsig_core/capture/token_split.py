"""The token row space of a capture: layers pooled with ``"tokens"``, one row per token.

A capture whose adapter returns :class:`~nnsig_core.protocol.token_rows.TokenRows`
writes them to a second split, ``<split>.tokens`` (``store/format.py``), with
its own chunk writer. Each row holds the token's activations in every
token-level layer, plus the sample it belongs to (``sample_row`` in
``<split>``, and that sample's label, prediction, outputs and data-set index)
and its ``position`` (and input ``token`` id when known). It is a split like any
other, so the analysis, the signatures, the diagnostics and the report work on
it unchanged: a token's signature is its cluster in each token-level layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nnsig_core._util import now_iso
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.writer import ChunkWriter
from nnsig_core.protocol.token_rows import TokenRows, check_same_tokens
from nnsig_core.store import ActivationStore
from nnsig_core.store.format import chunk_rows_for, layer_key, split_array_specs, token_split_name

log = logging.getLogger("nnsig")


class TokenSpace:
    """Creates and feeds the token row space of one capture (see the module docstring).

    ``split`` is the sample-level split the tokens belong to; ``base_info()`` gives the split
    attributes shared with it (framework, model summary, class names, capture settings);
    ``dtype``, ``compressor``, ``chunk_bytes`` and ``durable`` are the capture's.
    """

    def __init__(
        self,
        store: ActivationStore,
        split: str,
        dtype: np.dtype,
        compressor: Any,
        chunk_bytes: int,
        base_info: Callable[[], dict[str, Any]],
        durable: bool = False,
    ) -> None:
        self.store = store
        self.split = split
        self.name = token_split_name(split)
        self.dtype = dtype
        self.compressor = compressor
        self.chunk_bytes = chunk_bytes
        self.base_info = base_info
        self.durable = durable
        self.writer: ChunkWriter | None = None
        self.names: list[str] = []
        self.keys: list[str] = []
        self.layers: list[dict[str, Any]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.info: dict[str, Any] = {}

    def submit(
        self,
        tokens: Mapping[str, TokenRows],
        outputs: np.ndarray,
        labels: np.ndarray,
        predictions: np.ndarray,
        index: np.ndarray,
        first_row: int,
        n_expected: int | None,
    ) -> None:
        """Write the token rows of one batch (``first_row``: the split row of its first sample)."""
        try:
            shared = check_same_tokens(tokens)
        except ValueError as exc:
            raise CaptureError(str(exc)) from None
        assert shared is not None
        n = len(index)
        if len(shared) and (shared.sample.min() < 0 or shared.sample.max() >= n):
            raise CaptureError(
                f"Token rows refer to samples outside the batch of {n} (adapter bug?)."
            )
        if self.writer is None:
            self._create(tokens, outputs.shape[1], n, len(shared), n_expected)
        if list(tokens) != self.names:
            raise CaptureError(
                f"The adapter returned token-level layers {list(tokens)} for this batch but "
                f"{self.names} for the first one; captured layers must not change."
            )
        rows: dict[str, np.ndarray] = {}
        for name, key in zip(self.names, self.keys, strict=True):
            values = np.asarray(tokens[name].values)
            if values.shape[1:] != self.shapes[name]:
                raise CaptureError(
                    f"Token-level layer {name!r} gave rows of shape {values.shape[1:]}, "
                    f"expected {self.shapes[name]}."
                )
            rows[key] = values.astype(self.dtype, copy=False)
        s = shared.sample
        rows["outputs"] = np.asarray(outputs, dtype=np.float32)[s]
        rows["labels"] = labels[s]
        rows["predictions"] = predictions[s]
        rows["sample_index"] = index[s]
        rows["sample_row"] = first_row + s
        rows["position"] = shared.position
        rows["token"] = (shared.token if shared.token is not None
                         else np.full(len(s), -1, dtype=np.int64))
        assert self.writer is not None
        self.writer.submit(rows)

    def prepare(self, tokens: Mapping[str, TokenRows], model: Mapping[str, Any]) -> None:
        """Describe the token-level layers of the first batch and check them against the store's
        other token row spaces (StoreError when they differ), before anything is created.
        """
        self.names = list(tokens)
        self.keys = [layer_key(x) for x in self.names]
        self.shapes = {k: tuple(int(s) for s in np.shape(v.values)[1:]) for k, v in tokens.items()}
        by_name = {d.get("name"): d for d in model.get("token_layers", [])}
        self.layers = []
        for name, key in zip(self.names, self.keys, strict=True):
            meta = dict(by_name.get(name, {}))
            meta.update(name=name, key=key, shape=list(self.shapes[name]), dtype=self.dtype.name)
            meta.setdefault("type", "unknown")
            meta.setdefault("parameters", 0)
            self.layers.append(meta)
        self.store.check_compatible(self.name, self.layers, level="tokens")

    def _create(
        self, tokens: Mapping[str, TokenRows], n_outputs: int, n: int, rows: int,
        n_expected: int | None,
    ) -> None:
        info = self.base_info()
        if not self.layers:
            self.prepare(tokens, info.get("model") or {})
        layers = self.layers
        widest = max([int(np.prod(s, dtype=np.int64)) * self.dtype.itemsize
                      for s in self.shapes.values()] + [n_outputs * 4])
        chunk_rows = chunk_rows_for(self.chunk_bytes, widest, max(rows, 1))
        per_sample = max(1, -(-rows // max(n, 1)))  # rows of the first batch per sample
        guess = (n_expected or 0) * per_sample  # an estimate; the arrays grow or shrink to fit
        capture = dict(info.get("capture") or {}, chunk_rows=chunk_rows)
        self.info = {
            **info, "complete": False, "n_written": 0, "n_samples": 0, "n_expected": None,
            "level": "tokens", "parent": self.split, "layers": layers, "capture": capture,
        }
        specs = split_array_specs(
            [(x, k, self.shapes[x]) for x, k in zip(self.names, self.keys, strict=True)],
            n_outputs, guess, chunk_rows, self.dtype, self.compressor, None, token_rows=True,
        )
        arrays = self.store.create_split(self.name, self.info, specs)
        self.writer = ChunkWriter(arrays=arrays, chunk_rows=chunk_rows, start_row=0,
                                  on_written=lambda _n: None, durable=self.durable)
        log.info("Token-level layers %s: one row per token, in split %r",
                 ", ".join(self.names), self.name)

    def finish(self) -> int:
        """Write the last rows, trim the arrays, mark the token split complete; the row count."""
        assert self.writer is not None
        total = self.writer.close()
        for arr in self.writer.arrays.values():
            if arr.shape[0] != total:
                arr.resize((total, *arr.shape[1:]))
        self.info.update(complete=True, n_written=total, n_samples=total, n_expected=total)
        self.info["capture"] = dict(self.info["capture"], finished=now_iso())
        if self.durable:
            self.store.sync_split(self.name)
        self.store.write_split_attrs(self.name, self.info)
        if self.durable:
            self.store.sync_split(self.name)
        return total

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
