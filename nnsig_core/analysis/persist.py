"""A fitted analysis as JSON and arrays (and back), and saved analyses and signatures in the
store (layout: ``docs/store-format.md``): JSON attributes and numeric arrays only, never pickles."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._util import check_name, now_iso, package_version, to_json_safe
from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.discretize import Discretizer
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.source import check_unchanged
from nnsig_core.execute.blocks import is_lazy
from nnsig_core.store import ActivationStore, StoreError, layer_key
from nnsig_core.store.format import (
    ANALYSIS_ATTR,
    ANALYSIS_GROUP,
    analysis_path,
    array_options,
    signatures_path,
)

log = logging.getLogger("nnsig")

FORMAT_VERSION = 1
LayerState = tuple[str, dict[str, Any], dict[str, np.ndarray]]


def _write_arrays(group: Any, arrays: Mapping[str, Any], client: Any = None) -> None:
    """Write NumPy arrays here, dask arrays from the workers of ``client``."""
    for key, arr in arrays.items():
        if is_lazy(arr):
            from nnsig_core.execute.dask_blocks import write_blocks

            write_blocks(group, key, arr, client)
            continue
        arr = np.ascontiguousarray(arr)
        group.create_array(key, data=arr, chunks=arr.shape if arr.size else "auto",
                           **array_options())


def _read_arrays(group: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(a[...]) for k, a in group.arrays()}


def check_can_save(store: ActivationStore, name: str, overwrite: bool) -> None:
    """Raise :class:`StoreError` unless an analysis ``name`` can be saved into ``store``."""
    store.require_writable(f"the analysis {name!r}")
    try:
        check_name(name, "analysis")
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    if name in store.analyses and not overwrite:
        raise StoreError(f"An analysis named {name!r} already exists in {store.location!r}. Pass "
                         "overwrite=True to replace it, or choose another name "
                         f"(saved: {', '.join(store.analyses)}).")


def save_analysis(store: ActivationStore, name: str, meta: Mapping[str, Any],
                  layers: Sequence[LayerState], signatures: Sequence[Signatures] = (),
                  overwrite: bool = False) -> None:
    """Write an analysis's state (and signatures of whole splits) to ``analysis/<name>``,
    replacing an existing one only once the new one is complete."""
    check_can_save(store, name, overwrite)
    for sigs in signatures:
        _check_whole_split(store, sigs)
    tmp = f"{ANALYSIS_GROUP}/.new-{name}-{uuid.uuid4().hex[:8]}"
    on_workers = any(is_lazy(s.cluster_ids) or is_lazy(s.distances) for s in signatures)
    with store.new_copy(tmp, analysis_path(name), staged=not on_workers) as g:
        layer_group = g.create_group("layers")
        layer_meta = []
        for (lname, attrs, arrays), lm in zip(layers, meta["layers"], strict=True):
            key = layer_key(lname)
            lg = layer_group.create_group(key)
            _write_arrays(lg, arrays)
            lg.attrs.update({"layer": lname, "state": to_json_safe(attrs)})
            layer_meta.append({**lm, "key": key})
        sg = g.create_group("signatures")
        for sigs in signatures:
            _write_signatures(sg.create_group(sigs.split), store, sigs.split, sigs.layers,
                              sigs.cluster_ids, sigs.distances, sigs.client)
        g.attrs[ANALYSIS_ATTR] = to_json_safe({
            **dict(meta), "layers": layer_meta, "format_version": FORMAT_VERSION,
            "created": now_iso(), "nnsig_version": package_version(), "complete": True})
    log.info("Saved analysis %r (%d layers, signatures of %s) into %s", name, len(layers),
             [s.split for s in signatures] or "no split", store.location)


def _check_whole_split(store: ActivationStore, sigs: Signatures) -> None:
    if not sigs._whole or sigs.n_samples != store.n_samples(sigs.split):
        raise ValueError("Only whole-split signatures can be saved; these are a subset of "
                         f"{sigs.n_samples} of split {sigs.split!r}'s samples.")


def _write_signatures(group: Any, store: ActivationStore, split: str, layers: Sequence[str],
                      cluster_ids: Any, distances: Any, client: Any = None) -> None:
    fingerprint = store.fingerprint(split)
    _write_arrays(group, {"cluster_ids": cluster_ids, "distances": distances}, client)
    check_unchanged(store, split, fingerprint)  # what was written may mix two captures
    group.attrs.update(to_json_safe({"split": split, "layers": list(layers),
                                     "fingerprint": fingerprint, "created": now_iso()}))


def save_signatures(store: ActivationStore, name: str, sigs: Signatures) -> None:
    """Write the signatures of a whole split next to the saved analysis ``name``."""
    _check_whole_split(store, sigs)
    save_signature_arrays(store, name, sigs.split, sigs.layers, sigs.cluster_ids,
                          sigs.distances, sigs.client)


def save_signature_arrays(store: ActivationStore, name: str, split: str, layers: Sequence[str],
                          cluster_ids: Any, distances: Any, client: Any = None) -> None:
    """Write a whole split's cluster ids and distances next to the saved analysis ``name``,
    replacing older ones only once complete."""
    store.require_writable(f"the signatures of split {split!r}")
    if name not in store.analyses:
        raise StoreError(f"No analysis named {name!r} in {store.location!r} to save "
                         "signatures next to; save the analysis first.")
    tmp = f"{signatures_path(name)}/.new-{split}-{uuid.uuid4().hex[:8]}"
    staged = not (is_lazy(cluster_ids) or is_lazy(distances))
    with store.new_copy(tmp, signatures_path(name, split), staged=staged) as group:
        _write_signatures(group, store, split, layers, cluster_ids, distances, client)


def signatures_group(store: ActivationStore, name: str, split: str,
                     layers: Sequence[str]) -> Any | None:
    """The group of the saved signatures of ``split`` next to analysis ``name``, or None when
    absent, over other layers, or stale (the split was re-captured since)."""
    if split not in store.splits:
        return None
    grp = store.group(signatures_path(name, split))
    if grp is None:
        return None
    attrs: dict[str, Any] = dict(grp.attrs)
    if attrs.get("fingerprint") != to_json_safe(store.fingerprint(split)):
        log.info("Saved signatures of %r in analysis %r are stale (split re-captured); "
                 "recomputing.", split, name)
        return None
    return grp if list(attrs.get("layers", [])) == list(layers) else None


def holds_analysis(store: ActivationStore, name: str, centers: Mapping[str, np.ndarray]) -> bool:
    """Whether ``store`` holds a complete analysis ``name`` with these very cluster centres
    (layer name -> centres), not another one saved under that name."""
    g: Any = store.group(analysis_path(name)) if name in store.analyses else None
    meta: Any = None if g is None else dict(g.attrs).get(ANALYSIS_ATTR)
    if not meta or not meta.get("complete") or meta.get("format_version") != FORMAT_VERSION:
        return False
    layers = meta["layers"]
    if [lm["name"] for lm in layers] != list(centers):
        return False
    return all(np.array_equal(g["layers"][lm["key"]]["centers"][...], centers[lm["name"]])
               for lm in layers)


def load_analysis(
    store: ActivationStore, name: str = "default"
) -> tuple[dict[str, Any], dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]]:
    """The saved state of analysis ``name``: its JSON and, per layer name, (attrs, arrays)."""
    g: Any = store.group(analysis_path(name))
    if g is None or name not in store.analyses:
        saved = ", ".join(store.analyses) or "(none)"
        raise StoreError(f"No analysis named {name!r} in the store {store.location!r}; saved "
                         f"analyses: {saved}. Fit and save one first "
                         "(SignatureAnalysis(...).fit(store).save(store, name)).")
    meta: Any = dict(g.attrs).get(ANALYSIS_ATTR)
    if not meta or not meta.get("complete"):
        raise StoreError(f"Analysis {name!r} in {store.location!r} is incomplete (its save was "
                         "interrupted); save it again with overwrite=True.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"Analysis {name!r} has format {meta.get('format_version')}; this nnsig "
                         f"reads format {FORMAT_VERSION}. Refit and save it again.")
    groups = g["layers"]
    layers = {}
    for lm in meta["layers"]:
        lg = groups[lm["key"]]
        layers[lm["name"]] = (dict(lg.attrs)["state"], _read_arrays(lg))
    return meta, layers


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
    fit = {"split": analysis.fit_split_, "weights": getattr(analysis, "fit_weights_", None),
           "capture": getattr(analysis, "fit_capture_", None),
           "classes": analysis.fit_classes_,
           "classes_fitted": analysis.classes_,
           "known_classes": getattr(analysis, "known_classes_", analysis.classes_),
           "n_samples": analysis.n_fit_samples_,
           "n_classes": analysis.n_classes_}
    meta = {"params": params, "fit": fit,
            "layers": [{"name": n, "shape": list(s), "n_clusters": int(k)} for n, s, k in
                       zip(analysis.layers_, analysis.layer_shapes_, analysis.n_clusters_,
                           strict=True)]}
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
    # Parameters of older versions (0.2's batch_size, streaming_passes) are dropped.
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
        lc_params = {**{k: params.get(k) for k in ("reduce", "memory_limit", "random_state",
                                                   "n_init", "progress")},
                     "n_clusters": int(lm["n_clusters"]), "discretizer": template}
        clusterers[lm["name"]] = LayerClusterer._from_state(attrs, arrays, lc_params)
    fit = meta["fit"]
    analysis.layers_ = [lm["name"] for lm in meta["layers"]]
    analysis.clusterers_ = clusterers
    analysis.n_clusters_ = [int(lm["n_clusters"]) for lm in meta["layers"]]
    analysis.fit_split_ = fit["split"]
    analysis.fit_weights_ = fit.get("weights")  # unknown in analyses saved before 0.3
    analysis.fit_capture_ = fit.get("capture")
    analysis.fit_classes_ = fit["classes"]
    analysis.classes_ = list(fit["classes_fitted"])
    analysis.known_classes_ = list(fit.get("known_classes", analysis.classes_))  # before 0.3
    analysis.n_fit_samples_ = int(fit["n_samples"])
    analysis.n_classes_ = int(fit["n_classes"])
    analysis.fit_composition_ = compositions
    analysis.layer_shapes_ = [list(lm["shape"]) for lm in meta["layers"]]
    analysis.name_ = name
    analysis._cache = {}
    return analysis
