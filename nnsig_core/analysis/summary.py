"""Plain-text rendering of :meth:`SignatureAnalysis.summary` (used by ``nnsig analyze``)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_summary"]


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
        Several lines, no trailing newline.
    """
    fit = summary["fit"]
    acc = summary.get("accuracy")
    acc_s = f", model accuracy {acc:.2%}" if acc is not None else ", no labels"
    settings = [f"only_correct={fit['only_correct']}"]
    if fit.get("discretizer"):
        settings.append(f"discretizer={fit['discretizer']}")
    if fit.get("reduce"):
        settings.append(f"reduce={fit['reduce']}")
    settings.append(f"random_state={fit['random_state']}")
    name = f" {fit['name']!r}" if fit.get("name") else ""
    lines = [
        f"Analysis{name} fitted on split {fit['split']!r}: {fit['n_samples']:,} samples of "
        f"classes {_classes(list(fit['classes']))} ({', '.join(settings)})",
        f"Split {summary['split']!r}: {summary['n_samples']:,} samples{acc_s}; "
        f"{summary['n_signatures']:,} distinct signatures "
        f"({summary['n_signatures_correct']:,} among correctly classified samples)",
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
