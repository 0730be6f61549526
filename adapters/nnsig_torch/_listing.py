"""Listing the capturable layers of a model (``available_layers``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

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
from ._select import unwrap_model
from ._summary import LayerInfo, LayerList, n_parameters


def available_layers(
    model: nn.Module,
    example_input: Any = None,
    *,
    device: str | torch.device | None = None,
    selected: Sequence[str] | None = None,
    batch_axis: int = 0,
) -> LayerList:
    """List the layers of a model that can be captured.

    Parameters
    ----------
    model : torch.nn.Module
        The model (``DataParallel``/DDP/``torch.compile`` wrappers are unwrapped).
    example_input : Any, optional
        A small batch. With it, every module is run once and each capture name
        (``module[:call][.path]``) is listed with its per-sample shape, in the
        order the modules ran, followed by the modules that did not run. Without
        it, modules are listed without shapes.
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
