"""The adapter's bookkeeping across batches: sequence inputs, capture names, the layer summary."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from nnsig_core._warnings import warn
from nnsig_core.protocol import LayerSelectionError

from ._capture import Recorder
from ._summary import module_config, n_parameters

if TYPE_CHECKING:
    from .adapter import TorchAdapter

logger = logging.getLogger("nnsig_torch")


def sequence_inputs(
    x: Any, mask: Any, token_key: str | None, n: int | None, batch_axis: int = 0
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The ``(n, L)`` real-token mask and token ids of a (moved) batch, when it has them
    (``mask`` and ``token_key`` as for :class:`~nnsig_torch.TorchAdapter`). With
    ``batch_axis=1`` those read from the batch's keys are ``(L, n)``, as its other inputs;
    a ``mask`` callable returns ``(n, L)``."""
    m = ids = None
    if callable(mask):
        m = mask(x)
    elif mask is not None and isinstance(x, Mapping):
        keys = (mask,) if isinstance(mask, str) else tuple(mask)
        m = next((x[k] for k in keys if x.get(k) is not None), None)
        if m is not None and batch_axis == 1:
            m = torch.as_tensor(m).T
    if m is not None:
        if not isinstance(m, torch.Tensor):
            m = torch.as_tensor(m)
        if m.ndim != 2 or (n is not None and m.shape[0] != n):
            got = "from mask=" if callable(mask) else (
                "read as (tokens, batch), as batch_axis=1 reads the inputs; "
                if batch_axis == 1 else "")
            raise ValueError(
                f"The attention mask has shape {tuple(m.shape)}{' ' + got if got else ''}; it "
                f"must be (batch {n}, tokens). Pass mask=None to ignore it, or "
                "mask=callable(inputs) returning it as (batch, tokens)."
            )
        m = m != 0
    if token_key is not None and isinstance(x, Mapping):
        t = x.get(token_key)
        if isinstance(t, torch.Tensor) and t.ndim == 2 and not t.is_floating_point():
            ids = t.T if batch_axis == 1 else t
    return m, ids


def decoder_inputs(
    x: Any, mask: Any, token_key: str | None, n: int | None, batch_axis: int = 0
) -> tuple[torch.Tensor | None, torch.Tensor | None] | None:
    """The decoder's mask (``decoder_attention_mask``, absent: every token is real) and
    token ids of an encoder-decoder's dict batch (``decoder_*`` keys), else ``None``."""
    if not isinstance(x, Mapping) or not any(str(k).startswith("decoder_") for k in x):
        return None
    if callable(mask) or mask is None:
        return sequence_inputs(x, mask, None, n, batch_axis)[0], None
    dec = {"attention_mask": x.get("decoder_attention_mask")}
    if token_key is not None:
        dec["input_ids"] = x.get("decoder_" + token_key)
    return sequence_inputs(dec, "attention_mask", "input_ids", n, batch_axis)


def _check_explicit_ran(adapter: TorchAdapter, rec: Recorder, why: str = "") -> None:
    missing = sorted(n for n in adapter._explicit if n not in rec.calls)
    if missing:
        raise LayerSelectionError(
            f"Selected layer(s) never ran during the forward pass: {', '.join(missing)}.{why}"
        )


def first_batch_names(adapter: TorchAdapter, rec: Recorder) -> list[str]:
    """The capture names of the first batch, warning of what was left out."""
    _check_explicit_ran(adapter, rec, " Their forward() is not called by the model (e.g. only "
                        "their weights are used).")
    if not rec.values:
        raise LayerSelectionError(
            "None of the selected modules ran during the forward pass (or none of their "
            "outputs has a batch axis): " + ", ".join(adapter.layer_names[:8])
        )
    idle = [n for n in adapter.layer_names if n not in rec.calls]
    if idle:
        warn(
            f"{len(idle)} selected module(s) never ran and are not captured: "
            + ", ".join(idle[:8]) + (", ..." if len(idle) > 8 else "")
        )
    if rec.skipped:
        logger.info(
            "Left out %d output(s) without a batch axis (position tables, shared biases): %s",
            len(rec.skipped), ", ".join(rec.skipped[:6]) + (", ..." if len(rec.skipped) > 6 else ""),
        )
    return list(rec.values)


def check_names(adapter: TorchAdapter, rec: Recorder, names: list[str] | None) -> list[str]:
    """The first batch's capture names, checked against this batch's (a missing one is an
    error; extras of modules not named exactly are ignored)."""
    assert names is not None
    _check_explicit_ran(adapter, rec)
    got = set(rec.values)
    lost = [n for n in names if n not in got]
    # With one sample, a tensor shared by the batch (T5's position bias, (1, heads, q, k))
    # looks like one with a batch axis: one not captured on the first batch is ignored.
    extra = [] if rec.n == 1 else sorted(
        n for n in got - set(names) if rec.values[n].module in adapter._explicit)
    if lost or extra:
        raise LayerSelectionError(
            "The captured layers differ from the first batch's"
            + (f"; new: {', '.join(extra)}" if extra else "")
            + (f"; missing: {', '.join(lost)}" if lost else "")
            + ". The model's control flow depends on the data; select layers that "
            "run on every batch."
        )
    return list(names)


def layer_entries(adapter: TorchAdapter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``layers`` and ``token_layers`` of the model summary."""
    model = adapter.model
    if adapter._names is None:
        selected = [(n, model.get_submodule(n)) for n in adapter.layer_names]
        return [{"name": n, "type": type(m).__name__, "parameters": n_parameters(m),
                 "config": module_config(m)} for n, m in selected], []
    layers, tokens = [], []
    for name in adapter._names:
        plan = adapter._plans[name]
        m = model.get_submodule(plan.module)
        base: dict[str, Any] = {"name": name, "type": type(m).__name__}
        tail = {
            "source_shape": list(plan.source_shape),
            "layout": plan.layout.code if plan.layout is not None else None,
            "pool": plan.describe_mode(),
            "parameters": n_parameters(m),
            "config": module_config(m),
        }
        if plan.sample and name in adapter._shapes:
            layers.append({**base, "shape": list(adapter._shapes[name]), **tail})
        if plan.tokens and name in adapter._token_shapes:
            tokens.append({**base, "shape": list(adapter._token_shapes[name]), **tail})
    return layers, tokens
