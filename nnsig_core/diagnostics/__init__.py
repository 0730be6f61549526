"""Diagnostics: which inputs does the network get wrong, or not know at all?

Signature scores, baselines on the same model and features, and their evaluation on
error detection, novelty detection and both (higher = more suspicious).

Typical use::

    from nnsig_core import open_store
    from nnsig_core.analysis import SignatureAnalysis
    from nnsig_core import diagnostics as dx

    store = open_store("runs/mnist.zarr", mode="r+")
    analysis = SignatureAnalysis().fit(store, "train")
    scores = dx.signature_scores(analysis, store, "test", validation_split="val")
    scores |= dx.baseline_scores(analysis, store, "test")
    table = dx.evaluate(scores, store.labels("test"), store.predictions("test"),
                        analysis.classes_)
"""

from nnsig_core.diagnostics.baselines import BASELINES, Baselines, baseline_scores
from nnsig_core.diagnostics.combine import NovelClassError, ScoreCombiner
from nnsig_core.diagnostics.components import SCORES
from nnsig_core.diagnostics.metrics import METRICS, TASKS, detection_metrics, evaluate, summarize
from nnsig_core.diagnostics.scorer import SignatureScorer
from nnsig_core.diagnostics.scoring import signature_scores

__all__ = [
    "BASELINES",
    "METRICS",
    "SCORES",
    "TASKS",
    "Baselines",
    "NovelClassError",
    "ScoreCombiner",
    "SignatureScorer",
    "baseline_scores",
    "detection_metrics",
    "evaluate",
    "signature_scores",
    "summarize",
]
