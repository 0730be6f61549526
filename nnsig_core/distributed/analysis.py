"""``SignatureAnalysis`` on a Dask cluster: fit, transform, signatures and save.

:class:`~nnsig_core.analysis.SignatureAnalysis` delegates here when it has a
client (given, or the active one). The estimator's state after a distributed
fit is the same as after a single-process fit (the same attributes, saved
and loaded the same way), with ``method_ == "distributed"`` for every layer.

Per layer, the fit runs on the cluster (:mod:`.reductions`, :mod:`.features`,
:mod:`.kmeans`):

1. the fit rows (``only_correct``, ``classes``) as a boolean mask per block,
   computed on the workers from the labels and predictions; only their count
   per block reaches the driver;
2. the discretizer, then the PCA, each one reduction (or a few);
3. the features are kept in the workers' memory when they take at most
   :data:`PERSIST_FRACTION` of the cluster's memory limit, else read again
   from the store at every pass (out of core);
4. k-means++ on a sample, Lloyd's iterations, one final assignment that
   gives the counts, the composition, the inertia and each cluster's first
   fit row (the canonical order).

The layers are fitted at the same time (one driver thread each, at most
:data:`MAX_CONCURRENT_LAYERS`): a Lloyd iteration waits for a round trip to
the workers, which the other layers' tasks fill; the features kept in memory
share one budget.

Transform assigns every sample of a split with ``map_blocks`` over each layer
read by ``dask.array.from_zarr`` and returns :class:`~nnsig_core.analysis.Signatures` over dask arrays. When the
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
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import validate_params
from nnsig_core._util import now_iso, to_json_safe
from nnsig_core._warnings import warn
from nnsig_core.analysis import persist
from nnsig_core.analysis.assign import assign_nearest
from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.errors import TooFewSamplesError
from nnsig_core.analysis.lloyd import (
    canonical_from_first,
    final_assignment,
    fit_lloyd,
    sample_ranks,
)
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.source import check_unchanged
from nnsig_core.distributed.features import DiscretizeOnly, fit_discretizer, fit_pca
from nnsig_core.distributed.kmeans import FitRows, _select
from nnsig_core.distributed.reductions import (
    SplitBlocks,
    fit_mask,
    n_classes_of,
    require_rows,
    split_counts,
)
from nnsig_core.execute.dask_blocks import broadcast
from nnsig_core.store import ActivationStore, open_store
from nnsig_core.store.format import array_options, scores_path, signatures_path

log = logging.getLogger("nnsig")

#: Share of the cluster's total memory limit the fit's features may occupy in memory.
PERSIST_FRACTION = 0.25
#: Layers fitted at the same time.
MAX_CONCURRENT_LAYERS = 8
#: scikit-learn's KMeans defaults, which the single-process exact path uses.


def _memory_limit(client: Any) -> int:
    workers = client.scheduler_info().get("workers", {}).values()
    return int(sum(int(w.get("memory_limit") or 0) for w in workers))


# ---------------------------------------------------------------------------- fit
class _Budget:
    """Bytes of features the layers fitted at the same time may keep in the workers' memory."""

    def __init__(self, total: float) -> None:
        self.left = float(total)
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self.lock:
            if nbytes > self.left:
                return False
            self.left -= nbytes
            return True

    def give(self, nbytes: int) -> None:
        with self.lock:
            self.left += nbytes


def fit_layer(lc: LayerClusterer, rows: FitRows, name: str, n_classes: int,
              client: Any, budget: _Budget | None = None) -> np.ndarray:
    """Fit ``lc`` on the cluster; returns the fit composition (clusters x classes).

    The features are kept in the workers' memory when ``budget`` (default: a
    :data:`PERSIST_FRACTION` of the cluster's memory limit) allows."""
    validate_params(lc, lc._nnsig_constraints)
    k, n, f = int(lc.n_clusters), rows.n, rows.n_features
    if n < k:
        raise TooFewSamplesError(
            f"Layer {name!r}: {n} sample(s) selected for fitting but n_clusters={k}. "
            f"Lower n_clusters to at most {n}, or fit on more samples "
            "(more data, only_correct=False, or a larger class subset)."
        )
    t0 = time.perf_counter()
    lc.n_features_in_ = f
    lc.discretizer_ = (fit_discretizer(lc.discretizer, rows, lc.random_state)
                       if lc.discretizer is not None else None)
    lc.reducer_ = None
    n_comp = lc._n_components(n, f, name)
    if n_comp is not None:
        lc.reducer_ = fit_pca(n_comp, rows, DiscretizeOnly(lc.discretizer_), lc.random_state)
    d = n_comp or f
    budget = budget or _Budget(PERSIST_FRACTION * _memory_limit(client))
    persist = budget.take(n * d * 4)
    log.info("Layer %r: %d samples x %d features on the cluster, features %s", name, n, d,
             "kept in the workers' memory" if persist else "read from the store at every pass")
    feats = rows.features(lc, persist)
    try:
        sample = rows.sample(lc, sample_ranks(n, d, k, lc.random_state, lc._sample_bytes()))
        reduce = rows.reducer(feats)
        result = fit_lloyd(reduce, sample, n, lambda X, n_init: lc._kmeans(X, k, name, n_init),
                           name=name)
        del sample
        final = final_assignment(reduce, result, n_classes)
    finally:
        if persist:
            client.cancel([f for b in feats for f in _futures(b)])
            budget.give(n * d * 4)
    order = canonical_from_first(final.first, result.centers)
    lc.method_ = "distributed"
    lc.cached_raw_ = bool(persist)
    lc.cluster_centers_ = np.ascontiguousarray(result.centers[order], dtype=np.float32)
    lc.fit_counts_ = final.counts[order].astype(np.int64)
    lc.inertia_ = final.inertia
    lc.n_fit_samples_ = n
    lc.n_iter_ = result.n_iter
    n_empty = int((lc.fit_counts_ == 0).sum())
    if n_empty:
        warn(f"Layer {name!r}: {n_empty} of {k} clusters hold no fit sample (too few distinct "
             "activation patterns?); consider fewer clusters.")
    log.info("Fitted layer %r on the cluster (%d Lloyd iterations) in %.2f s", name,
             result.n_iter, time.perf_counter() - t0)
    return final.composition[order]


