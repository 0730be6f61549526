"""Describing modules: parameter counts, small configs and the layer listing."""

from __future__ import annotations

import ast
import inspect
import math
from dataclasses import dataclass
from typing import Any

from torch import nn

_SKIP_ARGS = {"self", "device", "dtype"}
# Looked up on modules whose __init__ takes *args/**kwargs (nn.LSTM, nn.GRU...).
_COMMON_ATTRS = (
    "input_size", "hidden_size", "num_layers", "bidirectional", "proj_size", "nonlinearity",
    "dropout",
)


def n_parameters(module: nn.Module) -> int:
    """Number of parameter values of ``module`` and its submodules (shared ones once)."""
    return int(sum(p.numel() for p in module.parameters()))


def _jsonable(v: Any) -> Any:
    """``v`` as a JSON value when it is a plain scalar or a tuple/list of them, else ``None``."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (tuple, list)):
        items = [_jsonable(x) for x in v]
        return items if all(x is not None for x in items) else None
    return None


def _split_top(s: str) -> list[str]:
    """Split ``extra_repr()`` on commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def module_config(module: nn.Module) -> dict[str, Any]:
    """A module's hyper-parameters as JSON: plain attributes named like its ``__init__``
    arguments, then the ``key=value`` items of ``extra_repr()``, else ``{"repr": ...}``."""
    config: dict[str, Any] = {}
    try:
        params = list(inspect.signature(type(module).__init__).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        names += _COMMON_ATTRS
    for name in names:
        value = _jsonable(getattr(module, name, None)) if name not in _SKIP_ARGS else None
        if value is not None:
            config[name] = value
    try:
        extra = module.extra_repr()
    except Exception:  # a broken extra_repr must not break capture
        extra = ""
    for part in _split_top(extra):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or key in config:
            continue
        try:
            value = _jsonable(ast.literal_eval(raw.strip()))
        except (ValueError, SyntaxError):
            value = raw.strip()
        if value is not None:
            config[key] = value
    if not config and extra:
        config["repr"] = extra
    return config


@dataclass(frozen=True)
class LayerInfo:
    """One capturable tensor of a model, as listed by ``available_layers``.

    Attributes
    ----------
    name : str
        The capture name, ``module[:call][.path]``.
    module : str
        Qualified module name in ``named_modules()``.
    type : str
        Module class name.
    shape : tuple of int or None
        Per-sample shape before pooling; ``None`` when unknown (no example input,
        or the module did not run or returned no floating-point tensor).
    parameters : int
        Parameter count of the module (recursive).
    selected : bool
        Whether the adapter (or, on the class, the default selection) captures it.
    """

    name: str
    module: str
    type: str
    shape: tuple[int, ...] | None
    parameters: int
    selected: bool = False

    def __str__(self) -> str:
        shape = "-" if self.shape is None else "(" + ", ".join(map(str, self.shape)) + ")"
        return f"{self.name} [{self.type}] shape={shape} params={self.parameters}" + (
            " *" if self.selected else ""
        )


class LayerList(list):
    """A list of :class:`LayerInfo` that prints as a table (``*`` marks selected layers)."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        return LayerList(item) if isinstance(i, slice) else item

    def names(self) -> list[str]:
        """The capture names, in order."""
        return [info.name for info in self]

    def __repr__(self) -> str:
        if not self:
            return "LayerList([])"
        rows = [("name", "type", "shape", "params", "")]
        for i in self:
            shape = "-" if i.shape is None else str(tuple(i.shape))
            rows.append((i.name, i.type, shape, f"{i.parameters:,}", "*" if i.selected else ""))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        justify = (str.ljust, str.ljust, str.ljust, str.rjust)  # the counts right-aligned
        return "\n".join(
            "  ".join([j(cell, w) for j, cell, w in zip(justify, r[:4], widths, strict=True)]
                      + [r[4]]).rstrip()
            for r in rows
        )

    __str__ = __repr__
