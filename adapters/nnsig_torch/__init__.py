"""PyTorch adapter of nnsig: record hidden-layer activations with forward hooks.

>>> from nnsig_torch import TorchAdapter
>>> adapter = TorchAdapter(model)                      # the family's default layers, pooled
>>> adapter = TorchAdapter(model, layers=["layer1", "layer2"], pool="mean")
>>> outputs, activations = adapter.run(images)   # NumPy arrays

See :class:`TorchAdapter` for the selection, naming and pooling rules, and
``TorchAdapter.available_layers(model, example_batch)`` for the layer names.
"""

from nnsig_core.protocol import LayerSelectionError, NonFiniteActivationError, UnknownLayerError
from nnsig_core.protocol.axes import POOL_MODES, AmbiguousLayoutError
from nnsig_core.protocol.token_rows import TokenRows

from ._defaults import ACTIVATION_TYPES, MAX_DEFAULT_LAYERS, default_layers
from ._summary import LayerInfo, LayerList
from .adapter import TorchAdapter, available_layers

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
    "UnknownLayerError",
    "available_layers",
    "default_layers",
]
