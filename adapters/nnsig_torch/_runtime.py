"""Running a forward pass for capture: modes, devices, inputs and host copies."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

# Modules whose fused inference path (torch.backends.mha) would skip their submodules.
ATTENTION_TYPES: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
    nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer,
)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU when it has none."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def float_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 when none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def inside_fused(model: nn.Module, names: Sequence[str]) -> bool:
    """Whether a hooked module lies inside a module whose fused fast path would skip it."""
    fused = [n for n, m in model.named_modules() if isinstance(m, ATTENTION_TYPES)]
    return any(name.startswith(f + ".") or (f == "" and name) for f in fused for name in names)


@contextmanager
def forward_context(
    model: nn.Module, hooked: Sequence[str] = (), fused: bool | None = None
) -> Iterator[None]:
    """Evaluation mode without autograd, undone on exit: every submodule's ``training`` flag
    is restored, and the fused attention fast path is disabled while a hooked module lies
    inside a fused module (``fused``: :func:`inside_fused`, when already known)."""
    training = [m for m in model.modules() if m.training]
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if fast and (inside_fused(model, hooked) if fused is None else fused):
            assert mha is not None  # fast is None without it
            mha.set_fastpath_enabled(False)
        if training:
            model.eval()
        with torch.no_grad():
            yield
    finally:
        for m in training:
            m.training = True
        if fast is not None and mha is not None:
            mha.set_fastpath_enabled(fast)


def move_inputs(x: Any, device: torch.device, float_dtype: torch.dtype | None = None) -> Any:
    """Move a batch (tensor, NumPy array, or tuple/list/dict of them) to ``device``;
    floating-point NumPy arrays take ``float_dtype`` (the model's), tensors keep theirs."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, np.ndarray):
        arr = x if x.flags.writeable else x.copy()
        t = torch.from_numpy(np.ascontiguousarray(arr))
        dtype = float_dtype if t.is_floating_point() and float_dtype is not None else None
        return t.to(device=device, dtype=dtype)
    if isinstance(x, Mapping):
        return {k: move_inputs(v, device, float_dtype) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(move_inputs(v, device, float_dtype) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(move_inputs(v, device, float_dtype) for v in x)
    return x


def batch_size(x: Any, axis: int = 0) -> int | None:
    """Length along ``axis`` of the first tensor in a (moved) batch; ``None`` if it holds none."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[axis]) if x.ndim > axis else None
    values = x.values() if isinstance(x, Mapping) else x if isinstance(x, (tuple, list)) else ()
    for v in values:
        n = batch_size(v, axis)
        if n is not None:
            return n
    return None


def call_model(model: nn.Module, x: Any) -> Any:
    """``model(x)``; a tuple or list is passed as positional arguments, a dict as keywords
    (a tuple the model cannot take positionally is a ``TypeError`` saying what to pass)."""
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, (tuple, list)) and not hasattr(x, "_fields"):
        try:
            return model(*x)
        except TypeError as exc:
            hint = _tuple_hint(model, x)
            if hint is None:
                raise
            raise TypeError(f"{exc}. {hint}") from exc
    return model(x)


def _tuple_hint(model: nn.Module, x: Sequence[Any]) -> str | None:
    """What to pass instead of a tuple batch that ``forward`` cannot take positionally."""
    try:
        sig = inspect.signature(model.forward)
        sig.bind(*x)
        return None  # the arguments fit: the TypeError came from inside the model
    except TypeError:
        pass
    except ValueError:
        return None
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    name = params[0].name if params else "x"
    kind = type(x).__name__
    return (f"The batch is a {kind} of {len(x)} items, which TorchAdapter passes as "
            f"{len(x)} positional arguments, and {type(model).__name__}.forward does not take "
            f"them. To pass the {kind} as one argument, give the batch as a dict of keyword "
            f"arguments, {{{name!r}: ({', '.join('...' for _ in x)})}}, or as a 1-tuple "
            f"(({', '.join('...' for _ in x)}),); in a DataLoader, yield ({{{name!r}: "
            f"...}}, labels).")


class PinnedPool:
    """Pinned host buffers (``allocate(n_floats)``), at most ``keep``, reused from batch to
    batch once every NumPy array made from them is gone (a batch in the writer's queue is
    never overwritten)."""

    def __init__(self, allocate: Any = None, keep: int = 6) -> None:
        self.allocate = allocate or (
            lambda size: torch.empty(size, dtype=torch.float32, pin_memory=True)
        )
        self.keep = keep
        self.buffers: list[tuple[torch.Tensor, list[weakref.ref]]] = []

    def acquire(self, size: int) -> tuple[torch.Tensor, list[weakref.ref]]:
        """A free buffer of at least ``size`` floats and its list of users' weak references."""
        for buf, users in self.buffers:
            if buf.numel() >= size and all(u() is None for u in users):
                users.clear()
                return buf, users
        buf = self.allocate(max(size, 1))
        entry: tuple[torch.Tensor, list[weakref.ref]] = (buf, [])
        if len(self.buffers) >= self.keep:
            # Forget the smallest buffer nobody uses (else keep this one out of the pool).
            free = [i for i, (b, u) in enumerate(self.buffers) if all(r() is None for r in u)]
            if not free:
                return entry
            self.buffers.pop(min(free, key=lambda i: self.buffers[i][0].numel()))
        self.buffers.append(entry)
        return entry


def to_host(tensors: Sequence[torch.Tensor], pool: PinnedPool) -> list[np.ndarray]:
    """Copy float32 tensors to host NumPy arrays: CUDA tensors asynchronously into one pinned
    buffer of ``pool`` per device, synchronised once; CPU tensors without a copy."""
    out: list[np.ndarray | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        if t.device.type == "cpu":
            out[i] = t.numpy()
        elif t.device.type == "cuda":
            by_device.setdefault(t.device, []).append(i)
        else:
            out[i] = t.cpu().numpy()
    pending: list[tuple[int, torch.Tensor, list[weakref.ref]]] = []
    for idx in by_device.values():
        buf, users = pool.acquire(sum(tensors[i].numel() for i in idx))
        offset = 0
        for i in idx:
            t = tensors[i]
            view = buf[offset : offset + t.numel()].view(t.shape)
            view.copy_(t, non_blocking=True)
            # In use from now on: another device's acquire in this call must not get it too.
            users.append(weakref.ref(view))
            pending.append((i, view, users))
            offset += t.numel()
    for device in by_device:  # all copies are queued: wait once per device
        torch.cuda.current_stream(device).synchronize()
    for i, view, users in pending:
        arr = view.numpy()
        users.append(weakref.ref(arr))
        out[i] = arr
    return out  # type: ignore[return-value]
