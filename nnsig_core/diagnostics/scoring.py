"""The scoring workflow in one call: fit a scorer on an analysis, calibrate it, score, save.

:func:`signature_scores` is what ``nnsig evaluate`` and most users call; the
estimator it drives is :class:`~nnsig_core.diagnostics.scorer.SignatureScorer`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnsig_core.diagnostics.persist import save_scores
from nnsig_core.diagnostics.scorer import SignatureScorer, StoreArg
from nnsig_core.execute.client import ClientArg
from nnsig_core.store import open_store


def signature_scores(
    analysis: Any,
    store: StoreArg,
    split: str,
    *,
    validation_split: str | None = None,
    method: str = "layers",
    save: bool = False,
    name: str | None = None,
    scorer: SignatureScorer | None = None,
    client: ClientArg = None,
    **params: Any,
) -> dict[str, np.ndarray]:
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
        A labelled split of known classes only, held out from training: the
        reference and the layers of ``combined`` are taken from it
        (:meth:`SignatureScorer.calibrate`; raises
        :class:`~nnsig_core.diagnostics.NovelClassError` if it holds a class
        the analysis was not fitted on). Without it they come from the fit
        split (training samples scored leave-one-out, and the fit split's
        misclassified samples).
    method : {"layers", "rank", "logistic"}
        How ``combined`` is formed (see :class:`SignatureScorer`).
    save : bool
        Also write the scores to ``analysis/<name>/scores/<split>/<score>``
        in the store (skipped, with a warning, when the store is read-only or
        the analysis was never saved), where ``nnsig report`` finds them.
    name : str, optional
        The analysis name to save under (default: the name the analysis was
        saved or loaded with).
    scorer : SignatureScorer, optional
        A fitted (and calibrated) scorer to reuse when scoring several
        splits; ``validation_split`` then calibrates it again only if it was
        calibrated on another split.
    client : dask.distributed.Client, None or False
        Compute the distances to the centroids, the path components and the
        neighbour statistics and components on this Dask cluster (``None``: the
        active client, if any; ``False``: here).
    **params
        Other :class:`SignatureScorer` parameters.

    Returns
    -------
    dict of str to ndarray (n,)
        The components of :data:`~nnsig_core.diagnostics.components.SCORES` and ``combined``.
    """
    store = open_store(store, mode="r+" if save else "r")
    if scorer is None:
        scorer = SignatureScorer(method=method, **params).fit(analysis, store, client=client)
    elif params:
        raise TypeError(f"Parameters {sorted(params)} cannot be applied to a given scorer.")
    if validation_split is not None and scorer.validation_split_ != validation_split:
        scorer.calibrate(store, validation_split, client=client)
    scores = scorer.score(store, split, client=client)
    if save:
        save_scores(store, name or getattr(analysis, "name_", None), split, scores,
                    attrs=scorer.describe())
    return scores
