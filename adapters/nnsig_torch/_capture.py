"""Forward hooks that record the tensors of selected modules during one forward pass.

A hook keeps a reference to each tensor, not a copy, with its version counter, which
tells the adapter after the pass which ones were changed in place later in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._structure import capture_name, flatten_output, to_batch_first

logger = logging.getLogger("nnsig_torch")


def capturable(
    module_name: str,
    call: int,
    module: nn.Module,
    output: Any,
    n: int | None,
    strict: bool = True,
    first_only: bool = False,
    batch_axis: int = 0,
    skipped: list[str] | None = None,
) -> list[tuple[str, torch.Tensor, torch.Tensor, bool]]:
    """The ``(name, batch-first tensor, original tensor, transposed)`` that one call of a
    module (``call`` earlier calls in this pass) yields from ``output``.

    Integer, boolean and complex tensors are not activations: a module that returns one
    directly is an error, and inside a structured output they are skipped (the indices of
    ``MaxPool2d(return_indices=True)``), as are per-batch scalars and non-tensor leaves.
    A module named exactly (``strict``) whose output holds no floating-point tensor is a
    ``TypeError``, and one whose only tensor has no batch axis a ``ValueError``; other
    tensors without a batch axis are skipped, their names appended to ``skipped``.
    ``first_only`` keeps the first capturable tensor alone (a block's hidden state).
    """
    leaves = flatten_output(output)
    bare = len(leaves) == 1 and leaves[0][0] == ""
    found: list[tuple[str, torch.Tensor, torch.Tensor, bool]] = []
    for path, t in leaves:
        # A block's hidden state is named after the block (its first tensor is all it yields).
        name = capture_name(module_name, call, "" if first_only else path)
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
        moved = (None if _broadcast(t, n, module, batch_axis)
                 else to_batch_first(t.detach(), n, module, path, batch_axis))
        if moved is None:
            if strict and bare:
                raise ValueError(
                    f"Layer {name!r} returned shape {tuple(t.shape)}, which has no batch "
                    f"axis of size {n} (axis 0 or 1). Select another layer."
                )
            if skipped is not None:
                skipped.append(f"{name} {tuple(t.shape)}")
            continue
        if moved[1]:
            logger.debug("Layer %r: batch axis moved first from %s", name, tuple(t.shape))
        found.append((name, moved[0], t, moved[1]))
        if first_only:
            break
    if strict and not found:
        raise TypeError(
            f"Layer {module_name!r} returned {type(output).__name__} with no "
            "floating-point tensor to capture. Select another layer."
        )
    return found


def _broadcast(t: torch.Tensor, n: int | None, module: nn.Module, batch_axis: int) -> bool:
    """Whether ``t`` is shared by the whole batch: a leading axis of 1 for a batch of
    several samples, such as T5's relative position bias ``(1, heads, q, k)``. Its axis 1
    may happen to have ``n`` entries (as many heads as samples), which is no batch axis;
    only a module that says it is sequence-first (``batch_first=False``) or a
    sequence-first model (``batch_axis=1``) has its ``(1, n, ...)`` transposed."""
    return (n is not None and n != 1 and t.ndim >= 2 and t.shape[0] == 1 and batch_axis == 0
            and getattr(module, "batch_first", True) is not False)


@dataclass
class Captured:
    """One captured tensor of one pass.

    ``value`` is the batch-first tensor (a reference), or what the in-hook
    processing returned; ``original`` the module's tensor as returned (for
    the layout), ``version`` its version counter when the hook ran; ``total``
    the float32 sum of ``value`` taken in the hook (the first half of the
    finite check, read while the tensor is still in the cache), when asked.
    """

    name: str
    module: str
    value: Any
    original: torch.Tensor
    transposed: bool
    version: int | None
    eager: bool
    total: torch.Tensor | None = None

    def changed(self) -> bool:
        """Whether the original tensor was changed in place after the hook ran (always
        assumed for inference-mode tensors, which have no version counter)."""
        return self.version is None or version_of(self.original) != self.version


def version_of(t: torch.Tensor) -> int | None:
    """``t._version``, or ``None`` for an inference-mode tensor (a model running parts of
    its forward under ``torch.inference_mode()``), which keeps no version counter."""
    try:
        return int(t._version)
    except RuntimeError:
        return None


class Recorder:
    """Per-forward-pass state: how often each module ran and what it produced.

    ``strict`` and ``first_only`` are module names, as for :func:`capturable`.
    ``eager(capture_name, module_name, tensor)``, run in the hook, returns a value kept
    instead of the reference (a layer changed in place later in the pass, pooled or
    copied there), or ``None``. Captures named in ``total`` and not processed in the hook
    have their whole-tensor float32 sum taken there (:attr:`Captured.total`).
    """

    def __init__(
        self,
        n: int | None,
        strict: Collection[str] = (),
        first_only: Collection[str] = (),
        eager: Callable[[str, str, torch.Tensor], Any] | None = None,
        batch_axis: int = 0,
        total: Collection[str] = (),
    ) -> None:
        self.n = n
        self.total = total
        self.strict = set(strict)
        self.first_only = set(first_only)
        self.eager = eager
        self.batch_axis = batch_axis
        self.calls: dict[str, int] = {}
        self.values: dict[str, Captured] = {}
        self.skipped: list[str] = []

    def hook(self, module_name: str) -> Callable[[nn.Module, Any, Any], None]:
        """A forward hook recording ``module_name``'s output (returns ``None``: no change)."""
        strict = module_name in self.strict
        first = module_name in self.first_only

        def _hook(module: nn.Module, args: Any, output: Any) -> None:
            call = self.calls.get(module_name, 0)
            self.calls[module_name] = call + 1
            for name, t, orig, transposed in capturable(
                module_name, call, module, output, self.n, strict, first, self.batch_axis,
                self.skipped,
            ):
                value = self.eager(name, module_name, t) if self.eager is not None else None
                total = (t.sum(dtype=torch.float32) if value is None and t.is_cpu and name in self.total
                         else None)
                self.values[name] = Captured(
                    name, module_name, t if value is None else value, orig, transposed,
                    version_of(orig), value is not None, total,
                )

        return _hook

    def changed(self, include_eager: bool = False) -> list[str]:
        """Captures whose tensor was changed in place after their hook ran (those processed
        in their hook only with ``include_eager``)."""
        return [k for k, c in self.values.items() if (include_eager or not c.eager) and c.changed()]


@contextmanager
def forward_hooks(hooked: Iterable[tuple[nn.Module, Callable[..., None]]], *,
                  with_kwargs: bool = False) -> Iterator[None]:
    """Register each ``(module, hook)`` as a forward hook; remove exactly those on exit."""
    handles = []
    try:
        for module, hook in hooked:
            handles.append(module.register_forward_hook(hook, with_kwargs=with_kwargs))
        yield
    finally:
        for h in handles:
            h.remove()


def hooks(model: nn.Module, names: Sequence[str],
          recorder: Recorder) -> AbstractContextManager[None]:
    """``recorder``'s hooks on the named modules, for the ``with`` block."""
    return forward_hooks((model.get_submodule(name), recorder.hook(name)) for name in names)


def clone_output(name: str, module_name: str, t: torch.Tensor) -> torch.Tensor:
    return t.clone()


def row_sums(t: torch.Tensor) -> torch.Tensor:
    """One float32 sum per sample: non-finite whenever the row holds a NaN or Inf.

    A read-only reduction, several times cheaper than ``isfinite(t).all(1)``,
    which allocates a boolean copy of every activation.
    """
    return t.reshape(t.shape[0], -1).sum(dim=1, dtype=torch.float32)
