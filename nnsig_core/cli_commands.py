"""``nnsig analyze``, ``report``, ``view`` and ``export``: the analysis side of the CLI.

Kept apart from :mod:`nnsig_core.cli` so that ``nnsig info`` starts without
importing scikit-learn.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from nnsig_core.store import StoreError, open_store

__all__ = ["register"]

log = logging.getLogger("nnsig")


def register(sub: Any) -> None:
    """Add the analysis subcommands to an argparse subparsers object."""
    p = sub.add_parser(
        "analyze",
        help="fit per-layer clusters and signatures; save them in the store",
        description=(
            "Fit a SignatureAnalysis on a split (correctly classified samples by default), "
            "save it in the store under --name, and print a per-layer summary for each split."
        ),
    )
    p.add_argument("store", help="path of the store")
    p.add_argument("--clusters", default="10",
                   help="clusters per layer: an int, or LAYER=K,LAYER=K (default 10)")
    p.add_argument("--discretize", default=None, metavar="STRATEGY[:BINS]",
                   help="discretize first: uniform:10, quantile:8, binary (default: none)")
    p.add_argument("--layers", nargs="+", default=None, help="layers to analyse (default: all)")
    p.add_argument("--name", default="default", help="name of the saved analysis (default: default)")
    p.add_argument("--fit-split", default="train", help="split to fit on (default: train)")
    p.add_argument("--classes", default=None,
                   help="fit on these classes only, e.g. 0-4 or 0,2,7 (default: all)")
    p.add_argument("--all-samples", action="store_true",
                   help="fit on every sample, not only the correctly classified ones")
    p.add_argument("--reduce", type=int, default=None, metavar="N",
                   help="IncrementalPCA to N components before clustering (wide layers)")
    p.add_argument("--seed", type=int, default=0, help="random state (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a saved analysis of that name")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "report",
        help="write the static HTML report of a saved analysis",
        description="Write a report directory that opens from disk (file://) with no network.",
    )
    p.add_argument("store", help="path of the store")
    p.add_argument("--analysis", default="default", help="saved analysis to report (default: default)")
    p.add_argument("--out", required=True, help="directory to write the report into")
    p.add_argument("--splits", nargs="+", default=None, help="splits to include (default: all)")
    p.add_argument("--title", default=None, help="title shown in the report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "view",
        help="serve a report directory on 127.0.0.1 and open it in the browser",
        description="Serve only the files under DIR, on 127.0.0.1, until interrupted.",
    )
    p.add_argument("dir", help="report directory (or a directory of reports)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the address")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser(
        "export",
        help="export signature tables as CSV/JSON, or the prototype's two files",
        description=(
            "Write the signature table (input class, signature, output class, count), "
            "the per-sample signatures and the cluster composition of a split."
        ),
    )
    p.add_argument("store", help="path of the store")
    p.add_argument("--analysis", default="default", help="saved analysis (default: default)")
    p.add_argument("--split", default="test", help="split to export (default: test)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--prototype", action="store_true",
                   help="write the prototype's clusters_info.json and clusterized_values.csv")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "evaluate",
        help="score samples from their signatures and measure the scores against baselines",
        description=(
            "Compute the signature scores of a split (saved next to the analysis) and the "
            "baselines (max softmax, energy, Mahalanobis, k-NN, activation patterns), then "
            "print AUROC, AUPR-In, AUPR-Out and FPR at 95%% TPR for error detection "
            "(positives: misclassified samples of known classes), novelty (positives: samples "
            "of classes the analysis was not fitted on) and both. The suspicious samples are "
            "always the positive class."
        ),
    )
    p.add_argument("store", help="path of the store")
    p.add_argument("--analysis", default="default", help="saved analysis (default: default)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--validation", default=None, metavar="SPLIT",
                   help="split of known classes that chooses the combined score (default: none)")
    p.add_argument("--no-baselines", action="store_true", help="signature scores only")
    p.add_argument("--metric", default="auroc", choices=["auroc", "aupr_in", "aupr_out", "fpr95"],
                   help="metric of the printed table (default: auroc); --csv has them all")
    p.add_argument("--csv", default=None, metavar="PATH", help="write every metric as CSV")
    p.set_defaults(func=cmd_evaluate)


# ---------------------------------------------------------------------------- helpers
def parse_classes(spec: str | None) -> list[int] | None:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"1,3,5-6"`` -> [1, 3, 5, 6]; None -> None."""
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
    """``"10"`` -> 10; ``"fc1=8,fc2=12"`` -> {"fc1": 8, "fc2": 12}."""
    spec = spec.strip()
    try:
        if "=" not in spec:
            return int(spec)
        out = {}
        for part in spec.split(","):
            name, k = part.rsplit("=", 1)
            out[name.strip()] = int(k)
        return out
    except ValueError:
        raise ValueError(
            f"Cannot read --clusters {spec!r}: give an int (10) or LAYER=K pairs (fc1=8,fc2=12)."
        ) from None


