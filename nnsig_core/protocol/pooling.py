"""Layout-aware pooling of NumPy batches: the reference semantics of ``pool=``.

The Keras adapter pools with these functions; the PyTorch adapter implements the same
semantics on the device (its tests compare both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.protocol.axes import AmbiguousLayoutError, Layout
from nnsig_core.protocol.token_rows import TokenRows


def ambiguous_layout_message(name: str, shape: tuple[int, ...], mode: Any, fix: str) -> str:
    """The message of an :class:`AmbiguousLayoutError` for a capture (``fix``: how to set it)."""
    return (f"Cannot pool layer {name!r} with {mode!r}: its output has per-sample shape {shape} "
            "and its layout is unknown (which axis holds the channels, which the positions?). "
            f"Say it: {fix}, or pass a callable as its pool.")


#: The keys the Keras adapter's ``mask=`` tries by default (Keras Hub's ``padding_mask`` is
#: nonzero for real tokens); a batch without them has no mask.
DEFAULT_MASK_KEYS = ("attention_mask", "padding_mask")
#: The PyTorch adapter's: Hugging Face's ``attention_mask`` only, since PyTorch's own padding
#: masks (``key_padding_mask``) are nonzero for the padding, the opposite convention.
TORCH_MASK_KEYS = ("attention_mask",)


def check_mask_key(inputs: Any, mask: Any, defaults: tuple[str, ...] = DEFAULT_MASK_KEYS) -> None:
    """Raise when ``mask`` names keys (not the adapter's ``defaults``) and the batch holds none
    of them: a misspelt key would otherwise pool every position, padding included, without a
    word."""
    if mask is None or callable(mask):
        return
    keys = (mask,) if isinstance(mask, str) else tuple(mask)
    if keys in (defaults, DEFAULT_MASK_KEYS):  # a default (either adapter's), not a choice
        return
    if isinstance(inputs, Mapping):
        if any(inputs.get(k) is not None for k in keys):
            return
        held = f"its keys are {sorted(map(str, inputs))}"
    else:
        held = f"it is a {type(inputs).__name__}, not a dict of named inputs"
    raise ValueError(f"mask={mask!r}: the batch has no such key ({held}). Name the batch's "
                     "attention-mask key, pass mask=callable(inputs) returning the (batch, "
                     "tokens) mask, or mask=None to pool every position.")


def pools_a_sequence(layout: Layout | None, mode: Any, tokens: bool) -> bool:
    """Whether a capture's pooling reads a sequence's positions, where a mask applies."""
    return layout is not None and layout.is_sequence and (
        tokens or mode in ("mean", "max", "cls", "last"))


def warn_of_unused_mask(inputs: Any, mask: Any, found: Any, to_numpy: Any,
                        masking_layers: Sequence[str] = (), pooled: bool = True,
                        defaults: tuple[str, ...] = DEFAULT_MASK_KEYS) -> None:
    """Warn (on a first batch) when the default ``mask=`` found no attention mask although the
    batch or the model has one: an input of 0/1 beside token ids of its shape (a dict key or
    a list entry the defaults do not name), or layers that mask token id 0 themselves
    (``masking_layers``); sequences are then pooled over every position, padding included.
    ``pooled``: whether a capture pools a sequence (:func:`pools_a_sequence`); else no mask
    applies, and nothing is said."""
    if not pooled or found is not None or mask is None or callable(mask) or (
            ((mask,) if isinstance(mask, str) else tuple(mask)) != defaults):
        return
    under = " or ".join(map(repr, defaults))
    if not isinstance(inputs, (Mapping, list, tuple)):
        named: list[tuple[Any, Any]] = []
    else:
        named = list(inputs.items() if isinstance(inputs, Mapping) else enumerate(inputs))
    two_d = {k: to_numpy(v) for k, v in named if len(getattr(v, "shape", ())) == 2}
    ids = {k: a.shape for k, a in two_d.items() if a.dtype.kind in "iu"}
    for k, a in two_d.items():
        if isinstance(inputs, Mapping) and not any(w in str(k).lower() for w in ("mask", "pad")):
            continue  # a named mask says so: token_type_ids are 0 and 1 too
        zero_one = a.dtype.kind == "b" or (
            a.dtype.kind in "iuf" and bool(((a == 0) | (a == 1)).all()))
        # ... with a token kept in every row, as a mask of real tokens keeps (a named mask
        # may mark the padding instead: rows without padding are then all 0)
        kept = a.any() if isinstance(inputs, Mapping) else a.any(axis=1).all()
        if (zero_one and not a.all() and kept
                and any(shape == a.shape for j, shape in ids.items() if j != k)):
            fix = repr(k) if isinstance(inputs, Mapping) else f"lambda x: x[{k}]"
            where = f"{k!r}" if isinstance(inputs, Mapping) else f"at position {k}"
            warn(f"The batch's input {where} looks like an attention mask (0 and 1, the shape of "
                 f"the token ids), but no mask is under {under}: "
                 "sequences are pooled over every position, padding included. Pass "
                 f"mask={fix} (nonzero for real tokens; for a mask of the padding, "
                 "mask=lambda x: <it> == 0), or mask=None to keep every position.")
            return
    if masking_layers:
        warn(f"Layer(s) {', '.join(map(repr, masking_layers))} mask token id 0 (mask_zero=True), "
             f"but the batch has no attention mask under {under}: "
             "sequences are pooled over every position, padding included. Pass mask=lambda x: "
             "x != 0 (for dict inputs: x['<ids key>'] != 0), or mask=None to keep every "
             "position.")


def tokens_need_positions(name: str, shape: tuple[int, ...]) -> str:
    """The message of ``pool="tokens"`` on a layer without positions, with the per-layer fix."""
    return (f"pool 'tokens' of layer {name!r} needs positions (a sequence or a feature map); "
            f"it has shape {shape}. Give the token rows to the sequence layers only, by name "
            "or glob: pool={'<sequence layer>': ('mean', 'tokens')} (the other layers keep "
            "the default).")


def resolve_auto(mode: Any, layout: Layout | None) -> Any:
    """``"auto"``: ``"mean"`` when the layout has position axes, else ``None`` (unchanged)."""
    if mode != "auto":
        return mode
    return "mean" if layout is not None and layout.positions > 0 else None


def mask_for(layout: Layout | None, shape: tuple[int, ...], mask: Any, name: str) -> Any:
    """``mask`` ``(n, L)`` when it applies to a sequence batch of ``shape``, else ``None``
    (with a warning when a mask was given for a sequence of another length)."""
    if mask is None or layout is None or not layout.is_sequence:
        return None
    axis = layout.position_axes()[0]
    if tuple(mask.shape) != (shape[0], shape[axis]):
        warn(f"Layer {name!r} has {shape[axis]} positions but the batch's attention mask "
             f"has shape {tuple(mask.shape)}: the mask does not apply, so every position of "
             "the layer is kept, padding included. Give the mask of the model's input (one "
             "entry per input token).")
        return None
    return mask


def sequence_index(mode: str, n: int, length: int, mask: np.ndarray | None) -> np.ndarray:
    """Per sample, the first (``"cls"``) or last (``"last"``) non-padding position."""
    if mask is None:
        return np.full(n, 0 if mode == "cls" else length - 1, dtype=np.int64)
    empty = ~mask.any(axis=1)
    if empty.any():
        raise ValueError(empty_sequence_message(int(np.flatnonzero(empty)[0])))
    if mode == "cls":
        return mask.argmax(axis=1).astype(np.int64)
    return (length - 1 - mask[:, ::-1].argmax(axis=1)).astype(np.int64)


def empty_sequence_message(row: int) -> str:
    """The error of a sample whose mask keeps no token (both adapters)."""
    return (f"Sample {row} of the batch has no token in its attention mask (nonzero marks a "
            "real token): nothing to pool. Leave empty sequences out of the data; if the mask "
            "marks the padding instead (PyTorch's key_padding_mask), pass mask=lambda x: "
            "x['<its key>'] == 0.")


def pool_array(a: np.ndarray, mode: Any, layout: Layout | None, mask: np.ndarray | None = None,
               name: str = "?",
               fix: str = "pass layout={name: 'NCHW' | 'NHWC' | 'NLC' ...}") -> np.ndarray:
    """Pool one batch ``(n, ...)`` per sample with a sample-level ``mode``: ``(n, ...)`` float32.

    ``layout`` is ``None`` when unknown; ``mask`` ``(n, L)`` marks the real tokens;
    ``name`` and ``fix`` (how the user sets the layer's layout) go into the messages.
    """
    if callable(mode):
        out = np.asarray(mode(a))
        if out.ndim < 1 or out.shape[0] != a.shape[0]:
            raise ValueError(f"A pool callable must return an array with {a.shape[0]} rows; "
                             f"got {out.shape}.")
        a, mode = out, None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim > 2 and mode not in (None, "flatten", "auto") and layout is None:
        raise AmbiguousLayoutError(ambiguous_layout_message(name, a.shape[1:], mode, fix))
    mode = resolve_auto(mode, layout if a.ndim > 2 else None)
    if mode is None:
        return a.astype(np.float32, copy=False)
    if mode == "flatten":
        return a.reshape(a.shape[0], -1).astype(np.float32, copy=False)
    assert layout is not None or a.ndim <= 2
    if a.ndim <= 2 or layout is None or layout.positions == 0:
        if mode in ("cls", "last"):
            raise ValueError(f"pool {mode!r} of layer {name!r} needs a sequence; it has shape "
                             f"{a.shape[1:]}.")
        return a.astype(np.float32, copy=False)
    axes = layout.position_axes()
    m = mask_for(layout, a.shape, mask, name)
    if mode in ("cls", "last"):
        if not layout.is_sequence:
            raise ValueError(f"pool {mode!r} of layer {name!r} needs a sequence (one position "
                             f"axis); its layout is {layout.code}. Use 'mean', 'max' or 'tokens'.")
        idx = sequence_index(mode, a.shape[0], a.shape[axes[0]], m)
        moved = np.moveaxis(a, axes[0], 1)
        return moved[np.arange(a.shape[0]), idx].astype(np.float32)
    if m is not None:
        if not m.any(axis=1).all():
            raise ValueError(empty_sequence_message(int(np.flatnonzero(~m.any(axis=1))[0])))
        shape = [a.shape[0]] + [1] * (a.ndim - 1)
        shape[axes[0]] = a.shape[axes[0]]
        w = m.reshape(shape)
        if mode == "mean":
            total = np.where(w, a, 0).sum(axis=axes, dtype=np.float64)
            return (total / m.sum(axis=1).reshape(-1, *([1] * (total.ndim - 1)))).astype(np.float32)
        return np.where(w, a, -np.inf).max(axis=axes).astype(np.float32)
    if mode == "mean":
        return a.mean(axis=axes, dtype=np.float64).astype(np.float32)
    return a.max(axis=axes).astype(np.float32)


def token_rows_array(a: np.ndarray, layout: Layout | None, mask: np.ndarray | None = None,
                     token_ids: np.ndarray | None = None, name: str = "?",
                     fix: str = "pass layout={name: 'NLC' ...}") -> TokenRows:
    """Every position of every sample a row (``pool="tokens"``), padding left out, in sample
    then position order; ``token_ids`` ``(n, L)`` are recorded when the lengths match."""
    if layout is None:
        raise AmbiguousLayoutError(ambiguous_layout_message(name, a.shape[1:], "tokens", fix))
    if layout.positions == 0:
        raise ValueError(tokens_need_positions(name, tuple(a.shape[1:])))
    n = a.shape[0]
    axes = layout.position_axes()
    moved = np.moveaxis(a, axes, range(1, 1 + len(axes)))  # (n, *positions, C)
    n_pos = int(np.prod(moved.shape[1 : 1 + len(axes)]))
    flat = moved.reshape(n, n_pos, -1)
    m = mask_for(layout, a.shape, mask, name)
    keep = np.ones((n, n_pos), dtype=bool) if m is None else m.astype(bool)
    sample, position = np.nonzero(keep)
    token = None
    if token_ids is not None and layout.is_sequence and token_ids.shape == (n, n_pos):
        token = np.asarray(token_ids)[sample, position].astype(np.int64)
    return TokenRows(flat[sample, position].astype(np.float32), sample, position, token)
