"""``SignatureAnalysis`` on a Dask cluster: transform, signatures and save (the fit:
:mod:`nnsig_core.distributed.fitting`).

:class:`~nnsig_core.analysis.SignatureAnalysis` delegates here when it has a
client (given, or the active one).

Transform assigns every sample of a split with ``map_blocks`` over each layer
read by ``dask.array.from_zarr`` and returns :class:`~nnsig_core.analysis.Signatures`
over dask arrays. When the
store holds this very analysis (saved there or loaded from there) and is open
for writing, the workers write the cluster ids and distances from that graph
straight into the analysis's signatures group (a temporary group moved into
place once whole), and the result reads them from the store; otherwise they
stay in the workers' memory until ``save`` writes them from the workers. Tables,
purity and scores are reductions over those ids: only aggregates reach the
driver.

This module must not import the engine (the engine imports it): it works on
the estimator it is given.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._util import now_iso, to_json_safe
from nnsig_core.analysis import persist
from nnsig_core.analysis.assign import assign_nearest
from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.source import check_unchanged
from nnsig_core.distributed.reductions import (
    SplitBlocks,
    n_classes_of,
    require_rows,
    split_counts,
)
from nnsig_core.execute.dask_blocks import broadcast
from nnsig_core.store import ActivationStore, open_store
from nnsig_core.store.format import array_options, scores_path, signatures_path

log = logging.getLogger("nnsig")



# ---------------------------------------------------------------------------- transform
def _assign_block(raw: np.ndarray, lc: LayerClusterer) -> np.ndarray:
    """``(rows, 2)`` float64: cluster id and distance of each row of a block (exact in float64)."""
    block = np.asarray(raw).reshape(raw.shape[0], -1)
    ids, dist = assign_nearest(lc.features(block.astype(np.float32, copy=False)),
                               lc.cluster_centers_)
    return np.column_stack([ids.astype(np.float64), dist.astype(np.float64)])


def _checked(raw: np.ndarray, check: Any, block_info: Any = None) -> np.ndarray:
    from nnsig_core.distributed.reductions import _flat_checked

    lo = block_info[0]["array-location"][0][0] if block_info else 0
    return _flat_checked(raw, lo, check)


def transform_distributed(analysis: Any, store: Any, split: str, client: Any) -> Signatures:
    """``analysis.transform(store, split)`` on the cluster: :class:`Signatures`.

    When ``store`` holds this very analysis (:func:`_home`) and is writable, the workers write
    the cluster ids and distances straight into its signatures group (as
    :func:`save_signatures` does) and the result reads them from there; otherwise they are
    kept in the workers' memory.
    """
    import dask.array as da

    from nnsig_core.distributed.reductions import _LayerCheck

    check_is_fitted(analysis, "clusterers_")
    store = open_store(store)
    require_rows(store, split)
    before = store.fingerprint(split)
    analysis._check_split_layers(store, split)
    blocks = SplitBlocks(client, store, split)
    ids, dist = [], []
    for name in analysis.layers_:
        x = blocks.layer(name)
        flat = x.reshape(x.shape[0], -1) if x.ndim != 2 else x
        check = broadcast(client, _LayerCheck(store, split, name))
        flat = flat.map_blocks(_checked, check, dtype=np.float32)
        lc = broadcast(client, analysis.clusterers_[name])
        both = flat.map_blocks(_assign_block, lc, chunks=(flat.chunks[0], (2,)), dtype=np.float64)
        ids.append(both[:, 0].astype(np.int32))
        dist.append(both[:, 1].astype(np.float32))
    cluster_ids = da.stack(ids, axis=1).rechunk((blocks.block_rows, -1))
    distances = da.stack(dist, axis=1).rechunk((blocks.block_rows, -1))
    home = _home(analysis, store)
    if home is not None and not store.read_only:
        _forget(analysis, store, split)  # they may read the group this write replaces
        _write_signatures(store, home, split, analysis.layers_, cluster_ids, distances, client,
                          before)
        sigs = _from_group(analysis, store, split, store.group(signatures_path(home, split)),
                           blocks, client)
    else:
        log.info("Cluster ids of split %r kept in the workers' memory (%s); "
                 "analysis.save(store, name, client=...) writes them to the store.", split,
                 "the store is open read-only" if home is not None
                 else "the analysis is not saved in this store")
        cluster_ids, distances = client.persist([cluster_ids, distances])
        from distributed import wait

        with client.as_current():
            wait([cluster_ids, distances])
        check_unchanged(store, split, before)
        sigs = _dask_signatures(analysis, store, split, blocks, cluster_ids, distances, client)
    _cache(analysis)[_cache_key(analysis, store, split, client)] = sigs
    return sigs


def _dask_signatures(analysis: Any, store: ActivationStore, split: str, blocks: SplitBlocks,
                     cluster_ids: Any, distances: Any, client: Any) -> Signatures:
    counts = split_counts(blocks)
    return Signatures(
        split, analysis.layers_, cluster_ids, blocks.meta("labels"), blocks.meta("predictions"),
        distances, blocks.meta("sample_index"), analysis.n_clusters_,
        n_classes=max(analysis.n_classes_, n_classes_of(store, split, counts)),
        class_names=store.class_names(), client=client, n_samples=blocks.n)


def _cache(analysis: Any) -> dict[Any, Any]:
    if getattr(analysis, "_cache", None) is None:
        analysis._cache = {}
    return analysis._cache


def _cache_key(analysis: Any, store: ActivationStore, split: str, client: Any) -> tuple[Any, ...]:
    """The analysis's signature-cache key of the split, marked as this client's."""
    return (*analysis._cache_key(store, split), "dask", client.id)


def _forget(analysis: Any, store: ActivationStore, split: str) -> None:
    """Drop the split's cached :class:`Signatures` (of any client), which may read a group
    about to be deleted."""
    prefix = analysis._cache_key(store, split)
    cache = _cache(analysis)
    for key in [k for k in cache if len(k) > len(prefix) and k[:len(prefix)] == prefix]:
        del cache[key]


# ---------------------------------------------------------------------------- signatures, save
def _home(analysis: Any, store: ActivationStore) -> str | None:
    """The name under which ``store`` holds this very analysis (saved there, or loaded from
    there), else None."""
    return analysis._saved_name(store)


def _from_group(analysis: Any, store: ActivationStore, split: str, grp: Any,
                blocks: SplitBlocks, client: Any) -> Signatures:
    """The signatures saved in ``grp`` (see :func:`persist.signatures_group`) as dask arrays."""
    import dask.array as da

    ids, dist = [da.from_zarr(grp[key]).rechunk((blocks.block_rows, -1))
                 for key in ("cluster_ids", "distances")]
    return _dask_signatures(analysis, store, split, blocks, ids.astype(np.int32),
                            dist.astype(np.float32), client)


def _saved(analysis: Any, store: ActivationStore, split: str, client: Any) -> Signatures | None:
    """Saved signatures of ``split`` read as dask arrays (None when the store does not hold
    this analysis, or they are absent, stale or of other layers)."""
    home = _home(analysis, store)
    grp = None if home is None else persist.signatures_group(store, home, split,
                                                             analysis.layers_)
    if grp is None:
        return None
    return _from_group(analysis, store, split, grp, SplitBlocks(client, store, split), client)


def signatures_distributed(analysis: Any, store: Any, split: str, client: Any) -> Signatures:
    """``analysis.signatures(store, split)`` on the cluster: computed earlier with this client,
    saved in the store (read as dask arrays), or transformed now."""
    check_is_fitted(analysis, "clusterers_")
    store = open_store(store)
    key = _cache_key(analysis, store, split, client)
    if key not in _cache(analysis):
        saved = _saved(analysis, store, split, client)
        if saved is None:
            return transform_distributed(analysis, store, split, client)
        _cache(analysis)[key] = saved
    return _cache(analysis)[key]


def save_distributed(analysis: Any, store: Any, name: str, overwrite: bool,
                     splits: Iterable[str] | None, client: Any) -> None:
    """``analysis.save(...)`` with signatures computed on the cluster and written by the
    workers.

    Usually the analysis's state is written first (replacing an older one only once whole),
    then each split's signatures (each replaced only once whole; a failure leaves the analysis
    without them, and they are computed again when needed). When the store already holds this
    very analysis under ``name``, its state stays and so do the current signatures of
    ``splits`` (not computed again); what ``overwrite`` replaces goes: the signatures of other
    splits and the saved scores.
    """
    check_is_fitted(analysis, "clusterers_")
    store = open_store(store, mode="r+")
    persist.check_can_save(store, name, overwrite)
    if splits is None:
        level = analysis.row_level(store)  # a token-level analysis saves token row spaces only
        splits = [s for s in store.splits if store.is_complete(s) and store.level(s) == level]
    splits = list(splits)
    if _home(analysis, store) == name:
        _resave(analysis, store, name, splits, client)
        return
    sigs = [signatures_distributed(analysis, store, s, client) for s in splits]
    meta, layers = analysis._state()
    persist.save_analysis(store, name, meta, layers, [], overwrite=overwrite)
    analysis.name_ = name
    for s in sigs:
        save_signatures(s, store, name)


def _resave(analysis: Any, store: ActivationStore, name: str, splits: list[str],
            client: Any) -> None:
    """:func:`save_distributed` of an analysis over its own saved copy ``name``."""
    saved = store.group(signatures_path(name))
    for split in [] if saved is None else [k for k, _ in saved.groups()]:
        if split not in splits and not split.startswith("."):  # not another writer's group
            _forget(analysis, store, split)
            store.delete(signatures_path(name, split))
    store.delete(scores_path(name))
    for split in splits:
        if persist.signatures_group(store, name, split, analysis.layers_) is not None:
            continue
        # Written into the store by the transform, unless computed (in memory) earlier.
        sigs = signatures_distributed(analysis, store, split, client)
        if persist.signatures_group(store, name, split, analysis.layers_) is None:
            save_signatures(sigs, store, name)
    log.info("Analysis %r was already saved in %s; its signatures of %s are current.", name,
             store.location, splits or "no split")


def save_signatures(sigs: Signatures, store: ActivationStore, name: str) -> None:
    """Write the cluster ids and distances next to the saved analysis ``name``, from the
    workers (each writes its blocks), replacing older ones only once complete."""
    store.require_writable(f"the signatures of split {sigs.split!r}")
    if not sigs._whole or sigs.n_samples != store.n_samples(sigs.split):
        raise ValueError(f"Only whole-split signatures can be saved; these are a subset of "
                         f"{sigs.n_samples} of split {sigs.split!r}'s samples.")
    _write_signatures(store, name, sigs.split, sigs.layers, sigs.cluster_ids, sigs.distances,
                      sigs.client, store.fingerprint(sigs.split))


def _write_signatures(store: ActivationStore, name: str, split: str, layers: list[str],
                      cluster_ids: Any, distances: Any, client: Any,
                      fingerprint: dict[str, Any]) -> None:
    """Compute the dask arrays ``cluster_ids`` and ``distances`` on the workers, each writing
    its blocks into a temporary group moved to ``signatures_path(name, split)`` once whole
    (deleted on failure). ``fingerprint`` is the split's when the arrays' reading began: the
    split must still have it once they are written."""
    import dask.array as da

    tmp = f"{signatures_path(name)}/.new-{split}-{uuid.uuid4().hex[:8]}"
    group = store.group(tmp, create=True)
    assert group is not None
    try:
        rows = cluster_ids.chunks[0][0]
        arrays = [a.rechunk((rows, -1)) for a in (cluster_ids, distances)]
        targets: list[Any] = [group.create_array(key, shape=arr.shape, dtype=arr.dtype,
                                      chunks=(rows, arr.shape[1]), fill_value=0,
                                      **array_options())
                   for key, arr in zip(("cluster_ids", "distances"), arrays, strict=True)]
        client.compute(da.store(arrays, targets, lock=False, compute=False), sync=True)
        check_unchanged(store, split, fingerprint)
        group.attrs.update(to_json_safe({
            "split": split, "layers": layers, "fingerprint": fingerprint, "created": now_iso(),
        }))
        store.replace_group(tmp, signatures_path(name, split))
    except BaseException:
        store.delete(tmp)
        raise
