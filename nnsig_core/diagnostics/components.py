r"""The path components: per-sample statistics of signatures against the training paths.

For a sample on path :math:`s = (k_1, \dots, k_L)` predicted as class :math:`c`
(training paths: the analysis's correctly classified fit samples; higher = more
suspicious). :math:`N_c` training samples of class :math:`c`, :math:`n(s, c)` on
path :math:`s`; :math:`V` distinct training paths + 1; :math:`n_l(k, c)`,
:math:`n_l(k)` training samples (of class :math:`c`) in cluster :math:`k` of layer
:math:`l`; :math:`K_l` clusters; :math:`C` classes; :math:`\alpha, \beta` smoothing;
:math:`d_l` the distance to the assigned centroid (between L2-normalised vectors
with ``geometry="cosine"``).

``path_surprisal``
    :math:`-\log \frac{n(s, c) + \alpha}{N_c + \alpha V}`.
``path_hamming``
    :math:`\min_{s' \in S_c} \#\{l : s_l \ne s'_l\}` over class :math:`c`'s
    distinct training paths (:math:`L` when it has none).
``disagreement``
    :math:`\frac{1}{L} \sum_l \bigl(1 - \frac{n_l(k_l, c) + \beta}{n_l(k_l) + \beta C}\bigr)`.
``centroid_distance``
    :math:`p_l = \frac{1 + \#\{i : k_{il} = k_l, d_{il} \ge d_l\}}{1 + n_l(k_l)}`
    (the whole layer's distances when the cluster holds fewer than
    ``min_cluster_size``), combined as :math:`-2 \sum_l \log p_l` (``"fisher"``:
    a score, not a test) or :math:`-\log \min(1, L \min_l p_l)` (``"minp"``).
``transition_surprisal``
    :math:`-\log \frac{n_1(k_1, c) + \alpha}{N_c + \alpha K_1} - \sum_{l=1}^{L-1}
    \log \frac{n_{l,l+1}(k_l, k_{l+1}, c) + \alpha}{n_l(k_l, c) + \alpha K_{l+1}}`,
    a class-conditional Markov chain over the layers' clusters.
``class_distance``
    :math:`-2 \sum_l \log q_l`, :math:`q_l = \frac{1 + \#\{i : y_i = c, \delta^{c}_{il}
    \ge \delta^{c}_l\}}{1 + N_c}` with :math:`\delta^{c}_l` the distance to the
    nearest centroid of a cluster of class :math:`c` (:math:`q_l = 1 / (1 + N)`
    for a class never seen).
``class_margin``
    :math:`\sum_l \log \frac{\delta^{c}_l}{\delta^{\neg c}_l}`, :math:`\delta^{\neg c}_l`
    the distance to the nearest centroid of another class's cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Components computed from the analysis's clusters (this module).
PATH_SCORES = (
    "path_surprisal",
    "path_hamming",
    "disagreement",
    "centroid_distance",
    "transition_surprisal",
    "class_distance",
    "class_margin",
)
#: Components from the scorer's own statistics (:mod:`~nnsig_core.diagnostics.neighbours`).
NEIGHBOUR_SCORES = ("neighbour_distance", "neighbour_margin")
#: Every component, in the order :class:`~nnsig_core.diagnostics.SignatureScorer` returns them.
SCORES = PATH_SCORES + NEIGHBOUR_SCORES
DISTANCE_COMBINE = ("fisher", "minp")
_HAMMING_BUDGET = 64 << 20
_EPS = 1e-9


def _void(rows: np.ndarray) -> np.ndarray:
    """Each row of an int matrix as one opaque (void) value, for sorting and lookup."""
    r = np.ascontiguousarray(rows, dtype=np.int64)
    if r.ndim == 1:
        r = r[:, None]
    return r.view(np.dtype((np.void, 8 * r.shape[1]))).reshape(-1)


class RowCounter:
    """Counts of distinct integer rows, looked up for new rows (0 when unseen)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.keys, self.counts = np.unique(_void(rows), return_counts=True)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        v = _void(rows)
        if self.keys.size == 0:
            return np.zeros(v.size, dtype=np.int64)
        i = np.minimum(np.searchsorted(self.keys, v), self.keys.size - 1)
        return np.where(self.keys[i] == v, self.counts[i], 0).astype(np.int64)


