"""The report of a training timeline: one checkpoint's report data plus a ``timeline`` entry
(``docs/report-data.md``, "Timeline") that ``viewer/timeline.js`` draws above it.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import numpy as np

from nnsig_core.analysis.joint_views import class_purity
from nnsig_core.report.score_figures import rounded
from nnsig_core.report.single import SEPARABLE_PURITY, per_class_purity
from nnsig_core.report.sprite import make_sprite, shrink
from nnsig_core.report.write import write_report_data
from nnsig_core.store import ActivationStore, open_store

SCORE_BINS = 20
QUANTILES = (0.1, 0.5, 0.9)


def encode_u16(values: np.ndarray) -> str | list[int]:
    """Non-negative ints as base64 little-endian uint16 (a JSON list when one exceeds 65535)."""
    v = np.asarray(values, dtype=np.int64)
    if v.size and (v.min() < 0 or v.max() > 0xFFFF):
        return [int(x) for x in v]
    return base64.b64encode(v.astype("<u2").tobytes()).decode("ascii")


def msp_scores(store: ActivationStore, split: str) -> np.ndarray:
    """``1 - max softmax`` of the stored outputs (the outputs as they are when they are
    already probabilities): higher = less confident."""
    out = np.asarray(store.outputs(split)[:], dtype=np.float64)
    if out.ndim == 1 or out.shape[1] == 1:  # one logit: the sigmoid's confidence
        p = 1.0 / (1.0 + np.exp(-out.reshape(-1)))
        return 1.0 - np.maximum(p, 1.0 - p)
    if not (out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)):
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return 1.0 - out.max(axis=1)


def _scores(timeline: Any, store: ActivationStore, t: int, score: str) -> np.ndarray:
    split = timeline.checkpoints_[t]["split"]
    if score == "msp":
        return msp_scores(store, split)
    if score == "combined":
        from nnsig_core.diagnostics import signature_scores

        return np.asarray(signature_scores(timeline.analyses_[t], store, split)["combined"],
                          dtype=np.float64)
    raise ValueError(f"score must be 'msp', 'combined' or None, not {score!r}")


def _score_entry(scores: np.ndarray, correct: np.ndarray, labelled: np.ndarray,
                 edges: np.ndarray) -> dict[str, Any]:
    entry: dict[str, Any] = {"counts": {}, "quantiles": {}}
    groups = {"correct": correct, "misclassified": labelled & ~correct}
    for g, m in groups.items():
        s = scores[m & np.isfinite(scores)]
        entry["counts"][g] = np.histogram(s, bins=edges)[0].astype(int).tolist()
        entry["quantiles"][g] = [rounded(q, 4) for q in np.quantile(s, QUANTILES)] if s.size else None
    return entry


def _label(rec: dict[str, Any]) -> str:
    epoch = rec.get("epoch")
    if epoch is not None:
        e = float(epoch)
        return f"epoch {int(e)}" if e.is_integer() else f"epoch {e:.2f}"
    return f"step {rec['step']}"


def _checkpoint(timeline: Any, t: int, n_classes: int) -> dict[str, Any]:
    sg = timeline.signatures_[t]
    rec = timeline.checkpoints_[t]
    paths = timeline.track_paths(t)
    labels, preds = np.asarray(sg.labels), np.asarray(sg.predictions)
    L = paths.shape[1]
    keys = np.column_stack([labels, paths, preds])
    uniq, row_of, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    rows = [{"input": int(u[0]), "path": [int(x) for x in u[1 : L + 1]], "output": int(u[L + 1]),
             "count": int(c)} for u, c in zip(uniq, counts, strict=True)]
    comps = [np.asarray(c) for c in sg.composition()]
    clusters = []
    ids = np.asarray(sg.cluster_ids)
    for j in range(L):
        sizes = np.bincount(ids[:, j], minlength=len(timeline.tracks_[t][j]))
        clusters.append([{"track": int(timeline.tracks_[t][j][c]), "count": int(sizes[c])}
                         for c in range(len(sizes)) if sizes[c] > 0])
    cp = per_class_purity(comps, n_classes)
    return {
        "split": rec["split"], "step": int(rec["step"]), "epoch": rec.get("epoch"),
        "label": _label(rec), "fingerprint": rec.get("fingerprint"),
        "seconds": rec.get("seconds"), "accuracy": rounded(sg.accuracy, 4),
        "purity": [rounded(class_purity(c), 4) for c in comps], "class_purity": cp,
        "separable": [_separable_layer(cp, c) for c in range(n_classes)],
        "rows": rows, "row_of": encode_u16(row_of.reshape(-1)), "clusters": clusters,
        "events": timeline.events_[t],
    }


def _separable_layer(class_purity_: list[list[float | None]], c: int) -> int | None:
    """The first layer where class ``c`` is separable; -1 if none, None if it is absent."""
    values = [layer[c] for layer in class_purity_]
    if all(v is None for v in values):
        return None
    return next((j for j, v in enumerate(values) if v is not None and v >= SEPARABLE_PURITY), -1)


def timeline_section(timeline: Any, store: ActivationStore | str | os.PathLike[str], *,
                     score: str | None = "msp", thumbnail_size: int | None = 16) -> dict[str, Any]:
    """The ``timeline`` entry of the report data of a fitted timeline; ``score`` (``"msp"``,
    ``"combined"`` or None) is drawn over time, ``thumbnail_size`` bounds the probe thumbnails."""
    timeline._fitted()
    store = open_store(store)
    first = timeline.signatures_[0]
    n_classes = max(max(sg.n_classes for sg in timeline.signatures_),
                    timeline.analyses_[0].n_classes_)
    checkpoints = [_checkpoint(timeline, t, n_classes) for t in range(len(timeline))]
    labels = [c["label"] for c in checkpoints]
    for c in checkpoints:  # checkpoints told apart: an epoch given twice also names its step
        if labels.count(c["label"]) > 1:
            c["label"] += f" (step {c['step']})"
    out: dict[str, Any] = {
        "layers": list(timeline.layers_), "n_tracks": [int(k) for k in timeline.n_tracks_],
        "n_samples": int(first.n_samples),
        "sample_index": encode_u16(np.asarray(first.sample_index)),
        "separable_purity": SEPARABLE_PURITY, "shown": len(timeline) - 1,
        "checkpoints": checkpoints,
    }
    if score is not None:
        all_scores = [_scores(timeline, store, t, score) for t in range(len(timeline))]
        finite = np.concatenate([s[np.isfinite(s)] for s in all_scores])
        lo, hi = (0.0, 1.0) if finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1) \
            else (float(finite.min()), float(finite.max()))
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, SCORE_BINS + 1)
        out["score"] = {"name": score, "bins": [rounded(e) for e in edges]}
        for t, s in enumerate(all_scores):
            sg = timeline.signatures_[t]
            checkpoints[t]["scores"] = _score_entry(s, np.asarray(sg.correct),
                                                    np.asarray(sg.labelled), edges)
    split0 = timeline.checkpoints_[0]["split"]
    arr = store.inputs(split0)
    if arr is not None:
        pix = shrink(np.asarray(arr[:], dtype=np.uint8), thumbnail_size)
        sprite = make_sprite(pix)
        out["thumbnails"] = {k: v for k, v in sprite.items() if k != "keys"}
    return out


def build_timeline_data(timeline: Any, store: ActivationStore | str | os.PathLike[str] | None = None,
                        *, checkpoint: int = -1, title: str | None = None,
                        score: str | None = "msp", thumbnail_size: int | None = 16,
                        **options: Any) -> dict[str, Any]:
    """Report data of a fitted timeline: one checkpoint's report with the ``timeline`` entry.

    Parameters
    ----------
    timeline : Timeline
        Fitted.
    store : ActivationStore or path, optional
        Its store (default: the one it was fitted on).
    checkpoint : int
        The checkpoint the report below the timeline shows (default: the last).
    title : str, optional
    score, thumbnail_size
        See :func:`timeline_section`.
    **options
        Passed to :func:`~nnsig_core.report.data.build_report_data`.

    Returns
    -------
    dict
    """
    from nnsig_core.report.data import build_report_data

    timeline._fitted()
    store = open_store(store if store is not None else timeline.store_location_)
    t = range(len(timeline))[checkpoint]
    rec = timeline.checkpoints_[t]
    data = build_report_data(timeline.analyses_[t], store, splits=[rec["split"]],
                             title=title, **options)
    if title is None:
        data["title"] = f"{data['title']}: training timeline"
    data["label"] = _label(rec)
    section = timeline_section(timeline, store, score=score, thumbnail_size=thumbnail_size)
    section["shown"] = t
    data["timeline"] = section
    return data


def write_timeline_report(timeline: Any, store: ActivationStore | str | os.PathLike[str] | None,
                          out_dir: str | os.PathLike[str], **options: Any) -> os.PathLike[str]:
    """Write the report of a timeline (see :func:`build_timeline_data`) into ``out_dir``;
    returns its ``index.html``."""
    return write_report_data(build_timeline_data(timeline, store, **options), out_dir)
