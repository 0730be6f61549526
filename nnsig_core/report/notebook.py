"""The report inside a notebook: a summary above a sandboxed ``<iframe srcdoc=...>`` holding
the whole viewer and its data, needing no server, file or network (:func:`show`).
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnsig_core.report.summary import check_data
from nnsig_core.report.write import (
    DATA_FILE,
    INDEX_FILE,
    RUNS_FILE,
    SCRIPT_TAG,
    ReportError,
    is_report,
    join_scripts,
    js_json,
    viewer_bundle,
    viewer_dir,
    write_report_data,
)

DEFAULT_HEIGHT = 900
TOP_FLAGGED = 5
_STYLE_TAG = re.compile(r'<link rel="stylesheet" href="([^"]+)">')
_CLOSE_SCRIPT = re.compile(r"</(script)", re.IGNORECASE)


def _script_safe(code: str) -> str:
    """``code`` with nothing that could end its ``<script>`` element early."""
    return _CLOSE_SCRIPT.sub(r"<\\/\1", code).replace("<!--", "<\\!--")


def standalone_html(data: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page: the viewer's scripts, its styles and
    ``data`` inlined (``window.NNSIG_REPORT``), with no run menu."""
    check_data(dict(data))
    src = viewer_dir()
    page, modules, bundle = viewer_bundle(src)
    inlined = {DATA_FILE: "<script>window.NNSIG_REPORT = " + js_json(data) + ";</script>\n",
               RUNS_FILE: "<script>window.NNSIG_RUNS = null;</script>\n"}

    def inline_script(match: re.Match[str]) -> str:
        return inlined.get(match.group(1), match.group(0))

    def inline_style(match: re.Match[str]) -> str:
        css = (src / match.group(1)).read_text(encoding="utf-8")
        return "<style>\n" + css.replace("</", "<\\/") + "\n</style>"

    page = SCRIPT_TAG.sub(inline_script, _STYLE_TAG.sub(inline_style, page))
    return join_scripts(page, modules, "<script>\n" + _script_safe(bundle) + "\n</script>\n")


def read_report_data(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The data of the report in ``directory`` (its ``data.js``); ReportError when it is not
    a report or its data cannot be read."""
    d = Path(directory).expanduser()
    if d.name == INDEX_FILE:
        d = d.parent
    if not is_report(d):
        raise ReportError(f"{d} is not an nnsig report (it has no nnsig-report.json)")
    text = (d / DATA_FILE).read_text(encoding="utf-8").strip()
    head = "window.NNSIG_REPORT = "
    if not text.startswith(head):
        raise ReportError(f"{d / DATA_FILE} does not hold report data")
    try:
        return json.loads(text[len(head):].rstrip(";"))
    except ValueError as e:
        raise ReportError(f"{d / DATA_FILE} cannot be read: {e}") from e


def _runs(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(data["runs"]) if data.get("runs") else [data]


def _separable(run: Mapping[str, Any], split: Mapping[str, Any]) -> list[str | None]:
    """Per class, the first layer reaching ``separable_purity`` (None: never; "": absent)."""
    thr = float(run.get("separable_purity") or 0.9)
    purity = split.get("class_purity") or []
    layers = list(run.get("layers") or [])
    out: list[str | None] = []
    for c in range(len(run.get("classes") or [])):
        values = [(layer[c] if layer and c < len(layer) else None) for layer in purity]
        if all(v is None for v in values):
            out.append("")
            continue
        at = next((i for i, v in enumerate(values) if v is not None and v >= thr), None)
        out.append(layers[at] if at is not None and at < len(layers) else None)
    return out


def _top_flagged(run: Mapping[str, Any], split: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """The ``n`` highest-scored samples among the split's map points."""
    pts = split.get("map") or {}
    scores = pts.get("scores")
    if not scores:
        return []
    rows = split.get("rows") or []
    order = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: -scores[i])
    threshold = (run.get("threshold") or {}).get("value")
    out = []
    for i in order[:n]:
        row = rows[pts["rows"][i]] if i < len(pts.get("rows") or []) else {}
        out.append({"sample_index": pts["sample_index"][i], "label": row.get("input"),
                    "prediction": row.get("output"), "score": float(scores[i]),
                    "flagged": threshold is not None and scores[i] >= threshold})
    return out


