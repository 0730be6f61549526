"""Exceptions about stores, splits and layers."""

from __future__ import annotations

__all__ = ["IncompleteStoreError", "StoreError"]


class StoreError(ValueError):
    """A store, split or layer is missing, malformed or incompatible."""


class IncompleteStoreError(StoreError):
    """The split's capture was interrupted; resume it before analysing it."""
