"""Signatures of a split: each sample's cluster id in each analysed layer, and views of them.

Views come from the joint table (:mod:`nnsig_core.analysis.joint`), a reduction that runs in
memory or on a Dask cluster alike; only the per-sample views bring every sample here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from nnsig_core.analysis.joint import joint_merge, joint_part
from nnsig_core.analysis.joint_views import JointTableViews
from nnsig_core.analysis.tables import Table
from nnsig_core.execute.blocks import is_lazy, reduce_columns

#: The formats of :meth:`Signatures.export`.
EXPORT_FORMATS = ("csv", "json", "parquet", "datasets")


def _nearest(ids: np.ndarray, dist: np.ndarray, rows: np.ndarray,
             n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cluster id, the ``n`` rows nearest their centre (ties by position), sorted by id."""
    order = np.lexsort((rows, dist, ids))
    ids, dist, rows = ids[order], dist[order], rows[order]
    if ids.size:
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        rank = np.arange(ids.size) - np.repeat(starts, np.diff(np.r_[starts, ids.size]))
        keep = rank < n
        ids, dist, rows = ids[keep], dist[keep], rows[keep]
    return ids, dist, rows


def nearest_part(ids: np.ndarray, dist: np.ndarray, rows: np.ndarray,
                 mask: np.ndarray | None = None, *, n: int, lo: int = 0) -> dict[str, Any]:
    """Per layer: the ``n`` samples of a block nearest their centre in each cluster."""
    ids, dist, rows = np.asarray(ids), np.asarray(dist), np.asarray(rows)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        ids, dist, rows = ids[keep], dist[keep], rows[keep]
    return {"layers": [_nearest(ids[:, j], dist[:, j], rows, n) for j in range(ids.shape[1])]}


def nearest_merge(*parts: dict[str, Any], n: int) -> dict[str, Any]:
    """Merge the :func:`nearest_part` of several blocks."""
    layers = []
    for j in range(len(parts[0]["layers"])):
        ids, dist, rows = (np.concatenate([p["layers"][j][i] for p in parts]) for i in range(3))
        layers.append(_nearest(ids, dist, rows, n))
    return {"layers": layers}


