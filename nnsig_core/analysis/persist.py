"""Saving fitted analyses (and signatures) into the activation store, and loading them back.

Layout, under the store's reserved root group ``analysis``::

    analysis/<name>/                 attrs {"nnsig_analysis": {format_version, created,
                                            nnsig_version, params, fit, layers, complete}}
      layers/<layer key>/            attrs {"layer": name, "method", "n_clusters", "n_features_in",
                                            "n_fit_samples", "inertia", "discretizer"?, "reducer"?}
        centers                      float32 (n_clusters, n_dims)  canonical order
        fit_counts                   int64   (n_clusters,)
        fit_composition              int64   (n_clusters, n_classes)  fit samples per label
        disc_bin_edges               float64 (n_bins+1,) or (n_features, max_bins+1), NaN-padded
        disc_n_bins                  int64   (n_features,)    per-unit scope only
        disc_data_min, disc_data_max float64 (n_features,)    uniform strategy
        pca_components               float32 (n_components, n_features)
        pca_mean                     float32 (n_features,)
        pca_explained_variance[_ratio] float64 (n_components,)
      signatures/<split>/            attrs {"split", "layers", "fingerprint", "created"}
        cluster_ids                  int32   (n_samples, n_layers)
        distances                    float32 (n_samples, n_layers)

Only JSON attributes and numeric zarr arrays are written, never pickles.
Labels, predictions and sample indices of saved signatures are read from the
split itself; saved signatures are ignored once the split is re-captured
(its fingerprint: sample count and capture timestamps, changes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.discretize import Discretizer
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.store import ANALYSIS_GROUP, ActivationStore, StoreError, layer_key, to_json_safe

if TYPE_CHECKING:
    from nnsig_core.analysis.engine import SignatureAnalysis

__all__ = ["ANALYSIS_ATTR", "load_analysis", "load_signatures", "save_analysis",
           "save_signatures"]

log = logging.getLogger("nnsig")

ANALYSIS_ATTR = "nnsig_analysis"
FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _where(store: ActivationStore) -> str:
    return repr(str(store.path)) if store.path is not None else "(in memory)"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nnsig")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def _params_to_json(analysis: SignatureAnalysis) -> dict[str, Any]:
    p = analysis.get_params(deep=False)
    d = analysis._discretizer_template()
    p["discretizer"] = None if d is None else {k: v for k, v in d.get_params().items()}
    if p.get("layers") is not None:
        p["layers"] = list(p["layers"])
    if not isinstance(p["n_clusters"], (int, np.integer)):
        p["n_clusters"] = {str(k): int(v) for k, v in dict(p["n_clusters"]).items()}
    return to_json_safe(p)


def _params_from_json(p: dict[str, Any]) -> dict[str, Any]:
    p = dict(p)
    if isinstance(p.get("discretizer"), dict):
        p["discretizer"] = Discretizer(**p["discretizer"])
    return p


def _analysis_group(store: ActivationStore, name: str) -> Any:
    if name not in store.analyses:
        saved = ", ".join(store.analyses) or "(none)"
        raise StoreError(
            f"No analysis named {name!r} in the store {_where(store)}; saved analyses: {saved}. "
            "Fit and save one first (SignatureAnalysis(...).fit(store).save(store, name))."
        )
    return store.root[ANALYSIS_GROUP][name]


def _write_arrays(group: Any, arrays: dict[str, np.ndarray]) -> None:
    for key, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        group.create_array(key, data=arr, chunks=arr.shape if arr.size else "auto")


def _read_arrays(group: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(a[...]) for k, a in group.arrays()}


def save_analysis(
    analysis: SignatureAnalysis,
    store: ActivationStore,
    name: str = "default",
    overwrite: bool = False,
    splits: Iterable[str] | None = None,
) -> None:
    """Write ``analysis`` to ``analysis/<name>`` (see the module docstring for the layout)."""
    analysis._check_fitted()
    if store.read_only:
        raise StoreError(
            f"The store {_where(store)} is open read-only, so the analysis cannot be saved. "
            "Open it with open_store(path, mode='r+') (or pass the path to save())."
        )
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError(
            f"Invalid analysis name {name!r}: use letters, digits and _ . - (starting with a "
            "letter or digit)."
        )
    # Compute requested signatures before touching the store, so a failure leaves it unchanged.
    if splits is None:
        splits = [s for s in store.splits if store.is_complete(s)]
    to_save = [analysis.signatures(store, s) for s in splits]

    root = store.root
    parent = root.require_group(ANALYSIS_GROUP)
    if name in parent:
        if not overwrite:
            raise StoreError(
                f"An analysis named {name!r} already exists in {_where(store)}. Pass "
                "overwrite=True to replace it, or choose another name "
                f"(saved: {', '.join(store.analyses)})."
            )
        del parent[name]
    g = parent.create_group(name)
    layers_group = g.create_group("layers")
    layer_meta = []
    for j, lname in enumerate(analysis.layers_):
        lc = analysis.clusterers_[lname]
        attrs, arrays = lc._state()
        arrays["fit_composition"] = analysis.fit_composition_[j]
        key = layer_key(lname)
        lg = layers_group.create_group(key)
        _write_arrays(lg, arrays)
        lg.attrs["layer"] = lname
        lg.attrs["state"] = to_json_safe(attrs)
        layer_meta.append({"name": lname, "key": key, "shape": list(analysis.layer_shapes_[j]),
                           "n_clusters": int(analysis.n_clusters_[j])})
    g.create_group("signatures")
    for sigs in to_save:
        save_signatures(store, name, sigs, _group=g)
    g.attrs[ANALYSIS_ATTR] = to_json_safe({
        "format_version": FORMAT_VERSION,
        "created": _now(),
        "nnsig_version": _version(),
        "params": _params_to_json(analysis),
        "fit": {
            "split": analysis.fit_split_,
            "classes": analysis.fit_classes_,
            "classes_fitted": analysis.classes_,
            "n_samples": analysis.n_fit_samples_,
            "n_classes": analysis.n_classes_,
        },
        "layers": layer_meta,
        "complete": True,
    })
    log.info("Saved analysis %r (%d layers, signatures of %s) into %s", name,
             len(analysis.layers_), [s.split for s in to_save] or "no split", _where(store))


def save_signatures(store: ActivationStore, name: str, sigs: Signatures, _group: Any = None) -> None:
    """Write ``sigs`` to ``analysis/<name>/signatures/<split>`` (replacing older ones)."""
    from nnsig_core.analysis.engine import split_fingerprint

    if store.read_only:
        raise StoreError("The store is open read-only; open it with mode='r+' to save signatures.")
    g = _group if _group is not None else _analysis_group(store, name)
    sg = g.require_group("signatures")
    if sigs.split in sg:
        del sg[sigs.split]
    if not np.array_equal(sigs.rows, np.arange(sigs.n_samples)):
        raise ValueError("Only whole-split signatures can be saved (not a subset).")
    grp = sg.create_group(sigs.split)
    _write_arrays(grp, {"cluster_ids": sigs.cluster_ids, "distances": sigs.distances})
    grp.attrs.update(to_json_safe({
        "split": sigs.split,
        "layers": sigs.layers,
        "fingerprint": split_fingerprint(store, sigs.split),
        "created": _now(),
    }))


def load_signatures(
    analysis: SignatureAnalysis, store: ActivationStore, split: str, name: str
) -> Signatures | None:
    """Saved signatures of ``split``, or None when absent or stale (split re-captured)."""
    from nnsig_core.analysis.engine import _n_classes, split_fingerprint

    if name not in store.analyses or split not in store.splits:
        return None
    g = store.root[ANALYSIS_GROUP][name]
    if "signatures" not in g or split not in g["signatures"]:
        return None
    grp = g["signatures"][split]
    attrs = dict(grp.attrs)
    if attrs.get("fingerprint") != to_json_safe(split_fingerprint(store, split)):
        log.info("Saved signatures of %r in analysis %r are stale (split re-captured); "
                 "recomputing.", split, name)
        return None
    if list(attrs.get("layers", [])) != list(analysis.layers_):
        return None
    arrays = _read_arrays(grp)
    return Signatures(
        split, analysis.layers_, arrays["cluster_ids"], store.labels(split),
        store.predictions(split), arrays["distances"], store.sample_index(split),
        analysis.n_clusters_, n_classes=max(analysis.n_classes_, _n_classes(store, split)),
        class_names=store.class_names(),
    )


def load_analysis(cls: type[SignatureAnalysis], store: ActivationStore, name: str = "default"
                  ) -> SignatureAnalysis:
    """Rebuild a fitted analysis saved by :func:`save_analysis`."""
    g = _analysis_group(store, name)
    meta = dict(g.attrs).get(ANALYSIS_ATTR)
    if not meta or not meta.get("complete"):
        raise StoreError(
            f"Analysis {name!r} in {_where(store)} is incomplete (its save was interrupted); "
            "save it again with overwrite=True."
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"Analysis {name!r} has format {meta.get('format_version')}; this nnsig reads "
            f"format {FORMAT_VERSION}. Refit and save it again."
        )
    params = _params_from_json(meta["params"])
    analysis = cls(**params)
    template = analysis._discretizer_template()
    clusterers = {}
    compositions = []
    for lm in meta["layers"]:
        lg = g["layers"][lm["key"]]
        arrays = _read_arrays(lg)
        compositions.append(np.asarray(arrays.pop("fit_composition"), dtype=np.int64))
        lc_params = {
            "n_clusters": int(lm["n_clusters"]), "discretizer": template,
            "reduce": params.get("reduce"), "memory_limit": params.get("memory_limit"),
            "random_state": params.get("random_state"), "n_init": params.get("n_init"),
            "batch_size": params.get("batch_size"),
            "streaming_passes": params.get("streaming_passes"),
            "progress": params.get("progress"),
        }
        clusterers[lm["name"]] = LayerClusterer._from_state(dict(lg.attrs)["state"], arrays,
                                                            lc_params)
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
