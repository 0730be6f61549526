"""PyTorch adapter of nnsig: record hidden-layer activations with forward hooks.

>>> from nnsig_torch import TorchAdapter
>>> adapter = TorchAdapter(model)                      # the family's default layers, pooled
>>> adapter = TorchAdapter(model, layers=["layer1", "layer2"], pool="mean")
>>> outputs, activations = adapter.run(images)   # NumPy arrays

:class:`TorchProbe` captures a fixed probe set at checkpoints of a training loop
(:func:`lightning_callback` and :func:`hf_callback` wrap it for Lightning and the
Hugging Face ``Trainer``).
"""

from nnsig_core._util import import_framework

import_framework("torch", "nnsig_torch", "PyTorch",
                 "pip install 'nnsig[torch]' (or pip install torch)")

from nnsig_core.protocol import (  # noqa: E402
    LayerSelectionError,
    NonFiniteActivationError,
    UnknownLayerError,
)
from nnsig_core.protocol.axes import POOL_MODES, AmbiguousLayoutError  # noqa: E402
from nnsig_core.protocol.token_rows import TokenRows  # noqa: E402

from ._defaults import ACTIVATION_TYPES, MAX_DEFAULT_LAYERS, default_layers  # noqa: E402
from ._summary import LayerInfo, LayerList  # noqa: E402
from .adapter import TorchAdapter, available_layers  # noqa: E402
from .callbacks import hf_callback, lightning_callback  # noqa: E402
from .probe import TorchProbe  # noqa: E402

__all__ = [
    "ACTIVATION_TYPES",
    "MAX_DEFAULT_LAYERS",
    "POOL_MODES",
    "AmbiguousLayoutError",
    "LayerInfo",
    "LayerList",
    "LayerSelectionError",
    "NonFiniteActivationError",
    "TokenRows",
    "TorchAdapter",
    "TorchProbe",
    "UnknownLayerError",
    "available_layers",
    "default_layers",
    "hf_callback",
    "lightning_callback",
]
