"""Exceptions about stores, splits and layers."""

from __future__ import annotations


class StoreError(ValueError):
    """A store, split or layer is missing, malformed or incompatible."""


class IncompleteStoreError(StoreError):
    """The split's capture was interrupted; resume it before analysing it."""
