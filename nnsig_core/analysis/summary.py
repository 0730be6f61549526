"""The summary of an analysis on a split, and its plain-text rendering (``nnsig analyze``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _classes(classes: list[int]) -> str:
    if not classes:
        return "none"
    if classes == list(range(classes[0], classes[-1] + 1)) and len(classes) > 2:
        return f"{classes[0]}-{classes[-1]}"
    return ",".join(str(c) for c in classes)


def format_summary(summary: dict[str, Any]) -> str:
    """Render a summary dict as a short report with one table row per layer.

    Parameters
    ----------
    summary : dict
        The output of :meth:`SignatureAnalysis.summary`.

    Returns
    -------
    str
    """
    fit = summary["fit"]
    acc = summary.get("accuracy")
    unit = "token rows" if summary.get("level") == "tokens" else "samples"
    over = " over token rows" if unit == "token rows" else ""
    acc_s = f", model accuracy{over} {acc:.2%}" if acc is not None else ", no labels"
    settings = [f"only_correct={fit['only_correct']}"]
    if fit.get("discretizer"):
        settings.append(f"discretizer={fit['discretizer']}")
    if fit.get("reduce"):
        settings.append(f"reduce={fit['reduce']}")
    settings.append(f"random_state={fit['random_state']}")
    name = f" {fit['name']!r}" if fit.get("name") else ""
    lines = [
        f"Analysis{name} fitted on split {fit['split']!r}: {fit['n_samples']:,} {unit} of "
        f"classes {_classes(list(fit['classes']))} ({', '.join(settings)})",
        f"Split {summary['split']!r}: {summary['n_samples']:,} {unit}{acc_s}; "
        f"{summary['n_signatures']:,} distinct signatures"
        + (f" ({summary['n_signatures_correct']:,} among correctly classified {unit})"
           if summary.get("accuracy") is not None else ""),
        "",
    ]
    header = ["layer", "clusters", "method", "features", "purity", "entropy (bits)"]
    rows = []
    for lay in summary["layers"]:
        feats = str(lay["features"])
        if lay.get("reduced_to"):
            feats += f"->{lay['reduced_to']}"
        clusters = str(lay["n_clusters"])
        if lay.get("empty_clusters"):
            clusters += f" ({lay['empty_clusters']} empty)"
        rows.append([lay["name"], clusters, lay["method"], feats,
                     _num(lay["purity"], ".3f"), _num(lay["entropy"], ".3f")])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    left = {0, 2}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=False))).rstrip()

    lines.append(fmt(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(r) for r in rows)
    return "\n".join(lines)


def analysis_summary(analysis: Any, sigs: Any, level: str = "samples") -> dict[str, Any]:
    """A JSON-serialisable summary of a fitted analysis on the signatures ``sigs`` of a split
    (``split``, ``level`` of its rows, ``n_samples``, ``accuracy``, ``n_signatures``,
    ``n_signatures_correct``, ``fit`` and per-layer ``layers``), printed by
    :func:`format_summary`."""
    purity, entropy = sigs.purity(), sigs.entropy()
    layers = []
    for j, name in enumerate(analysis.layers_):
        lc = analysis.clusterers_[name]
        layers.append({
            "name": name, "n_clusters": int(analysis.n_clusters_[j]), "method": lc.method_,
            "features": int(lc.n_features_in_),
            "reduced_to": None if lc.reducer_ is None else int(lc.reducer_.n_components),
            "empty_clusters": int((lc.fit_counts_ == 0).sum()),
            "purity": None if np.isnan(purity[j]) else float(purity[j]),
            "entropy": None if np.isnan(entropy[j]) else float(entropy[j])})
    fit = {"name": analysis.name_, "split": analysis.fit_split_,
           "n_samples": analysis.n_fit_samples_, "classes": analysis.classes_,
           "only_correct": bool(analysis.only_correct), "discretizer": analysis.discretizer_spec,
           "reduce": analysis.reduce, "random_state": analysis.random_state}
    return {"split": sigs.split, "level": level, "n_samples": sigs.n_samples,
            "accuracy": sigs.accuracy,
            "n_signatures": sigs.n_signatures,
            "n_signatures_correct": sigs.subset(sigs.correct).n_signatures,
            "fit": fit, "layers": layers}
