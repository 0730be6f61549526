"""The Keras 3 adapter: capture hidden-layer activations of any Keras model."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from nnsig_core.protocol import (
    ADAPTER_FIX,
    LayerSelectionError,
    LayerSpec,
    check_batch_finite,
    check_finite,
)
from nnsig_core.protocol.adapter import describe_inputs
from nnsig_core.protocol.axes import LayoutSpec
from nnsig_core.protocol.pooling import (
    DEFAULT_MASK_KEYS,
    check_mask_key,
    pools_a_sequence,
    warn_of_unused_mask,
)
from nnsig_core.protocol.token_rows import TokenRows

from ._graph import (
    GraphRunner,
    HookRunner,
    Record,
    Scope,
    capture_names,
    make_runner,
    mark_selection,
    to_float32,
    units,
)
from ._model import (
    available_layers,
    check_model,
    default_selection,
    ensure_built,
    hook_limitation,
    resolve_layers,
    scope_of,
)
from ._pool import KerasPooler, masking_layers, sequence_inputs
from ._summary import layer_entry, n_parameters

logger = logging.getLogger("nnsig_keras")


class _ClassOrInstance:
    """``available_layers`` on the class takes a model; on an instance it uses the adapter's."""

    def __init__(self, func: Any) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return available_layers
        return lambda: available_layers(obj.model)


