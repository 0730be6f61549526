"""The report of a token row space (``<split>.tokens``): the tokens that take each path, the
exemplars' inputs with the token's patch lit, and which token each map point is. Tokens are
named only through the caller's ``label(position, token_id)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.token_tables import token_labels
from nnsig_core.store import ActivationStore

TOP_TOKENS = 5
#: Rows of the token arrays read at a time when picking some rows.
READ_ROWS = 1 << 16


def token_rows_at(store: ActivationStore, split: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """``sample_row``, ``position`` and ``token`` of some ``rows`` of a token row space, reading
    only the blocks of :data:`READ_ROWS` rows that hold some, one at a time."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = {k: np.empty(rows.size, dtype=np.int64) for k in ("sample_row", "position", "token")}
    block = rows // READ_ROWS
    for b in np.unique(block):
        at = np.flatnonzero(block == b)
        part = store.token_rows(split, int(b) * READ_ROWS, (int(b) + 1) * READ_ROWS)
        for k, v in out.items():
            v[at] = np.asarray(part[k])[rows[at] - int(b) * READ_ROWS]
    return out


def token_map_points(store: ActivationStore, split: str, positions: np.ndarray,
                     label: Callable[[int, int], str] | None = None) -> dict[str, list[Any]]:
    """Which token each map point (``positions`` in the token row space) is: ``sample_row``,
    ``position``, ``token`` and, with ``label(position, token_id)``, ``label``."""
    tok = token_rows_at(store, split, positions)
    out: dict[str, list[Any]] = {k: [int(x) for x in v] for k, v in tok.items()}
    if label is not None:
        out["label"] = [str(label(p, t)) for p, t in zip(out["position"], out["token"],
                                                          strict=True)]
    return out


def add_token_rows(entry: dict[str, Any], store: ActivationStore, sigs: Signatures,
                   label: Callable[[int, int], str] | None = None, top: int = TOP_TOKENS) -> None:
    """Add ``level: "tokens"`` and each row's most frequent token labels to a split entry."""
    entry["level"] = "tokens"
    entry["parent"] = store.split_attrs(sigs.split).get("parent")
    if not sigs.n_samples:
        return
    codes, names = token_labels(sigs, store, label=label)
    L = len(sigs.layers)
    M = np.column_stack([sigs.labels, sigs.cluster_ids.astype(np.int64), sigs.predictions])
    uniq, inv = np.unique(M, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    where = {(int(u[0]), tuple(int(x) for x in u[1 : L + 1]), int(u[L + 1])): i
             for i, u in enumerate(uniq)}
    pairs, counts = np.unique(np.stack([inv, codes], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    per_row: list[list[list[Any]]] = [[] for _ in range(len(uniq))]
    for (g, c), k in zip(pairs[order], counts[order], strict=True):
        if len(per_row[g]) < top:
            per_row[g].append([names[int(c)], int(k)])
    for row in entry["rows"]:
        i = where.get((row["input"], tuple(row["path"]), row["output"]))
        if i is not None:
            row["tokens"] = per_row[i]


def check_token_grid(grid: Sequence[int] | None, store: ActivationStore, level: str,
                     splits: Sequence[str]) -> tuple[int, int, int] | None:
    """``grid`` as ``(rows, columns, prefix)``, checked against the token positions of the
    first of ``splits`` that keeps its images; ValueError naming the grid that fits."""
    if grid is None:
        return None
    if level != "tokens":
        raise ValueError(f"token_grid={tuple(grid)!r} is for the report of a token analysis; "
                         "this analysis has one row per sample: leave token_grid out.")
    try:
        rows, cols, prefix = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ValueError(f"token_grid must be (rows, columns, prefix tokens), not {grid!r}.") from None
    if rows < 1 or cols < 1 or prefix < 0:
        raise ValueError(f"token_grid={grid!r}: rows and columns must be >= 1 and prefix >= 0.")
    for split in splits:
        parent = store.split_attrs(split).get("parent")
        if not parent or parent not in store.splits or store.inputs(parent) is None:
            continue
        n = int(np.max(store.token_rows(split)["position"], initial=-1)) + 1
        if n and rows * cols + prefix != n:
            side = int(round(max(n - prefix, 0) ** 0.5))
            fit = (f" e.g. token_grid=({side}, {side}, {prefix})"
                   if side * side + prefix == n else "")
            raise ValueError(
                f"token_grid=({rows}, {cols}, {prefix}) describes {rows * cols + prefix} tokens "
                f"per input ({rows} x {cols} patches after {prefix} prefix token(s)), but the "
                f"inputs of split {split!r} have {n} (positions 0 to {n - 1}): give the grid "
                f"of the model's patches,{fit or ' rows x columns + prefix = ' + str(n)}.")
        break
    return rows, cols, prefix


def highlight_patch(img: np.ndarray, position: int, grid: Sequence[int]) -> np.ndarray:
    """``img`` with everything but the patch of ``position`` dimmed on the ``(rows, columns,
    prefix)`` grid (before ``prefix``, not a patch: all dimmed a little)."""
    rows, cols, prefix = (int(v) for v in grid)
    out = img.astype(np.float32)
    p = position - prefix
    if p < 0 or p >= rows * cols:
        return (out * 0.7).astype(np.uint8)
    h, w = img.shape[:2]
    r, c = divmod(p, cols)
    top, bottom = r * h // rows, (r + 1) * h // rows
    left, right = c * w // cols, (c + 1) * w // cols
    dim = out * 0.3
    dim[top:bottom, left:right] = out[top:bottom, left:right]
    return dim.astype(np.uint8)


def token_images(
    store: ActivationStore, split: str, rows: np.ndarray, grid: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Thumbnails for token rows ``rows`` of a token row space: its input's (from the parent
    split), the token's patch highlighted when ``grid`` is given; ``(rows, images)`` or None."""
    info: Mapping[str, Any] = store.split_attrs(split)
    parent = info.get("parent")
    if not parent or parent not in store.splits:
        return None
    arr = store.inputs(parent)
    if arr is None or not len(rows):
        return None
    tok = token_rows_at(store, split, rows)
    samples = tok["sample_row"]
    order = np.unique(samples)
    pix = np.asarray(arr.get_orthogonal_selection((order,)), dtype=np.uint8)
    by_sample = {int(s): img for s, img in zip(order, pix, strict=True)}
    images = []
    for i, s in enumerate(samples):
        img = by_sample[int(s)]
        if grid is not None:
            img = highlight_patch(img, int(tok["position"][i]), grid)
        images.append(img)
    return rows, np.stack(images)
