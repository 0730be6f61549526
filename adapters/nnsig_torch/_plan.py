"""What the adapter does with each capture (layout, pooling, copies, decided on the first
batch), and the batch's results brought to the host, checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nnsig_core._warnings import warn
from nnsig_core.protocol import ADAPTER_FIX, check_batch_finite, check_finite
from nnsig_core.protocol.axes import Layout, SpecMatches, split_modes
from nnsig_core.protocol.pooling import resolve_auto
from nnsig_core.protocol.token_rows import TokenRows, token_name

from ._capture import Captured, row_sums
from ._layout import LayoutTracker
from ._pool import pool_tensor, token_rows_tensor
from ._runtime import PinnedPool, to_host


@dataclass
class CapturePlan:
    """How one capture is processed: its layout, sample-level pooling mode, whether it has
    token rows, and how its values are protected: ``eager`` (changed in place later in the
    pass: pooled or copied in its hook) or ``owned`` (a buffer the module reuses: results
    that would alias it are copied after the pass); other views go to the store uncopied."""

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


def finalize(plan: CapturePlan, t: torch.Tensor, original: torch.Tensor, mask: torch.Tensor | None,
             token_ids: torch.Tensor | None, own: bool) -> Finalized:
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


def make_plans(values: Mapping[str, Captured], tracker: LayoutTracker | None, pool: Any,
               layout: Any) -> dict[str, CapturePlan]:
    """The plan of every capture of the first batch (a ``pool`` or ``layout`` key matching
    no captured layer is a ``LayerSelectionError``, a misfit ``layout`` a ``ValueError``)."""
    plans: dict[str, CapturePlan] = {}
    specs = SpecMatches(pool, layout)
    unknown: list[str] = []
    for name, cap in values.items():
        t = cap.value
        mode, lay = specs.of((name, cap.module), t.ndim)
        if lay is None and tracker is not None:
            lay = tracker.layout_of(cap.original, cap.transposed)
        elif lay is None:
            lay = Layout("first", 0) if t.ndim <= 2 else None
        sample_mode, has_sample, has_tokens = split_modes(mode)
        if has_sample and sample_mode == "auto" and t.ndim > 2 and lay is None:
            unknown.append(f"{name} {tuple(t.shape[1:])}")
        plans[name] = CapturePlan(
            name, cap.module, lay, sample_mode, has_sample, has_tokens, tuple(t.shape[1:])
        )
    specs.check_all_used(list(values))
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


class HostArrays:
    """Host arrays of a batch; ``shapes`` and ``token_shapes`` (the adapter's) record each
    capture's per-sample shape on the first batch, which later batches must match."""

    def __init__(self, shapes: dict[str, tuple[int, ...]],
                 token_shapes: dict[str, tuple[int, ...]]) -> None:
        self.shapes = shapes
        self.token_shapes = token_shapes
        self.pinned = PinnedPool()

    def arrays(
        self, names: list[str], results: dict[str, Finalized], out: torch.Tensor,
        finite: set[str] | frozenset[str] = frozenset(), *, keep_nonfinite: bool = False,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Host arrays of the batch, checked for NaN and Inf (except the captures in
        ``finite``, whose sum taken in the hook was finite: they hold neither)."""
        tensors: list[torch.Tensor] = []
        slots: list[tuple[str, str]] = []
        for name in names:
            sample, tokens = results[name]
            if sample is not None:
                tensors.append(sample)
                slots.append(("s", name))
            if tokens is not None:
                tensors.append(tokens[0])
                slots.append(("t", name))
        self._check_shapes(slots, tensors)
        tensors.append(out)
        k = len(tensors)
        # On an accelerator, one sum per sample is computed where the tensor lives (a small
        # transfer); on the CPU the host check is as fast and spares busy cores.
        device_sums = not keep_nonfinite and out.device.type != "cpu"
        if device_sums:
            tensors += [row_sums(t) for t in tensors]
        host = to_host(tensors, self.pinned)
        outputs = host[k - 1]
        acts: dict[str, Any] = {}
        sums: dict[str, np.ndarray] = {}
        for i, (kind, name) in enumerate(slots):
            if kind == "s":
                acts[name] = host[i]
                if device_sums:
                    sums[name] = host[k + i]
        if not keep_nonfinite:
            unchecked = {k: v for k, v in acts.items() if k not in finite} if finite else acts
            check_batch_finite(outputs, unchecked, row_sums=sums if device_sums else None,
                               output_row_sums=host[-1] if device_sums else None)
        for i, (kind, name) in enumerate(slots):
            if kind == "t":
                rows = results[name][1]
                assert rows is not None
                token = None if rows[3] is None else rows[3].cpu().numpy()
                if not keep_nonfinite:
                    check_finite(host[i], layer=name, row_sums=host[k + i] if device_sums else None,
                                 fix=ADAPTER_FIX, scope="the token rows of the batch")
                acts[token_name(name)] = TokenRows(
                    host[i], rows[1].cpu().numpy(), rows[2].cpu().numpy(), token
                )
        return outputs, acts

    def _check_shapes(self, slots: list[tuple[str, str]], tensors: list[torch.Tensor]) -> None:
        for (kind, name), t in zip(slots, tensors, strict=True):
            shapes = self.shapes if kind == "s" else self.token_shapes
            shape = tuple(t.shape[1:])
            old = shapes.setdefault(name, shape)
            if old != shape:
                raise ValueError(
                    f"Layer {name!r} has per-sample shape {shape} but had {old} on the first "
                    "batch; use pool='mean', 'max' or a callable for variable-size outputs."
                )
