"""Write the static report viewer to a directory, index several reports, serve them locally.

A report directory holds the static page copied from ``viewer/`` plus:

``data.js``
    ``window.NNSIG_REPORT = {...};`` -- the report data (``docs/report-data.md``),
    loaded with ``<script src="data.js">`` so the page works from ``file://``.
``runs.js``
    ``window.NNSIG_RUNS = null;`` or, when the report sits beside other reports,
    the list of sibling reports for the page's run selector.
``nnsig-report.json``
    The marker: title, dates, splits and accuracies. A directory holding it is
    an nnsig report that :func:`write_report_data` may replace.

A directory holding several reports gets an ``index.html`` plus ``reports.js``
(:func:`write_index`) listing them; it is written automatically when a report
is written beside another one.

Nothing here needs a server: :func:`serve_report` exists for ``nnsig view``,
and serves only the files under one directory, on 127.0.0.1 by default.
"""

from __future__ import annotations

import datetime as _dt
import errno
import http.server
import json
import logging
import math
import os
import shutil
import stat
import tempfile
import threading
import urllib.parse
import uuid
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MARKER",
    "PortInUseError",
    "ReportError",
    "ReportServer",
    "is_report",
    "list_reports",
    "serve_report",
    "viewer_dir",
    "write_index",
    "write_report",
    "write_report_data",
]

log = logging.getLogger("nnsig.report")

MARKER = "nnsig-report.json"
DATA_FILE = "data.js"
RUNS_FILE = "runs.js"
REPORTS_FILE = "reports.js"
INDEX_FILE = "index.html"
INDEX_TEMPLATE = "runs-index.html"  # in viewer/, copied to <parent>/index.html
INDEX_GENERATOR = '<meta name="generator" content="nnsig-index">'
_NOT_COPIED = {INDEX_TEMPLATE, "README.md"}
SUPPORTED_FORMAT = 1


class ReportError(ValueError):
    """A report cannot be written, indexed or served (the message says why)."""


class PortInUseError(OSError):
    """The port asked for is already in use (``errno`` is ``EADDRINUSE``)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"port {port} on {host} is already in use: stop the program using it, "
            "choose another port, or use port 0 for a free one",
        )
        self.host = host
        self.port = port


# --------------------------------------------------------------------------- paths


def viewer_dir() -> Path:
    """The directory holding the viewer's static files.

    ``nnsig_core/_viewer`` in an installed wheel, else ``<repo>/viewer`` in a
    source checkout or an editable install.

    Raises
    ------
    ReportError
        When neither exists (a broken installation).
    """
    import nnsig_core

    candidates = [
        Path(nnsig_core.__file__).resolve().parent / "_viewer",
        Path(__file__).resolve().parents[1] / "viewer",
    ]
    for c in candidates:
        if (c / INDEX_FILE).is_file():
            return c
    raise ReportError(
        "the report viewer's static files were not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); reinstall nnsig, or run from a source checkout that has viewer/"
    )


def is_report(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds an nnsig report (has the marker file)."""
    return (Path(directory) / MARKER).is_file()


def _is_our_index(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return INDEX_GENERATOR in f.read(4096)
    except OSError:
        return False


# --------------------------------------------------------------------------- JSON


def _json_default(o: Any) -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, (_dt.datetime, _dt.date)):
        return o.isoformat()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"report data holds a {type(o).__name__}, which is not JSON-serialisable")


