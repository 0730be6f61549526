"""Signature analysis: per-layer clustering of stored activations and each sample's cluster path."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError

from nnsig_core.analysis.cluster import LayerClusterer
from nnsig_core.analysis.discretize import Discretizer, parse_discretizer_spec
from nnsig_core.analysis.engine import SignatureAnalysis
from nnsig_core.analysis.errors import (
    AnalysisError,
    EmptySelectionError,
    MissingLabelsError,
    TooFewSamplesError,
)
from nnsig_core.analysis.prototype import export_prototype
from nnsig_core.analysis.selection import fit_sample_mask
from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.summary import format_summary
from nnsig_core.analysis.tables import Table
from nnsig_core.analysis.timeline import Timeline
from nnsig_core.analysis.token_tables import paths_by_token, token_table, tokens_by_path
from nnsig_core.protocol import NonFiniteActivationError

__all__ = [
    "AnalysisError",
    "Discretizer",
    "EmptySelectionError",
    "LayerClusterer",
    "MissingLabelsError",
    "NonFiniteActivationError",
    "NotFittedError",
    "SignatureAnalysis",
    "Signatures",
    "Table",
    "Timeline",
    "TooFewSamplesError",
    "export_prototype",
    "fit_sample_mask",
    "format_summary",
    "parse_discretizer_spec",
    "paths_by_token",
    "token_table",
    "tokens_by_path",
]
