"""The adapter layer: the protocol every adapter follows, and what adapters share.

Nothing here imports a deep-learning framework (adapters live in their own packages).
"""

from __future__ import annotations

from nnsig_core.protocol.adapter import Adapter, LayerSummary, ModelSummary
from nnsig_core.protocol.arrays import ArrayAdapter
from nnsig_core.protocol.finite import (
    ADAPTER_FIX,
    NonFiniteActivationError,
    check_batch_finite,
    check_finite,
    nonfinite_rows,
)
from nnsig_core.protocol.select import (
    LayerSelectionError,
    LayerSpec,
    Selection,
    SelectionWording,
    UnknownLayerError,
    close_matches,
    is_glob,
    resolve_selection,
)

__all__ = [
    "ADAPTER_FIX",
    "Adapter",
    "ArrayAdapter",
    "LayerSelectionError",
    "LayerSpec",
    "LayerSummary",
    "ModelSummary",
    "NonFiniteActivationError",
    "Selection",
    "SelectionWording",
    "UnknownLayerError",
    "check_batch_finite",
    "check_finite",
    "close_matches",
    "is_glob",
    "nonfinite_rows",
    "resolve_selection",
]
