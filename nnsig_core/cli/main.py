"""The ``nnsig`` argument parser and entry point.

Exit status: 0 on success, 1 when the command failed on its input, 2 for usage errors,
130 when interrupted. Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from nnsig_core._util import package_version, parse_bytes
from nnsig_core._warnings import NnsigWarning
from nnsig_core.cli import commands
from nnsig_core.execute.client import connect, parse_scheduler

#: Every subcommand: name -> (function, one-line help, description of its ``--help``).
_COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {
    "info": (commands.cmd_info, "describe a store: splits, layers, shapes, sizes, completeness",
             "Describe an activation store."),
    "verify": (
        commands.cmd_verify,
        "read every chunk: report missing or damaged data and the rows to capture again",
        "Read every chunk of every array of the store, check its checksum, that no chunk of "
        "the rows written is missing and that every metadata file is valid. Exit status 1 "
        "when anything is missing or damaged, or a split's capture did not finish.",
    ),
    "migrate": (
        commands.cmd_migrate,
        "upgrade a store written by an older nnsig to this version's format, in place",
        "Upgrade a store of an older format version (nnsig 0.1 and 0.2 wrote format 1) to "
        "this version's, in place and atomically: the root's metadata, written last in one "
        "write, switches the version, so a migration stopped at any moment leaves the old "
        "format, and running it again finishes it. What cannot be upgraded is listed and "
        "nothing is changed (exit status 1).",
    ),
    "analyze": (
        commands.cmd_analyze,
        "fit per-layer clusters and signatures; save them in the store",
        "Fit a SignatureAnalysis on a split (correctly classified samples by default), "
        "save it in the store under --name, and print a per-layer summary for each split.",
    ),
    "report": (
        commands.cmd_report,
        "write the static HTML report of a saved analysis (or several, side by side)",
        "Write a report directory that opens from disk (file://) with no network. Several "
        "--analysis of one store, or several stores, give a comparison of the runs side by side.",
    ),
    "view": (commands.cmd_view, "serve a report directory on 127.0.0.1 and open it in the browser",
             "Serve only the files under DIR, on 127.0.0.1, until interrupted."),
    "export": (
        commands.cmd_export,
        "export signature tables as CSV, JSON, Parquet or Hugging Face datasets, or the "
        "prototype's two files",
        "Write, for every split (or those given), the per-sample signatures with the "
        "saved scores, the signature table (input class, signature, output class, count), "
        "the tables by output class, by signature and of transitions, and the cluster "
        "composition.",
    ),
    "evaluate": (
        commands.cmd_evaluate,
        "score samples from their signatures and measure the scores against baselines",
        "Compute the signature scores of a split (saved next to the analysis) and the "
        "baselines (max softmax, energy, Mahalanobis, k-NN, activation patterns), then "
        "print AUROC, AUPR and FPR at 95% TPR of the default (combined) score and each "
        "baseline for error detection (positives: misclassified samples of known classes), "
        "novelty (positives: samples of classes the analysis was not fitted on) and both "
        "(when there are novel classes). The suspicious samples are always the positive "
        "class. With --validation, the scorer is tuned on that split, a held-out part of it "
        "calibrates the conformal threshold the report shows, and it is scored and saved too; "
        "the scorer is saved with the analysis and scores every later split alike. A split "
        "without labels is scored and saved only (nothing to measure the scores against).",
    ),
}


def _memory_size(text: str) -> str:
    parse_bytes(text)  # a ValueError naming the accepted forms
    return text


def _usage(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse ``type`` from a parser raising ValueError (a usage error, exit status 2)."""
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.replace("parse_", "")  # argparse names it in messages
    return convert


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``low`` (and at most ``high``)."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            within = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {within}, got {value}")
        return value

    convert.__name__ = f"integer >= {low}" if high is None else f"integer {low}-{high}"
    return convert


def _check_global_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``--storage-option`` after the command is a usage error saying where it goes (argparse
    would say only that it is not recognised)."""
    names = set(_COMMANDS) | {"analyse"}
    at = next((i for i, a in enumerate(argv) if a in names), None)
    if at is None:
        return
    if any(a.split("=", 1)[0] == "--storage-option" for a in argv[at + 1:]):
        parser.error(f"--storage-option goes before the command: nnsig --storage-option "
                     f"KEY=VALUE {argv[at]} ...")


def _check_report_runs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``nnsig report``: stores, --analysis and --label that do not pair up are usage errors,
    as are --timeline with what it does not take and --clusters without it."""
    if args.timeline:
        bad = [flag for flag, value in (("--analysis", args.analysis), ("--label", args.label),
                                        ("--splits", args.splits),
                                        ("--scheduler", args.scheduler)) if value]
        if len(args.store) != 1 or bad:
            parser.error("--timeline reports the checkpoints of one store: give one store"
                         + (f" and leave out {', '.join(bad)}" if bad else "") + ".")
        return
    for flag, value in (("--clusters", args.clusters), ("--prefix", args.prefix)):
        if value is not None:
            parser.error(f"{flag} goes with --timeline" + (
                " (a saved analysis has its clusters)." if flag == "--clusters" else "."))
    try:
        n = len(commands._report_runs(args.store, args.analysis or ["default"]))
    except ValueError as exc:
        parser.error(str(exc))
    if args.label is not None and n == 1:
        parser.error("--label names the runs of a comparison; give several --analysis or "
                     "stores, or leave it out.")
    if args.label is not None and len(args.label) != n:
        parser.error(f"{len(args.label)} --label for {n} runs: give one --label per run, in "
                     "order.")


