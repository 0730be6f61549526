"""The tables and per-layer figures of :class:`~nnsig_core.analysis.Signatures`, computed from
the joint table alone (as many rows as distinct paths, however many samples)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.analysis.joint import joint_compositions
from nnsig_core.analysis.tables import Table


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


class JointTableViews:
    """Tables and per-layer figures from the joint table (a mixin of ``Signatures``)."""

    split: str
    layers: list[str]
    n_clusters: list[int]

    if TYPE_CHECKING:  # defined by the subclass
        @property
        def n_classes(self) -> int: ...
        @property
        def has_labels(self) -> bool: ...
        def _cols(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
        def joint(self) -> tuple[np.ndarray, np.ndarray]: ...

    def table(self, *, as_frame: bool = False) -> Any:
        """The prototype's table: one row per distinct (input class, signature, output class).

        Columns ``input_class`` (-1 when unknown), ``signature`` (tuple of cluster ids),
        ``output_class``, ``count``; sorted by count (descending), then the others.

        Parameters
        ----------
        as_frame : bool
            Return a pandas DataFrame instead of a :class:`Table`.
        """
        T, counts = self.joint()
        L = len(self.layers)
        cols = ["input_class", "signature", "output_class", "count"]
        keys = [T[:, L + 1]] + [T[:, 1 + j] for j in reversed(range(L))] + [T[:, 0], -counts]
        order = np.lexsort(keys)
        rows = [(int(u[0]), tuple(int(x) for x in u[1 : L + 1]), int(u[L + 1]), int(c))
                for u, c in zip(T[order], counts[order], strict=False)]
        return _maybe_frame(Table(cols, rows), as_frame)

    def by_output_class(self, *, as_frame: bool = False) -> Any:
        """Signatures leading to each output class.

        Columns ``output_class``, ``signature``, ``count``, ``n_correct``,
        ``n_misclassified``; sorted by output class, count (descending), signature.
        """
        lab, ids, pred, w = self._cols()
        L = len(self.layers)
        cols = ["output_class", "signature", "count", "n_correct", "n_misclassified"]
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
        return _maybe_frame(Table(cols, rows), as_frame)

    def by_signature(self, *, as_frame: bool = False) -> Any:
        """One row per distinct signature.

        Columns ``signature``, ``count``, ``majority_class`` (-1 without labels), ``purity``
        (its share of the labelled samples), ``n_misclassified``, ``by_class`` and
        ``by_output`` (dicts class -> count); sorted by count (descending), signature.
        """
        lab, ids, pred, w = self._cols()
        cols = ["signature", "count", "majority_class", "purity", "n_misclassified",
                "by_class", "by_output"]
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
        return _maybe_frame(Table(cols, rows), as_frame)

    def composition(self, *, by: str = "input") -> list[np.ndarray]:
        """Per layer, a (n_clusters, n_classes) matrix of sample counts.

        Parameters
        ----------
        by : {"input", "output"}
            Count by true label (unlabelled samples left out) or by predicted class.
        """
        lab, ids, pred, w = self._cols()
        if by in ("input", "label"):
            if not self.has_labels:
                raise MissingLabelsError(f"Split {self.split!r} has no labels, which class counts "
                                         "needs. Capture the split with labels, or use by='output' "
                                         "to count predicted classes instead.")
            cls = lab
        elif by in ("output", "prediction"):
            cls = pred
        else:
            raise ValueError(f"by must be 'input' or 'output'; got {by!r}.")
        return joint_compositions(cls, ids, w, self.n_clusters, max(self.n_classes, 1))

    def cluster_composition(self, *, by: str = "input", as_frame: bool = False) -> Any:
        """Long table of :meth:`composition`'s non-zero counts: ``layer``, ``cluster``,
        ``class``, ``count``."""
        rows = []
        for name, m in zip(self.layers, self.composition(by=by), strict=False):
            for c, k in zip(*np.nonzero(m), strict=False):
                rows.append((name, int(c), int(k), int(m[c, k])))
        return _maybe_frame(Table(["layer", "cluster", "class", "count"], rows), as_frame)

    def purity(self) -> np.ndarray:
        """Per layer: the share of labelled samples in their cluster's most frequent class
        (NaN without labels)."""
        if not self.has_labels:
            return np.full(len(self.layers), np.nan)
        return np.array([class_purity(m) for m in self.composition(by="input")])

    def entropy(self) -> np.ndarray:
        """Per layer: H(class | cluster) in bits over labelled samples (NaN without labels)."""
        if not self.has_labels:
            return np.full(len(self.layers), np.nan)
        return np.array([class_entropy(m) for m in self.composition(by="input")])

    def transitions(self, *, include_io: bool = False, as_frame: bool = False) -> Any:
        """Counts between consecutive layers' clusters, split by input class (Sankey links).

        Columns ``source_layer``, ``source``, ``target_layer``, ``target``, ``input_class``,
        ``count``; ``include_io`` adds the links from ``"input"`` and to ``"output"``.
        """
        lab, ids, pred, w = self._cols()
        cols = [lab] + [ids[:, j] for j in range(ids.shape[1])] + [pred]
        names = ["input", *self.layers, "output"]
        pairs = range(len(cols) - 1) if include_io else range(1, len(cols) - 2)
        rows = []
        for a in pairs:
            uniq, inv = np.unique(np.column_stack([cols[a], cols[a + 1], lab]), axis=0,
                                  return_inverse=True)
            counts = np.bincount(inv.reshape(-1), weights=w, minlength=len(uniq))
            for u, c in zip(uniq, counts, strict=False):
                rows.append((names[a], int(u[0]), names[a + 1], int(u[1]), int(u[2]), int(c)))
        table = Table(["source_layer", "source", "target_layer", "target", "input_class",
                       "count"], rows)
        return _maybe_frame(table, as_frame)
