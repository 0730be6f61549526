"""What the scorer's components are standardised on, and which layers form ``combined``.

:class:`ReferenceChoice`, a mixin of :class:`~nnsig_core.diagnostics.scorer.SignatureScorer`,
takes the *reference* and the *target* from the fit split (leave-one-out) at ``fit``, or
from a validation split with :meth:`ReferenceChoice.calibrate`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
from sklearn.exceptions import NotFittedError

from nnsig_core._params import validate_params
from nnsig_core._util import to_json_safe
from nnsig_core._warnings import warn
from nnsig_core.diagnostics.combine import LayerCombiner, ScoreCombiner, check_known_labels
from nnsig_core.diagnostics.components import SCORES
from nnsig_core.diagnostics.conformal import conformal_threshold
from nnsig_core.diagnostics.geometry import Distances
from nnsig_core.diagnostics.neighbours import neighbour_scores
from nnsig_core.execute.client import ClientArg
from nnsig_core.store import ActivationStore, open_store

log = logging.getLogger("nnsig")

StoreArg = ActivationStore | str | os.PathLike


class KeptComponents(NamedTuple):
    """The calibration split's unstandardised components, kept for a ``score`` of that capture."""

    location: str
    split: str
    capture: dict[str, Any]
    components: dict[str, np.ndarray]
    layers: dict[str, dict[str, np.ndarray]]

    def of(self, store: ActivationStore, split: str) -> bool:
        """Whether these are the components of ``split`` of ``store`` as captured now."""
        return (self.location, self.split) == (store.location, split) and \
            self.capture == store.fingerprint(split)


class ScorerState:
    """What :class:`SignatureScorer` defines, declared for the type checker of its mixins."""

    _nnsig_constraints: ClassVar[dict[str, Any]]
    components: Sequence[str] | None
    method: str
    classes_: list[int]
    analysis_: Any
    neighbours_: Any
    stats_: Any
    layer_combiner_: Any
    combiner_: Any
    n_misclassified_: int | None
    validation_split_: str | None

    if TYPE_CHECKING:
        def _check_fitted(self, need_analysis: bool = False) -> None: ...


