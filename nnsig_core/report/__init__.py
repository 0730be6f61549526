"""The static HTML report: its data, the files written to disk, and a local server.

:func:`build_report_data` aggregates a fitted analysis (or several runs,
:class:`ReportRun`, shown side by side) into the report data of
``docs/report-data.md``: flows, compositions, the layer map, the scores' histograms and
threshold, PNG thumbnail sprites. :func:`write_report_data` and :func:`write_report` copy
the viewer and write that data next to it, :func:`write_index` lists several reports,
:func:`serve_report` serves one on 127.0.0.1 (``nnsig view``) and :func:`show` shows one
in a notebook. ``build_report_data`` is imported on first use: it needs the analysis
(and scikit-learn), which writing and serving a report do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nnsig_core._util import lazy_attributes
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

# Imported on first use: they need scikit-learn.
__getattr__ = lazy_attributes(__name__, {
    "build_report_data": "nnsig_core.report.data",
    "build_timeline_data": "nnsig_core.report.timeline",
    "write_timeline_report": "nnsig_core.report.timeline",
})
