"""Signatures that stay on the cluster: their tables, purity and exemplars are reductions.

:class:`DaskSignatures` is what ``SignatureAnalysis.transform`` returns with a
client. Its per-sample arrays (cluster ids, distances, labels, predictions,
sample index, row positions) are dask arrays, the ids and distances persisted
in the workers' memory (8 bytes per sample and layer) or read from the store
when saved. Every view of :class:`~nnsig_core.analysis.Signatures` is
available with the same result, computed from aggregates:

- the *joint table*, the distinct ``(input class, path, output class)`` rows
  with their counts, is one tree reduction (each block returns its distinct
  rows and counts); ``table``, ``by_output_class``, ``by_signature``,
  ``composition``, ``cluster_composition``, ``purity``, ``entropy``,
  ``transitions``, ``n_signatures`` and ``accuracy`` are computed from it on
  the driver, counting each distinct row with its multiplicity;
- ``exemplars`` is a reduction keeping the ``n`` nearest samples per cluster.

Only the per-sample views (``per_sample``, ``to_frame``, ``to_csv``,
``export``) bring every sample to the driver, through :meth:`compute`, which
returns an in-memory :class:`~nnsig_core.analysis.Signatures`. The report
works from :meth:`joint_table` (with score sums) and :meth:`exemplars`
(:mod:`nnsig_core.distributed.report`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.analysis.joint import joint_compositions, joint_merge, joint_part
from nnsig_core.analysis.signatures import CompositionViews, Signatures
from nnsig_core.analysis.tables import Table
from nnsig_core.distributed.report import reduce_blocks

__all__ = ["DaskSignatures"]

log = logging.getLogger("nnsig")


def _frame(table: Table, as_frame: bool) -> Any:
    return table.to_frame() if as_frame else table


# ---------------------------------------------------------------------------- block functions
def _nearest_part(ids: np.ndarray, dist: np.ndarray, rows: np.ndarray,
                  mask: np.ndarray | None = None, *, n: int, lo: int = 0) -> dict[str, Any]:
    """Per layer: the ``n`` samples nearest their centre in each cluster (ids, dists, rows)."""
    ids, dist, rows = np.asarray(ids), np.asarray(dist), np.asarray(rows)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        ids, dist, rows = ids[keep], dist[keep], rows[keep]
    return {"layers": [_nearest(ids[:, j], dist[:, j], rows, n) for j in range(ids.shape[1])]}


def _nearest(ids: np.ndarray, dist: np.ndarray, rows: np.ndarray,
             n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((rows, dist, ids))
    ids, dist, rows = ids[order], dist[order], rows[order]
    if ids.size:
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        rank = np.arange(ids.size) - np.repeat(starts, np.diff(np.r_[starts, ids.size]))
        keep = rank < n
        ids, dist, rows = ids[keep], dist[keep], rows[keep]
    return ids, dist, rows


def _nearest_merge(*parts: dict[str, Any], n: int) -> dict[str, Any]:
    layers = []
    for j in range(len(parts[0]["layers"])):
        cat = [np.concatenate([p["layers"][j][i] for p in parts]) for i in range(3)]
        layers.append(_nearest(*cat, n))
    return {"layers": layers}


# ---------------------------------------------------------------------------- the class
class DaskSignatures(CompositionViews):
    """Signatures of a split on a Dask cluster (see the module doc).

    Parameters
    ----------
    split : str
    layers : sequence of str
    cluster_ids : dask array (n, L) of int32
    labels, predictions, sample_index : dask arrays (n,) of int64
    distances : dask array (n, L) of float32
    n_clusters : sequence of int
    client : dask.distributed.Client
    n_classes : int, optional
    class_names : sequence of str, optional
    rows : dask array (n,) of int64, optional
        Positions in the split (default: 0..n-1).
    n_samples : int, optional
        Known sample count (else counted by a reduction).
    """

    def __init__(self, split: str, layers: Sequence[str], cluster_ids: Any, labels: Any,
                 predictions: Any, distances: Any, sample_index: Any, n_clusters: Sequence[int],
                 client: Any, n_classes: int | None = None,
                 class_names: Sequence[str] | None = None, rows: Any = None,
                 n_samples: int | None = None) -> None:
        import dask.array as da

        self.split = split
        self.layers = list(layers)
        self.cluster_ids = cluster_ids
        self.labels = labels
        self.predictions = predictions
        self.distances = distances
        self.sample_index = sample_index
        self.n_clusters = [int(k) for k in n_clusters]
        self.client = client
        self.class_names = list(class_names) if class_names else None
        self.rows = rows if rows is not None else da.arange(
            cluster_ids.shape[0], chunks=cluster_ids.chunks[0], dtype=np.int64)
        self._n = n_samples
        self._whole = rows is None  # every sample of the split, in order
        self._joint: dict[str, Any] | None = None
        self._n_classes_arg = int(n_classes or 0)

    # ------------------------------------------------------------------ the joint table
    def _reduce_joint(self, scores: Any = None) -> dict[str, Any]:
        arrays = [self.labels, self.cluster_ids, self.predictions]
        if scores is not None:
            arrays.append(scores)
        return reduce_blocks(joint_part, joint_merge, arrays, {}, {}, self.client)

    def joint_table(self, scores: Any = None) -> dict[str, Any]:
        """The joint table (:mod:`nnsig_core.analysis.joint`) as one reduction; with
        ``scores`` (a dask or NumPy array, one per sample), each row's score sums too."""
        if scores is None:
            self.joint()
            assert self._joint is not None
            return self._joint
        return self._reduce_joint(scores)

    def joint(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct ``(label, cluster ids..., prediction)`` rows (sorted) and their counts."""
        if self._joint is None:
            self._joint = self._reduce_joint()
        return self._joint["rows"], self._joint["counts"]

    def _cols(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        T, w = self.joint()
        L = len(self.layers)
        return T[:, 0], T[:, 1 : L + 1], T[:, L + 1], w

    # ------------------------------------------------------------------ basics
    @property
    def n_samples(self) -> int:
        if self._n is None:
            self._n = int(self.joint()[1].sum())
        return self._n

    def __len__(self) -> int:
        return self.n_samples

    @property
    def n_classes(self) -> int:
        lab, _, pred, _ = self._cols()
        seen = max(int(lab.max(initial=-1)), int(pred.max(initial=-1))) + 1
        return max(self._n_classes_arg, seen)

    def __repr__(self) -> str:
        acc = self.accuracy
        acc_s = f", accuracy {acc:.3f}" if acc is not None else ""
        return (f"DaskSignatures(split={self.split!r}, {self.n_samples} samples x "
                f"{len(self.layers)} layers, {self.n_signatures} distinct signatures{acc_s})")

    @property
    def labelled(self) -> Any:
        """Lazy boolean mask (dask) of samples with a known label."""
        return self.labels >= 0

    @property
    def correct(self) -> Any:
        """Lazy boolean mask (dask): labelled and predicted as labelled."""
        return (self.labels >= 0) & (self.labels == self.predictions)

    @property
    def has_labels(self) -> bool:
        return bool((self._cols()[0] >= 0).any())

    @property
    def accuracy(self) -> float | None:
        lab, _, pred, w = self._cols()
        m = lab >= 0
        total = int(w[m].sum())
        return float(w[m & (lab == pred)].sum() / total) if total else None

    @property
    def n_signatures(self) -> int:
        _, ids, _, w = self._cols()
        return int(np.unique(ids, axis=0).shape[0]) if w.size else 0

    def subset(self, mask: Any) -> DaskSignatures:
        """The signatures of the samples where ``mask`` (a boolean dask or NumPy array) holds;
        lazy, on the cluster."""
        import dask.array as da

        if not hasattr(mask, "dask"):
            mask = da.from_array(np.asarray(mask, dtype=bool), chunks=self.labels.chunks[0])
        return DaskSignatures(
            self.split, self.layers, self.cluster_ids[mask], self.labels[mask],
            self.predictions[mask], self.distances[mask], self.sample_index[mask],
            self.n_clusters, self.client, self._n_classes_arg, self.class_names, self.rows[mask])

    def compute(self) -> Signatures:
        """Every sample brought to the driver, as an in-memory :class:`Signatures`."""
        ids, lab, pred, dist, si, rows = self.client.compute(
            [self.cluster_ids, self.labels, self.predictions, self.distances, self.sample_index,
             self.rows], sync=True)
        return Signatures(self.split, self.layers, ids, lab, pred, dist, si, self.n_clusters,
                          n_classes=self.n_classes, class_names=self.class_names, rows=rows)

    # ------------------------------------------------------------------ tables
    def _need_labels(self, what: str) -> None:
        if not self.has_labels:
            raise MissingLabelsError(
                f"Split {self.split!r} has no labels, which {what} needs. Capture the split with "
                "labels, or use by='output' to count predicted classes instead."
            )

    def table(self, *, as_frame: bool = False) -> Any:
        """As :meth:`Signatures.table`, from the joint table."""
        T, counts = self.joint()
        L = len(self.layers)
        cols = ["input_class", "signature", "output_class", "count"]
        if T.shape[0] == 0:
            return _frame(Table(cols, []), as_frame)
        keys = [T[:, L + 1]] + [T[:, 1 + j] for j in reversed(range(L))] + [T[:, 0], -counts]
        order = np.lexsort(keys)
        rows = [(int(u[0]), tuple(int(x) for x in u[1 : L + 1]), int(u[L + 1]), int(c))
                for u, c in zip(T[order], counts[order], strict=False)]
        return _frame(Table(cols, rows), as_frame)

    def by_output_class(self, *, as_frame: bool = False) -> Any:
        """As :meth:`Signatures.by_output_class`, from the joint table."""
        lab, ids, pred, w = self._cols()
        L = len(self.layers)
        cols = ["output_class", "signature", "count", "n_correct", "n_misclassified"]
        if w.size == 0:
            return _frame(Table(cols, []), as_frame)
        uniq, inv = np.unique(np.column_stack([pred, ids]), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        counts = np.bincount(inv, weights=w, minlength=len(uniq)).astype(np.int64)
        ok = (lab >= 0) & (lab == pred)
        n_ok = np.bincount(inv, weights=w * ok, minlength=len(uniq)).astype(np.int64)
        n_bad = np.bincount(inv, weights=w * ((lab >= 0) & ~ok),
                            minlength=len(uniq)).astype(np.int64)
        keys = [uniq[:, 1 + j] for j in reversed(range(L))] + [-counts, uniq[:, 0]]
        rows = [(int(uniq[i, 0]), tuple(int(x) for x in uniq[i, 1:]), int(counts[i]),
                 int(n_ok[i]), int(n_bad[i])) for i in np.lexsort(keys)]
        return _frame(Table(cols, rows), as_frame)

    def by_signature(self, *, as_frame: bool = False) -> Any:
        """As :meth:`Signatures.by_signature`, from the joint table."""
        lab, ids, pred, w = self._cols()
        cols = ["signature", "count", "majority_class", "purity", "n_misclassified",
                "by_class", "by_output"]
        if w.size == 0:
            return _frame(Table(cols, []), as_frame)
        uniq, inv = np.unique(ids, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        counts = np.bincount(inv, weights=w, minlength=len(uniq)).astype(np.int64)
        C = max(self.n_classes, 1)
        known = lab >= 0
        by_class = np.zeros((len(uniq), C), dtype=np.int64)
        np.add.at(by_class, (inv[known], lab[known]), w[known])
        by_out = np.zeros((len(uniq), C), dtype=np.int64)
        np.add.at(by_out, (inv, np.clip(pred, 0, C - 1)), w)
        bad = np.bincount(inv, weights=w * (known & (lab != pred)),
                          minlength=len(uniq)).astype(np.int64)
        keys = [uniq[:, j] for j in reversed(range(uniq.shape[1]))] + [-counts]
        rows = []
        for i in np.lexsort(keys):
            n_lab = int(by_class[i].sum())
            maj = int(by_class[i].argmax()) if n_lab else -1
            rows.append((tuple(int(x) for x in uniq[i]), int(counts[i]), maj,
                         float(by_class[i, maj] / n_lab) if n_lab else None, int(bad[i]),
                         {int(c): int(v) for c, v in enumerate(by_class[i]) if v},
                         {int(c): int(v) for c, v in enumerate(by_out[i]) if v}))
        return _frame(Table(cols, rows), as_frame)

    def _composition(self, cls: np.ndarray, ids: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
        return joint_compositions(cls, ids, w, self.n_clusters, max(self.n_classes, 1))

    def composition(self, *, by: str = "input") -> list[np.ndarray]:
        """As :meth:`Signatures.composition`."""
        lab, ids, pred, w = self._cols()
        if by in ("input", "label"):
            self._need_labels("class counts")
            cls = lab
        elif by in ("output", "prediction"):
            cls = pred
        else:
            raise ValueError(f"by must be 'input' or 'output'; got {by!r}.")
        return self._composition(cls, ids, w)

    def transitions(self, *, include_io: bool = False, as_frame: bool = False) -> Any:
        """As :meth:`Signatures.transitions`, from the joint table."""
        lab, ids, pred, w = self._cols()
        cols = [lab] + [ids[:, j] for j in range(ids.shape[1])] + [pred]
        names = ["input", *self.layers, "output"]
        pairs = range(len(cols) - 1) if include_io else range(1, len(cols) - 2)
        rows = []
        for a in pairs:
            if w.size == 0:
                continue
            uniq, inv = np.unique(np.column_stack([cols[a], cols[a + 1], lab]), axis=0,
                                  return_inverse=True)
            counts = np.bincount(inv.reshape(-1), weights=w, minlength=len(uniq))
            for u, c in zip(uniq, counts, strict=False):
                rows.append((names[a], int(u[0]), names[a + 1], int(u[1]), int(u[2]), int(c)))
        table = Table(["source_layer", "source", "target_layer", "target", "input_class",
                       "count"], rows)
        return _frame(table, as_frame)

    def exemplars(self, *, n: int = 5, mask: Any = None) -> list[list[list[int]]]:
        """As :meth:`Signatures.exemplars`: a reduction keeping ``n`` samples per cluster."""
        arrays = [self.cluster_ids, self.distances, self.rows]
        if mask is not None:
            arrays.append(mask if hasattr(mask, "dask") else np.asarray(mask, dtype=bool))
        r = reduce_blocks(_nearest_part, _nearest_merge, arrays, {"n": n}, {"n": n}, self.client)
        out = []
        for (ids, _, rows), k in zip(r["layers"], self.n_clusters, strict=True):
            starts = np.searchsorted(ids, np.arange(k))
            ends = np.searchsorted(ids, np.arange(k), side="right")
            out.append([[int(x) for x in rows[s:e]] for s, e in zip(starts, ends, strict=True)])
        return out

    # ------------------------------------------------------------------ per sample (on the driver)
    def per_sample(self) -> Table:
        """As :meth:`Signatures.per_sample`; brings every sample to the driver."""
        return self.compute().per_sample()

    def to_frame(self) -> Any:
        return self.compute().to_frame()

    def to_csv(self, path: Any = None) -> str | None:
        return self.compute().to_csv(path)

    def to_json(self, path: Any = None) -> str:
        return self.compute().to_json(path)

    def export(self, out_dir: Any) -> list[str]:
        """As :meth:`Signatures.export`; brings every sample to the driver."""
        return self.compute().export(out_dir)
