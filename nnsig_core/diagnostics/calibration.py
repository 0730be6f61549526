"""What the scorer's components are standardised on, and which layers form ``combined``.

:class:`ReferenceChoice` is that half of
:class:`~nnsig_core.diagnostics.scorer.SignatureScorer` (a mixin): at ``fit``,
from the fit split (a subsample of the training samples scored leave-one-out
is the *reference*; the fit split's misclassified samples of the known classes
are the *target* the layers are chosen on); with :meth:`ReferenceChoice.calibrate`,
from a held-out validation split of known classes (its correct samples the
reference, its errors the target).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from nnsig_core._params import validate_params
from nnsig_core._warnings import warn
from nnsig_core.diagnostics.combine import LayerCombiner, ScoreCombiner, check_known_labels
from nnsig_core.diagnostics.components import NEIGHBOUR_SCORES, SCORES
from nnsig_core.diagnostics.geometry import Distances
from nnsig_core.diagnostics.neighbours import neighbour_scores
from nnsig_core.execute.client import ClientArg
from nnsig_core.store import ActivationStore, open_store

log = logging.getLogger("nnsig")

StoreArg = ActivationStore | str | os.PathLike


class ReferenceChoice:
    """The reference and the target of a :class:`SignatureScorer` (see the module doc)."""

    components: Any
    method: str
    n_reference: int
    n_neighbors: int
    random_state: Any
    classes_: list[int]
    layers_: list[str]
    _nnsig_constraints: dict[str, Any]

    def _fit_reference(self, store: ActivationStore, split: str, labels: np.ndarray,
                       preds: np.ndarray, rows: np.ndarray, ids: np.ndarray, dist: Distances,
                       y: np.ndarray, client: ClientArg = False) -> None:
        """The internal reference (training samples, leave-one-out) and target (the fit split's
        misclassified samples of the known classes); their neighbour search on ``client``'s
        cluster when one is given."""
        comps = self._requested()
        rng = np.random.default_rng(self.random_state)
        ref_pool = np.flatnonzero(np.isin(rows, self.neighbours_.layer(self.layers_[0])
                                          .reference_rows_))
        pick = np.sort(rng.choice(ref_pool, min(int(self.n_reference), ref_pool.size),
                                  replace=False))
        wrong = np.flatnonzero(np.isin(labels, self.classes_) & (labels != preds))
        if wrong.size > self.n_reference:
            wrong = np.sort(rng.choice(wrong, int(self.n_reference), replace=False))
        self.n_misclassified_ = int(wrong.size)
        both = np.union1d(rows[pick], wrong)
        layer = neighbour_scores(self.neighbours_, store, split, both, preds[both],
                                 n_neighbors=self.n_neighbors, leave_one_out=True,
                                 client=client)
        is_ref = np.isin(both, rows[pick])
        ref = {k: {t: v[is_ref] for t, v in d.items()} for k, d in layer.items()}
        self.layer_combiner_ = LayerCombiner()
        if wrong.size:
            self.layer_combiner_.fit(ref, layer, ~is_ref)
        else:
            warn(f"The fit split {split!r} has no misclassified sample of the known classes: "
                 "the combined score averages every layer. Pass a validation split.")
            self.layer_combiner_.fit(ref)
        nearest = None if np.isnan(dist.own).any() else (dist.own[pick], dist.other[pick])
        path = self.stats_.scores(ids[pick], dist.assigned[pick], y[pick], loo=True,
                                  nearest=nearest)
        self.components_ = [c for c in comps if c in path or c in NEIGHBOUR_SCORES]
        self.reference_ = {**path, **self._aggregate(ref)}
        self.reference_ = {c: self.reference_[c] for c in self.components_}
        self._set_combiner(None)

    def _requested(self) -> list[str]:
        return list(self.components) if self.components is not None else list(SCORES)

    def _set_combiner(self, tuned: tuple[dict[str, np.ndarray], Any, Any] | None) -> None:
        if self.method == "layers":
            self.combiner_: Any = self.layer_combiner_
            return
        combiner = ScoreCombiner(method=self.method if tuned is not None else "rank",
                                 components=self.components_)
        if tuned is None:
            if self.method == "logistic":
                log.info("method='logistic' needs a validation split; until calibrate() the "
                         "combined score is the mean rank.")
            self.combiner_ = combiner.fit(self.reference_)
        else:
            comp, labels, preds = tuned
            self.combiner_ = combiner.fit(comp, labels, preds, self.classes_)

    # ------------------------------------------------------------------ calibration
    def calibrate(self, store: StoreArg, split: str, *, method: str | None = None,
                  client: ClientArg = None) -> Any:
        """Take the reference and the layers of ``combined`` from a validation split.

        Every label of ``split`` must be one of the analysis's known classes
        (``classes_``): its correctly classified samples become the reference
        the components are standardised on, and the layers (or, with
        ``method="rank"``/``"logistic"``, the combination of the components)
        are chosen to detect its misclassified samples. Never novel classes.

        Raises
        ------
        NovelClassError
            ``split`` holds a label the analysis was not fitted on.
        MissingLabelsError
            ``split`` has samples without labels.
        """
        self._check_fitted(need_analysis=True)
        if method is not None:
            validate_params(self.set_params(method=method), self._nnsig_constraints)
        store = open_store(store)
        check_known_labels(store.labels(split), self.classes_, f"validation split {split!r}")
        if split == self.analysis_.fit_split_:
            warn(f"Calibrating on the fit split {split!r}: hold out a validation split of known "
                 "classes instead (fit() already uses the fit split).")
        comp, layer, labels, preds = self._split_components(store, split, client)
        wrong = labels != preds
        ok = ~wrong
        if ok.sum() < 2:
            raise ValueError(f"Validation split {split!r} has {int(ok.sum())} correctly "
                             "classified sample(s): too few to standardise the scores on.")
        ref = {k: {t: v[ok] for t, v in d.items()} for k, d in layer.items()}
        self.layer_combiner_ = LayerCombiner()
        if wrong.any():
            self.layer_combiner_.fit(ref, layer, wrong)
        else:
            warn(f"Validation split {split!r} has no misclassified sample: the combined score "
                 "averages every layer.")
            self.layer_combiner_.fit(ref)
        comp.update(self._aggregate(layer))
        comp = {c: comp[c] for c in self.components_ if c in comp}
        if self.method != "layers" and not wrong.any():
            raise ValueError(f"method={self.method!r} is tuned on the validation split's "
                             "errors, and it has none.")
        self._set_combiner(None if self.method == "layers" else
                           (comp, labels, preds))
        self.validation_split_ = split
        return self
