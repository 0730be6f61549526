"""The exception capture raises for bad arguments, data or model outputs."""

from __future__ import annotations


class CaptureError(ValueError):
    """The model, the data or the store cannot be captured as asked."""
