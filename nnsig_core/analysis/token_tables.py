"""Token-level signatures: which tokens of which inputs take which paths.

The tables here join the paths of a token row space (``<split>.tokens``, one row per token)
with the tokens' positions, ids and inputs. ``label(position, token_id) -> str`` names a
token (default: ``"#<id>"``, else ``"pos <position>"``); tokens of one label count together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nnsig_core.analysis.signatures import Signatures
from nnsig_core.analysis.tables import Table
from nnsig_core.store import ActivationStore, StoreError

#: ``label(position, token_id) -> str``.
TokenLabel = Callable[[int, int], str]


def default_token_label(position: int, token: int) -> str:
    """``"#<id>"`` when the token id is known, else ``"pos <position>"``."""
    return f"#{token}" if token >= 0 else f"pos {position}"


def _rows(sigs: Signatures, store: ActivationStore) -> dict[str, np.ndarray]:
    if store.level(sigs.split) != "tokens":
        raise StoreError(f"Split {sigs.split!r} has one row per sample; token tables need a token "
                         f"row space (a split such as {sigs.split + '.tokens'!r}, captured with "
                         "pool='tokens').")
    info = store.token_rows(sigs.split)
    return {k: v[sigs.rows] for k, v in info.items()}


def token_labels(sigs: Signatures, store: ActivationStore, *,
                 label: TokenLabel | None = None) -> tuple[np.ndarray, list[str]]:
    """Per token of ``sigs``: the index of its label, and the labels (in first-seen order)."""
    rows = _rows(sigs, store)
    fn = label or default_token_label
    pairs = np.stack([rows["position"], rows["token"]], axis=1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    names = [str(fn(int(p), int(t))) for p, t in uniq]
    distinct = list(dict.fromkeys(names))
    where = {n: i for i, n in enumerate(distinct)}
    code = np.array([where[n] for n in names], dtype=np.int64)
    return code[inv.reshape(-1)], distinct


def token_table(sigs: Signatures, store: ActivationStore, *, label: TokenLabel | None = None,
                as_frame: bool = False) -> Any:
    """One row per token: ``sample_index``, ``sample_row``, ``position``, ``token``,
    ``label``, ``input_class``, ``signature``, ``output_class``, in store order."""
    rows = _rows(sigs, store)
    codes, names = token_labels(sigs, store, label=label)
    out = [(int(si), int(sr), int(p), int(t), names[int(c)], int(y),
            tuple(int(x) for x in path), int(o))
           for si, sr, p, t, c, y, path, o in zip(
               sigs.sample_index, rows["sample_row"], rows["position"], rows["token"], codes,
               sigs.labels, sigs.cluster_ids, sigs.predictions, strict=True)]
    table = Table(["sample_index", "sample_row", "position", "token", "label", "input_class",
                   "signature", "output_class"], out)
    return table.to_frame() if as_frame else table


def _counted(items: Any) -> str:
    """``"a ×3, b ×1"``: labels with their counts, most frequent first."""
    return ", ".join(f"{name} \u00d7{count}" for name, count in items)


def _top(groups: np.ndarray, items: np.ndarray, n_groups: int, top: int) -> list[list[tuple[int, int]]]:
    """Per group, its ``top`` most frequent items with their counts (count, then item order)."""
    found: list[list[tuple[int, int]]] = [[] for _ in range(n_groups)]
    pairs, counts = np.unique(np.stack([groups, items], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    for (g, item), c in zip(pairs[order], counts[order], strict=True):
        if len(found[g]) < top:
            found[g].append((int(item), int(c)))
    return found


def tokens_by_path(sigs: Signatures, store: ActivationStore, *,
                   label: TokenLabel | None = None, top: int = 5, as_frame: bool = False) -> Any:
    """Per distinct path: ``signature``, ``count`` (tokens), ``inputs`` (distinct samples),
    ``tokens`` (its ``top`` most frequent labels, ``"pos 0 ×20, pos 3 ×10"``); most frequent
    paths first. :func:`token_table` has every token for finer questions."""
    codes, names = token_labels(sigs, store, label=label)
    rows = _rows(sigs, store)
    paths, inv, counts = np.unique(sigs.cluster_ids, axis=0, return_inverse=True,
                                   return_counts=True)
    inv = inv.reshape(-1)
    tops = _top(inv, codes, len(paths), top)
    inputs = np.unique(np.stack([inv, rows["sample_row"]], axis=1), axis=0)[:, 0]
    n_inputs = np.bincount(inputs, minlength=len(paths))
    order = np.lexsort((np.arange(len(paths)), -counts))
    out = [(tuple(int(x) for x in paths[i]), int(counts[i]), int(n_inputs[i]),
            _counted((names[c], k) for c, k in tops[i])) for i in order]
    table = Table(["signature", "count", "inputs", "tokens"], out)
    return table.to_frame() if as_frame else table


def paths_by_token(sigs: Signatures, store: ActivationStore, *,
                   label: TokenLabel | None = None, top: int = 3, as_frame: bool = False) -> Any:
    """Per token label: ``label``, ``count``, ``paths`` (distinct), ``top_paths`` (its ``top``
    most frequent signatures, ``"0-3 ×12, 1-3 ×5"``); most frequent labels first."""
    codes, names = token_labels(sigs, store, label=label)
    paths, inv = np.unique(sigs.cluster_ids, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    tops = _top(codes, inv, len(names), top)
    counts = np.bincount(codes, minlength=len(names))
    n_paths = np.bincount(np.unique(np.stack([codes, inv], axis=1), axis=0)[:, 0],
                          minlength=len(names))
    order = np.lexsort((np.arange(len(names)), -counts))
    out = [(names[i], int(counts[i]), int(n_paths[i]),
            _counted(("-".join(str(int(x)) for x in paths[p]), k) for p, k in tops[i]))
           for i in order]
    table = Table(["label", "count", "paths", "top_paths"], out)
    return table.to_frame() if as_frame else table
