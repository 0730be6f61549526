"""``SignatureAnalysis.fit`` on a Dask cluster: the fit rows, the feature map, the k-means.

Per layer (:func:`fit_layer`), with the kernels every driver shares:

1. the fit rows (``only_correct``, ``classes``) as a boolean mask per block,
   computed on the workers (:mod:`nnsig_core.analysis.selection`'s kernels);
   only their count per block reaches the driver;
2. the discretizer, then the PCA (:meth:`~nnsig_core.analysis.pca.PCAReducer.fit_reduce`),
   each one reduction (or a few);
3. the features are kept in the workers' memory when they take at most
   :data:`PERSIST_FRACTION` of the cluster's memory limit, else read again
   from the store at every pass (out of core);
4. :func:`~nnsig_core.analysis.lloyd.fit_lloyd` with its reductions on the
   workers, then one final assignment that gives the counts, the composition,
   the inertia and each cluster's first fit row (the canonical order).

The layers are fitted at the same time (one driver thread each, at most
:data:`MAX_CONCURRENT_LAYERS`): a Lloyd iteration waits for a round trip to
the workers, which the other layers' tasks fill; the features kept in memory
share one budget. The estimator's state after a distributed fit is that of a
single-process fit, with ``method_ == "distributed"`` for every layer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from nnsig_core._params import validate_params
from nnsig_core._warnings import warn
from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.errors import TooFewSamplesError
from nnsig_core.analysis.lloyd import (
    canonical_from_first,
    final_assignment,
    fit_lloyd,
    sample_ranks,
)
from nnsig_core.analysis.selection import check_enough_rows
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
from nnsig_core.store import open_store

log = logging.getLogger("nnsig")

#: Share of the cluster's total memory limit the fit's features may occupy in memory.
PERSIST_FRACTION = 0.25
#: Layers fitted at the same time.
MAX_CONCURRENT_LAYERS = 8


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
    check_enough_rows(split, n_fit, layers, ks)
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
            lambda job: fit_layer(job[0], job[1], job[2], n_classes, client, budget), jobs))
    client.cancel(masks)
    check_unchanged(store, split, before)
    present: Any = np.flatnonzero(compositions[0].sum(axis=0)) if compositions else []
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
