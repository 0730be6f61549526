"""The local HTTP server of ``nnsig view``: GET and HEAD of the regular files under one
directory, in a background thread, and nothing else. A report served alone gets ``runs.js``
with no list (:data:`ALONE_RUNS`): its siblings are out of reach.
"""

from __future__ import annotations

import errno
import http.server
import logging
import os
import threading
import urllib.parse
import webbrowser
from pathlib import Path
from typing import Any

from nnsig_core._warnings import warn
from nnsig_core.report.write import INDEX_FILE, RUNS_FILE, ReportError, is_report

log = logging.getLogger("nnsig.report")

#: ``runs.js`` of a report served alone: no other reports to offer.
ALONE_RUNS = b"window.NNSIG_RUNS = null; /* served alone by nnsig view: no other reports */\n"

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


_HTML, _JS, _TEXT = ("text/html; charset=utf-8", "text/javascript; charset=utf-8",
                     "text/plain; charset=utf-8")
_CONTENT_TYPES = {
    ".html": _HTML, ".htm": _HTML, ".js": _JS, ".mjs": _JS, ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
    ".ico": "image/x-icon", ".txt": _TEXT, ".md": _TEXT, ".csv": "text/csv; charset=utf-8",
    ".woff2": "font/woff2",
}


class _ReportRequestHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of the regular files under ``root``; nothing else."""

    root: Path  # set on the per-server subclass
    answers: dict[str, bytes] = {}  # path below root -> the content served instead of the file
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
        if "/".join(rel) in self.answers:
            self._send(self.answers["/".join(rel)], rel[-1], body)
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
        self._send(content, target.name, body)

    def _send(self, content: bytes, name: str, body: bool) -> None:
        ctype = _CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
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


def serve_report(directory: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0,
                 open_browser: bool = True) -> tuple[ReportServer, str]:
    """Serve a report (or a directory of reports) on a local address, in a background thread:
    only the regular files under ``directory``, to requests naming the loopback host.

    Parameters
    ----------
    directory : path
        A report directory (served alone: its run menu lists no others), or a directory of
        reports with its ``index.html``.
    host : str
        The address to listen on (loopback by default).
    port : int
        0 (the default) picks a free port.
    open_browser : bool
        Open the page with :func:`webbrowser.open`.

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
        raise ReportError(f"cannot serve {directory}: it has no {INDEX_FILE} (not an nnsig "
                          "report or report index; write one with `nnsig report`)")
    answers = {RUNS_FILE: ALONE_RUNS} if is_report(root) else {}
    handler = type("ReportRequestHandler", (_ReportRequestHandler,),
                   {"root": root, "answers": answers})
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
    url = f"http://{f'[{host}]' if ':' in host else host}:{server.server_address[1]}/"
    server.url = url
    server.thread = threading.Thread(target=server.serve_forever, name="nnsig-view", daemon=True,
                                     kwargs={"poll_interval": 0.05})
    server.thread.start()
    log.info("serving %s at %s", root, url)
    if open_browser:
        try:
            webbrowser.open(url)
        except Exception as e:  # a missing browser must not stop the server
            warn(f"Could not open a browser ({e}); open {url} yourself.")
    return server, url
