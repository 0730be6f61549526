"""The layers a practitioner would capture first, by model family (``layers=None``).

The rule (``docs/design.md``, "The default selection"): the innermost blocks holding
attention, else the outermost block groups, else every activation module, else every
hidden leaf but the last; at most :data:`MAX_DEFAULT_LAYERS`, evenly spread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from torch import nn

from nnsig_core.protocol import LayerSelectionError

logger = logging.getLogger("nnsig_torch")

#: At most this many layers are captured by default (evenly spread).
MAX_DEFAULT_LAYERS = 12

#: Module types the default selection captures in a model without blocks.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.PReLU,
    nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GLU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid,
)
_ACTIVATION_MODULES = ("transformers.activations", "timm.layers.activations")

# Leaves that never change their input in eval mode: capturing them only duplicates data.
_PASS_THROUGH_TYPES: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.AlphaDropout, nn.FeatureAlphaDropout,
)
_GENERIC = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class DefaultSelection:
    """The default's module names, how they were chosen, whether only each module's first
    output is kept (blocks), and the next rule's selection, used when none of these
    modules yields a tensor with a batch axis."""

    names: list[str]
    how: str
    first_only: bool
    total: int
    fallback: DefaultSelection | None = None

    def log(self) -> None:
        """Log the choice on the ``nnsig_torch`` logger (INFO)."""
        spread = f" of {self.total}, evenly spread" if self.total > len(self.names) else ""
        shown = ", ".join(self.names[:6]) + (", ..." if len(self.names) > 6 else "")
        logger.info(
            "Capturing %d %s%s by default: %s (pass layers= to choose; "
            "TorchAdapter.available_layers(model, x) lists every layer)",
            len(self.names), self.how, spread, shown,
        )


def is_activation(module: nn.Module) -> bool:
    """An activation module: torch's, or one of ``transformers``' or ``timm``'s classes."""
    if isinstance(module, ACTIVATION_TYPES):
        return True
    mod = type(module).__module__
    return mod.startswith(_ACTIVATION_MODULES) and next(module.children(), None) is None


def _is_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, nn.MultiheadAttention) or "Attention" in name or "Attn" in name


def _key(module: nn.Module) -> object:
    """Siblings alike: the same class or, for plain containers, the same child classes."""
    if type(module) in _GENERIC:
        return (type(module), frozenset(type(c).__name__ for c in module.children()))
    return type(module)


def _head(named: list[tuple[str, nn.Module]]) -> str | None:
    """The classifier head: the last leaf with parameters, if linear or convolutional."""
    for name, m in reversed(named):
        if next(m.children(), None) is None and next(m.parameters(recurse=False), None) is not None:
            linear = isinstance(m, (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd))
            return name if linear or type(m).__name__ == "Conv1D" else None
    return None


def _depth(name: str) -> int:
    return 0 if not name else name.count(".") + 1


def _is_block(module: nn.Module) -> bool:
    """Not a leaf, and holds two modules or more with parameters of their own (a
    norm-and-activation wrapper such as timm's ``BatchNormAct2d`` is not a block)."""
    if next(module.children(), None) is None:
        return False
    weighted = 0
    for m in module.modules():
        if next(m.parameters(recurse=False), None) is not None:
            weighted += 1
            if weighted >= 2:
                return True
    return False


def _groups(model: nn.Module, head: str | None) -> Iterator[tuple[str, list[str]]]:
    """Every group of two or more sibling blocks alike, but the one holding ``head``, as
    (parent name, member names)."""
    for parent, module in model.named_modules():
        by_key: dict[object, list[str]] = {}
        for child_name, child in module.named_children():
            if not _is_block(child):
                continue
            full = f"{parent}.{child_name}" if parent else child_name
            if head is not None and (head == full or head.startswith(full + ".")):
                continue  # holds the head
            by_key.setdefault(_key(child), []).append(full)
        for members in by_key.values():
            if len(members) >= 2:
                yield parent, members


def _spread(names: list[str], limit: int) -> list[str]:
    if len(names) <= limit:
        return names
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, limit)).astype(int))
    return [names[i] for i in idx]


def _transformer_blocks(model: nn.Module, groups: list[tuple[str, list[str]]]) -> list[str]:
    modules = dict(model.named_modules())
    attention = {n for n, m in modules.items() if _is_attention(m)}

    def attention_block(name: str) -> bool:  # holds attention inside, is not attention itself
        return name not in attention and any(a.startswith(name + ".") for a in attention)

    members = [m for _p, ms in groups if all(attention_block(x) for x in ms) for m in ms]
    inner = [
        m for m in members
        if not any(o != m and o.startswith(m + ".") for o in members)
    ]
    order = {n: i for i, n in enumerate(modules)}
    return sorted(inner, key=order.__getitem__)


def _rules(model: nn.Module) -> list[tuple[list[str], str, bool]]:
    """The non-empty selections of the rules, in the order they apply."""
    named = [(n, m) for n, m in model.named_modules() if n]
    leaves = [n for n, m in named if next(m.children(), None) is None]
    groups = list(_groups(model, _head(named)))
    order = {n: i for i, (n, _m) in enumerate(named)}
    found: list[tuple[list[str], str, bool]] = []
    if groups and any(_is_attention(m) for _n, m in named):
        blocks = _transformer_blocks(model, groups)
        if len(blocks) >= 2:  # not a convnet with one attention stage (EfficientFormer...)
            found.append((blocks, "transformer block outputs", True))
    if groups:
        top = min(_depth(p) for p, _ in groups)
        found.append((sorted((m for p, ms in groups if _depth(p) == top for m in ms),
                             key=order.__getitem__), "block outputs", True))
    activations = [n for n, m in named if is_activation(m)]
    if activations:
        found.append((activations, "activation modules", False))
    hidden = [n for n in leaves[:-1] if not isinstance(model.get_submodule(n), _PASS_THROUGH_TYPES)]
    if hidden:
        found.append(
            (hidden, "hidden leaf modules (the model has no blocks and no activation modules)",
             False)
        )
    return found


def default_layers(model: nn.Module, log: bool = True) -> DefaultSelection:
    """The default selection of ``model`` (the rule is in the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The (unwrapped) model.
    log : bool
        Log the choice on the ``nnsig_torch`` logger.

    Returns
    -------
    DefaultSelection
        With the next rule's selection as its ``fallback``.

    Raises
    ------
    LayerSelectionError
        When the model has no hidden layer to capture.
    """
    rules = _rules(model)
    if not rules:
        raise LayerSelectionError(
            f"{type(model).__name__} has no hidden layer to capture by default; "
            "pass `layers=` (TorchAdapter.available_layers(model, x) lists them)."
        )
    selection: DefaultSelection | None = None
    for names, how, first_only in reversed(rules):
        selection = DefaultSelection(_spread(names, MAX_DEFAULT_LAYERS), how, first_only,
                                     len(names), selection)
    assert selection is not None
    if log:
        selection.log()
    return selection
