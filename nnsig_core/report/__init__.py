"""The static HTML report: its data, the files written to disk, a local server and the
notebook view. ``build_report_data`` and the timeline's functions are imported on first use:
they need scikit-learn, which writing and serving a report do not."""

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
