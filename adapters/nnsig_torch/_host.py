"""A batch's captures brought to the host: checked shapes, NaN and Inf, token rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nnsig_core.protocol import ADAPTER_FIX, check_batch_finite, check_finite
from nnsig_core.protocol.token_rows import TokenRows, token_name

from ._capture import row_sums
from ._plan import Finalized
from ._runtime import PinnedPool, to_host


class HostArrays:
    """What :class:`~nnsig_torch.TorchAdapter` hands the store: host arrays of a batch.

    ``shapes`` and ``token_shapes`` (the adapter's) record each capture's per-sample shape
    on the first batch; later batches must match it.
    """

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
        # transfer); on the CPU the host check sums each block first, single-threaded, which
        # costs as much as a parallel torch reduction on free cores and far less on busy ones.
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
