"""The report data of one run: :func:`prepare_run` computes the signatures, checks the scores
and picks the threshold (so a comparison can choose the map's points of several runs
together); :func:`run_body` writes the run's part."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._warnings import warn
from nnsig_core.analysis.joint import joint_compositions
from nnsig_core.analysis.joint_views import class_entropy, class_purity
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.execute.blocks import is_lazy, take, take_all
from nnsig_core.report import layermap
from nnsig_core.report import score_figures as sc
from nnsig_core.report.points import select_points
from nnsig_core.report.run_scores import conformal_report_threshold, report_scores
from nnsig_core.report.score_figures import rounded
from nnsig_core.report.spec import ReportRun
from nnsig_core.report.sprite import make_sprite, shrink
from nnsig_core.report.token_report import add_token_rows, token_images, token_map_points
from nnsig_core.store import ActivationStore

log = logging.getLogger("nnsig")

TYPICAL_SHARE = 0.1
#: A class is *separable* at the first layer where its per-class purity reaches this.
SEPARABLE_PURITY = 0.9


@dataclass
class MapOptions:
    """How the layer map is made (see :mod:`nnsig_core.report.layermap`)."""

    projection: str = "pca"
    max_points: int = 2000
    thumbnail_size: int | None = 16
    seed: int = 0


@dataclass
class PreparedRun:
    """A run's signatures, scores and threshold, before its report data is written."""

    run: ReportRun
    store: ActivationStore
    splits: list[str]
    sigs: dict[str, Signatures]
    scores: dict[str, np.ndarray]
    threshold: dict[str, Any] | None
    n_classes: int
    classes: list[str]
    flagged: dict[str, Any] = field(default_factory=dict)
    #: Per split, the report's row index of each distinct (label, path, prediction)
    #: (set by :func:`run_body`; see :func:`rows_at`).
    row_keys: dict[str, dict[tuple[int, ...], int]] = field(default_factory=dict)
    #: The Dask client of signatures kept on a cluster (None: in memory here).
    client: Any = None


def prepare_run(run: ReportRun, splits: Sequence[str], client: Any = None) -> PreparedRun:
    """Signatures of ``splits`` (those in the store), checked scores, default threshold;
    with a Dask ``client`` the signatures are computed or read on the cluster and stay
    there (see the module doc)."""
    analysis = run.analysis
    check_is_fitted(analysis)
    store = run.store
    assert isinstance(store, ActivationStore)
    missing = [s for s in splits if s not in store.splits]
    if missing or not splits:
        close = difflib.get_close_matches(missing[0], store.splits, n=1) if missing else []
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Split(s) {', '.join(map(repr, missing)) or '(none)'} not in "
                         f"{store.location}.{hint} Its splits: {', '.join(store.splits)}.")
    sigs = {s: analysis.signatures(store, s, client=client) for s in splits}
    lazy = next((sg.client for sg in sigs.values() if is_lazy(sg.labels)), None)
    given, calibration = report_scores(run.scores, analysis, store)
    score_arrays = sc.check_scores(given, store, lazy=lazy is not None)
    threshold = conformal_report_threshold(calibration, level=analysis.row_level(store))
    n_classes = max([analysis.n_classes_, *(x.n_classes for x in sigs.values())])
    names = store.class_names() or []
    classes = [str(names[i]) if i < len(names) else str(i) for i in range(n_classes)]
    flagged = {}
    if threshold is not None:
        for s in splits:
            if s in score_arrays:
                with np.errstate(invalid="ignore"):
                    flagged[s] = np.isfinite(score_arrays[s]) & (score_arrays[s] >= threshold["value"])
    return PreparedRun(run, store, list(splits), sigs, score_arrays, threshold, n_classes, classes,
                       flagged, client=lazy)


def localize(prep: PreparedRun, splits: Sequence[str] | None = None) -> None:
    """Bring the per-sample vectors of ``splits`` (default: all) of a run kept on a Dask
    cluster to this process: 8 bytes per sample and layer plus 32 (and the scores)."""
    if prep.client is None:
        return
    for s in prep.splits if splits is None else splits:
        sg = prep.sigs[s]
        if is_lazy(sg.labels):
            log.info("Split %r: bringing its %d samples' signatures from the cluster for the "
                     "report's per-sample views.", s, sg.n_samples)
            prep.sigs[s] = sg.compute()
        for d in (prep.scores, prep.flagged):
            if s in d and is_lazy(d[s]):
                d[s] = np.asarray(prep.client.compute(d[s], sync=True))
    if not any(is_lazy(prep.sigs[s].labels) for s in prep.splits):
        prep.client = None


