"""Inspecting a store: its sizes, its description (``nnsig info``) and its verification
(``nnsig verify``, the work in :mod:`~nnsig_core.store.verify`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nnsig_core.store.errors import StoreError
from nnsig_core.store.format import ROOT_ATTR, finish_advice
from nnsig_core.store.results import ResultsArea
from nnsig_core.store.verify import VerifyReport, verify_store


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


class StoreInspection(ResultsArea):
    """Sizes, description and verification, a mixin of
    :class:`~nnsig_core.store.ActivationStore` (the description lists the analyses too)."""

    def nbytes_stored(self, split: str, name: str | None = None) -> int:
        """Bytes on disk of a split, or of one of its layers (by name) or arrays (by key)."""
        g = self._group(split)
        key = None
        if name is not None:  # layer names first: a layer may be called "labels"
            key = self._layer_key(split, name) if name in self.layers(split) else name
            if key not in g:
                raise StoreError(f"Split {split!r} has no layer or array {name!r}.")
        if self.path is not None:
            return _dir_size(self.path / split if key is None else self.path / split / key)
        if key is None:
            return sum(int(a.nbytes_stored()) for _, a in g.arrays())
        return int(g[key].nbytes_stored())  # type: ignore[union-attr]

    def verify(self, progress: bool = False, split: str | None = None) -> VerifyReport:
        """Read every chunk of the store (or of ``split``): checksums, completeness, metadata
        (``nnsig verify``).

        Returns
        -------
        VerifyReport
            ``ok`` when nothing is missing or damaged; ``format()`` and ``rows_to_recapture()``.
        """
        return verify_store(self, progress=progress, split=split)

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description used by ``nnsig info``; DamagedMetadataError when a
        split's metadata is damaged."""
        for error in self.damaged_splits.values():
            raise error
        out: dict[str, Any] = {"path": self.location, "splits": {}}
        out["format_version"] = self.attrs.get(ROOT_ATTR, {}).get("format_version")
        for s in self.splits:
            info = self.split_attrs(s)
            g = self._group(s)
            layers = []
            for d in info["layers"]:
                arr: Any = g[d["key"]]
                layers.append({
                    "name": d["name"], "type": d.get("type", "?"), "shape": list(arr.shape),
                    "dtype": str(arr.dtype), "chunks": list(arr.chunks),
                    "bytes_stored": self.nbytes_stored(s, d["name"]),
                    "parameters": d.get("parameters"),
                })
            model = info.get("model") or {}
            out["splits"][s] = {
                "complete": bool(info.get("complete", False)), "n_samples": self.n_samples(s),
                "n_expected": info.get("n_expected"), "framework": info.get("framework"),
                "model_class": model.get("model_class"),
                "model_parameters": model.get("parameters"),
                "model_fingerprint": info.get("model_fingerprint"),
                "other_weights": (info.get("capture") or {}).get("other_weights"),
                "class_names": info.get("class_names"), "capture": info.get("capture"),
                "level": info.get("level", "samples"), "parent": info.get("parent"),
                "finish": None if info.get("complete") else finish_advice(s, info),
                "bytes_stored": self.nbytes_stored(s), "layers": layers,
            }
        if self.analyses:
            out["analyses"] = self.analyses
        return out

    def __repr__(self) -> str:
        parts = []
        for s in self.splits:
            state = "" if self.is_complete(s) else ", incomplete"
            parts.append(f"{s}: {self.n_samples(s)} samples{state}")
        return f"ActivationStore({self.location!r}; {'; '.join(parts) or 'no splits'})"
