"""The layer map: each analysed layer's map points and cluster centres projected to 2-D (PCA
or UMAP, fitted on the fit split's points), as uint16 grid coordinates in base64."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core.analysis.source import StoreSource
from nnsig_core.store import ActivationStore

log = logging.getLogger("nnsig")

PROJECTIONS = ("pca", "umap")
GRID = 65535
#: Points from which the extent leaves out outliers (fewer: it covers them all).
ROBUST_MIN = 200
#: How far beyond the central 99% of the points the extent reaches, in that span.
REACH = 0.5


def check_projection(projection: str) -> None:
    """Raise a clear error for an unknown projection, or UMAP without ``umap-learn``."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, not {projection!r}")
    if projection == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            raise ImportError("projection='umap' needs the umap-learn package, which is not "
                              "installed: pip install 'nnsig[umap]' (or pip install umap-learn), "
                              "or use the default projection='pca'.") from None


def _projector(method: str, X: np.ndarray, seed: int) -> tuple[Any, np.ndarray, list[float] | None]:
    """Fit ``method`` on ``X``: the model, X's 2-D coordinates, PCA's explained variance."""
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
    """The map's extent ``[x0, x1, y0, y1]``: on each axis the central 99% of the points,
    reaching out to the points within :data:`REACH` times that span, every centre, a 6% margin."""
    pts = [p for p in points if p.size]
    allp = np.concatenate(pts) if pts else np.zeros((0, 2))
    if allp.shape[0] >= ROBUST_MIN:
        lo, hi = np.quantile(allp, 0.005, axis=0), np.quantile(allp, 0.995, axis=0)
        reach = REACH * np.maximum(hi - lo, 1e-9)
        for a in range(2):
            v = allp[:, a]
            lo[a] = v[v >= lo[a] - reach[a]].min()
            hi[a] = v[v <= hi[a] + reach[a]].max()
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
    analysis: Any, store: ActivationStore, positions: Mapping[str, np.ndarray], fit_split: str,
    method: str = "pca", seed: int = 0, read_bytes: int = 16 << 20,
    read: Callable[[str, str, np.ndarray, Any], np.ndarray] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Project the map points of every split, layer by layer, with the cluster centres.

    Each layer is read in whole chunks of about ``read_bytes``; ``read(split, layer, positions,
    clusterer)``, when given, returns the points' features instead (read by Dask workers).
    Returns ``{split: [per layer {"xy", "bounds", "centroids", "explained"}]}`` and the split
    the projection was fitted on (``"all"`` when the fit split is not in the report).
    """
    check_projection(method)
    splits = [s for s in positions if positions[s].size]
    fitted_on = fit_split if fit_split in splits else "all"
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in positions}
    for name in analysis.layers_:
        lc = analysis.clusterers_[name]
        feats = {s: (read(s, name, positions[s], lc) if read is not None
                     else _read_features(store, s, name, positions[s], lc, read_bytes))
                 for s in splits}
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
