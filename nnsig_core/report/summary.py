"""What a report's data must hold (:func:`check_data`), and what its marker file
``nnsig-report.json`` and the index of several reports keep (:func:`summary`)."""

from __future__ import annotations

import math
from typing import Any

from nnsig_core._util import json_default, now_iso

#: The newest report data format this viewer reads (``docs/report-data.md``).
SUPPORTED_FORMAT = 2


class ReportError(ValueError):
    """A report cannot be written, indexed or served (the message says why)."""


def finite(o: Any) -> Any:
    """A copy of ``o`` with NaN and infinities replaced by ``None`` (JSON ``null``)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k if isinstance(k, str) else str(k): finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    return finite(json_default(o))


def check_data(data: Any) -> None:
    if not isinstance(data, dict):
        raise TypeError(f"report data must be a dict, not {type(data).__name__}")
    version = data.get("format_version")
    if version is not None and not isinstance(version, int):
        raise ReportError(f"report data format_version must be an integer, not {version!r}")
    if isinstance(version, int) and version > SUPPORTED_FORMAT:
        raise ReportError(f"report data format_version {version} is newer than this viewer "
                          f"(supports {SUPPORTED_FORMAT}); upgrade nnsig")
    runs = data.get("runs")
    if runs is not None:
        if not isinstance(runs, list) or not runs:
            raise ReportError("report data has an empty or invalid runs list")
        if "classes" not in data:
            raise ReportError("report data of several runs lacks classes (see docs/report-data.md)")
        for i, run in enumerate(runs):
            _check_run(run, f"run {i + 1} of the report data")
        return
    _check_run(data, "report data")


def _check_run(run: Any, what: str) -> None:
    if not isinstance(run, dict):
        raise ReportError(f"{what} must be a dict, not {type(run).__name__}")
    missing = [k for k in ("classes", "layers", "splits") if k not in run]
    if missing:
        raise ReportError(f"{what} lacks {', '.join(missing)} (see docs/report-data.md)")
    if not isinstance(run["splits"], dict) or not run["splits"]:
        raise ReportError(f"{what} has no splits")


def _split_summary(splits: Any) -> dict[str, Any]:
    out = {}
    for name, sp in (splits or {}).items():
        sp = sp or {}
        out[str(name)] = {
            "n_samples": sp.get("n_samples"), "accuracy": sp.get("accuracy"),
            "n_signatures": sp.get("n_signatures"), "scores": bool(sp.get("scores")),
        }
    return out


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """What the marker file and the report index keep about a report (of the first run
    for a comparison, plus the list of runs)."""
    runs = data.get("runs")
    first = runs[0] if runs else data
    model = first.get("model") or {}
    analysis = first.get("analysis") or {}
    out = {
        "nnsig_report": 1, "format_version": data.get("format_version", SUPPORTED_FORMAT),
        "title": data.get("title"), "created": data.get("created"), "written": now_iso(),
        "store": first.get("store"), "analysis": analysis.get("name"),
        "model_class": model.get("model_class"), "framework": model.get("framework"),
        "parameters": model.get("parameters"), "layers": list(first.get("layers") or []),
        "n_clusters": list(analysis.get("n_clusters") or []),
        "n_classes": len(data.get("classes") or first.get("classes") or []),
        "splits": _split_summary(first.get("splits")),
    }
    if runs:
        out["runs"] = [
            {"label": r.get("label"), "store": r.get("store"),
             "analysis": (r.get("analysis") or {}).get("name"),
             "model_class": (r.get("model") or {}).get("model_class"),
             "splits": _split_summary(r.get("splits"))}
            for r in runs
        ]
    return finite(out)


