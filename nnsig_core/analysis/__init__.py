"""Signature analysis: per-layer clustering of stored activations and each sample's cluster path.

Modules
-------
selection
    :func:`fit_sample_mask`: which samples an analysis is fitted on.
discretize
    :class:`Discretizer` (uniform / quantile / binary bins, per layer or per
    unit, fittable from chunks) and :func:`parse_discretizer_spec`.
source
    Row sources: a layer's selected rows, read from the store in whole chunks.
reduce, assign, cluster
    :class:`LayerClusterer`: discretize, optional PCA, exact
    KMeans, or Lloyd's iterations out of core; nearest-centre assignment; canonical
    cluster ids.
engine
    :class:`SignatureAnalysis`: fit on a store's split, transform any split.
signatures, tables
    :class:`Signatures`: the per-sample cluster ids and their tables.
persist
    Saving into / loading from ``analysis/<name>`` of the store.
prototype
    :func:`export_prototype`, the prototype's two files.
summary
    :func:`format_summary`, the text table printed by ``nnsig analyze``.
tokens
    Token-level signatures (a ``<split>.tokens`` row space): :func:`token_table`,
    :func:`tokens_by_path`, :func:`paths_by_token`.
timeline, tracking
    :class:`Timeline`: one analysis per checkpoint of a training run, clusters
    followed from one checkpoint to the next (Hungarian matching on shared samples).
synthetic
    Gaussian-blob activations with known clusters, for tests and examples.
"""

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
