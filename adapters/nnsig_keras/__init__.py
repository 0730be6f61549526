"""Keras 3 adapter of nnsig: record hidden-layer activations of any Keras model, on any backend.

>>> import os; os.environ["KERAS_BACKEND"] = "torch"   # or "jax"; TensorFlow is not needed
>>> from nnsig_keras import KerasAdapter
>>> adapter = KerasAdapter(model, layers=["dense_1", "encoder/*", keras.layers.Conv2D])
>>> outputs, activations = adapter.run(x_batch)          # float32 NumPy arrays
>>> nnsig_core.capture(adapter, (x, y), "runs/model.zarr")

:class:`KerasProbe` (a ``keras.callbacks.Callback``) captures a fixed probe set at
checkpoints of ``model.fit``. Importing this package imports Keras; when no backend is
configured and TensorFlow is absent, torch (else jax) is chosen.
"""

from ._backend import choose_backend

choose_backend()

from nnsig_core._util import import_framework  # noqa: E402

import_framework("keras", "nnsig_keras", "Keras 3",
                 "pip install 'nnsig[keras]' (or pip install keras torch)")

from nnsig_core.protocol import (  # noqa: E402
    LayerSelectionError,
    NonFiniteActivationError,
    UnknownLayerError,
)

from ._model import ModelNotBuiltError, UnsupportedModelError  # noqa: E402
from .adapter import KerasAdapter, available_layers  # noqa: E402
from .callback import KerasProbe  # noqa: E402

__all__ = [
    "KerasAdapter",
    "KerasProbe",
    "LayerSelectionError",
    "ModelNotBuiltError",
    "NonFiniteActivationError",
    "UnknownLayerError",
    "UnsupportedModelError",
    "available_layers",
]
