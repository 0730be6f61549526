"""The baselines on a Dask cluster: fitted as reductions and scored per block.

:class:`~nnsig_core.diagnostics.Baselines` delegates here when it has a
client (given, or the active one): the Mahalanobis class sums and scatter
are a tree reduction on the workers (merged in float64 with Chan's update);
the k-NN reference rows and the activation patterns are the bounded random
subsample the single-process baselines keep (the same draws from the same
seed); each block's baseline scores (max softmax and energy from the outputs,
Mahalanobis, k-NN, patterns) are computed on a worker, and only the scores
(one float per sample and baseline) come back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import validate_params
from nnsig_core._warnings import warn
from nnsig_core.diagnostics.detectors import (
    ActivationPatternMonitor,
    KNNDistance,
    MahalanobisDistance,
    energy_score,
    max_softmax_score,
    pack_patterns,
)
from nnsig_core.distributed.reductions import SplitBlocks, fit_mask, masked_rows, split_counts
from nnsig_core.execute.blocks import row_slices
from nnsig_core.execute.dask_blocks import broadcast, release, tree_reduce
from nnsig_core.store import open_store

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
            warn(f"The {what} baseline keeps {cap} of {n} training samples of layer {layer!r} "
                 "(a random subsample) to stay within memory_limit; raise memory_limit to "
                 "use all.")
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
    from nnsig_core.analysis.pca import merge_moments

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
    """``Baselines.fit(store, split, mask=mask)`` with the layer read on the cluster."""
    from dask import delayed

    validate_params(baselines, baselines._nnsig_constraints)
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
    ys = client.compute([delayed(masked_rows)(y, m) for y, m in
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
            ys_d = [delayed(masked_rows)(yb, m) for yb, m in zip(blocks.meta_blocks("labels"), masks,
                                                          strict=True)]
            s = client.compute(tree_reduce([delayed(_maha_part)(x, yy) for x, yy in
                                            zip(sel, ys_d, strict=True)], _maha_merge)).result()
            maha = MahalanobisDistance(rcond=b.rcond)
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
                b.knn_ = KNNDistance(k=b.k, memory_limit=memory).fit(rows)
                b.n_knn_samples_ = int(keep.sum())
            else:
                b.pattern_ = ActivationPatternMonitor(
                    threshold=b.threshold, memory_limit=memory).fit_packed(rows, y[keep], d)
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
