"""The subcommands of ``nnsig``: ``info``, ``analyze``, ``report``, ``view``, ``export``, ``evaluate``.

Each ``cmd_*`` function prints its result and returns the exit status; errors are raised
for :func:`nnsig_core.cli.main.main` to print. Heavy imports happen inside the commands
that need them, so that ``nnsig info`` starts without scikit-learn.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnsig_core.cli.format import format_info, format_table
from nnsig_core.store import ActivationStore, StoreError, open_store

log = logging.getLogger("nnsig")


def parse_classes(spec: str | None) -> list[int] | None:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"1,3,5-6"`` -> [1, 3, 5, 6] (sorted); None -> None."""
    if spec is None:
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"Cannot read class list {spec!r}: use e.g. 0-4 or 0,2,7.") from None
    if not out:
        raise ValueError(f"The class list {spec!r} is empty: give e.g. 0-4 or 0,2,7.")
    return sorted(set(out))


def parse_clusters(spec: str) -> int | dict[str, int]:
    """``"10"`` -> 10; ``"fc1=8,fc2=12"`` -> {"fc1": 8, "fc2": 12}; ValueError when unreadable."""
    spec = spec.strip()
    try:
        counts: int | dict[str, int] = (
            {name.strip(): int(k) for name, k in (part.rsplit("=", 1) for part in spec.split(","))}
            if "=" in spec else int(spec))
    except ValueError:
        raise ValueError(f"Cannot read --clusters {spec!r}: give an int (10) or LAYER=K pairs "
                         "(fc1=8,fc2=12).") from None
    if min(counts.values() if isinstance(counts, dict) else [counts]) < 1:
        raise ValueError(f"--clusters {spec!r}: every layer needs at least 1 cluster.")
    return counts


def parse_discretizer(spec: str) -> Any:
    """``--discretize``: a :class:`~nnsig_core.analysis.Discretizer` from its spec."""
    from nnsig_core.analysis import parse_discretizer_spec

    return parse_discretizer_spec(spec)


def _load_analysis(store: ActivationStore, name: str) -> Any:
    from nnsig_core.analysis import SignatureAnalysis

    if name not in store.analyses:
        saved = ", ".join(store.analyses) or "none"
        if not store.analyses and _has_checkpoints(store):
            raise StoreError(f"No analysis in {store.location}: its splits are the checkpoints "
                             "of a training probe. Write their timeline report with `nnsig "
                             f"report {store.location} --timeline --out DIR`.")
        close = difflib.get_close_matches(name, store.analyses, n=1)
        if close:
            raise StoreError(f"No analysis named {name!r} in {store.location}. Did you mean "
                             f"{close[0]!r}? (saved: {saved})")
        raise StoreError(f"No analysis named {name!r} in {store.location} (saved: {saved}); "
                         f"run `nnsig analyze {store.location} --name {name}` first.")
    return SignatureAnalysis.load(store, name)


def _has_checkpoints(store: ActivationStore) -> bool:
    from nnsig_core.capture.probe import list_checkpoints

    return bool(list_checkpoints(store))


