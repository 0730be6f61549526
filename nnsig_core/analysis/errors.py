"""Exceptions raised by the signature analysis."""

from __future__ import annotations


class AnalysisError(ValueError):
    """The analysis cannot run as asked; the message names the problem and the fix.

    The base of the analysis's errors. Problems with the store itself (missing split or
    layer, interrupted capture) raise :class:`nnsig_core.store.StoreError` instead, an
    analysis used before ``fit`` scikit-learn's :class:`~sklearn.exceptions.NotFittedError`.
    """


class EmptySelectionError(AnalysisError):
    """No sample is left to fit on (none classified correctly, or an empty class subset)."""


class TooFewSamplesError(AnalysisError):
    """Fewer samples were selected for fitting than clusters were asked for."""


class MissingLabelsError(AnalysisError):
    """The split has no labels but the analysis needs them."""
