"""A fingerprint of a Keras model's weights, recorded with each captured split."""

from __future__ import annotations

import hashlib
from typing import Any

import keras
import numpy as np


def weights_fingerprint(model: Any) -> str:
    """``"blake2b:<hex>"`` of every weight (trainable or not): paths, dtypes, shapes and bytes.

    Two models give the same fingerprint exactly when they hold the same
    weights, so a capture resumed (or a split added) with other weights of
    the same architecture is told apart.
    """
    h = hashlib.blake2b(digest_size=16)
    for w in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(f"{getattr(w, 'path', w.name)}|{value.dtype}|{value.shape}|".encode())
        h.update(value.tobytes())
    return "blake2b:" + h.hexdigest()
