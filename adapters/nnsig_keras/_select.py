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
    """Resolve ``layers`` against the layer paths of a model.

    Parameters
    ----------
    layers : str, type or sequence of them
        Layer paths (``"dense_1"``, ``"encoder/dense_2"``), capture names of
        one call or one output (``"shared:1"``, ``"split.0"``), glob patterns
        matched with :func:`fnmatch.fnmatchcase` against the paths and the
        capture names (``"encoder/*"``), or layer classes
        (``keras.layers.Dense``: every layer, at any depth, that is an
        instance); see :func:`nnsig_core.protocol.resolve_selection`.
    units : mapping of str to layer
        Every selectable layer path to its layer (or operation), model order.
    capture_names : sequence of str
        Capture names that may be given exactly (known without running the
        model, i.e. for symbolic graphs).
    model_name : str
        For messages.

    Returns
    -------
    paths : set of str
        Layer paths selected whole (every call, every output).
    exact : set of str
        Capture names selected individually.

    Raises
    ------
    UnknownLayerError
        For a name that is neither a layer path nor a capture name.
    LayerSelectionError
        For a pattern or class that matches nothing, or an empty selection.
    TypeError
        For an entry that is neither a string nor a class.
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
