"""Resolving ``layers=`` (names, glob patterns, layer classes) to layer paths of a Keras model."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from nnsig_core.adapter import LayerSelectionError, UnknownLayerError, close_matches

__all__ = [
    "LayerSelectionError",
    "LayerSpec",
    "UnknownLayerError",
    "close_matches",
    "resolve_layers",
]

#: One entry of ``layers``: a layer path, a capture name, a glob pattern or a layer class.
LayerSpec = str | type

_GLOB_CHARS = frozenset("*?[")



def _is_glob(s: str) -> bool:
    return any(c in _GLOB_CHARS for c in s)


def resolve_layers(
    layers: LayerSpec | Sequence[LayerSpec],
    units: Mapping[str, Any],
    capture_names: Sequence[str],
    model_name: str,
) -> tuple[set[str], set[str]]:
    """Resolve ``layers`` against the layer paths of a model.

    Parameters
    ----------
    layers : str, type or sequence of them
        Layer paths (``"dense_1"``, ``"encoder/dense_2"``), capture names of
        one call or one output (``"shared:1"``, ``"split.0"``), glob patterns
        matched with :func:`fnmatch.fnmatchcase` against the paths
        (``"encoder/*"``), or layer classes (``keras.layers.Dense``: every
        layer, at any depth, that is an instance).
    units : mapping of str to layer
        Every selectable layer path to its layer (or operation), model order.
    capture_names : sequence of str
        Capture names that may be given exactly (known without running the
        model, i.e. for symbolic graphs).
    model_name : str
        For messages.

    Returns
    -------
    paths : set of str
        Layer paths selected whole (every call, every output).
    exact : set of str
        Capture names selected individually.

    Raises
    ------
    UnknownLayerError
        For a name that is neither a layer path nor a capture name.
    LayerSelectionError
        For a pattern or class that matches nothing, or an empty selection.
    TypeError
        For an entry that is neither a string nor a class.
    """
    if isinstance(layers, (str, type)):
        layers = [layers]
    paths: set[str] = set()
    exact: set[str] = set()
    names = list(units)
    captures = set(capture_names)
    for spec in layers:
        if isinstance(spec, type):
            hit = {p for p, layer in units.items() if isinstance(layer, spec)}
            if not hit:
                present = sorted({type(layer).__name__ for layer in units.values()})
                raise LayerSelectionError(
                    f"No layer of class {spec.__name__} in model {model_name!r}; "
                    f"classes present: {', '.join(present)}."
                )
            paths |= hit
        elif isinstance(spec, str) and spec in units:
            paths.add(spec)
        elif isinstance(spec, str) and spec in captures:
            exact.add(spec)
        elif isinstance(spec, str) and _is_glob(spec):
            hit = {p for p in names if fnmatch.fnmatchcase(p, spec)}
            hit_exact = {c for c in captures if fnmatch.fnmatchcase(c, spec)} - hit
            if not hit and not hit_exact:
                raise LayerSelectionError(
                    f"Pattern {spec!r} matches no layer of model {model_name!r}; "
                    f"layer names look like: {', '.join(repr(n) for n in names[:8])}"
                    f"{', ...' if len(names) > 8 else ''}."
                )
            paths |= hit
            exact |= hit_exact
        elif isinstance(spec, str):
            hint = close_matches(spec, names + [c for c in capture_names if c not in units])
            msg = f"Unknown layer {spec!r} in model {model_name!r}."
            msg += f" Did you mean: {', '.join(repr(h) for h in hint)}?" if hint else ""
            msg += " Layers of nested models are named by their path ('encoder/dense_2');"
            msg += " KerasAdapter.available_layers(model) lists every name."
            raise UnknownLayerError(msg)
        else:
            raise TypeError(
                "Each entry of `layers` must be a layer name, a glob pattern or a Keras layer "
                f"class (e.g. keras.layers.Dense); got {spec!r}."
            )
    if not paths and not exact:
        raise LayerSelectionError("`layers` is empty: select at least one layer.")
    return paths, exact
