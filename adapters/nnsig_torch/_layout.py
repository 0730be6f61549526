"""Finding the layout of captured tensors (channels first or last) from the modules around them.

On the first batch a :class:`LayoutTracker` hooks every module and collects evidence per
tensor (by identity, through weak references): the module that made it, the modules that
read it, and links through modules without a rule to an input of the same shape (or
permuted by torchvision's ``Permute``), propagated after the pass (``docs/design.md``).
"""

from __future__ import annotations

import itertools
import weakref
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from nnsig_core.protocol.axes import Layout

from ._capture import flatten_output, forward_hooks
from ._runtime import ATTENTION_TYPES

FIRST, LAST = "first", "last"

_POOLING = nn.modules.pooling
_CHANNELS_FIRST: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LocalResponseNorm,
    _POOLING._MaxPoolNd, _POOLING._AvgPoolNd, _POOLING._AdaptiveAvgPoolNd,
    _POOLING._AdaptiveMaxPoolNd, _POOLING._LPPoolNd, nn.Upsample, nn.PixelShuffle,
    nn.PixelUnshuffle, nn.ChannelShuffle, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.FractionalMaxPool2d, nn.FractionalMaxPool3d, nn.Fold,
)
_RMS_NORM = getattr(nn, "RMSNorm", None)
# Modules that read channels-last tensors (and make them).
_READS_CHANNELS_LAST: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.LayerNorm, *(() if _RMS_NORM is None else (_RMS_NORM,)),
)
_CHANNELS_LAST: tuple[type[nn.Module], ...] = (
    *_READS_CHANNELS_LAST, nn.Embedding, nn.EmbeddingBag, nn.RNNBase, *ATTENTION_TYPES,
)


def _name_rule(module: nn.Module) -> str | None:
    """Rules by class name, for norms and linear layers of other libraries."""
    cls = type(module)
    name = cls.__name__
    fmt = getattr(module, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return FIRST if fmt == "channels_first" else LAST
    if name.lower().endswith(("2d", "3d")) and ("Norm" in name or "norm" in name):
        return FIRST  # LayerNorm2d (timm, torchvision), RmsNorm2d, GroupNorm1-style 2-D norms
    if cls.__module__.startswith("transformers") and name == "Conv1D":
        return LAST  # GPT-2's transposed linear layer
    if any(k in name for k in ("LayerNorm", "RMSNorm", "RmsNorm")):
        return LAST
    return None


def producer_side(module: nn.Module, index: int) -> str | None:
    """The channel side of output leaf ``index`` of ``module``, if known."""
    rule = _name_rule(module)
    if rule is not None:
        return rule
    if isinstance(module, nn.MultiheadAttention):
        return LAST if index == 0 else None  # the attention weights are not features
    if isinstance(module, _CHANNELS_LAST):
        return LAST
    if isinstance(module, _CHANNELS_FIRST):
        return FIRST
    return None


def _consumer_side(module: nn.Module) -> str | None:
    """The channel side a module expects of its (first) input, if known."""
    rule = _name_rule(module)
    if rule is not None:
        return rule
    if isinstance(module, _READS_CHANNELS_LAST):
        return LAST
    if isinstance(module, _CHANNELS_FIRST) and not isinstance(module, nn.Fold):
        return FIRST
    return None


def _first_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor | None:
    for v in args:
        if isinstance(v, torch.Tensor):
            return v
    for key in ("hidden_states", "input", "x", "inputs", "src", "query"):
        v = kwargs.get(key)
        if isinstance(v, torch.Tensor):
            return v
    return None


class LayoutTracker:
    """Collects layout evidence during one forward pass (see the module docstring)."""

    def __init__(self) -> None:
        # Every tensor seen gets a token, which outlives it (a reused id gets a new one).
        self._tokens: dict[int, tuple[weakref.ref, int]] = {}
        self.side: dict[int, tuple[int, str]] = {}  # token -> (strength, side)
        self.links: list[tuple[int, int, tuple[int, ...] | None]] = []  # (out, in, permutation)
        self._count = itertools.count(1)

    def token(self, t: torch.Tensor) -> int | None:
        """The token of a live tensor seen during the pass (``None`` if never seen)."""
        entry = self._tokens.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def _watch(self, t: torch.Tensor) -> int | None:
        key = self.token(t)
        if key is not None:
            return key
        key, ident = next(self._count), id(t)
        try:
            ref = weakref.ref(t, lambda r: self._drop(ident, r))
        except TypeError:
            return None
        self._tokens[ident] = (ref, key)
        return key

    def _drop(self, ident: int, ref: weakref.ref) -> None:
        entry = self._tokens.get(ident)
        if entry is not None and entry[0] is ref:
            del self._tokens[ident]

    def _claim(self, key: int | None, side: str | None, strength: int) -> None:
        if key is None or side is None:
            return
        old = self.side.get(key)
        if old is None or old[0] < strength:
            self.side[key] = (strength, side)

    def hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
             output: Any) -> None:
        """A forward hook (``with_kwargs=True``) on every module of the model."""
        inp = _first_input(args, kwargs)
        in_key = self._watch(inp) if inp is not None else None
        self._claim(in_key, _consumer_side(module), 1)
        perm = getattr(module, "dims", None) if type(module).__name__ == "Permute" else None
        for i, (_path, t) in enumerate(flatten_output(output)):
            if not t.is_floating_point():
                continue
            key = self._watch(t)
            side = producer_side(module, i)
            if side is not None:
                self._claim(key, side, 2)
            elif key is not None and in_key is not None and key != in_key:
                if perm is not None and len(perm) == t.ndim:
                    self.links.append((key, in_key, tuple(int(p) for p in perm)))
                elif inp is not None and tuple(t.shape) == tuple(inp.shape):
                    self.links.append((key, in_key, None))

    def finish(self) -> None:
        """Propagate the evidence to a fixed point (call once, after the pass)."""
        changed = True
        while changed:
            changed = False
            for out, inp, perm in self.links:
                a, b = self.side.get(out), self.side.get(inp)
                if perm is None:
                    if a is None and b is not None:
                        self.side[out] = (0, b[1])
                        changed = True
                    elif b is None and a is not None:
                        self.side[inp] = (0, a[1])
                        changed = True
                elif a is None and b is not None:
                    nd = len(perm)
                    axis = 1 if b[1] == FIRST else nd - 1
                    moved = perm.index(axis) if axis in perm else -1
                    if moved == 1:
                        self.side[out] = (0, FIRST)
                        changed = True
                    elif moved == nd - 1:
                        self.side[out] = (0, LAST)
                        changed = True

    def layout_of(self, t: torch.Tensor, transposed: bool) -> Layout | None:
        """The layout of captured tensor ``t`` (as returned, its axes 0 and 1 then swapped
        when ``transposed``), if known, after :meth:`finish`."""
        if t.ndim <= 2:
            return Layout(FIRST, 0)
        key = self.token(t)
        found = self.side.get(key) if key is not None else None
        if found is None:
            return None
        side = found[1]
        if transposed and side == FIRST:
            return None  # a channels-first tensor whose batch was axis 1: no such layout
        return Layout(side, t.ndim - 2)


def tracking(model: nn.Module, tracker: LayoutTracker) -> AbstractContextManager[None]:
    """``tracker``'s hook on every module of ``model``, for the ``with`` block."""
    return forward_hooks(((m, tracker.hook) for m in model.modules()), with_kwargs=True)
