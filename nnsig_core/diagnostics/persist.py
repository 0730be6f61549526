"""Scores in the store: ``analysis/<name>/scores/<split>/<score name>`` (float64, (sample,))."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from nnsig_core._util import to_json_safe
from nnsig_core.store import ActivationStore, StoreError
from nnsig_core.store.layout import SCORES_ATTR, array_options, scores_path

__all__ = ["load_scores", "save_scores", "saved_score_splits"]

log = logging.getLogger("nnsig")


def save_scores(
    store: ActivationStore,
    name: str | None,
    split: str,
    scores: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
) -> bool:
    """Write ``scores`` next to the analysis ``name``; returns whether anything was written.

    Nothing is written (and a warning is logged) when the store is read-only
    or holds no analysis ``name`` (it was never saved to the store). The
    split's fingerprint (sample count, capture id and times) is kept in the group's
    ``nnsig_scores`` attribute with the scorer's settings.
    Existing scores of the same split are replaced once the new ones are written.
    """
    if name is None:
        log.warning("Scores of split %r not saved: the analysis has not been saved to the "
                    "store (analysis.save(store, name)) and no name was given.", split)
        return False
    if store.read_only:
        log.warning("Scores of split %r not saved: the store is open read-only "
                    "(open it with mode='r+', or pass save=False).", split)
        return False
    if name not in store.analyses:
        log.warning("Scores of split %r not saved: no analysis %r in the store to save them "
                    "next to (analysis.save(store, %r) first, or pass save=False).",
                    split, name, name)
        return False
    n = store.n_samples(split)
    for key, v in scores.items():
        if np.asarray(v).reshape(-1).size != n:
            raise StoreError(f"Score {key!r} has {np.asarray(v).size} values; split {split!r} "
                             f"has {n} samples.")
    tmp = f"{scores_path(name)}/.new-{split}-{uuid.uuid4().hex[:8]}"
    sg = store.group(tmp, create=True)
    try:
        sg.attrs[SCORES_ATTR] = to_json_safe({"split": split, "n_samples": n,
                                              "fingerprint": store.fingerprint(split),
                                              "scores": list(scores), **dict(attrs or {})})
        for key, v in scores.items():
            data = np.asarray(v, dtype=np.float64).reshape(-1)
            sg.create_array(key, data=data, chunks=(max(1, min(n, 1 << 16)),),
                            dimension_names=["sample"], **array_options())
        store.replace_group(tmp, scores_path(name, split))
    except BaseException:
        store.delete(tmp)
        raise
    log.info("Saved %d score(s) of split %r under %s.", len(scores), split,
             scores_path(name, split))
    return True


def _scores_group(store: ActivationStore, name: str) -> Any:
    return store.group(scores_path(name))


def saved_score_splits(store: ActivationStore, name: str) -> list[str]:
    """Splits with saved scores for the analysis ``name``."""
    g = _scores_group(store, name)
    return [] if g is None else sorted(k for k, _ in g.groups() if not k.startswith("."))


def load_scores(store: ActivationStore, name: str, split: str) -> dict[str, np.ndarray]:
    """The scores saved by :func:`save_scores` (in the order they were saved)."""
    g = _scores_group(store, name)
    if g is None or split not in g:
        have = saved_score_splits(store, name)
        raise StoreError(f"No saved scores of split {split!r} for analysis {name!r}; "
                         f"splits with scores: {have or '(none)'}.")
    sg = g[split]
    saved = sg.attrs.get(SCORES_ATTR, {})
    if saved.get("fingerprint") != to_json_safe(store.fingerprint(split)):
        raise StoreError(f"The saved scores of split {split!r} for analysis {name!r} predate the "
                         "split's last capture; compute them again (nnsig evaluate, or "
                         "nnsig_core.diagnostics.signature_scores(analysis, store, split, save=True)).")
    order = saved.get("scores") or sorted(k for k, _ in sg.arrays())
    return {k: np.asarray(sg[k][:]) for k in order if k in sg}
