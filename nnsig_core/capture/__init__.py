"""Capture: run a model over data and stream its hidden layers' activations into a store.

Modules
-------
api
    :func:`capture` and :func:`capture_arrays`, the entry points.
policy
    Argument checks; whether a split is created, replaced or resumed.
batches
    Cutting the data into ``(inputs, labels, sample_index)`` batches.
session
    One capture: runs the adapter, checks each batch, creates the split's arrays.
writer
    The background thread writing whole chunks.
thumbnails
    Small uint8 images of the inputs, for the viewer.
probe
    :class:`Probe`: a fixed probe set captured at checkpoints of a training run.
"""

from nnsig_core.capture.api import capture, capture_arrays, default_predict
from nnsig_core.capture.errors import CaptureError
from nnsig_core.capture.probe import Probe, checkpoint_split, list_checkpoints
from nnsig_core.capture.thumbnails import make_thumbnails

__all__ = [
    "CaptureError",
    "Probe",
    "capture",
    "capture_arrays",
    "checkpoint_split",
    "default_predict",
    "list_checkpoints",
    "make_thumbnails",
]