def _futures(obj: Any) -> list[Any]:
    from distributed import futures_of

    return list(futures_of(obj))


def fit_distributed(analysis: Any, store: Any, split: str, classes: Iterable[int] | None,
                    client: Any) -> Any:
    """``analysis.fit(store, split, classes=classes)`` on the cluster of ``client``."""
    from dask import delayed

    validate_params(analysis, analysis._nnsig_constraints)
    store = open_store(store)
    require_rows(store, split)
    before = store.fingerprint(split)
    disc = analysis._discretizer_template()
    layers = analysis._resolve_layers(store, split)
    ks = analysis._layer_clusters(layers)
    fit_classes = None if classes is None else sorted({int(c) for c in classes})
    blocks = SplitBlocks(client, store, split)
    counts = split_counts(blocks)
    masks, sizes = fit_mask(blocks, counts, fit_classes, analysis.only_correct)
    n_fit = int(sum(sizes))
    too_many = [(n, k) for n, k in zip(layers, ks, strict=False) if k > n_fit]
    if too_many:
        desc = ", ".join(f"{n!r}: {k}" for n, k in too_many)
        raise TooFewSamplesError(
            f"Only {n_fit} sample(s) of split {split!r} are selected for fitting, fewer "
            f"than the clusters asked for ({desc}). Lower n_clusters to at most {n_fit}, "
            "or fit on more samples (only_correct=False, more classes, more data)."
        )
    n_classes = n_classes_of(store, split, counts)
    shapes = {d["name"]: list(d["shape"]) for d in store.layer_info(split)}
    labels = blocks.meta_blocks("labels")
    clusterers: dict[str, LayerClusterer] = {}
    jobs = []
    for name, k in zip(layers, ks, strict=True):
        raw = [delayed(_select, pure=True)(r, m, lo, lab) for r, m, (lo, _), lab in
               zip(blocks.layer_blocks(name), masks, blocks.bounds, labels, strict=True)]
        rows = FitRows(client, raw, sizes, int(np.prod(shapes[name], dtype=np.int64)))
        clusterers[name] = LayerClusterer(
            n_clusters=k, discretizer=disc, reduce=analysis.reduce,
            memory_limit=analysis.memory_limit, random_state=analysis.random_state,
            n_init=analysis.n_init, progress=analysis.progress,
        )
        jobs.append((clusterers[name], rows, name))
    # The layers are fitted at the same time: each Lloyd iteration waits for a round trip
    # to the workers, which the other layers' tasks fill.
    budget = _Budget(PERSIST_FRACTION * _memory_limit(client))
    with ThreadPoolExecutor(max_workers=min(len(jobs), MAX_CONCURRENT_LAYERS),
                            thread_name_prefix="nnsig-layer") as pool:
        compositions = list(pool.map(
            lambda job: fit_layer(*job, n_classes, client, budget), jobs))
    client.cancel(masks)
    check_unchanged(store, split, before)
    present = np.flatnonzero(compositions[0].sum(axis=0)) if compositions else []
    analysis.layers_ = layers
    analysis.clusterers_ = clusterers
    analysis.n_clusters_ = ks
    analysis.fit_split_ = split
    analysis.fit_classes_ = fit_classes
    analysis.classes_ = [int(c) for c in present]
    analysis.n_fit_samples_ = n_fit
    analysis.n_classes_ = n_classes
    analysis.fit_composition_ = compositions
    analysis.layer_shapes_ = [shapes[n] for n in layers]
    analysis.name_ = None
    analysis.prefetched_ = []
    analysis._cache = {}
    return analysis


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
        splits = [s for s in store.splits if store.is_complete(s)]
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
        targets = [group.create_array(key, shape=arr.shape, dtype=arr.dtype,
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
