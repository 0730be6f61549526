"""Choosing the modules of a PyTorch model to capture, and listing the capturable ones.

``layers=`` is resolved by :func:`nnsig_core.protocol.resolve_selection`; what is torch's
is here: the candidates (``named_modules()``) and unwrapping ``DataParallel``/DDP/
``torch.compile`` and their name prefixes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nnsig_core.protocol import LayerSpec, SelectionWording, resolve_selection

from ._capture import Recorder, hooks
from ._defaults import default_layers
from ._runtime import (
    batch_size,
    call_model,
    float_dtype,
    forward_context,
    model_device,
    move_inputs,
)
from ._summary import LayerInfo, LayerList, n_parameters

logger = logging.getLogger("nnsig_torch")

# Prefixes a name copied from a wrapped model carries (DataParallel/DDP, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside ``DataParallel``, DDP or ``torch.compile`` wrappers."""
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
    """The module names ``layers`` selects, in ``named_modules()`` order, and those given
    exactly (which must run on every batch); a wrapper's name prefix is dropped."""
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


def available_layers(model: nn.Module, example_input: Any = None, *,
                     device: str | torch.device | None = None,
                     selected: Sequence[str] | None = None, batch_axis: int = 0) -> LayerList:
    """List the layers of a model that can be captured.

    Parameters
    ----------
    model : torch.nn.Module
        The model (wrappers are unwrapped).
    example_input : Any, optional
        A small batch: every module is run once and each capture name is listed
        with its per-sample shape, in the order they ran, then the modules that
        did not run. Without it, modules are listed without shapes.
    device : str or torch.device, optional
        Where to put ``example_input``; the model's device by default.
    selected : sequence of str, optional
        Module names to mark as selected; the default selection when omitted.
    batch_axis : int
        The batch axis of ``example_input`` (1 for sequence-first models).

    Returns
    -------
    LayerList
        A list of :class:`LayerInfo` that prints as a table.
    """
    model = unwrap_model(model)
    modules = {n: m for n, m in model.named_modules() if n}
    if selected is None:
        try:
            selected = default_layers(model, log=False).names
        except ValueError:
            selected = []
    chosen = set(selected)

    def info(name: str, module_name: str, shape: tuple[int, ...] | None) -> LayerInfo:
        m = modules[module_name]
        return LayerInfo(
            name, module_name, type(m).__name__, shape, n_parameters(m), module_name in chosen
        )

    if example_input is None:
        return LayerList(info(n, n, None) for n in modules)
    dev = torch.device(device) if device is not None else model_device(model)
    x = move_inputs(example_input, dev, float_dtype(model))
    rec = Recorder(batch_size(x, batch_axis), batch_axis=batch_axis)
    with forward_context(model, list(modules)), hooks(model, list(modules), rec):
        call_model(model, x)
    rows = [info(n, c.module, tuple(c.value.shape[1:])) for n, c in rec.values.items()]
    listed = {c.module for c in rec.values.values()}
    rows += [info(n, n, None) for n in modules if n not in listed]
    return LayerList(rows)


class ClassOrInstance:
    """``available_layers`` on the class takes a model; on an instance it uses the adapter's."""

    def __init__(self, func: Any) -> None:
        self.func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]  # a descriptor

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return available_layers
        return functools.partial(self.func, obj)
