"""Layout-aware pooling of Keras captures (``pool=``, ``layout=``) with the reductions of
:mod:`nnsig_core.protocol.pooling` (the layouts: ``docs/design.md``, Keras)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from nnsig_core.protocol.axes import (
    Layout,
    SpecMatches,
    check_layout_spec,
    check_pool,
    split_modes,
)
from nnsig_core.protocol.pooling import pool_array, resolve_auto, token_rows_array
from nnsig_core.protocol.token_rows import TokenRows, token_name

from ._summary import layer_classes

logger = logging.getLogger("nnsig_keras")

_FEATURES_LAST = layer_classes(
    "Dense", "EinsumDense", "LayerNormalization", "MultiHeadAttention", "GroupQueryAttention",
    "Embedding", "RNN", "Bidirectional", "Attention", "AdditiveAttention", "UnitNormalization",
    "RMSNormalization",
)
_FIX = "KerasAdapter(..., layout={{{name!r}: 'NHWC'}}) (or 'NCHW', 'NLC'...)"


_REORDERS = layer_classes("Permute", "Reshape", "Flatten")


def keras_layout(layer: Any, ndim: int) -> Layout:
    """The layout of a batch of ``ndim`` axes produced by ``layer``: its ``data_format``, a
    normalization's ``axis``, else that of the layers feeding it (an ``Add`` or a
    ``ReLU`` after a channels-first convolution is channels-first), else Keras's
    ``image_data_format()``."""
    if ndim <= 2:
        return Layout("first", 0)
    fmt = _data_format(layer, ndim) or keras.config.image_data_format()
    return Layout("first" if fmt == "channels_first" else "last", ndim - 2)


def _data_format(layer: Any, ndim: int) -> str | None:
    """The format of ``layer`` or, breadth first, of the nearest layers feeding it through
    layers that keep the shape (an axis reorder, or a Lambda changing the shape, ends the
    search); each layer is visited once."""
    seen: set[int] = set()
    todo = [layer]
    while todo and len(seen) < 256:
        here = todo.pop(0)
        if here is None or id(here) in seen:
            continue
        seen.add(id(here))
        fmt = _own_format(here, ndim)
        if fmt is not None:
            return fmt
        if isinstance(here, _REORDERS):
            continue
        shape = _output_shape(here)
        nodes = getattr(here, "_inbound_nodes", None) or []
        for parent in getattr(nodes[0], "parent_nodes", []) if nodes else []:
            op = getattr(parent, "operation", None)
            if shape is not None and _output_shape(op) == shape:
                todo.append(op)
    return None


def _own_format(layer: Any, ndim: int) -> str | None:
    fmt = getattr(layer, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return str(fmt)
    if isinstance(layer, _FEATURES_LAST):
        return "channels_last"
    axis = getattr(layer, "axis", None)
    if "Normalization" in type(layer).__name__ and isinstance(axis, int):
        return "channels_first" if axis == 1 else "channels_last" if axis in (-1, ndim - 1) \
            else None
    return None


def _output_shape(layer: Any) -> tuple[Any, ...] | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, TypeError):  # not built, or called several times
        return None


def sequence_inputs(x: Any, mask: Any, token_key: str | None) -> tuple[Any, Any]:
    """The ``(n, L)`` real-token mask and token ids of a dict batch, as NumPy, when present."""
    m = ids = None
    if callable(mask):
        m = mask(x)
    elif isinstance(x, Mapping) and mask is not None:
        keys = (mask,) if isinstance(mask, str) else tuple(mask)
        m = next((x[k] for k in keys if k in x), None)
    if m is not None:
        m = np.asarray(keras.ops.convert_to_numpy(m)) != 0
        if m.ndim != 2:
            raise ValueError(f"The attention mask has shape {m.shape}; it must be (batch, tokens).")
    if token_key is not None and isinstance(x, Mapping) and token_key in x:
        t = np.asarray(keras.ops.convert_to_numpy(x[token_key]))
        if t.ndim == 2 and np.issubdtype(t.dtype, np.integer):
            ids = t
    return m, ids


def masking_layers(model: Any) -> list[str]:
    """The layers of ``model`` that mask token id 0 themselves (``mask_zero=True``)."""
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") \
        else getattr(model, "layers", [])
    return [str(layer.name) for layer in layers if getattr(layer, "mask_zero", False)]


class KerasPooler:
    """Pools the captures of a :class:`~nnsig_keras.KerasAdapter` per its ``pool``/``layout``."""

    def __init__(self, pool: Any, layout: Any) -> None:
        self.pool = check_pool(pool)
        self.layout = check_layout_spec(layout)
        self.plans: dict[str, tuple[Layout | None, Any, bool, bool]] = {}
        self.source: dict[str, tuple[int, ...]] = {}

    def plan(self, records: list[tuple[str, str, Any, np.ndarray]]) -> None:
        """Decide each capture's layout and modes on the first batch."""
        specs = SpecMatches(self.pool, self.layout)
        for name, path, layer, value in records:
            mode, lay = specs.of((name, path), value.ndim)
            if lay is None:
                lay = keras_layout(layer, value.ndim)
            sample, has_sample, has_tokens = split_modes(mode)
            if has_sample:
                sample = resolve_auto(sample, lay if value.ndim > 2 else None)
            self.plans[name] = (lay, sample, has_sample, has_tokens)
            self.source[name] = tuple(int(s) for s in value.shape[1:])
        specs.check_all_used([r[0] for r in records])

    def apply(self, name: str, value: np.ndarray, mask: Any, token_ids: Any) -> dict[str, Any]:
        """The entries of one capture: ``{name: pooled}`` and/or ``{name@tokens: TokenRows}``."""
        lay, mode, has_sample, has_tokens = self.plans[name]
        out: dict[str, Any] = {}
        fix = _FIX.format(name=name)
        if has_sample:
            out[name] = np.ascontiguousarray(
                pool_array(value, mode, lay, mask, name=name, fix=fix), dtype=np.float32
            )
        if has_tokens:
            rows: TokenRows = token_rows_array(value, lay, mask, token_ids, name=name, fix=fix)
            out[token_name(name)] = rows
        return out

    def describe(self, name: str) -> dict[str, Any]:
        """``layout``, ``pool`` and ``source_shape`` of a capture, for the model summary."""
        if name not in self.plans:
            return {}
        lay, mode, has_sample, has_tokens = self.plans[name]
        text = "callable" if callable(mode) else "none" if mode is None else str(mode)
        if has_tokens:
            text = f"{text}+tokens" if has_sample else "tokens"
        return {"source_shape": list(self.source[name]),
                "layout": lay.code if lay is not None else None, "pool": text}
