"""Inspecting a store: its sizes, its description (``nnsig info``) and its verification
(``nnsig verify``).

:class:`StoreInspection` gives :class:`~nnsig_core.store.ActivationStore` these
as methods; the work is done in :mod:`~nnsig_core.store.describe` and
:mod:`~nnsig_core.store.verify`.
"""

from __future__ import annotations

from typing import Any

from nnsig_core.store.describe import describe, nbytes_stored
from nnsig_core.store.results import ResultsArea
from nnsig_core.store.verify import VerifyReport, verify_store


class StoreInspection(ResultsArea):
    """Sizes, description and verification, a mixin of
    :class:`~nnsig_core.store.ActivationStore` (the description lists the analyses too)."""

    def nbytes_stored(self, split: str, name: str | None = None) -> int:
        """Bytes on disk of a split (or of one layer or array of it)."""
        return nbytes_stored(self, split, name)

    def verify(self, progress: bool = False, split: str | None = None) -> VerifyReport:
        """Read every chunk of the store: checksums, completeness, metadata (``nnsig verify``);
        only those of ``split`` when given.

        Returns
        -------
        VerifyReport
            ``ok`` when nothing is missing or damaged; ``format()`` and
            ``rows_to_recapture()`` say what is and which rows to capture again.
        """
        return verify_store(self, progress=progress, split=split)

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description used by ``nnsig info``."""
        return describe(self)

    def __repr__(self) -> str:
        parts = []
        for s in self.splits:
            state = "" if self.is_complete(s) else ", incomplete"
            parts.append(f"{s}: {self.n_samples(s)} samples{state}")
        return f"ActivationStore({self.location!r}; {'; '.join(parts) or 'no splits'})"
