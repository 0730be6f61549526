"""Reducing captured tensors per sample (``pool=``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Union

import torch

__all__ = ["POOL_MODES", "Pool", "PoolSpec", "apply_pool", "check_pool", "pool_for"]

#: The named pooling modes; ``None`` keeps the per-sample shape.
POOL_MODES = ("mean", "max", "flatten")

#: A pooling mode: ``None``, ``"mean"``, ``"max"``, ``"flatten"`` or a callable
#: mapping a ``(n, ...)`` float32 tensor to a ``(n, ...)`` tensor.
Pool = Union[str, Callable[[torch.Tensor], torch.Tensor], None]  # noqa: UP007
#: ``pool=``: one mode for every layer, or ``{name_or_glob: mode}``.
PoolSpec = Union[Pool, Mapping[str, Pool]]  # noqa: UP007


def _check_mode(mode: Pool, where: str) -> None:
    if mode is None or callable(mode) or (isinstance(mode, str) and mode in POOL_MODES):
        return
    raise ValueError(
        f"Invalid pool {mode!r}{where}: use None, 'mean', 'max', 'flatten' or a callable."
    )


def check_pool(pool: PoolSpec) -> PoolSpec:
    """Validate ``pool`` (a mode or a ``{name_or_glob: mode}`` mapping) and return it."""
    if isinstance(pool, Mapping):
        for key, mode in pool.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"pool keys must be layer names or glob patterns, got {key!r}.")
            _check_mode(mode, f" for {key!r}")
        return dict(pool)
    _check_mode(pool, "")
    return pool


def pool_for(pool: PoolSpec, capture: str, module_name: str) -> tuple[Pool, str | None]:
    """The pooling mode of one captured tensor, and the ``pool`` key that chose it.

    With a mapping, an exact key equal to the capture name (``"lstm.1.0"``,
    ``"block.relu:1"``) wins, then one equal to the module name (covering all
    its calls and outputs), then the first glob key (in the mapping's order)
    that matches either name. Unmatched layers are not pooled.
    """
    if not isinstance(pool, Mapping):
        return pool, None
    for key in (capture, module_name):
        if key in pool:
            return pool[key], key
    for key, mode in pool.items():
        if fnmatch.fnmatchcase(capture, key) or fnmatch.fnmatchcase(module_name, key):
            return mode, key
    return None, None


def apply_pool(t: torch.Tensor, mode: Pool) -> torch.Tensor:
    """Pool a batch-first tensor and return a new float32 tensor (never a view of ``t``).

    ``None`` keeps the shape ``(n, *unit_shape)``; ``"mean"`` and ``"max"``
    reduce every axis after the second one, so a convolutional map
    ``(n, C, *spatial)`` becomes ``(n, C)`` (tensors with fewer than three axes
    are kept); ``"flatten"`` gives ``(n, prod(unit_shape))``. A callable gets the
    float32 tensor and returns the pooled one. A per-sample scalar ``(n,)``
    becomes ``(n, 1)``. The mean is computed in float32 whatever the input type.
    """
    if callable(mode):
        out = mode(t.float())
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != t.shape[0]:
            raise ValueError(
                f"A pool callable must return a tensor with {t.shape[0]} rows; "
                f"got {getattr(out, 'shape', type(out).__name__)}."
            )
        t, mode = out, None
    if t.ndim == 1:
        t = t.unsqueeze(1)
    if mode in ("mean", "max") and t.ndim >= 3:
        dims = tuple(range(2, t.ndim))
        if mode == "mean":
            return t.mean(dim=dims, dtype=torch.float32)
        return t.amax(dim=dims).float()
    if mode == "flatten":
        t = t.reshape(t.shape[0], -1)
    # A fresh contiguous float32 copy: later in-place operations cannot alter it.
    return t.to(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