class KerasAdapter:
    """Capture the hidden-layer activations of a Keras 3 model, on any backend.

    Parameters
    ----------
    model : keras.Model
        A built Sequential or functional model (branches, merges, nested models,
        shared layers), or a subclassed model (torch backend only).
    layers : str, type, or sequence of them, optional
        Layer names (``"dense_1"``), paths inside nested models
        (``"encoder/dense_2"``), capture names of one call or output
        (``"shared:1"``, ``"split.0"``), glob patterns over the paths, layer
        classes (every instance, at any depth), or a list mixing them. By
        default every top-level layer but the input and output layers when
        there are at most 12; in larger graphs the block outputs (merge layers
        such as a residual ``Add``, each replaced by the activation that
        follows it), else the hidden layers but pass-through ones, at most 12,
        evenly spread (logged). Unknown names raise
        :class:`~nnsig_keras.UnknownLayerError` with close matches.
    input_shape : sequence of int, optional
        Shape of one sample, used only to build a model never built or called
        (its weights then freshly initialised).
    output : int or str
        Which model output gives the ``outputs`` array: a position or an
        output layer's name.
    keep_nonfinite : bool
        Keep NaN and Inf instead of raising
        :class:`~nnsig_core.protocol.NonFiniteActivationError`.
    pool : str, tuple, callable or dict
        The per-sample reduction, as for :class:`nnsig_torch.TorchAdapter`
        (``"auto"``, ``"mean"``, ``"max"``, ``"cls"``, ``"last"``,
        ``"tokens"``, ``"flatten"``, ``None``, a callable on the NumPy batch, a
        pair, or ``{name_or_glob: mode}``).
    layout : str or dict, optional
        Layouts (``"NHWC"``, ``"NCHW"``, ``"NLC"``...) overriding Keras' own:
        a layer's ``data_format``, features last for dense, attention and
        normalisation layers, ``keras.config.image_data_format()`` otherwise.
    mask : str, tuple of str, callable or None
        The key(s) of the attention mask in dict inputs (nonzero for real
        tokens), a callable ``inputs -> (n, L)``, or ``None``. Keys other
        than the default that a batch lacks are an error.
    token_key : str or None
        The key of the token ids in dict inputs, recorded per token row.

    Notes
    -----
    A layer inside a nested model is named by its path, ``outer/inner``; a
    layer called several times gives ``name``, ``name:1``... (a nested model
    called twice: ``encoder/dense``, ``encoder:1/dense``); one with several
    outputs ``name.0``, ``name.1``... Models with a symbolic graph are run
    through one *layer model* built from their own graph with
    ``predict_on_batch`` (any backend; the model is not modified); models or
    nested layers without a graph are run with torch forward hooks (torch
    backend; layer order is then the order they ran in). Activations and
    outputs are float32 NumPy arrays ``(n, *unit_shape)`` and ``(n, n_outputs)``.
    """

    framework = "keras"

    def __init__(
        self,
        model: Any,
        layers: LayerSpec | Sequence[LayerSpec] | None = None,
        *,
        input_shape: Sequence[int] | None = None,
        output: int | str = 0,
        keep_nonfinite: bool = False,
        pool: Any = "auto",
        layout: LayoutSpec = None,
        mask: Any = DEFAULT_MASK_KEYS,
        token_key: str | None = "input_ids",
    ) -> None:
        check_model(model)
        self._pooler = KerasPooler(pool, layout)
        self.mask = mask
        self.token_key = token_key
        ensure_built(model, input_shape)
        self._built_for = None if input_shape is None else tuple(input_shape)
        self.model = model
        self.backend = keras.backend.backend()
        self.keep_nonfinite = bool(keep_nonfinite)
        self._scope = scope_of(model)
        how = None
        if layers is None:
            paths, exact, how = default_selection(self._scope, model)
        else:
            paths, exact = resolve_layers(layers, units(self._scope), capture_names(self._scope),
                                          model.name)
        mark_selection(self._scope, paths, exact)
        if not self._scope.needed():
            raise LayerSelectionError("The selection captures no layer.")
        if self.backend != "torch":
            for s in self._scope.hook_scopes():
                raise hook_limitation(s, model)
        self._output = self._resolve_output(output)
        self._runner = make_runner(
            self._scope, [self._scope.graph.outputs[self._output]] if self._scope.is_graph else ()
        )
        self._names: list[str] | None = None
        self._ran = False
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._token_shapes: dict[str, tuple[int, ...]] = {}
        self._info: dict[str, tuple[str, Any]] = {}
        self._dropped: set[str] = set()
        selected = [c[0] for c in self._static_captures(self._scope)]
        logger.info("KerasAdapter: capturing %d layer(s) of %s %r (%s backend, %s): %s",
                    len(selected), type(model).__name__, model.name, self.backend,
                    "symbolic graph" if self._scope.is_graph else "forward hooks",
                    ", ".join(selected))
        if how is not None:
            if not self._scope.is_graph:
                how += " (the output layer is found on the first batch)"
            logger.info("KerasAdapter: default selection, %s; pass layers=[names, globs or "
                        "classes] to choose (e.g. 'encoder/*' for the layers of a nested model).",
                        how)

    def __repr__(self) -> str:
        n = len(self._names) if self._names is not None else "?"
        return f"KerasAdapter({type(self.model).__name__} {self.model.name!r}, {n} captures)"

    def _resolve_output(self, output: int | str) -> int:
        if not self._scope.is_graph:
            if not isinstance(output, int):
                raise ValueError("output must be a position (int) for models without a graph.")
            return output
        outs = self._scope.graph.outputs
        if isinstance(output, str):
            names = [t._keras_history.operation.name for t in outs]
            if output not in names:
                raise ValueError(f"output={output!r} is not an output layer; outputs: {names}.")
            return names.index(output)
        if not -len(outs) <= output < len(outs):
            raise ValueError(f"output={output} but the model has {len(outs)} output(s).")
        return output % len(outs)

    @property
    def layer_names(self) -> list[str] | None:
        """Capture names, in order (known after the first :meth:`run`)."""
        return None if self._names is None else list(self._names)

    def run(self, inputs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Run one batch and return its outputs and activations.

        Parameters
        ----------
        inputs : Any
            What the model takes: a NumPy array or backend tensor, or a
            list/dict of them for a model with several inputs.

        Returns
        -------
        outputs, activations
            As :meth:`nnsig_core.protocol.Adapter.run`, float32, pooled; layers
            pooled with ``"tokens"`` are
            :class:`~nnsig_core.protocol.token_rows.TokenRows` under ``name + "@tokens"``.

        Raises
        ------
        NonFiniteActivationError
            NaN or Inf (unless ``keep_nonfinite``).
        LayerSelectionError
            The layers that ran differ from those of the first batch.
        ValueError
            An activation without a batch axis, or a shape that changed.
        """
        runner = self._runner
        try:
            if isinstance(runner, GraphRunner):
                records, outs = runner.run(inputs)
            else:
                assert isinstance(runner, HookRunner)
                records, flat, same = runner.run(inputs)
        except Exception as exc:
            if not self._ran:  # the model's own error, with what it was given
                wrapper = (f" (nnsig runs it as {runner.model.name!r}, a Keras model of its "
                           "graph that also returns the captured layers)"
                           if isinstance(runner, GraphRunner) else "")
                exc.add_note(f"nnsig: the model raised on the first batch, whose inputs were "
                             f"{describe_inputs(inputs)}; pass inputs the model takes"
                             f"{wrapper}.{self._input_shape_hint(inputs)}")
            raise
        self._ran = True
        if isinstance(runner, GraphRunner):
            raw_out, same = outs[0], list[Any]()
        else:
            if not flat:
                raise ValueError(f"Model {self.model.name!r} returned no tensor.")
            if not -len(flat) <= self._output < len(flat):
                raise ValueError(f"output={self._output} but the model returned {len(flat)} "
                                 "tensors.")
            raw_out = flat[self._output]
        out = to_float32(raw_out)
        if out.ndim == 0:
            raise ValueError("The model output has no batch axis.")
        n = out.shape[0]
        self.output_shape = tuple(int(d) for d in out.shape[1:])  # before it is flattened
        out = out.reshape(n, -1)
        first = self._names is None
        if first:
            self._first_batch(records, same, out)
        acts = {name: to_float32(value) for name, _path, _layer, value in records
                if name not in self._dropped}
        if list(acts) != self._names:
            raise LayerSelectionError(
                f"This batch captured {list(acts)} but the first batch captured {self._names}: "
                "the model ran different layers (data-dependent control flow?). Select layers "
                "that run on every batch."
            )
        for name, a in acts.items():
            if a.ndim == 0 or a.shape[0] != n:
                raise ValueError(
                    f"Layer {name!r} returned shape {a.shape} for a batch of {n}: it has no batch "
                    "axis; leave it out of `layers`."
                )
        if not self._pooler.plans:
            self._pooler.plan([(k, self._info[k][0], self._info[k][1], a)
                               for k, a in acts.items()])
        check_mask_key(inputs, self.mask)
        mask, token_ids = sequence_inputs(inputs, self.mask, self.token_key)
        if first:
            sequence = any(pools_a_sequence(lay, mode, tokens)
                           for lay, mode, _, tokens in self._pooler.plans.values())
            warn_of_unused_mask(inputs, self.mask, mask,
                                lambda v: np.asarray(keras.ops.convert_to_numpy(v)),
                                masking_layers(self.model), pooled=sequence)
        pooled: dict[str, Any] = {}
        for name, a in acts.items():
            pooled.update(self._pooler.apply(name, a, mask, token_ids))
        for key, value in pooled.items():
            tokens = isinstance(value, TokenRows)
            shapes = self._token_shapes if tokens else self._shapes
            shape = tuple(value.values.shape[1:] if tokens else value.shape[1:])
            if shapes.setdefault(key, shape) != shape:
                raise ValueError(
                    f"Layer {key!r} returned per-sample shape {shape} but {shapes[key]} on the "
                    "first batch; inputs of varying size need pool='mean' or 'max'."
                )
        if not self.keep_nonfinite:
            check_batch_finite(out, {k: v for k, v in pooled.items()
                                     if not isinstance(v, TokenRows)})
            for key, value in pooled.items():
                if isinstance(value, TokenRows):
                    check_finite(value.values, layer=key, fix=ADAPTER_FIX,
                                 scope="the token rows of the batch")
        return out, pooled

    def _first_batch(self, records: list[Record], same: list[int], out: np.ndarray) -> None:
        if self._scope.drop_output and records:
            drop = set(same)
            if not drop:  # a layer whose output is the model output, copied on the way
                top = [i for i, r in enumerate(records) if "/" not in r[1]]
                arr = to_float32(records[top[-1]][3]) if top else None
                if (arr is not None and arr.shape[:1] == out.shape[:1]
                        and np.array_equal(arr.reshape(len(arr), -1), out)):
                    drop = {top[-1]}
            self._dropped = {records[i][0] for i in drop}
            if self._dropped:
                logger.info("KerasAdapter: leaving out %s, which produces the model output.",
                            ", ".join(sorted(self._dropped)))
        names = [r[0] for r in records if r[0] not in self._dropped]
        dupes = sorted({x for x in names if names.count(x) > 1})
        if dupes:
            raise LayerSelectionError(
                f"Several captures are named {dupes}: layer names that contain ':' or '.' clash "
                "with the call and output suffixes; rename those layers."
            )
        if not names:
            raise LayerSelectionError(
                f"No selected layer of {self.model.name!r} ran on this batch; choose other layers."
            )
        self._names = names
        self._info = {name: (path, layer) for name, path, layer, _value in records
                      if name not in self._dropped}

    def model_fingerprint(self) -> str:
        """``"blake2b-v2:<hex>"`` of every weight (in the model's order: dtypes, shapes,
        bytes), recorded with each split so a capture is never resumed or extended with other
        weights. Not the weights' paths: Keras numbers its layers' default names per session
        (``dense_3``), so the same model rebuilt would seem another."""
        return self._fingerprint(lambda i, w: str(i), "blake2b-v2:")

    def legacy_fingerprints(self) -> list[str]:
        """nnsig 0.2's fingerprint (of the weights' paths too): splits it captured match."""
        return [self._fingerprint(lambda i, w: getattr(w, "path", w.name), "blake2b:")]

    def _fingerprint(self, key: Any, scheme: str) -> str:
        h = hashlib.blake2b(digest_size=16)
        for i, w in enumerate(self.model.weights):
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
            h.update(f"{key(i, w)}|{value.dtype}|{value.shape}|".encode())
            h.update(value.tobytes())
        return scheme + h.hexdigest()

    def _input_shape_hint(self, inputs: Any) -> str:
        """When the samples' axes are the model input's, channels first, or the model was
        built here from ``input_shape`` of another rank (the batch axis given in it?)."""
        shape = getattr(inputs, "shape", None)
        first = (getattr(self.model, "inputs", None) or [None])[0]
        wanted, got = tuple(getattr(first, "shape", ()) or ())[1:], tuple(shape or ())[1:]
        if got != wanted and len(got) > 1 and tuple(got[1:]) + tuple(got[:1]) == wanted:
            return (f" The model takes samples of shape {wanted!r} and these are "
                    f"{tuple(got)!r}, channels first: pass numpy.moveaxis(x, 1, -1).")
        if self._built_for is None or shape is None or len(shape) == len(self._built_for) + 1:
            return ""
        return (f" The model was built for input_shape={self._built_for!r}, samples of "
                f"{len(self._built_for)} axes, but these have {len(shape) - 1}: input_shape is "
                f"one sample's shape, without the batch axis (here {tuple(shape[1:])!r}).")

    def model_summary(self) -> dict[str, Any]:
        """Describe the model and the captured layers.

        Returns
        -------
        dict
            ``model_class``, ``name``, ``backend``, ``keras_version``,
            ``parameters``, ``layers`` and ``token_layers``, each capture with
            ``name``, ``type``, ``path``, ``shape``, ``units``, ``activation``
            (if any), ``parameters`` and ``config``. Before the first
            :meth:`run`, the captures known from the graph, with static shapes.
        """
        layers, token_layers = [], []
        if self._names is not None and self._pooler.plans:
            for name in self._names:
                path, layer = self._info[name]
                extra = self._pooler.describe(name)
                if name in self._shapes:
                    layers.append(layer_entry(name, path, layer, self._shapes[name]) | extra)
                tkey = name + "@tokens"
                if tkey in self._token_shapes:
                    token_layers.append(
                        layer_entry(name, path, layer, self._token_shapes[tkey]) | extra)
        else:
            layers = [layer_entry(*c) for c in self._static_captures(self._scope)]
        try:
            total = int(self.model.count_params())
        except Exception:
            total = n_parameters(self.model)
        return {
            "model_class": type(self.model).__name__,
            "name": self.model.name,
            "backend": self.backend,
            "keras_version": keras.__version__,
            "parameters": total,
            "layers": layers,
            "token_layers": token_layers,
        }

    def _static_captures(self, scope: Scope) -> list[tuple[str, str, Any, tuple[int, ...] | None]]:
        if not scope.is_graph:
            return [(scope.prefix + p[len(scope.path_prefix) :], p, scope.layers[p], None)
                    for p in scope.hooked]
        found: list[tuple[str, str, Any, tuple[int, ...] | None]] = []
        for c in scope.calls:
            if c.child is not None and c.child.needed():
                found += self._static_captures(c.child)
            for i in c.selected:
                shape = tuple(c.outputs[i].shape)[1:]
                found.append((c.output_name(i), c.path, c.op, None if None in shape else shape))
        return found

    def to_numpy(self, x: Any) -> np.ndarray:
        """Convert inputs or labels (NumPy, backend tensors, torch tensors) to a host NumPy array."""
        if isinstance(x, np.ndarray):
            return x
        detach = getattr(x, "detach", None)
        if callable(detach):  # a torch tensor, whatever the backend
            t = detach().cpu()
            if str(t.dtype) == "torch.bfloat16":
                t = t.float()
            return t.numpy()
        if keras.ops.is_tensor(x):
            return np.asarray(keras.ops.convert_to_numpy(x))
        numpy = getattr(x, "numpy", None)
        if callable(numpy):
            return np.asarray(numpy())
        return np.asarray(x)

    @_ClassOrInstance
    def available_layers(self) -> list[dict[str, Any]]:
        """List capturable layers (see :func:`nnsig_keras.available_layers`): on the class
        ``KerasAdapter.available_layers(model)``, on an adapter ``adapter.available_layers()``."""
        return available_layers(self.model)