def _finite(o: Any) -> Any:
    """A copy of ``o`` with NaN and infinities replaced by ``None`` (JSON ``null``)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k if isinstance(k, str) else str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (str, int, bool)) or o is None:
        return o
    return _finite(_json_default(o))


# Escapes that keep the JSON valid (they only ever occur inside strings) and keep
# any string from closing a <script> element or breaking a JS line.
_JS_SAFE = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


def js_json(obj: Any) -> str:
    """``obj`` as JSON that is safe to embed in a script (no ``</``, no U+2028/2029).

    NaN and infinities become ``null``; NumPy scalars and arrays are converted.
    """
    kw: dict[str, Any] = dict(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text = json.dumps(obj, default=_json_default, **kw)
    except ValueError as e:
        if "JSON compliant" not in str(e):
            raise
        text = json.dumps(_finite(obj), default=_json_default, **kw)
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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- writing


def _check_data(data: Any) -> None:
    if not isinstance(data, dict):
        raise TypeError(f"report data must be a dict, not {type(data).__name__}")
    version = data.get("format_version")
    if version is not None and not isinstance(version, int):
        raise ReportError(f"report data format_version must be an integer, not {version!r}")
    if isinstance(version, int) and version > SUPPORTED_FORMAT:
        raise ReportError(
            f"report data format_version {version} is newer than this viewer "
            f"(supports {SUPPORTED_FORMAT}); upgrade nnsig"
        )
    missing = [k for k in ("classes", "layers", "splits") if k not in data]
    if missing:
        raise ReportError(f"report data lacks {', '.join(missing)} (see docs/report-data.md)")
    if not isinstance(data["splits"], dict) or not data["splits"]:
        raise ReportError("report data has no splits")


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    """What the marker file and the report index keep about a report."""
    model = data.get("model") or {}
    analysis = data.get("analysis") or {}
    splits = {}
    for name, sp in (data.get("splits") or {}).items():
        sp = sp or {}
        splits[str(name)] = {
            "n_samples": sp.get("n_samples"),
            "accuracy": sp.get("accuracy"),
            "n_signatures": sp.get("n_signatures"),
            "scores": bool(sp.get("scores")),
        }
    return _finite(
        {
            "nnsig_report": 1,
            "format_version": data.get("format_version", SUPPORTED_FORMAT),
            "title": data.get("title"),
            "created": data.get("created"),
            "written": _now(),
            "store": data.get("store"),
            "analysis": analysis.get("name"),
            "model_class": model.get("model_class"),
            "framework": model.get("framework"),
            "parameters": model.get("parameters"),
            "layers": list(data.get("layers") or []),
            "n_clusters": list(analysis.get("n_clusters") or []),
            "n_classes": len(data.get("classes") or []),
            "splits": splits,
        }
    )


def _copy_viewer(src: Path, dst: Path) -> None:
    for item in sorted(src.iterdir()):
        if item.name.startswith(".") or item.name == "__pycache__" or item.name in _NOT_COPIED:
            continue
        if item.is_dir():
            shutil.copytree(
                item, dst / item.name, ignore=shutil.ignore_patterns(".*", "__pycache__")
            )
        else:
            shutil.copyfile(item, dst / item.name)


def _fill(directory: Path, data: dict[str, Any]) -> None:
    _copy_viewer(viewer_dir(), directory)
    with open(directory / DATA_FILE, "w", encoding="utf-8", newline="\n") as f:
        f.write("window.NNSIG_REPORT = ")
        f.write(js_json(data))
        f.write(";\n")
    (directory / RUNS_FILE).write_text("window.NNSIG_RUNS = null;\n", encoding="utf-8")
    (directory / MARKER).write_text(
        json.dumps(_summary(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _replace(out: Path, data: dict[str, Any]) -> None:
    """Replace the report in ``out``: build the new one beside it, then swap the two,
    so that a reader never sees a half-written report (in place when that cannot be
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
    data: dict[str, Any], out_dir: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Write a report (viewer + ``data.js`` + marker) into ``out_dir``.

    Parameters
    ----------
    data : dict
        The report data (``docs/report-data.md``), e.g. from
        :func:`nnsig_core.report_data.build_report_data`.
    out_dir : path
        The report directory: new, empty, or an existing nnsig report, which is
        replaced as a whole.
    title : str, optional
        Overrides ``data["title"]``.

    Returns
    -------
    Path
        The report's ``index.html`` (open it in a browser; no server needed).

    Raises
    ------
    ReportError
        When ``out_dir`` is a file, or a non-empty directory that is not an
        nnsig report, or when ``data`` is not report data.
    """
    _check_data(data)
    if title is not None:
        data = {**data, "title": str(title)}
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ReportError(f"cannot write a report to {out}: it exists and is not a directory")
    non_empty = out.is_dir() and any(out.iterdir())
    if non_empty and not is_report(out):
        raise ReportError(
            f"refusing to write a report into {out}: the directory is not empty and is not "
            f"an nnsig report (it has no {MARKER}); choose a new or empty directory"
        )
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
            log.warning("report written, but not the index of %s: %s", parent, e)
    return out / INDEX_FILE


def write_report(
    analysis: Any,
    store: Any,
    out_dir: str | os.PathLike[str],
    splits: Sequence[str] = ("train", "test"),
    title: str | None = None,
    scores: Any = None,
) -> Path:
    """Build the report data of ``analysis`` on ``store`` and write the report.

    See :func:`nnsig_core.report_data.build_report_data` for the arguments and
    :func:`write_report_data` for the result and errors.
    """
    from nnsig_core.report_data import build_report_data

    data = build_report_data(analysis, store, splits, title=title, scores=scores)
    return write_report_data(data, out_dir, title=title)


# --------------------------------------------------------------------------- index


def _report_dirs(parent: Path) -> list[Path]:
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and p.is_dir() and is_report(p)]


def list_reports(parent_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The reports in the subdirectories of ``parent_dir``, newest first.

    Each is its marker's content plus ``"dir"`` (the subdirectory's name).
    """
    out = []
    for p in _report_dirs(Path(parent_dir)):
        try:
            info = json.loads((p / MARKER).read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as e:
            log.warning("unreadable report marker %s: %s", p / MARKER, e)
            info = {}
        info["dir"] = p.name
        if not info.get("title"):
            info["title"] = p.name
        out.append(info)
    out.sort(
        key=lambda r: (str(r.get("created") or r.get("written") or ""), r["dir"]), reverse=True
    )
    return out


def write_index(parent_dir: str | os.PathLike[str]) -> Path:
    """Write ``index.html`` + ``reports.js`` listing the reports under ``parent_dir``.

    Also gives each report a ``runs.js`` so its page offers a run selector.
    Returns the path of the index page (static; works from ``file://``).

    Raises
    ------
    ReportError
        When ``parent_dir`` is not a directory, is itself a report, or holds an
        ``index.html`` that nnsig did not write.
    """
    parent = Path(parent_dir).expanduser()
    if not parent.is_dir():
        raise ReportError(f"cannot index {parent}: not a directory")
    if is_report(parent):
        raise ReportError(f"cannot index {parent}: it is a report itself; index its parent")
    index = parent / INDEX_FILE
    if index.exists() and not _is_our_index(index):
        raise ReportError(f"{index} exists and was not written by nnsig; not overwriting it")
    template = viewer_dir() / INDEX_TEMPLATE
    reports = list_reports(parent)
    _atomic_write(
        parent / REPORTS_FILE,
        "window.NNSIG_REPORTS = " + js_json({"generated": _now(), "reports": reports}) + ";\n",
    )
    _atomic_write(index, template.read_text(encoding="utf-8"))
    runs = [
        {"dir": r["dir"], "title": r.get("title"), "created": r.get("created")} for r in reports
    ]
    for r in reports:
        payload = {"index": "../" + INDEX_FILE, "current": r["dir"], "runs": runs}
        try:
            _atomic_write(
                parent / r["dir"] / RUNS_FILE, "window.NNSIG_RUNS = " + js_json(payload) + ";\n"
            )
        except OSError as e:
            log.warning("cannot update the run list of %s: %s", parent / r["dir"], e)
    log.info("wrote report index %s (%d reports)", index, len(reports))
    return index


# --------------------------------------------------------------------------- serving

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".woff2": "font/woff2",
}


class _ReportRequestHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of the regular files under ``root``; nothing else."""

    root: Path  # set on the per-server subclass
    server_version = "nnsig-view"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def _host_allowed(self) -> bool:
        # Refuse requests for other host names (DNS rebinding) on a loopback server.
        host = self.headers.get("Host")
        if host is None or not getattr(self.server, "loopback", False):
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]").lower() in ("127.0.0.1", "localhost", "::1")

    def _serve(self, body: bool) -> None:
        if not self._host_allowed():
            self.send_error(403, "Forbidden host")
            return
        raw = urllib.parse.urlsplit(self.path).path
        if not raw.startswith("/"):
            self.send_error(400, "Bad path")
            return
        try:
            path = urllib.parse.unquote(raw, errors="strict") if "%" in raw else raw
        except UnicodeDecodeError:
            self.send_error(400, "Bad path")
            return
        parts = path.split("/")
        if "\x00" in path or "\\" in path or any(p == ".." for p in parts):
            self.send_error(403, "Forbidden")
            return
        rel = [p for p in parts if p not in ("", ".")]
        if any(p.startswith(".") for p in rel):
            self.send_error(404, "Not found")
            return
        root = self.root
        try:
            target = root.joinpath(*rel).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            self.send_error(404, "Not found")
            return
        if target != root and root not in target.parents:
            self.send_error(403, "Forbidden")
            return
        if target.is_dir():
            if not raw.endswith("/"):
                self.send_response(301)
                self.send_header("Location", raw + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            target = target / INDEX_FILE
            try:
                target = target.resolve(strict=True)
            except (OSError, RuntimeError):
                self.send_error(404, "Not found")  # no directory listings
                return
            if root not in target.parents:
                self.send_error(403, "Forbidden")
                return
        if not target.is_file():
            self.send_error(404, "Not found")
            return
        try:
            with open(target, "rb") as f:
                content = f.read()
        except OSError:
            self.send_error(404, "Not found")
            return
        ctype = _CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream")
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if body:
            self.wfile.write(content)


class ReportServer(http.server.ThreadingHTTPServer):
    """The local server of :func:`serve_report`; ``close()`` stops it."""

    daemon_threads = True
    allow_reuse_address = os.name != "nt"  # on Windows SO_REUSEADDR lets ports be stolen
    url: str = ""
    directory: Path
    loopback: bool = True
    thread: threading.Thread | None = None

    def _background(self) -> bool:
        t = self.thread
        return t is not None and t.is_alive() and threading.current_thread() is not t

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown`; when already serving in the background
        (as :func:`serve_report` leaves it), just wait for that to end instead."""
        if self._background():
            assert self.thread is not None
            while self.thread.is_alive():
                self.thread.join(0.25)
            return
        super().serve_forever(poll_interval)

    def server_close(self) -> None:
        """Stop the background thread if it runs, then release the port."""
        if self._background():
            self.shutdown()
            assert self.thread is not None
            self.thread.join(5)
        super().server_close()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server_close()

    def __exit__(self, *args: Any) -> None:
        self.close()


def serve_report(
    directory: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = True,
) -> tuple[ReportServer, str]:
    """Serve a report (or a directory of reports) on a local address, in a background thread.

    Only the regular files under ``directory`` are served: paths with ``..``
    (also percent-encoded) are refused with 403, symbolic links leading outside
    with 403, hidden files and directories without ``index.html`` with 404 (no
    listings). Requests naming another host than the loopback one are refused.

    Parameters
    ----------
    directory : path
        A report directory, or a directory of reports with its ``index.html``.
    host : str
        The address to listen on (loopback by default).
    port : int
        0 (the default) picks a free port.
    open_browser : bool
        Open the page with :func:`webbrowser.open`; else only log the address.

    Returns
    -------
    (ReportServer, str)
        The running server (call ``server.close()`` to stop it) and its URL.

    Raises
    ------
    ReportError
        When ``directory`` is not a directory with an ``index.html``.
    PortInUseError
        When ``port`` is already in use.
    """
    root = Path(directory).expanduser().resolve()
    if not root.is_dir():
        raise ReportError(f"cannot serve {directory}: not a directory")
    if not (root / INDEX_FILE).is_file():
        raise ReportError(
            f"cannot serve {directory}: it has no {INDEX_FILE} (not an nnsig report or "
            "report index; write one with `nnsig report`)"
        )
    handler = type("ReportRequestHandler", (_ReportRequestHandler,), {"root": root})
    server_cls: type[ReportServer] = ReportServer
    if ":" in host:
        import socket

        server_cls = type("ReportServer6", (ReportServer,), {"address_family": socket.AF_INET6})
    try:
        server = server_cls((host, int(port)), handler)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1), 10048):
            raise PortInUseError(host, int(port)) from e
        raise
    server.directory = root
    server.loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{server.server_address[1]}/"
    server.url = url
    server.thread = threading.Thread(
        target=server.serve_forever, name="nnsig-view", daemon=True, kwargs={"poll_interval": 0.05}
    )
    server.thread.start()
    log.info("serving %s at %s", root, url)
    if open_browser:
        try:
            webbrowser.open(url)
        except Exception as e:  # a missing browser must not stop the server
            log.warning("could not open a browser (%s); open %s yourself", e, url)
    return server, url
