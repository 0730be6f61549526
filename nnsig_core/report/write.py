"""Write the static report viewer and its data to a directory, and index several reports.

A report directory holds the viewer's page, ``viewer.js`` (``viewer/*.js`` joined), ``data.js``
(the report data), ``runs.js`` (its sibling reports, or null) and the marker
``nnsig-report.json``; a directory of several reports gets ``index.html`` and ``reports.js``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnsig_core._util import json_default, now_iso
from nnsig_core._warnings import warn
from nnsig_core.report.summary import ReportError, check_data, finite, summary

log = logging.getLogger("nnsig.report")

MARKER = "nnsig-report.json"
DATA_FILE = "data.js"
RUNS_FILE = "runs.js"
REPORTS_FILE = "reports.js"
INDEX_FILE = "index.html"
INDEX_TEMPLATE = "runs-index.html"  # in viewer/, copied to <parent>/index.html
BUNDLE_FILE = "viewer.js"  # the viewer's modules, joined
INDEX_GENERATOR = '<meta name="generator" content="nnsig-index">'
_NOT_COPIED = {INDEX_TEMPLATE, "README.md"}


def viewer_dir() -> Path:
    """The directory of the viewer's static files: ``nnsig_core/_viewer`` in a wheel, else
    ``<repo>/viewer``; ReportError when neither exists (a broken installation)."""
    import nnsig_core

    candidates = [Path(nnsig_core.__file__).resolve().parent / "_viewer",
                  Path(__file__).resolve().parents[2] / "viewer"]
    for c in candidates:
        if (c / INDEX_FILE).is_file():
            return c
    raise ReportError("the report viewer's static files were not found (looked in "
                      + ", ".join(str(c) for c in candidates)
                      + "); reinstall nnsig, or run from a source checkout that has viewer/")


def is_report(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds an nnsig report (has the marker file)."""
    return (Path(directory) / MARKER).is_file()


def _is_our_index(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return INDEX_GENERATOR in f.read(4096)
    except OSError:
        return False


# Escapes that keep the JSON valid (they only ever occur inside strings) and keep
# any string from closing a <script> element or breaking a JS line.
_JS_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                          "\u2028": "\\u2028", "\u2029": "\\u2029"})


def js_json(obj: Any) -> str:
    """``obj`` as JSON safe to embed in a script (no ``</``, no U+2028/2029); NaN and
    infinities become ``null``, other objects go through :func:`nnsig_core._util.json_default`.
    """
    kw: dict[str, Any] = dict(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text = json.dumps(obj, default=json_default, **kw)
    except ValueError as e:
        if "JSON compliant" not in str(e):
            raise
        text = json.dumps(finite(obj), default=json_default, **kw)
    return text.translate(_JS_SAFE)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


SCRIPT_TAG = re.compile(r'<script src="([^"]+)"></script>\n?')


def viewer_bundle(src: Path) -> tuple[str, list[str], str]:
    """The viewer's ``index.html``, its script modules (in load order) and those joined into
    one script; ReportError when one is missing."""
    html = (src / INDEX_FILE).read_text(encoding="utf-8")
    modules = [m for m in SCRIPT_TAG.findall(html) if m not in (DATA_FILE, RUNS_FILE)]
    missing = [m for m in modules if not (src / m).is_file()]
    if missing:
        raise ReportError(f"the viewer is incomplete: {', '.join(missing)} missing in {src}")
    parts = [f"/* ---- {m} ---- */\n" + (src / m).read_text(encoding="utf-8") for m in modules]
    return html, modules, "\n".join(parts)


def join_scripts(html: str, modules: list[str], script: str) -> str:
    """``html`` with the script tag of its first module replaced by ``script``, the others
    removed."""
    first = True

    def one_script(match: re.Match[str]) -> str:
        nonlocal first
        if match.group(1) not in modules:
            return match.group(0)
        keep, first = first, False
        return script if keep else ""

    return SCRIPT_TAG.sub(one_script, html)


def _copy_viewer(src: Path, dst: Path) -> None:
    """Copy the viewer, its script modules joined into one :data:`BUNDLE_FILE`."""
    html, modules, bundle = viewer_bundle(src)
    (dst / BUNDLE_FILE).write_text(bundle, encoding="utf-8")
    html = join_scripts(html, modules, f'<script src="{BUNDLE_FILE}"></script>\n')
    (dst / INDEX_FILE).write_text(html, encoding="utf-8")
    for item in sorted(src.iterdir()):
        if (item.name.startswith(".") or item.name == "__pycache__" or item.name in _NOT_COPIED
                or item.name in modules or item.name == INDEX_FILE):
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name,
                            ignore=shutil.ignore_patterns(".*", "__pycache__"))
        else:
            shutil.copyfile(item, dst / item.name)


