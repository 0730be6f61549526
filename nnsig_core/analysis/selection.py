"""Which samples an analysis is fitted on: the correctly classified ones of the chosen classes.

The block kernels and checks here serve both drivers (:func:`fit_sample_mask` runs them
here, :func:`nnsig_core.distributed.reductions.fit_mask` on the workers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.analysis.errors import EmptySelectionError, MissingLabelsError, TooFewSamplesError
from nnsig_core.execute.blocks import reduce_columns
from nnsig_core.execute.merging import merge_parts
from nnsig_core.store import ActivationStore


def selection_block(labels: np.ndarray, preds: np.ndarray, classes: np.ndarray | None,
                    only_correct: bool) -> np.ndarray:
    """The mask of a block's rows kept by the fit rule (``classes``, ``only_correct``)."""
    lab = np.asarray(labels, dtype=np.int64)
    mask = np.ones(lab.shape, dtype=bool)
    if classes is not None:
        mask &= np.isin(lab, classes)
    if only_correct:
        mask &= (lab >= 0) & (lab == np.asarray(preds, dtype=np.int64))
    return mask


def label_counts_part(labels: np.ndarray, preds: np.ndarray, lo: int = 0) -> dict[str, Any]:
    """A block's samples per label >= 0 (and those classified correctly), unlabelled samples,
    largest label and prediction."""
    lab = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(preds, dtype=np.int64)
    right = lab[(lab >= 0) & (lab == pred)]
    return {"labels": np.bincount(lab[lab >= 0]),
            "correct": np.bincount(right, minlength=int(lab.max(initial=-1)) + 1),
            "unlabelled": int((lab < 0).sum()), "label_max": np.int64(lab.max(initial=-1)),
            "pred_max": np.int64(pred.max(initial=-1))}


def merge_label_counts(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """Merge :func:`label_counts_part` results (label counts of different lengths)."""
    size = max(p["labels"].size for p in parts)
    return merge_parts(*[{**p, **{k: np.pad(p[k], (0, size - p[k].size))
                                  for k in ("labels", "correct")}} for p in parts])


def check_selection(split: str, has_labels: bool, label_counts: np.ndarray, n_samples: int,
                    classes: Iterable[int] | None, only_correct: bool) -> np.ndarray | None:
    """Check the fit rule against a split's label counts; the sorted classes to keep, or None
    (all). Raises :class:`MissingLabelsError` or :class:`EmptySelectionError`."""
    need = only_correct or classes is not None
    if need and (not has_labels or not label_counts.any()):
        why = "only_correct=True" if only_correct else "a class subset"
        raise MissingLabelsError(f"Split {split!r} has no labels, but {why} needs them (and so do "
                                 "class counts). Capture the split with its labels, or pass "
                                 "only_correct=False (nnsig analyze --all-samples; and no "
                                 "classes) to fit on every sample.")
    if classes is None:
        return None
    wanted = np.array(sorted({int(c) for c in classes}), dtype=np.int64)
    if wanted.size == 0:
        raise EmptySelectionError("classes is empty: give the labels to fit on (e.g. "
                                  "classes=range(5)), or classes=None for all.")
    present = [int(c) for c in np.flatnonzero(label_counts)]
    if not set(wanted.tolist()) & set(present):
        raise EmptySelectionError(f"No sample of split {split!r} has a label in "
                                  f"{wanted.tolist()}; the labels present are {present}. Choose "
                                  "classes among those.")
    absent = sorted(set(wanted.tolist()) - set(present))
    if absent:
        warn(f"Classes {absent} have no sample in split {split!r}.")
    return wanted


def check_selected(split: str, n_selected: int, label_counts: np.ndarray, n_samples: int,
                   wanted: np.ndarray | None, only_correct: bool,
                   correct_counts: np.ndarray | None = None) -> None:
    """Raise :class:`EmptySelectionError` when ``only_correct`` kept no sample; warn when it
    leaves out whole classes (``correct_counts``: correctly classified samples per label)."""
    if only_correct and n_selected and correct_counts is not None:
        classes = np.flatnonzero(label_counts) if wanted is None else \
            wanted[wanted < label_counts.size]
        dropped = [int(c) for c in classes
                   if label_counts[c] and (c >= correct_counts.size or not correct_counts[c])]
        if dropped:
            warn(f"only_correct=True leaves out class(es) {dropped} of split {split!r}: none of "
                 f"their {int(label_counts[dropped].sum())} samples is classified correctly, so "
                 "the analysis describes the other classes only. Is the model trained? Pass "
                 "only_correct=False (nnsig analyze --all-samples) to fit on every sample.")
    if not only_correct or n_selected:
        return
    if wanted is None:
        n_cand, where = n_samples, ""
    else:
        n_cand = int(label_counts[wanted[wanted < label_counts.size]].sum())
        where = f" among classes {wanted.tolist()}"
    raise EmptySelectionError(f"No sample of split {split!r}{where} is classified correctly (0 of "
                              f"{n_cand}): is the model trained, and do labels and predictions "
                              "use the same class indices? Pass only_correct=False to fit on all "
                              "samples.")


def check_enough_rows(split: str, n_selected: int, layers: list[str], ks: list[int]) -> None:
    """Raise :class:`TooFewSamplesError` when a layer asks for more clusters than samples."""
    too_many = [(n, k) for n, k in zip(layers, ks, strict=True) if k > n_selected]
    if too_many:
        desc = ", ".join(f"{n!r}: {k}" for n, k in too_many)
        raise TooFewSamplesError(f"Only {n_selected} sample(s) of split {split!r} are selected "
                                 f"for fitting, fewer than the clusters asked for ({desc}). Lower "
                                 f"n_clusters to at most {n_selected}, or fit on more samples "
                                 "(only_correct=False, more classes, more data).")


def require_fit_labels(store: ActivationStore, split: str, what: str) -> None:
    """Raise :class:`MissingLabelsError` when the fit split has no labels: ``what`` (the scores,
    the baselines) compare samples with the correct fit samples of their class."""
    if not store.has_labels(split) or (np.asarray(store.labels(split)) < 0).all():
        raise MissingLabelsError(
            f"The fit split {split!r} has no labels; {what} compare each sample with the "
            "correctly classified fit samples of its predicted class, so they need them "
            "(only_correct=False does not help). Capture the split with its labels, then fit "
            "the analysis again.")


def fit_sample_mask(store: ActivationStore, split: str, *, classes: Iterable[int] | None = None,
                    only_correct: bool = True, warn_dropped: bool = False) -> np.ndarray:
    """Boolean mask of the samples of ``split`` to fit on.

    Parameters
    ----------
    store : ActivationStore
    split : str
    classes : iterable of int, optional
        Keep only samples with these labels (``None``: every class).
    only_correct : bool
        Keep only samples the model classifies correctly.
    warn_dropped : bool
        Warn when ``only_correct`` leaves out whole classes (an analysis's fit does).

    Returns
    -------
    ndarray of bool, shape (n_samples,)

    Raises
    ------
    MissingLabelsError, EmptySelectionError
    """
    n = store.n_samples(split)
    labels, preds = store.labels(split), store.predictions(split)
    counts = reduce_columns(label_counts_part, merge_label_counts, (labels, preds))
    wanted = check_selection(split, store.has_labels(split), counts["labels"], n, classes,
                             only_correct)
    mask = selection_block(labels, preds, wanted, only_correct)
    check_selected(split, int(mask.sum()), counts["labels"], n, wanted, only_correct,
                   counts["correct"] if warn_dropped else None)
    return mask
