"""nnsig core: store, capture and signature analysis, with no deep-learning framework imported.

Framework adapters live in separate packages (``nnsig_torch``, ``nnsig_keras``)
and are imported by the user; this package only knows the
:class:`~nnsig_core.adapter.Adapter` protocol.
"""

from __future__ import annotations

import logging

from nnsig_core.adapter import Adapter, ArrayAdapter, LayerSummary, ModelSummary
from nnsig_core.capture import CaptureError, capture, capture_arrays
from nnsig_core.store import (
    ActivationStore,
    IncompleteStoreError,
    StoreError,
    open_store,
)

__all__ = [
    "ActivationStore",
    "Adapter",
    "ArrayAdapter",
    "CaptureError",
    "IncompleteStoreError",
    "LayerSummary",
    "ModelSummary",
    "StoreError",
    "capture",
    "capture_arrays",
    "open_store",
]

__version__ = "0.1.0"

logging.getLogger("nnsig").addHandler(logging.NullHandler())
