"""Several runs in one report: side by side and, when the runs hold the same samples in a
split, what changed between them (reductions, on the cluster when the signatures are there)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from functools import reduce
from typing import Any

import numpy as np

from nnsig_core._warnings import warn
from nnsig_core.execute.blocks import reduce_columns, take
from nnsig_core.report.single import (
    MapOptions,
    PreparedRun,
    draw_map_points,
    priority_masks,
    rows_at,
    run_body,
    thumbnails_at,
)
from nnsig_core.report.sprite import make_sprite, shrink

#: The most changed samples listed per split (all are counted).
MAX_CHANGED = 500


def merged_classes(preps: Sequence[PreparedRun]) -> list[str]:
    """The class names shared by every run (the same class colours in every run); ValueError
    when two runs name a class differently."""
    n = max(p.n_classes for p in preps)
    named = [(p.run.label, p.store.class_names() or []) for p in preps]
    out = [str(i) for i in range(n)]
    given: list[str | None] = [None] * n
    for label, names in named:
        for i, name in enumerate(names[:n]):
            if given[i] is not None and given[i] != str(name):
                other = next(lab for lab, nm in named if i < len(nm) and str(nm[i]) == given[i])
                raise ValueError(f"runs {other!r} and {label!r} name class {i} differently "
                                 f"({given[i]!r} vs {str(name)!r}): runs compared side by side "
                                 "need the same classes")
            given[i] = str(name)
    return [g if g is not None else d for g, d in zip(given, out, strict=True)]


def _differences_part(a: np.ndarray, b: np.ndarray, lo: int = 0) -> dict[str, Any]:
    return {"n": np.int64((np.asarray(a) != np.asarray(b)).sum())}


def same_samples(a: PreparedRun, b: PreparedRun, split: str) -> tuple[bool, str | None]:
    """Whether runs ``a`` and ``b`` hold the same samples in ``split``, and if not, why."""
    sa, sb = a.sigs[split], b.sigs[split]
    la, lb = a.run.label, b.run.label
    if sa.n_samples != sb.n_samples:
        return False, (f"{la!r} has {sa.n_samples} samples in {split!r}, {lb!r} has "
                       f"{sb.n_samples}")
    client = a.client or b.client
    differ = int(reduce_columns(_differences_part, None, (sa.sample_index, sb.sample_index),
                                client=client)["n"])
    if differ:
        return False, (f"the {split!r} samples of {la!r} and {lb!r} are not the same data set "
                       f"samples in the same order (sample_index differs at {differ} positions)")
    differ = int(reduce_columns(_differences_part, None, (sa.labels, sb.labels),
                                client=client)["n"])
    if differ:
        return False, (f"the labels of {split!r} differ between {la!r} and {lb!r} at {differ} "
                       "samples")
    return True, None


def changed_mask(preps: Sequence[PreparedRun], split: str) -> Any:
    """Whether each labelled sample's outcome (right or wrong) differs between the runs
    (which must hold the same samples: :func:`same_samples`); lazy on a cluster."""
    labels = preps[0].sigs[split].labels
    right = [p.sigs[split].predictions == labels for p in preps]
    return (labels >= 0) & reduce(operator.or_, right) & ~reduce(operator.and_, right)


def _changed_part(labels: np.ndarray, sample_index: np.ndarray, *predictions: np.ndarray,
                  limit: int, lo: int = 0) -> dict[str, Any]:
    """A block's changed samples: their number, each run's right ones, and the first ``limit``."""
    labels = np.asarray(labels)
    preds = np.column_stack([np.asarray(p) for p in predictions])
    right = preds == labels[:, None]
    changed = (labels >= 0) & right.any(axis=1) & ~right.all(axis=1)
    r = right[changed]
    pattern = r.astype(np.int64) @ (1 << np.arange(len(predictions)))[::-1]
    part = {"n_changed": np.int64(changed.sum()), "right_in": r.sum(axis=0).astype(np.int64),
            "pattern": pattern, "sample_index": np.asarray(sample_index)[changed],
            "pos": lo + np.flatnonzero(changed), "label": labels[changed],
            "outputs": preds[changed]}
    return _first(part, limit)


_LISTED = ("pattern", "sample_index", "pos", "label", "outputs")


def _first(part: dict[str, Any], limit: int) -> dict[str, Any]:
    order = np.lexsort((part["sample_index"], -part["pattern"]))[:limit]
    return {**part, **{k: part[k][order] for k in _LISTED}}


def _merge_changed(*parts: dict[str, Any], limit: int) -> dict[str, Any]:
    out = {k: np.sum([p[k] for p in parts], axis=0) for k in ("n_changed", "right_in")}
    out.update({k: np.concatenate([p[k] for p in parts]) for k in _LISTED})
    return _first(out, limit)


def _changed_entry(preps: Sequence[PreparedRun], split: str, opts: MapOptions) -> dict[str, Any]:
    s0 = preps[0].sigs[split]
    found = reduce_columns(_changed_part, _merge_changed,
                           (s0.labels, s0.sample_index,
                            *(p.sigs[split].predictions for p in preps)),
                           limit=MAX_CHANGED, merge_kw={"limit": MAX_CHANGED},
                           client=preps[0].client)
    listed = np.asarray(found["pos"], dtype=np.int64)
    at = np.sort(listed)
    back = np.searchsorted(at, listed)
    rows = [rows_at(p, split, at)[0][back] for p in preps]
    scores = [take(p.scores[split], at, p.client)[back] if split in p.scores else None
              for p in preps]
    samples = []
    for i, pos in enumerate(listed):
        item: dict[str, Any] = {
            "position": int(pos), "sample_index": int(found["sample_index"][i]),
            "label": int(found["label"][i]), "outputs": [int(o) for o in found["outputs"][i]],
            "rows": [int(r[i]) for r in rows],
        }
        if any(v is not None for v in scores):
            item["scores"] = [None if v is None or not np.isfinite(v[i]) else round(float(v[i]), 4)
                              for v in scores]
        samples.append(item)
    out: dict[str, Any] = {
        "n_changed": int(found["n_changed"]), "right_in": [int(c) for c in found["right_in"]],
        "samples": samples, "truncated": bool(int(found["n_changed"]) > listed.size),
    }
    pix = thumbnails_at(preps[0].store, split, at, client=preps[0].client)
    if pix is not None and listed.size:
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
            warn(f"Split(s) {', '.join(left)} of run {p.run.label!r} are not in every run; "
                 "left out of the comparison.")
        p.splits = [s for s in p.splits if s in splits]
    info: dict[str, dict[str, Any]] = {}
    positions: list[dict[str, np.ndarray]] = [{} for _ in preps]
    kinds: list[dict[str, Any]] = [{} for _ in preps]
    for s in splits:
        same, reason = True, None
        for p in preps[1:]:
            same, reason = same_samples(preps[0], p, s)
            if not same:
                break
        info[s] = {"same_samples": same, "reason": reason}
        if not with_map:
            continue
        if same:
            prio: dict[str, Any] = {}
            for p in preps:
                for k, m in priority_masks(p, s).items():
                    prio[k] = prio[k] | m if k in prio else m
            prio["changed"] = changed_mask(preps, s)
            pos, kd = draw_map_points(preps[0], s, opts, prio)
            for i in range(len(preps)):
                positions[i][s], kinds[i][s] = pos, kd
        else:
            for i, p in enumerate(preps):
                positions[i][s], kinds[i][s] = draw_map_points(p, s, opts)
    bodies = []
    for i, p in enumerate(preps):
        body = run_body(p, positions[i] if with_map else None, kinds[i], opts,
                        map_thumbnails=i == 0, **body_kw)
        body["classes"] = classes
        bodies.append(body)
    for body in bodies:  # one set of points for every run: the union of their kinds
        for s in splits:
            m = body["splits"][s].get("map")
            if m is not None and info[s]["same_samples"]:
                m["kinds_in"] = "either run" if len(preps) == 2 else "any run"
    for body, p in zip(bodies[1:], preps[1:], strict=True):
        for s in splits:
            m = body["splits"][s].get("map")
            shared = info[s]["same_samples"]
            if m is not None and shared and "thumbnails" in bodies[0]["splits"][s].get("map", {}):
                m["thumbnails"] = {"run": 0}
            elif m is not None and not shared and m["positions"]:  # the run's own points
                pix = thumbnails_at(p.store, s, np.asarray(m["positions"], dtype=np.int64),
                                    client=p.client)
                if pix is not None:
                    m["thumbnails"] = make_sprite(shrink(pix, opts.thumbnail_size))
    for s in splits:
        if info[s]["same_samples"]:
            info[s]["changed"] = _changed_entry(preps, s, opts)
    return {"classes": classes, "runs": bodies,
            "comparison": {"runs": [p.run.label for p in preps], "splits": info}}

