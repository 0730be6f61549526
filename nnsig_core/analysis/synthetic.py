"""Synthetic activations with a known cluster structure (for tests, examples and docs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnsig_core.store import ActivationStore


def make_blob_activations(*, n_samples: int = 600, n_classes: int = 4,
                          layer_shapes: Sequence[tuple[int, ...]] = ((8,), (6,), (2, 3)),
                          separation: float = 20.0, noise: float = 0.5, error_rate: float = 0.0,
                          seed: int = 0, sample_seed: int | None = None) -> dict[str, Any]:
    """Gaussian blobs: in every layer (``layer0``, ``layer1``...), each class is one blob;
    returns ``activations``, ``outputs``, ``labels`` and ``predictions``."""
    crng = np.random.default_rng(seed)
    rng = np.random.default_rng(seed + 1 if sample_seed is None else sample_seed)
    labels = np.arange(n_samples) % n_classes
    rng.shuffle(labels)
    acts = {}
    for i, shape in enumerate(layer_shapes):
        d = int(np.prod(shape))
        centres = crng.uniform(0, separation, size=(n_classes, d))
        for c in range(1, n_classes):
            while np.min(np.linalg.norm(centres[:c] - centres[c], axis=1)) < separation / 2:
                centres[c] = crng.uniform(0, separation, size=d)
        x = centres[labels] + rng.normal(0, noise, size=(n_samples, d))
        acts[f"layer{i}"] = x.reshape(n_samples, *shape).astype(np.float32)
    preds = labels.copy()
    wrong = rng.random(n_samples) < error_rate
    preds[wrong] = (labels[wrong] + rng.integers(1, n_classes, size=int(wrong.sum()))) % n_classes
    outputs = np.full((n_samples, n_classes), -1.0, dtype=np.float32)
    outputs[np.arange(n_samples), preds] = 1.0
    return {"activations": acts, "outputs": outputs, "labels": labels.astype(np.int64),
            "predictions": preds.astype(np.int64)}


def make_blob_store(path: str | os.PathLike[str] | ActivationStore, *,
                    splits: Sequence[str] = ("train", "test"),
                    n_samples: int | Sequence[int] = 600, chunk_bytes: int = 2048, seed: int = 0,
                    inputs: bool = False, overwrite: bool = False,
                    **kwargs: Any) -> ActivationStore:
    """Capture :func:`make_blob_activations` into a store, one call per split.

    Splits share the class centres (``seed``) but draw their own samples (seed
    ``seed + 1 + i``). ``inputs=True`` also stores 8x8 thumbnails.
    """
    from nnsig_core.capture import capture_arrays

    counts = [n_samples] * len(splits) if isinstance(n_samples, int) else list(n_samples)
    store: Any = path
    for i, (split, n) in enumerate(zip(splits, counts, strict=False)):
        total = make_blob_activations(n_samples=n, seed=seed, sample_seed=seed + 1 + i, **kwargs)
        sl = slice(0, n)
        data = total["activations"]
        images = None
        if inputs:
            images = (np.arange(n)[:, None, None] % 255 + np.zeros((1, 8, 8))).astype(np.uint8)
        store = capture_arrays(
            activations=data, outputs=total["outputs"][sl], labels=total["labels"][sl],
            store=store, split=split, progress=False, chunk_bytes=chunk_bytes,
            inputs=images, overwrite=overwrite, class_names=[f"c{c}" for c in range(total["outputs"].shape[1])],
        )
    return store
