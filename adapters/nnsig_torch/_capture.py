"""Forward hooks that record the tensors of selected modules during one forward pass.

A hook keeps a reference to each tensor (not a copy) with its version counter, which tells
after the pass which ones were changed in place later in it. Structured outputs (tuples,
dicts, dataclasses) are flattened to named tensors.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnsig_core._warnings import warn

logger = logging.getLogger("nnsig_torch")

_MAX_DEPTH = 16


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
    """The ``(name, batch-first tensor, original tensor, transposed)`` one call of a module
    yields from ``output``.

    Non-floating tensors, per-batch scalars and non-tensor leaves of a structured output
    are skipped; tensors without a batch axis too, named in ``skipped``. A module named
    exactly (``strict``) that yields nothing, or returns such a tensor bare, is an error.
    ``first_only`` keeps the first tensor alone (a block's hidden state).
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
        moved = (_rnn_state(t.detach(), n) if _is_rnn_state(module, path, t) else
                 None if _broadcast(t, n, module, batch_axis)
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


def _is_rnn_state(module: nn.Module, path: str, t: torch.Tensor) -> bool:
    """Whether ``t`` is a recurrent module's final hidden (or cell) state: ``h_n`` of
    ``(output, h_n)``, or ``h_n``/``c_n`` of an LSTM's ``(output, (h_n, c_n))``."""
    return isinstance(module, nn.RNNBase) and path.startswith(".1") and t.ndim == 3


def _rnn_state(t: torch.Tensor, n: int | None) -> tuple[torch.Tensor, bool] | None:
    """A final state ``(layers x directions, n, H)``, whatever ``batch_first`` says, as one
    row per sample, ``(n, layers x directions x H)``: every layer's and direction's state
    side by side (not positions to pool over)."""
    if n is None or t.shape[1] != n:
        return None
    return t.transpose(0, 1).reshape(n, -1), True


def _broadcast(t: torch.Tensor, n: int | None, module: nn.Module, batch_axis: int) -> bool:
    """Whether ``t`` is shared by the batch, such as T5's position bias ``(1, heads, q, k)``
    (its axis 1 is a batch axis only for sequence-first modules or models)."""
    return (n is not None and n != 1 and t.ndim >= 2 and t.shape[0] == 1 and batch_axis == 0
            and getattr(module, "batch_first", True) is not False)


@dataclass
class Captured:
    """One captured tensor of one pass: ``value`` is the batch-first tensor (a reference) or
    what the in-hook processing returned, ``original`` the module's tensor, ``version`` its
    version counter in the hook, ``total`` the float32 sum of ``value`` taken in the hook."""

    name: str
    module: str
    value: Any
    original: torch.Tensor
    transposed: bool
    version: int | None
    eager: bool
    total: torch.Tensor | None = None

    def changed(self) -> bool:
        """Whether the original tensor was changed in place after the hook (or has no
        version counter)."""
        return self.version is None or version_of(self.original) != self.version


def version_of(t: torch.Tensor) -> int | None:
    """``t._version``, or ``None`` for an inference-mode tensor, which has none."""
    try:
        return int(t._version)
    except RuntimeError:
        return None


class Recorder:
    """Per-forward-pass state: how often each module ran and what it produced.

    ``strict`` and ``first_only`` are module names, as for :func:`capturable`.
    ``eager(capture_name, module_name, tensor)``, run in the hook, returns a value kept
    instead of the reference, or ``None``. Captures in ``total`` not processed in the hook
    have their float32 sum taken there.
    """

    def __init__(self, n: int | None, strict: Collection[str] = (),
                 first_only: Collection[str] = (),
                 eager: Callable[[str, str, torch.Tensor], Any] | None = None, batch_axis: int = 0,
                 total: Collection[str] = ()) -> None:
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
        """Captures changed in place after their hook ran (those processed in their hook
        only with ``include_eager``)."""
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
    """One float32 sum per sample, non-finite when the row holds NaN or Inf (far cheaper
    than ``isfinite(t).all(1)``, which allocates a boolean copy)."""
    return t.reshape(t.shape[0], -1).sum(dim=1, dtype=torch.float32)


def capture_name(module_name: str, call: int, path: str = "") -> str:
    """``module[:call][.path]``: ``call`` counts the module's earlier calls in this pass,
    ``path`` is the position in a structured output (``""``, ``".0"``, ``".logits"``)."""
    return (module_name if call == 0 else f"{module_name}:{call}") + path


def flatten_output(obj: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors in a module output with their paths (``""`` for a tensor; ``".0"`` or
    ``".field"`` for tuples, named tuples, mappings and dataclasses, recursively)."""
    out: list[tuple[str, torch.Tensor]] = []
    _walk(obj, "", out, 0)
    return out


def _walk(obj: Any, path: str, out: list[tuple[str, torch.Tensor]], depth: int) -> None:
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
    elif depth >= _MAX_DEPTH:
        return
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _walk(v, f"{path}.{k}", out, depth + 1)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        for k, v in zip(obj._fields, obj, strict=False):
            _walk(v, f"{path}.{k}", out, depth + 1)
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            _walk(v, f"{path}.{i}", out, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _walk(getattr(obj, f.name, None), f"{path}.{f.name}", out, depth + 1)


def model_output(obj: Any) -> torch.Tensor:
    """The model's output tensor: itself, its ``logits`` entry, else its first floating-point
    tensor, else its first tensor (a ``TypeError`` when it holds none)."""
    if isinstance(obj, torch.Tensor):
        return obj
    logits = obj.get("logits") if isinstance(obj, Mapping) else getattr(obj, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    leaves = flatten_output(obj)
    for _, t in leaves:
        if t.is_floating_point():
            return t
    if leaves:
        return leaves[0][1]
    raise TypeError(f"The model returned no tensor (got {type(obj).__name__}).")


def warn_of_other_outputs(obj: Any, n: int | None) -> None:
    """A structured output without ``logits`` whose first floating-point tensor of one row
    per sample is wider than a later one (hidden states before the scores?): say which one is
    taken as the class scores, and how to choose."""
    if isinstance(obj, torch.Tensor):
        return
    logits = obj.get("logits") if isinstance(obj, Mapping) else getattr(obj, "logits", None)
    if isinstance(logits, torch.Tensor):
        return
    rows = [(p, t) for p, t in flatten_output(obj)
            if t.is_floating_point() and t.ndim >= 1 and (n is None or t.shape[0] == n)]
    # Scores come before wider tensors (logits, features); hidden states before the scores
    # are the mistake this names.
    if len(rows) > 1 and any(t[0].numel() < rows[0][1][0].numel() for _, t in rows[1:]):
        shapes = ", ".join(f"{p.lstrip('.') or 'output'} {tuple(t.shape)}" for p, t in rows)
        warn(
            f"The model returns {len(rows)} tensors of one row per sample ({shapes}); nnsig "
            f"takes the first, {rows[0][0].lstrip('.')}, as its class scores (the 'logits' "
            "entry when there is one). If the scores are another, wrap the model so that they "
            "come first, e.g. a module whose forward returns model(x)[1].")


def to_batch_first(t: torch.Tensor, n: int | None, module: nn.Module | None = None, path: str = "",
                   batch_axis: int = 0) -> tuple[torch.Tensor, bool] | None:
    """``t`` (at ``path`` in ``module``'s output) with the batch axis first, and whether it
    was transposed; ``None`` when neither axis 0 nor 1 has ``n`` entries.

    Recurrent hidden states and sequence-first outputs are transposed; otherwise axis 0 is
    kept when it has ``n`` entries (axis 1 first with ``batch_axis=1``), else axis 1 is
    moved first. With ``n`` unknown, axis 0 is assumed.
    """
    if n is None:
        return (t, False) if t.ndim >= 1 else None
    if isinstance(module, nn.RNNBase) and t.ndim == 3:
        seq_first = path not in ("", ".0") or not module.batch_first
        if seq_first and t.shape[1] == n:
            return t.transpose(0, 1), True
    if batch_axis == 1 and t.ndim >= 2 and t.shape[1] == n:
        return t.transpose(0, 1), True
    if t.ndim >= 1 and t.shape[0] == n:
        return t, False
    if t.ndim >= 2 and t.shape[1] == n:
        return t.transpose(0, 1), True
    return None