def _load_analysis(store: Any, name: str) -> Any:
    from nnsig_core.analysis import SignatureAnalysis

    if name not in store.analyses:
        saved = ", ".join(store.analyses) or "none"
        raise StoreError(
            f"No analysis named {name!r} in {store.path} (saved: {saved}); "
            f"run `nnsig analyze {store.path} --name {name}` first."
        )
    return SignatureAnalysis.load(store, name)


def _saved_combined_scores(store: Any, name: str, splits: Any) -> dict[str, Any]:
    """The combined diagnostic score of each split that has fresh saved scores."""
    from nnsig_core.diagnostics.persist import load_scores, saved_score_splits

    out = {}
    for split in splits:
        if split not in saved_score_splits(store, name):
            continue
        try:
            scores = load_scores(store, name, split)
        except StoreError as exc:
            log.warning("%s The report leaves them out.", exc)
            continue
        if "combined" in scores:
            out[split] = scores["combined"]
    return out


# ---------------------------------------------------------------------------- commands
def cmd_analyze(args: argparse.Namespace) -> int:
    import json

    from nnsig_core.analysis import SignatureAnalysis, format_summary, parse_discretizer_spec

    store = open_store(args.store, mode="r+")
    if args.name in store.analyses and not args.overwrite:
        raise StoreError(
            f"An analysis named {args.name!r} already exists in {store.path}; "
            "pass --overwrite to replace it or --name to choose another name."
        )
    analysis = SignatureAnalysis(
        n_clusters=parse_clusters(args.clusters),
        discretizer=parse_discretizer_spec(args.discretize) if args.discretize else None,
        only_correct=not args.all_samples,
        reduce=args.reduce,
        layers=args.layers,
        random_state=args.seed,
        progress=sys.stderr.isatty(),  # progress bars for people, not for logs and pipes
    )
    analysis.fit(store, split=args.fit_split, classes=parse_classes(args.classes))
    analysis.save(store, name=args.name, overwrite=args.overwrite)
    summaries = {split: analysis.summary(store, split) for split in store.splits
                 if store.is_complete(split)}
    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        blocks = [format_summary(s) for s in summaries.values()]
        print("\n\n".join(blocks))
        print(f"\nsaved analysis {args.name!r} in {store.path}; "
              f"write the report with: nnsig report {store.path} --analysis {args.name} --out DIR")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nnsig_core.report import write_report

    store = open_store(args.store)
    analysis = _load_analysis(store, args.analysis)
    splits = tuple(args.splits) if args.splits else tuple(
        s for s in store.splits if store.is_complete(s)
    )
    missing = [s for s in splits if s not in store.splits]
    if missing:
        raise StoreError(
            f"Split(s) {', '.join(missing)} not in the store; available: {', '.join(store.splits)}."
        )
    index = write_report(analysis, store, args.out, splits=splits, title=args.title,
                         scores=_saved_combined_scores(store, args.analysis, splits) or None)
    print(f"report written: {index}")
    print(f"open it with:   nnsig view {Path(args.out)}   (or open {index} in a browser)")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
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
    store = open_store(args.store)
    analysis = _load_analysis(store, args.analysis)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.prototype:
        from nnsig_core.analysis import export_prototype

        export_prototype(analysis, store, args.split, out)
        written = ["clusters_info.json", "clusterized_values.csv"]
    else:
        written = analysis.signatures(store, args.split).export(out)
    for name in written:
        print(out / name)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import csv

    from nnsig_core.cli import format_table
    from nnsig_core.diagnostics import baseline_scores, evaluate, signature_scores

    store = open_store(args.store, mode="r+")
    analysis = _load_analysis(store, args.analysis)
    store.require_complete(args.split)
    scores = dict(signature_scores(analysis, store, args.split,
                                   validation_split=args.validation, save=True))
    if not args.no_baselines:
        scores.update(baseline_scores(analysis, store, args.split))
    rows = evaluate(scores, store.labels(args.split), store.predictions(args.split),
                    analysis.classes_, as_frame=False)
    if not rows:
        raise ValueError(
            f"Nothing to evaluate on split {args.split!r}: it has no misclassified samples "
            "and no samples of classes outside the analysis's fitted classes."
        )
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    names = list(dict.fromkeys(r["score"] for r in rows))
    value = {(r["score"], r["task"]): r["value"] for r in rows if r["metric"] == args.metric}
    counts = {r["task"]: (r["n_positive"], r["n_negative"]) for r in rows}
    table = [[n, *(f"{value[(n, t)]:.3f}" if (n, t) in value else "" for t in tasks)] for n in names]
    print(f"{args.metric} on split {args.split!r} (positives = suspicious samples):")
    print(format_table(table, ["score", *tasks]))
    print("  " + "; ".join(f"{t}: {p} positives, {q} negatives" for t, (p, q) in counts.items()))
    if args.csv:
        print(f"all metrics written to {args.csv}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from nnsig_core.cli import main

    sys.exit(main())
