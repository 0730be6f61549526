"""Keras models as the adapter sees them: checks, building, scopes, default and available layers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from nnsig_core.adapter import LayerSelectionError

from ._graph import Scope, build_scope, graph_of, hook_scope, units
from ._summary import n_parameters

__all__ = [
    "ModelNotBuiltError",
    "UnsupportedModelError",
    "available_layers",
    "check_model",
    "default_selection",
    "ensure_built",
    "hook_limitation",
    "scope_of",
]

logger = logging.getLogger("nnsig_keras")


class ModelNotBuiltError(ValueError):
    """The model has no weights yet: it was never built, called or trained."""


class UnsupportedModelError(ValueError):
    """The model (or the selected layers) cannot be captured on this backend."""


# ---------------------------------------------------------------------------- checks
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
            logger.warning(
                "Building Sequential model %r for inputs of shape %s: its weights are freshly "
                "initialised.",
                model.name,
                tuple(input_shape),
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
        logger.warning(
            "Calling model %r once on zeros of shape %s to build it: its weights are freshly "
            "initialised.",
            model.name,
            (1, *input_shape),
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


# ---------------------------------------------------------------------------- listing
def scope_of(model: Any) -> Scope:
    graph = graph_of(model)
    return build_scope(model, graph) if graph is not None else hook_scope(model)


def default_selection(scope: Scope, model: Any) -> tuple[set[str], set[str]]:
    """Every top-level layer but the input and output layers (as the prototype did)."""
    if scope.is_graph:
        out_ids = {id(t) for t in scope.graph.outputs}
        exact = {
            c.name
            for c in scope.calls
            if isinstance(c.op, keras.Layer) and not any(id(t) in out_ids for t in c.outputs)
        }
        if not exact:
            raise LayerSelectionError(
                f"Model {model.name!r} has no hidden layer to capture by default (its only "
                "layers produce its outputs); pass layers=[...] to choose."
            )
        return set(), exact
    top = [p for p, layer in scope.layers.items() if "/" not in p]
    if not top:
        raise LayerSelectionError(f"Model {model.name!r} tracks no layer to capture.")
    scope.drop_output = True
    return set(top), set()


def available_layers(model: Any) -> list[dict[str, Any]]:
    """List the layers of a Keras model that can be captured.

    Parameters
    ----------
    model : keras.Model
        A built model.

    Returns
    -------
    list of dict
        One entry per layer path, model order: ``name`` (the path to give in
        ``layers``), ``type`` (class), ``calls`` (capture names of its calls and
        outputs; empty for layers of subclassed models, only known once run),
        ``shape`` (per sample, of the first output of the first call, ``None``
        when unknown), ``parameters`` and ``default`` (captured by default).
    """
    check_model(model)
    ensure_built(model, None)
    scope = scope_of(model)
    try:
        paths, exact = default_selection(scope, model)
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
