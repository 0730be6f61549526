"""Several runs in one report: side by side, and what changed between them.

Runs are compared split by split. Sample-level changes need the runs to hold
the *same samples* in that split: the same number of samples, the same
``sample_index`` (position in the source data set) in the same order, and the
same labels. When they do, the comparison lists the samples whose outcome
differs (right in one run, wrong in another) and the layer map of every run
shows the same sampled points (misclassified, flagged or changed in any run
first), so one sample can be followed from map to map. When they do not, the
comparison says why and shows only what does not need aligned samples (each
run's flows, maps and per-class separability).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnsig_core.report import layermap
from nnsig_core.report.single import (
    MapOptions,
    PreparedRun,
    chunk_rows,
    priority_masks,
    rows_at,
    run_body,
)
from nnsig_core.report.sprite import make_sprite, shrink

__all__ = ["MAX_CHANGED", "changed_samples", "comparison_data", "merged_classes", "same_samples"]

log = logging.getLogger("nnsig")

#: The most changed samples listed per split (all are counted).
MAX_CHANGED = 500


def merged_classes(preps: Sequence[PreparedRun]) -> list[str]:
    """The class names shared by every run (so every run gets the same class colours).

    Raises
    ------
    ValueError
        When two runs name a class differently: their classes are not the same.
    """
    n = max(p.n_classes for p in preps)
    named = [(p.run.label, p.store.class_names() or []) for p in preps]
    out = [str(i) for i in range(n)]
    given: list[str | None] = [None] * n
    for label, names in named:
        for i, name in enumerate(names[:n]):
            if given[i] is not None and given[i] != str(name):
                other = next(lab for lab, nm in named if i < len(nm) and str(nm[i]) == given[i])
                raise ValueError(
                    f"runs {other!r} and {label!r} name class {i} differently ({given[i]!r} vs "
                    f"{str(name)!r}): runs compared side by side need the same classes"
                )
            given[i] = str(name)
    return [g if g is not None else d for g, d in zip(given, out, strict=True)]


def same_samples(a: PreparedRun, b: PreparedRun, split: str) -> tuple[bool, str | None]:
    """Whether runs ``a`` and ``b`` hold the same samples in ``split``, and if not, why."""
    sa, sb = a.sigs[split], b.sigs[split]
    la, lb = a.run.label, b.run.label
    if sa.n_samples != sb.n_samples:
        return False, (f"{la!r} has {sa.n_samples} samples in {split!r}, {lb!r} has "
                       f"{sb.n_samples}")
    differ = int((sa.sample_index != sb.sample_index).sum())
    if differ:
        return False, (f"the {split!r} samples of {la!r} and {lb!r} are not the same data set "
                       f"samples in the same order (sample_index differs at {differ} positions)")
    differ = int((sa.labels != sb.labels).sum())
    if differ:
        return False, (f"the labels of {split!r} differ between {la!r} and {lb!r} at {differ} "
                       "samples")
    return True, None


def changed_samples(preps: Sequence[PreparedRun], split: str) -> np.ndarray:
    """Positions of the labelled samples whose outcome (right or wrong) is not the same in
    every run (the runs must hold the same samples: :func:`same_samples`)."""
    labels = preps[0].sigs[split].labels
    right = np.column_stack([p.sigs[split].predictions == labels for p in preps])
    lab = labels >= 0
    return np.flatnonzero(lab & right.any(axis=1) & ~right.all(axis=1))


def _changed_entry(preps: Sequence[PreparedRun], split: str, pos: np.ndarray,
                   opts: MapOptions) -> dict[str, Any]:
    s0 = preps[0].sigs[split]
    right = np.column_stack([p.sigs[split].predictions[pos] == s0.labels[pos] for p in preps])
    # Listed by pattern (right only in the first run first...), then by data set index.
    pattern = right.astype(np.int64) @ (1 << np.arange(len(preps)))[::-1]
    order = np.lexsort((s0.sample_index[pos], -pattern))
    listed = pos[order][:MAX_CHANGED]
    at = np.sort(listed)
    rows = [dict(zip(at.tolist(), rows_at(r, split, at).tolist(), strict=True)) for r in preps]
    samples = []
    for p in listed:
        item: dict[str, Any] = {
            "position": int(p),
            "sample_index": int(s0.sample_index[p]),
            "label": int(s0.labels[p]),
            "outputs": [int(r.sigs[split].predictions[p]) for r in preps],
            "rows": [int(rows[i][int(p)]) for i in range(len(preps))],
        }
        if any(split in r.scores for r in preps):
            item["scores"] = [None if split not in r.scores or not np.isfinite(r.scores[split][p])
                              else round(float(r.scores[split][p]), 4) for r in preps]
        samples.append(item)
    out: dict[str, Any] = {
        "n_changed": int(pos.size),
        "right_in": [int(c) for c in right.sum(axis=0)],
        "samples": samples,
        "truncated": bool(pos.size > listed.size),
    }
    arr = preps[0].store.inputs(split)
    if arr is not None and listed.size:
        idx = np.sort(listed)
        pix = np.asarray(arr.get_orthogonal_selection((idx,)), dtype=np.uint8)
        back = np.searchsorted(idx, listed)
        out["thumbnails"] = make_sprite(shrink(pix[back], opts.thumbnail_size))
    return out


def comparison_data(
    preps: Sequence[PreparedRun], opts: MapOptions, *, with_map: bool, **body_kw: Any
) -> dict[str, Any]:
    """The ``classes``, ``runs`` and ``comparison`` keys of a report of several runs."""
    classes = merged_classes(preps)
    splits = [s for s in preps[0].splits if all(s in p.splits for p in preps)]
    for p in preps:
        left = [s for s in p.splits if s not in splits]
        if left:
            log.warning("Split(s) %s of run %r are not in every run; left out of the comparison.",
                        ", ".join(left), p.run.label)
        p.splits = [s for s in p.splits if s in splits]
    info: dict[str, dict[str, Any]] = {}
    positions: list[dict[str, np.ndarray]] = [{} for _ in preps]
    kinds: list[dict[str, Any]] = [{} for _ in preps]
    shared: dict[str, bool] = {}
    changed: dict[str, np.ndarray] = {}
    for s in splits:
        same, reason = True, None
        for p in preps[1:]:
            same, reason = same_samples(preps[0], p, s)
            if not same:
                break
        info[s] = {"same_samples": same, "reason": reason}
        shared[s] = same
        if same:
            changed[s] = changed_samples(preps, s)
        if not with_map:
            continue
        if same:
            prio: dict[str, np.ndarray] = {}
            for p in preps:
                for k, m in priority_masks(p, s).items():
                    prio[k] = prio[k] | m if k in prio else m
            ch = np.zeros(preps[0].sigs[s].n_samples, dtype=bool)
            ch[changed[s]] = True
            prio["changed"] = ch
            sig0 = preps[0].sigs[s]
            pos, kd = layermap.select_points(sig0.labels, sig0.predictions, prio,
                                             opts.max_points, opts.seed,
                                             chunk_rows=chunk_rows(preps[0], s))
            for i in range(len(preps)):
                positions[i][s], kinds[i][s] = pos, kd
        else:
            for i, p in enumerate(preps):
                sg = p.sigs[s]
                positions[i][s], kinds[i][s] = layermap.select_points(
                    sg.labels, sg.predictions, priority_masks(p, s), opts.max_points, opts.seed,
                    chunk_rows=chunk_rows(p, s))
    bodies = []
    for i, p in enumerate(preps):
        body = run_body(p, positions[i] if with_map else None, kinds[i], opts,
                        map_thumbnails=i == 0, **body_kw)
        body["classes"] = classes
        bodies.append(body)
    for i, body in enumerate(bodies[1:], start=1):
        for s in splits:
            m = body["splits"][s].get("map")
            if m is not None and shared[s] and "thumbnails" in bodies[0]["splits"][s].get("map", {}):
                m["thumbnails"] = {"run": 0}
            elif m is not None and not shared[s]:
                _own_thumbnails(m, preps[i], s, opts)
    for s in splits:
        if s in changed:
            info[s]["changed"] = _changed_entry(preps, s, changed[s], opts)
    return {"classes": classes, "runs": bodies,
            "comparison": {"runs": [p.run.label for p in preps], "splits": info}}


def _own_thumbnails(m: dict[str, Any], prep: PreparedRun, split: str, opts: MapOptions) -> None:
    arr = prep.store.inputs(split)
    if arr is not None and m["positions"]:
        idx = np.asarray(m["positions"], dtype=np.int64)
        pix = np.asarray(arr.get_orthogonal_selection((idx,)), dtype=np.uint8)
        m["thumbnails"] = make_sprite(shrink(pix, opts.thumbnail_size))

