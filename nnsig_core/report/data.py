"""Build the report's data (``docs/report-data.md``, format version 1) from a fitted analysis.

Everything is aggregated: one row per distinct (input class, path, output
class), per-layer cluster compositions, a few exemplar thumbnails. For MNIST
(70,000 samples, 3 layers of 10 clusters) the JSON is a few hundred kB.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._util import count_matrix, now_iso
from nnsig_core.analysis.signatures import Signatures, class_entropy, class_purity
from nnsig_core.store import ActivationStore, open_store

if TYPE_CHECKING:
    from nnsig_core.analysis.engine import SignatureAnalysis

__all__ = ["REPORT_FORMAT_VERSION", "build_report_data"]

log = logging.getLogger("nnsig")

REPORT_FORMAT_VERSION = 1
TYPICAL_SHARE = 0.1


def _f(x: Any, digits: int = 6) -> float | None:
    """A JSON float (None for NaN/None), rounded to keep the file small."""
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else round(x, digits)


def build_report_data(
    analysis: SignatureAnalysis,
    store: ActivationStore | str | os.PathLike[str],
    splits: Sequence[str] = ("train", "test"),
    title: str | None = None,
    scores: Mapping[str, Any] | None = None,
    *,
    score_name: str = "combined",
    score_bins: int = 20,
    n_exemplars: int = 4,
    client: Any = None,
) -> dict[str, Any]:
    """The report data of ``docs/report-data.md`` as a JSON-serialisable dict.

    Parameters
    ----------
    analysis : SignatureAnalysis
        A fitted analysis (signatures saved in the store are reused).
    store : ActivationStore or path
    splits : sequence of str
        Splits to include; those not in the store are skipped with a warning.
    title : str, optional
        Header of the page (default: the model class and the store's name).
    scores : mapping of split to array-like, optional
        Per-sample diagnostic scores (one float per sample of the split, NaN
        where unknown). Adds each row's mean ``score`` and the split's
        ``scores`` histogram; rows of splits without scores get ``null``.
    score_name : str
        Name of the scores shown by the viewer.
    score_bins : int
        Histogram bins (edges over [0, 1] when every score lies there, else
        over the scores' range).
    n_exemplars : int
        Exemplars (nearest the centre) kept per cluster.
    client : dask.distributed.Client, None or False
        Compute the aggregates on this Dask cluster (``None``: the active
        client, if any; ``False``: here).

    Returns
    -------
    dict
    """
    check_is_fitted(analysis)
    store = open_store(store)
    present = []
    for s in splits:
        if s in store.splits:
            present.append(s)
        else:
            log.warning("Split %r is not in the store (%s); left out of the report.", s,
                        ", ".join(store.splits))
    fit_split = analysis.fit_split_ if analysis.fit_split_ in store.splits else (
        present[0] if present else store.splits[0])
    info = store.split_attrs(fit_split)
    model = info.get("model") or {}
    layer_info = {d["name"]: d for d in store.layer_info(fit_split)}

    sigs = {s: analysis.signatures(store, s, client=client) for s in present}
    n_classes = max([analysis.n_classes_, *(x.n_classes for x in sigs.values())])
    names = store.class_names() or []
    classes = [str(names[i]) if i < len(names) else str(i) for i in range(n_classes)]
    typical = [per_class + [[]] * (n_classes - len(per_class))
               for per_class in analysis.typical_clusters(TYPICAL_SHARE)]

    score_arrays = _score_arrays(scores, store, present)
    bins = _score_edges(score_arrays, score_bins) if score_arrays else None

    data: dict[str, Any] = {
        "format_version": REPORT_FORMAT_VERSION,
        "title": title or _default_title(model, store),
        "created": now_iso(),
        "store": str(store.path) if store.path is not None else None,
        "analysis": {
            "name": analysis.name_ or "(unsaved)",
            "n_clusters": [int(k) for k in analysis.n_clusters_],
            "discretizer": analysis.discretizer_spec,
            "reduce": None if analysis.reduce is None else int(analysis.reduce),
            "only_correct": bool(analysis.only_correct),
            "fit_split": analysis.fit_split_,
            "fit_samples": int(analysis.n_fit_samples_),
            "random_state": analysis.random_state,
        },
        "model": {
            "model_class": model.get("model_class", "unknown"),
            "framework": info.get("framework", "unknown"),
            "parameters": model.get("parameters"),
            "layers": [_layer_entry(name, layer_info.get(name, {}), shape)
                       for name, shape in zip(analysis.layers_, analysis.layer_shapes_, strict=False)],
        },
        "classes": classes,
        "train_classes": [int(c) for c in analysis.classes_],
        "layers": list(analysis.layers_),
        "typical": typical,
        "splits": {},
    }
    wanted: dict[str, set[int]] = {}
    for s in present:
        # Signatures on a Dask cluster compute their own aggregates there (nnsig_core.distributed).
        entry = getattr(sigs[s], "report_entry", partial(_split_entry, sigs[s]))(
            n_classes, score_arrays.get(s), n_exemplars)
        if s in score_arrays and bins is not None:
            entry["scores"] = getattr(sigs[s], "score_histogram", partial(_score_histogram, sigs[s]))(
                score_arrays[s], bins, analysis.classes_, score_name)
        data["splits"][s] = entry
        wanted[s] = {int(k.split("/", 1)[1]) for layer in entry["clusters"] for c in layer
                     for k in c["exemplars"]}
    thumbs = _thumbnails(store, wanted)
    if thumbs is not None:
        data["thumbnails"] = thumbs
    return data


def _default_title(model: Mapping[str, Any], store: ActivationStore) -> str:
    name = store.path.name if store.path is not None else "in-memory store"
    cls = model.get("model_class")
    return f"{cls} ({name})" if cls and cls != "unknown" else name


def _layer_entry(name: str, info: Mapping[str, Any], shape: Sequence[int]) -> dict[str, Any]:
    return {
        "name": name,
        "type": info.get("type", "unknown"),
        "shape": [int(s) for s in shape],
        "units": int(np.prod(shape, dtype=np.int64)),
        "parameters": int(info.get("parameters") or 0),
    }


def _split_entry(
    sigs: Signatures, n_classes: int, scores: np.ndarray | None, n_exemplars: int
) -> dict[str, Any]:
    L = len(sigs.layers)
    M = np.column_stack([sigs.labels, sigs.cluster_ids.astype(np.int64), sigs.predictions])
    rows: list[dict[str, Any]] = []
    if M.shape[0]:
        uniq, inv, counts = np.unique(M, axis=0, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        means: np.ndarray | None = None
        if scores is not None:
            ok = np.isfinite(scores)
            sums = np.bincount(inv[ok], weights=scores[ok], minlength=len(uniq))
            ns = np.bincount(inv[ok], minlength=len(uniq))
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(ns > 0, sums / np.maximum(ns, 1), np.nan)
        keys = [uniq[:, L + 1]] + [uniq[:, 1 + j] for j in reversed(range(L))] + [uniq[:, 0], -counts]
        for i in np.lexsort(keys):
            u = uniq[i]
            rows.append({
                "input": int(u[0]),
                "path": [int(x) for x in u[1 : L + 1]],
                "output": int(u[L + 1]),
                "count": int(counts[i]),
                "score": None if means is None else _f(means[i], 4),
            })

    exemplars = sigs.exemplars(n=n_exemplars)
    clusters = []
    purity, entropy = [], []
    for j, k in enumerate(sigs.n_clusters):
        ids = sigs.cluster_ids[:, j]
        totals = np.bincount(ids, minlength=k)
        comp = count_matrix(ids, sigs.labels, k, n_classes)  # labelled samples only
        purity.append(_f(class_purity(comp)))
        entropy.append(_f(class_entropy(comp)))
        layer = []
        for c in range(k):
            n_lab = int(comp[c].sum())
            layer.append({
                "id": c,
                "count": int(totals[c]),
                "by_class": [int(x) for x in comp[c]],
                "purity": _f(comp[c].max() / n_lab) if n_lab else None,
                "exemplars": [f"{sigs.split}/{r}" for r in exemplars[j][c]],
            })
        clusters.append(layer)
    return {
        "n_samples": sigs.n_samples,
        "accuracy": _f(sigs.accuracy),
        "n_signatures": sigs.n_signatures,
        "purity": purity,
        "entropy": entropy,
        "rows": rows,
        "clusters": clusters,
    }


def _score_arrays(
    scores: Mapping[str, Any] | None, store: ActivationStore, splits: Sequence[str]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if not scores:
        return out
    for s, values in scores.items():
        if s not in splits:
            continue
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        n = store.n_samples(s)
        if arr.size != n:
            raise ValueError(
                f"scores[{s!r}] has {arr.size} values but split {s!r} has {n} samples; "
                "give one score per sample, in store order."
            )
        out[s] = arr
    return out


def _score_edges(score_arrays: Mapping[str, np.ndarray], n_bins: int) -> list[float] | None:
    finite = [a[np.isfinite(a)] for a in score_arrays.values()]
    finite = [a for a in finite if a.size]
    if not finite:
        return None
    lo = min(float(a.min()) for a in finite)
    hi = max(float(a.max()) for a in finite)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif hi <= lo:
        hi = lo + 1.0
    return [float(x) for x in np.linspace(lo, hi, max(1, int(n_bins)) + 1)]


def _score_histogram(
    sigs: Signatures, scores: np.ndarray, bins: list[float], train_classes: Sequence[int],
    name: str,
) -> dict[str, Any]:
    lab = sigs.labelled
    seen = np.isin(sigs.labels, list(train_classes))
    groups = {
        "correct": lab & seen & (sigs.labels == sigs.predictions),
        "misclassified": lab & seen & (sigs.labels != sigs.predictions),
        "unseen": lab & ~seen,
    }
    ok = np.isfinite(scores)
    counts = {g: [int(x) for x in np.histogram(scores[m & ok], bins=bins)[0]]
              for g, m in groups.items()}
    return {"name": name, "bins": [_f(b) for b in bins], "counts": counts}


def _thumbnails(store: ActivationStore, wanted: Mapping[str, set[int]]) -> dict[str, Any] | None:
    images: dict[str, str] = {}
    shape: list[int] | None = None
    for split, rows in wanted.items():
        arr = store.inputs(split)
        if arr is None or not rows:
            continue
        if shape is None:
            shape = [int(s) for s in arr.shape[1:]]
        elif list(arr.shape[1:]) != shape:
            log.warning("Thumbnails of split %r have another shape; left out.", split)
            continue
        idx = np.array(sorted(rows), dtype=np.int64)
        pix = np.asarray(arr.get_orthogonal_selection((idx,)), dtype=np.uint8)
        for r, img in zip(idx, pix, strict=False):
            images[f"{split}/{int(r)}"] = base64.b64encode(np.ascontiguousarray(img).tobytes()).decode("ascii")
    if shape is None:
        return None
    return {"shape": shape, "images": images}
