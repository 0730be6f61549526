"""Keras models as the adapter sees them: checks, building, scopes, selected, default and
available layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.protocol import LayerSelectionError, LayerSpec, SelectionWording, resolve_selection

from ._graph import Scope, build_scope, graph_of, hook_scope, units
from ._summary import layer_classes, n_parameters


class ModelNotBuiltError(ValueError):
    """The model has no weights yet: it was never built, called or trained."""


class UnsupportedModelError(ValueError):
    """The model (or the selected layers) cannot be captured on this backend."""


def check_model(model: Any) -> None:
    if isinstance(model, keras.Model):
        return
    cls = type(model)
    what = f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(model, keras.Layer):
        raise TypeError(
            f"KerasAdapter needs a keras.Model, got the layer {what}. "
            "Wrap it: keras.Sequential([keras.Input(shape), layer])."
        )
    if cls.__module__.startswith(("tf_keras", "tensorflow", "keras.engine", "keras.src.engine")):
        raise TypeError(
            f"KerasAdapter needs a Keras 3 model (keras.Model), got {what}, a Keras 2 / tf.keras "
            "model. Save it and load it with Keras 3 (keras.saving.load_model), or rebuild it "
            "with `import keras` (Keras >= 3)."
        )
    if any(c.__module__.startswith("torch.nn") for c in cls.__mro__):
        raise TypeError(
            f"KerasAdapter needs a Keras 3 model (keras.Model), got the PyTorch module {what}; "
            "use nnsig_torch.TorchAdapter(model) for PyTorch models."
        )
    raise TypeError(
        f"KerasAdapter needs a Keras 3 model (keras.Model, keras.Sequential or a functional "
        f"model built with keras.Input), got {what}."
    )


def ensure_built(model: Any, input_shape: Sequence[int] | None) -> None:
    """Raise (or build from ``input_shape``) when the model has no weights yet."""
    if isinstance(model, keras.Sequential):
        if not model.layers:
            raise ModelNotBuiltError(
                f"Sequential model {model.name!r} has no layers; add layers before capturing it."
            )
        if model.built and graph_of(model) is not None:
            return
        if not model.built:
            if input_shape is None:
                raise ModelNotBuiltError(
                    f"Sequential model {model.name!r} has not been built: its input shape is "
                    "unknown and it has no weights. Start it with keras.Input(shape=...), call "
                    "model.build((None, *input_shape)), train it, or pass "
                    "KerasAdapter(model, input_shape=(...)) (the shape of one sample, without "
                    "the batch axis)."
                )
            warn(
                f"Building Sequential model {model.name!r} for inputs of shape "
                f"{tuple(input_shape)}: its weights are freshly initialised."
            )
            model.build((None, *input_shape))
        return
    if graph_of(model) is not None:  # functional models are built by construction
        return
    if not model.built:
        if input_shape is None:
            raise ModelNotBuiltError(
                f"Model {model.name!r} ({type(model).__name__}) has never been called, so its "
                "layers have no weights. Call it once on a batch (model(x[:1])), train it, or "
                "pass KerasAdapter(model, input_shape=(...)) (the shape of one sample)."
            )
        warn(
            f"Calling model {model.name!r} once on zeros of shape {(1, *input_shape)} to build "
            "it: its weights are freshly initialised."
        )
        model(np.zeros((1, *input_shape), dtype="float32"), training=False)


def hook_limitation(scope: Scope, model: Any) -> UnsupportedModelError:
    what = (
        f"model {model.name!r} is a subclassed {type(model).__name__} without a symbolic graph"
        if scope.op is model
        else f"the selected layers under {scope.path_prefix.rstrip('/')!r} belong to "
        f"{type(scope.op).__name__} {scope.op.name!r}, which has no symbolic graph (subclassed)"
    )
    return UnsupportedModelError(
        f"Cannot capture: {what}. Without a graph, layers can only be captured with forward "
        "hooks, which need the torch backend (KERAS_BACKEND=torch, set before importing keras); "
        f"the backend is {keras.backend.backend()!r}. Build the model with the functional API "
        "(keras.Input + layer calls) to capture it on any backend, or select other layers."
    )


def scope_of(model: Any) -> Scope:
    graph = graph_of(model)
    return build_scope(model, graph) if graph is not None else hook_scope(model)


#: At most this many layers are captured by default (evenly spread).
MAX_DEFAULT_LAYERS = 12

# Merges that join paths (residual adds, dense concatenations), as layers or as operations
# (``inputs + x`` in a functional model); gating products (squeeze-excite) come second.
_MERGES = ("Add", "Concatenate", "Average", "Maximum", "Minimum", "Subtract")
_GATES = ("Multiply", "Dot")


def _merge_kind(op: Any) -> int:
    """2 for a merge of paths, 1 for a gating product, 0 otherwise (layers and operations)."""
    if not type(op).__module__.startswith("keras"):
        return 0
    name = type(op).__name__
    return 2 if name in _MERGES else 1 if name in _GATES else 0


_ACTIVATION_TYPES = layer_classes("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax")
_PASS_THROUGH_TYPES = layer_classes(
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "Flatten",
    "Reshape", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
    "Cropping3D", "Rescaling", "Normalization", "Resizing",
)


def _spread(items: list[Any], limit: int) -> list[Any]:
    if len(items) <= limit:
        return items
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, limit)).astype(int))
    return [items[i] for i in idx]


def default_selection(scope: Scope, model: Any) -> tuple[set[str], set[str], str]:
    """The layers captured by default: ``(paths, capture names, how they were chosen)``
    (the rule: ``docs/design.md``, Keras; without a graph, the top-level layers, the output
    layer left out on the first batch)."""
    if scope.is_graph:
        out_ids = {id(t) for t in scope.graph.outputs}
        produces_output = [any(id(t) in out_ids for t in c.outputs) for c in scope.calls]
        hidden = [
            c for c, out in zip(scope.calls, produces_output, strict=True)
            if isinstance(c.op, keras.Layer) and not out
        ]
        merge_ops = [  # joining two tensors or more (not `x + 3`)
            c for c, out in zip(scope.calls, produces_output, strict=True)
            if not out and _merge_kind(c.op) and len(c.node.arguments.keras_tensors) >= 2
        ]
        if not hidden:
            raise LayerSelectionError(
                f"Model {model.name!r} has no hidden layer to capture by default (its only "
                "layers produce its outputs); pass layers=[...] to choose."
            )
        how = "every layer but the input and output layers"
        chosen = hidden
        if len(hidden) > MAX_DEFAULT_LAYERS:
            merges = [c for c in merge_ops if _merge_kind(c.op) == 2] or merge_ops
            if merges:
                consumers: dict[int, list[Any]] = {}
                for c in scope.calls:
                    for t in c.node.arguments.keras_tensors:
                        consumers.setdefault(id(t), []).append(c)
                chosen = []
                for c in merges:
                    after = consumers.get(id(c.outputs[0]), []) if len(c.outputs) == 1 else []
                    only = after[0] if len(after) == 1 else None
                    chosen.append(only if only is not None
                                  and isinstance(only.op, _ACTIVATION_TYPES) else c)
                how = f"the block outputs ({len(chosen)} merge layers or the activation after each)"
            else:
                chosen = [c for c in hidden if not isinstance(c.op, _PASS_THROUGH_TYPES)] or hidden
                how = f"the {len(chosen)} hidden layers but pass-through ones"
            if len(chosen) > MAX_DEFAULT_LAYERS:
                how += f", {MAX_DEFAULT_LAYERS} evenly spread"
            chosen = _spread(chosen, MAX_DEFAULT_LAYERS)
        return set(), {c.name for c in chosen}, how
    top = [p for p, layer in scope.layers.items() if "/" not in p]
    if not top:
        raise LayerSelectionError(f"Model {model.name!r} tracks no layer to capture.")
    scope.drop_output = True
    how = "every top-level layer but the output layer"
    if len(top) > MAX_DEFAULT_LAYERS + 1:
        top = _spread(top[:-1], MAX_DEFAULT_LAYERS)
        how += f", {MAX_DEFAULT_LAYERS} evenly spread"
    return set(top), set(), how


def available_layers(model: Any) -> list[dict[str, Any]]:
    """List the layers of a Keras model that can be captured.

    Parameters
    ----------
    model : keras.Model
        A built model.

    Returns
    -------
    list of dict
        One per layer path, model order: ``name`` (the path), ``type``,
        ``calls`` (capture names; empty without a graph), ``shape`` (per sample,
        first output of the first call, or None), ``parameters`` and
        ``default`` (captured by default).
    """
    check_model(model)
    ensure_built(model, None)
    scope = scope_of(model)
    try:
        paths, exact, _how = default_selection(scope, model)
    except LayerSelectionError:
        paths, exact = set(), set()
    calls: dict[str, list[Any]] = {}

    def walk(s: Scope) -> None:
        if s.is_graph:
            for c in s.calls:
                calls.setdefault(c.path, []).append(c)
                if c.child is not None:
                    walk(c.child)

    walk(scope)
    rows = []
    for path, layer in units(scope).items():
        cs = calls.get(path, [])
        names = []
        for c in cs:
            names += [c.output_name(i) for i in range(len(c.outputs))]
        shape = None
        if cs and cs[0].outputs and None not in tuple(cs[0].outputs[0].shape)[1:]:
            shape = tuple(int(s) for s in cs[0].outputs[0].shape[1:])
        rows.append(
            {
                "name": path,
                "type": type(layer).__name__,
                "calls": names,
                "shape": shape,
                "parameters": n_parameters(layer),
                "default": path in paths or any(c.name in exact for c in cs),
            }
        )
    return rows


def resolve_layers(
    layers: LayerSpec | Sequence[LayerSpec],
    units: Mapping[str, Any],
    capture_names: Sequence[str],
    model_name: str,
) -> tuple[set[str], set[str]]:
    """The layer paths ``layers`` selects whole and the capture names it selects one by one
    (``units``: every selectable path to its layer, in model order; ``capture_names``: those
    known without running the model), as :func:`nnsig_core.protocol.resolve_selection`."""
    wording = SelectionWording(
        model=f"model {model_name!r}",
        item="layer",
        kind="class",
        kinds="classes",
        entries="a layer name, a glob pattern or a Keras layer class (e.g. keras.layers.Dense)",
        listing="Layers of nested models are named by their path ('encoder/dense_2'); "
        "KerasAdapter.available_layers(model) lists every name.",
    )
    sel = resolve_selection(layers, units, wording, extra=capture_names)
    return set(sel.matched), sel.extra
