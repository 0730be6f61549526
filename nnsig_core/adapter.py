"""The framework-neutral adapter protocol, and the adapter for precomputed arrays.

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
themselves, as for :class:`ArrayAdapter`, whose inputs are sample positions.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

__all__ = [
    "Adapter",
    "ArrayAdapter",
    "LayerSelectionError",
    "LayerSummary",
    "ModelSummary",
    "UnknownLayerError",
    "close_matches",
]


class LayerSelectionError(ValueError):
    """A layer selection that selects nothing, or a selected layer that cannot be captured.

    Raised by every framework adapter, so ``except LayerSelectionError``
    works whatever the framework.
    """


class UnknownLayerError(LayerSelectionError, KeyError):
    """A layer name that is not a layer of the model (the message lists close matches)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def close_matches(name: str, candidates: Sequence[str], n: int = 5) -> list[str]:
    """Names among ``candidates`` that look like ``name``, best first.

    First the names that merely end with ``name`` after a ``/`` (``"dense_2"``
    for ``"encoder/dense_2"``, the usual mistake with nested models), then
    difflib's close matches, then names that contain ``name`` (``"conv1"`` in
    ``"layer1.0.conv1"``).
    """
    found = [c for c in candidates if c.endswith("/" + name)][:n]
    for c in difflib.get_close_matches(name, candidates, n=n, cutoff=0.5):
        if c not in found and len(found) < n:
            found.append(c)
    for c in candidates:
        if len(found) >= n:
            break
        if name and name in c and c not in found:
            found.append(c)
    return found


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
        """Run one batch; return ``(outputs, {layer: activations})`` as NumPy arrays."""
        ...

    def model_summary(self) -> ModelSummary:
        """Describe the model and its captured layers (valid after the first ``run``)."""
        ...

    def to_numpy(self, x: Any) -> np.ndarray:
        """Convert a batch of inputs or labels to a NumPy array on the host."""
        ...


class ArrayAdapter:
    """Adapter for activations already computed by any framework.

    The "inputs" that :func:`nnsig_core.capture` passes to :meth:`run` are
    integer sample positions, so the data given to ``capture`` is
    ``(np.arange(n), labels)``; :func:`nnsig_core.capture_arrays` does this for
    you.

    Parameters
    ----------
    activations : mapping of str to array-like
        Layer name to an array of shape ``(n_samples, *unit_shape)``.
        Anything sliceable along the first axis works (NumPy arrays, memmaps,
        zarr or h5py arrays), so data larger than memory can be streamed.
    outputs : array-like
        Model outputs (logits or scores), shape ``(n_samples, n_outputs)``.
    model_class : str, optional
        Name recorded as the model's class in the store.
    layer_types : mapping of str to str, optional
        A type name per layer (``"Dense"``, ``"Conv2d"``...) for the model panel.
    inputs : array-like, optional
        The input images, one per sample, for thumbnails (see :meth:`batch_images`).
    """

    framework = "arrays"

    def __init__(
        self,
        activations: Mapping[str, Any],
        outputs: Any,
        model_class: str = "unknown",
        layer_types: Mapping[str, str] | None = None,
        inputs: Any = None,
    ) -> None:
        if not activations:
            raise ValueError("ArrayAdapter needs at least one layer in `activations`.")
        n = _first_dim(outputs, "outputs")
        for name, arr in activations.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"Layer names must be non-empty strings, got {name!r}.")
            m = _first_dim(arr, f"activations[{name!r}]")
            if m != n:
                raise ValueError(
                    f"activations[{name!r}] has {m} samples but outputs has {n}; "
                    "every array must have one row per sample, in the same order."
                )
        if inputs is not None and _first_dim(inputs, "inputs") != n:
            raise ValueError(f"inputs has {_first_dim(inputs, 'inputs')} rows but outputs has {n}.")
        self.inputs = inputs
        self.activations = dict(activations)
        self.outputs = outputs
        self.n_samples = n
        self.model_class = model_class
        self.layer_types = dict(layer_types or {})

    def run(self, inputs: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        idx = np.asarray(inputs)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(
                "ArrayAdapter.run expects a 1-D array of sample positions; "
                "use nnsig_core.capture_arrays(...) to capture precomputed arrays."
            )
        sl = _as_slice(idx)
        key = sl if sl is not None else idx
        outputs = np.asarray(self.outputs[key])
        acts = {name: np.asarray(arr[key]) for name, arr in self.activations.items()}
        return outputs, acts

    def batch_images(self, inputs: Any) -> np.ndarray:
        """The images of the samples at positions ``inputs`` (for thumbnails)."""
        if self.inputs is None:
            raise ValueError("This ArrayAdapter was given no `inputs` to make thumbnails from.")
        idx = np.asarray(inputs)
        sl = _as_slice(idx)
        return np.asarray(self.inputs[sl if sl is not None else idx])

    def model_summary(self) -> ModelSummary:
        layers: list[LayerSummary] = []
        for name, arr in self.activations.items():
            layers.append(
                {
                    "name": name,
                    "type": self.layer_types.get(name, "unknown"),
                    "shape": [int(s) for s in np.shape(arr)[1:]] if hasattr(arr, "shape") else [],
                    "parameters": 0,
                }
            )
        return {"model_class": self.model_class, "parameters": 0, "layers": layers}

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


def _first_dim(arr: Any, what: str) -> int:
    shape = getattr(arr, "shape", None)
    if shape is None:
        arr = np.asarray(arr)
        shape = arr.shape
    if len(shape) < 1:
        raise ValueError(f"{what} must have a sample axis; got a scalar.")
    return int(shape[0])


def _as_slice(idx: np.ndarray) -> slice | None:
    """Return an equivalent slice when ``idx`` is a contiguous ascending run."""
    if idx.size == 0:
        return slice(0, 0)
    start = int(idx[0])
    if idx.size == 1 or bool(np.all(np.diff(idx) == 1)):
        return slice(start, start + idx.size)
    return None

