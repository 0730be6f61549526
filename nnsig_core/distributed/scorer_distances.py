"""Signature scores on a Dask cluster: the layers read, and distances computed, per block.

:class:`~nnsig_core.diagnostics.SignatureScorer` delegates here when it has a
client (given, or the active one). What runs where:

- On the workers, per block of a split: reading every analysed layer
  (``from_zarr``), its features, the distances of each sample to *every*
  centroid and from them the distances to its own centroid and to the nearest
  centroid of its predicted class and of another class (the cosine geometry
  by default).
- On the driver: the training statistics (path counts, cluster compositions,
  transition counts, the sorted training distances behind the empirical
  p-values, the leave-one-out reference scores) are exact only with every
  training distance, so they are fitted from the training samples' compact
  signature vectors (per layer an int64 id and three float64 distances, and
  the label: 32 bytes per sample and layer, plus 8); for the same reason
  (they are as large as the training set, too large to ship to every worker)
  the component and combined scores of the scored split are computed here from
  its compact vectors, which come back from the workers.

The scorer's neighbour statistics are in :mod:`~nnsig_core.distributed.neighbours`,
the baselines in :mod:`~nnsig_core.distributed.baselines`. The numbers are
those of the single-process code up to float64 rounding
(``tests/test_distributed_analysis.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._params import validate_params
from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.diagnostics.geometry import (
    Distances,
    block_distances,
    centroids,
    cluster_owners,
)
from nnsig_core.distributed.reductions import SplitBlocks, fit_mask, masked_rows, split_counts
from nnsig_core.execute.blocks import row_slices
from nnsig_core.execute.dask_blocks import broadcast
from nnsig_core.store import ActivationStore, open_store


class _Layers:
    """What a block needs of a fitted analysis: its layers and clusterers (no caches)."""

    def __init__(self, analysis: Any) -> None:
        self.layers = list(analysis.layers_)
        self.clusterers = {n: analysis.clusterers_[n] for n in self.layers}


def _block_distances(raws: Sequence[np.ndarray], ids: np.ndarray, preds: np.ndarray,
                     mask: np.ndarray | None, lite: _Layers, owners: Any,
                     cosine: bool) -> np.ndarray:
    """``(rows, L, 3)``: :func:`~nnsig_core.diagnostics.geometry.block_distances` of every
    layer, slice by slice of the block."""
    ids = np.asarray(ids, dtype=np.int64)
    c = np.asarray(preds, dtype=np.int64)
    keep = slice(None) if mask is None else np.asarray(mask, dtype=bool)
    ids, c = ids[keep], c[keep]
    out = np.empty((ids.shape[0], len(lite.layers), 3))
    for j, name in enumerate(lite.layers):
        lc = lite.clusterers[name]
        raw = np.asarray(raws[j])
        block = raw.reshape(raw.shape[0], -1)[keep]
        centers = centroids(lc, cosine)
        for sl in row_slices(block.shape[0], block.shape[1]):
            out[sl, j, 0], out[sl, j, 1], out[sl, j, 2] = block_distances(
                block[sl].astype(np.float32, copy=False), lc, centers, ids[sl, j], c[sl],
                owners[j], cosine)
    return out


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

    validate_params(scorer, scorer._nnsig_constraints)
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
    parts = [delayed(masked_rows)(i, m) for i, m in zip(ids_b, masks, strict=True)]
    parts += [delayed(masked_rows)(y, m) for y, m in zip(blocks.meta_blocks("labels"), masks,
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
            [delayed(masked_rows)(d, m) for d, m in zip(_aligned(blocks, sigs.distances), masks,
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


def split_vectors(scorer: Any, store: Any, split: str,
                  client: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, Distances]:
    """What ``SignatureScorer._split_components`` needs of a split, with the layers read on the
    cluster: its cluster ids, labels, predictions and distances (computed per block on the
    workers; 40 bytes per sample and layer come back). The components are computed by the
    scorer from them, with its training statistics, which are as large as the training set
    and so are not shipped to the workers."""
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
        d = Distances(dist[:, :, 0], dist[:, :, 1], dist[:, :, 2])
    else:
        d = Distances(dist[:, :, 0], np.full(dist.shape[:2], np.nan),
                      np.full(dist.shape[:2], np.nan))
    return ids_all, np.asarray(got[-1], dtype=np.int64), preds_all, d