def report_summary(data: Mapping[str, Any], *, top: int = TOP_FLAGGED) -> dict[str, Any]:
    """A compact summary of report data: per run, each split's accuracy and, on the opening
    split, the per-layer purity, the layer where each class becomes separable and the ``top``
    highest-scored samples; ``timeline``, per checkpoint, its label and accuracy."""
    out: dict[str, Any] = {"title": data.get("title"), "runs": []}
    # A timeline's checkpoint splits by their labels ("epoch 3", not "step_00000180").
    named = {c.get("split"): c.get("label") or c.get("split")
             for c in (data.get("timeline") or {}).get("checkpoints", [])}
    for run in _runs(data):
        classes = list(run.get("classes") or data.get("classes") or [])
        run = {**run, "classes": classes}
        splits = list(run.get("splits") or {})
        name = str(data["open_split"]) if data.get("open_split") in splits else splits[-1]
        split = run["splits"][name]
        sep = _separable(run, split)
        out["runs"].append({
            "label": run.get("label"), "split": named.get(name, name),
            "accuracy": {named.get(s, s): v.get("accuracy") for s, v in run["splits"].items()},
            "layers": list(run.get("layers") or []), "purity": split.get("purity"),
            "separable": {classes[c]: sep[c] for c in range(len(classes)) if sep[c] != ""},
            "flagged": _top_flagged(run, split, top),
            "threshold": (run.get("threshold") or {}).get("value"),
        })
    tl = data.get("timeline")
    if tl:
        out["timeline"] = [{"label": c.get("label"), "accuracy": c.get("accuracy")}
                           for c in tl.get("checkpoints", [])]
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_text(summary: Mapping[str, Any]) -> str:
    """:func:`report_summary` as a few lines of plain text."""
    lines = [f"nnsig report: {summary.get('title') or ''}".rstrip()]
    for r in summary["runs"]:
        head = f"  run {r['label']}: " if len(summary["runs"]) > 1 else "  "
        acc = ", ".join(f"{s} {_fmt(a)}" for s, a in r["accuracy"].items())
        lines.append(f"{head}accuracy {acc}")
        if r["purity"]:
            pur = ", ".join(f"{layer} {_fmt(p, 2)}" for layer, p in zip(r["layers"], r["purity"], strict=False))
            lines.append(f"  purity ({r['split']}): {pur}")
        if r["separable"]:
            sep = ", ".join(f"{c}@{layer or 'never'}" for c, layer in r["separable"].items())
            lines.append(f"  separable from ({r['split']}): {sep}")
        if r["flagged"]:
            top = ", ".join(f"#{f['sample_index']} ({_fmt(f['score'])})" for f in r["flagged"])
            lines.append(f"  top scores ({r['split']}): {top}")
    if summary.get("timeline"):
        tl = ", ".join(f"{c['label']} {_fmt(c['accuracy'])}" for c in summary["timeline"])
        lines.append(f"  timeline accuracy: {tl}")
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def summary_html(summary: Mapping[str, Any]) -> str:
    """:func:`report_summary` as a small HTML block (every string escaped)."""
    parts = [f"<b>nnsig report</b> {html.escape(str(summary.get('title') or ''))}"]
    for r in summary["runs"]:
        if len(summary["runs"]) > 1:
            parts.append(f"<div><b>run {html.escape(str(r['label']))}</b></div>")
        acc = "; ".join(f"{html.escape(s)} {_fmt(a)}" for s, a in r["accuracy"].items())
        parts.append(f"<div>accuracy: {acc}</div>")
        if r["purity"]:
            parts.append(_table(["layer", f"purity ({r['split']})"],
                                [[layer, p] for layer, p in zip(r["layers"], r["purity"], strict=False)]))
        if r["separable"]:
            parts.append(_table(["class", "separable from layer"],
                                [[c, layer or "never"] for c, layer in r["separable"].items()]))
        if r["flagged"]:
            parts.append(_table(["sample", "label", "prediction", "score", "flagged"],
                                [[f["sample_index"], f["label"], f["prediction"], f["score"],
                                  "yes" if f["flagged"] else "no"] for f in r["flagged"]]))
    if summary.get("timeline"):
        parts.append(_table(["checkpoint", "accuracy"],
                            [[c["label"], c["accuracy"]] for c in summary["timeline"]]))
    style = ("<style>.nnsig-summary table{border-collapse:collapse;margin:4px 12px 4px 0;"
             "display:inline-table;vertical-align:top;font-size:12px}"
             ".nnsig-summary td,.nnsig-summary th{padding:1px 6px;border-bottom:1px solid #ddd;"
             "text-align:left}</style>")
    return f'{style}<div class="nnsig-summary">' + "".join(parts) + "</div>"