def _scheduler(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", default=None, metavar="ADDRESS|local:N",
                   type=_usage(parse_scheduler),
                   help="run on a Dask cluster: a scheduler address (tcp://host:8786) or local:N "
                        "for N worker processes here (needs nnsig[dask]; default: this process)")


def _storage_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE``, the value read as JSON when it is (``anon=true``), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"give KEY=VALUE, e.g. endpoint_url=http://127.0.0.1:9000; got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _apply_storage_options(options: Sequence[tuple[str, object]], store: object) -> None:
    """Make ``--storage-option``s the defaults of the fsspec filesystem of the store URL(s)."""
    if not options:
        return
    stores = store if isinstance(store, list) else [store]
    urls = [s for s in stores if isinstance(s, str) and "://" in s]
    if not urls:
        raise ValueError(f"--storage-option applies to store URLs (s3://...), not to {store!r}.")
    import fsspec.config

    for url in urls:
        fsspec.config.conf.setdefault(url.split("://", 1)[0], {}).update(dict(options))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nnsig`` command; parsed arguments carry ``func``, the
    :mod:`~nnsig_core.cli.commands` function of the subcommand."""
    parser = argparse.ArgumentParser(prog="nnsig", description="Inspect activation stores, "
                                     "analyse layer signatures, write and view reports.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        type=_usage(_storage_option),
                        help="an option of the store URL's filesystem (fsspec), e.g. "
                             "endpoint_url=http://127.0.0.1:9000; repeatable. Credentials also "
                             "come from the environment (AWS_*, FSSPEC_<PROTOCOL>_<OPTION>)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    cmd: dict[str, argparse.ArgumentParser] = {}
    for name, (func, help_, description) in _COMMANDS.items():
        # British spelling too, as the prose spells it.
        aliases = ["analyse"] if name == "analyze" else []
        cmd[name] = sub.add_parser(name, help=help_, description=description, aliases=aliases)
        cmd[name].set_defaults(func=func, command_parser=cmd[name])

    for p in (cmd["info"], cmd["verify"]):
        p.add_argument("store", help="path of the store (a .zarr directory)")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
    for p in (cmd["export"], cmd["evaluate"]):
        p.add_argument("store", help="path of the store")
        p.add_argument("--analysis", default="default", help="saved analysis (default: default)")

    p = cmd["migrate"]
    p.add_argument("store", help="path or URL of the store")
    p.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    p.add_argument("--drop-split", action="append", default=[], metavar="SPLIT",
                   help="delete this split first (one the report says cannot be upgraded); "
                        "repeatable")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = cmd["analyze"]
    p.add_argument("store", help="path of the store")
    p.add_argument("--clusters", default=10, type=_usage(commands.parse_clusters),
                   help="clusters per layer: an int, or LAYER=K,LAYER=K (default 10)")
    p.add_argument("--discretize", default=None, metavar="STRATEGY[:BINS]",
                   type=_usage(commands.parse_discretizer),
                   help="discretize first: uniform:10, quantile:8, binary (default: none)")
    p.add_argument("--layers", nargs="+", default=None, help="layers to analyse (default: all)")
    p.add_argument("--name", default="default", help="name of the saved analysis (default: default)")
    p.add_argument("--fit-split", default="train", help="split to fit on (default: train)")
    p.add_argument("--classes", default=None, type=_usage(commands.parse_classes),
                   help="fit on these classes only, e.g. 0-4 or 0,2,7 (default: all)")
    p.add_argument("--all-samples", action="store_true",
                   help="fit on every sample, not only the correctly classified ones")
    p.add_argument("--reduce", type=_int_at_least(1), default=None, metavar="N",
                   help="PCA to N components before clustering (wide layers)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="random state (default: 0)")
    p.add_argument("--memory-limit", default="2GiB", metavar="SIZE", type=_usage(_memory_size),
                   help="memory for a layer's fit rows, e.g. 512MiB: a layer whose rows do not "
                        "fit is clustered out of core (default: 2GiB)")
    p.add_argument("--overwrite", action="store_true", help="replace a saved analysis of that name")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    _scheduler(p)

    p = cmd["report"]
    p.add_argument("store", nargs="+",
                   help="path of the store; several stores to compare them (one run each)")
    p.add_argument("--analysis", action="append", default=None, metavar="NAME",
                   help="saved analysis to report (default: default); repeat it to compare "
                        "several analyses side by side (of one store, or one per store)")
    p.add_argument("--label", action="append", default=None,
                   help="name of each run in a comparison, in order (default: the analysis names)")
    p.add_argument("--projection", choices=("pca", "umap"), default="pca",
                   help="the layer map's projection (umap needs umap-learn; default: pca)")
    p.add_argument("--map-points", type=_int_at_least(0), default=2000, metavar="N",
                   help="most samples per split on the layer map (0: no map; default 2000)")
    p.add_argument("--out", required=True,
                   help="directory to write the report into (when its parent folder holds other "
                        "reports, the parent gets index.html, a selector of them all)")
    p.add_argument("--splits", nargs="+", default=None, help="splits to include (default: all)")
    p.add_argument("--title", default=None, help="title shown in the report")
    p.add_argument("--timeline", action="store_true",
                   help="the training timeline of a probe's checkpoints (a store written by "
                        "TorchProbe, KerasProbe or a training callback) instead of an analysis")
    p.add_argument("--clusters", type=_int_at_least(2), default=None, metavar="K",
                   help="clusters per layer of each checkpoint's analysis, with --timeline "
                        "(default 10)")
    p.add_argument("--prefix", default=None,
                   help="with --timeline: the checkpoints of the probe with this split prefix "
                        "(a store holding several probes)")
    _scheduler(p)

    p = cmd["view"]
    p.add_argument("dir", help="report directory (or a directory of reports)")
    p.add_argument("--port", type=_int_at_least(0, 65535), default=0, help="port (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the address")

    p = cmd["export"]
    p.add_argument("--split", action="append", default=None, metavar="SPLIT",
                   help="split to export; repeat it for several (default: every complete "
                        "split of the analysis's row level; test, or test.tokens for a token "
                        "analysis, with --prototype)")
    p.add_argument("--format", choices=("csv", "json", "parquet", "datasets"), default="csv",
                   help="file format (parquet needs pyarrow; datasets writes Hugging Face "
                        "datasets with save_to_disk, and needs the datasets package; "
                        "default: csv)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--prototype", action="store_true",
                   help="write the prototype's clusters_info.json and clusterized_values.csv")

    p = cmd["evaluate"]
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--validation", default=None, metavar="SPLIT",
                   help="held-out split of known classes: tunes the combined score and "
                        "calibrates its conformal threshold (default: the saved scorer's)")
    p.add_argument("--no-baselines", action="store_true", help="signature scores only")
    p.add_argument("--components", action="store_true",
                   help="also the signature components (default: the combined score and the "
                        "baselines)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--csv", default=None, metavar="PATH", help="write every metric as CSV")
    _scheduler(p)
    return parser


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"nnsig: {record.getMessage()}"


@contextlib.contextmanager
def _warnings_logged() -> Iterator[None]:
    """Each :class:`NnsigWarning` as one line of the ``nnsig`` logger; others as Python does."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
            if issubclass(category, NnsigWarning):
                logging.getLogger("nnsig.cli").warning("%s", message)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nnsig`` command on ``argv`` (default: ``sys.argv[1:]``); the exit status.

    Usage errors exit with 2 through argparse's ``SystemExit``.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    parser = build_parser()
    _check_global_options(parser, list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is commands.cmd_report:
        _check_report_runs(args.command_parser, args)
    if getattr(args, "func", None) is commands.cmd_export and args.prototype \
            and args.format != "csv":
        args.command_parser.error("--prototype writes the prototype's own files "
                                  "(clusters_info.json, clusterized_values.csv): leave out "
                                  f"--format {args.format}.")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter() if not args.debug else logging.Formatter(
        "%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("nnsig")
    root.addHandler(handler)
    level_before = root.level
    root.setLevel(logging.DEBUG if args.debug else level)
    try:
        _apply_storage_options(args.storage_option, getattr(args, "store", None))
        spec = getattr(args, "scheduler", None)  # a Dask client, active for the whole command
        # Log lines and nnsig's warnings go above a running progress bar, not through it.
        with logging_redirect_tqdm(loggers=[root]), _warnings_logged(), \
                connect(spec) if spec is not None else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("nnsig: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one readable line unless --debug
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"nnsig: error: {msg}", file=sys.stderr)
        return 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level_before)  # main() called in a process that goes on (a notebook)
