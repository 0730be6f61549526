"""Choosing which modules of a PyTorch model to capture.

The resolution of ``layers=`` (names, globs, types) is shared with the other
adapters (:func:`nnsig_core.protocol.resolve_selection`); what is torch's is
here: the candidates (``named_modules()``), unwrapping ``DataParallel``/DDP/
``torch.compile`` and their name prefixes. The default selection is in
:mod:`nnsig_torch._defaults`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from torch import nn

from nnsig_core.protocol import LayerSpec, SelectionWording, resolve_selection

logger = logging.getLogger("nnsig_torch")

# Prefixes a name copied from a wrapped model carries (DataParallel/DDP, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside ``DataParallel``, DDP or ``torch.compile`` wrappers, whose
    ``named_modules()`` carry no ``module.`` or ``_orig_mod.`` prefix."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            logger.info("Unwrapping %s: capturing model.module", type(model).__name__)
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            logger.info("Unwrapping a torch.compile'd model: capturing the original module")
            model = model._orig_mod  # type: ignore[assignment]  # an nn.Module, checked above
        else:
            return model


def _strip_wrapper_prefix(name: str, modules: Mapping[str, nn.Module]) -> str:
    """``name`` without a ``module.``/``_orig_mod.`` prefix when that names a module."""
    for prefix in _WRAPPER_PREFIXES:
        if name not in modules and name.startswith(prefix) and name[len(prefix) :] in modules:
            name = name[len(prefix) :]
    return name


def resolve_layers(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]
) -> tuple[list[str], set[str]]:
    """The module names ``layers`` selects in the (unwrapped) ``model``, in
    ``named_modules()`` order, and those given exactly, which must run on every batch.

    Names, globs and ``nn.Module`` subclasses are resolved, and their errors raised, by
    :func:`nnsig_core.protocol.resolve_selection`; a ``module.`` or ``_orig_mod.`` prefix
    copied from a wrapped model is dropped.
    """
    modules = {name: m for name, m in model.named_modules() if name}
    wording = SelectionWording(
        model=type(model).__name__,
        item="module",
        entries="a module name, a glob pattern or an nn.Module subclass",
        listing="TorchAdapter.available_layers(model) lists all names.",
    )
    sel = resolve_selection(
        layers,
        modules,
        wording,
        base=nn.Module,
        rename=lambda name: _strip_wrapper_prefix(name, modules),
    )
    return sel.matched, sel.named
