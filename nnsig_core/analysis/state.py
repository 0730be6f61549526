"""A fitted :class:`~nnsig_core.analysis.SignatureAnalysis` as JSON and arrays, and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.discretize import Discretizer

LayerState = tuple[str, dict[str, Any], dict[str, np.ndarray]]


def export_state(analysis: Any) -> tuple[dict[str, Any], list[LayerState]]:
    """The fitted analysis as JSON (``params``, ``fit``, ``layers``) and, per layer, the
    clusterer's JSON attributes and arrays (with the fit composition)."""
    check_is_fitted(analysis, "clusterers_")
    params = analysis.get_params(deep=False)
    d = analysis._discretizer_template()
    params["discretizer"] = None if d is None else d.get_params()
    if params.get("layers") is not None:
        params["layers"] = list(params["layers"])
    if isinstance(params["n_clusters"], Mapping):
        params["n_clusters"] = {str(k): int(v) for k, v in params["n_clusters"].items()}
    meta = {
        "params": params,
        "fit": {
            "split": analysis.fit_split_,
            "classes": analysis.fit_classes_,
            "classes_fitted": analysis.classes_,
            "n_samples": analysis.n_fit_samples_,
            "n_classes": analysis.n_classes_,
        },
        "layers": [{"name": n, "shape": list(s), "n_clusters": int(k)}
                   for n, s, k in zip(analysis.layers_, analysis.layer_shapes_, analysis.n_clusters_,
                                      strict=True)],
    }
    layers = []
    for name, comp in zip(analysis.layers_, analysis.fit_composition_, strict=True):
        attrs, arrays = analysis.clusterers_[name]._state()
        layers.append((name, attrs, {**arrays, "fit_composition": comp}))
    return meta, layers


def restore_state(cls: type, meta: Mapping[str, Any],
                  layers: Mapping[str, tuple[dict[str, Any], dict[str, np.ndarray]]],
                  name: str | None = None) -> Any:
    """Rebuild a fitted analysis of class ``cls`` from :func:`export_state` output
    (``layers`` by layer name); ``name`` is what it was saved as."""
    # Parameters that no longer exist (0.2's batch_size and streaming_passes, of the
    # MiniBatchKMeans path) shaped only how the analysis was fitted: they are dropped.
    known = set(cls._get_param_names())  # type: ignore[attr-defined]
    params = {k: v for k, v in meta["params"].items() if k in known}
    if isinstance(params.get("discretizer"), dict):
        params["discretizer"] = Discretizer(**params["discretizer"])
    analysis = cls(**params)
    template = analysis._discretizer_template()
    clusterers, compositions = {}, []
    for lm in meta["layers"]:
        attrs, arrays = layers[lm["name"]]
        arrays = dict(arrays)
        compositions.append(np.asarray(arrays.pop("fit_composition"), dtype=np.int64))
        lc_params = {k: params.get(k) for k in ("reduce", "memory_limit", "random_state",
                                                "n_init", "progress")}
        lc_params.update(n_clusters=int(lm["n_clusters"]), discretizer=template)
        clusterers[lm["name"]] = LayerClusterer._from_state(attrs, arrays, lc_params)
    fit = meta["fit"]
    analysis.layers_ = [lm["name"] for lm in meta["layers"]]
    analysis.clusterers_ = clusterers
    analysis.n_clusters_ = [int(lm["n_clusters"]) for lm in meta["layers"]]
    analysis.fit_split_ = fit["split"]
    analysis.fit_classes_ = fit["classes"]
    analysis.classes_ = list(fit["classes_fitted"])
    analysis.n_fit_samples_ = int(fit["n_samples"])
    analysis.n_classes_ = int(fit["n_classes"])
    analysis.fit_composition_ = compositions
    analysis.layer_shapes_ = [list(lm["shape"]) for lm in meta["layers"]]
    analysis.name_ = name
    analysis._cache = {}
    return analysis
