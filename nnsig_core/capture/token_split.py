"""The token row space of a capture: layers pooled with ``"tokens"``, one row per token.

Token rows (:class:`~nnsig_core.protocol.token_rows.TokenRows`) go to a second split,
``<split>.tokens``, with its own chunk writer: each row holds the token's activations in
every token-level layer, its sample (``sample_row`` and that sample's label, prediction,
outputs and index), its ``position`` and ``token`` id. Also the split-writing steps the
sample-level session shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core._util import now_iso
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.writer import ChunkWriter
from nnsig_core.protocol.token_rows import TokenRows, check_same_tokens
from nnsig_core.store import ActivationStore
from nnsig_core.store.format import chunk_rows_for, layer_key, split_array_specs, token_split_name

log = logging.getLogger("nnsig")


def layer_records(names: Sequence[str], keys: Sequence[str], shapes: Mapping[str, tuple[int, ...]],
                  dtype: np.dtype, described: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each layer's record in the split: the adapter's description of it, by name, with
    its key, shape and dtype."""
    by_name = {d.get("name"): d for d in described}
    layers = []
    for name, key in zip(names, keys, strict=True):
        meta = dict(by_name.get(name, {}))
        meta.update(name=name, key=key, shape=list(shapes[name]), dtype=dtype.name)
        meta.setdefault("type", "unknown")
        meta.setdefault("parameters", 0)
        layers.append(meta)
    return layers


def widest_row(shapes: Mapping[str, tuple[int, ...]], dtype: np.dtype, n_outputs: int) -> int:
    """The bytes of the widest row of a split's arrays (which sets the chunk rows)."""
    return max([int(np.prod(s, dtype=np.int64)) * dtype.itemsize for s in shapes.values()]
               + [n_outputs * 4])


def trim(arrays: Iterable[Any], total: int) -> None:
    """Resize a split's arrays to the rows written."""
    for arr in arrays:
        if arr.shape[0] != total:
            arr.resize((total, *arr.shape[1:]))


def mark_complete(store: ActivationStore, split: str, info: dict[str, Any],
                  durable: bool) -> None:
    """Write a split's metadata, with everything it vouches for on disk first (``durable``)."""
    if durable:
        store.sync_split(split)
    store.write_split_attrs(split, info)
    if durable:
        store.sync_split(split)


class TokenSpace:
    """Creates and feeds the token row space of one capture; ``base_info()`` gives the
    attributes shared with the sample-level ``split``."""

    def __init__(self, store: ActivationStore, split: str, dtype: np.dtype, compressor: Any,
                 chunk_bytes: int, base_info: Callable[[], dict[str, Any]],
                 durable: bool = False) -> None:
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

    def submit(self, tokens: Mapping[str, TokenRows], outputs: np.ndarray, labels: np.ndarray,
               predictions: np.ndarray, index: np.ndarray, first_row: int,
               n_expected: int | None) -> None:
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
        """Describe the first batch's token-level layers and check them against the store's
        other token row spaces (a StoreError), before anything is created."""
        self.names = list(tokens)
        self.keys = [layer_key(x) for x in self.names]
        self.shapes = {k: tuple(int(s) for s in np.shape(v.values)[1:]) for k, v in tokens.items()}
        self.layers = layer_records(self.names, self.keys, self.shapes, self.dtype,
                                    model.get("token_layers", []))
        self.store.check_compatible(self.name, self.layers, level="tokens")

    def _create(self, tokens: Mapping[str, TokenRows], n_outputs: int, n: int, rows: int,
                n_expected: int | None) -> None:
        info = self.base_info()
        if not self.layers:
            self.prepare(tokens, info.get("model") or {})
        widest = widest_row(self.shapes, self.dtype, n_outputs)
        chunk_rows = chunk_rows_for(self.chunk_bytes, widest, max(rows, 1))
        per_sample = max(1, -(-rows // max(n, 1)))  # rows of the first batch per sample
        guess = (n_expected or 0) * per_sample  # an estimate; the arrays grow or shrink to fit
        capture = dict(info.get("capture") or {}, chunk_rows=chunk_rows)
        self.info = {
            **info, "complete": False, "n_written": 0, "n_samples": 0, "n_expected": None,
            "level": "tokens", "parent": self.split, "layers": self.layers, "capture": capture,
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
        trim(self.writer.arrays.values(), total)
        self.info.update(complete=True, n_written=total, n_samples=total, n_expected=total)
        self.info["capture"] = dict(self.info["capture"], finished=now_iso())
        mark_complete(self.store, self.name, self.info, self.durable)
        return total

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
