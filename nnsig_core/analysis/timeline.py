"""A training timeline: one analysis per checkpoint, with clusters followed between them by
the probe samples they share (:mod:`~nnsig_core.analysis.tracking`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.analysis.engine import SignatureAnalysis
from nnsig_core.analysis.errors import AnalysisError
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.tracking import EVENT_SHARE, MIN_JACCARD, assign_tracks
from nnsig_core.capture.probe import (
    CHECKPOINT_KEY,
    checkpoint_prefix,
    list_checkpoints,
    stale_checkpoints,
    unfinished_checkpoints,
)
from nnsig_core.store import ActivationStore, open_store

log = logging.getLogger("nnsig")


class Timeline:
    """One signature analysis per checkpoint of a training run, clusters matched over time.

    Parameters
    ----------
    n_clusters : int or mapping of str to int
        Clusters per layer, at every checkpoint.
    min_jaccard : float
        A cluster continues one of the checkpoint before when the Hungarian assignment
        pairs them and their Jaccard index reaches this.
    event_share : float
        The smallest share of a cluster's members that makes it part of a split or merge.
    only_correct : bool
        Fit each checkpoint on its correctly classified samples only (default: all).
    **params
        Other :class:`SignatureAnalysis` parameters; ``progress`` is False by default.

    Attributes
    ----------
    checkpoints_ : list of dict
        Per checkpoint: ``split``, ``step``, ``epoch``... (from
        :func:`~nnsig_core.capture.list_checkpoints`).
    analyses_ : list of SignatureAnalysis
    signatures_ : list of Signatures
        Each checkpoint's split mapped onto its own analysis.
    layers_ : list of str
    tracks_ : list of list of ndarray
        ``tracks_[t][l][c]``: the track id of cluster ``c`` of layer ``l`` at checkpoint ``t``.
    events_ : list of list of list of dict
        ``events_[t][l]``: what happened to layer ``l``'s clusters since checkpoint ``t - 1``.
    n_tracks_ : list of int
        Tracks per layer.
    """

    def __init__(self, *, n_clusters: Any = 10, min_jaccard: float = MIN_JACCARD,
                 event_share: float = EVENT_SHARE, only_correct: bool = False,
                 **params: Any) -> None:
        self.n_clusters = n_clusters
        self.min_jaccard = float(min_jaccard)
        self.event_share = float(event_share)
        self.only_correct = bool(only_correct)
        self.params = {"progress": False, **params}
        self.checkpoints_: list[dict[str, Any]] | None = None

    def fit(self, store: ActivationStore | str | os.PathLike[str],
            splits: Sequence[str] | None = None, *, prefix: str | None = None) -> Timeline:
        """Analyse every checkpoint of ``store`` and match their clusters.

        Parameters
        ----------
        store : ActivationStore or path
        splits : sequence of str, optional
            The checkpoints' splits, in training order (default: every checkpoint a probe
            recorded, by step).
        prefix : str, optional
            Only the checkpoints of the probe with this split prefix.

        Returns
        -------
        Timeline
            ``self``.

        Raises
        ------
        AnalysisError
            Without checkpoints, or with checkpoints that do not hold the same samples.
        """
        store = open_store(store)
        if splits is None:
            records = list_checkpoints(store, prefix=prefix)
            self._check_one_probe(store, records)
            stale = stale_checkpoints(store, records)
            if stale:
                warn(f"Checkpoint(s) {', '.join(stale)} were captured before an earlier step "
                     "was captured again with other weights: they are left from an earlier "
                     "training run, and the timeline joins the two runs. Remove them "
                     "(open_store(..., mode='r+').remove_split(...)), or capture each run with "
                     "its own prefix= (TorchProbe(..., prefix='run2')).")
            unfinished = unfinished_checkpoints(store, prefix)
            if unfinished:
                warn(f"The capture of checkpoint(s) {', '.join(unfinished)} did not finish: the "
                     "timeline leaves them out. Capture them again from the same weights "
                     "(probe.capture(model, step=...)), or remove them "
                     "(open_store(..., mode='r+').remove_split(...)) to silence this.")
        else:
            records = [{"split": s, **(store.split_attrs(s).get(CHECKPOINT_KEY)
                                       or {"step": t, "epoch": None})}
                       for t, s in enumerate(splits)]
        if not records:
            raise AnalysisError(f"{store.location!r} holds no checkpoint: capture some with a "
                                "probe (nnsig_torch.TorchProbe, nnsig_keras.KerasProbe) or pass "
                                "splits=[...]")
        self._check_same_samples(store, [r["split"] for r in records])
        self.store_location_ = store.location
        self.checkpoints_ = records
        self.analyses_, self.signatures_ = [], []
        for r in records:
            a = SignatureAnalysis(n_clusters=self.n_clusters, only_correct=self.only_correct,
                                  **self.params).fit(store, r["split"])
            self.analyses_.append(a)
            self.signatures_.append(a.transform(store, r["split"]))
            log.info("timeline: checkpoint %s analysed", r["split"])
        self.layers_ = list(self.analyses_[0].layers_)
        for a, r in zip(self.analyses_, records, strict=True):
            if list(a.layers_) != self.layers_:
                raise AnalysisError(f"checkpoint {r['split']!r} has other layers than "
                                    f"{records[0]['split']!r}: {a.layers_} vs {self.layers_}")
        per_layer = [assign_tracks([sg.cluster_ids[:, j] for sg in self.signatures_],
                                   [a.n_clusters_[j] for a in self.analyses_],
                                   min_jaccard=self.min_jaccard, event_share=self.event_share)
                     for j in range(len(self.layers_))]
        T = len(records)
        self.tracks_ = [[per_layer[j][0][t] for j in range(len(self.layers_))] for t in range(T)]
        self.events_ = [[per_layer[j][1][t] for j in range(len(self.layers_))] for t in range(T)]
        self.n_tracks_ = [p[2] for p in per_layer]
        return self

    @staticmethod
    def _check_one_probe(store: ActivationStore, records: Sequence[dict[str, Any]]) -> None:
        prefixes = sorted({str(checkpoint_prefix(r["split"])) for r in records})
        if len(prefixes) > 1:
            raise AnalysisError(
                f"{store.location!r} holds the checkpoints of {len(prefixes)} probes (prefixes "
                f"{', '.join(map(repr, prefixes))}); a timeline follows one. Pick it with "
                f"Timeline().fit(store, prefix={prefixes[0]!r}) (nnsig report STORE --timeline "
                f"--prefix {prefixes[0]}).")

    @staticmethod
    def _check_same_samples(store: ActivationStore, splits: Sequence[str]) -> None:
        first = splits[0]
        idx0, lab0 = store.sample_index(first), store.labels(first)
        for s in splits[1:]:
            store.require_complete(s)
            idx, lab = store.sample_index(s), store.labels(s)
            if idx.shape != idx0.shape or not np.array_equal(idx, idx0) or not np.array_equal(lab, lab0):
                raise AnalysisError(f"checkpoints {first!r} and {s!r} do not hold the same probe "
                                    "samples (count, order or labels differ): a timeline follows "
                                    "one fixed probe set")

    def _fitted(self) -> None:
        if self.checkpoints_ is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This Timeline is not fitted: call timeline.fit(store) first.")

    def __len__(self) -> int:
        self._fitted()
        return len(self.checkpoints_ or [])

    def __repr__(self) -> str:
        if self.checkpoints_ is None:
            return "Timeline(not fitted)"
        steps = [r["step"] for r in self.checkpoints_]
        return (f"Timeline({len(steps)} checkpoints, steps {steps[0]}..{steps[-1]}, "
                f"layers {self.layers_}, tracks {self.n_tracks_})")

    def track_paths(self, t: int) -> np.ndarray:
        """``(n_samples, n_layers)``: each probe sample's track id per layer at checkpoint ``t``."""
        self._fitted()
        ids = np.asarray(self.signatures_[t].cluster_ids)
        return np.column_stack([self.tracks_[t][j][ids[:, j]] for j in range(ids.shape[1])])

    def accuracy(self) -> list[float | None]:
        """The accuracy on the probe set at each checkpoint."""
        self._fitted()
        return [sg.accuracy for sg in self.signatures_]

    def changes(self, a: int, b: int) -> dict[str, np.ndarray]:
        """The probe samples whose outcome or path changed between checkpoints ``a`` and ``b``.

        Returns
        -------
        dict of ndarray
            Boolean masks ``fixed`` (wrong at ``a``, right at ``b``), ``broken``,
            ``prediction`` (another predicted class), ``path`` (another track in some
            layer), and ``first_layer``: the first layer whose track changed (-1: none).
        """
        self._fitted()
        sa, sb = self.signatures_[a], self.signatures_[b]
        ra, rb = np.asarray(sa.correct), np.asarray(sb.correct)
        pa, pb = self.track_paths(a), self.track_paths(b)
        diff = pa != pb
        first = np.where(diff.any(axis=1), diff.argmax(axis=1), -1)
        return {"fixed": ~ra & rb, "broken": ra & ~rb,
                "prediction": np.asarray(sa.predictions) != np.asarray(sb.predictions),
                "path": diff.any(axis=1), "first_layer": first}

    def signatures(self, t: int) -> Signatures:
        """The signatures of checkpoint ``t`` (cluster ids of its own analysis)."""
        self._fitted()
        return self.signatures_[t]
