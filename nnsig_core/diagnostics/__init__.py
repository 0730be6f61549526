"""Diagnostics: which inputs does the network get wrong, or not know at all?

Signature-based suspicion scores (:func:`signature_scores`), baselines computed
on the same model and features (:func:`baseline_scores`), and their
evaluation on error detection, novelty detection and both
(:func:`evaluate`). Every score is *higher = more suspicious*; every metric
takes the suspicious samples as its positive class.

Typical use::

    from nnsig_core import open_store
    from nnsig_core.analysis import SignatureAnalysis
    from nnsig_core import diagnostics as dx

    store = open_store("runs/mnist.zarr", mode="r+")
    analysis = SignatureAnalysis(n_clusters=50).fit(store, "train")
    scores = dx.signature_scores(analysis, store, "test", validation_split="val")
    scores |= dx.baseline_scores(analysis, store, "test")
    table = dx.evaluate(scores, store.labels("test"), store.predictions("test"),
                        analysis.classes_)
"""

from nnsig_core.diagnostics.persist import load_scores, save_scores, saved_score_splits
from nnsig_core.diagnostics.baselines import (
    BASELINES,
    ActivationPatternMonitor,
    Baselines,
    KNNDistance,
    MahalanobisDistance,
    baseline_scores,
    energy_score,
    max_softmax_score,
)
from nnsig_core.diagnostics.combine import NovelClassError, ScoreCombiner, check_known_labels
from nnsig_core.diagnostics.metrics import (
    METRICS,
    TASKS,
    detection_metrics,
    evaluate,
    fpr_at_tpr,
    summarize,
    task_masks,
)
from nnsig_core.diagnostics.scores import SCORES, SignatureScorer, signature_scores

__all__ = [
    "BASELINES",
    "METRICS",
    "SCORES",
    "TASKS",
    "ActivationPatternMonitor",
    "Baselines",
    "KNNDistance",
    "MahalanobisDistance",
    "NovelClassError",
    "ScoreCombiner",
    "SignatureScorer",
    "baseline_scores",
    "check_known_labels",
    "detection_metrics",
    "energy_score",
    "evaluate",
    "fpr_at_tpr",
    "load_scores",
    "max_softmax_score",
    "save_scores",
    "saved_score_splits",
    "signature_scores",
    "summarize",
    "task_masks",
]
