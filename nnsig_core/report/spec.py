"""What a report is made of: one run (a fitted analysis on a store, with optional scores and a
label), or several side by side; :func:`normalize_runs` reads the forms ``write_report``
accepts."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from nnsig_core.store import ActivationStore, open_store

#: The most runs one report shows side by side.
MAX_RUNS = 4


@dataclass(frozen=True)
class ReportRun:
    """One run of a report.

    Parameters
    ----------
    analysis : SignatureAnalysis
        A fitted analysis.
    store : ActivationStore or path, optional
        Its store (default: the ``store`` given to ``write_report``).
    scores : mapping of split to array-like, optional
        Per-sample diagnostic scores of this run.
    label : str, optional
        Its name in the report (default: the analysis's name, made unique with the store's).
    """

    analysis: Any
    store: ActivationStore | str | os.PathLike[str] | None = None
    scores: Mapping[str, Any] | None = None
    label: str | None = None


def _is_analysis(obj: Any) -> bool:
    return hasattr(obj, "layers_") or hasattr(obj, "clusterers_") or (
        type(obj).__name__ == "SignatureAnalysis")


def _one(item: Any, i: int) -> ReportRun:
    if isinstance(item, ReportRun):
        return item
    if isinstance(item, tuple) and 2 <= len(item) <= 3:
        return ReportRun(*item)
    if _is_analysis(item):
        return ReportRun(item)
    raise TypeError(f"run {i + 1} of the report is a {type(item).__name__}: give a fitted "
                    "analysis, an (analysis, store) or (analysis, store, scores) tuple, or a "
                    "ReportRun")


def normalize_runs(
    analysis: Any, store: ActivationStore | str | os.PathLike[str] | None = None,
    scores: Any = None, labels: Sequence[str] | None = None,
) -> tuple[list[ReportRun], bool]:
    """The runs of a report, each with an opened store and a unique label, and whether
    ``analysis`` was a sequence of runs; TypeError or ValueError, with the fix."""
    several = isinstance(analysis, (list, tuple)) and not (
        isinstance(analysis, tuple) and len(analysis) in (2, 3) and _is_analysis(analysis[0])
        and not _is_analysis(analysis[1]))
    items = list(analysis) if several else [analysis]
    if not items:
        raise ValueError("write_report got an empty list of runs: give at least one analysis")
    if len(items) > MAX_RUNS:
        raise ValueError(f"a report shows at most {MAX_RUNS} runs side by side, not {len(items)}")
    runs = [_one(item, i) for i, item in enumerate(items)]
    if scores is not None:
        if not several:
            runs = [replace(runs[0], scores=scores)]
        elif isinstance(scores, Mapping):
            raise TypeError("with several runs, give scores as a list (one mapping of split to "
                            "scores per run, or None), or inside each (analysis, store, scores) "
                            "tuple")
        else:
            scores = list(scores)
            if len(scores) != len(runs):
                raise ValueError(f"{len(scores)} score mappings for {len(runs)} runs")
            for i, (r, s) in enumerate(zip(runs, scores, strict=True)):
                if s is not None and r.scores is not None:
                    raise ValueError(f"run {i + 1} got scores twice (in its tuple and in scores=)")
                runs[i] = replace(r, scores=r.scores if s is None else s)
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != len(runs):
            raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
        runs = [replace(r, label=lab) for r, lab in zip(runs, labels, strict=True)]
    out = []
    for i, r in enumerate(runs):
        if not _is_analysis(r.analysis):
            raise TypeError(f"run {i + 1}: {type(r.analysis).__name__} is not a fitted analysis")
        s = r.store if r.store is not None else store
        if s is None:
            raise ValueError(f"run {i + 1} has no store: pass store=..., or give (analysis, store) "
                             "pairs")
        out.append(replace(r, store=open_store(s)))
    return _labelled(out), several


def _labelled(runs: list[ReportRun]) -> list[ReportRun]:
    def name(r: ReportRun) -> str:
        return getattr(r.analysis, "name_", None) or "(unsaved)"

    def where(r: ReportRun, parts: int) -> str:
        path = getattr(r.store, "path", None)
        return "/".join(path.parts[-parts:]) if path is not None else "in-memory store"

    base = [r.label or name(r) for r in runs]
    for parts in (1, 2):  # the store's name, or its folder too when two stores share a name
        if len(set(base)) == len(base):
            break
        base = [r.label or f"{where(r, parts)}: {name(r)}" for r in runs]
    seen: dict[str, int] = {}
    out = []
    for r, lab in zip(runs, base, strict=True):
        seen[lab] = seen.get(lab, 0) + 1
        final = lab if base.count(lab) == 1 else f"{lab} ({seen[lab]})"
        out.append(replace(r, label=final))
    labels = [r.label for r in out]
    if len(set(labels)) < len(labels):
        raise ValueError(f"run labels must differ: {labels}")
    return out


def report_splits(runs: Sequence[ReportRun], splits: Sequence[str] | None) -> tuple[str, ...]:
    """The splits a report shows: ``splits`` as given, or by default every complete split that
    every run's store holds, of the first run's row level (samples, or tokens for a token-level
    analysis): its fit split first, then the others in the order they were captured."""
    levels = [r.analysis.row_level(r.store) for r in runs]
    if len(set(levels)) > 1:
        raise ValueError(
            "A report compares runs of one row level, but run(s) "
            f"{', '.join(repr(r.label) for r, lv in zip(runs, levels, strict=True) if lv != levels[0])} "
            f"are fitted on {'tokens' if levels[0] == 'samples' else 'samples'} and "
            f"{runs[0].label!r} on {levels[0]}: write one report for each level.")
    if splits is not None:
        return tuple(splits)
    first = runs[0]
    store = first.store
    assert isinstance(store, ActivationStore)
    fit, level = first.analysis.fit_split_, levels[0]
    stores = [r.store for r in runs]
    shared = [s for s in store.splits
              if all(s in st.splits and st.is_complete(s) for st in stores)  # type: ignore[union-attr]
              and store.level(s) == level]
    started = {s: _started(store, s) for s in shared}
    return tuple(sorted(shared, key=lambda s: (s != fit, started[s], s)))


def _started(store: ActivationStore, split: str) -> tuple[str, int]:
    cap = store.split_attrs(split).get("capture") or {}
    return str(cap.get("started") or ""), int(cap.get("started_ns") or 0)


def opening_split(splits: Sequence[str], fit_split: str,
                  calibration_split: str | None = None) -> str | None:
    """The split a report opens on: the first that is neither the fit split nor the scorer's
    calibration split (whose rates are not held-out measures), else the first that is not
    the fit split."""
    for skipped in ((fit_split, calibration_split), (fit_split,)):
        first = next((s for s in splits if s not in skipped), None)
        if first is not None:
            return first
    return splits[0] if splits else None
