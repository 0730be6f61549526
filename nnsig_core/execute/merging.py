"""How partial results of blocks merge (both drivers): the default rule, a merge with its
arguments bound."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np


def merge_parts(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """Merge partial results key by key: ``_min``/``_max`` keys by min/max, ``_first`` by the
    smaller non-negative position (-1 is none), lists by concatenation, the rest summed."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if k not in out:
                out[k] = v
            elif k.endswith("_min"):
                out[k] = np.minimum(out[k], v)
            elif k.endswith("_max"):
                out[k] = np.maximum(out[k], v)
            elif k.endswith("_first"):
                x, y = np.asarray(out[k]), np.asarray(v)
                out[k] = np.where(x < 0, y, np.where(y < 0, x, np.minimum(x, y)))
            else:
                out[k] = out[k] + v
    return out


def combiner(merge: Callable[..., Any] | None,
             merge_kw: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """``merge`` with its keyword arguments bound (:func:`merge_parts` when None)."""
    if merge is None:
        return merge_parts
    return partial(merge, **merge_kw) if merge_kw else merge
