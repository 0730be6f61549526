"""Exceptions raised by the signature analysis."""

from __future__ import annotations


class AnalysisError(ValueError):
    """The analysis cannot run as asked (the base of its errors; problems with the store raise
    :class:`nnsig_core.store.StoreError`)."""


class EmptySelectionError(AnalysisError):
    """No sample is left to fit on (none classified correctly, or an empty class subset)."""


class TooFewSamplesError(AnalysisError):
    """Fewer samples were selected for fitting than clusters were asked for."""


class MissingLabelsError(AnalysisError):
    """The split has no labels but the analysis needs them."""
