"""Signatures of a split: each sample's cluster id in each analysed layer, and views of them.

A *signature* (or *path*) is the tuple of a sample's cluster ids, one per
layer. :class:`Signatures` holds them with labels, predictions and distances,
and derives the prototype's table, grouped views, per-layer cluster
composition, the Sankey transitions, purity, entropy and exemplars.

Definitions
-----------
purity (per layer)
    Over labelled samples: the sum over clusters of the count of the cluster's
    most frequent input class, divided by the number of labelled samples (1:
    every cluster holds one class).
entropy (per layer)
    Over labelled samples: the mean, weighted by cluster size, of the entropy
    in bits of the input classes within each cluster, i.e. H(class | cluster)
    (0: every cluster holds one class).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.analysis.joint import joint_part
from nnsig_core.analysis.tables import Table

__all__ = ["Signatures", "class_entropy", "class_purity"]


def _maybe_frame(table: Table, as_frame: bool) -> Any:
    return table.to_frame() if as_frame else table


def class_purity(composition: np.ndarray) -> float:
    """Purity of a (clusters x classes) count matrix (NaN when it is empty)."""
    total = composition.sum()
    return float(composition.max(axis=1).sum() / total) if total else float("nan")


def class_entropy(composition: np.ndarray) -> float:
    """Size-weighted mean class entropy (bits) of a (clusters x classes) count matrix."""
    total = composition.sum()
    if not total:
        return float("nan")
    sizes = composition.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(sizes > 0, composition / np.maximum(sizes, 1), 0.0)
        h = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
    return float((h * sizes[:, 0]).sum() / total)


class CompositionViews:
    """Views computed from :meth:`composition` alone, shared by :class:`Signatures` and the
    distributed ``DaskSignatures`` (which computes the compositions as reductions)."""

    layers: list[str]

    @property
    def has_labels(self) -> bool:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def composition(self, by: str = "input") -> list[np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def cluster_composition(self, by: str = "input", as_frame: bool = False) -> Any:
        """Long table of :meth:`composition`: ``layer``, ``cluster``, ``class``, ``count``.

        Only non-zero counts are listed; rows follow layer order, then
        cluster, then class.
        """
        rows = []
        for name, m in zip(self.layers, self.composition(by=by), strict=False):
            for c, k in zip(*np.nonzero(m), strict=False):
                rows.append((name, int(c), int(k), int(m[c, k])))
        return _maybe_frame(Table(["layer", "cluster", "class", "count"], rows), as_frame)

    def purity(self) -> np.ndarray:
        """Per-layer purity over labelled samples (NaN without labels); see the module doc."""
        if not self.has_labels:
            return np.full(len(self.layers), np.nan)
        return np.array([class_purity(m) for m in self.composition(by="input")])

    def entropy(self) -> np.ndarray:
        """Per-layer mean class entropy in bits (NaN without labels); see the module doc."""
        if not self.has_labels:
            return np.full(len(self.layers), np.nan)
        return np.array([class_entropy(m) for m in self.composition(by="input")])


class Signatures(CompositionViews):
    """Cluster ids of every sample of a split in every analysed layer.

    Parameters
    ----------
    split : str
    layers : sequence of str
        Analysed layer names, in model order.
    cluster_ids : ndarray (n_samples, n_layers) of int
    labels, predictions, sample_index : ndarray (n_samples,) of int
        ``labels`` is -1 where unknown.
    distances : ndarray (n_samples, n_layers) of float
        Euclidean distance to the assigned centre, in the clustering space.
    n_clusters : sequence of int
        Clusters per layer.
    n_classes : int, optional
        Number of classes (default: from labels and predictions).
    class_names : sequence of str, optional
    rows : ndarray of int, optional
        Position of each sample in the split (default ``arange``); differs
        after :meth:`subset`.
    """

    def __init__(
        self,
        split: str,
        layers: Sequence[str],
        cluster_ids: np.ndarray,
        labels: np.ndarray,
        predictions: np.ndarray,
        distances: np.ndarray,
        sample_index: np.ndarray,
        n_clusters: Sequence[int],
        n_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        self.split = split
        self.layers = list(layers)
        self.cluster_ids = np.asarray(cluster_ids, dtype=np.int32).reshape(-1, len(self.layers))
        n = self.cluster_ids.shape[0]
        self.labels = np.asarray(labels, dtype=np.int64).reshape(n)
        self.predictions = np.asarray(predictions, dtype=np.int64).reshape(n)
        self.distances = np.asarray(distances, dtype=np.float32).reshape(n, len(self.layers))
        self.sample_index = np.asarray(sample_index, dtype=np.int64).reshape(n)
        self.n_clusters = [int(k) for k in n_clusters]
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        seen = max(int(self.labels.max(initial=-1)), int(self.predictions.max(initial=-1))) + 1
        self.n_classes = max(int(n_classes or 0), seen)
        self.class_names = list(class_names) if class_names else None

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        acc = self.accuracy
        acc_s = f", accuracy {acc:.3f}" if acc is not None else ""
        return (
            f"Signatures(split={self.split!r}, {self.n_samples} samples x {len(self.layers)} "
            f"layers, {self.n_signatures} distinct signatures{acc_s})"
        )

    @property
    def n_samples(self) -> int:
        return int(self.cluster_ids.shape[0])

    @property
    def labelled(self) -> np.ndarray:
        """Boolean mask of samples with a known label."""
        return self.labels >= 0

    @property
    def has_labels(self) -> bool:
        return bool(self.labelled.any())

    @property
    def correct(self) -> np.ndarray:
        """Boolean mask: labelled and predicted as labelled."""
        return self.labelled & (self.labels == self.predictions)

    @property
    def accuracy(self) -> float | None:
        """Model accuracy over labelled samples (None without labels)."""
        m = self.labelled
        return float(self.correct.sum() / m.sum()) if m.any() else None

    @property
    def n_signatures(self) -> int:
        """Number of distinct signatures (cluster paths)."""
        if self.n_samples == 0:
            return 0
        return int(np.unique(self.cluster_ids, axis=0).shape[0])

    def subset(self, mask: np.ndarray) -> Signatures:
        """The signatures of the samples where ``mask`` (bool or index array) holds."""
        return Signatures(
            self.split, self.layers, self.cluster_ids[mask], self.labels[mask],
            self.predictions[mask], self.distances[mask], self.sample_index[mask],
            self.n_clusters, self.n_classes, self.class_names, self.rows[mask],
        )

    def _need_labels(self, what: str) -> None:
        if not self.has_labels:
            raise MissingLabelsError(
                f"Split {self.split!r} has no labels, which {what} needs. Capture the split with "
                "labels, or use by='output' to count predicted classes instead."
            )

    def _classes(self, by: str) -> np.ndarray:
        if by in ("input", "label"):
            self._need_labels("class counts")
            return self.labels
        if by in ("output", "prediction"):
            return self.predictions
        raise ValueError(f"by must be 'input' or 'output'; got {by!r}.")

    # ------------------------------------------------------------------ main table
    def table(self, *, as_frame: bool = False) -> Any:
        """The prototype's table: one row per distinct (input class, signature, output class).

        Columns ``input_class`` (-1 when unknown), ``signature`` (tuple of
        cluster ids, one per layer), ``output_class``, ``count``; sorted by
        count (descending), then input class, signature and output class.

        Parameters
        ----------
        as_frame : bool
            Return a pandas DataFrame instead of a :class:`Table`.
        """
        L = len(self.layers)
        M = np.column_stack([self.labels, self.cluster_ids.astype(np.int64), self.predictions])
        if M.shape[0] == 0:
            return _maybe_frame(Table(["input_class", "signature", "output_class", "count"], []),
                                as_frame)
        uniq, counts = np.unique(M, axis=0, return_counts=True)
        keys = [uniq[:, L + 1]] + [uniq[:, 1 + j] for j in reversed(range(L))] + [uniq[:, 0], -counts]
        order = np.lexsort(keys)
        rows = [
            (int(u[0]), tuple(int(x) for x in u[1 : L + 1]), int(u[L + 1]), int(c))
            for u, c in zip(uniq[order], counts[order], strict=False)
        ]
        return _maybe_frame(Table(["input_class", "signature", "output_class", "count"], rows),
                            as_frame)

    def by_output_class(self, *, as_frame: bool = False) -> Any:
        """Signatures leading to each output class.

        Columns ``output_class``, ``signature``, ``count``, ``n_correct``
        (samples whose label is that output class), ``n_misclassified``
        (labelled, label differs); sorted by output class, then count
        (descending), then signature.
        """
        L = len(self.layers)
        M = np.column_stack([self.predictions, self.cluster_ids.astype(np.int64)])
        cols = ["output_class", "signature", "count", "n_correct", "n_misclassified"]
        if M.shape[0] == 0:
            return _maybe_frame(Table(cols, []), as_frame)
        uniq, inv, counts = np.unique(M, axis=0, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        n_ok = np.bincount(inv, weights=self.correct, minlength=len(uniq)).astype(np.int64)
        n_bad = np.bincount(inv, weights=self.labelled & ~self.correct,
                            minlength=len(uniq)).astype(np.int64)
        keys = [uniq[:, 1 + j] for j in reversed(range(L))] + [-counts, uniq[:, 0]]
        order = np.lexsort(keys)
        rows = [
            (int(uniq[i, 0]), tuple(int(x) for x in uniq[i, 1:]), int(counts[i]),
             int(n_ok[i]), int(n_bad[i]))
            for i in order
        ]
        return _maybe_frame(Table(cols, rows), as_frame)

    def by_signature(self, *, as_frame: bool = False) -> Any:
        """One row per distinct signature.

        Columns ``signature``, ``count``, ``majority_class`` (most frequent
        input class, -1 without labels), ``purity`` (its share of the
        labelled samples), ``n_misclassified``, ``by_class`` (dict input
        class -> count), ``by_output`` (dict output class -> count); sorted by
        count (descending), then signature.
        """
        cols = ["signature", "count", "majority_class", "purity", "n_misclassified",
                "by_class", "by_output"]
        if self.n_samples == 0:
            return _maybe_frame(Table(cols, []), as_frame)
        uniq, inv, counts = np.unique(self.cluster_ids, axis=0, return_inverse=True,
                                      return_counts=True)
        inv = inv.reshape(-1)
        C = max(self.n_classes, 1)
        lab = self.labelled
        by_class = np.zeros((len(uniq), C), dtype=np.int64)
        np.add.at(by_class, (inv[lab], self.labels[lab]), 1)
        by_out = np.zeros((len(uniq), C), dtype=np.int64)
        np.add.at(by_out, (inv, np.clip(self.predictions, 0, C - 1)), 1)
        bad = np.bincount(inv, weights=lab & ~self.correct, minlength=len(uniq)).astype(np.int64)
        keys = [uniq[:, j] for j in reversed(range(uniq.shape[1]))] + [-counts]
        rows = []
        for i in np.lexsort(keys):
            n_lab = int(by_class[i].sum())
            maj = int(by_class[i].argmax()) if n_lab else -1
            rows.append((
                tuple(int(x) for x in uniq[i]), int(counts[i]), maj,
                float(by_class[i, maj] / n_lab) if n_lab else None, int(bad[i]),
                {int(c): int(v) for c, v in enumerate(by_class[i]) if v},
                {int(c): int(v) for c, v in enumerate(by_out[i]) if v},
            ))
        return _maybe_frame(Table(cols, rows), as_frame)

    # ------------------------------------------------------------------ per layer
    def composition(self, *, by: str = "input") -> list[np.ndarray]:
        """Per layer, a (n_clusters, n_classes) matrix of sample counts.

        Parameters
        ----------
        by : {"input", "output"}
            Count by true label (samples without a label are left out) or by
            predicted class.
        """
        cls = self._classes(by)
        keep = cls >= 0
        C = max(self.n_classes, 1)
        out = []
        for j, k in enumerate(self.n_clusters):
            m = np.zeros((k, C), dtype=np.int64)
            np.add.at(m, (self.cluster_ids[keep, j], cls[keep]), 1)
            out.append(m)
        return out

    def transitions(self, *, include_io: bool = False, as_frame: bool = False) -> Any:
        """Counts between consecutive layers' clusters, split by input class (Sankey links).

        Columns ``source_layer``, ``source``, ``target_layer``, ``target``,
        ``input_class`` (-1 when unknown), ``count``. With ``include_io`` the
        links from the input class to the first layer (``source_layer`` is
        ``"input"``) and from the last layer to the output class
        (``target_layer`` is ``"output"``) are included too.
        """
        cols = [self.labels]
        names = ["input"]
        for j, name in enumerate(self.layers):
            cols.append(self.cluster_ids[:, j].astype(np.int64))
            names.append(name)
        cols.append(self.predictions)
        names.append("output")
        pairs = range(len(cols) - 1) if include_io else range(1, len(cols) - 2)
        rows = []
        for a in pairs:
            M = np.column_stack([cols[a], cols[a + 1], self.labels])
            if M.shape[0] == 0:
                continue
            uniq, counts = np.unique(M, axis=0, return_counts=True)
            for u, c in zip(uniq, counts, strict=False):
                rows.append((names[a], int(u[0]), names[a + 1], int(u[1]), int(u[2]), int(c)))
        table = Table(["source_layer", "source", "target_layer", "target", "input_class", "count"],
                      rows)
        return _maybe_frame(table, as_frame)

    def joint_table(self, scores: np.ndarray | None = None) -> dict[str, Any]:
        """The distinct ``(label, cluster ids..., prediction)`` rows (sorted) with their
        ``counts`` (:mod:`nnsig_core.analysis.joint`); with ``scores`` (one per sample),
        each row's ``sums`` of finite scores and their number, ``n_scored``."""
        return joint_part(self.labels, self.cluster_ids, self.predictions, scores)

    def exemplars(self, *, n: int = 5, mask: np.ndarray | None = None) -> list[list[list[int]]]:
        """Per layer, per cluster: the split positions of the ``n`` samples nearest the centre.

        Parameters
        ----------
        n : int
            Exemplars per cluster (fewer when the cluster is smaller).
        mask : ndarray of bool, optional
            Consider only these samples (e.g. ``sigs.correct``).

        Returns
        -------
        list of list of list of int
            ``out[layer][cluster]``: row positions in the split, nearest first
            (ties by position).
        """
        idx = np.arange(self.n_samples) if mask is None else np.flatnonzero(mask)
        out = []
        for j, k in enumerate(self.n_clusters):
            ids = self.cluster_ids[idx, j]
            order = idx[np.lexsort((self.rows[idx], self.distances[idx, j], ids))]
            sorted_ids = self.cluster_ids[order, j]
            starts = np.searchsorted(sorted_ids, np.arange(k))
            ends = np.searchsorted(sorted_ids, np.arange(k), side="right")
            out.append([[int(self.rows[r]) for r in order[s : min(e, s + n)]]
                        for s, e in zip(starts, ends, strict=False)])
        return out

    # ------------------------------------------------------------------ per-sample export
    def per_sample(self) -> Table:
        """One row per sample: position, data set index, label, prediction, correct, clusters, distances."""
        cols = ["row", "sample_index", "label", "prediction", "correct"]
        cols += [f"cluster:{n}" for n in self.layers] + [f"distance:{n}" for n in self.layers]
        ok = self.correct
        rows = [
            (int(self.rows[i]), int(self.sample_index[i]), int(self.labels[i]),
             int(self.predictions[i]), bool(ok[i]),
             *(int(x) for x in self.cluster_ids[i]), *(float(x) for x in self.distances[i]))
            for i in range(self.n_samples)
        ]
        return Table(cols, rows)

    def to_frame(self) -> Any:
        """Per-sample pandas DataFrame (see :meth:`per_sample`); needs pandas."""
        from nnsig_core.analysis.tables import require_pandas

        pd = require_pandas()
        data: dict[str, Any] = {
            "row": self.rows, "sample_index": self.sample_index, "label": self.labels,
            "prediction": self.predictions, "correct": self.correct,
        }
        for j, n in enumerate(self.layers):
            data[f"cluster:{n}"] = self.cluster_ids[:, j]
        for j, n in enumerate(self.layers):
            data[f"distance:{n}"] = self.distances[:, j]
        return pd.DataFrame(data)

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """Per-sample CSV (written to ``path``, or returned as a string)."""
        return self.per_sample().to_csv(path)

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Per-sample JSON records (written to ``path`` too when given)."""
        return self.per_sample().to_json(path)

    def export(self, out_dir: str | os.PathLike[str]) -> list[str]:
        """Write every view of the split as CSV files into ``out_dir`` (used by ``nnsig export``).

        Files (``<split>`` is the split name): ``signatures_<split>.csv`` (per
        sample), ``table_<split>.csv`` (the prototype's table),
        ``by_output_<split>.csv``, ``by_signature_<split>.csv``,
        ``transitions_<split>.csv`` (with the input and output columns) and,
        when the split has labels, ``composition_<split>.csv``.

        Returns
        -------
        list of str
            The names of the files written, in that order.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        s = self.split
        views: list[tuple[str, Table]] = [
            (f"signatures_{s}.csv", self.per_sample()),
            (f"table_{s}.csv", self.table()),
            (f"by_output_{s}.csv", self.by_output_class()),
            (f"by_signature_{s}.csv", self.by_signature()),
            (f"transitions_{s}.csv", self.transitions(include_io=True)),
        ]
        if self.has_labels:
            views.append((f"composition_{s}.csv", self.cluster_composition()))
        for name, table in views:
            table.to_csv(out / name)
        return [name for name, _ in views]