def _fill(directory: Path, data: dict[str, Any]) -> None:
    _copy_viewer(viewer_dir(), directory)
    with open(directory / DATA_FILE, "w", encoding="utf-8", newline="\n") as f:
        f.write("window.NNSIG_REPORT = ")
        f.write(js_json(data))
        f.write(";\n")
    (directory / RUNS_FILE).write_text("window.NNSIG_RUNS = null;\n", encoding="utf-8")
    (directory / MARKER).write_text(json.dumps(summary(data), indent=2, ensure_ascii=False)
                                    + "\n", encoding="utf-8")


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _replace(out: Path, data: dict[str, Any]) -> None:
    """Build the new report beside ``out``, then swap the two (in place when that cannot be
    done: ``out`` holds the working directory, or its parent is read-only)."""
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    tmp = None
    if resolved != cwd and resolved not in cwd.parents:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        except OSError:
            tmp = None
    if tmp is None:
        _clear(out)
        _fill(out, data)
        return
    try:
        os.chmod(tmp, stat.S_IMODE(out.stat().st_mode))
        _fill(tmp, data)
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_report_data(
    data: dict[str, Any], out_dir: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write a report (viewer + ``data.js`` + marker) into ``out_dir``.

    Parameters
    ----------
    data : dict
        The report data, e.g. from :func:`nnsig_core.report.data.build_report_data`.
    out_dir : path
        New, empty, or an existing nnsig report (replaced as a whole).
    title : str, optional
        Overrides ``data["title"]``.

    Returns
    -------
    Path
        The report's ``index.html`` (opens in a browser; no server needed).

    Raises
    ------
    ReportError
        When ``out_dir`` is a file or a non-empty directory that is not a report, or ``data``
        is not report data.
    """
    check_data(data)
    if title is not None:
        data = {**data, "title": str(title)}
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ReportError(f"cannot write a report to {out}: it exists and is not a directory")
    non_empty = out.is_dir() and any(out.iterdir())
    if non_empty and not is_report(out):
        raise ReportError(f"refusing to write a report into {out}: the directory is not empty "
                          f"and is not an nnsig report (it has no {MARKER}); choose a new or "
                          "empty directory")
    viewer_dir()  # fail early and clearly on a broken installation
    out.parent.mkdir(parents=True, exist_ok=True)
    if non_empty:
        _replace(out, data)
    else:
        out.mkdir(parents=True, exist_ok=True)
        _fill(out, data)
    log.info("wrote report %s", out)

    parent = out.resolve().parent
    others = [p for p in _report_dirs(parent) if p.name != out.resolve().name]
    if others or _is_our_index(parent / INDEX_FILE):
        try:
            write_index(parent)
        except (ReportError, OSError) as e:
            warn(f"Report written, but not the index of {parent}: {e}")
    return out / INDEX_FILE


def write_report(analysis: Any, store: Any = None, out_dir: str | os.PathLike[str] | None = None, *,
                 splits: Sequence[str] | None = None, title: str | None = None, scores: Any = None,
                 **options: Any) -> Path:
    """Build the report data of one run, or of several side by side, and write the report.

    Parameters
    ----------
    analysis : SignatureAnalysis or sequence of runs
        One fitted analysis, or runs to compare: ``[a, b]`` (analyses of ``store``),
        ``[(a, store_a[, scores_a]), ...]`` or :class:`~nnsig_core.report.spec.ReportRun`.
    store : ActivationStore or path, optional
        The store of every run that does not give its own.
    out_dir : path
        The report directory (required; see :func:`write_report_data`).
    splits, title, scores, **options
        See :func:`nnsig_core.report.data.build_report_data`.

    Returns
    -------
    Path
        The report's ``index.html``.
    """
    if out_dir is None:
        raise TypeError("write_report needs out_dir, the directory to write the report into")
    from nnsig_core.report.data import build_report_data

    data = build_report_data(analysis, store, splits=splits, title=title, scores=scores, **options)
    return write_report_data(data, out_dir, title=title)


def _report_dirs(parent: Path) -> list[Path]:
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and p.is_dir() and is_report(p)]


def list_reports(parent_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The reports in the subdirectories of ``parent_dir``, newest first: each its marker's
    content plus ``"dir"`` (the subdirectory's name)."""
    out = []
    for p in _report_dirs(Path(parent_dir)):
        try:
            info = json.loads((p / MARKER).read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as e:
            warn(f"Unreadable report marker {p / MARKER}: {e}")
            info = {}
        info["dir"] = p.name
        if not info.get("title"):
            info["title"] = p.name
        out.append(info)
    out.sort(key=lambda r: (str(r.get("created") or r.get("written") or ""), r["dir"]),
             reverse=True)
    return out


def write_index(parent_dir: str | os.PathLike[str]) -> Path:
    """Write ``index.html`` + ``reports.js`` listing the reports under ``parent_dir``, and give
    each report a ``runs.js`` (its run selector); returns the index page's path.

    Raises
    ------
    ReportError
        When ``parent_dir`` is not a directory, is a report, or holds an ``index.html`` that
        nnsig did not write.
    """
    parent = Path(parent_dir).expanduser()
    if not parent.is_dir():
        raise ReportError(f"cannot index {parent}: not a directory")
    if is_report(parent):
        raise ReportError(f"cannot index {parent}: it is a report itself; index its parent")
    index = parent / INDEX_FILE
    if index.exists() and not _is_our_index(index):
        raise ReportError(f"{index} exists and was not written by nnsig; not overwriting it")
    reports = list_reports(parent)
    _atomic_write(parent / REPORTS_FILE, "window.NNSIG_REPORTS = "
                  + js_json({"generated": now_iso(), "reports": reports}) + ";\n")
    _atomic_write(index, (viewer_dir() / INDEX_TEMPLATE).read_text(encoding="utf-8"))
    runs = [{"dir": r["dir"], "title": r.get("title"), "created": r.get("created")}
            for r in reports]
    for r in reports:
        payload = {"index": "../" + INDEX_FILE, "current": r["dir"], "runs": runs}
        try:
            _atomic_write(parent / r["dir"] / RUNS_FILE,
                          "window.NNSIG_RUNS = " + js_json(payload) + ";\n")
        except OSError as e:
            warn(f"Cannot update the run list of {parent / r['dir']}: {e}")
    log.info("wrote report index %s (%d reports)", index, len(reports))
    return index
