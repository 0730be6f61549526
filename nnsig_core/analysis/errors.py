"""Exceptions raised by the signature analysis.

Every class subclasses :class:`AnalysisError`, itself a :class:`ValueError`, so
callers can catch them all at once; problems with the store itself (missing
split or layer, interrupted capture) raise :class:`nnsig_core.store.StoreError`
instead. Using an analysis before ``fit`` raises scikit-learn's
:class:`~sklearn.exceptions.NotFittedError`. A NaN or infinite activation read
from the store raises :class:`~nnsig_core.protocol.NonFiniteActivationError`,
the same exception the adapters raise while capturing (a ``ValueError``).
"""

from __future__ import annotations


class AnalysisError(ValueError):
    """The analysis cannot run as asked; the message names the problem and the fix."""


class EmptySelectionError(AnalysisError):
    """No sample is left to fit on (none classified correctly, or an empty class subset)."""


class TooFewSamplesError(AnalysisError):
    """Fewer samples were selected for fitting than clusters were asked for."""


class MissingLabelsError(AnalysisError):
    """The split has no labels but the analysis needs them."""
