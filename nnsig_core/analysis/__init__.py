"""Signature analysis: per-layer clustering of stored activations and each sample's cluster path.

Modules
-------
discretize
    :class:`Discretizer` (uniform / quantile / binary bins, per layer or per
    unit, fittable from chunks) and :func:`parse_discretizer_spec`.
cluster
    :class:`LayerClusterer`: discretize, optional IncrementalPCA, exact
    KMeans or streamed MiniBatchKMeans; canonical cluster ids.
engine
    :class:`SignatureAnalysis`: fit on a store's split, transform any split.
signatures
    :class:`Signatures`: the per-sample cluster ids and their tables.
persist
    Saving into / loading from ``analysis/<name>`` of the store.
summary
    :func:`format_summary`, the text table printed by ``nnsig analyze``.
synthetic
    Gaussian-blob activations with known clusters, for tests and examples.
"""

from __future__ import annotations

from nnsig_core.analysis._util import parse_bytes
from nnsig_core.analysis.cluster import LayerClusterer, PCAReducer, canonical_order
from nnsig_core.analysis.discretize import Discretizer, parse_discretizer_spec
from nnsig_core.analysis.engine import SignatureAnalysis
from nnsig_core.analysis.errors import (
    AnalysisError,
    EmptySelectionError,
    MissingLabelsError,
    NonFiniteActivationError,
    NotFittedError,
    TooFewSamplesError,
)
from nnsig_core.analysis.signatures import Signatures, class_entropy, class_purity
from nnsig_core.analysis.summary import format_summary
from nnsig_core.analysis.tables import Table

__all__ = [
    "AnalysisError",
    "Discretizer",
    "EmptySelectionError",
    "LayerClusterer",
    "MissingLabelsError",
    "NonFiniteActivationError",
    "NotFittedError",
    "PCAReducer",
    "SignatureAnalysis",
    "Signatures",
    "Table",
    "TooFewSamplesError",
    "canonical_order",
    "class_entropy",
    "class_purity",
    "format_summary",
    "parse_bytes",
    "parse_discretizer_spec",
]
