"""What ``nnsig info`` prints: a store's splits, layers, shapes, sizes and completeness."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnsig_core.store.errors import StoreError
from nnsig_core.store.format import ROOT_ATTR

if TYPE_CHECKING:
    from nnsig_core.store.results import ResultsArea
    from nnsig_core.store.split_reading import SplitReading

def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def nbytes_stored(store: SplitReading, split: str, name: str | None = None) -> int:
    """Bytes on disk of a split, or of one of its layers (by name) or arrays (by key)."""
    g = store._group(split)
    key = None
    if name is not None:  # layer names first: a layer may be called "labels"
        key = store._layer_key(split, name) if name in store.layers(split) else name
        if key not in g:
            raise StoreError(f"Split {split!r} has no layer or array {name!r}.")
    if store.path is not None:
        return _dir_size(store.path / split if key is None else store.path / split / key)
    if key is None:
        return sum(int(a.nbytes_stored()) for _, a in g.arrays())
    return int(g[key].nbytes_stored())  # type: ignore[union-attr]


def describe(store: ResultsArea) -> dict[str, Any]:
    """A JSON-serialisable description of ``store`` (``nnsig info --json``).

    Raises
    ------
    DamagedMetadataError
        When a split's metadata is damaged (the message names the file and the fix).
    """
    for error in store.damaged_splits.values():
        raise error
    out: dict[str, Any] = {"path": store.location, "splits": {}}
    out["format_version"] = store.attrs.get(ROOT_ATTR, {}).get("format_version")
    for s in store.splits:
        info = store.split_attrs(s)
        g = store._group(s)
        layers = []
        for d in info["layers"]:
            arr: Any = g[d["key"]]
            layers.append({
                "name": d["name"],
                "type": d.get("type", "?"),
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "chunks": list(arr.chunks),
                "bytes_stored": nbytes_stored(store, s, d["name"]),
                "parameters": d.get("parameters"),
            })
        model = info.get("model") or {}
        out["splits"][s] = {
            "complete": bool(info.get("complete", False)),
            "n_samples": store.n_samples(s),
            "n_expected": info.get("n_expected"),
            "framework": info.get("framework"),
            "model_class": model.get("model_class"),
            "model_parameters": model.get("parameters"),
            "model_fingerprint": info.get("model_fingerprint"),
            "other_weights": (info.get("capture") or {}).get("other_weights"),
            "class_names": info.get("class_names"),
            "capture": info.get("capture"),
            "level": info.get("level", "samples"),
            "parent": info.get("parent"),
            "bytes_stored": nbytes_stored(store, s),
            "layers": layers,
        }
    if store.analyses:
        out["analyses"] = store.analyses
    return out
