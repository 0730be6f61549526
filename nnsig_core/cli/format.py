"""Plain text of ``nnsig``: aligned tables and the store description of ``nnsig info``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nnsig_core._util import format_bytes


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned plain-text table, numbers right-aligned, a line of dashes under ``header``."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1
               for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        parts = [c.rjust(w) if numeric[i] and j else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=False))]
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
    """The text of ``nnsig info`` from :meth:`~nnsig_core.store.ActivationStore.summary`."""
    out = [f"store: {summary['path']}  (format {summary.get('format_version')})"]
    if not summary["splits"]:
        out.append("no splits")
    for name, s in summary["splits"].items():
        state = "complete" if s["complete"] else (
            f"INCOMPLETE: {s['n_samples']} of {s['n_expected'] or '?'} samples written; "
            f"{s['finish']}")
        out.append("")
        rows_of = (f"token rows of split {s['parent']!r}" if s.get("level") == "tokens"
                   else "samples")
        out.append(f"split {name}: {s['n_samples']} {rows_of}, {format_bytes(s['bytes_stored'])} "
                   f"on disk, {state}")
        params = s.get("model_parameters")
        out.append(f"  model: {s.get('model_class') or '?'} ({s.get('framework') or '?'}"
                   + (f", {params:,} parameters" if params else "") + ")")
        if s.get("model_fingerprint"):
            out.append(f"  weights: {s['model_fingerprint']}"
                       + (f" (other weights: {s['other_weights']})" if s.get("other_weights")
                          else ""))
        if s.get("class_names"):
            names = ", ".join(s["class_names"])
            out.append(f"  classes: {names if len(names) < 100 else names[:97] + '...'}")
        rows = [[d["name"], d["type"], "x".join(map(str, d["shape"][1:])), d["dtype"],
                 format_bytes(d["bytes_stored"]),
                 "" if d.get("parameters") is None else f"{d['parameters']:,}"]
                for d in s["layers"]]
        table = format_table(rows, ["layer", "type", "units", "dtype", "on disk", "params"])
        out.extend("  " + line for line in table.splitlines())
    if summary.get("analyses"):
        out += ["", "analyses: " + ", ".join(summary["analyses"])]
    return "\n".join(out)
