"""Distances of a split's samples to the analysis's centroids, in the scorer's geometry.

Per sample and layer: the distance to its assigned centroid, to the nearest
centroid of a cluster *of its predicted class* (one whose training majority is
that class) and to the nearest centroid of another class's cluster. In the
cosine geometry (the default) features and centroids are L2-normalised first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core._util import l2_normalise
from nnsig_core.analysis.source import StoreSource
from nnsig_core.store import ActivationStore


@dataclass
class Distances:
    """Per-sample distances ``(n, L)``: to the assigned centroid, to the nearest centroid of the
    predicted class's clusters (``own``) and of another class's (``other``); NaN when not
    computed."""

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
    """Distance to the nearest centroid of the predicted class's clusters and of the other
    classes' clusters (the farthest centroid for a class never seen), from the distances
    ``D`` (n, K) to every centroid of one layer."""
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
    """A layer's centroids in the scorer's geometry (float64, L2-normalised when ``cosine``)
    and their squared norms."""
    centers = np.asarray(clusterer.cluster_centers_, dtype=np.float64)
    if cosine:
        centers = l2_normalise(centers)
    return centers, (centers**2).sum(axis=1)


def block_distances(block: np.ndarray, clusterer: Any, centers: tuple[np.ndarray, np.ndarray],
                    ids: np.ndarray, predictions: np.ndarray, owners: dict[int, np.ndarray],
                    cosine: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer's distances of a block of rows (float32 ``(m, n_features)``, their cluster
    ids and predictions): to the assigned centroid, and to the nearest of the predicted class's
    and of another class's (:func:`centroids` gives ``centers``). The one kernel both drivers
    run."""
    C, c2 = centers
    F = clusterer.features(block).astype(np.float64)
    if cosine:
        F = l2_normalise(F)
    D = np.sqrt(np.maximum((F**2).sum(1)[:, None] - 2 * F @ C.T + c2[None], 0))
    own, other = nearest_distances(owners, D, predictions)
    return D[np.arange(D.shape[0]), ids], own, other


def split_distances(
    analysis: Any,
    owners: Sequence[dict[int, np.ndarray]],
    store: ActivationStore,
    split: str,
    rows: np.ndarray | None,
    ids: np.ndarray,
    predictions: np.ndarray,
    cosine: bool,
) -> Distances:
    """Distances of the samples ``rows`` (sorted positions; None = all) of ``split``.

    Reads each analysed layer once, chunk by chunk, through the analysis's
    feature map (discretizer, reduction).
    """
    n, L = ids.shape
    out = Distances(np.empty((n, L)), np.full((n, L), np.nan), np.full((n, L), np.nan))
    ids = np.asarray(ids, dtype=np.int64)
    c = np.asarray(predictions, dtype=np.int64)
    for j, name in enumerate(analysis.layers_):
        lc = analysis.clusterers_[name]
        centers = centroids(lc, cosine)
        o = 0
        for _, block in StoreSource(store, split, name, rows).blocks():
            sl = slice(o, o + block.shape[0])
            o += block.shape[0]
            out.assigned[sl, j], out.own[sl, j], out.other[sl, j] = block_distances(
                block, lc, centers, ids[sl, j], c[sl], owners[j], cosine)
    return out
