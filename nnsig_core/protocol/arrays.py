"""The adapter for activations already computed, by any framework."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nnsig_core.protocol.adapter import LayerSummary, ModelSummary
from nnsig_core.protocol.finite import check_finite

ARRAYS_FIX = ("Replace or drop those rows before capturing (np.nan_to_num, a mask), or pass "
              "keep_nonfinite=True to store them as they are.")


class ArrayAdapter:
    """Adapter for activations already computed by any framework.

    Its "inputs" are integer sample positions (``(np.arange(n), labels)``, as
    :func:`nnsig_core.capture_arrays` passes them).

    Parameters
    ----------
    activations : mapping of str to array-like
        Layer name to ``(n_samples, *unit_shape)``: anything sliceable along the
        first axis (memmaps, zarr or h5py arrays stream data larger than memory).
    outputs : array-like
        Model outputs (logits or scores), shape ``(n_samples, n_outputs)``.
    model_class : str, optional
        Name recorded as the model's class in the store.
    layer_types : mapping of str to str, optional
        A type name per layer (``"Dense"``, ``"Conv2d"``...) for the model panel.
    inputs : array-like, optional
        The input images, one per sample, for thumbnails (see :meth:`batch_images`).
    keep_nonfinite : bool
        Store NaN and Inf as they are instead of raising
        :class:`~nnsig_core.protocol.NonFiniteActivationError` at capture (an
        analysis refuses them later).
    """

    framework = "arrays"

    def __init__(self, activations: Mapping[str, Any], outputs: Any, *,
                 model_class: str = "unknown", layer_types: Mapping[str, str] | None = None,
                 inputs: Any = None, keep_nonfinite: bool = False) -> None:
        if not activations:
            raise ValueError("ArrayAdapter needs at least one layer in `activations`.")
        n = _first_dim(outputs, "outputs")
        for name, arr in activations.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"Layer names must be non-empty strings, got {name!r}.")
            m = _first_dim(arr, f"activations[{name!r}]")
            if m != n:
                raise ValueError(f"activations[{name!r}] has {m} samples but outputs has {n}; "
                                 "every array must have one row per sample, in the same order.")
        if inputs is not None and _first_dim(inputs, "inputs") != n:
            raise ValueError(f"inputs has {_first_dim(inputs, 'inputs')} rows but outputs has {n}.")
        self.inputs = inputs
        self.activations = dict(activations)
        self.outputs = outputs
        self.n_samples = n
        self.model_class = model_class
        self.layer_types = dict(layer_types or {})
        self.keep_nonfinite = bool(keep_nonfinite)

    def run(self, inputs: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The outputs and activations (as :meth:`Adapter.run`) at the positions ``inputs``."""
        idx = np.asarray(inputs)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError("ArrayAdapter.run expects a 1-D array of sample positions; "
                            "use nnsig_core.capture_arrays(...) to capture precomputed arrays.")
        key = _as_key(idx)
        outputs = np.asarray(self.outputs[key])
        acts = {name: np.asarray(arr[key]) for name, arr in self.activations.items()}
        if not self.keep_nonfinite:
            for name, values in [*acts.items(), (None, outputs)]:
                check_finite(values, layer=name, rows=idx, fix=ARRAYS_FIX, scope="the batch")
        return outputs, acts

    def batch_images(self, inputs: Any) -> np.ndarray:
        """The images of the samples at positions ``inputs`` (for thumbnails)."""
        if self.inputs is None:
            raise ValueError("This ArrayAdapter was given no `inputs` to make thumbnails from.")
        return np.asarray(self.inputs[_as_key(np.asarray(inputs))])

    def model_summary(self) -> ModelSummary:
        """Describe the arrays: ``model_class``, each layer's type and shape; the parameter
        counts are unknown (None), not 0."""
        layers: list[LayerSummary] = [
            {"name": name, "type": self.layer_types.get(name, "unknown"),
             "shape": [int(s) for s in np.shape(arr)[1:]] if hasattr(arr, "shape") else [],
             "parameters": None}
            for name, arr in self.activations.items()]
        return {"model_class": self.model_class, "parameters": None, "layers": layers}

    def to_numpy(self, x: Any) -> np.ndarray:
        """Convert labels or inputs to a NumPy array."""
        return np.asarray(x)


def _first_dim(arr: Any, what: str) -> int:
    shape = getattr(arr, "shape", None)
    if shape is None:
        shape = np.asarray(arr).shape
    if len(shape) < 1:
        raise ValueError(f"{what} must have a sample axis; got a scalar.")
    return int(shape[0])


def _as_key(idx: np.ndarray) -> slice | np.ndarray:
    """``idx``, or an equivalent slice when it is a contiguous ascending run."""
    if idx.size == 0:
        return slice(0, 0)
    start = int(idx[0])
    if idx.size == 1 or bool(np.all(np.diff(idx) == 1)):
        return slice(start, start + idx.size)
    return idx
