"""The ``nnsig`` command line: ``info``, ``analyze``, ``report``, ``view``, ``export``.

Exit status: 0 on success, 1 when the command failed on its input (missing
store, unknown analysis...), 2 for usage errors (argparse's convention).
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from nnsig_core.store import open_store

__all__ = ["main", "build_parser"]

log = logging.getLogger("nnsig")


# ---------------------------------------------------------------------------- formatting
def _size(n: int | None) -> str:
    if n is None:
        return "?"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned plain-text table, numbers right-aligned."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [
        all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(header))
    ]
    lines = []
    for j, r in enumerate(cells):
        parts = [c.rjust(w) if numeric[i] and j else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _is_number(s: str) -> bool:
    try:
        float(s.replace("%", "").replace(",", ""))
        return True
    except ValueError:
        return False


def format_info(summary: dict[str, Any]) -> str:
    out = [f"store: {summary['path']}  (format {summary.get('format_version')})"]
    if not summary["splits"]:
        out.append("no splits")
    for name, s in summary["splits"].items():
        state = "complete" if s["complete"] else (
            f"INCOMPLETE: {s['n_samples']} of {s['n_expected'] or '?'} samples written; "
            f"resume with capture(..., resume=True)"
        )
        out.append("")
        out.append(f"split {name}: {s['n_samples']} samples, {_size(s['bytes_stored'])} on disk, {state}")
        params = s.get("model_parameters")
        out.append(
            f"  model: {s.get('model_class') or '?'} ({s.get('framework') or '?'}"
            + (f", {params:,} parameters" if params else "")
            + ")"
        )
        if s.get("class_names"):
            names = ", ".join(s["class_names"])
            out.append(f"  classes: {names if len(names) < 100 else names[:97] + '...'}")
        rows = [
            [d["name"], d["type"], "x".join(map(str, d["shape"][1:])), d["dtype"],
             _size(d["bytes_stored"]), "" if d.get("parameters") is None else f"{d['parameters']:,}"]
            for d in s["layers"]
        ]
        table = format_table(rows, ["layer", "type", "units", "dtype", "on disk", "params"])
        out.extend("  " + line for line in table.splitlines())
    if summary.get("analyses"):
        out.append("")
        out.append("analyses: " + ", ".join(summary["analyses"]))
    return "\n".join(out)


# ---------------------------------------------------------------------------- commands
def cmd_info(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    summary = store.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_info(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``nnsig`` command."""
    parser = argparse.ArgumentParser(
        prog="nnsig",
        description="Inspect activation stores, analyse layer signatures, write and view reports.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="describe a store: splits, layers, shapes, sizes, completeness",
                       description="Describe an activation store.")
    p.add_argument("store", help="path of the store (a .zarr directory)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)

    _add_analysis_commands(sub)
    return parser


def _add_analysis_commands(sub: Any) -> None:
    """Commands that need the analysis engine and the report writer."""
    from nnsig_core import cli_commands

    cli_commands.register(sub)


def _version() -> str:
    from nnsig_core import __version__

    return __version__


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"nnsig: {record.getMessage()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nnsig`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter() if not args.debug else logging.Formatter(
        "%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("nnsig")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.debug else level)
    try:
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