class Signatures(JointTableViews):
    """Cluster ids of every sample of a split in every analysed layer.

    The per-sample arrays are NumPy arrays, or dask arrays on a cluster.

    Parameters
    ----------
    split : str
    layers : sequence of str
        Analysed layer names, in model order.
    cluster_ids : array (n_samples, n_layers) of int
    labels, predictions, sample_index : array (n_samples,) of int
        ``labels`` is -1 where unknown.
    distances : array (n_samples, n_layers) of float
        Euclidean distance to the assigned centre, in the clustering space.
    n_clusters : sequence of int
        Clusters per layer.
    n_classes : int, optional
        Number of classes (default: from labels and predictions).
    class_names : sequence of str, optional
    rows : array of int, optional
        Position of each sample in the split (default ``arange``).
    client : dask.distributed.Client, optional
        The cluster that holds dask arrays.
    n_samples : int, optional
        The number of samples when the arrays are lazy.
    """

    def __init__(self, split: str, layers: Sequence[str], cluster_ids: Any, labels: Any,
                 predictions: Any, distances: Any, sample_index: Any, n_clusters: Sequence[int],
                 *, n_classes: int | None = None, class_names: Sequence[str] | None = None,
                 rows: Any = None, client: Any = None, n_samples: int | None = None) -> None:
        self.split = split
        self.layers = list(layers)
        self.n_clusters = [int(k) for k in n_clusters]
        self.class_names = list(class_names) if class_names else None
        self.client = client
        self._n_classes_arg = int(n_classes or 0)
        self._joint: dict[str, Any] | None = None
        self._whole = rows is None  # every sample of the split, in order
        L = len(self.layers)
        if is_lazy(cluster_ids):
            from nnsig_core.execute.dask_blocks import positions_like

            self.cluster_ids, self.labels, self.predictions = cluster_ids, labels, predictions
            self.distances, self.sample_index = distances, sample_index
            self.rows = rows if rows is not None else positions_like(cluster_ids)
            self._n = n_samples
            return
        self.cluster_ids = np.asarray(cluster_ids, dtype=np.int32).reshape(-1, L)
        n = self.cluster_ids.shape[0]
        self._n = n
        self.labels = np.asarray(labels, dtype=np.int64).reshape(n)
        self.predictions = np.asarray(predictions, dtype=np.int64).reshape(n)
        self.distances = np.asarray(distances, dtype=np.float32).reshape(n, L)
        self.sample_index = np.asarray(sample_index, dtype=np.int64).reshape(n)
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)

    @property
    def lazy(self) -> bool:
        """Whether the per-sample arrays are dask arrays (on a cluster)."""
        return is_lazy(self.cluster_ids)

    def joint_table(self, scores: Any = None) -> dict[str, Any]:
        """The distinct ``(label, cluster ids..., prediction)`` rows (sorted) with their
        ``counts`` (:mod:`nnsig_core.analysis.joint`), as one reduction; with ``scores`` (one
        per sample), each row's ``sums`` of finite scores and their number, ``n_scored``."""
        if scores is None and self._joint is not None:
            return self._joint
        columns = [self.labels, self.cluster_ids, self.predictions]
        if scores is not None:
            columns.append(scores)
        joint = reduce_columns(joint_part, joint_merge, columns, client=self.client)
        if scores is None:
            self._joint = joint
        return joint

    def joint(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct ``(label, cluster ids..., prediction)`` rows (sorted) and their counts."""
        t = self.joint_table()
        return t["rows"], t["counts"]

    def _cols(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        T, w = self.joint()
        L = len(self.layers)
        return T[:, 0], T[:, 1 : L + 1], T[:, L + 1], w

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        acc = self.accuracy
        acc_s = f", accuracy {acc:.3f}" if acc is not None else ""
        where = ", on a Dask cluster" if self.lazy else ""
        return (f"Signatures(split={self.split!r}, {self.n_samples} samples x "
                f"{len(self.layers)} layers, {self.n_signatures} distinct signatures"
                f"{acc_s}{where})")

    @property
    def n_samples(self) -> int:
        if self._n is None:
            self._n = int(self.joint()[1].sum())
        return self._n

    @property
    def n_classes(self) -> int:
        """Number of classes: the one given, or more when labels or predictions say so."""
        lab, _, pred, _ = self._cols()
        seen = max(int(lab.max(initial=-1)), int(pred.max(initial=-1))) + 1
        return max(self._n_classes_arg, seen)

    @property
    def labelled(self) -> Any:
        """Boolean mask of samples with a known label (lazy on a cluster)."""
        return self.labels >= 0

    @property
    def has_labels(self) -> bool:
        return bool((self._cols()[0] >= 0).any())

    @property
    def correct(self) -> Any:
        """Boolean mask: labelled and predicted as labelled (lazy on a cluster)."""
        return (self.labels >= 0) & (self.labels == self.predictions)

    @property
    def accuracy(self) -> float | None:
        """Model accuracy over labelled samples (None without labels)."""
        lab, _, pred, w = self._cols()
        m = lab >= 0
        total = int(w[m].sum())
        return float(w[m & (lab == pred)].sum() / total) if total else None

    @property
    def n_signatures(self) -> int:
        """Number of distinct signatures (cluster paths)."""
        _, ids, _, w = self._cols()
        return int(np.unique(ids, axis=0).shape[0]) if w.size else 0

    def subset(self, mask: Any) -> Signatures:
        """The signatures of the samples where ``mask`` (bool or index array; a dask array on
        a cluster, where the subset stays lazy) holds."""
        if self.lazy and not is_lazy(mask):
            from nnsig_core.execute.dask_blocks import as_dask

            mask = as_dask(np.asarray(mask, dtype=bool), self.labels.chunks[0])
        return Signatures(self.split, self.layers, self.cluster_ids[mask], self.labels[mask],
                          self.predictions[mask], self.distances[mask], self.sample_index[mask],
                          self.n_clusters, n_classes=self.n_classes, class_names=self.class_names,
                          rows=self.rows[mask], client=self.client)

    def compute(self) -> Signatures:
        """The signatures with every sample in this process (``self`` when they already are)."""
        if not self.lazy:
            return self
        from nnsig_core.execute.dask_blocks import compute

        ids, lab, pred, dist, si, rows = compute(
            [self.cluster_ids, self.labels, self.predictions, self.distances, self.sample_index,
             self.rows], self.client)
        # The count given, not self.n_classes: what the labels and predictions add to it
        # follows from the arrays computed here (no reduction on the cluster first).
        out = Signatures(self.split, self.layers, ids, lab, pred, dist, si, self.n_clusters,
                         n_classes=self._n_classes_arg, class_names=self.class_names, rows=rows)
        out._whole = self._whole
        return out

    def exemplars(self, *, n: int = 5, mask: Any = None) -> list[list[list[int]]]:
        """Per layer, per cluster: the split positions of the ``n`` samples nearest the centre.

        Parameters
        ----------
        n : int
            Exemplars per cluster.
        mask : array of bool, optional
            Consider only these samples (e.g. ``sigs.correct``).

        Returns
        -------
        list of list of list of int
            ``out[layer][cluster]``: row positions, nearest first (ties by position).
        """
        columns = [self.cluster_ids, self.distances, self.rows]
        if mask is not None:
            columns.append(mask if is_lazy(mask) else np.asarray(mask, dtype=bool))
        r = reduce_columns(nearest_part, nearest_merge, columns, merge_kw={"n": n}, n=n,
                           client=self.client)
        out = []
        for (ids, _, rows), k in zip(r["layers"], self.n_clusters, strict=True):
            starts = np.searchsorted(ids, np.arange(k))
            ends = np.searchsorted(ids, np.arange(k), side="right")
            out.append([[int(x) for x in rows[s:e]] for s, e in zip(starts, ends, strict=True)])
        return out

    def per_sample(self) -> Table:
        """One row per sample: position, data set index, label, prediction, correct (None for
        an unlabelled sample: neither right nor wrong), clusters, distances (brings every
        sample into this process)."""
        s = self.compute()
        cols = ["row", "sample_index", "label", "prediction", "correct"]
        cols += [f"cluster:{n}" for n in s.layers] + [f"distance:{n}" for n in s.layers]
        ok = s.correct
        rows = [(int(s.rows[i]), int(s.sample_index[i]), int(s.labels[i]),
                 int(s.predictions[i]), bool(ok[i]) if s.labels[i] >= 0 else None,
                 *(int(x) for x in s.cluster_ids[i]), *(float(x) for x in s.distances[i]))
                for i in range(s.n_samples)]
        return Table(cols, rows)

    def _with_scores(self, table: Table, scores: Mapping[str, Any] | None) -> Table:
        if not scores:
            return table
        cols = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in scores.items()}
        for k, v in cols.items():
            if v.size != self.n_samples:
                raise ValueError(f"Score {k!r} has {v.size} values; split {self.split!r} has "
                                 f"{self.n_samples} samples.")
        rows = [(*r, *(None if not np.isfinite(v[i]) else float(v[i]) for v in cols.values()))
                for i, r in enumerate(table.rows)]
        return Table([*table.columns, *(f"score:{k}" for k in cols)], rows)

    def to_frame(self) -> Any:
        """Per-sample pandas DataFrame (see :meth:`per_sample`); needs pandas."""
        from nnsig_core.analysis.tables import require_pandas

        pd = require_pandas()
        s = self.compute()
        data: dict[str, Any] = {
            "row": s.rows, "sample_index": s.sample_index, "label": s.labels,
            "prediction": s.predictions,
            # a nullable boolean: an unlabelled sample is neither correct nor wrong
            "correct": pd.array([bool(c) if lab >= 0 else None for lab, c in
                                 zip(np.asarray(s.labels), np.asarray(s.correct), strict=True)],
                                dtype="boolean"),
            **{f"cluster:{n}": s.cluster_ids[:, j] for j, n in enumerate(s.layers)},
            **{f"distance:{n}": s.distances[:, j] for j, n in enumerate(s.layers)},
        }
        return pd.DataFrame(data)

    def to_hf_dataset(self, *, scores: Mapping[str, Any] | None = None) -> Any:
        """Per-sample Hugging Face ``datasets.Dataset`` (:meth:`per_sample`'s columns, and a
        ``score:<name>`` column per score in ``scores``); needs ``datasets``."""
        return self._with_scores(self.per_sample(), scores).to_hf_dataset()

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """Per-sample CSV (written to ``path``, or returned as a string)."""
        return self.per_sample().to_csv(path)

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Per-sample JSON records (written to ``path`` too when given)."""
        return self.per_sample().to_json(path)

    def _with_token_rows(self, table: Table, tokens: Mapping[str, Any] | None) -> Table:
        """``table`` with a token row space's ``sample_row``, ``position`` and ``token``
        columns after ``sample_index`` (which input, where in it, which token)."""
        if not tokens:
            return table
        cols = {k: np.asarray(tokens[k], dtype=np.int64).reshape(-1)
                for k in ("sample_row", "position", "token")}
        if any(v.size != self.n_samples for v in cols.values()):
            raise ValueError(f"token rows of another length than split {self.split!r}'s "
                             f"{self.n_samples} rows.")
        at = table.columns.index("sample_index") + 1
        rows = [(*r[:at], *(int(v[i]) for v in cols.values()), *r[at:])
                for i, r in enumerate(table.rows)]
        return Table([*table.columns[:at], *cols, *table.columns[at:]], rows)

    def export(self, out_dir: str | os.PathLike[str], *, format: str = "csv",
               scores: Mapping[str, Any] | None = None,
               token_rows: Mapping[str, Any] | None = None) -> list[str]:
        """Write every view of the split into ``out_dir`` (used by ``nnsig export``).

        Files ``signatures_<split>.<ext>`` (per sample, with a ``score:<name>`` column per
        score), ``table_<split>``, ``by_output_<split>``, ``by_signature_<split>``,
        ``transitions_<split>`` and, with labels, ``composition_<split>``; with
        ``"datasets"``, directories without an extension (``datasets.load_from_disk``).

        Parameters
        ----------
        out_dir : path
        format : {"csv", "json", "parquet", "datasets"}
            Parquet needs pyarrow, datasets the ``datasets`` package.
        scores : mapping of str to array-like (n,), optional
            Per-sample scores of this split, added to the per-sample file.
        token_rows : mapping, optional
            Of a token row space (``store.token_rows(split)``): its ``sample_row``,
            ``position`` and ``token`` columns, added to the per-sample file.

        Returns
        -------
        list of str
            The names of the files written, in that order.
        """
        if format not in EXPORT_FORMATS:
            raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}, not {format!r}.")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        s, ext = self.split, "" if format == "datasets" else f".{format}"
        views: list[tuple[str, Table]] = [
            (f"signatures_{s}{ext}",
             self._with_scores(self._with_token_rows(self.per_sample(), token_rows), scores)),
            (f"table_{s}{ext}", self.table()),
            (f"by_output_{s}{ext}", self.by_output_class()),
            (f"by_signature_{s}{ext}", self.by_signature()),
            (f"transitions_{s}{ext}", self.transitions(include_io=True)),
        ]
        if self.has_labels:
            views.append((f"composition_{s}{ext}", self.cluster_composition()))
        for name, table in views:
            if format != "datasets":
                getattr(table, f"to_{format}")(out / name)
            else:
                with _progress_on_a_terminal():
                    table.to_hf_dataset().save_to_disk(str(out / name))
        return [name for name, _ in views]


@contextmanager
def _progress_on_a_terminal() -> Iterator[None]:
    """Hugging Face ``datasets``' progress bars only when stderr is a terminal."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    if was and not sys.stderr.isatty():
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()
