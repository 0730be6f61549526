"""Input thumbnails for the viewer (``capture(..., keep_inputs=True)``)."""

from __future__ import annotations

import math

import numpy as np

from nnsig_core.capture.errors import CaptureError

MAX_THUMBNAIL = 32


def make_thumbnails(x: np.ndarray, max_side: int = MAX_THUMBNAIL) -> np.ndarray:
    """Turn a batch of images into uint8 thumbnails of at most ``max_side`` pixels a side.

    Accepts ``(n, h, w)``, ``(n, 1|3, h, w)``, ``(n, h, w, 1|3)`` and flat square
    ``(n, s*s)`` inputs; each sample is min-max scaled (unless uint8) and block
    averaged. Returns ``(n, h', w')`` (grey) or ``(n, h', w', 3)`` (colour).
    """
    x = np.asarray(x)
    n = x.shape[0]
    if x.ndim == 2:
        side = int(math.isqrt(x.shape[1]))
        if side * side != x.shape[1]:
            raise CaptureError(
                f"keep_inputs=True needs image-like inputs; got flat inputs of width {x.shape[1]}, "
                "which is not a square image."
            )
        x = x.reshape(n, side, side)
    elif x.ndim == 4:
        if x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
            x = np.moveaxis(x, 1, -1)
        elif x.shape[3] not in (1, 3):
            raise CaptureError(f"keep_inputs=True: cannot read {x.shape[1:]} inputs as images.")
        if x.shape[-1] == 1:
            x = x[..., 0]
    elif x.ndim != 3:
        raise CaptureError(f"keep_inputs=True: cannot read inputs of shape {x.shape[1:]} as images.")
    if x.dtype != np.uint8:
        xf = x.astype(np.float32)
        axes = tuple(range(1, xf.ndim))
        lo = xf.min(axis=axes, keepdims=True)
        hi = xf.max(axis=axes, keepdims=True)
        x = np.round((xf - lo) / np.maximum(hi - lo, 1e-12) * 255).astype(np.uint8)
    h, w = x.shape[1], x.shape[2]
    f = max(1, math.ceil(max(h, w) / max_side))
    if f > 1:
        h2, w2 = h // f, w // f
        x = x[:, : h2 * f, : w2 * f].reshape(n, h2, f, w2, f, *x.shape[3:]).mean(axis=(2, 4))
        x = np.round(x).astype(np.uint8)
    return np.ascontiguousarray(x)
