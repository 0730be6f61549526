"""Token-level rows: what an adapter returns for a layer pooled with ``"tokens"``.

Keyed by the layer's name plus :data:`TOKENS_SUFFIX`; every token-level layer of one
capture must yield the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: Appended to a layer's name for its token-level rows in an adapter's activations.
TOKENS_SUFFIX = "@tokens"


def token_name(name: str) -> str:
    """The key of a layer's token-level rows in an adapter's activations."""
    return name + TOKENS_SUFFIX


@dataclass
class TokenRows:
    """The token-level rows of one layer for one batch.

    Attributes
    ----------
    values : numpy.ndarray
        ``(rows, *unit_shape)``, one row per token kept (padding left out).
    sample, position : numpy.ndarray
        int64 ``(rows,)``: each token's sample in the batch, and its (flat) position.
    token : numpy.ndarray or None
        int64 ``(rows,)``: the input token ids, when the batch held them.
    """

    values: np.ndarray
    sample: np.ndarray
    position: np.ndarray
    token: np.ndarray | None = None

    def __post_init__(self) -> None:
        rows = self.values.shape[0] if self.values.ndim else -1
        for what in ("sample", "position", "token"):
            arr = getattr(self, what)
            if arr is None:
                continue
            arr = np.asarray(arr, dtype=np.int64).reshape(-1)
            if arr.shape[0] != rows:
                raise ValueError(f"TokenRows.{what} has {arr.shape[0]} entries for {rows} rows "
                                 "of values.")
            setattr(self, what, arr)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)


def split_token_rows(
        activations: Mapping[str, object]) -> tuple[dict[str, np.ndarray], dict[str, TokenRows]]:
    """Separate an adapter's activations into sample-level arrays and token-level rows
    (keyed by the layer's plain name, without :data:`TOKENS_SUFFIX`)."""
    samples: dict[str, np.ndarray] = {}
    tokens: dict[str, TokenRows] = {}
    for name, value in activations.items():
        if isinstance(value, TokenRows):
            plain = name[: -len(TOKENS_SUFFIX)] if name.endswith(TOKENS_SUFFIX) else name
            if plain in tokens:
                raise ValueError(f"Two token-level entries for layer {plain!r}.")
            tokens[plain] = value
        else:
            samples[name] = value  # type: ignore[assignment]
    return samples, tokens


def check_same_tokens(tokens: Mapping[str, TokenRows]) -> TokenRows | None:
    """The rows shared by every token-level layer of a batch (the first one's), or ``None``."""
    first_name, first = None, None
    for name, rows in tokens.items():
        if first is None:
            first_name, first = name, rows
            continue
        if not (np.array_equal(rows.sample, first.sample)
                and np.array_equal(rows.position, first.position)):
            raise ValueError(
                f"Token-level layers {first_name!r} and {name!r} have different tokens "
                f"({len(first)} vs {len(rows)} rows in this batch: another sequence length or "
                "another mask). Every layer pooled with 'tokens' in one capture shares one row "
                f"per token: keep token rows of one of them (pool={{{first_name!r}: "
                f"('mean', 'tokens'), {name!r}: 'mean'}}), or capture {name!r} into a store of "
                "its own (the splits of a store hold the same layers).")
    return first
