"""A fitted analysis in the store: save, load, and where its signatures are kept.

:class:`SavedAnalysis` is the persistence half of
:class:`~nnsig_core.analysis.SignatureAnalysis` (a mixin): the analysis as JSON
and arrays (:mod:`nnsig_core.analysis.state`), written and read by
:mod:`nnsig_core.analysis.persist`; the signatures computed in this session,
cached by the split's fingerprint; and which store holds this very analysis.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core.analysis import persist
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.state import export_state, restore_state
from nnsig_core.execute.client import ClientArg, resolve_client
from nnsig_core.store import ActivationStore, open_store

StoreArg = ActivationStore | str | os.PathLike
_FITTED = "clusterers_"


class SavedAnalysis:
    """Saving, loading and the signature cache of a fitted analysis (see the module doc)."""

    name_: str | None
    layers_: list[str]
    clusterers_: dict[str, Any]
    _cache: dict[tuple[Any, ...], Signatures]

    if TYPE_CHECKING:  # defined by the estimator this mixes into
        def row_level(self, store: ActivationStore) -> str: ...
        def signatures(self, store: Any, split: str, *, client: Any = None) -> Signatures: ...

    # ------------------------------------------------------------------ signature cache
    def _cache_key(self, store: ActivationStore, split: str) -> tuple[Any, ...]:
        where = store.location if store.path is not None or "://" in store.location else id(store)
        return (where, split, tuple(sorted(store.fingerprint(split).items())))

    def _cache_put(self, store: ActivationStore, split: str, sigs: Signatures) -> None:
        if not hasattr(self, "_cache"):
            self._cache = {}
        self._cache[self._cache_key(store, split)] = sigs

    def _saved_name(self, store: ActivationStore) -> str | None:
        """The name under which ``store`` holds this very analysis (saved there, or loaded
        from there), else None: another analysis saved under the same name in another
        store is not this one, and its signatures are not these."""
        if self.name_ is None:
            return None
        centers = {n: self.clusterers_[n].cluster_centers_ for n in self.layers_}
        return self.name_ if persist.holds_analysis(store, self.name_, centers) else None

    # ------------------------------------------------------------------ state and persistence
    def _state(self) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], dict[str, np.ndarray]]]]:
        """The fitted analysis as JSON and arrays (see :func:`~nnsig_core.analysis.state.export_state`)."""
        return export_state(self)

    @classmethod
    def _from_state(cls, meta: Mapping[str, Any],
                    layers: Mapping[str, tuple[dict[str, Any], dict[str, np.ndarray]]],
                    name: str | None = None) -> Any:
        """Rebuild a fitted analysis from :meth:`_state` output (``layers`` by layer name)."""
        return restore_state(cls, meta, layers, name)

    def save(self, store: StoreArg, name: str = "default", *, overwrite: bool = False,
             splits: Iterable[str] | None = None, client: ClientArg = None) -> Any:
        """Save the fitted analysis into ``store`` under ``analysis/<name>``.

        Parameters
        ----------
        store : ActivationStore or path
            Opened with mode ``"r+"`` or ``"a"`` (a path is opened ``"r+"``).
        name : str
        overwrite : bool
            Replace an analysis of that name (and the scores saved with it),
            once the new one is completely written.
        splits : iterable of str, optional
            Also save the signatures of these splits (computed if not done
            yet), so reports and exports need not recompute them. ``None``
            (default): every complete split of the store at the fit split's row
            level (token row spaces for a token-level analysis); ``()``: none.
        client : dask.distributed.Client, None or False
            Compute the signatures on this Dask cluster and write them from
            its workers (``None``: the active client, if any).

        Raises
        ------
        StoreError
            Read-only store, or the name is taken and ``overwrite`` is False.
        """
        check_is_fitted(self, _FITTED)
        client = resolve_client(client)
        if client is not None:
            from nnsig_core.distributed.analysis import save_distributed

            save_distributed(self, store, name, overwrite, splits, client)
            return self
        store = open_store(store, mode="r+")
        persist.check_can_save(store, name, overwrite)
        if splits is None:
            level = self.row_level(store)  # a token-level analysis saves token row spaces only
            splits = [s for s in store.splits if store.is_complete(s) and store.level(s) == level]
        # Signatures are computed before the store is touched: a failure leaves it unchanged.
        sigs = [self.signatures(store, s) for s in splits]
        meta, layers = self._state()
        persist.save_analysis(store, name, meta, layers, sigs, overwrite=overwrite)
        self.name_ = name
        return self

    @classmethod
    def load(cls, store: StoreArg, name: str = "default") -> Any:
        """Load an analysis saved with :meth:`save` (gives identical signatures)."""
        meta, layers = persist.load_analysis(open_store(store), name)
        return cls._from_state(meta, layers, name=name)
