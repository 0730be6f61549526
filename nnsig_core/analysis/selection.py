"""Which samples an analysis is fitted on: the correctly classified ones of the chosen classes.

The clusters, the diagnostics' training paths and the baselines all start
from the same samples; :func:`fit_sample_mask` is the one place that says
which.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.analysis.errors import EmptySelectionError, MissingLabelsError
from nnsig_core.store import ActivationStore

__all__ = ["fit_sample_mask"]


def fit_sample_mask(
    store: ActivationStore,
    split: str,
    *,
    classes: Iterable[int] | None = None,
    only_correct: bool = True,
) -> np.ndarray:
    """Boolean mask of the samples of ``split`` to fit on.

    Parameters
    ----------
    store : ActivationStore
    split : str
    classes : iterable of int, optional
        Keep only samples with these labels (``None``: every class).
    only_correct : bool
        Keep only samples the model classifies correctly (label = prediction).

    Returns
    -------
    ndarray of bool, shape (n_samples,)

    Raises
    ------
    MissingLabelsError
        The split has no labels but ``only_correct`` or ``classes`` needs them.
    EmptySelectionError
        No sample is left (an empty class list, classes absent from the
        split, or no correctly classified sample).
    """
    n = store.n_samples(split)
    labels = store.labels(split)
    need = only_correct or classes is not None
    if need and (not store.has_labels(split) or not (labels >= 0).any()):
        why = "only_correct=True" if only_correct else "a class subset"
        raise MissingLabelsError(
            f"Split {split!r} has no labels, but {why} needs them (and so do class counts). "
            "Capture the split with its labels, or pass only_correct=False (and no classes) "
            "to fit on every sample."
        )
    mask = np.ones(n, dtype=bool)
    where = ""
    if classes is not None:
        wanted = sorted({int(c) for c in classes})
        if not wanted:
            raise EmptySelectionError(
                "classes is empty: give the labels to fit on (e.g. classes=range(5)), "
                "or classes=None for all."
            )
        present = sorted(int(c) for c in np.unique(labels[labels >= 0]))
        mask &= np.isin(labels, wanted)
        if not mask.any():
            raise EmptySelectionError(
                f"No sample of split {split!r} has a label in {wanted}; the labels present "
                f"are {present}. Choose classes among those."
            )
        absent = sorted(set(wanted) - set(present))
        if absent:
            warn(f"Classes {absent} have no sample in split {split!r}.")
        where = f" among classes {wanted}"
    if only_correct:
        n_cand = int(mask.sum())
        mask &= (labels >= 0) & (labels == store.predictions(split))
        if not mask.any():
            raise EmptySelectionError(
                f"No sample of split {split!r}{where} is classified correctly "
                f"(0 of {n_cand}): is the model trained, and do labels and predictions "
                "use the same class indices? Pass only_correct=False to fit on all samples."
            )
    return mask
