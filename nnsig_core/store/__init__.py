"""The activation store: a Zarr v3 hierarchy of captured activations and what is fitted on them.

:mod:`~nnsig_core.store.format` defines the format (names, keys, array
layouts); :class:`ActivationStore` reads and writes it.
"""

from nnsig_core.store.activation_store import ActivationStore, open_store
from nnsig_core.store.claims import ClaimError
from nnsig_core.store.errors import IncompleteStoreError, StoreError
from nnsig_core.store.format import FORMAT_VERSION, layer_key
from nnsig_core.store.guard import DamagedChunkError, DamagedMetadataError, MissingChunkError
from nnsig_core.store.migrate import MigrationError, MigrationReport, migrate_store

__all__ = [
    "FORMAT_VERSION",
    "ActivationStore",
    "ClaimError",
    "DamagedChunkError",
    "DamagedMetadataError",
    "MissingChunkError",
    "IncompleteStoreError",
    "MigrationError",
    "MigrationReport",
    "StoreError",
    "layer_key",
    "migrate_store",
    "open_store",
]
