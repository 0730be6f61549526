"""The PyTorch adapter: capture hidden-layer activations with forward hooks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nnsig_core.adapter import LayerSelectionError, LayerSpec, check_batch_finite, close_matches

from ._capture import Recorder, hooks
from ._fingerprint import weights_fingerprint
from ._pool import PoolSpec, apply_pool, check_pool, pool_for
from ._runtime import (
    batch_size,
    call_model,
    float_dtype,
    forward_context,
    model_device,
    move_inputs,
    to_host,
)
from ._select import default_layers, resolve_layers, unwrap_model
from ._structure import model_output, to_batch_first
from ._summary import LayerInfo, LayerList, module_config, n_parameters

__all__ = ["TorchAdapter", "available_layers"]

logger = logging.getLogger("nnsig_torch")


def available_layers(
    model: nn.Module,
    example_input: Any = None,
    *,
    device: str | torch.device | None = None,
    selected: Sequence[str] | None = None,
) -> LayerList:
    """List the layers of a model that can be captured.

    Parameters
    ----------
    model : torch.nn.Module
        The model (``DataParallel``/DDP/``torch.compile`` wrappers are unwrapped).
    example_input : Any, optional
        A small batch. With it, every module is run once and each capture name
        (``module[:call][.path]``) is listed with its per-sample shape, in the
        order the modules ran, followed by the modules that did not run. Without
        it, modules are listed without shapes.
    device : str or torch.device, optional
        Where to put ``example_input``; the model's device by default.
    selected : sequence of str, optional
        Module names to mark as selected; the default selection when omitted.

    Returns
    -------
    LayerList
        A list of :class:`LayerInfo` that prints as a table.
    """
    model = unwrap_model(model)
    modules = {n: m for n, m in model.named_modules() if n}
    if selected is None:
        try:
            selected = default_layers(model, log=False)
        except LayerSelectionError:
            selected = []
    chosen = set(selected)

    def info(name: str, module_name: str, shape: tuple[int, ...] | None) -> LayerInfo:
        m = modules[module_name]
        return LayerInfo(
            name, module_name, type(m).__name__, shape, n_parameters(m), module_name in chosen
        )

    if example_input is None:
        return LayerList(info(n, n, None) for n in modules)
    dev = torch.device(device) if device is not None else model_device(model)
    x = move_inputs(example_input, dev, float_dtype(model))
    rec = Recorder(batch_size(x), lambda _c, _m, t: tuple(t.shape[1:]), strict=False)
    with forward_context(model, list(modules)), hooks(model, list(modules), rec):
        call_model(model, x)
    rows = [info(name, rec.modules[name], shape) for name, shape in rec.values.items()]
    listed = set(rec.modules.values())
    rows += [info(n, n, None) for n in modules if n not in listed]
    return LayerList(rows)


class _ClassOrInstance:
    """``available_layers`` on the class takes a model; on an instance it uses the adapter's."""

    def __init__(self, func: Any) -> None:
        self.func = func
        functools.update_wrapper(self, func)

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return available_layers
        return functools.partial(self.func, obj)


