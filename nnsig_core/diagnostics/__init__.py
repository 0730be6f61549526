"""Diagnostics: which inputs does the network get wrong, or not know at all?

Signature scores, baselines on the same model and features, and their evaluation on
error detection, novelty detection and both (higher = more suspicious).
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
