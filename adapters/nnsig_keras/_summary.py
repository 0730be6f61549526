"""Describing Keras layers for the viewer's model panel: class, units, activation, parameters, config."""

from __future__ import annotations

import json
import math
from typing import Any

import keras


def layer_classes(*names: str) -> tuple[type, ...]:
    """The classes of ``keras.layers`` of these names that this Keras version has."""
    found = (getattr(keras.layers, n, None) for n in names)
    return tuple(cls for cls in found if isinstance(cls, type))


def n_parameters(layer: Any) -> int:
    """Number of weight values of ``layer`` (0 for operations and unbuilt layers)."""
    if not isinstance(layer, keras.Layer):
        return 0
    try:
        return int(sum(math.prod(w.shape) for w in layer.weights))
    except Exception:
        return 0


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _compact(value: Any) -> Any:
    """Shorten Keras' serialised objects: a dtype policy or a config-less object becomes its name."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        cfg = value.get("config")
        if value["class_name"] in ("DTypePolicy", "FloatDTypePolicy") and isinstance(cfg, dict):
            return cfg.get("name", value["class_name"])
        if not cfg or (isinstance(cfg, dict) and all(v is None for v in cfg.values())):
            return value["class_name"]
    return value


def layer_config(layer: Any) -> dict[str, Any]:
    """The JSON-serialisable entries of ``layer.get_config()``, shortened (a nested model as
    ``{"name", "layers"}``)."""
    if isinstance(layer, keras.Model):
        return {"name": layer.name, "layers": [sub.name for sub in layer.layers]}
    get_config = getattr(layer, "get_config", None)
    if get_config is None:
        return {"name": getattr(layer, "name", "")}
    try:
        config = get_config()
    except Exception:  # subclassed layers without get_config, operations...
        return {"name": getattr(layer, "name", "")}
    if not isinstance(config, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        value = _compact(value)
        if _jsonable(value):
            out[str(key)] = value
    return out


def layer_entry(name: str, path: str, layer: Any, shape: tuple[int, ...] | None) -> dict[str, Any]:
    """The model-summary entry of one capture."""
    config = layer_config(layer)
    entry: dict[str, Any] = {"name": name, "type": type(layer).__name__, "path": path}
    if shape is not None:
        entry["shape"] = [int(s) for s in shape]
    units = config.get("units", config.get("filters"))
    if isinstance(units, int):
        entry["units"] = units
    elif shape is not None:
        entry["units"] = int(math.prod(shape))
    activation = config.get("activation")
    if isinstance(activation, str):
        entry["activation"] = activation
    elif type(layer).__name__ in ("ReLU", "Softmax", "LeakyReLU", "ELU", "PReLU"):
        entry["activation"] = type(layer).__name__.lower()
    entry["parameters"] = n_parameters(layer)
    entry["config"] = config
    return entry
