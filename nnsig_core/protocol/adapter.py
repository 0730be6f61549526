"""The adapter protocol: what :func:`nnsig_core.capture` needs from a model.

An *adapter* is the only thing :func:`nnsig_core.capture` knows about a model.
Framework adapters (``nnsig_torch.TorchAdapter``, ``nnsig_keras.KerasAdapter``)
live in their own packages and are imported lazily by the user; the core never
imports a deep-learning framework.

The protocol is deliberately narrow:

``framework``
    A short string (``"torch"``, ``"keras"``, ``"arrays"``) recorded in the store.
``run(inputs)``
    Run one batch and return ``(outputs, activations)``: ``outputs`` a NumPy
    array of shape ``(n, n_outputs)`` (logits or scores) and ``activations`` a
    mapping from layer name to a NumPy array of shape ``(n, *unit_shape)``, in
    the same, stable layer order on every call.
``model_summary()``
    A JSON-serialisable dict describing the model (see :class:`ModelSummary`),
    valid after the first ``run`` (shapes may only be known then).
``to_numpy(x)``
    Convert a batch of inputs or labels from the framework's type to NumPy
    (on the host), used for labels and for input thumbnails.

Optionally, ``batch_images(inputs)`` returns the images of a batch for
thumbnails (``capture(..., keep_inputs=True)``) when they are not the inputs
themselves, as for :class:`~nnsig_core.protocol.ArrayAdapter`, whose inputs are
sample positions; and ``model_fingerprint()`` returns a string identifying the
model's weights (a hash), recorded with each split so that a capture is never
resumed, nor a split added to a store, with other weights unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np


class LayerSummary(TypedDict, total=False):
    """Metadata of one captured layer, as stored in the store's attributes."""

    name: str
    type: str
    shape: list[int]
    parameters: int
    config: dict[str, Any]


class ModelSummary(TypedDict, total=False):
    """Metadata of the model whose layers are captured."""

    model_class: str
    parameters: int
    layers: list[LayerSummary]


@runtime_checkable
class Adapter(Protocol):
    """What :func:`nnsig_core.capture` needs from a model (see the module docstring)."""

    framework: str

    def run(self, inputs: Any) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        """Run one batch and return its outputs and activations.

        Parameters
        ----------
        inputs : Any
            One batch, in whatever form the model takes.

        Returns
        -------
        outputs : numpy.ndarray
            The model output reshaped to ``(n, -1)`` (logits or scores).
        activations : mapping of str to numpy.ndarray
            Capture name to an array ``(n, *unit_shape)``, in the same order
            on every batch.
        """
        ...

    def model_summary(self) -> ModelSummary:
        """Describe the model and its captured layers (valid after the first ``run``)."""
        ...

    def to_numpy(self, x: Any) -> np.ndarray:
        """Convert a batch of inputs or labels to a NumPy array on the host."""
        ...
