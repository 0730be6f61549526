"""Capture: run a model over data and stream its hidden layers' activations into a store."""

from typing import TYPE_CHECKING, Any

from nnsig_core.capture.api import capture, capture_arrays
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.options import CaptureOptions, default_predict
from nnsig_core.capture.probe import Probe, checkpoint_split, list_checkpoints
from nnsig_core.capture.thumbnails import make_thumbnails

__all__ = [
    "CaptureError",
    "CaptureOptions",
    "Probe",
    "capture",
    "capture_arrays",
    "capture_distributed",
    "checkpoint_split",
    "default_predict",
    "list_checkpoints",
    "make_thumbnails",
]

if TYPE_CHECKING:
    from nnsig_core.distributed.capture import capture_distributed


def __getattr__(name: str) -> Any:
    if name == "capture_distributed":  # it needs Dask: imported on first use
        from nnsig_core.distributed.capture import capture_distributed

        return capture_distributed
    raise AttributeError(f"module 'nnsig_core.capture' has no attribute {name!r}")
