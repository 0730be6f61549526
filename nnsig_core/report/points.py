"""The layer map's points: a bounded, stratified sample of a split, drawn block by block, the
same with and without a cluster (``docs/design.md``, "Report and viewer")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnsig_core.execute.blocks import is_lazy, reduce_columns, take

#: Share of a split's points the priority samples may take when they are too many.
PRIORITY_SHARE = 1 / 2

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def allocate(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` draws over strata of ``sizes`` proportionally (largest remainder),
    at least one per non-empty stratum when ``k`` allows, never more than a stratum holds."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if k >= total:
        return sizes.copy()
    out = np.zeros_like(sizes)
    nonempty = np.flatnonzero(sizes > 0)
    if k >= nonempty.size:
        out[nonempty] = 1
    rest = k - int(out.sum())
    room = sizes - out
    while rest > 0:
        share = room * (rest / max(int(room.sum()), 1))
        take = np.minimum(np.floor(share).astype(np.int64), room)
        if take.sum() == 0:  # hand out the remainder, largest fractional part first
            order = np.lexsort((-room, -(share - np.floor(share))))
            take = np.zeros_like(room)
            for i in order:
                if rest - int(take.sum()) <= 0:
                    break
                if room[i] > 0:
                    take[i] = 1
        out += take
        room -= take
        rest = k - int(out.sum())
    return out


def strata_of(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """The stratum of each sample: its label, or ``-1 - prediction`` when unlabelled."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(labels >= 0, labels, -1 - np.asarray(predictions, dtype=np.int64))


def _kind_of(masks: Sequence[np.ndarray], n: int) -> np.ndarray:
    """The first priority kind each sample belongs to (``len(masks)``: none, "other")."""
    kind = np.full(n, len(masks), dtype=np.int64)
    for i in reversed(range(len(masks))):
        kind[np.asarray(masks[i], dtype=bool)] = i
    return kind


def count_part(labels: np.ndarray, predictions: np.ndarray, *masks: np.ndarray,
               lo: int = 0) -> dict[str, Any]:
    """A block's counts: ``keys`` (kind, stratum) pairs with their ``counts``, and ``in_mask``,
    the samples of every priority mask (a sample may be in several)."""
    labels = np.asarray(labels)
    strata = strata_of(labels, predictions)
    kind = _kind_of(masks, labels.size)
    keys, counts = np.unique(np.column_stack([kind, strata]).reshape(-1, 2), axis=0,
                             return_counts=True)
    return {"keys": keys.astype(np.int64), "counts": counts.astype(np.int64),
            "in_mask": np.array([int(np.asarray(m, dtype=bool).sum()) for m in masks],
                                dtype=np.int64)}


