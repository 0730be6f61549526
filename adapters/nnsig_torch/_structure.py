"""Flattening structured module outputs (tuples, dicts, dataclasses) to named tensors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

_MAX_DEPTH = 16


def capture_name(module_name: str, call: int, path: str = "") -> str:
    """Name of one captured tensor: ``module[:call][.path]``, where ``call`` counts the
    module's earlier calls in this pass (the first has no suffix) and ``path`` is the
    position inside a structured output (``""``, ``".0"``, ``".last_hidden_state"``)."""
    return (module_name if call == 0 else f"{module_name}:{call}") + path


def flatten_output(obj: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors in a module output with their paths, in a stable order.

    A tensor has the path ``""``; tuples and lists give ``".0"``, ``".1"``...
    (named tuples their field names), mappings ``".key"`` in their order
    (HuggingFace ``ModelOutput`` included, its ``None`` fields being absent)
    and dataclasses ``".field"`` in declaration order, recursively. Leaves that
    are not tensors are skipped.
    """
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
    """The tensor used as the model's output (logits or scores).

    A tensor as is; for a mapping or dataclass its ``logits`` entry when there
    is one; otherwise the first floating-point tensor of :func:`flatten_output`
    (the first tensor of a tuple), else the first tensor; a ``TypeError`` when it holds
    none.
    """
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


def to_batch_first(
    t: torch.Tensor,
    n: int | None,
    module: nn.Module | None = None,
    path: str = "",
    batch_axis: int = 0,
) -> tuple[torch.Tensor, bool] | None:
    """``t`` (at ``path`` in ``module``'s output) with the batch axis first, and whether it
    was transposed; ``None`` when neither axis 0 nor 1 has ``n`` entries.

    Recurrent modules have known layouts: their hidden states are
    ``(layers * directions, n, hidden)`` and their output is sequence-first
    unless ``batch_first=True``; both are transposed. Any other tensor is kept
    when its axis 0 has ``n`` entries, else transposed when axis 1 has (a
    sequence-first layout, e.g. a transformer with ``batch_first=False``).
    With ``batch_axis=1`` (a sequence-first model), axis 1 is preferred when both
    have ``n`` entries; with ``n`` unknown, axis 0 is assumed.
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