def _timeline_report(args: argparse.Namespace) -> int:
    """``nnsig report STORE --timeline``: fit a timeline over the probe's checkpoints and write
    its report (``write_timeline_report``)."""
    from nnsig_core.analysis import Timeline
    from nnsig_core.report import write_timeline_report

    store = open_store(args.store[0])  # one store, nothing else (cli.main checked)
    if not _has_checkpoints(store):
        raise StoreError(f"{store.location} holds no checkpoint of a training probe "
                         "(TorchProbe, KerasProbe, the training callbacks): nothing to put on "
                         "a timeline.")
    timeline = Timeline(n_clusters=args.clusters or 10).fit(store, prefix=args.prefix)
    index = write_timeline_report(timeline, store, args.out, title=args.title,
                                  projection=args.projection, map_points=args.map_points)
    print(f"timeline of {len(timeline)} checkpoints written: {index}")
    print(f"open it with:   nnsig view {Path(args.out)}   (or open {index} in a browser)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``nnsig info``: describe a store (text, or JSON with ``--json``)."""
    store = open_store(args.store)
    summary = store.summary()
    print(json.dumps(summary, indent=2) if args.json else format_info(summary))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``nnsig verify``: check every chunk; exit status 1 when anything is missing or damaged,
    or a split's capture did not finish."""
    store = open_store(args.store)
    report = store.verify(progress=sys.stderr.isatty())
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok and not report.incomplete else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    """``nnsig migrate``: upgrade an older store in place (exit status 1 when it cannot be)."""
    from nnsig_core.store import MigrationError, migrate_store

    try:
        report = migrate_store(args.store, dry_run=args.dry_run, drop_splits=args.drop_split)
    except MigrationError as exc:
        report = exc.report
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 1 if report.problems else 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """``nnsig analyze``: fit, save and summarise a :class:`~nnsig_core.analysis.SignatureAnalysis`."""
    from nnsig_core.analysis import SignatureAnalysis, format_summary

    store = open_store(args.store, mode="r+")
    # Progress bars for people, not for logs and pipes.
    analysis = SignatureAnalysis(n_clusters=args.clusters, discretizer=args.discretize,
                                 only_correct=not args.all_samples, reduce=args.reduce,
                                 layers=args.layers, random_state=args.seed,
                                 memory_limit=args.memory_limit,
                                 progress=sys.stderr.isatty())
    analysis.resolve_layers(store, args.fit_split)  # a wrong --layers or split named first
    if args.name in store.analyses and not args.overwrite:
        raise StoreError(f"An analysis named {args.name!r} already exists in {store.location}; "
                         "pass --overwrite to replace it or --name to choose another name.")
    analysis.fit(store, split=args.fit_split, classes=args.classes)
    analysis.save(store, name=args.name, overwrite=args.overwrite)
    level = analysis.row_level(store)  # samples or tokens: the splits it applies to
    summaries = {split: analysis.summary(store, split) for split in store.splits
                 if store.is_complete(split) and store.level(split) == level}
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        print("\n\n".join(format_summary(s) for s in summaries.values()))
        print(f"\nsaved analysis {args.name!r} in {store.location}; "
              f"write the report with: nnsig{_storage_flags(args)} report {store.location} "
              f"--analysis {args.name} "
              "--out DIR")
    return 0


def _storage_flags(args: argparse.Namespace) -> str:
    """The ``--storage-option``s given, as a command printed for the user repeats them."""
    import shlex

    flags = ""
    for key, value in getattr(args, "storage_option", None) or []:
        text = value if isinstance(value, str) else json.dumps(value)  # as it was given
        flags += " --storage-option " + shlex.quote(f"{key}={text}")
    return flags


def _report_runs(stores: Sequence[str], names: Sequence[str]) -> list[tuple[str, str]]:
    """(store, analysis) per run: one store with several analyses, several stores with one
    analysis, or one analysis per store."""
    if len(stores) == 1:
        return [(stores[0], n) for n in names]
    if len(names) == 1:
        return [(s, names[0]) for s in stores]
    if len(names) == len(stores):
        return list(zip(stores, names, strict=True))
    raise ValueError(f"{len(stores)} stores and {len(names)} --analysis: give one store with "
                     "several --analysis, several stores with one --analysis, or one --analysis "
                     "per store.")


def cmd_report(args: argparse.Namespace) -> int:
    """``nnsig report``: write the static report of a saved analysis (with its saved scores),
    or of several runs side by side."""
    from nnsig_core.report import write_report

    if args.timeline:
        return _timeline_report(args)
    pairs = _report_runs(args.store, args.analysis or ["default"])
    stores = {path: open_store(path) for path, _ in pairs}
    splits = tuple(args.splits) if args.splits else None
    for st in stores.values():
        missing = [s for s in splits or () if s not in st.splits]
        if missing:
            raise StoreError(f"Split(s) {', '.join(missing)} not in {st.location}; "
                             f"available: {', '.join(st.splits)}.")
    runs = [(_load_analysis(stores[path], name), stores[path]) for path, name in pairs]
    options = {"projection": args.projection, "map_points": args.map_points}
    # The same function and defaults as the API: the saved scores of each analysis's scorer,
    # the fit split first, then the splits in capture order.
    if len(runs) == 1:  # (--label with one run is a usage error: cli.main)
        index = write_report(*runs[0], args.out, splits=splits, title=args.title, **options)
    else:
        index = write_report(runs, None, args.out, splits=splits, title=args.title,
                             labels=args.label, **options)
        print(f"comparing {len(runs)} runs: "
              + ", ".join(f"{name} of {path}" for path, name in pairs))
    print(f"report written: {index}")
    parent = Path(args.out).resolve().parent
    if (parent / "reports.js").exists():  # write_report indexed the reports beside it
        print(f"run selector:   {parent / 'index.html'} (every report in {parent}; their run "
              "menus list this one)")
    print(f"open it with:   nnsig view {Path(args.out)}   (or open {index} in a browser)")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    """``nnsig view``: serve a report directory on 127.0.0.1 until interrupted."""
    from nnsig_core.report import serve_report

    server, url = serve_report(args.dir, port=args.port, open_browser=not args.no_browser)
    print(f"serving {server.directory} at {url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()  # waits for the background thread serve_report started
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``nnsig export``: every view of the signatures of the chosen splits, with the saved
    scores of the analysis's scorer; or the prototype's two files."""
    from nnsig_core.diagnostics.persist import saved_score_splits, saved_scorer

    store = open_store(args.store)
    analysis = _load_analysis(store, args.analysis)
    out = Path(args.out)
    level = analysis.row_level(store)
    splits = args.split or ([s for s in store.splits
                             if store.is_complete(s) and store.level(s) == level]
                            if not args.prototype else
                            ["test.tokens" if level == "tokens" else "test"])
    for s in splits:
        store.require_complete(s)
    out.mkdir(parents=True, exist_ok=True)
    if args.prototype:
        from nnsig_core.analysis import export_prototype

        if len(splits) != 1:
            raise ValueError("--prototype writes the files of one split: give one --split.")
        export_prototype(analysis, store, splits[0], out)
        written = ["clusters_info.json", "clusterized_values.csv"]
    else:
        scored = saved_score_splits(store, args.analysis)
        record = saved_scorer(store, args.analysis)
        written = []
        for s in splits:
            scores = _saved_scores(store, args.analysis, s, record) if s in scored else None
            tokens = store.token_rows(s) if level == "tokens" else None
            written += analysis.signatures(store, s).export(out, format=args.format,
                                                            scores=scores, token_rows=tokens)
    for name in written:
        print(out / name)
    return 0


def _saved_scores(store: ActivationStore, name: str, split: str,
                  record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The saved scores of ``split`` when the saved scorer gave them (the report's rule)."""
    from nnsig_core._warnings import warn
    from nnsig_core.diagnostics.persist import load_scores, saved_scores_fingerprint

    if record is not None and saved_scores_fingerprint(store, name, split) != record["fingerprint"]:
        return None
    try:
        return dict(load_scores(store, name, split))
    except StoreError as exc:
        warn(f"{exc} The export leaves them out.")
        return None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``nnsig evaluate``: the default score and the baselines, AUROC/AUPR/FPR95 per task."""
    import csv

    from nnsig_core.diagnostics import BASELINES, baseline_scores, evaluate, signature_scores
    from nnsig_core.diagnostics.metrics import task_masks

    store = open_store(args.store, mode="r+")
    analysis = _load_analysis(store, args.analysis)
    store.require_complete(args.split)
    if (store.labels(args.split) < 0).all():
        # Scored and saved for the report and the export; nothing to measure them against.
        got = signature_scores(analysis, store, args.split, validation_split=args.validation,
                               save=True)
        if args.json:  # the validation split of the scorer that gave them (maybe saved before)
            print(json.dumps({"split": args.split, "analysis": args.analysis,
                              "validation_split": got.validation_split, "labelled": False,
                              "tasks": {}}, indent=2))
        else:
            print(f"Split {args.split!r} has no labels: its scores are saved (nnsig report "
                  "shows them, nnsig export writes them), but without labels there are no "
                  "errors or novel classes to measure them against.")
        return 0
    known = analysis.known_classes_
    masks = task_masks(store.labels(args.split), store.predictions(args.split), known)
    if not masks:  # before any scoring: there is nothing to measure the scores against
        raise ValueError(f"Nothing to evaluate on split {args.split!r}: it has no misclassified "
                         "samples and no samples of classes outside the analysis's fitted "
                         "classes.")
    got = signature_scores(analysis, store, args.split, validation_split=args.validation,
                           save=True)
    scores = dict(got)
    scores.pop("p_value", None)  # ranks the samples exactly as "combined" does
    shown = ["combined"] + ([k for k in scores if k != "combined"] if args.components else [])
    if not args.no_baselines:
        base = baseline_scores(analysis, store, args.split)
        scores.update(base)
        shown += [k for k in BASELINES if k in base]
    rows = evaluate(scores, store.labels(args.split), store.predictions(args.split), known,
                    as_frame=False)
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    value = {(r["score"], r["task"], r["metric"]): r["value"] for r in rows}
    counts = {r["task"]: (r["n_positive"], r["n_negative"]) for r in rows}
    metrics = (("AUROC", "auroc"), ("AUPR", "aupr_out"), ("FPR95", "fpr95"))
    if args.json:
        print(json.dumps({
            "split": args.split, "analysis": args.analysis,
            "validation_split": got.validation_split,
            "default_score": "combined",
            "tasks": {t: {"n_positive": counts[t][0], "n_negative": counts[t][1],
                          "scores": {n: {m: value[(n, t, m)] for m in
                                         ("auroc", "aupr_out", "aupr_in", "fpr95")}
                                     for n in shown}}
                      for t in tasks},
        }, indent=2))
    else:
        print(f"Split {args.split!r}, analysis {args.analysis!r}; positives = suspicious samples "
              "(AUPR: theirs; FPR95: share of the others flagged when 95% of them are).")
        for t in tasks:
            p, q = counts[t]
            print(f"\n{t}: {p} positives, {q} negatives")
            table = [[f"{n} (default)" if n == "combined" else n,
                      *(f"{value[(n, t, m)]:.3f}" for _, m in metrics)] for n in shown]
            print(format_table(table, ["score", *(h for h, _ in metrics)]))
    if args.csv:
        print(f"all metrics of every score written to {args.csv}", file=sys.stderr if args.json
              else sys.stdout)
    return 0