class ReferenceChoice(ScorerState):
    """The reference and the target of a :class:`SignatureScorer` (see the module doc)."""

    n_reference: int
    n_neighbors: int
    conformal_holdout: float
    random_state: Any
    layers_: list[str]
    reference_: dict[str, np.ndarray] | None
    _calibration_components: KeptComponents | None
    fingerprint_: str

    if TYPE_CHECKING:
        def _aggregate(self, layer: Any) -> dict[str, np.ndarray]: ...
        def _split_components(self, store: ActivationStore, split: str,
                              client: ClientArg = None, aggregate: bool = True) -> Any: ...
        def get_params(self, deep: bool = True) -> dict[str, Any]: ...
        def set_params(self, **params: Any) -> Any: ...

    def _fit_reference(self, store: ActivationStore, split: str, labels: np.ndarray,
                       preds: np.ndarray, rows: np.ndarray, ids: np.ndarray, dist: Distances,
                       y: np.ndarray, client: ClientArg = False) -> None:
        """The reference (training samples, leave-one-out) and target (the fit split's errors)."""
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
        self.components_ = self._components(nearest is not None)
        self.reference_ = {**path, **self._aggregate(ref)}
        self.reference_ = {c: self.reference_[c] for c in self.components_}
        self._set_combiner(None)
        self.conformal_scores_: np.ndarray | None = None
        self.conformal_split_: str | None = None
        self._set_fingerprint(store)

    def _components(self, nearest: bool) -> list[str]:
        """The requested components computed (``class_margin`` needs ``nearest`` distances)."""
        requested = list(self.components) if self.components is not None else list(SCORES)
        return [c for c in requested if c != "class_margin" or nearest]

    def _fit_validation(self, store: ActivationStore, split: str, nearest: bool,
                        client: ClientArg = None) -> None:
        """``fit(..., validation_split=split)``: reference and target from ``split`` alone."""
        self.components_ = self._components(nearest)
        self.reference_ = None
        self.n_misclassified_ = None
        self._calibrate(store, split, None, client)

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
            assert self.reference_ is not None  # untuned: the fit split's reference
            self.combiner_ = combiner.fit(self.reference_)
        else:
            comp, labels, preds = tuned
            self.combiner_ = combiner.fit(comp, labels, preds, self.classes_)

    def calibrate(self, store: StoreArg, split: str, *, method: str | None = None,
                  client: ClientArg = None) -> Any:
        """Take the reference and the layers of ``combined`` from a validation split of known
        classes, and calibrate the conformal threshold on a held-out part of it.

        A share ``conformal_holdout`` of its correct samples (drawn with
        ``random_state``) is held out of every choice to calibrate
        :meth:`threshold`; the other correct samples are the reference, and the
        layers (or the ``method`` combination) are chosen to detect its errors.
        Raises :class:`NovelClassError` or :class:`MissingLabelsError` on a label
        that is not a known class.
        """
        self._check_fitted(need_analysis=True)
        return self._calibrate(open_store(store), split, method, client)

    def _calibrate(self, store: ActivationStore, split: str, method: str | None,
                   client: ClientArg) -> Any:
        if method is not None:
            validate_params(self.set_params(method=method), self._nnsig_constraints)
        fit_labels = store.labels(self.analysis_.fit_split_)
        if self.analysis_.fit_classes_ is not None:  # a class subset: the others are novel
            fit_labels = fit_labels[np.isin(fit_labels, list(self.analysis_.fit_classes_))]
        check_known_labels(store.labels(split), self.classes_, f"validation split {split!r}",
                           fit_labels=fit_labels)
        if split == self.analysis_.fit_split_:
            warn(f"Calibrating on the fit split {split!r}: hold out a validation split of known "
                 "classes instead (fit() already uses the fit split).")
        comp, layer, labels, preds = self._split_components(store, split, client,
                                                             aggregate=False)
        # Kept for score(split) right after, which would otherwise read and search it again.
        self._calibration_components = KeptComponents(store.location, split,
                                                      store.fingerprint(split), dict(comp), layer)
        wrong = labels != preds
        # Token rows: whole inputs are held out, so that no held-out input's other tokens tune
        # the combination (its tokens are not independent of each other).
        inputs = store.token_rows(split)["sample_row"] if store.level(split) == "tokens" else None
        ok, held, tuned = self._conformal_rows(~wrong, inputs)
        if ok.sum() < 2:
            raise ValueError(
                f"Validation split {split!r} has {int(ok.sum())} correctly classified "
                "sample(s) left to standardise the scores on (after holding out "
                f"conformal_holdout={self.conformal_holdout} of them for the threshold): too "
                "few. Use a larger validation split, or a smaller conformal_holdout.")
        ref = {k: {t: v[ok] for t, v in d.items()} for k, d in layer.items()}
        self.layer_combiner_ = LayerCombiner()
        if wrong.any():
            self.layer_combiner_.fit(ref, {k: {t: v[tuned] for t, v in d.items()}
                                           for k, d in layer.items()}, wrong[tuned])
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
                           ({k: v[tuned] for k, v in comp.items()}, labels[tuned], preds[tuned]))
        self.validation_split_ = split
        combined = (self.combiner_.transform(layer) if self.method == "layers"
                    else self.combiner_.transform(comp))
        cal = combined[held]
        self.conformal_scores_ = np.sort(cal[np.isfinite(cal)])
        self.conformal_split_ = split if self.conformal_scores_.size else None
        self._set_fingerprint(store)
        return self

    def _conformal_rows(self, correct: np.ndarray, inputs: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The correct rows of the reference, the correct rows held out for the conformal
        threshold, and the rows that tune the combination (none of a held-out input's).
        ``inputs``: each row's input (token rows), drawn whole; None: rows drawn one by one."""
        rng = np.random.default_rng(self.random_state)
        if inputs is None:
            rows = np.flatnonzero(correct)
            n_held = int(np.floor(float(self.conformal_holdout) * rows.size))
            held = np.zeros(correct.shape[0], dtype=bool)
            held[rng.choice(rows, n_held, replace=False)] = True
            return correct & ~held, held, ~held
        groups = np.unique(np.asarray(inputs)[correct])
        n_held = int(np.floor(float(self.conformal_holdout) * groups.size))
        out = np.isin(inputs, rng.choice(groups, n_held, replace=False))
        return correct & ~out, correct & out, ~out

    def threshold(self, alpha: float = 0.05) -> float:
        """The split-conformal threshold of ``combined`` for a false-positive rate ``alpha``
        on correct inputs like the validation split's: flag a score above it.

        Raises :class:`NotFittedError` unless the scorer was calibrated.
        """
        self._check_fitted()
        cal = getattr(self, "conformal_scores_", None)
        if cal is None or not cal.size:
            raise NotFittedError(
                "This scorer has no conformal calibration: calibrate it on a labelled "
                "validation split held out from training (scorer.calibrate(store, 'val'), or "
                "signature_scores(..., validation_split='val')) with conformal_holdout > 0.")
        return conformal_threshold(cal, alpha)

    def _set_fingerprint(self, store: ActivationStore) -> None:
        """``fingerprint_``: a hash of the settings, the analysis's clusters and the captures."""
        splits = [self.analysis_.fit_split_, getattr(self, "validation_split_", None)]
        what = {
            "params": self.get_params(deep=False),
            "analysis": analysis_identity(self.analysis_),
            "splits": {s: store.fingerprint(s) for s in splits if s is not None},
            "validation_split": splits[1],
        }
        text = json.dumps(to_json_safe(what), sort_keys=True, default=str)
        self.fingerprint_ = hashlib.sha256(text.encode()).hexdigest()[:16]


def analysis_identity(analysis: Any) -> str:
    """A hash of an analysis's layers and clusters (its centres, to the bit)."""
    h = hashlib.sha256()
    for name, k in zip(analysis.layers_, analysis.n_clusters_, strict=True):
        h.update(f"{name}:{int(k)};".encode())
        h.update(np.ascontiguousarray(analysis.clusterers_[name].cluster_centers_).tobytes())
    return h.hexdigest()[:16]
