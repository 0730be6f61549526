"""The layer map: a 2-D projection of each analysed layer, computed when the report is written.

Per split, a bounded sample of the samples is drawn (:func:`select_points`):
the *priority* samples (misclassified, flagged by the score threshold, and in
a comparison those whose outcome changes between runs) first, then a sample
of the others stratified by class. Their rows are read layer by layer
through :class:`~nnsig_core.analysis.source.StoreSource` (whole chunks, only
the selected rows kept: never the whole split), mapped into the clustering
space with :meth:`LayerClusterer.features`, and projected to 2-D together
with the layer's cluster centres. The projection is fitted per layer on the
sampled points of the fit split (every split is then placed in the same
plane) with PCA, or with UMAP when asked for and ``umap-learn`` is installed.

Coordinates are stored as uint16 on a grid over the layer's bounds (the
central 99% of every split's points and all the centres, plus a margin; the
rare points beyond are put on the border, grid value 0 or 65535, which the
viewer draws hollow), little-endian, interleaved ``x0, y0, x1, y1...``, in
base64: 4 bytes per point and layer instead of about 20 as JSON numbers.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core.analysis.source import StoreSource
from nnsig_core.store import ActivationStore

__all__ = ["PROJECTIONS", "check_projection", "encode_xy", "project_layers", "select_points"]

log = logging.getLogger("nnsig")

PROJECTIONS = ("pca", "umap")
#: Share of a split's points the priority samples may take when they are too many.
PRIORITY_SHARE = 1 / 2
GRID = 65535


def check_projection(projection: str) -> None:
    """Raise a clear error for an unknown projection, or UMAP without ``umap-learn``."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, not {projection!r}")
    if projection == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise ImportError(
                "projection='umap' needs the umap-learn package, which is not installed: "
                "pip install 'nnsig[umap]' (or pip install umap-learn), or use the default "
                "projection='pca'."
            ) from None


