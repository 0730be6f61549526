"""Choosing a Keras backend before Keras is imported, so that TensorFlow is never required."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("nnsig_keras")

#: Backends tried, in this order, when Keras would otherwise pick an absent TensorFlow.
_FALLBACKS = ("torch", "jax")


def _file_backend() -> str | None:
    """The backend named in ``$KERAS_HOME/keras.json`` (``~/.keras``), if any."""
    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as f:
            value = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def choose_backend() -> str | None:
    """Set ``KERAS_BACKEND`` to the first installed of torch and jax (and return it) when
    Keras is not imported yet and would pick an absent TensorFlow; else return None."""
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return None
    if _file_backend() not in (None, "tensorflow"):
        return None
    if importlib.util.find_spec("tensorflow") is not None:
        return None
    for name in _FALLBACKS:
        if importlib.util.find_spec(name) is not None:
            os.environ["KERAS_BACKEND"] = name
            logger.info(
                "TensorFlow is not installed and no other Keras backend is configured: using "
                "the %r backend (set KERAS_BACKEND before importing keras to choose another).",
                name,
            )
            return name
    return None