def priority_masks(prep: PreparedRun, split: str) -> dict[str, np.ndarray]:
    """The samples of ``split`` the map always shows: misclassified, and flagged when scored."""
    g = sc.sample_groups(prep.sigs[split].labels, prep.sigs[split].predictions,
                         prep.run.analysis.known_classes_)
    out = {"misclassified": g["misclassified"] | (g["unseen"] & (prep.sigs[split].labels
                                                                 != prep.sigs[split].predictions))}
    if split in prep.flagged:
        out["flagged"] = prep.flagged[split]
    return out


def draw_map_points(prep: PreparedRun, split: str, opts: MapOptions,
                    priority: Mapping[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The map points of ``split`` and their kinds (``select_points``), the ``priority`` masks
    first (default: :func:`priority_masks`)."""
    sg = prep.sigs[split]
    rows = int(prep.store.activations(split, prep.run.analysis.layers_[0]).chunks[0])
    priority = priority_masks(prep, split) if priority is None else priority
    return select_points(sg.labels, sg.predictions, priority, opts.max_points, opts.seed,
                         chunk_rows=rows, client=prep.client)


def per_class_purity(compositions: Sequence[np.ndarray],
                     n_classes: int) -> list[list[float | None]]:
    """Per layer, per class: the mean share of its own class in the cluster of each of its
    labelled samples (``None`` for a class absent from the split), from the layers' cluster x
    class ``compositions``; at :data:`SEPARABLE_PURITY` the class has become separable."""
    out = []
    for comp in compositions:
        comp = comp.astype(np.float64)
        size = comp.sum(axis=1, keepdims=True)
        share = np.divide(comp, size, out=np.zeros_like(comp), where=size > 0)
        n_c = comp.sum(axis=0)
        pur = np.divide((comp * share).sum(axis=0), n_c, out=np.full(n_classes, np.nan),
                        where=n_c > 0)
        out.append([rounded(p, 4) for p in pur])
    return out


def _rows(joint: Mapping[str, Any], L: int) -> tuple[list[dict[str, Any]],
                                                      dict[tuple[int, ...], int]]:
    """The table rows, and the row index of each distinct ``(label, path..., prediction)``."""
    uniq, counts = joint["rows"], joint["counts"]
    rows: list[dict[str, Any]] = []
    if not uniq.shape[0]:
        return rows, {}
    means: np.ndarray | None = None
    if "sums" in joint:
        ns = joint["n_scored"]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(ns > 0, joint["sums"] / np.maximum(ns, 1), np.nan)
    keys = [uniq[:, L + 1]] + [uniq[:, 1 + j] for j in reversed(range(L))] + [uniq[:, 0], -counts]
    order = np.lexsort(keys)
    for i in order:
        u = uniq[i]
        rows.append({
            "input": int(u[0]), "path": [int(x) for x in u[1 : L + 1]], "output": int(u[L + 1]),
            "count": int(counts[i]), "score": None if means is None else rounded(means[i], 4),
        })
    return rows, {tuple(int(x) for x in uniq[i]): r for r, i in enumerate(order)}


def rows_at(prep: PreparedRun, split: str, positions: np.ndarray,
            *more: Any) -> tuple[np.ndarray, ...]:
    """The report's row index of the samples at ``positions`` of ``split``, then the values of
    the arrays ``more`` there (all picked in one round trip on a cluster)."""
    sg = prep.sigs[split]
    lab, ids, pred, *rest = take_all([sg.labels, sg.cluster_ids, sg.predictions, *more],
                                     positions, prep.client)
    keys = prep.row_keys[split]
    M = np.column_stack([lab, ids, pred]).astype(np.int64)
    return np.array([keys[tuple(int(x) for x in m)] for m in M], dtype=np.int64), *rest


def _compositions(joint: Mapping[str, Any], n_clusters: Sequence[int],
                  n_classes: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer, the samples per cluster, and the labelled samples per cluster and class."""
    T, w = joint["rows"], joint["counts"]
    ids = T[:, 1 : 1 + len(n_clusters)]
    totals = [np.bincount(ids[:, j], weights=w, minlength=k).astype(np.int64)
              for j, k in enumerate(n_clusters)]
    return totals, joint_compositions(T[:, 0], ids, w, list(n_clusters), n_classes)


def _split_entry(sigs: Any, n_classes: int, scores: Any, n_exemplars: int,
                 ) -> tuple[dict[str, Any], dict[tuple[int, ...], int]]:
    L = len(sigs.layers)
    joint = sigs.joint_table(scores)
    rows, row_keys = _rows(joint, L)
    exemplars = sigs.exemplars(n=n_exemplars)
    totals, comps = _compositions(joint, sigs.n_clusters, n_classes)
    clusters, purity, entropy = [], [], []
    for j, k in enumerate(sigs.n_clusters):
        comp = comps[j]
        purity.append(rounded(class_purity(comp)))
        entropy.append(rounded(class_entropy(comp)))
        layer = []
        for c in range(k):
            n_lab = int(comp[c].sum())
            layer.append({
                "id": c, "count": int(totals[j][c]), "by_class": [int(x) for x in comp[c]],
                "purity": rounded(comp[c].max() / n_lab) if n_lab else None,
                "exemplars": [f"{sigs.split}/{r}" for r in exemplars[j][c]],
            })
        clusters.append(layer)
    T, w = joint["rows"], joint["counts"]
    labelled = T[:, 0] >= 0 if T.shape[0] else np.zeros(0, dtype=bool)
    n_labelled = int(w[labelled].sum())
    right = int(w[labelled & (T[:, 0] == T[:, L + 1])].sum()) if T.shape[0] else 0
    entry = {
        "n_samples": int(w.sum()), "has_labels": bool(labelled.any()), "n_labelled": n_labelled,
        "accuracy": rounded(right / n_labelled) if n_labelled else None,
        "n_signatures": int(np.unique(T[:, 1 : L + 1], axis=0).shape[0]) if T.shape[0] else 0,
        "purity": purity, "entropy": entropy, "class_purity": per_class_purity(comps, n_classes),
        "rows": rows, "clusters": clusters,
    }
    return entry, row_keys


def thumbnails_at(store: ActivationStore, split: str, rows: np.ndarray,
                  token_grid: Sequence[int] | None = None,
                  client: Any = None) -> np.ndarray | None:
    """The uint8 thumbnails of ``rows`` of ``split`` (None without thumbnails), picked by the
    workers with a ``client``; for a token row space, its inputs' images."""
    if store.level(split) == "tokens":  # the images of the tokens' inputs
        found = token_images(store, split, np.asarray(rows, dtype=np.int64), token_grid)
        return None if found is None else found[1]
    arr = store.inputs(split)
    if arr is None or rows.size == 0:
        return None
    rows = np.asarray(rows, dtype=np.int64)
    if client is not None:  # picked by the workers
        from nnsig_core.execute.dask_blocks import as_dask

        return take(as_dask(arr), rows, client).astype(np.uint8, copy=False)
    return np.asarray(arr.get_orthogonal_selection((rows,)), dtype=np.uint8)


def _exemplar_sprite(store: ActivationStore, wanted: Mapping[str, set[int]],
                     token_grid: Sequence[int] | None = None,
                     client: Any = None) -> dict[str, Any] | None:
    images, keys, shape = [], [], None
    for split, rows in wanted.items():
        idx = np.array(sorted(rows), dtype=np.int64)
        pix = thumbnails_at(store, split, idx, token_grid, client)
        if pix is None:
            continue
        if shape is None:
            shape = pix.shape[1:]
        elif pix.shape[1:] != shape:
            warn(f"Thumbnails of split {split!r} have another shape; left out.")
            continue
        images.append(pix)
        keys += [f"{split}/{int(r)}" for r in idx]
    if not images:
        return None
    return make_sprite(np.concatenate(images), keys)


def run_body(prep: PreparedRun, positions: Mapping[str, np.ndarray] | None,
             kinds: Mapping[str, Mapping[str, list[int]]], opts: MapOptions, *,
             score_name: str = "combined", score_bins: int = 20, n_exemplars: int = 4,
             map_thumbnails: bool = True, token_label: Callable[[int, int], str] | None = None,
             token_grid: Sequence[int] | None = None) -> dict[str, Any]:
    """The run's part of the report data (every top-level key of a one-run report
    but ``format_version``, ``title`` and ``created``); ``token_label`` and
    ``token_grid`` for token row spaces (:mod:`nnsig_core.report.token_report`)."""
    analysis, store = prep.run.analysis, prep.store
    localize(prep, [s for s in prep.splits if store.level(s) == "tokens"])
    info = store.split_attrs(analysis.fit_split_ if analysis.fit_split_ in store.splits
                             else (prep.splits[0] if prep.splits else store.splits[0]))
    model = info.get("model") or {}
    layer_info = {d["name"]: d for d in store.layer_info(store.splits[0] if not prep.splits
                                                           else prep.splits[0])}
    n_classes = prep.n_classes
    typical = [per_class + [[]] * (n_classes - len(per_class))
               for per_class in analysis.typical_clusters(min_share=TYPICAL_SHARE)]
    shown = {s: a for s, a in prep.scores.items() if s in prep.splits}
    thr = prep.threshold["value"] if prep.threshold else None
    bins = (sc.score_edges(shown, score_bins, [thr] if thr is not None else (), client=prep.client)
            if shown else None)
    body: dict[str, Any] = {
        "label": prep.run.label, "store": store.location,
        "analysis": {
            "name": analysis.name_ or "(unsaved)",
            "n_clusters": [int(k) for k in analysis.n_clusters_],
            "discretizer": analysis.discretizer_spec,
            "reduce": None if analysis.reduce is None else int(analysis.reduce),
            "only_correct": bool(analysis.only_correct), "fit_split": analysis.fit_split_,
            "fit_samples": int(analysis.n_fit_samples_), "random_state": analysis.random_state,
        },
        "model": {
            "model_class": model.get("model_class", "unknown"), "name": model.get("name"),
            "framework": info.get("framework", "unknown"), "parameters": model.get("parameters"),
            "layers": [_layer_entry(name, layer_info.get(name, {}), shape)
                       for name, shape in zip(analysis.layers_, analysis.layer_shapes_,
                                              strict=False)],
        },
        "classes": prep.classes, "train_classes": [int(c) for c in analysis.known_classes_],
        "layers": list(analysis.layers_), "typical": typical,
        "separable_purity": SEPARABLE_PURITY, "splits": {},
    }
    if prep.threshold is not None and thr is not None and bins is not None:
        # Unrounded: samples at or above it are flagged, the conformal rule to the bit.
        body["threshold"] = {**prep.threshold, "value": float(thr), "score": score_name}
    wanted: dict[str, set[int]] = {}
    for s in prep.splits:
        sigs = prep.sigs[s]
        entry, prep.row_keys[s] = _split_entry(sigs, n_classes, shown.get(s), n_exemplars)
        if s in shown and bins is not None:
            entry["scores"] = sc.score_histogram(sigs.labels, sigs.predictions, shown[s], bins,
                                                 analysis.known_classes_, score_name, thr,
                                                 client=prep.client)
        if store.level(s) == "tokens":
            add_token_rows(entry, store, sigs, token_label)
        body["splits"][s] = entry
        wanted[s] = {int(k.split("/", 1)[1]) for layer in entry["clusters"] for c in layer
                     for k in c["exemplars"]}
    sprite = _exemplar_sprite(store, wanted, token_grid, prep.client)
    if sprite is not None:
        body["thumbnails"] = sprite
    if positions is not None:
        _add_map(body, prep, positions, kinds, opts, map_thumbnails, token_grid, token_label)
    return body


def _add_map(body: dict[str, Any], prep: PreparedRun, positions: Mapping[str, np.ndarray],
             kinds: Mapping[str, Mapping[str, list[int]]], opts: MapOptions, thumbnails: bool,
             token_grid: Sequence[int] | None = None,
             token_label: Callable[[int, int], str] | None = None) -> None:
    read = None
    if prep.client is not None:
        read = partial(_read_on_cluster, prep)
    layers, fitted_on = layermap.project_layers(prep.run.analysis, prep.store, positions,
                                                prep.run.analysis.fit_split_, opts.projection,
                                                opts.seed, read=read)
    body["map"] = {"method": opts.projection, "fitted_on": fitted_on,
                   "max_points": int(opts.max_points)}
    for s, pos in positions.items():
        sigs = prep.sigs[s]
        rows, index, *scores = rows_at(prep, s, pos, sigs.sample_index,
                                       *([prep.scores[s]] if s in prep.scores else []))
        m: dict[str, Any] = {
            "n_points": int(pos.size), "positions": [int(p) for p in pos],
            "sample_index": [int(x) for x in index], "rows": [int(r) for r in rows],
            "kinds": {k: list(v) for k, v in kinds.get(s, {}).items()}, "layers": layers[s],
        }
        if prep.store.level(s) == "tokens":  # which token of which input each point is
            m["tokens"] = token_map_points(prep.store, s, pos, token_label)
        if scores:
            m["scores"] = [rounded(x, 4) for x in scores[0]]
        if thumbnails:
            pix = thumbnails_at(prep.store, s, pos, token_grid, prep.client)
            if pix is not None:
                m["thumbnails"] = make_sprite(shrink(pix, opts.thumbnail_size))
        body["splits"][s]["map"] = m


def _read_on_cluster(prep: PreparedRun, split: str, layer: str, rows: np.ndarray,
                     clusterer: Any) -> np.ndarray:
    """The map points' features, read and mapped by the workers."""
    from nnsig_core.execute.dask_blocks import as_dask, take_features

    x = as_dask(prep.store.activations(split, layer))[: prep.store.n_samples(split)]
    return take_features(x, np.asarray(rows, dtype=np.int64), clusterer, prep.client)


def _layer_entry(name: str, info: Mapping[str, Any], shape: Sequence[int]) -> dict[str, Any]:
    return {
        "name": name, "type": info.get("type", "unknown"), "shape": [int(s) for s in shape],
        "units": int(np.prod(shape, dtype=np.int64)),
        "parameters": None if info.get("parameters") is None else int(info["parameters"]),
    }
