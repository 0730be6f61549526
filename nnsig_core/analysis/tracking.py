"""Clusters followed from one checkpoint to the next by the (same) probe samples they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

MIN_JACCARD = 0.2
EVENT_SHARE = 0.2
#: A part of a split (or of a merge) must be at least this share made of its partner.
MOSTLY = 0.5


def overlap_table(before: np.ndarray, after: np.ndarray, k_before: int, k_after: int) -> np.ndarray:
    """``(k_before, k_after)`` counts: samples in cluster i before and in cluster j after."""
    before = np.asarray(before, dtype=np.int64)
    after = np.asarray(after, dtype=np.int64)
    if before.shape != after.shape:
        raise ValueError(f"the two checkpoints hold {before.size} and {after.size} samples")
    flat = np.bincount(before * k_after + after, minlength=k_before * k_after)
    return flat.reshape(k_before, k_after)


def match_clusters(overlap: np.ndarray, *, min_jaccard: float = MIN_JACCARD,
                   event_share: float = EVENT_SHARE) -> dict[str, Any]:
    """Which cluster after continues which cluster before (Hungarian pairs with a Jaccard
    index >= ``min_jaccard``), and which split or merged: ``pairs``, ``splits``, ``merges``,
    ``jaccard``."""
    C = np.asarray(overlap, dtype=np.float64)
    size_b, size_a = C.sum(axis=1), C.sum(axis=0)
    union = size_b[:, None] + size_a[None, :] - C
    jac = np.divide(C, union, out=np.zeros_like(C), where=union > 0)
    rows, cols = linear_sum_assignment(-C)
    pairs, jaccard = [], []
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if C[i, j] > 0 and jac[i, j] >= min_jaccard:
            pairs.append((i, j))
            jaccard.append(round(float(jac[i, j]), 4))
    from_b = np.divide(C, size_b[:, None], out=np.zeros_like(C), where=size_b[:, None] > 0)
    into_a = np.divide(C, size_a[None, :], out=np.zeros_like(C), where=size_a[None, :] > 0)
    splits = [(i, p.tolist()) for i in range(C.shape[0])
              if (p := np.flatnonzero((from_b[i] >= event_share) & (into_a[i] >= MOSTLY))).size > 1]
    merges = [(p.tolist(), j) for j in range(C.shape[1])
              if (p := np.flatnonzero((into_a[:, j] >= event_share)
                                      & (from_b[:, j] >= MOSTLY))).size > 1]
    return {"pairs": pairs, "splits": splits, "merges": merges, "jaccard": jaccard}


def assign_tracks(ids: Sequence[np.ndarray], n_clusters: Sequence[int], *,
                  min_jaccard: float = MIN_JACCARD,
                  event_share: float = EVENT_SHARE) -> tuple[list[np.ndarray], list[list[dict]], int]:
    """Track ids of one layer's clusters over a timeline (``ids``: the same samples' ids).

    Returns, per checkpoint, the track id of each cluster (-1: empty); per checkpoint the
    events since the one before, in track ids (``{"kind": "split", "from": [a], "to": [b, c]}``,
    ``"merge"``, ``"new"``, ``"end"``, ``"continued"`` with a ``count``); the number of tracks.
    """
    if not ids:
        return [], [], 0
    tracks = [np.arange(int(n_clusters[0]), dtype=np.int64)]
    events: list[list[dict]] = [[]]
    n_tracks = int(n_clusters[0])
    for t in range(1, len(ids)):
        kb, ka = int(n_clusters[t - 1]), int(n_clusters[t])
        m = match_clusters(overlap_table(ids[t - 1], ids[t], kb, ka),
                           min_jaccard=min_jaccard, event_share=event_share)
        prev = tracks[t - 1]
        cur = np.full(ka, -1, dtype=np.int64)
        for i, j in m["pairs"]:
            cur[j] = prev[i]
        sizes_b = np.bincount(np.asarray(ids[t - 1], dtype=np.int64), minlength=kb)
        sizes_a = np.bincount(np.asarray(ids[t], dtype=np.int64), minlength=ka)
        for j in np.flatnonzero((cur < 0) & (sizes_a > 0)):  # an empty cluster gets no track
            cur[j] = n_tracks
            n_tracks += 1
        ev: list[dict] = []
        in_event_b: set[int] = set()
        in_event_a: set[int] = set()
        for i, parts in m["splits"]:
            ev.append({"kind": "split", "from": [int(prev[i])], "to": [int(cur[j]) for j in parts]})
            in_event_b.add(i)
            in_event_a.update(parts)
        for parts, j in m["merges"]:
            ev.append({"kind": "merge", "from": [int(prev[i]) for i in parts], "to": [int(cur[j])]})
            in_event_a.add(j)
            in_event_b.update(parts)
        matched_b = {i for i, _ in m["pairs"]}
        matched_a = {j for _, j in m["pairs"]}
        for j in range(ka):
            if j not in matched_a and j not in in_event_a and sizes_a[j] > 0:
                ev.append({"kind": "new", "from": [], "to": [int(cur[j])]})
        for i in range(kb):
            if i not in matched_b and i not in in_event_b and sizes_b[i] > 0:
                ev.append({"kind": "end", "from": [int(prev[i])], "to": []})
        ev.append({"kind": "continued", "count": len(m["pairs"])})
        tracks.append(cur)
        events.append(ev)
    return tracks, events, n_tracks
