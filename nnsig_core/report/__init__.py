"""The static HTML report: its data, the files written to disk, and a local server.

:func:`build_report_data` (:mod:`~nnsig_core.report.data`) aggregates a fitted
analysis (or several runs, :class:`ReportRun`, shown side by side) into the
report data of ``docs/report-data.md``, with the layer map
(:mod:`~nnsig_core.report.layermap`), the scores' histograms and default
threshold (:mod:`~nnsig_core.report.score_figures`) and PNG thumbnail sprites
(:mod:`~nnsig_core.report.sprite`);
:func:`write_report_data` and :func:`write_report`
(:mod:`~nnsig_core.report.write`) copy the viewer and write that data next to
it, and :func:`write_index` lists several reports; :func:`serve_report`
(:mod:`~nnsig_core.report.serve`) serves a report on 127.0.0.1 for ``nnsig
view``; :func:`show` (:mod:`~nnsig_core.report.notebook`) shows a report in a
notebook. :mod:`~nnsig_core.report.browser` launches the headless Chromium that
tests, benchmarks and screenshots drive.

``build_report_data`` is imported on first use: it needs the analysis (and
scikit-learn), which writing and serving a report do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nnsig_core.report.notebook import NotebookReport, show
from nnsig_core.report.serve import PortInUseError, ReportServer, serve_report
from nnsig_core.report.spec import ReportRun
from nnsig_core.report.write import (
    MARKER,
    ReportError,
    is_report,
    js_json,
    list_reports,
    viewer_dir,
    write_index,
    write_report,
    write_report_data,
)

if TYPE_CHECKING:
    from nnsig_core.report.data import build_report_data
    from nnsig_core.report.timeline import build_timeline_data, write_timeline_report

__all__ = [
    "MARKER",
    "NotebookReport",
    "PortInUseError",
    "ReportError",
    "ReportRun",
    "ReportServer",
    "build_report_data",
    "build_timeline_data",
    "is_report",
    "js_json",
    "list_reports",
    "serve_report",
    "show",
    "viewer_dir",
    "write_index",
    "write_report",
    "write_report_data",
    "write_timeline_report",
]


def __getattr__(name: str) -> Any:
    if name == "build_report_data":  # imported on first use: it needs scikit-learn
        from nnsig_core.report.data import build_report_data

        return build_report_data
    if name in ("build_timeline_data", "write_timeline_report"):  # the same
        from nnsig_core.report import timeline

        return getattr(timeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
