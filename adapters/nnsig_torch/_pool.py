"""Reducing captured tensors per sample (``pool=``) with torch operations on their device,
as :mod:`nnsig_core.protocol.pooling` (the NumPy reference) does."""

from __future__ import annotations

from typing import Any

import torch

from nnsig_core.protocol.axes import AmbiguousLayoutError, Layout
from nnsig_core.protocol.pooling import (
    ambiguous_layout_message,
    empty_sequence_message,
    mask_for,
    resolve_auto,
    tokens_need_positions,
)

_FIX = "TorchAdapter(..., layout={{{name!r}: 'NCHW'}}) (or 'NHWC', 'NLC', 'NCL'...)"


def _mask(layout: Layout, t: torch.Tensor, mask: torch.Tensor | None,
          name: str) -> torch.Tensor | None:
    m = mask_for(layout, tuple(t.shape), mask, name)
    return None if m is None else m.to(t.device)


def _check_nonempty(mask: torch.Tensor) -> None:
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        row = int(torch.nonzero(empty)[0, 0])
        raise ValueError(empty_sequence_message(row))


def pool_tensor(
    t: torch.Tensor, mode: Any, layout: Layout | None, mask: torch.Tensor | None, name: str
) -> torch.Tensor:
    """Pool a batch-first tensor per sample: a float32 ``(n, ...)`` tensor, possibly a view
    of ``t``. An unknown layout a mode needs is an :class:`AmbiguousLayoutError`; a
    non-sequence for ``"cls"``/``"last"``, a bad callable result or an empty sample a
    ``ValueError``."""
    if callable(mode):
        out = mode(t.float())
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != t.shape[0]:
            raise ValueError(
                f"A pool callable must return a tensor with {t.shape[0]} rows; "
                f"got {getattr(out, 'shape', type(out).__name__)}."
            )
        t, mode = out, None
    if t.ndim == 1:
        t = t.unsqueeze(1)
    if t.ndim > 2 and mode not in (None, "flatten", "auto") and layout is None:
        raise AmbiguousLayoutError(ambiguous_layout_message(name, tuple(t.shape[1:]), mode,
                                                            _FIX.format(name=name)))
    mode = resolve_auto(mode, layout if t.ndim > 2 else None)
    if mode is None:
        return t.float()
    if mode == "flatten":
        return t.reshape(t.shape[0], -1).float()
    if t.ndim <= 2 or layout is None or layout.positions == 0:
        if mode in ("cls", "last"):
            raise ValueError(
                f"pool {mode!r} of layer {name!r} needs a sequence; it has shape "
                f"{tuple(t.shape[1:])}."
            )
        return t.float()
    axes = layout.position_axes()
    m = _mask(layout, t, mask, name)
    if mode in ("cls", "last"):
        if not layout.is_sequence:
            raise ValueError(
                f"pool {mode!r} of layer {name!r} needs a sequence (one position axis); its "
                f"layout is {layout.code}. Use 'mean', 'max' or 'tokens'."
            )
        seq = t.movedim(axes[0], 1)
        n, length = seq.shape[0], seq.shape[1]
        if m is None:
            return seq[:, 0 if mode == "cls" else length - 1].float()
        _check_nonempty(m)
        mi = m.to(torch.int8)
        idx = mi.argmax(1) if mode == "cls" else length - 1 - mi.flip(1).argmax(1)
        return seq[torch.arange(n, device=t.device), idx].float()
    if m is not None:
        _check_nonempty(m)
        shape = [t.shape[0]] + [1] * (t.ndim - 1)
        shape[axes[0]] = t.shape[axes[0]]
        w = m.reshape(shape)
        if mode == "mean":
            total = torch.where(w, t, 0).sum(dim=axes, dtype=torch.float32)
            count = m.sum(dim=1, dtype=torch.float32).reshape(-1, *([1] * (total.ndim - 1)))
            return total / count
        return torch.where(w, t, float("-inf")).amax(dim=axes).float()
    if mode == "mean":
        return t.mean(dim=axes, dtype=torch.float32)
    return t.amax(dim=axes).float()


def token_rows_tensor(
    t: torch.Tensor,
    layout: Layout | None,
    mask: torch.Tensor | None,
    token_ids: torch.Tensor | None,
    name: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Every position of every sample a row (``"tokens"``), padding left out: ``(values
    (rows, C) float32, sample, position, token ids or None)``, in sample then position order."""
    if layout is None:
        raise AmbiguousLayoutError(ambiguous_layout_message(name, tuple(t.shape[1:]), "tokens",
                                                            _FIX.format(name=name)))
    if layout.positions == 0:
        raise ValueError(tokens_need_positions(name, tuple(t.shape[1:])))
    n = t.shape[0]
    axes = layout.position_axes()
    moved = t.movedim(axes, tuple(range(1, 1 + len(axes))))  # (n, *positions, C)
    flat = moved.reshape(n, -1, moved.shape[-1])
    n_pos = flat.shape[1]
    m = _mask(layout, t, mask, name)
    if m is None:
        sample = torch.arange(n, device=t.device).repeat_interleave(n_pos)
        position = torch.arange(n_pos, device=t.device).repeat(n)
        values = flat.reshape(n * n_pos, -1)
    else:
        sample, position = torch.nonzero(m, as_tuple=True)
        values = flat[sample, position]
    token = None
    if token_ids is not None and layout.is_sequence and tuple(token_ids.shape) == (n, n_pos):
        token = token_ids.to(t.device)[sample, position]
    return values.float(), sample, position, token
