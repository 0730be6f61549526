"""A fitted analysis in the store: save, load, and the signatures cached in this session."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sklearn.utils.validation import check_is_fitted

from nnsig_core._warnings import warn
from nnsig_core.analysis import persist
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.execute.client import ClientArg, resolve_client
from nnsig_core.store import ActivationStore, open_store
from nnsig_core.store.format import analysis_path, scorer_path, scores_path, signatures_path

log = logging.getLogger("nnsig")

StoreArg = ActivationStore | str | os.PathLike
_FITTED = "clusterers_"


class SavedAnalysis:
    """Saving, loading and the signature cache of a fitted analysis (a mixin)."""

    name_: str | None
    layers_: list[str]
    clusterers_: dict[str, Any]
    _cache: dict[tuple[Any, ...], Signatures]

    if TYPE_CHECKING:  # defined by the estimator this mixes into
        def row_level(self, store: ActivationStore) -> str: ...
        def signatures(self, store: Any, split: str, *, client: Any = None) -> Signatures: ...

    def _cache_key(self, store: ActivationStore, split: str) -> tuple[Any, ...]:
        where = store.location if store.path is not None or "://" in store.location else id(store)
        return (where, split, tuple(sorted(store.fingerprint(split).items())))

    def _cache_put(self, store: ActivationStore, split: str, sigs: Signatures,
                   tag: tuple[Any, ...] = ()) -> None:
        """Keep ``sigs`` for this session; ``tag`` marks the driver's (a client's) copy."""
        if getattr(self, "_cache", None) is None:
            self._cache = {}
        self._cache[(*self._cache_key(store, split), *tag)] = sigs

    def _forget(self, store: ActivationStore, split: str) -> None:
        """Drop every driver's cached signatures of ``split``."""
        prefix = self._cache_key(store, split)
        cache = getattr(self, "_cache", None) or {}
        for key in [k for k in cache if k[:len(prefix)] == prefix]:
            del cache[key]

    def _saved_name(self, store: ActivationStore) -> str | None:
        """The name under which ``store`` holds this very analysis, else None."""
        if self.name_ is None:
            return None
        centers = {n: self.clusterers_[n].cluster_centers_ for n in self.layers_}
        return self.name_ if persist.holds_analysis(store, self.name_, centers) else None

    def save(self, store: StoreArg, name: str = "default", *, overwrite: bool = False,
             splits: Iterable[str] | None = None, client: ClientArg = None) -> Any:
        """Save the fitted analysis into ``store`` under ``analysis/<name>``.

        Parameters
        ----------
        store : ActivationStore or path
            Opened with mode ``"r+"`` or ``"a"`` (a path is opened ``"r+"``).
        name : str
        overwrite : bool
            Replace an analysis of that name (and the scores saved with it).
        splits : iterable of str, optional
            Also save the signatures of these splits. ``None``: every complete split at the
            fit split's row level; ``()``: none.
        client : dask.distributed.Client, None or False
            Compute the signatures on this Dask cluster (``None``: the active client, if any).

        Raises
        ------
        StoreError
            Read-only store, or the name is taken and ``overwrite`` is False.
        """
        check_is_fitted(self, _FITTED)
        client = resolve_client(client)
        store = open_store(store, mode="r+")
        persist.check_can_save(store, name, overwrite)
        _warn_of_dropped_scores(store, name)
        if splits is None:
            level = self.row_level(store)  # a token-level analysis saves token row spaces only
            splits = [s for s in store.splits if store.is_complete(s) and store.level(s) == level]
        if self._saved_name(store) == name:
            self._resave(store, name, list(splits), client)
            return self
        # Computed before the store is touched, so that a failure leaves it unchanged.
        sigs = [self.signatures(store, s, client=client) for s in splits]
        meta, layers = persist.export_state(self)
        persist.save_analysis(store, name, meta, layers, sigs, overwrite=overwrite)
        self.name_ = name
        return self

    def _resave(self, store: ActivationStore, name: str, splits: list[str], client: Any) -> None:
        """:meth:`save` over its own saved copy: state and current signatures of ``splits``
        stay; the signatures of other splits, the scorer and its scores go."""
        saved = store.group(signatures_path(name))
        for split in [] if saved is None else [k for k, _ in saved.groups()]:
            if split not in splits and not split.startswith("."):  # not another writer's group
                self._forget(store, split)
                store.delete(signatures_path(name, split))
        store.delete(scores_path(name))
        store.delete(scorer_path(name))
        for split in splits:
            if persist.signatures_group(store, name, split, self.layers_) is None:
                # On a cluster the transform writes them next to the analysis itself.
                sigs = self.signatures(store, split, client=client)
                if persist.signatures_group(store, name, split, self.layers_) is None:
                    persist.save_signatures(store, name, sigs)
        store.remove_leftovers_beside(analysis_path(name))  # as a replacing save does
        log.info("Analysis %r was already saved in %s; its signatures of %s are current.", name,
                 store.location, splits or "no split")

    @classmethod
    def load(cls, store: StoreArg, name: str = "default") -> Any:
        """Load an analysis saved with :meth:`save` (gives identical signatures)."""
        meta, layers = persist.load_analysis(open_store(store), name)
        return persist.restore_state(cls, meta, layers, name)


def _warn_of_dropped_scores(store: ActivationStore, name: str) -> None:
    """Replacing the analysis ``name`` removes the scorer and scores saved with it: say so."""
    scores = store.group(scores_path(name))
    splits = [] if scores is None else sorted(k for k, _ in scores.groups() if not k.startswith("."))
    if splits or store.group(scorer_path(name)) is not None:
        warn(f"Replacing analysis {name!r} removes the scorer saved with it"
             + (f" and its scores of {', '.join(splits)}" if splits else "")
             + ": the report shows no scores or threshold until they are computed again "
             "(signature_scores(..., validation_split=..., save=True), or nnsig evaluate "
             "--validation SPLIT).")
