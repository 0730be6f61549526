"""The diagnostics on a Dask cluster: signature scores and baselines, computed per block.

:class:`~nnsig_core.diagnostics.SignatureScorer` and
:class:`~nnsig_core.diagnostics.Baselines` delegate here when they have a
client (given, or the active one). What runs where:

- On the workers, per block of a split: reading every analysed layer
  (``from_zarr``), its features, the distances of each sample to *every*
  centroid and from them the distances to its own centroid and to the nearest
  centroid of its predicted class and of another class (the cosine geometry
  by default). Baselines: the Mahalanobis class sums and scatter as a tree
  reduction (merged in float64 with Chan's update), and each block's baseline
  scores (max softmax and energy from the outputs, Mahalanobis, k-NN, patterns).
- On the driver: the training statistics (path counts, cluster compositions,
  transition counts, the sorted training distances behind the empirical
  p-values, the leave-one-out reference scores) are exact only with every
  training distance, so they are fitted from the training samples' compact
  signature vectors (per layer an int64 id and three float64 distances, and
  the label: 32 bytes per sample and layer, plus 8); for the same reason
  (they are as large as the training set, too large to ship to every worker)
  the component and combined scores of the scored split are computed here from
  its compact vectors, which come back from the workers. The k-NN reference
  rows and the activation patterns are the bounded random subsample the
  single-process baselines keep. The scores (one float per sample and score)
  are the result.

The scorer's neighbour statistics (:mod:`~nnsig_core.diagnostics.neighbours`,
behind the default ``combined`` score) are fitted and searched per block on
the workers too (:func:`fit_neighbours`, :func:`neighbour_scores_on`): the
reference rows of each layer are read, normalised and reduced there; only
the rows the principal axes are computed from (the single-process fit's
draws, at most ``pca_rows``), the per-block sums of the normalised rows and
the reduced reference rows (bounded by ``memory_limit``) come back. The
fitted state (mean, axes, reference rows per class) is a bounded model like
the centroids: it is computed on the driver and broadcast, and each block of
a scored split (or of the fit split's reference and misclassified samples,
leave-one-out) returns its samples' own and other distances, two floats per
sample and layer.

The numbers are those of the single-process code up to float64 rounding
(``tests/test_distributed_analysis.py`` compares them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import validate_params
from nnsig_core._util import l2_normalise
from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.diagnostics.detectors import (
    ActivationPatternMonitor,
    KNNDistance,
    MahalanobisDistance,
    energy_score,
    max_softmax_score,
    pack_patterns,
)
from nnsig_core.diagnostics.geometry import Distances, cluster_owners, nearest_distances
from nnsig_core.diagnostics.reference import LayerNeighbours, normalise_rows, reduce_rows
from nnsig_core.distributed.reductions import (
    SplitBlocks,
    _flat_checked,
    _LayerCheck,
    broadcast,
    fit_mask,
    release,
    row_slices,
    smallest_worker_memory,
    split_counts,
    tree_reduce,
)
from nnsig_core.store import ActivationStore, open_store

__all__ = ["fit_baselines", "fit_neighbours", "fit_scorer", "neighbour_scores_on",
           "score_baselines", "split_components"]

log = logging.getLogger("nnsig")


# ---------------------------------------------------------------------------- signature scores
class _Layers:
    """What a block needs of a fitted analysis: its layers and clusterers (no caches)."""

    def __init__(self, analysis: Any) -> None:
        self.layers = list(analysis.layers_)
        self.clusterers = {n: analysis.clusterers_[n] for n in self.layers}


def _block_distances(raws: Sequence[np.ndarray], ids: np.ndarray, preds: np.ndarray,
                     mask: np.ndarray | None, lite: _Layers, owners: Any,
                     cosine: bool) -> np.ndarray:
    """``(rows, L, 3)``: distance to the assigned centroid, to the nearest of the predicted
    class's clusters and of another class's, per layer (``geometry.split_distances``'s math)."""
    ids = np.asarray(ids, dtype=np.int64)
    c = np.asarray(preds, dtype=np.int64)
    keep = slice(None) if mask is None else np.asarray(mask, dtype=bool)
    ids, c = ids[keep], c[keep]
    out = np.empty((ids.shape[0], len(lite.layers), 3))
    for j, name in enumerate(lite.layers):
        lc = lite.clusterers[name]
        raw = np.asarray(raws[j])
        block = raw.reshape(raw.shape[0], -1)[keep]
        centers = np.asarray(lc.cluster_centers_, dtype=np.float64)
        if cosine:
            centers = l2_normalise(centers)
        c2 = (centers**2).sum(axis=1)
        for sl in row_slices(block.shape[0], block.shape[1]):
            F = lc.features(block[sl].astype(np.float32, copy=False)).astype(np.float64)
            if cosine:
                F = l2_normalise(F)
            D = np.sqrt(np.maximum((F**2).sum(1)[:, None] - 2 * F @ centers.T + c2[None], 0))
            out[sl, j, 0] = D[np.arange(D.shape[0]), ids[sl, j]]
            out[sl, j, 1], out[sl, j, 2] = nearest_distances(owners[j], D, c[sl])
    return out


def _take(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    v = np.asarray(values)
    return v if mask is None else v[np.asarray(mask, dtype=bool)]


def _aligned(blocks: SplitBlocks, arr: Any) -> list[Any]:
    return list(arr.rechunk((blocks.block_rows,) + arr.chunks[1:]).to_delayed().ravel())


def _split_distances(client: Any, analysis: Any, store: ActivationStore, split: str,
                     sigs: Any, owners: Any, cosine: bool, masks: list[Any] | None,
                     ) -> list[Any]:
    """Delayed per-block distances ``(rows, L, 3)`` of a split (the rows of ``masks``)."""
    from dask import delayed

    blocks = SplitBlocks(client, store, split)
    lite = broadcast(client, _Layers(analysis))
    own = broadcast(client, owners)
    layers = [list(blocks.layer(n).to_delayed().ravel()) for n in analysis.layers_]
    ids = _aligned(blocks, sigs.cluster_ids)
    preds = blocks.meta_blocks("predictions")
    out = []
    for i in range(blocks.n_blocks):
        m = masks[i] if masks is not None else None
        out.append(delayed(_block_distances)([lay[i] for lay in layers], ids[i], preds[i], m,
                                             lite, own, cosine))
    return out


def fit_scorer(scorer: Any, analysis: Any, store: Any,
               client: Any) -> tuple[np.ndarray, np.ndarray, Distances]:
    """What ``SignatureScorer.fit(analysis, store)`` needs of the layers, read on the cluster:
    the training samples' cluster ids ``(n, L)``, labels ``(n,)`` and distances (to the
    assigned centroid, and to the nearest of the own and of another class's, per layer, NaN
    when not needed). The scorer fits its statistics from them."""
    from dask import delayed

    validate_params(scorer, scorer._parameter_constraints)
    check_is_fitted(analysis, "clusterers_")
    store = open_store(store)
    split = analysis.fit_split_
    sigs = analysis.signatures(store, split, client=client)
    if not sigs.has_labels:
        raise MissingLabelsError(
            f"The fit split {split!r} has no labels; the diagnostics need the training "
            "samples' classes."
        )
    blocks = SplitBlocks(client, store, split)
    masks, _ = fit_mask(blocks, split_counts(blocks), analysis.fit_classes_, only_correct=True)
    ids_b = _aligned(blocks, sigs.cluster_ids)
    parts = [delayed(_take)(i, m) for i, m in zip(ids_b, masks, strict=True)]
    parts += [delayed(_take)(y, m) for y, m in zip(blocks.meta_blocks("labels"), masks,
                                                   strict=True)]
    got = client.compute(parts, sync=True)
    ids = np.concatenate(got[: len(masks)]).astype(np.int64)
    y = np.concatenate(got[len(masks) :]).astype(np.int64)
    owners = cluster_owners(ids, y, analysis.n_clusters_)
    if scorer._needs_features():
        dist = np.concatenate(client.compute(_split_distances(
            client, analysis, store, split, sigs, owners, scorer.geometry == "cosine", masks),
            sync=True))
        assigned, nearest = dist[:, :, 0], (dist[:, :, 1], dist[:, :, 2])
    else:
        assigned = np.concatenate(client.compute(
            [delayed(_take)(d, m) for d, m in zip(_aligned(blocks, sigs.distances), masks,
                                                  strict=True)], sync=True)).astype(np.float64)
        nearest = None
    client.cancel(masks)
    if nearest is None:
        nearest = (np.full(assigned.shape, np.nan), np.full(assigned.shape, np.nan))
    return ids, y, Distances(assigned, nearest[0], nearest[1])


def _signature_block(ids: np.ndarray, preds: np.ndarray, dist: np.ndarray | None,
                     plain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the component scores need of a block: ids, predictions and the distances (the
    three of the scorer's geometry, or the signatures' own)."""
    d = np.asarray(plain, np.float64)[:, :, None] if dist is None else dist
    return np.asarray(ids, np.int64), np.asarray(preds, np.int64), d


def split_components(scorer: Any, store: Any, split: str,
                     client: Any) -> tuple[dict[str, np.ndarray], Any]:
    """``SignatureScorer._split_components`` with the layers read on the cluster: the
    distances are computed per block on the workers and come back with the ids and
    predictions (40 bytes per sample and layer); the components are computed here with the
    scorer's training statistics, which are as large as the training set and so are not
    shipped to the workers. Returns the components and the split's labels and predictions."""
    from dask import delayed

    store = open_store(store)
    analysis = scorer.analysis_
    sigs = analysis.signatures(store, split, client=client)
    if list(sigs.layers) != scorer.layers_:
        raise ValueError(f"Signatures are over layers {sigs.layers}; the scorer was fitted "
                         f"on {scorer.layers_}.")
    blocks = SplitBlocks(client, store, split)
    ids = _aligned(blocks, sigs.cluster_ids)
    preds = blocks.meta_blocks("predictions")
    plain = _aligned(blocks, sigs.distances)
    dists: list[Any] = [None] * blocks.n_blocks
    if scorer._needs_features():
        dists = _split_distances(client, analysis, store, split, sigs, scorer.owners_,
                                 scorer.geometry == "cosine", None)
    parts = [delayed(_signature_block)(i, p, d, q)
             for i, p, d, q in zip(ids, preds, dists, plain, strict=True)]
    got = client.compute(parts + [blocks.meta("labels")], sync=True)
    ids_all = np.concatenate([g[0] for g in got[:-1]])
    preds_all = np.concatenate([g[1] for g in got[:-1]])
    dist = np.concatenate([g[2] for g in got[:-1]])
    if dist.shape[2] == 3:
        comp = scorer.stats_.scores(ids_all, dist[:, :, 0], preds_all,
                                    nearest=(dist[:, :, 1], dist[:, :, 2]))
    else:
        comp = scorer.stats_.scores(ids_all, dist[:, :, 0], preds_all)
    return comp, _LabelsOf(np.asarray(got[-1]), preds_all)


class _LabelsOf:
    """The labels and predictions of a split, as calibration reads them from signatures."""

    def __init__(self, labels: np.ndarray, predictions: np.ndarray) -> None:
        self.labels, self.predictions = labels, predictions


# ---------------------------------------------------------------------------- neighbour statistics
def _held(blocks: SplitBlocks, rows: np.ndarray | None) -> list[tuple[int, slice, Any]]:
    """Per block holding any of ``rows`` (sorted positions; None: all): its index, the slice of
    the rows' vectors it holds (of the split's when ``rows`` is None), and their positions in
    the block (None: all its rows)."""
    out: list[tuple[int, slice, Any]] = []
    for i, (lo, hi) in enumerate(blocks.bounds):
        if rows is None:
            out.append((i, slice(lo, hi), None))
            continue
        a, b = (int(v) for v in np.searchsorted(rows, [lo, hi]))
        if a < b:
            out.append((i, slice(a, b), None if b - a == hi - lo else rows[a:b] - lo))
    return out


def _compute_by_name(client: Any, parts: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Compute every list of delayed values of ``parts`` in one go, results by key."""
    flat = [p for v in parts.values() for p in v]
    got = client.compute(flat, sync=True)
    out, o = {}, 0
    for name, v in parts.items():
        out[name], o = got[o : o + len(v)], o + len(v)
    return out


def _pca_block(raw: np.ndarray, lo: int, idx: np.ndarray | None, check: _LayerCheck,
               take: np.ndarray, with_sum: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A block's normalised reference rows at ``take`` (positions among them) and, with
    ``with_sum``, the float64 sum of all of them."""
    U = normalise_rows(_flat_checked(raw, lo, check, idx))
    return U[take], (U.sum(axis=0, dtype=np.float64) if with_sum else None)


def _reduced_block(raw: np.ndarray, lo: int, idx: np.ndarray | None, check: _LayerCheck,
                   model: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
    return reduce_rows(_flat_checked(raw, lo, check, idx), *model)


def fit_neighbours(neighbours: Any, store: Any, split: str, rows: np.ndarray, y: np.ndarray,
                   layers: Sequence[str], client: Any) -> dict[str, LayerNeighbours]:
    """``ClassNeighbours.fit``'s layers read and reduced on the cluster, from its reference
    rows ``rows`` (sorted positions in ``split``, already subsampled) of classes ``y``.

    Two passes over the blocks holding reference rows, all layers together. The first brings
    back, per layer, the normalised rows the mean and axes are computed from (the
    single-process fit's draws: at most ``pca_rows``) and, when the mean is taken over every
    reference row, each block's float64 sum of them; the axes are computed here and
    broadcast. The second brings back the reduced reference rows (bounded by
    ``memory_limit``).
    """
    from dask import delayed

    store = open_store(store)
    blocks = SplitBlocks(client, store, split)
    held = _held(blocks, rows)
    n, r = int(rows.size), int(neighbours.n_components)
    checks, raws, pca_parts, plans = {}, {}, {}, {}
    for name in layers:
        d = int(np.prod(store.activations(split, name).shape[1:], dtype=np.int64))
        fits = neighbours._fits(n, d)
        if fits:
            pick = neighbours._svd_pick(n) if d > r else np.empty(0, np.int64)
            pick = np.arange(n) if pick is None else pick
        else:
            pick = neighbours._pca_pick(n, d, name)
        plans[name] = fits
        checks[name] = broadcast(client, _LayerCheck(store, split, name))
        raws[name] = blocks.layer(name).to_delayed().ravel()
        pca_parts[name] = []
        for i, sl, idx in held:
            a, b = np.searchsorted(pick, [sl.start, sl.stop])
            if fits or a < b:
                pca_parts[name].append(delayed(_pca_block)(
                    raws[name][i], blocks.bounds[i][0], idx, checks[name],
                    pick[a:b] - sl.start, fits))
    got = _compute_by_name(client, pca_parts)
    models, fitted = {}, {}
    for name in layers:
        S = np.concatenate([g[0] for g in got[name]])
        if plans[name]:
            mean = (np.sum([g[1] for g in got[name]], axis=0) / n).astype(np.float32)
            fitted[name] = (mean, *neighbours._axes(S, mean))
        else:
            fitted[name] = neighbours._pca(S)
        models[name] = broadcast(client, fitted[name][:2])
    reduced = {name: [delayed(_reduced_block)(raws[name][i], blocks.bounds[i][0], idx,
                                              checks[name], models[name])
                      for i, _, idx in held] for name in layers}
    got = _compute_by_name(client, reduced)
    release(client, *checks.values(), *models.values())
    return {name: neighbours._layer(fitted[name][0], fitted[name][1], np.concatenate(got[name]),
                                    rows, y, fitted[name][2]) for name in layers}


def _neighbour_block(raw: np.ndarray, lo: int, idx: np.ndarray | None, check: _LayerCheck,
                     ln: LayerNeighbours, preds: np.ndarray, n_neighbors: int,
                     leave_one_out: bool, block_bytes: int) -> np.ndarray:
    """``(m, 2)``: the own and other distances of a block's rows ``idx`` (None: all)."""
    X = _flat_checked(raw, lo, check, idx)
    pos = None
    if leave_one_out:
        pos = lo + (np.arange(X.shape[0]) if idx is None else np.asarray(idx, dtype=np.int64))
    return np.column_stack(ln.own_other_of(X, preds, n_neighbors, pos, block_bytes))


def neighbour_scores_on(neighbours: Any, store: Any, split: str, rows: np.ndarray | None,
                        predictions: np.ndarray, n_neighbors: int, leave_one_out: bool,
                        block_bytes: int, client: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``neighbour_scores``' search on the cluster: each layer's fitted
    :class:`~nnsig_core.diagnostics.neighbours.LayerNeighbours` is broadcast and every block of
    the rows ``rows`` (sorted positions; None: all) is searched on a worker. Returns, per
    layer, the own and other distances (the only per-sample results that come back)."""
    from dask import delayed

    store = open_store(store)
    blocks = SplitBlocks(client, store, split)
    held = _held(blocks, None if rows is None else np.asarray(rows, dtype=np.int64))
    worker = smallest_worker_memory(client)
    if worker is not None:  # a distance matrix of at most 1/32 of a worker's memory
        block_bytes = max(1 << 20, min(int(block_bytes), worker // 32))
    shipped, parts = [], {}
    for name, ln in neighbours.layers_.items():
        model, check = broadcast(client, ln), broadcast(client, _LayerCheck(store, split, name))
        shipped += [model, check]
        raw = blocks.layer(name).to_delayed().ravel()
        parts[name] = [delayed(_neighbour_block)(raw[i], blocks.bounds[i][0], idx, check, model,
                                                 predictions[sl], n_neighbors, leave_one_out,
                                                 block_bytes) for i, sl, idx in held]
    got = _compute_by_name(client, parts)
    release(client, *shipped)
    out = {}
    for name, g in got.items():
        v = np.concatenate(g) if g else np.empty((0, 2))
        out[name] = (v[:, 0], v[:, 1])
    return out


# ---------------------------------------------------------------------------- baselines
#: ``diagnostics.baselines``' names (not imported: it imports this module).
BASELINES = ("msp", "energy", "mahalanobis", "knn", "pattern")
_FEATURE_BASELINES = ("mahalanobis", "knn", "pattern")


def _subsample(n: int, cap: int, rng: np.random.Generator, what: str, layer: str,
               used: bool = True) -> np.ndarray:
    """The single-process baselines' training subsample: the same draws from the same seed
    (drawn even for a baseline not computed, so the next one's draws stay the same)."""
    keep = np.ones(n, dtype=bool)
    cap = max(int(cap), 1)
    if n > cap:
        keep[:] = False
        keep[rng.choice(n, size=cap, replace=False)] = True
        if used:
            log.warning("The %s baseline keeps %d of %d training samples of layer %r (a "
                        "random subsample) to stay within memory_limit; raise memory_limit to "
                        "use all.", what, cap, n, layer)
    return keep


def _maha_part(block: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    block, y = np.asarray(block), np.asarray(y, dtype=np.int64)
    return _maha_merge(*[_maha_slice(block[sl], y[sl])
                         for sl in row_slices(block.shape[0], block.shape[1])])


def _maha_slice(block: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    X = np.asarray(block, dtype=np.float64)
    if X.shape[0] == 0:
        return {"n": 0}
    mean = X.mean(axis=0)
    C = X - mean
    classes, inv = np.unique(y, return_inverse=True)
    sums = np.zeros((classes.size, X.shape[1]))
    np.add.at(sums, inv.reshape(-1), X)
    return {"n": X.shape[0], "mean": mean, "m2": C.T @ C,
            "sums": dict(zip(classes.tolist(), sums, strict=True)),
            "counts": dict(zip(classes.tolist(), np.bincount(inv.reshape(-1)).tolist(),
                               strict=True))}


def _maha_merge(*parts: dict[str, Any]) -> dict[str, Any]:
    from nnsig_core.distributed.features import merge_moments

    out = merge_moments(*parts)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for p in parts:
        for c, v in p.get("sums", {}).items():
            sums[c] = sums.get(c, 0) + v
            counts[c] = counts.get(c, 0) + p["counts"][c]
    out["sums"], out["counts"] = sums, counts
    return out


def _fit_rows(block: np.ndarray, mask: np.ndarray, keep: np.ndarray, y: np.ndarray,
              threshold: float, what: str) -> Any:
    X = np.asarray(block).reshape(block.shape[0], -1)[np.asarray(mask, dtype=bool)]
    X = X[keep].astype(np.float32, copy=False)
    return X if what == "knn" else pack_patterns(X > threshold)


def fit_baselines(baselines: Any, store: Any, split: str, mask: Any, client: Any) -> Any:
    """``Baselines.fit(store, split, mask)`` with the layer read on the cluster."""
    from dask import delayed

    validate_params(baselines, baselines._parameter_constraints)
    store = open_store(store)
    blocks = SplitBlocks(client, store, split)
    counts = split_counts(blocks)
    if mask is None:
        masks, sizes = fit_mask(blocks, counts, None, only_correct=True)
    else:
        import dask.array as da

        m = da.from_array(np.asarray(mask, dtype=bool), chunks=blocks.block_rows)
        masks = list(m.to_delayed().ravel())
        sizes = [int(np.asarray(mask[lo:hi], dtype=bool).sum()) for lo, hi in blocks.bounds]
    if sum(sizes) == 0:
        raise ValueError(f"No sample of split {split!r} is selected to fit the baselines.")
    b = baselines
    b.layer_ = b.layer or store.layers(split)[-1]
    ys = client.compute([delayed(_take)(y, m) for y, m in
                         zip(blocks.meta_blocks("labels"), masks, strict=True)], sync=True)
    y = np.concatenate(ys).astype(np.int64)
    b.fit_split_, b.n_fit_samples_ = split, int(y.size)
    b.classes_ = sorted(int(c) for c in np.unique(y))
    if any(w in b.which for w in _FEATURE_BASELINES):
        budget = b._budget()
        raw = list(blocks.layer(b.layer_).to_delayed().ravel())
        d = int(np.prod(store.activations(split, b.layer_).shape[1:], dtype=np.int64))
        rng = np.random.default_rng(b.random_state)
        knn_keep = _subsample(y.size, (budget // 2) // (4 * d), rng, "k-NN", b.layer_,
                              "knn" in b.which)
        pat_keep = _subsample(y.size, (budget // 2) // (8 * (d // 64 + 1)), rng,
                              "activation-pattern", b.layer_, "pattern" in b.which)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        sel = [delayed(_fit_rows_all)(r, m) for r, m in zip(raw, masks, strict=True)]
        memory = max(budget // 4, 1)
        if "mahalanobis" in b.which:
            ys_d = [delayed(_take)(yb, m) for yb, m in zip(blocks.meta_blocks("labels"), masks,
                                                          strict=True)]
            s = client.compute(tree_reduce([delayed(_maha_part)(x, yy) for x, yy in
                                            zip(sel, ys_d, strict=True)], _maha_merge)).result()
            maha = MahalanobisDistance(b.rcond)
            maha._shift = s["mean"]
            maha._moment = s["m2"]
            maha._sums = {int(c): v - s["counts"][c] * s["mean"] for c, v in s["sums"].items()}
            maha._counts = {int(c): int(v) for c, v in s["counts"].items()}
            maha._dirty = True
            b.mahalanobis_ = maha._finish()
        for what, keep in (("knn", knn_keep), ("pattern", pat_keep)):
            if what not in b.which:
                continue
            parts = [delayed(_fit_rows)(r, m, keep[starts[i]:starts[i + 1]], None,
                                        b.threshold, what)
                     for i, (r, m) in enumerate(zip(raw, masks, strict=True))]
            rows = np.concatenate(client.compute(parts, sync=True))
            if what == "knn":
                b.knn_ = KNNDistance(b.k, memory).fit(rows)
                b.n_knn_samples_ = int(keep.sum())
            else:
                b.pattern_ = ActivationPatternMonitor(b.threshold, memory).fit_packed(
                    rows, y[keep], d)
                b.n_pattern_samples_ = int(keep.sum())
    if mask is None:
        client.cancel(masks)
    return b


def _fit_rows_all(block: np.ndarray, mask: np.ndarray) -> np.ndarray:
    X = np.asarray(block).reshape(block.shape[0], -1)
    return X[np.asarray(mask, dtype=bool)].astype(np.float32, copy=False)


def _baseline_block(logits: np.ndarray | None, block: np.ndarray | None, preds: np.ndarray,
                    b: Any, keys: list[str]) -> np.ndarray:
    out = {}
    if logits is not None:
        z = np.asarray(logits)
        if "msp" in keys:
            out["msp"] = max_softmax_score(z)
        if "energy" in keys:
            out["energy"] = energy_score(z)
    if block is not None:
        X = np.asarray(block).reshape(block.shape[0], -1).astype(np.float32, copy=False)
        if "mahalanobis" in keys:
            out["mahalanobis"] = b.mahalanobis_.score(X)
        if "knn" in keys:
            out["knn"] = b.knn_.score(X)
        if "pattern" in keys:
            out["pattern"] = b.pattern_.score(X, np.asarray(preds))
    return np.column_stack([np.asarray(out[k], dtype=np.float64) for k in keys])


def score_baselines(baselines: Any, store: Any, split: str, client: Any) -> dict[str, np.ndarray]:
    """``Baselines.score(store, split)`` with the split read and scored on the cluster."""
    from dask import delayed

    check_is_fitted(baselines, "layer_", msg="Baselines are not fitted; call fit(store, split) "
                                             "first.")
    store = open_store(store)
    store.require_complete(split)
    blocks = SplitBlocks(client, store, split)
    keys = [k for k in BASELINES if k in baselines.which]
    if not keys or blocks.n == 0:
        return {k: np.empty(0) for k in keys}
    shipped = broadcast(client, baselines)
    logits = (blocks._from_zarr(store.outputs(split)).to_delayed().ravel()
              if {"msp", "energy"} & set(keys) else [None] * blocks.n_blocks)
    feats = (list(blocks.layer(baselines.layer_).to_delayed().ravel())
             if set(_FEATURE_BASELINES) & set(keys) else [None] * blocks.n_blocks)
    parts = [delayed(_baseline_block)(z, x, p, shipped, keys) for z, x, p in
             zip(logits, feats, blocks.meta_blocks("predictions"), strict=True)]
    values = np.concatenate(client.compute(parts, sync=True))
    release(client, shipped)
    return {k: values[:, i] for i, k in enumerate(keys)}