def row_index(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Index in ``P`` (distinct rows) of each row of ``Q``; -1 when absent."""
    pv = _void(P)
    order = np.argsort(pv, kind="stable")
    sv = pv[order]
    qv = _void(Q)
    if sv.size == 0:
        return np.full(qv.size, -1, dtype=np.int64)
    i = np.minimum(np.searchsorted(sv, qv), sv.size - 1)
    return np.where(sv[i] == qv, order[i], -1).astype(np.int64)


def min_hamming(Q: np.ndarray, P: np.ndarray, exclude: np.ndarray | None = None,
                 budget: int = _HAMMING_BUDGET) -> np.ndarray:
    """Min over rows of ``P`` of the Hamming distance to each row of ``Q`` (chunked).

    ``exclude[i]``, when >= 0, is a row of ``P`` ignored for query ``i``.
    Returns ``L + 1`` (``L`` = row length) where nothing is left to compare.
    """
    L = Q.shape[1]
    out = np.full(Q.shape[0], L + 1, dtype=np.int64)
    if P.shape[0] == 0 or Q.shape[0] == 0:
        return out
    step = max(1, budget // max(P.shape[0] * max(L, 1), 1))
    for s in range(0, Q.shape[0], step):
        D = (Q[s : s + step, None, :] != P[None, :, :]).sum(axis=2, dtype=np.int32)
        if exclude is not None:
            ex = exclude[s : s + step]
            hit = np.flatnonzero(ex >= 0)
            D[hit, ex[hit]] = L + 1
        out[s : s + step] = D.min(axis=1)
    return out


def _pvalue(ref: np.ndarray, d: np.ndarray, delta: int) -> np.ndarray:
    """Empirical p-value of ``d`` against the sorted ``ref`` (``delta``: own value left out)."""
    ge = ref.size - np.searchsorted(ref, d, side="left")
    return (1.0 + ge - delta) / (1.0 + ref.size - delta)


class PathStatistics:
    """Training statistics of signatures, and the component scores of new signatures."""

    def __init__(self, *, alpha: float = 1.0, beta: float = 1.0, distance_combine: str = "fisher",
                 min_cluster_size: int = 5) -> None:
        self.alpha = alpha
        self.beta = beta
        self.distance_combine = distance_combine
        self.min_cluster_size = min_cluster_size

    def fit(self, ids: np.ndarray, dist: np.ndarray, y: np.ndarray,
            n_clusters: Sequence[int], classes: Sequence[int],
            own: np.ndarray | None = None) -> PathStatistics:
        """Collect the statistics of the (correct) training samples' cluster ids and distances
        ``(n, L)``; ``own``: their distances to their class's nearest centroid (else ``dist``)."""
        ids = np.asarray(ids, dtype=np.int64)
        dist = np.asarray(dist, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        own = dist if own is None else np.asarray(own, dtype=np.float64)
        self.n_clusters_ = [int(k) for k in n_clusters]
        self.classes_ = sorted(int(c) for c in classes)
        L = ids.shape[1]
        self.n_layers_ = L
        self.n_train_ = int(ids.shape[0])
        self.n_paths_ = int(np.unique(ids, axis=0).shape[0])
        self._class_n = RowCounter(y[:, None])
        self._path_n = RowCounter(np.column_stack([y, ids]))
        self._class_paths = {int(c): np.unique(ids[y == c], axis=0, return_counts=True)
                             for c in np.unique(y)}
        self._comp = [RowCounter(np.column_stack([ids[:, j], y])) for j in range(L)]
        self._size = [RowCounter(ids[:, j : j + 1]) for j in range(L)]
        self._trans = [RowCounter(np.column_stack([y, ids[:, j], ids[:, j + 1]]))
                       for j in range(L - 1)]
        # Sorted training distances per (layer, cluster) flat with offsets, per class, per layer.
        self._dist: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._class_dist: list[dict[int, np.ndarray]] = []
        for j in range(L):
            K = max(self.n_clusters_[j], int(ids[:, j].max(initial=-1)) + 1)
            order = np.lexsort((dist[:, j], ids[:, j]))
            flat = dist[order, j]
            offsets = np.searchsorted(ids[order, j], np.arange(K + 1))
            self._dist.append((flat, offsets, np.sort(dist[:, j])))
            self._class_dist.append({int(c): np.sort(own[y == c, j]) for c in np.unique(y)})
        return self

    def scores(self, cluster_ids: Any, distances: Any, predictions: Any, *, loo: bool = False,
               nearest: tuple[Any, Any] | None = None) -> dict[str, np.ndarray]:
        """The component scores of samples given their signatures (``loo``: training samples,
        each one's own contribution left out); ``nearest``: the distances to the nearest centroid
        of the predicted class's and another class's clusters (``class_margin`` needs them)."""
        ids = np.asarray(cluster_ids, dtype=np.int64)
        dist = np.asarray(distances, dtype=np.float64)
        c = np.asarray(predictions, dtype=np.int64).reshape(-1)
        L = self.n_layers_
        if ids.ndim != 2 or ids.shape[1] != L or dist.shape != ids.shape or c.size != ids.shape[0]:
            raise ValueError(f"Expected cluster_ids and distances of shape (n, {L}) and n "
                             "predictions.")
        delta = 1 if loo else 0
        a, b = float(self.alpha), float(self.beta)
        N_c = self._class_n(c[:, None]) - delta
        n_sc = self._path_n(np.column_stack([c, ids])) - delta
        V = self.n_paths_ + 1
        out: dict[str, np.ndarray] = {}
        out["path_surprisal"] = -np.log((n_sc + a) / (N_c + a * V))
        out["path_hamming"] = self._hamming(ids, c, loo).astype(np.float64)
        C = max(len(self.classes_), 1)
        dis = np.zeros(ids.shape[0])
        for j in range(L):
            n_kc = self._comp[j](np.column_stack([ids[:, j], c])) - delta
            n_k = self._size[j](ids[:, j : j + 1]) - delta
            dis += 1.0 - (n_kc + b) / (n_k + b * C)
        out["disagreement"] = dis / L
        logp = np.column_stack([np.log(self._pvalues(j, ids[:, j], dist[:, j], delta))
                                for j in range(L)])
        if self.distance_combine == "fisher":
            out["centroid_distance"] = -2.0 * logp.sum(axis=1)
        else:
            out["centroid_distance"] = -np.minimum(0.0, np.log(L) + logp.min(axis=1))
        n1 = self._comp[0](np.column_stack([ids[:, 0], c])) - delta
        ts = -np.log((n1 + a) / (N_c + a * self.n_clusters_[0]))
        for j in range(L - 1):
            n_t = self._trans[j](np.column_stack([c, ids[:, j], ids[:, j + 1]])) - delta
            n_from = self._comp[j](np.column_stack([ids[:, j], c])) - delta
            ts -= np.log((n_t + a) / (n_from + a * self.n_clusters_[j + 1]))
        out["transition_surprisal"] = ts
        own = dist
        if nearest is not None:
            own = np.asarray(nearest[0], dtype=np.float64)
            other = np.asarray(nearest[1], dtype=np.float64)
            if own.shape != ids.shape or other.shape != ids.shape:
                raise ValueError(f"nearest distances must be of shape (n, {L}).")
        logq = np.column_stack([np.log(self._class_pvalues(j, c, own[:, j], delta))
                                for j in range(L)])
        out["class_distance"] = -2.0 * logq.sum(axis=1)
        if nearest is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                term = np.log((own + _EPS) / (other + _EPS))
            term[~np.isfinite(other)] = 0.0  # no other class's cluster to compare with
            out["class_margin"] = term.sum(axis=1)
        return out

    def _pvalues(self, j: int, k: np.ndarray, d: np.ndarray, delta: int) -> np.ndarray:
        flat, offsets, pooled = self._dist[j]
        p = np.empty(k.size)
        K = offsets.size - 1
        for kk in np.unique(k):
            rows = np.flatnonzero(k == kk)
            ref = flat[offsets[kk] : offsets[kk + 1]] if 0 <= kk < K else flat[:0]
            if ref.size - delta < int(self.min_cluster_size):
                ref = pooled
            p[rows] = _pvalue(ref, d[rows], delta)
        return np.clip(p, 1e-300, 1.0)

    def _class_pvalues(self, j: int, c: np.ndarray, d: np.ndarray, delta: int) -> np.ndarray:
        by_class = self._class_dist[j]
        p = np.full(c.size, 1.0 / (1.0 + self.n_train_))  # a class never seen
        for cls in np.unique(c):
            ref = by_class.get(int(cls))
            if ref is None or ref.size - delta < 1:
                continue
            rows = np.flatnonzero(c == cls)
            p[rows] = _pvalue(ref, d[rows], delta)
        return np.clip(p, 1e-300, 1.0)

    def _hamming(self, ids: np.ndarray, c: np.ndarray, loo: bool) -> np.ndarray:
        L = self.n_layers_
        out = np.full(ids.shape[0], L, dtype=np.int64)
        for cls in np.unique(c):
            entry = self._class_paths.get(int(cls))
            if entry is None:
                continue
            P, cnt = entry
            rows = np.flatnonzero(c == cls)
            uq, inv = np.unique(ids[rows], axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            exclude = None
            if loo:
                idx = row_index(P, uq)
                # A path followed by another training sample of the class is still seen.
                exclude = np.where((idx >= 0) & (cnt[np.maximum(idx, 0)] <= 1), idx, -1)
            h = np.minimum(min_hamming(uq, P, exclude), L)
            out[rows] = h[inv]
        return out
