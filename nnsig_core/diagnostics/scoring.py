"""The scoring workflow in one call: the analysis's scorer, its scores, saved with both.

The scorer belongs to the analysis (see docs/design.md, "The scoring workflow").
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from nnsig_core._util import to_json_safe
from nnsig_core._warnings import warn
from nnsig_core.diagnostics.persist import (
    can_save,
    save_scorer,
    save_scores,
    saved_score_splits,
    saved_scorer,
    saved_scores_fingerprint,
)
from nnsig_core.diagnostics.scorer import SignatureScorer, StoreArg
from nnsig_core.execute.client import ClientArg
from nnsig_core.store import ActivationStore, StoreError, open_store

log = logging.getLogger("nnsig")


class Scores(dict):
    """The scores of one ``split`` (a ``dict`` of ``{name: (n,) float64}``), with the
    ``fingerprint`` of the scorer that gave them, its ``validation_split`` (None: tuned on
    the fit split), its ``conformal_scores`` (sorted ``combined`` scores, or None) and
    ``conformal_split``."""

    def __init__(self, scores: dict[str, np.ndarray], *, split: str, scorer: SignatureScorer):
        super().__init__(scores)
        self.split = split
        self.fingerprint = scorer.fingerprint_
        self.validation_split = getattr(scorer, "validation_split_", None)
        self.conformal_scores = getattr(scorer, "conformal_scores_", None)
        self.conformal_split = getattr(scorer, "conformal_split_", None)

    def __repr__(self) -> str:
        return (f"Scores(split={self.split!r}, scores={list(self)}, "
                f"fingerprint={self.fingerprint!r})")


def signature_scores(analysis: Any, store: StoreArg, split: str, *,
                     validation_split: str | None = None, method: str | None = None,
                     save: bool = False, name: str | None = None,
                     scorer: SignatureScorer | None = None, client: ClientArg = None,
                     **params: Any) -> Scores:
    """Signature-based suspicion scores of every sample of ``split`` (higher = more suspicious).

    Parameters
    ----------
    analysis : SignatureAnalysis
        Fitted; its fit samples (correctly classified) are the training samples.
    store : ActivationStore or path
        A path is opened read-write when ``save`` (read-only otherwise).
    split : str
        The split to score.
    validation_split : str, optional
        A labelled split of known classes only, held out from training: it
        gives the reference, the layers of ``combined`` and the conformal
        calibration (:class:`~nnsig_core.diagnostics.NovelClassError` if it
        holds an unknown class). Default: the saved scorer's when no other
        setting is given, else none (the fit split then; no threshold).
    method : {"layers", "rank", "logistic"}, optional
        How ``combined`` is formed (default ``"layers"``, or the saved scorer's).
    save : bool
        Also save the scorer and the scores (and those of ``validation_split``)
        with the analysis, where the report finds them; skipped with a warning
        when the store is read-only or the analysis was never saved.
    name : str, optional
        The analysis name to save under (default: the analysis's own).
    scorer : SignatureScorer, optional
        A fitted scorer to use; ``validation_split`` recalibrates it only if
        it was calibrated on another split.
    client : dask.distributed.Client, None or False
        Compute on this Dask cluster (``None``: the active client, if any;
        ``False``: here).
    **params
        Other :class:`SignatureScorer` parameters.

    Returns
    -------
    Scores
        The components, ``combined`` and, once calibrated, the conformal ``p_value``.
    """
    check_is_fitted(analysis, "clusterers_")
    store = open_store(store, mode="r+" if save else "r")
    store.n_samples(split)  # a split not in the store: the error lists those it holds
    if split == validation_split:
        warn(f"Scoring split {split!r}, which also tunes and calibrates the scorer "
             "(validation_split): its figures are optimistic. Score a split held out from both.")
    name = name or getattr(analysis, "name_", None)
    if scorer is None:
        scorer = analysis_scorer(analysis, store, name=name, validation_split=validation_split,
                                 method=method, client=client, **params)
    else:
        if params or method is not None:
            raise TypeError(f"Parameters {sorted([*params, *(['method'] if method else [])])} "
                            "cannot be applied to a given scorer.")
        if validation_split is not None and scorer.validation_split_ != validation_split:
            scorer.calibrate(store, validation_split, client=client)
    scores = Scores(scorer.score(store, split, client=client), split=split, scorer=scorer)
    if save and can_save(store, name, f"Scores of split {split!r}"):
        assert name is not None
        val = scorer.validation_split_
        save_scorer(store, name, scorer, rescored=[split, *([val] if val else [])])
        if val is not None and val != split and (
                val not in saved_score_splits(store, name)
                or saved_scores_fingerprint(store, name, val) != scorer.fingerprint_):
            log.info("Scoring the validation split %r too (saved with the scorer).", val)
            save_scores(store, name, val, scorer.score(store, val, client=client),
                        attrs=scorer.describe())
        save_scores(store, name, split, scores, attrs=scorer.describe())
    return scores


def analysis_scorer(analysis: Any, store: ActivationStore, *, name: str | None = None,
                    validation_split: str | None = None, method: str | None = None,
                    client: ClientArg = None, **params: Any) -> SignatureScorer:
    """The analysis's scorer of these settings: cached, rebuilt from the saved one, or fitted.

    With no setting given, the saved scorer's settings (and validation split) are used.
    """
    record = saved_scorer(store, name) if name and name in store.analyses else None
    if record is not None and validation_split is None and method is None and not params:
        settings = dict(record["params"])
        validation_split = record.get("validation_split")
        if validation_split is not None and validation_split not in store.splits:
            raise StoreError(
                f"The scorer saved with analysis {name!r} was tuned on split "
                f"{validation_split!r}, which is not in {store.location} any more: give "
                "validation_split= (nnsig evaluate --validation SPLIT) of a split it holds.")
    else:
        settings = {**params, **({"method": method} if method is not None else {})}
    # Every setting spelled out, so that the same scorer is found however it was asked for.
    settings = SignatureScorer(**settings).get_params(deep=False)
    key = _scorer_key(store, analysis, settings, validation_split)
    cache = analysis.__dict__.setdefault("_scorers", {})
    if key not in cache:
        scorer = SignatureScorer(**settings).fit(analysis, store,
                                                 validation_split=validation_split, client=client)
        if record is not None and record.get("fingerprint") not in (None, scorer.fingerprint_) \
                and settings == record["params"]:
            log.info("The scorer saved with analysis %r was fitted on other captures of its "
                     "splits; it is fitted again.", name)
        cache.clear()  # one scorer per analysis at a time: the last one asked for
        cache[key] = scorer
    return cache[key]


def _scorer_key(store: ActivationStore, analysis: Any, settings: dict[str, Any],
                validation_split: str | None) -> str:
    splits = [analysis.fit_split_, validation_split]
    return json.dumps(to_json_safe({
        "store": store.location, "settings": settings, "validation_split": validation_split,
        "captures": {s: store.fingerprint(s) for s in splits if s is not None},
    }), sort_keys=True, default=str)
