"""Capture: run a model over data and stream its hidden layers' activations into a store."""

from typing import TYPE_CHECKING

from nnsig_core._util import lazy_attributes
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

# capture_distributed needs Dask: imported on first use.
__getattr__ = lazy_attributes(__name__, {"capture_distributed": "nnsig_core.distributed.capture"})
