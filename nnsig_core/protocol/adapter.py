"""The adapter protocol: what :func:`nnsig_core.capture` needs from a model (``docs/design.md``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np


def describe_inputs(x: Any) -> str:
    """A batch's structure for an error: ``float32 (64, 10)`` (with the device of a tensor
    that has one), ``(..., ...)``, ``{k: ...}``; any framework's arrays."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        where = getattr(x, "device", None)
        on = "" if where is None or isinstance(x, np.ndarray) else f" on {where}"
        return f"{str(getattr(x, 'dtype', '?')).removeprefix('torch.')} {tuple(shape)}{on}"
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe_inputs(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(describe_inputs(v) for v in x) + ")"
    return type(x).__name__


class LayerSummary(TypedDict, total=False):
    """Metadata of one captured layer, as stored in the store's attributes."""

    name: str
    type: str
    shape: list[int]
    parameters: int | None  # None: unknown (arrays)
    config: dict[str, Any]


class ModelSummary(TypedDict, total=False):
    """Metadata of the model whose layers are captured."""

    model_class: str
    parameters: int | None  # None: unknown (arrays)
    layers: list[LayerSummary]


@runtime_checkable
class Adapter(Protocol):
    """What :func:`nnsig_core.capture` needs from a model; the core never imports a framework.

    Optionally, ``batch_images(inputs)`` returns a batch's images for thumbnails when they
    are not the inputs, ``model_fingerprint()`` identifies the model's weights, and
    ``output_shape`` is the per-sample shape of the last batch's outputs before they were
    flattened (logits per position are then refused without ``predict=``).
    """

    framework: str

    def run(self, inputs: Any) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        """Run one batch (in whatever form the model takes).

        Returns
        -------
        outputs : numpy.ndarray
            The model output reshaped to ``(n, -1)``.
        activations : mapping of str to numpy.ndarray
            Capture name to ``(n, *unit_shape)``, in the same order on every batch.
        """
        ...

    def model_summary(self) -> ModelSummary:
        """Describe the model and its captured layers (valid after the first ``run``)."""
        ...

    def to_numpy(self, x: Any) -> np.ndarray:
        """Convert a batch of inputs or labels to a NumPy array on the host."""
        ...
