"""Distances of a split's samples to the analysis's centroids, in the scorer's geometry.

In the cosine geometry (the default) features and centroids are L2-normalised first.
:func:`split_distances` runs one kernel per block of rows, here or on a Dask cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core._util import l2_normalise
from nnsig_core.diagnostics.reference import LayerRows
from nnsig_core.execute.blocks import map_blocks, row_slices
from nnsig_core.store import ActivationStore


@dataclass
class Distances:
    """Per-sample distances ``(n, L)`` to the assigned centroid, the nearest of the predicted
    class's clusters (``own``) and of another class's (``other``); NaN when not computed."""

    assigned: np.ndarray
    own: np.ndarray
    other: np.ndarray


def cluster_owners(ids: np.ndarray, y: np.ndarray,
                   n_clusters: Sequence[int]) -> list[dict[int, np.ndarray]]:
    """Per layer, class -> its clusters: those whose training majority is the class, or, for
    a class that is the majority nowhere, every cluster holding one of its samples."""
    ids = np.asarray(ids, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    classes = np.unique(y)
    out = []
    for j in range(ids.shape[1]):
        K = max(int(n_clusters[j]), int(ids[:, j].max(initial=-1)) + 1)
        comp = np.zeros((K, classes.size), dtype=np.int64)
        np.add.at(comp, (ids[:, j], np.searchsorted(classes, y)), 1)
        filled = comp.sum(axis=1) > 0
        major = np.where(filled, comp.argmax(axis=1), -1)
        owners: dict[int, np.ndarray] = {}
        for ci, c in enumerate(classes):
            mine = np.flatnonzero(major == ci)
            if mine.size == 0:
                mine = np.flatnonzero(comp[:, ci] > 0)
            owners[int(c)] = mine
        out.append(owners)
    return out


def nearest_distances(owners: dict[int, np.ndarray], D: np.ndarray,
                      c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From the distances ``D`` (n, K) to one layer's centroids: the nearest of the predicted
    class's clusters (the farthest for a class never seen) and of the other classes'."""
    K = D.shape[1]
    mine = np.zeros(D.shape, dtype=bool)
    held = np.zeros(K, dtype=bool)
    for owned in owners.values():
        held[owned[owned < K]] = True
    for cls in np.unique(c):
        idx = owners.get(int(cls))
        if idx is not None and idx.size:
            r = np.flatnonzero(c == cls)
            mine[np.ix_(r, idx[idx < K])] = True
    own = np.where(mine, D, np.inf).min(axis=1)
    unseen = ~mine.any(axis=1)
    own[unseen] = D[unseen].max(axis=1)
    other = np.where(~mine & held[None, :], D, np.inf).min(axis=1)
    return own, other


def centroids(clusterer: Any, cosine: bool) -> tuple[np.ndarray, np.ndarray]:
    """A layer's centroids in the scorer's geometry (float64) and their squared norms."""
    centers = np.asarray(clusterer.cluster_centers_, dtype=np.float64)
    if cosine:
        centers = l2_normalise(centers)
    return centers, (centers**2).sum(axis=1)


def block_distances(block: np.ndarray, clusterer: Any, centers: tuple[np.ndarray, np.ndarray],
                    ids: np.ndarray, predictions: np.ndarray, owners: dict[int, np.ndarray],
                    cosine: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer's :class:`Distances` columns of a block of rows (the kernel of both drivers)."""
    C, c2 = centers
    F = clusterer.features(block)
    F = l2_normalise(F) if cosine else F.astype(np.float64)
    D = F @ C.T
    D *= -2
    D += np.einsum("ij,ij->i", F, F)[:, None]
    D += c2[None]
    np.sqrt(np.maximum(D, 0, out=D), out=D)
    own, other = nearest_distances(owners, D, predictions)
    return D[np.arange(D.shape[0]), ids], own, other


def _distance_part(keep: np.ndarray, preds: np.ndarray, ids: Any, plain: Any, *raws: Any,
                   lo: int, clusterers: Sequence[Any], owners: Any, cosine: bool,
                   reads: Sequence[LayerRows]) -> dict[str, Any]:
    """A block's kept rows: cluster ids ``(m, L)``, distances ``(m, L, 3)`` (assigned, own,
    other; without layers, the signatures' own ``plain`` and NaN)."""
    keep = np.asarray(keep, dtype=bool)
    ids = np.asarray(ids, dtype=np.int64)[keep]
    c = np.asarray(preds, dtype=np.int64)[keep]
    out = np.full((*ids.shape, 3), np.nan)
    if not raws:
        out[:, :, 0] = np.asarray(plain, dtype=np.float64)[keep]
    for j, (raw, lc) in enumerate(zip(raws, clusterers, strict=True)):
        centers = centroids(lc, cosine)
        width = int(np.prod(np.shape(raw)[1:], dtype=np.int64))
        done = 0
        # Slice by slice, the kept rows of each: no copy of the whole block's kept rows (on
        # a fit split, nearly all of it), only slice-sized temporaries.
        for sl in row_slices(keep.size, width):
            block = reads[j](raw[sl], lo + sl.start, keep[sl])
            got = slice(done, done + block.shape[0])
            done = got.stop
            out[got, j, 0], out[got, j, 1], out[got, j, 2] = block_distances(
                block, lc, centers, ids[got, j], c[got], owners[j], cosine)
    return {"ids": [ids], "dist": [out]}


def split_distances(analysis: Any, owners: Sequence[dict[int, np.ndarray]] | None,
                    store: ActivationStore, split: str, sigs: Any, predictions: np.ndarray,
                    keep: np.ndarray, cosine: bool, features: bool,
                    client: Any = None) -> tuple[np.ndarray, Distances]:
    """The cluster ids and :class:`Distances` of the samples of ``split`` where ``keep`` holds.

    With ``features`` each analysed layer is read once through the analysis's feature
    map; without, the distances are the signatures' own. ``client``: the driver (None: here).
    """
    layers = list(analysis.layers_) if features else []
    got = map_blocks(_distance_part, [keep, predictions, sigs.cluster_ids, sigs.distances,
                                      *[store.activations(split, n) for n in layers]],
                     client=client, clusterers=[analysis.clusterers_[n] for n in layers],
                     owners=owners, cosine=bool(cosine),
                     reads=[LayerRows(store, split, n) for n in layers])
    d = got["dist"]
    return got["ids"], Distances(d[:, :, 0], d[:, :, 1], d[:, :, 2])
