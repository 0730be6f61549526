"""Finding NaN and infinities in activations: one error, one *sum-first* check
(:func:`nonfinite_rows`), for adapters and readers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

#: What the framework adapters advise when a batch holds NaN or Inf.
ADAPTER_FIX = "Check the inputs and weights, or pass keep_nonfinite=True to keep them."

_DEFAULT_FIX = (
    "The model produced NaN or Inf (diverged training, overflow in low precision?); "
    "fix the model or its inputs.")


class NonFiniteActivationError(ValueError):
    """An activation (or the model output) holds NaN or Inf, while capturing or reading.

    Parameters
    ----------
    message : str
    layer : str, optional
        The layer; ``None`` for the model output.
    split : str, optional
        The split of the store, when read from one.
    row : int, optional
        The position of the first bad sample (in its batch, or in its split).
    sample_index : int, optional
        The data-set index of that sample, when known.
    """

    def __init__(self, message: str, *, layer: str | None = None, split: str | None = None,
                 row: int | None = None, sample_index: int | None = None) -> None:
        super().__init__(message)
        self.layer = layer
        self.split = split
        self.row = row
        self.sample_index = sample_index


def _rows(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block)
    if block.ndim == 0:
        raise ValueError("A block of rows needs a sample axis; got a scalar.")
    return block.reshape(block.shape[0], math.prod(block.shape[1:]))


def nonfinite_rows(block: np.ndarray, row_sums: np.ndarray | None = None) -> np.ndarray:
    """Sorted int64 positions of the rows of ``block`` ``(n, ...)`` holding a NaN or an infinity.

    Sum-first: only the rows whose float32 sum (``row_sums``, shape ``(n,)``, or
    computed here after one sum over the whole block) is not finite are tested
    element-wise.
    """
    flat = _rows(block)
    none = np.empty(0, dtype=np.int64)
    if flat.dtype.kind not in "fc" or flat.size == 0:
        return none  # integers and booleans are always finite
    if row_sums is None:
        if flat.dtype.kind == "c":
            return np.flatnonzero(~np.isfinite(flat).all(axis=1)).astype(np.int64)
        with np.errstate(over="ignore", invalid="ignore"):  # what the sums are for
            if np.isfinite(np.add.reduce(flat.reshape(-1), dtype=np.float32)):
                return none
            row_sums = np.add.reduce(flat, axis=1, dtype=np.float32)
    sums = np.asarray(row_sums).reshape(-1)
    if sums.shape[0] != flat.shape[0]:
        raise ValueError(f"row_sums has {sums.shape[0]} values for {flat.shape[0]} rows.")
    suspect = np.flatnonzero(~np.isfinite(sums))
    if not suspect.size:
        return none
    return suspect[~np.isfinite(flat[suspect]).all(axis=1)].astype(np.int64)


def check_finite(block: np.ndarray, *, layer: str | None, split: str | None = None,
                 rows: np.ndarray | None = None, sample_index: np.ndarray | None = None,
                 row_sums: np.ndarray | None = None, fix: str = _DEFAULT_FIX,
                 scope: str = "this block") -> None:
    """Raise :class:`NonFiniteActivationError` when a row of ``block`` holds NaN or Inf.

    The message names the layer (and split), the first bad sample and its
    data-set index, the first bad unit and its value, how many rows are
    affected, and ``fix``.

    Parameters
    ----------
    block : numpy.ndarray
        Shape ``(n, *unit_shape)``.
    layer : str or None
        The layer's name; ``None`` for the model output.
    split : str, optional
        The split the block was read from.
    rows : numpy.ndarray, optional
        The position of each row of ``block`` (else its row in the block, "of ``scope``").
    sample_index : numpy.ndarray, optional
        The data-set index of each position (indexed by ``rows[i]``, or ``i``).
    row_sums : numpy.ndarray, optional
        One float32 sum per row, already computed.
    fix : str
        What the user should do.
    scope : str
        How the message names the block ("the batch", "this chunk").
    """
    bad = nonfinite_rows(block, row_sums)
    if not bad.size:
        return
    flat = _rows(block)
    i = int(bad[0])
    row = int(rows[i]) if rows is not None else i
    si = int(sample_index[row]) if sample_index is not None else None
    unit = int(np.flatnonzero(~np.isfinite(flat[i]))[0])
    value = flat[i, unit]
    shape = np.shape(block)[1:]
    where = f"layer {layer!r}" if layer is not None else "the model output"
    where += f" of split {split!r}" if split is not None else ""
    at = f"sample {row}" + (f" of {scope}" if rows is None else "")
    at += f" (data set index {si})" if si is not None else ""
    unit_name = unit if len(shape) <= 1 else tuple(int(u) for u in np.unravel_index(unit, shape))
    raise NonFiniteActivationError(
        f"NaN or Inf in {where} at {at}: unit {unit_name} is {value}; "
        f"{bad.size} sample(s) of {scope} affected. {fix}",
        layer=layer, split=split, row=row, sample_index=si)


def check_batch_finite(outputs: np.ndarray, activations: Mapping[str, np.ndarray], *,
                       row_sums: Mapping[str, np.ndarray] | None = None,
                       output_row_sums: np.ndarray | None = None,
                       fix: str = ADAPTER_FIX) -> None:
    """:func:`check_finite` on the activations of one batch, then its outputs.

    Parameters
    ----------
    outputs : numpy.ndarray
        The model output, ``(n, n_outputs)``.
    activations : mapping of str to numpy.ndarray
        Capture name to ``(n, *unit_shape)``.
    row_sums : mapping of str to numpy.ndarray, optional
        One float32 sum per sample for each capture, already computed.
    output_row_sums : numpy.ndarray, optional
        The same for ``outputs``.
    fix : str
        What the user should do.
    """
    for name, values in activations.items():
        sums = row_sums.get(name) if row_sums is not None else None
        check_finite(values, layer=name, row_sums=sums, fix=fix, scope="the batch")
    check_finite(outputs, layer=None, row_sums=output_row_sums, fix=fix, scope="the batch")
