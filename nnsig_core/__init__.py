"""nnsig core: store, capture and signature analysis, with no deep-learning framework imported.

Framework adapters live in separate packages (``nnsig_torch``, ``nnsig_keras``)
and are imported by the user; this package only knows the
:class:`~nnsig_core.protocol.Adapter` protocol.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nnsig_core._params import InvalidParameterError
from nnsig_core._util import lazy_attributes, package_version
from nnsig_core._warnings import NnsigWarning
from nnsig_core.capture import CaptureError, capture, capture_arrays
from nnsig_core.protocol import (
    Adapter,
    ArrayAdapter,
    LayerSelectionError,
    LayerSummary,
    ModelSummary,
    NonFiniteActivationError,
    UnknownLayerError,
)
from nnsig_core.store import (
    ActivationStore,
    IncompleteStoreError,
    MigrationReport,
    StoreError,
    migrate_store,
    open_store,
)

__all__ = [
    "ActivationStore",
    "Adapter",
    "AnalysisError",
    "ArrayAdapter",
    "CaptureError",
    "Discretizer",
    "EmptySelectionError",
    "IncompleteStoreError",
    "InvalidParameterError",
    "LayerSelectionError",
    "LayerSummary",
    "MigrationReport",
    "MissingLabelsError",
    "ModelSummary",
    "NnsigWarning",
    "NonFiniteActivationError",
    "NovelClassError",
    "PortInUseError",
    "ReportError",
    "SignatureAnalysis",
    "Signatures",
    "StoreError",
    "Timeline",
    "TooFewSamplesError",
    "UnknownLayerError",
    "baseline_scores",
    "build_report_data",
    "capture",
    "capture_arrays",
    "capture_distributed",
    "evaluate",
    "format_summary",
    "migrate_store",
    "open_store",
    "parse_discretizer_spec",
    "serve_report",
    "show",
    "signature_scores",
    "write_index",
    "write_report",
    "write_report_data",
]

if TYPE_CHECKING:  # imported on first use (PEP 562), so `import nnsig_core` stays light
    from nnsig_core.analysis import (
        AnalysisError,
        Discretizer,
        EmptySelectionError,
        MissingLabelsError,
        SignatureAnalysis,
        Signatures,
        Timeline,
        TooFewSamplesError,
        format_summary,
        parse_discretizer_spec,
    )
    from nnsig_core.diagnostics import (
        NovelClassError,
        baseline_scores,
        evaluate,
        signature_scores,
    )
    from nnsig_core.distributed import capture_distributed
    from nnsig_core.report import (
        PortInUseError,
        ReportError,
        build_report_data,
        serve_report,
        show,
        write_index,
        write_report,
        write_report_data,
    )

_LAZY = {
    **dict.fromkeys(["AnalysisError", "Discretizer", "EmptySelectionError", "MissingLabelsError",
                     "SignatureAnalysis", "Signatures", "Timeline", "TooFewSamplesError",
                     "format_summary", "parse_discretizer_spec"], "nnsig_core.analysis"),
    **dict.fromkeys(["PortInUseError", "ReportError", "build_report_data", "serve_report", "show",
                     "write_index", "write_report", "write_report_data"], "nnsig_core.report"),
    **dict.fromkeys(["NovelClassError", "baseline_scores", "evaluate", "signature_scores"],
                    "nnsig_core.diagnostics"),
    "capture_distributed": "nnsig_core.distributed",  # Dask itself is imported when it runs
}

__getattr__ = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = package_version()

logging.getLogger("nnsig").addHandler(logging.NullHandler())
