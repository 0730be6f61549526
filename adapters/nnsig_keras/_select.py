"""Resolving ``layers=`` (names, glob patterns, layer classes) to layer paths of a Keras model.

The resolution itself is shared with the other adapters
(:func:`nnsig_core.protocol.resolve_selection`); what is Keras's is here: the
candidates are layer paths (``"encoder/dense_2"``), and the capture names of
one call or one output (``"shared:1"``, ``"split.0"``) may be given too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nnsig_core.protocol import LayerSpec, SelectionWording, resolve_selection


def resolve_layers(
    layers: LayerSpec | Sequence[LayerSpec],
    units: Mapping[str, Any],
    capture_names: Sequence[str],
    model_name: str,
) -> tuple[set[str], set[str]]:
    """Resolve ``layers`` against a model's layer paths (as ``resolve_selection`` does).

    ``layers`` holds layer paths (``"encoder/dense_2"``), capture names of one call or output
    (``"shared:1"``, ``"split.0"``), glob patterns matched against both, or layer classes;
    ``units`` maps every selectable path to its layer, in model order; ``capture_names`` may
    be given exactly (known without running the model). Returns the paths selected whole and
    the capture names selected individually; raises as ``resolve_selection`` does.
    """
    wording = SelectionWording(
        model=f"model {model_name!r}",
        item="layer",
        kind="class",
        kinds="classes",
        entries="a layer name, a glob pattern or a Keras layer class (e.g. keras.layers.Dense)",
        listing="Layers of nested models are named by their path ('encoder/dense_2'); "
        "KerasAdapter.available_layers(model) lists every name.",
    )
    sel = resolve_selection(layers, units, wording, extra=capture_names)
    return set(sel.matched), sel.extra