def merge_counts(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """Sum the counts of several blocks."""
    keys = np.concatenate([p["keys"] for p in parts])
    counts = np.concatenate([p["counts"] for p in parts])
    uniq, inv = np.unique(keys.reshape(-1, 2), axis=0, return_inverse=True)
    return {"keys": uniq, "counts": np.bincount(inv.reshape(-1), weights=counts,
                                                minlength=len(uniq)).astype(np.int64),
            "in_mask": np.sum([p["in_mask"] for p in parts], axis=0).astype(np.int64)}


@dataclass
class Draw:
    """What every block needs to draw its share: the quotas and the chunks' tiers."""

    keys: np.ndarray  # (g, 2) kind, stratum, sorted
    quota: np.ndarray  # (g,) points per (kind, stratum)
    n_kinds: int  # priority kinds (the "other" kind is n_kinds)
    seed: int
    chunk_rows: int
    tiers: np.ndarray | None  # tier of each chunk, or None: every chunk in tier 0


def quotas(counts: Mapping[str, Any], n_kinds: int, max_points: int, seed: int = 0,
           chunk_rows: int | None = None, pool_factor: int = 20) -> Draw:
    """The points each (kind, stratum) gets (see the module doc) and the chunks' tiers."""
    keys, sizes = np.asarray(counts["keys"]).reshape(-1, 2), np.asarray(counts["counts"])
    max_points = max(0, int(max_points))
    kind = keys[:, 0]
    p_total = int(sizes[kind < n_kinds].sum())
    o_total = int(sizes[kind == n_kinds].sum())
    budget = min(p_total, max(int(max_points * PRIORITY_SHARE), max_points - o_total),
                 max_points)
    quota = np.zeros(len(keys), dtype=np.int64)
    taken = 0
    for k in range(n_kinds + 1):
        sel = np.flatnonzero(kind == k)
        left = (budget if k < n_kinds else max_points) - taken
        want = min(int(sizes[sel].sum()), max(left, 0))
        quota[sel] = allocate(sizes[sel], want)
        taken += want
    n = int(sizes.sum())
    tiers = None
    rows = int(chunk_rows or 0)
    if rows > 0 and n:
        n_chunks = -(-n // rows)
        per_tier = -(-pool_factor * max_points // rows)
        if 0 < per_tier < n_chunks // 2:
            order = np.random.default_rng(seed).permutation(n_chunks)
            tiers = np.empty(n_chunks, dtype=np.int64)
            tiers[order] = np.arange(n_chunks) // per_tier
    return Draw(keys, quota, n_kinds, int(seed), max(rows, 1), tiers)


def _uniform(seed: int, positions: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per position, hashed from ``seed`` (splitmix64)."""
    z = positions.astype(np.uint64) * _GOLDEN + np.uint64(seed & 0xFFFFFFFF) * np.uint64(
        0xD1B54A32D192ED03)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _smallest(group: np.ndarray, key: np.ndarray, pos: np.ndarray,
              quota: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group, the ``quota[group]`` entries with the smallest keys (ties: smaller position)."""
    order = np.lexsort((pos, key, group))
    group, key, pos = group[order], key[order], pos[order]
    if group.size:
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        rank = np.arange(group.size) - np.repeat(starts, np.diff(np.r_[starts, group.size]))
        keep = rank < quota[group]
        group, key, pos = group[keep], key[keep], pos[keep]
    return group, key, pos


def draw_part(labels: np.ndarray, predictions: np.ndarray, *masks: np.ndarray, draw: Draw,
              lo: int = 0) -> dict[str, np.ndarray]:
    """A block's candidates: per (kind, stratum), its samples with the smallest keys."""
    labels = np.asarray(labels)
    with np.errstate(over="ignore"):
        pos = lo + np.arange(labels.size, dtype=np.int64)
        pair = np.column_stack([_kind_of(masks, labels.size), strata_of(labels, predictions)])
        # Each sample's (kind, stratum) is one of draw.keys (the counts saw every sample).
        flat = draw.keys[:, 0] * (1 << 32) + (draw.keys[:, 1] + (1 << 31))
        group = np.searchsorted(flat, pair[:, 0] * (1 << 32) + (pair[:, 1] + (1 << 31)))
        group = np.minimum(group, max(len(flat) - 1, 0))
        wanted = (draw.quota[group] > 0) if len(flat) else np.zeros(labels.size, dtype=bool)
        group, pos = group[wanted], pos[wanted]
        key = _uniform(draw.seed, pos)
        if draw.tiers is not None:
            key = key + draw.tiers[pos // draw.chunk_rows]
    g, k, p = _smallest(group, key, pos, draw.quota)
    return {"group": g, "key": k, "pos": p}


def merge_draws(*parts: Mapping[str, np.ndarray], draw: Draw) -> dict[str, np.ndarray]:
    """Keep, per (kind, stratum), the candidates with the smallest keys of several blocks."""
    g, k, p = (np.concatenate([q[name] for q in parts]) for name in ("group", "key", "pos"))
    g, k, p = _smallest(g, k, p, draw.quota)
    return {"group": g, "key": k, "pos": p}


def kinds_on_map(names: Sequence[str], counts: Mapping[str, Any], drawn: Mapping[str, Any],
                 on_map: Sequence[np.ndarray], draw: Draw) -> dict[str, list[int]]:
    """``{kind: [in the split, on the map]}`` for each priority mask and ``"other"``;
    ``on_map`` holds each mask's values at the drawn positions."""
    keys = np.asarray(counts["keys"]).reshape(-1, 2)
    out = {name: [int(counts["in_mask"][i]), int(np.asarray(on_map[i], dtype=bool).sum())]
           for i, name in enumerate(names)}
    other = draw.keys[np.asarray(drawn["group"], dtype=np.int64), 0] == draw.n_kinds
    out["other"] = [int(np.asarray(counts["counts"])[keys[:, 0] == draw.n_kinds].sum()),
                    int(other.sum())]
    return out


def select_points(
    labels: np.ndarray, predictions: np.ndarray, priority: Mapping[str, np.ndarray],
    max_points: int, seed: int = 0, chunk_rows: int | None = None, pool_factor: int = 20,
    client: Any = None,
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """The sorted positions of a split's map points (``min(n, max_points)``) and, per priority
    kind and ``"other"``, ``[in the split, on the map]``.

    Points are stratified by label (by prediction when unlabelled), the ``priority`` masks'
    samples first, in order. With ``chunk_rows``, a split of many chunks is drawn from tiers of
    about ``pool_factor * max_points`` rows. Dask arrays are drawn on ``client``'s cluster.
    """
    names = list(priority)
    masks = [priority[k] if is_lazy(priority[k]) else np.asarray(priority[k], dtype=bool)
             for k in names]
    cols = [labels, predictions, *masks]
    counts = reduce_columns(count_part, merge_counts, cols, client=client)
    draw = quotas(counts, len(names), max_points, seed, chunk_rows, pool_factor)
    drawn = reduce_columns(draw_part, merge_draws, cols, draw=draw, merge_kw={"draw": draw},
                           client=client)
    order = np.argsort(drawn["pos"], kind="stable")
    drawn = {k: v[order] for k, v in drawn.items()}
    positions = drawn["pos"].astype(np.int64)
    kinds = kinds_on_map(names, counts, drawn, [take(m, positions, client) for m in masks], draw)
    return positions, kinds
