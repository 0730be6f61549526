"""PyTorch adapter of nnsig: record hidden-layer activations with forward hooks.

>>> from nnsig_torch import TorchAdapter
>>> adapter = TorchAdapter(model, layers=["layer1", "layer2"], pool="mean")
>>> outputs, activations = adapter.run(images)   # NumPy arrays

See :class:`TorchAdapter` for the selection, naming and pooling rules, and
``TorchAdapter.available_layers(model, example_batch)`` for the layer names.
"""

from nnsig_core.adapter import LayerSelectionError, NonFiniteActivationError, UnknownLayerError

from ._pool import POOL_MODES
from ._select import ACTIVATION_TYPES
from ._summary import LayerInfo, LayerList
from .adapter import TorchAdapter, available_layers

__all__ = [
    "ACTIVATION_TYPES",
    "POOL_MODES",
    "LayerInfo",
    "LayerList",
    "LayerSelectionError",
    "NonFiniteActivationError",
    "TorchAdapter",
    "UnknownLayerError",
    "available_layers",
]
