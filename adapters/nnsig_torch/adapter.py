"""The PyTorch adapter: capture hidden-layer activations with forward hooks."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from nnsig_core.protocol import LayerSpec
from nnsig_core.protocol.adapter import describe_inputs
from nnsig_core.protocol.axes import LayoutSpec, PoolSpec, check_layout_spec, check_pool
from nnsig_core.protocol.pooling import (
    TORCH_MASK_KEYS,
    check_mask_key,
    pools_a_sequence,
    warn_of_unused_mask,
)

from ._capture import (
    Recorder,
    clone_output,
    hooks,
    model_output,
    to_batch_first,
    version_of,
    warn_of_other_outputs,
)
from ._defaults import DefaultSelection, default_layers
from ._layout import LayoutTracker, tracking
from ._plan import CapturePlan, Finalized, HostArrays, finalize, make_plans, shares_storage
from ._runtime import (
    batch_size,
    call_model,
    float_dtype,
    forward_context,
    inside_fused,
    model_device,
    move_inputs,
)
from ._select import ClassOrInstance, available_layers, resolve_layers, unwrap_model
from ._session import check_names, decoder_inputs, first_batch_names, layer_entries, sequence_inputs
from ._summary import LayerList, n_parameters

logger = logging.getLogger("nnsig_torch")


class TorchAdapter:
    """Capture the activations of a PyTorch model with forward hooks.

    Parameters
    ----------
    model : torch.nn.Module
        The model; ``DataParallel``, DDP and ``torch.compile`` wrappers are
        unwrapped (names carry no ``module.`` prefix).
    layers : str, type, or sequence of them, optional
        Module names from ``model.named_modules()``, glob patterns, module
        types, or a list mixing them. By default what a practitioner would
        pick for the model's family (logged): transformer block outputs,
        convnet stage or block outputs, or an MLP's activations; at most 12,
        evenly spread. A name given exactly must run on every batch; other
        modules that never run, or whose outputs have no batch axis, are left
        out with an :class:`~nnsig_core.NnsigWarning`.
    pool : str, tuple, callable or dict, optional
        The per-sample reduction, using the layout: ``"auto"`` (average the
        positions of feature maps and sequences, keep vectors), ``"mean"`` /
        ``"max"`` over positions, ``"cls"`` (first token), ``"last"`` (last
        real token), ``"tokens"`` (a row per token, stored in split
        ``<split>.tokens``), ``"flatten"``, ``None`` (keep the shape), a
        callable on the float32 batch, a pair such as ``("cls", "tokens")``,
        or ``{name_or_glob: mode}`` (exact capture name, then module name,
        then first matching glob; others ``"auto"``). Padding never enters a
        mean, a max or a token row.
    layout : str or dict, optional
        The layout when it cannot be found, e.g. ``{"encoder.*": "NLC"}``:
        ``"NCHW"``, ``"NHWC"``, ``"NLC"``, ``"NCL"``, ``"NC"``,
        ``"channels_first"``, ``"channels_last"``. By default found on the
        first batch from the modules that make and read each tensor; pooling
        a tensor of unknown layout is an error asking for this argument.
    device : str or torch.device, optional
        Where inputs are moved; by default the device of the model's first
        parameter (CPU if none). The model is not moved.
    keep_nonfinite : bool
        Keep NaN and Inf instead of raising
        :class:`~nnsig_core.protocol.NonFiniteActivationError`.
    batch_axis : int
        The batch axis of the inputs: 0, or 1 for sequence-first models.
    mask : str, tuple of str, callable or None
        The attention mask of dict batches: key(s) tried in order (nonzero
        for real tokens; default Hugging Face's ``"attention_mask"``), a
        callable ``inputs -> (n, L)`` (a mask of the padding, as PyTorch's
        ``key_padding_mask``: ``lambda x: x["padding_mask"] == 0``), or
        ``None``. Keys other than the default that a batch lacks are an error.
        With ``batch_axis=1`` a mask under a key is ``(L, n)``, as the inputs.
    token_key : str or None
        The key of the token ids in dict batches, recorded per token row
        (``(L, n)`` with ``batch_axis=1``).

    Notes
    -----
    A module called several times per pass yields ``name``, ``name:1``...;
    structured outputs are flattened by position or key (``lstm.0``,
    ``lstm.1.0``), skipping non-tensors, per-batch scalars and integer
    tensors; a block selected by default yields its first tensor, named after
    the block. Hooks keep references; a tensor changed in place later in the
    pass, or reused on the next batch, is detected and copied or pooled in
    time. Values become float32 with the batch axis first. Each :meth:`run`
    runs in ``eval()`` mode under ``torch.no_grad()`` and restores the hooks
    and ``training`` flags. Inputs may be a tensor, a NumPy array, a
    tuple/list (positional arguments) or a dict (keyword arguments). On CUDA,
    captures go to a reused pinned host buffer with one synchronisation.
    """

    framework = "torch"

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Sequence[LayerSpec] | None = None,
        *,
        pool: PoolSpec = "auto",
        device: str | torch.device | None = None,
        keep_nonfinite: bool = False,
        layout: LayoutSpec = None,
        batch_axis: int = 0,
        mask: Any = TORCH_MASK_KEYS,
        token_key: str | None = "input_ids",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"TorchAdapter needs a torch.nn.Module, got {type(model).__name__}.")
        if batch_axis not in (0, 1):
            raise ValueError(f"batch_axis must be 0 or 1, got {batch_axis!r}.")
        self.model = unwrap_model(model)
        self._first_only: set[str] = set()
        self._default: DefaultSelection | None = None
        if layers is None:
            self._use_default(default_layers(self.model))
        else:
            self.layer_names, self._explicit = resolve_layers(self.model, layers)
        self.pool = check_pool(pool)
        self.layout = check_layout_spec(layout)
        self.device = torch.device(device) if device is not None else None
        self.keep_nonfinite = bool(keep_nonfinite)
        self.batch_axis = batch_axis
        self.mask = mask
        self.token_key = token_key
        self._names: list[str] | None = None  # capture names fixed by the first batch
        self._pending: list[str] = []
        self._plans: dict[str, CapturePlan] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._token_shapes: dict[str, tuple[int, ...]] = {}
        self._batches = 0
        self._prev: dict[str, tuple[torch.Tensor, int | None]] = {}
        self._host = HostArrays(self._shapes, self._token_shapes)
        # Decided once: whether a hooked module is inside a fused module, and which captures
        # are returned as they are (their finite check is summed in the hook).
        self._fused: bool | None = None
        self._hook_sums: frozenset[str] = frozenset()
        self._decoder_seq: tuple[Any, Any] | None = None

    def _use_default(self, chosen: DefaultSelection) -> None:
        self._default = chosen
        self.layer_names, self._explicit = list(chosen.names), set()
        self._first_only = set(chosen.names) if chosen.first_only else set()
        self._fused = None

    def __repr__(self) -> str:
        return (
            f"TorchAdapter({type(self.model).__name__}, {len(self.layer_names)} modules, "
            f"pool={self.pool!r})"
        )

    def run(self, inputs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Run one batch and return its outputs and activations.

        Parameters
        ----------
        inputs : Any
            A tensor, a NumPy array, or a tuple/list/dict of them.

        Returns
        -------
        outputs, activations
            As :meth:`nnsig_core.protocol.Adapter.run`, float32; ``outputs`` is
            the model's tensor, or the ``logits`` entry / first tensor of a
            structured one. Layers pooled with ``"tokens"`` are
            :class:`~nnsig_core.protocol.token_rows.TokenRows` under
            ``name + "@tokens"``.

        Raises
        ------
        NonFiniteActivationError
            NaN or Inf (unless ``keep_nonfinite``).
        LayerSelectionError
            A layer named exactly never ran, the captured names changed, or a
            ``pool``/``layout`` key matches no layer.
        AmbiguousLayoutError
            A tensor of unknown layout pooled with a mode that needs it.
        ValueError
            A shape that changed since the first batch, or no batch axis.
        """
        model = self.model
        device = self.device or model_device(model)
        x = move_inputs(inputs, device, float_dtype(model))
        n = batch_size(x, self.batch_axis)
        check_mask_key(x, self.mask, TORCH_MASK_KEYS)
        mask, token_ids = sequence_inputs(x, self.mask, self.token_key, n, self.batch_axis)
        self._decoder_seq = decoder_inputs(x, self.mask, self.token_key, n, self.batch_axis)
        first = self._names is None
        recorder, raw = self._pass(x, n, mask, token_ids, first)
        changed = [] if first else recorder.changed()
        if changed:
            logger.info("Layer(s) %s changed in place during the pass: processed in the hook "
                        "from now on; running this batch again.", ", ".join(changed))
            for name in changed:
                self._plans[name].eager = True
            recorder, raw = self._pass(x, n, mask, token_ids, first)
        out = self._output_tensor(raw, n)
        if first:
            warn_of_other_outputs(raw, n)
        names = check_names(self, recorder, self._pending if first else self._names)
        if first:
            pooled = any(pools_a_sequence(p.layout, p.mode, p.tokens)
                         for p in self._plans.values())
            warn_of_unused_mask(x, self.mask, mask, _host_numpy, pooled=pooled,
                                defaults=TORCH_MASK_KEYS)
        self._check_reuse(recorder, names)
        results = {k: self._finalize(k, recorder.values[k], mask, token_ids) for k in names}
        finite = {k for k in names if _finite_total(recorder.values[k].total)}
        returned = self._host.arrays(names, results, out, finite,
                                     keep_nonfinite=self.keep_nonfinite)
        if first:
            self._names = names
            # Unpooled captures are summed in their hook, while still in the cache.
            self._hook_sums = frozenset(
                k for k in names if not self.keep_nonfinite and self._plans[k].sample
                and self._plans[k].mode in (None, "flatten")
            )
        self._batches += 1
        return returned

    def _pass(self, x: Any, n: int | None, mask: Any, token_ids: Any,
              first: bool) -> tuple[Recorder, Any]:
        eager: Callable[[str, str, torch.Tensor], Any]
        if first:
            eager = clone_output  # the layouts are not known yet: copy whole, pool after the pass
        else:
            eager = functools.partial(self._eager, mask=mask, token_ids=token_ids)
        rec = Recorder(n, self._explicit, self._first_only, eager, self.batch_axis,
                       () if first else self._hook_sums)
        tracker = LayoutTracker() if first else None
        watch = tracking(model=self.model, tracker=tracker) if tracker else nullcontext()
        if self._fused is None:
            self._fused = inside_fused(self.model, self.layer_names)
        with forward_context(self.model, self.layer_names, self._fused), watch, \
                hooks(self.model, self.layer_names, rec):
            try:
                raw = call_model(self.model, x)
            except Exception as exc:
                if first:  # the model's own error, with what it was given
                    exc.add_note(f"nnsig: the model raised on the first batch, whose inputs "
                                 f"were {describe_inputs(x)}; pass inputs its forward takes"
                                 f"{_dtype_hint(x, float_dtype(self.model))}.")
                raise
        if first:
            assert tracker is not None
            fallback = self._default.fallback if self._default is not None else None
            if not rec.values and fallback is not None:
                logger.info("None of the %s yields a tensor with a batch axis; trying the next "
                            "rule", self._default.how if self._default else "")
                self._use_default(fallback)
                fallback.log()
                return self._pass(x, n, mask, token_ids, first)
            tracker.finish()
            self._pending = first_batch_names(self, rec)
            self._plans = make_plans(
                {k: rec.values[k] for k in self._pending}, tracker, self.pool, self.layout
            )
            for name in rec.changed(include_eager=True):
                if name not in self._plans:
                    continue
                self._plans[name].eager = True
                logger.info("Layer %r is changed in place later in the pass: it is processed "
                            "in its hook", name)
        return rec, raw

    def _eager(self, name: str, module_name: str, t: torch.Tensor, *, mask: Any,
               token_ids: Any) -> Finalized | None:
        plan = self._plans.get(name)
        if plan is None or not plan.eager:
            return None
        mask, token_ids = self._sequence(plan.module, mask, token_ids)
        return finalize(plan, t, t, mask, token_ids, own=True)

    def _finalize(self, name: str, cap: Any, mask: Any, token_ids: Any) -> Finalized:
        plan = self._plans[name]
        if cap.eager and self._batches > 0:
            return cap.value  # processed in the hook
        t = cap.value  # a reference, or the first batch's copy
        mask, token_ids = self._sequence(plan.module, mask, token_ids)
        return finalize(plan, t, cap.original, mask, token_ids, own=plan.owned)

    def _sequence(self, module: str, mask: Any, token_ids: Any) -> tuple[Any, Any]:
        """The mask and token ids of a capture: the decoder's for an encoder-decoder's
        ``decoder`` modules, else the input's."""
        if self._decoder_seq is not None and "decoder" in module.split("."):
            return self._decoder_seq
        return mask, token_ids

    def _check_reuse(self, rec: Recorder, names: list[str]) -> None:
        """Catch modules that hand out memory they write again on the next batch (CPU only;
        only captures whose results may be views of the module's tensor)."""
        prev, self._prev = self._prev, {}
        for name in names:
            cap, plan = rec.values[name], self._plans[name]
            orig = cap.original
            if plan.eager or plan.owned or not plan.may_alias or orig.device.type != "cpu":
                continue
            old = prev.get(name)
            if old is not None:
                before, version = old
                if version_of(before) != version or shares_storage(before, orig):
                    if self._batches > 1:
                        raise RuntimeError(
                            f"Layer {name!r} returned memory that the model wrote again on the "
                            "next batch, after the earlier batch was handed to the store without "
                            "a copy. Capture it with pool='mean' (or another reducing mode), or "
                            "report this model to nnsig."
                        )
                    plan.owned = True  # second batch: copy from now on (this one too)
                    logger.info("Layer %r reuses its memory from batch to batch: copied", name)
                    continue
            self._prev[name] = (orig, version_of(orig))

    def model_summary(self) -> dict[str, Any]:
        """Describe the model and the captured layers.

        Returns
        -------
        dict
            ``model_class``, ``parameters``, ``layers`` and ``token_layers``
            (those pooled with ``"tokens"``), each capture with ``name``,
            ``type``, ``shape`` (per row, pooled), ``source_shape``,
            ``layout``, ``pool``, ``parameters`` and ``config``. Before the
            first :meth:`run`, the selected modules without shapes.
        """
        layers, token_layers = layer_entries(self)
        return {
            "model_class": type(self.model).__name__,
            "parameters": n_parameters(self.model),
            "layers": layers,
            "token_layers": token_layers,
        }

    def model_fingerprint(self) -> str:
        """``"blake2b:<hex>"`` of every parameter and buffer (names, dtypes, shapes, bytes),
        recorded with each split so a capture is never resumed or extended with other weights."""
        h = hashlib.blake2b(digest_size=16)
        with torch.no_grad():
            for name, t in self.model.state_dict().items():
                if not isinstance(t, torch.Tensor):
                    continue
                h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                flat = t.detach().reshape(-1).contiguous()
                if flat.numel():
                    h.update(flat.cpu().view(torch.uint8).numpy().tobytes())
        return "blake2b:" + h.hexdigest()

    def to_numpy(self, x: Any) -> np.ndarray:
        """Convert inputs or labels to a host NumPy array (bfloat16 becomes float32)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
        return np.asarray(x)

    @ClassOrInstance
    def available_layers(self, example_input: Any = None) -> LayerList:
        """List capturable layers (see :func:`nnsig_torch.available_layers`).

        On the class: ``TorchAdapter.available_layers(model, example_input=None,
        device=None)``; on an instance: ``adapter.available_layers(example_input=None)``.
        """
        return available_layers(
            self.model, example_input, device=self.device, selected=self.layer_names,
            batch_axis=self.batch_axis,
        )

    def _output_tensor(self, raw: Any, n: int | None) -> torch.Tensor:
        out = model_output(raw).detach()
        moved = to_batch_first(out, n, batch_axis=self.batch_axis)
        if moved is None:
            hint = (" (the batch size read from axis 0 of the inputs); for sequence-first inputs "
                    "(seq, batch, ...) pass TorchAdapter(..., batch_axis=1)"
                    if self.batch_axis == 0 else "")
            raise ValueError(
                f"The model output has shape {tuple(out.shape)}, with no batch axis of size {n}"
                f"{hint}."
            )
        out = moved[0]
        rows = out.shape[0] if out.ndim else 1
        self.output_shape = tuple(int(d) for d in out.shape[1:])  # before it is flattened
        return out.reshape(rows, -1).to(torch.float32, memory_format=torch.contiguous_format,
                                        copy=True)

def _dtype_hint(x: Any, dtype: torch.dtype) -> str:
    """What to say when the batch's floating tensors are not of the model's dtype (NumPy
    arrays are cast to it, tensors are not)."""
    found: set[torch.dtype] = set()

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            if v.is_floating_point():
                found.add(v.dtype)
        elif isinstance(v, Mapping):
            for w in v.values():
                walk(w)
        elif isinstance(v, (tuple, list)):
            for w in v:
                walk(w)

    walk(x)
    if not found or found == {dtype}:
        return ""
    name = str(dtype).removeprefix("torch.")
    return (f" (the model's parameters are {name}: give tensors of that dtype, "
            f"x.to(torch.{name}), or NumPy arrays, which are cast to it)")


def _finite_total(total: torch.Tensor | None) -> bool:
    """Whether a sum taken in a hook proves its capture finite (an overflow is rechecked)."""
    return total is not None and math.isfinite(total.item())


def _host_numpy(t: Any) -> np.ndarray:
    """A tensor (or array) as NumPy on the host, for a first batch's checks."""
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
