"""PyTorch adapter of nnsig: record hidden-layer activations with forward hooks.

>>> from nnsig_torch import TorchAdapter
>>> adapter = TorchAdapter(model)                      # the family's default layers, pooled
>>> adapter = TorchAdapter(model, layers=["layer1", "layer2"], pool="mean")
>>> outputs, activations = adapter.run(images)   # NumPy arrays

:class:`TorchProbe` captures a fixed probe set at checkpoints of a training loop
(:func:`lightning_callback` and :func:`hf_callback` wrap it for Lightning and the
Hugging Face ``Trainer``).
"""

try:
    import torch  # noqa: F401
except ModuleNotFoundError as exc:  # the bare "No module named 'torch'" names no fix
    if exc.name != "torch":
        raise
    raise ImportError("nnsig_torch needs PyTorch, which is not installed: pip install "
                      "'nnsig[torch]' (or pip install torch).") from exc

from nnsig_core.protocol import LayerSelectionError, NonFiniteActivationError, UnknownLayerError
from nnsig_core.protocol.axes import POOL_MODES, AmbiguousLayoutError
from nnsig_core.protocol.token_rows import TokenRows

from ._defaults import ACTIVATION_TYPES, MAX_DEFAULT_LAYERS, default_layers
from ._summary import LayerInfo, LayerList
from .adapter import TorchAdapter, available_layers
from .callbacks import hf_callback, lightning_callback
from .probe import TorchProbe

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
