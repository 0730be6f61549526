"""A fixed probe set captured from a PyTorch training loop: :class:`TorchProbe` (the
Lightning and Hugging Face callbacks wrapping it are in :mod:`nnsig_torch.callbacks`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nnsig_core.capture.hf_datasets import is_hf_dataset
from nnsig_core.capture.probe import DEFAULT_PREFIX, Probe, adapter_options, row_settings
from nnsig_core.store import ActivationStore

from .adapter import TorchAdapter


def _is_dataset(data: Any) -> bool:
    """A map-style data set (``len`` and ``data[i]``), not arrays, tensors, pairs or a loader."""
    if isinstance(data, (tuple, list, Mapping, np.ndarray, torch.Tensor,
                         torch.utils.data.DataLoader)):
        return False
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


def probe_arrays(data: Any, n: int | None = None, indices: Sequence[int] | None = None,
                 batch_axis: int = 0) -> Any:
    """The probe set: a map-style ``Dataset`` read once (``indices``, else its first ``n``)
    and collated into ``(inputs, labels)``, an ``(X, y)`` pair cut the same way (``X``
    along ``batch_axis``), or anything else (a loader) as it is. A Hugging Face dataset
    stays one (its rows cut the same way), read as :func:`~nnsig_core.capture.capture`
    reads it."""
    if is_hf_dataset(data) and (indices is not None or n is not None):
        if not hasattr(data, "select"):  # an IterableDataset: its first n examples
            if indices is not None:
                raise TypeError("indices= needs a map-style dataset; for an IterableDataset "
                                "pass n= (its first n examples).")
            return data.take(int(n))  # type: ignore[arg-type]  # n is set
        if indices is not None:
            return data.select([int(i) for i in indices])
        return data.select(range(min(int(n), len(data))))  # type: ignore[arg-type]  # n is set
    if _is_dataset(data) and not is_hf_dataset(data):
        chosen = list(indices) if indices is not None else range(min(n or len(data), len(data)))
        items = [data[int(i)] for i in chosen]
        batch = torch.utils.data.default_collate(items)
        if isinstance(batch, (list, tuple)) and len(batch) >= 2:
            return _batch_along(batch[0], batch_axis), batch[1]
        return _batch_along(batch, batch_axis)
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        if indices is None and n is None:
            return data
        if indices is None:
            indices = range(min(int(n), int(np.shape(x)[batch_axis])))  # type: ignore[arg-type]
        idx = np.asarray(list(indices), dtype=np.int64)
        return _take(x, idx, batch_axis), (None if y is None else _take(y, idx, 0))
    if indices is not None:
        raise TypeError(f"indices= needs a map-style Dataset or (X, y) arrays, not a "
                        f"{type(data).__name__}; for a DataLoader give its dataset "
                        "(TorchProbe(loader.dataset, indices=...)), or pass n= (its first n).")
    return data


def _take(a: Any, idx: np.ndarray, axis: int) -> Any:
    """The samples ``idx`` of ``a`` (a tensor, an array or a list) along ``axis``."""
    if isinstance(a, torch.Tensor):
        return a.index_select(axis, torch.as_tensor(idx, device=a.device))
    if isinstance(a, np.ndarray) or axis != 0:
        return np.take(np.asarray(a), idx, axis=axis)
    return [a[int(i)] for i in idx]


def _batch_along(x: Any, batch_axis: int) -> Any:
    """Collated (batch-first) inputs with their batch axis at ``batch_axis``."""
    if batch_axis == 0:
        return x
    if isinstance(x, torch.Tensor):
        return x.movedim(0, batch_axis) if x.ndim > batch_axis else x
    if isinstance(x, Mapping):
        return {k: _batch_along(v, batch_axis) for k, v in x.items()}
    return x


class TorchProbe(Probe):
    """A fixed probe set captured through a PyTorch model at checkpoints of its training.

    Parameters
    ----------
    data : Dataset, (X, y) or iterable of batches
        The probe set: a map-style ``Dataset`` is read once, its first ``n``
        samples (or ``indices``) collated into tensors (their batch axis moved
        to ``batch_axis``); ``(X, y)`` is cut the same way (``X`` along
        ``batch_axis``); a loader must give the same samples at each checkpoint.
    store : ActivationStore, path or URL
        The store of the timeline, one split per checkpoint.
    n : int, optional
        Samples of the probe set (e.g. 2000): the first ``n`` (of a loader, its first
        ``n`` samples, as ``max_samples=n``).
    indices : sequence of int, optional
        Which samples of ``data`` (instead of the first ``n``); a Dataset or arrays only.
    layers, pool, layout
        As for :class:`~nnsig_torch.TorchAdapter`.
    prefix : str
        Split names are ``<prefix>_<step>``.
    **options
        :class:`~nnsig_torch.TorchAdapter`'s other options (``mask``,
        ``token_key``, ``batch_axis``...) go to the adapter; the rest to
        :class:`~nnsig_core.capture.Probe` (``batch_size``, ``class_names``,
        ``keep_inputs``, capture options).

    Examples
    --------
    >>> probe = TorchProbe(test_set, "runs/timeline.zarr", n=2000)
    >>> probe.capture(model, step=0, epoch=0)          # before training
    >>> probe.capture(model, step=step, epoch=epoch)   # after each epoch
    """

    def __init__(self, data: Any, store: ActivationStore | str | os.PathLike[str], *,
                 n: int | None = None, indices: Sequence[int] | None = None,
                 layers: Any = None, pool: Any = "auto", layout: Any = None,
                 prefix: str = DEFAULT_PREFIX, **options: Any) -> None:
        self.layers, self.pool, self.layout = layers, pool, layout
        self.adapter_options = adapter_options(TorchAdapter, options)
        probe_data = probe_arrays(data, n, indices, int(self.adapter_options.get("batch_axis", 0)))
        if probe_data is data and n is not None:  # a loader or an iterable: its first n
            options["max_samples"] = min(int(n), int(options.get("max_samples") or n))
        settings = row_settings(layers, pool, layout, self.adapter_options)
        super().__init__(probe_data, store, make_adapter=self._make_adapter,
                         prefix=prefix, settings=settings, **options)

    def capture(self, model: Any, *, step: int, epoch: int | float | None = None,
                **extra: Any) -> str | None:
        """:meth:`Probe.capture <nnsig_core.capture.Probe.capture>`, leaving torch's random
        state as it was: iterating a DataLoader draws its seed from the global generator,
        which would change the training run's shuffling and dropout."""
        with torch.random.fork_rng(devices=[]):
            return super().capture(model, step=step, epoch=epoch, **extra)

    def _make_adapter(self, model: nn.Module) -> TorchAdapter:
        return TorchAdapter(model, layers=self.layers, pool=self.pool, layout=self.layout,
                            **self.adapter_options)
