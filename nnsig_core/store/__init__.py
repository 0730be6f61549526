"""The activation store: a Zarr v3 hierarchy of captured activations and what is fitted on them.

:mod:`~nnsig_core.store.layout` defines the format (names, keys, array
layouts); :class:`ActivationStore` reads and writes it.
"""

from nnsig_core.store.activation_store import ActivationStore, open_store
from nnsig_core.store.errors import IncompleteStoreError, StoreError
from nnsig_core.store.layout import FORMAT_VERSION, layer_key

__all__ = [
    "FORMAT_VERSION",
    "ActivationStore",
    "IncompleteStoreError",
    "StoreError",
    "layer_key",
    "open_store",
]

# Legacy names used by modules not yet moved onto the layout module (removed before issue 10 lands).
from nnsig_core._util import to_json_safe  # noqa: E402,F401
from nnsig_core.store.layout import (  # noqa: E402,F401
    ANALYSIS_GROUP,
    META_ARRAYS,
    RESERVED_NAMES,
    ROOT_ATTR,
    SPLIT_ATTR,
    resolve_compressor,
)
