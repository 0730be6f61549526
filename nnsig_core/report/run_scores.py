"""Which scores a report shows, and their split-conformal threshold at :data:`FLAG_RATE`
(``docs/design.md``, "Which scores, and the threshold")."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.store import ActivationStore, StoreError

log = logging.getLogger("nnsig")

#: Target false-positive rate of the report's default threshold.
FLAG_RATE = 0.05

_SHAPES = ("what signature_scores returns (a Scores, a list of them, or {split: Scores}), "
           "a mapping {split: one score per sample}, None (the saved scores) or False (none)")


def _is_scores(obj: Any) -> bool:
    return hasattr(obj, "fingerprint") and hasattr(obj, "split") and isinstance(obj, Mapping)


def report_scores(scores: Any, analysis: Any, store: ActivationStore,
                  score_name: str = "combined") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The per-split score arrays a run shows and its threshold's calibration
    (``{"split", "scores", "fingerprint"}`` or None); TypeError or ValueError, with the fix."""
    if scores is False:
        return {}, None
    if scores is None:
        return _saved(analysis, store, score_name)
    if _is_scores(scores):
        scores = [scores]
    if isinstance(scores, Mapping) and scores and all(_is_scores(v) for v in scores.values()):
        scores = list(scores.values())
    if isinstance(scores, (list, tuple)):
        if not all(_is_scores(v) for v in scores):
            raise TypeError(f"scores: a list must hold what signature_scores returns; give {_SHAPES}.")
        prints = {v.fingerprint for v in scores}
        if len(prints) > 1:
            raise ValueError(
                f"scores of several scorers given together (fingerprints {sorted(prints)}): one "
                "report shows the scores of one scorer. Score every split with the same "
                "scorer (signature_scores(..., scorer=scorer)).")
        first = scores[0]
        cal = (None if first.conformal_scores is None else
               {"split": first.conformal_split, "scores": first.conformal_scores,
                "fingerprint": first.fingerprint})
        return {v.split: v[score_name] for v in scores}, cal
    if isinstance(scores, Mapping):
        bad = [k for k, v in scores.items() if isinstance(v, Mapping)]
        if bad:
            raise TypeError(f"scores[{bad[0]!r}] is a mapping; give {_SHAPES}.")
        if scores:
            log.info("Scores given as arrays: the report shows them without a threshold (pass "
                     "what signature_scores returns for its conformal threshold).")
        return dict(scores), None
    raise TypeError(f"scores is a {type(scores).__name__}; give {_SHAPES}.")


def _saved(analysis: Any, store: ActivationStore,
           score_name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The saved scores of the analysis's saved scorer (zarr arrays, unread)."""
    from nnsig_core.diagnostics.persist import (
        load_scores,
        saved_score_splits,
        saved_scorer,
        saved_scores_fingerprint,
    )

    name = getattr(analysis, "name_", None)
    if name is None or name not in store.analyses:
        return {}, None
    record = saved_scorer(store, name)
    out = {}
    for split in saved_score_splits(store, name):
        got = saved_scores_fingerprint(store, name, split)
        if record is not None and got != record.get("fingerprint"):
            warn(f"The saved scores of split {split!r} were not given by the scorer saved with "
                 f"analysis {name!r}; the report leaves them out (score the split again).")
            continue
        try:
            saved = load_scores(store, name, split, lazy=True)
        except StoreError as exc:
            warn(f"{exc} The report leaves them out.")
            continue
        if score_name in saved:
            out[split] = saved[score_name]
    if record is None:
        if out:
            log.info("The scores saved with analysis %r predate saved scorers: no threshold "
                     "(score them again with a validation split for one).", name)
        return out, None
    cal = record.get("conformal_scores")
    if cal is None or not cal.size:
        return out, None
    return out, {"split": record.get("conformal_split"), "scores": cal,
                 "fingerprint": record.get("fingerprint")}


def conformal_report_threshold(calibration: dict[str, Any] | None,
                               rate: float = FLAG_RATE, *,
                               level: str = "samples") -> dict[str, Any] | None:
    """The report's threshold (``docs/report-data.md``) from a scorer's conformal
    calibration: samples scoring at or above ``value`` are flagged, which is the
    split-conformal rule (above the conformal quantile). ``level``: the rows' level
    (``"tokens"``: the promise speaks of token rows)."""
    from nnsig_core.diagnostics.conformal import conformal_threshold

    if calibration is None:
        return None
    cal = np.asarray(calibration["scores"], dtype=np.float64)
    t = conformal_threshold(cal, rate)
    if not np.isfinite(t):
        warn(f"No default threshold: {cal.size} held-out calibration samples are too few for "
             f"a false-positive rate of {rate:.0%} (at least {int(np.ceil(1 / rate)) - 1} "
             "are needed): use a larger validation split.")
        return None
    split = calibration["split"]
    rows, whole = ("inputs", "") if level != "tokens" else (
        "token rows", ", whole inputs held out; a rate over token rows, not inputs")
    return {
        "value": float(np.nextafter(t, np.inf)), "split": split, "rate": float(rate),
        "n_correct": int(cal.size), "kind": "conformal",
        "fingerprint": calibration.get("fingerprint"),
        "promise": (f"at most {rate:.0%} of correctly classified {rows} like those of the "
                    f"{split} split score at or above it (split-conformal, calibrated on "
                    f"{cal.size} held-out correct {rows} of {split}{whole})"),
    }
