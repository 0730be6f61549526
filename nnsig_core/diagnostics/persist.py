"""Scores in the store: ``analysis/<name>/scores/<split>/<score name>`` (float64, (sample,)).

The group's ``nnsig_scores`` attribute holds the split's fingerprint, the
scorer's settings and ``scores_format`` (see docs/design.md, "Saved scores").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core._util import to_json_safe
from nnsig_core._warnings import warn
from nnsig_core.store import ActivationStore, StoreError
from nnsig_core.store.format import (
    SCORES_ATTR,
    analysis_path,
    array_options,
    scorer_path,
    scores_path,
)

log = logging.getLogger("nnsig")

#: Format of the saved scores written by this version (0.1 wrote none: format 1).
SCORES_FORMAT = 2
#: The saved scorer's group (in the analysis's) and its attribute.
SCORER_ATTR = "nnsig_scorer"


class LegacyScoresError(StoreError):
    """Saved scores were written by nnsig 0.1 (their ``combined`` is another score)."""


def save_scores(store: ActivationStore, name: str | None, split: str, scores: Mapping[str, Any],
                attrs: Mapping[str, Any] | None = None) -> bool:
    """Write (or replace) ``scores`` next to the analysis ``name``; whether anything was.

    Nothing is written, with a warning, when the store is read-only or holds no
    analysis ``name``.
    """
    if not can_save(store, name, f"Scores of split {split!r}"):
        return False
    assert name is not None
    n = store.n_samples(split)
    for key, v in scores.items():
        if np.asarray(v).reshape(-1).size != n:
            raise StoreError(f"Score {key!r} has {np.asarray(v).size} values; split {split!r} "
                             f"has {n} samples.")
    tmp = f"{scores_path(name)}/.new-{split}-{uuid.uuid4().hex[:8]}"
    with store.new_copy(tmp, scores_path(name, split)) as sg:
        sg.attrs[SCORES_ATTR] = to_json_safe({"split": split, "n_samples": n,
                                              "fingerprint": store.fingerprint(split),
                                              "scores": list(scores), **dict(attrs or {}),
                                              "scores_format": SCORES_FORMAT})
        for key, v in scores.items():
            data = np.asarray(v, dtype=np.float64).reshape(-1)
            sg.create_array(key, data=data, chunks=(max(1, min(n, 1 << 16)),),
                            dimension_names=["sample"], **array_options())
    log.info("Saved %d score(s) of split %r under %s.", len(scores), split,
             scores_path(name, split))
    return True


def _scores_group(store: ActivationStore, name: str) -> Any:
    return store.group(scores_path(name))


def saved_score_splits(store: ActivationStore, name: str) -> list[str]:
    """Splits with saved scores for the analysis ``name``."""
    g = _scores_group(store, name)
    return [] if g is None else sorted(k for k, _ in g.groups() if not k.startswith("."))


def saved_scores_format(store: ActivationStore, name: str, split: str) -> int:
    """Format of the saved scores of ``split`` (1: written by nnsig 0.1)."""
    g = _scores_group(store, name)
    if g is None or split not in g:
        raise StoreError(f"No saved scores of split {split!r} for analysis {name!r}.")
    return int(g[split].attrs.get(SCORES_ATTR, {}).get("scores_format", 1))


def load_scores(store: ActivationStore, name: str, split: str,
                legacy: bool = False, lazy: bool = False) -> dict[str, Any]:
    """The scores saved by :func:`save_scores`, in their order (``lazy``: the zarr arrays).

    ``legacy`` also reads scores saved by nnsig 0.1 (with a warning), which otherwise
    raise :class:`LegacyScoresError`.
    """
    g = _scores_group(store, name)
    if g is None or split not in g:
        have = saved_score_splits(store, name)
        raise StoreError(f"No saved scores of split {split!r} for analysis {name!r}; "
                         f"splits with scores: {have or '(none)'}.")
    sg = g[split]
    saved = sg.attrs.get(SCORES_ATTR, {})
    fmt = int(saved.get("scores_format", 1))
    if fmt > SCORES_FORMAT:
        raise StoreError(f"The saved scores of split {split!r} for analysis {name!r} have format "
                         f"{fmt}; this nnsig reads up to {SCORES_FORMAT}: upgrade nnsig.")
    if fmt == 1 and not legacy:
        raise LegacyScoresError(
            f"The saved scores of split {split!r} for analysis {name!r} were written by nnsig "
            "0.1: their 'combined' is 0.1's mean rank of the path components, not today's "
            "default score. Compute them again (nnsig evaluate, or nnsig_core.diagnostics."
            "signature_scores(analysis, store, split, save=True)), or read them as they are "
            "with load_scores(..., legacy=True).")
    if saved.get("fingerprint") != to_json_safe(store.fingerprint(split)):
        raise StoreError(f"The saved scores of split {split!r} for analysis {name!r} predate the "
                         "split's last capture; compute them again (nnsig evaluate, or "
                         "nnsig_core.diagnostics.signature_scores(analysis, store, split, save=True)).")
    if fmt == 1:
        warn(f"Reading the scores of split {split!r} for analysis {name!r} saved by nnsig 0.1: "
             "their 'combined' is 0.1's mean rank of the path components.")
    order = saved.get("scores") or sorted(k for k, _ in sg.arrays())
    return {k: sg[k] if lazy else np.asarray(sg[k][:]) for k in order if k in sg}


def can_save(store: ActivationStore, name: str | None, what: str) -> bool:
    """Whether ``what`` can be saved next to the analysis ``name`` (else a warning says why)."""
    if name is None:
        warn(f"{what} not saved: the analysis has not been saved to the store "
             "(analysis.save(store, name)) and no name was given.")
    elif store.read_only:
        warn(f"{what} not saved: the store is open read-only (open it with mode='r+', or "
             "pass save=False).")
    elif name not in store.analyses:
        warn(f"{what} not saved: no analysis {name!r} in the store to save them next to "
             f"(analysis.save(store, {name!r}) first, or pass save=False).")
    else:
        return True
    return False


def saved_scorer(store: ActivationStore, name: str) -> dict[str, Any] | None:
    """The record of the scorer saved with the analysis ``name`` (``params``,
    ``validation_split``, ``fingerprint``, ``conformal_split``, ``conformal_scores``), or None."""
    g = store.group(scorer_path(name))
    if g is None or SCORER_ATTR not in g.attrs:
        return None
    record: dict[str, Any] = dict(g.attrs[SCORER_ATTR])  # type: ignore[arg-type]
    cal: Any = g["conformal_scores"] if "conformal_scores" in g else None
    record["conformal_scores"] = None if cal is None else np.asarray(cal[:], dtype=np.float64)
    return record


def save_scorer(store: ActivationStore, name: str, scorer: Any,
                rescored: Sequence[str] = ()) -> None:
    """Save ``scorer`` with the analysis ``name``, replacing another one; the saved scores of
    another scorer are deleted, so a report never mixes them, with a warning naming those
    the caller does not score again (``rescored``)."""
    old = saved_scorer(store, name)
    if old is not None and old.get("fingerprint") == scorer.fingerprint_:
        return
    stale = [s for s in saved_score_splits(store, name)
             if saved_scores_fingerprint(store, name, s) != scorer.fingerprint_]
    tmp = f"{analysis_path(name)}/.new-scorer-{uuid.uuid4().hex[:8]}"
    with store.new_copy(tmp, scorer_path(name)) as g:
        g.attrs[SCORER_ATTR] = to_json_safe({
            "params": scorer.get_params(deep=False),
            "validation_split": scorer.validation_split_,
            "fingerprint": scorer.fingerprint_,
            "conformal_split": getattr(scorer, "conformal_split_", None),
        })
        cal = getattr(scorer, "conformal_scores_", None)
        if cal is not None:
            g.create_array("conformal_scores", data=np.asarray(cal, dtype=np.float64),
                           chunks=(max(1, min(cal.size, 1 << 16)),),
                           dimension_names=["sample"], **array_options())
    for s in stale:
        store.delete(scores_path(name, s))
    stale = [s for s in stale if s not in rescored]
    if stale:
        warn(f"The saved scores of split(s) {', '.join(stale)} for analysis {name!r} came from "
             "another scorer (other settings, or fitted on other data) and were deleted: "
             "score them again to see them in the report.")
    log.info("Saved the scorer (fingerprint %s) with analysis %r.", scorer.fingerprint_, name)


def saved_scores_fingerprint(store: ActivationStore, name: str, split: str) -> str | None:
    """The fingerprint of the scorer that gave the saved scores of ``split`` (None: unknown)."""
    g = _scores_group(store, name)
    if g is None or split not in g:
        return None
    return dict(g[split].attrs.get(SCORES_ATTR, {})).get("scorer_fingerprint")