# ---------------------------------------------------------------------------- sampling
def _allocate(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` draws over strata of ``sizes`` proportionally (largest remainder),
    at least one per non-empty stratum when ``k`` allows, never more than a stratum holds."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if k >= total:
        return sizes.copy()
    out = np.zeros_like(sizes)
    nonempty = np.flatnonzero(sizes > 0)
    if k >= nonempty.size:
        out[nonempty] = 1
    rest = k - int(out.sum())
    room = sizes - out
    while rest > 0:
        share = room * (rest / max(int(room.sum()), 1))
        take = np.minimum(np.floor(share).astype(np.int64), room)
        if take.sum() == 0:  # hand out the remainder, largest fractional part first
            order = np.lexsort((-room, -(share - np.floor(share))))
            take = np.zeros_like(room)
            for i in order:
                if rest - int(take.sum()) <= 0:
                    break
                if room[i] > 0:
                    take[i] = 1
        out += take
        room -= take
        rest = k - int(out.sum())
    return out


def _stratified(candidates: np.ndarray, strata: np.ndarray, k: int,
                rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``candidates`` (positions), stratified by ``strata`` (one key per candidate)."""
    if k >= candidates.size:
        return candidates
    keys, inv = np.unique(strata, return_inverse=True)
    take = _allocate(np.bincount(inv, minlength=keys.size), k)
    chosen = []
    for s in np.flatnonzero(take):
        members = candidates[inv == s]
        chosen.append(rng.choice(members, size=int(take[s]), replace=False))
    return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)


class _ChunkPool:
    """Whole chunks of a split that the map's points are drawn from (see :func:`select_points`)."""

    def __init__(self, n: int, chunk_rows: int, chosen: np.ndarray) -> None:
        self.chunk_of = np.arange(n) // int(chunk_rows)
        self.chosen = chosen

    def inside(self, rows: np.ndarray) -> np.ndarray:
        return self.chosen[self.chunk_of[rows]]

    def grow(self, cand: np.ndarray, k: int, rng: np.random.Generator) -> None:
        """Add random chunks holding ``cand`` until ``k`` of them are inside."""
        counts = np.bincount(self.chunk_of[cand], minlength=self.chosen.size)
        have = int(counts[self.chosen].sum())
        for c in rng.permutation(np.flatnonzero((counts > 0) & ~self.chosen)):
            if have >= k:
                break
            self.chosen[c] = True
            have += int(counts[c])


def _chunk_pool(strata: np.ndarray, chunk_rows: int | None, max_points: int, factor: int,
                rng: np.random.Generator) -> _ChunkPool | None:
    """On a split of many chunks, the whole chunks the map draws from.

    About ``factor * max_points`` rows of random chunks, then, for each class,
    more of its chunks until it has at least four candidates per point it would
    get (one at least, or all its samples): a store written in class order still
    gives every class. ``None`` when the pool would be half the split or more.
    """
    n = strata.size
    if not chunk_rows or chunk_rows <= 0 or n == 0:
        return None
    n_chunks = -(-n // int(chunk_rows))
    want = -(-factor * max_points // int(chunk_rows))
    if want >= n_chunks // 2:
        return None
    chosen = np.zeros(n_chunks, dtype=bool)
    chosen[rng.choice(n_chunks, size=want, replace=False)] = True
    pool = _ChunkPool(n, int(chunk_rows), chosen)
    keys, inv = np.unique(strata, return_inverse=True)
    sizes = np.bincount(inv, minlength=keys.size)
    alloc = _allocate(sizes, min(max_points, n))
    order = np.argsort(inv, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for st in range(keys.size):
        members = order[bounds[st] : bounds[st + 1]]
        pool.grow(members, min(int(sizes[st]), max(1, 4 * int(alloc[st]))), rng)
    return pool


def _prefer(cand: np.ndarray, pool: _ChunkPool | None, k: int, strata: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``cand``, stratified by their shares among *all* of ``cand``, drawn from the
    chunk pool (grown when it holds too few); a class short in the pool leaves its
    shortfall to the others, stratified."""
    if pool is None or cand.size <= k:
        return _stratified(cand, strata[cand], k, rng)
    pool.grow(cand, k, rng)
    inside = cand[pool.inside(cand)]
    keys, inv = np.unique(strata[cand], return_inverse=True)
    quota = _allocate(np.bincount(inv, minlength=keys.size), k)
    where = np.searchsorted(keys, strata[inside])
    take = np.minimum(quota, np.bincount(where, minlength=keys.size))
    chosen = [rng.choice(inside[where == st], size=int(take[st]), replace=False)
              for st in np.flatnonzero(take)]
    short = k - int(take.sum())
    if short > 0:
        rest = np.setdiff1d(inside, np.concatenate(chosen) if chosen else [])
        chosen.append(_stratified(rest, strata[rest], short, rng))
    return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)


def select_points(
    labels: np.ndarray,
    predictions: np.ndarray,
    priority: Mapping[str, np.ndarray],
    max_points: int,
    seed: int = 0,
    chunk_rows: int | None = None,
    pool_factor: int = 20,
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """The positions of a split's map points, and how many of each kind were kept.

    Parameters
    ----------
    labels, predictions : ndarray (n,)
        Labels (-1 = unknown) and predicted classes; points are stratified by
        label, or by predicted class for unlabelled samples.
    priority : mapping of kind to bool mask (n,)
        Samples shown first (e.g. ``"misclassified"``, then ``"flagged"``):
        they get up to half of the points, or more when the other samples are
        too few to fill the rest, so all of them are on the map while they
        number at most that. Beyond it they are given out kind by kind in the
        mapping's order (every misclassified sample before any flagged one,
        when they fit), each kind stratified by class; ``kinds`` says how many
        of each made it.
    max_points : int
    seed : int
    chunk_rows : int, optional
        Rows per chunk of the split. On a split of many chunks, the points are
        drawn from whole chunks (:func:`_chunk_pool`: about ``pool_factor *
        max_points`` rows, every class kept), so that reading them reads a
        bounded part of the split; priority samples are taken wherever they
        are while they all fit.
    pool_factor : int

    Returns
    -------
    positions : ndarray of int64
        Sorted, unique split positions (``min(n, max_points)`` of them).
    kinds : dict
        ``{kind: [in the split, on the map]}`` for each priority kind and ``"other"``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    n = labels.size
    rng = np.random.default_rng(seed)
    strata = np.where(labels >= 0, labels, -1 - predictions)
    prio = np.zeros(n, dtype=bool)
    for m in priority.values():
        prio |= np.asarray(m, dtype=bool)
    max_points = max(0, int(max_points))
    p_idx, o_idx = np.flatnonzero(prio), np.flatnonzero(~prio)
    budget = min(p_idx.size, max(int(max_points * PRIORITY_SHARE), max_points - o_idx.size),
                 max_points)
    in_pool = _chunk_pool(strata, chunk_rows, max_points, pool_factor, rng)
    taken = np.zeros(n, dtype=bool)
    for m in priority.values():
        cand = np.flatnonzero(np.asarray(m, dtype=bool) & ~taken)
        k = min(cand.size, budget - int(taken.sum()))
        if k > 0:
            taken[_prefer(cand, in_pool, k, strata, rng)] = True
    chosen_p = np.flatnonzero(taken)
    chosen_o = _prefer(o_idx, in_pool, max_points - chosen_p.size, strata, rng)
    positions = np.sort(np.concatenate([chosen_p, chosen_o]).astype(np.int64))
    on_map = np.zeros(n, dtype=bool)
    on_map[positions] = True
    kinds = {k: [int(np.asarray(m, bool).sum()), int((np.asarray(m, bool) & on_map).sum())]
             for k, m in priority.items()}
    kinds["other"] = [int(o_idx.size), int(chosen_o.size)]
    return positions, kinds


# ---------------------------------------------------------------------------- projection
def _projector(method: str, X: np.ndarray, seed: int) -> tuple[Any, np.ndarray, list[float] | None]:
    """Fit ``method`` on ``X``; returns the fitted model, X's 2-D coordinates and the
    explained variance ratios (PCA only)."""
    n, d = X.shape
    if method == "umap":
        import umap

        model = umap.UMAP(n_components=2, random_state=seed, n_jobs=1,  # seeded: one thread anyway
                          n_neighbors=int(min(15, max(2, n - 1))))
        Y = model.fit_transform(X)
        return model, np.asarray(Y, dtype=np.float64), None
    from sklearn.decomposition import PCA

    k = int(min(2, d, n))
    if k == 0:
        return None, np.zeros((n, 2)), None
    model = PCA(n_components=k, random_state=seed).fit(X)
    Y = _pad2(model.transform(X))
    return model, Y, [round(float(r), 4) for r in model.explained_variance_ratio_]


def _pad2(Y: np.ndarray) -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.shape[1] < 2:
        Y = np.column_stack([Y, np.zeros((Y.shape[0], 2 - Y.shape[1]))])
    return Y


def _apply(model: Any, X: np.ndarray) -> np.ndarray:
    if model is None or X.shape[0] == 0:
        return np.zeros((X.shape[0], 2))
    return _pad2(model.transform(X))


def encode_xy(Y: np.ndarray, bounds: Sequence[float]) -> str:
    """Coordinates ``(n, 2)`` on the uint16 grid of ``bounds`` (x0, x1, y0, y1), base64."""
    x0, x1, y0, y1 = bounds
    q = np.empty((Y.shape[0], 2), dtype="<u2")
    q[:, 0] = np.rint((Y[:, 0] - x0) / (x1 - x0) * GRID).clip(0, GRID)
    q[:, 1] = np.rint((Y[:, 1] - y0) / (y1 - y0) * GRID).clip(0, GRID)
    return base64.b64encode(q.tobytes()).decode("ascii")


def _bounds(points: Sequence[np.ndarray], centres: np.ndarray) -> list[float]:
    """The map's extent: the central 99% of the points on each axis and every centre,
    with a 6% margin. The rare points beyond are stored on the border (the viewer
    draws them hollow and says so)."""
    pts = [p for p in points if p.size]
    allp = np.concatenate(pts) if pts else np.zeros((0, 2))
    if allp.shape[0] >= 200:
        lo, hi = np.quantile(allp, 0.005, axis=0), np.quantile(allp, 0.995, axis=0)
    elif allp.shape[0]:
        lo, hi = allp.min(axis=0), allp.max(axis=0)
    else:
        lo, hi = np.zeros(2), np.ones(2)
    if centres.size:
        lo, hi = np.minimum(lo, centres.min(axis=0)), np.maximum(hi, centres.max(axis=0))
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - 0.06 * span, hi + 0.06 * span
    return [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])]


def _read_features(store: ActivationStore, split: str, layer: str, rows: np.ndarray,
                   clusterer: Any, read_bytes: int) -> np.ndarray:
    src = StoreSource(store, split, layer, rows, read_bytes=read_bytes)
    raw = src.gather(np.empty((src.n_rows, src.n_features), dtype=np.float32), "map")
    return clusterer.features(raw)


def project_layers(
    analysis: Any,
    store: ActivationStore,
    positions: Mapping[str, np.ndarray],
    fit_split: str,
    method: str = "pca",
    seed: int = 0,
    read_bytes: int = 16 << 20,
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Project the map points of every split, layer by layer, with the cluster centres.

    Each layer is read in whole chunks of at most about ``read_bytes`` at a time,
    keeping only the points' rows: memory holds one read plus the points, never
    the whole split.

    Returns
    -------
    layers : dict
        ``{split: [per layer {"xy", "bounds", "centroids", "explained"}]}``
        (``centroids`` are uint16 grid pairs; ``explained`` is PCA's explained
        variance ratio per axis, ``None`` for UMAP).
    fitted_on : str
        The split whose points the projection was fitted on (``"all"`` when
        the fit split is not in the report: then on every split's points).
    """
    check_projection(method)
    splits = [s for s in positions if positions[s].size]
    fitted_on = fit_split if fit_split in splits else "all"
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in positions}
    for name in analysis.layers_:
        lc = analysis.clusterers_[name]
        feats = {s: _read_features(store, s, name, positions[s], lc, read_bytes) for s in splits}
        X_fit = feats[fit_split] if fitted_on != "all" else np.concatenate(list(feats.values()))
        model, Y_fit, explained = _projector(method, X_fit, seed)
        coords: dict[str, np.ndarray] = {}
        o = 0
        for s in splits:
            if fitted_on == "all":
                coords[s] = Y_fit[o : o + feats[s].shape[0]]
                o += feats[s].shape[0]
            else:
                coords[s] = Y_fit if s == fitted_on else _apply(model, feats[s])
        centres = _apply(model, np.asarray(lc.cluster_centers_, dtype=np.float32))
        bounds = _bounds(list(coords.values()), centres)
        cq = np.frombuffer(base64.b64decode(encode_xy(centres, bounds)), dtype="<u2")
        centroids = [[int(cq[2 * i]), int(cq[2 * i + 1])] for i in range(centres.shape[0])]
        for s in positions:
            Y = coords.get(s, np.zeros((0, 2)))
            out[s].append({"xy": encode_xy(Y, bounds), "bounds": [round(b, 6) for b in bounds],
                           "centroids": centroids, "explained": explained})
        log.debug("layer map of %s: %s fitted on %s", name, method, fitted_on)
    return out, fitted_on