class NotebookReport:
    """A report to show in a notebook: a summary and the viewer in an iframe (its
    ``_repr_html_``); ``repr()`` is the summary as text.

    Parameters
    ----------
    data : dict
        Report data (``docs/report-data.md``).
    height : int
        Height of the iframe, in pixels.
    path : path, optional
        Where the report was read from, if it was.
    """

    def __init__(self, data: Mapping[str, Any], *, height: int = DEFAULT_HEIGHT,
                 path: str | os.PathLike[str] | None = None) -> None:
        check_data(dict(data))
        self.data = dict(data)
        self.height = int(height)
        self.path = Path(path) if path is not None else None

    def summary(self) -> dict[str, Any]:
        """The summary (see :func:`report_summary`)."""
        return report_summary(self.data)

    def html(self) -> str:
        """The self-contained page (see :func:`standalone_html`)."""
        return standalone_html(self.data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the self-contained page to ``path`` (one ``.html`` file) and return it."""
        p = Path(path).expanduser()
        p.write_text(self.html(), encoding="utf-8")
        return p

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write it as a report directory (:func:`write_report_data`); its ``index.html``."""
        return write_report_data(self.data, out_dir)

    def iframe(self) -> str:
        """The ``<iframe>`` that shows the viewer, its page inlined in ``srcdoc``."""
        return (f'<iframe class="nnsig-report" title="nnsig report" '
                f'srcdoc="{html.escape(self.html())}" sandbox="allow-scripts allow-downloads" '
                f'style="width:100%;height:{self.height}px;border:1px solid #ccc;'
                'border-radius:4px"></iframe>')

    def _repr_html_(self) -> str:
        return summary_html(self.summary()) + self.iframe()

    def __repr__(self) -> str:
        return summary_text(self.summary())


def show(analysis: Any, store: Any = None, *, height: int = DEFAULT_HEIGHT,
         **options: Any) -> NotebookReport:
    """The report of ``analysis`` on ``store``, to show in a notebook (the cell's value).

    Parameters
    ----------
    analysis : SignatureAnalysis, sequence of runs, Timeline, or path
        What :func:`~nnsig_core.report.write.write_report` takes, a fitted
        :class:`~nnsig_core.analysis.timeline.Timeline`, or the directory of a report
        already written (without ``store``).
    store : ActivationStore or path, optional
        The store.
    height : int
        Height of the iframe, in pixels.
    **options
        Passed to :func:`~nnsig_core.report.data.build_report_data`.

    Returns
    -------
    NotebookReport
        ``.save("report.html")`` writes the self-contained page.
    """
    if isinstance(analysis, (str, os.PathLike)) and store is None:
        return NotebookReport(read_report_data(analysis), height=height, path=analysis)
    from nnsig_core.analysis.timeline import Timeline

    if isinstance(analysis, Timeline):  # fitted or not: its own check names the fix
        from nnsig_core.report.timeline import build_timeline_data

        return NotebookReport(build_timeline_data(analysis, store, **options), height=height)
    from nnsig_core.report.data import build_report_data

    return NotebookReport(build_report_data(analysis, store, **options), height=height)
