"""What the adapter does with each capture, decided on the first batch: layout, pooling, copies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from nnsig_core._warnings import warn
from nnsig_core.protocol import LayerSelectionError, close_matches
from nnsig_core.protocol.axes import (
    Layout,
    layout_for,
    parse_layout,
    pool_for,
    split_modes,
)
from nnsig_core.protocol.pooling import resolve_auto

from ._capture import Captured
from ._layout import LayoutTracker
from ._pool import pool_tensor, token_rows_tensor


@dataclass
class CapturePlan:
    """How one capture is processed: its layout (given with ``layout=`` or found by the
    :class:`~nnsig_torch._layout.LayoutTracker`), its sample-level pooling mode, whether it
    also has token rows, and how its values are protected. ``eager``: the tensor is changed
    in place later in the pass (seen through its version counter), so it is pooled or
    copied in its hook. ``owned``: its storage outlives the pass (a buffer the module
    reuses, seen on the second batch), so results that would alias it are copied after the
    pass. Any other result that is a view of the module's tensor (``pool=None``, ``"cls"``)
    goes to the store without a copy."""

    name: str
    module: str
    layout: Layout | None
    mode: Any  # the sample-level mode (None, a name or a callable)
    sample: bool
    tokens: bool
    source_shape: tuple[int, ...]
    eager: bool = False
    owned: bool = False

    def describe_mode(self) -> str:
        """The pooling, as recorded in the store (``"mean"``, ``"cls+tokens"``...)."""
        mode = "callable" if callable(self.mode) else "none" if self.mode is None else str(self.mode)
        if self.tokens:
            return f"{mode}+tokens" if self.sample else "tokens"
        return mode

    @property
    def may_alias(self) -> bool:
        """Whether a result may be a view of the module's tensor (not a reduction)."""
        return self.tokens or self.mode not in ("mean", "max")


#: A capture after processing: (sample-level tensor or None,
#: (values, sample, position, token ids) or None).
Finalized = tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None]


def shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors share memory (a view, or the tensor itself)."""
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except RuntimeError:
        return False


def finalize(
    plan: CapturePlan,
    t: torch.Tensor,
    original: torch.Tensor,
    mask: torch.Tensor | None,
    token_ids: torch.Tensor | None,
    own: bool,
) -> Finalized:
    """Pool one batch-first tensor as ``plan`` says; with ``own``, results never alias ``t``."""
    def contiguous(result: torch.Tensor) -> torch.Tensor:
        if own and shares_storage(result, original):
            return result.clone(memory_format=torch.contiguous_format)
        return result.contiguous()

    sample = tokens = None
    if plan.sample:
        sample = contiguous(pool_tensor(t, plan.mode, plan.layout, mask, plan.name))
    if plan.tokens:
        values, rows, position, token = token_rows_tensor(t, plan.layout, mask, token_ids,
                                                          plan.name)
        tokens = (contiguous(values), rows, position, token)
    return sample, tokens  # type: ignore[return-value]  # the token ids may be None


def _unused(spec: Any, used: set[str], what: str, names: list[str]) -> None:
    if not isinstance(spec, Mapping):
        return
    unused = [k for k in spec if k not in used]
    if unused:
        hint = close_matches(unused[0], names)
        raise LayerSelectionError(
            f"{what} key(s) {', '.join(map(repr, unused))} match no captured layer"
            + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ".")
        )


def make_plans(
    values: Mapping[str, Captured],
    tracker: LayoutTracker | None,
    pool: Any,
    layout: Any,
) -> dict[str, CapturePlan]:
    """The plan of every capture of the first batch; a ``pool`` or ``layout`` key that
    matches no captured layer is a ``LayerSelectionError``, a ``layout`` string that does
    not fit the tensor's number of axes a ``ValueError``."""
    plans: dict[str, CapturePlan] = {}
    used_pool: set[str] = set()
    used_layout: set[str] = set()
    unknown: list[str] = []
    for name, cap in values.items():
        keys = (name, cap.module)
        mode, pkey = pool_for(pool, keys)
        given, lkey = layout_for(layout, keys)
        if pkey is not None:
            used_pool.add(pkey)
        if lkey is not None:
            used_layout.add(lkey)
        t = cap.value
        if given is not None:
            try:
                lay: Layout | None = parse_layout(given, t.ndim)
            except ValueError as exc:
                raise ValueError(f"layout of layer {name!r}: {exc}") from None
        elif tracker is not None:
            lay = tracker.layout_of(cap.original, cap.transposed)
        else:
            lay = Layout("first", 0) if t.ndim <= 2 else None
        sample_mode, has_sample, has_tokens = split_modes(mode)
        if has_sample and sample_mode == "auto" and t.ndim > 2 and lay is None:
            unknown.append(f"{name} {tuple(t.shape[1:])}")
        plans[name] = CapturePlan(
            name, cap.module, lay, sample_mode, has_sample, has_tokens, tuple(t.shape[1:])
        )
    names = list(values)
    _unused(pool, used_pool, "pool", names)
    _unused(layout, used_layout, "layout", names)
    if unknown:
        warn(
            f"The layout of {len(unknown)} layer(s) is unknown, so they are kept whole (not "
            f"pooled): {', '.join(unknown[:6]) + (', ...' if len(unknown) > 6 else '')}. "
            "Pass layout={name: 'NCHW' | 'NHWC' | 'NLC' ...} to pool them."
        )
    for p in plans.values():
        if p.sample:
            p.mode = resolve_auto(p.mode, p.layout if len(p.source_shape) > 1 else None)
    return plans
