"""Forward hooks that record the tensors of selected modules during one forward pass."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._structure import capture_name, flatten_output, to_batch_first

__all__ = ["Recorder", "capturable", "hooks"]

logger = logging.getLogger("nnsig_torch")


def capturable(
    module_name: str, call: int, module: nn.Module, output: Any, n: int | None, strict: bool = True
) -> list[tuple[str, torch.Tensor]]:
    """The named, batch-first tensors that one call of a module yields.

    Integer, boolean and complex tensors are not activations: a module that
    returns one directly is an error, and inside a structured output they are
    skipped (e.g. the indices of ``MaxPool2d(return_indices=True)``), as are
    per-batch scalars and non-tensor leaves.

    Parameters
    ----------
    module_name, call : str, int
        The module's qualified name and how many times it already ran.
    module : torch.nn.Module
        The module.
    output : Any
        What it returned.
    n : int or None
        The batch size, when known.
    strict : bool
        Raise on a tensor that cannot be captured instead of skipping it.

    Raises
    ------
    TypeError
        When ``strict`` and the output holds no floating-point tensor.
    ValueError
        When ``strict`` and a floating-point tensor has no batch axis.
    """
    leaves = flatten_output(output)
    bare = len(leaves) == 1 and leaves[0][0] == ""
    found: list[tuple[str, torch.Tensor]] = []
    for path, t in leaves:
        name = capture_name(module_name, call, path)
        if t.is_nested or t.layout != torch.strided:
            if strict:
                raise TypeError(f"Layer {name!r} returned a nested or sparse tensor.")
            continue
        if not t.is_floating_point() or (t.ndim == 0 and not bare):
            if strict and bare:
                raise TypeError(
                    f"Layer {name!r} returns {t.dtype} values; only floating-point "
                    "activations are captured. Select another layer."
                )
            continue
        moved = to_batch_first(t.detach(), n, module, path)
        if moved is None:
            if strict:
                raise ValueError(
                    f"Layer {name!r} returned shape {tuple(t.shape)}, which has no batch "
                    f"axis of size {n} (axis 0 or 1). Select another layer."
                )
            continue
        if moved[1]:
            logger.debug("Layer %r: batch axis moved first from %s", name, tuple(t.shape))
        found.append((name, moved[0]))
    if strict and not found:
        raise TypeError(
            f"Layer {module_name!r} returned {type(output).__name__} with no "
            "floating-point tensor to capture. Select another layer."
        )
    return found


class Recorder:
    """Per-forward-pass state: how often each module ran and what it produced.

    Parameters
    ----------
    n : int or None
        The batch size.
    process : callable
        ``process(capture_name, module_name, tensor) -> tensor`` applied to
        every batch-first tensor (pooling and the protective copy).
    strict : bool
        See :func:`capturable`.
    """

    def __init__(
        self,
        n: int | None,
        process: Callable[[str, str, torch.Tensor], Any],
        strict: bool = True,
    ) -> None:
        self.n = n
        self.process = process
        self.strict = strict
        self.calls: dict[str, int] = {}
        self.values: dict[str, Any] = {}
        self.modules: dict[str, str] = {}

    def hook(self, module_name: str) -> Callable[[nn.Module, Any, Any], None]:
        """A forward hook recording ``module_name``'s output (returns ``None``: no change)."""

        def _hook(module: nn.Module, args: Any, output: Any) -> None:
            call = self.calls.get(module_name, 0)
            self.calls[module_name] = call + 1
            for name, t in capturable(module_name, call, module, output, self.n, self.strict):
                self.values[name] = self.process(name, module_name, t)
                self.modules[name] = module_name

        return _hook


@contextmanager
def hooks(model: nn.Module, names: Sequence[str], recorder: Recorder) -> Iterator[None]:
    """Register ``recorder``'s hooks on the named modules; remove exactly those on exit."""
    handles = []
    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_hook(recorder.hook(name)))
        yield
    finally:
        for h in handles:
            h.remove()
