"""The activation store: :class:`ActivationStore`, made of one mixin per job
(``docs/design.md``, "Module map"), and :func:`open_store`.
"""

from __future__ import annotations

import os
from typing import Any

from zarr.abc.store import Store

from nnsig_core.store.inspection import StoreInspection
from nnsig_core.store.opening import open_root
from nnsig_core.store.split_writing import SplitWriting


class ActivationStore(SplitWriting, StoreInspection):
    """A Zarr v3 store of captured activations, labels, predictions and outputs.

    Open one with :func:`open_store`; :func:`nnsig_core.capture` creates and fills them.
    The parameters are those of :class:`~nnsig_core.store.split_reading.SplitReading`.
    """

    @classmethod
    def open(cls, where: str | os.PathLike[str] | Store, mode: str = "r",
             storage_options: dict[str, Any] | None = None) -> ActivationStore:
        """Open the store at ``where``, as :func:`open_store` does, or create it (``mode="w"``).

        Parameters
        ----------
        where : str, path-like or zarr Store
            As for :func:`open_store`.
        mode : {"r", "r+", "a", "w"}
            Those of :func:`open_store`, and ``"w"``: created, replacing anything there.
        storage_options : dict, optional
            Options of the URL's fsspec filesystem.

        Raises
        ------
        ValueError
            For another ``mode``, or ``storage_options`` with a local path.
        StoreError
            If the store does not exist (``"r"``, ``"r+"``), is not an nnsig store, cannot be
            reached, or its root metadata is damaged.
        """
        opened = open_root(where, mode, storage_options)
        return cls(opened.group, opened.path, opened.location)


def open_store(store: ActivationStore | str | os.PathLike[str] | Store, mode: str = "r",
               storage_options: dict[str, Any] | None = None) -> ActivationStore:
    """Open an activation store (read-only by default); a store already open is returned as is.

    Parameters
    ----------
    store : ActivationStore, str, path-like or zarr Store
        A local directory, an fsspec URL (``s3://bucket/run.zarr``, ``memory://...``,
        ``file://...``), a zarr ``Store``, or an :class:`ActivationStore` (returned unchanged,
        whatever ``mode``).
    mode : {"r", "r+", "a"}
        ``"r"`` read-only, ``"r+"`` read-write (the store must exist), ``"a"`` read-write,
        created if missing.
    storage_options : dict, optional
        Options of the URL's fsspec filesystem (``{"endpoint_url": ...}``, credentials).

    Returns
    -------
    ActivationStore

    Raises
    ------
    StoreError
        When there is no nnsig store at the path.
    TypeError
        When ``store`` is neither a store nor a path.
    """
    if mode not in ("r", "r+", "a"):
        raise ValueError("mode must be 'r' (read-only), 'r+' (read-write, the store must exist) "
                         f"or 'a' (read-write, created if missing); got {mode!r}.")
    if isinstance(store, ActivationStore):
        return store
    if not isinstance(store, (str, os.PathLike, Store)):
        raise TypeError(f"Expected an ActivationStore, a path, a URL or a zarr Store, got "
                        f"{type(store).__name__}.")
    return ActivationStore.open(store, mode=mode, storage_options=storage_options)