class TorchAdapter:
    """Capture the activations of a PyTorch model with forward hooks.

    Parameters
    ----------
    model : torch.nn.Module
        The model. ``DataParallel``, ``DistributedDataParallel`` and
        ``torch.compile`` wrappers are unwrapped: the inner module is run on one
        device and layer names carry no ``module.`` prefix.
    layers : str, type, or sequence of them, optional
        What to capture: qualified module names from ``model.named_modules()``
        (``"layer1.0.conv1"``), glob patterns (``"features.*"``), module types
        (``torch.nn.ReLU``), or a list mixing them. By default every activation
        module (ReLU, GELU, SiLU, Tanh...) if the model has any, else every
        hidden leaf module but the last (logged on the ``nnsig_torch`` logger).
        A name given exactly must run on every batch; modules found by a glob,
        a type or the default that never run are left out (with a warning).
    pool : None, str, callable or dict, optional
        How each captured tensor is reduced per sample. ``None`` keeps the
        per-sample shape (``(C, H, W)`` for a feature map); ``"mean"`` / ``"max"``
        average / take the maximum over every axis after the channel axis, so
        ``(n, C, *spatial)`` gives ``(n, C)`` (tensors with fewer than three
        axes are unchanged; this assumes channels-first tensors, use a callable
        such as ``lambda t: t.mean(1)`` to average ``(n, tokens, dim)`` over
        tokens); ``"flatten"`` gives ``(n, prod(unit_shape))``. A dict
        ``{name_or_glob: mode}`` sets it per layer: a key equal to a capture
        name wins, then one equal to the module name, then the first matching
        glob; layers matching no key are not pooled. Every key must match a
        captured layer (checked on the first batch).
    device : str or torch.device, optional
        Where inputs are moved; the device of the model's first parameter (at
        each call, CPU if it has none) by default. The model itself is not moved.
    keep_nonfinite : bool
        Keep NaN and Inf values instead of raising
        :class:`~nnsig_core.adapter.NonFiniteActivationError` (a ``ValueError``).

    Notes
    -----
    * **Names.** A module called several times per forward pass yields one
      capture per call: ``name``, ``name:1``, ``name:2``... Structured outputs
      are flattened: tuples and lists by position (``lstm.0``, ``lstm.1.0``,
      ``lstm.1.1``), dicts, dataclasses, ``ModelOutput`` and named tuples by key
      (``encoder.last_hidden_state``), recursively; non-tensor leaves, per-batch
      scalars and integer tensors in a structure are skipped. The full pattern
      is ``module[:call][.path]``.
    * **Values.** Each captured tensor is pooled and copied to a new float32
      tensor inside the hook, so in-place operations run later (``ReLU(inplace=
      True)``) cannot alter it. float16/bfloat16/float64 become float32; a
      module returning an integer, boolean or complex tensor is an error.
      The batch axis is put first: recurrent hidden states ``(layers, n, h)``
      and sequence-first tensors ``(L, n, ...)`` are transposed.
    * **Running.** Each :meth:`run` registers its hooks, runs the model in
      ``eval()`` mode under ``torch.no_grad()`` and, in a ``finally`` block,
      removes exactly its hooks and restores every submodule's ``training``
      flag. ``no_grad`` rather than ``inference_mode``: tensors a model caches
      during the pass (rotary tables, buffers) stay usable for training later.
      Inputs may be a tensor, a NumPy array (floating arrays take the model's
      dtype), a tuple/list (positional arguments) or a dict (keyword arguments).
    * **CUDA.** Captured tensors stay on the device during the pass; after it,
      all of them are copied with ``non_blocking=True`` into one pinned host
      buffer, with a single stream synchronisation per batch.
    """

    framework = "torch"

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec | Sequence[LayerSpec] | None = None,
        pool: PoolSpec = None,
        device: str | torch.device | None = None,
        keep_nonfinite: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"TorchAdapter needs a torch.nn.Module, got {type(model).__name__}.")
        self.model = unwrap_model(model)
        if layers is None:
            self.layer_names, self._explicit = default_layers(self.model), set()
        else:
            self.layer_names, self._explicit = resolve_layers(self.model, layers)
        self.pool = check_pool(pool)
        self.device = torch.device(device) if device is not None else None
        self.keep_nonfinite = bool(keep_nonfinite)
        self._names: list[str] | None = None  # capture names fixed by the first batch
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._modules: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"TorchAdapter({type(self.model).__name__}, {len(self.layer_names)} modules, "
            f"pool={self.pool!r})"
        )

    # -- the adapter protocol -------------------------------------------------

    def run(self, inputs: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run one batch and return its outputs and activations.

        Parameters
        ----------
        inputs : Any
            A tensor, a NumPy array, or a tuple/list/dict of them.

        Returns
        -------
        outputs, activations
            As :meth:`nnsig_core.adapter.Adapter.run`, float32. ``outputs`` is
            the tensor the model returns, or the ``logits`` entry / first
            tensor of a structured one.

        Raises
        ------
        NonFiniteActivationError
            NaN or Inf in an activation or the output (unless ``keep_nonfinite``).
        LayerSelectionError
            A layer named exactly never ran, or the captured names differ from
            the first batch's, or a ``pool`` key matches no captured layer.
        ValueError
            A shape that changed since the first batch, or no batch axis.
        """
        model = self.model
        device = self.device or model_device(model)
        x = move_inputs(inputs, device, float_dtype(model))
        n = batch_size(x)
        used_keys: set[str] = set()

        def process(name: str, module_name: str, t: torch.Tensor) -> torch.Tensor:
            mode, key = pool_for(self.pool, name, module_name)
            if key is not None:
                used_keys.add(key)
            return apply_pool(t, mode)

        rec = Recorder(n, process)
        with forward_context(model, self.layer_names), hooks(model, self.layer_names, rec):
            raw = call_model(model, x)
        out = self._output_tensor(raw, n)
        names = self._check_names(rec, used_keys)
        self._check_shapes(rec.values)
        tensors = [rec.values[k] for k in names] + [out]
        k = len(tensors)
        if not self.keep_nonfinite:  # one sum per sample, computed where the tensor lives
            tensors += [_row_sums(t) for t in tensors]
        host = to_host(tensors)
        outputs, acts = host[k - 1], dict(zip(names, host[: k - 1], strict=True))
        if not self.keep_nonfinite:
            sums = dict(zip(names, host[k:-1], strict=True))
            check_batch_finite(outputs, acts, row_sums=sums, output_row_sums=host[-1])
        return outputs, acts

    def model_summary(self) -> dict[str, Any]:
        """Describe the model and the captured layers.

        Returns
        -------
        dict
            ``model_class``, ``parameters`` (total count) and ``layers``: for each
            capture, ``name``, ``type`` (module class), ``shape`` (per sample,
            after pooling), ``parameters`` (of the module, recursive) and
            ``config`` (hyper-parameters such as ``in_features`` or
            ``kernel_size``). Before the first :meth:`run`, the selected modules
            are listed without shapes.
        """
        if self._names is None:
            entries = [(n, n, None) for n in self.layer_names]
        else:
            entries = [(c, self._modules[c], self._shapes[c]) for c in self._names]
        layers = []
        for name, module_name, shape in entries:
            m = self.model.get_submodule(module_name)
            entry: dict[str, Any] = {"name": name, "type": type(m).__name__}
            if shape is not None:
                entry["shape"] = list(shape)
            entry["parameters"] = n_parameters(m)
            entry["config"] = module_config(m)
            layers.append(entry)
        return {
            "model_class": type(self.model).__name__,
            "parameters": n_parameters(self.model),
            "layers": layers,
        }

    def model_fingerprint(self) -> str:
        """A fingerprint of the model's weights (see ``nnsig_torch._fingerprint``), recorded
        with each split so a capture is never resumed or extended with other weights."""
        return weights_fingerprint(self.model)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Convert inputs or labels to a host NumPy array (bfloat16 becomes float32)."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            return (x.float() if x.dtype == torch.bfloat16 else x).numpy()
        return np.asarray(x)

    @_ClassOrInstance
    def available_layers(self, example_input: Any = None) -> LayerList:
        """List capturable layers, with shapes when given an example batch.

        On the class: ``TorchAdapter.available_layers(model, example_input=None,
        device=None)``; on an instance: ``adapter.available_layers(example_input=
        None)``, marking the adapter's selected modules. See
        :func:`nnsig_torch.available_layers`.
        """
        return available_layers(
            self.model, example_input, device=self.device, selected=self.layer_names
        )

    # -- checks ---------------------------------------------------------------

    def _output_tensor(self, raw: Any, n: int | None) -> torch.Tensor:
        out = model_output(raw).detach()
        moved = to_batch_first(out, n)
        if moved is None:
            raise ValueError(
                f"The model output has shape {tuple(out.shape)}, with no batch axis of size {n}."
            )
        out = moved[0]
        rows = out.shape[0] if out.ndim else 1
        return out.reshape(rows, -1).to(torch.float32, memory_format=torch.contiguous_format)

    def _check_names(self, rec: Recorder, used_keys: set[str]) -> list[str]:
        missing = sorted(n for n in self._explicit if n not in rec.calls)
        if missing:
            raise LayerSelectionError(
                f"Selected layer(s) never ran during the forward pass: {', '.join(missing)}. "
                "Their forward() is not called by the model (e.g. only their weights are used)."
            )
        if not rec.values:
            raise LayerSelectionError(
                "None of the selected modules ran during the forward pass: "
                + ", ".join(self.layer_names[:8])
            )
        if self._names is None:
            self._first_batch(rec, used_keys)
            return list(self._names)  # type: ignore[arg-type]
        got, want = set(rec.values), set(self._names)
        if got != want:
            extra, lost = sorted(got - want), sorted(want - got)
            raise LayerSelectionError(
                "The captured layers differ from the first batch's"
                + (f"; new: {', '.join(extra)}" if extra else "")
                + (f"; missing: {', '.join(lost)}" if lost else "")
                + ". The model's control flow depends on the data; select layers that "
                "run on every batch."
            )
        return list(self._names)

    def _first_batch(self, rec: Recorder, used_keys: set[str]) -> None:
        if isinstance(self.pool, Mapping):
            unused = [k for k in self.pool if k not in used_keys]
            if unused:
                hint = close_matches(unused[0], list(rec.values))
                raise LayerSelectionError(
                    f"pool key(s) {', '.join(map(repr, unused))} match no captured layer"
                    + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ".")
                )
        idle = [n for n in self.layer_names if n not in rec.calls]
        if idle:
            logger.warning(
                "%d selected module(s) never ran and are not captured: %s",
                len(idle),
                ", ".join(idle[:8]) + (", ..." if len(idle) > 8 else ""),
            )
        self._names = list(rec.values)
        self._modules = dict(rec.modules)

    def _check_shapes(self, values: Mapping[str, torch.Tensor]) -> None:
        for name, t in values.items():
            shape = tuple(t.shape[1:])
            old = self._shapes.setdefault(name, shape)
            if old != shape:
                raise ValueError(
                    f"Layer {name!r} has per-sample shape {shape} but had {old} on the first "
                    "batch; use pool='mean', 'max' or a callable for variable-size outputs."
                )


def _row_sums(t: torch.Tensor) -> torch.Tensor:
    """One float32 sum per sample: non-finite whenever the row holds a NaN or Inf.

    A read-only reduction, several times cheaper than ``isfinite(t).all(1)``,
    which allocates a boolean copy of every activation.
    """
    return t.reshape(t.shape[0], -1).sum(dim=1, dtype=torch.float32)
