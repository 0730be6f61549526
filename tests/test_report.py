"""Tests of nnsig_core.report: writing reports and indexes, and the local server."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from nnsig_core import NnsigWarning
from nnsig_core.report import (
    MARKER,
    PortInUseError,
    ReportError,
    js_json,
    list_reports,
    serve_report,
    viewer_dir,
    write_index,
    write_report,
    write_report_data,
)
from nnsig_core.report import serve as rs
from nnsig_core.report import write as rw
from nnsig_core.report.data import REPORT_FORMAT_VERSION
from nnsig_core.report.summary import SUPPORTED_FORMAT

try:
    from test_report_synth import make_report_data
except ImportError:  # tests/ is a package
    from tests.test_report_synth import make_report_data


@pytest.fixture(scope="module")
def data():
    return make_report_data(n_layers=3, samples={"train": 800, "test": 200}, seed=3)


def read_data_js(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    prefix = "window.NNSIG_REPORT = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix) : -2])


# --------------------------------------------------------------------------- writing


def test_write_report_data_writes_viewer_data_and_marker(tmp_path, data):
    out = tmp_path / "rep"
    index = write_report_data(data, out)
    assert index == out / "index.html"
    names = {p.name for p in out.iterdir()}
    assert names == {"index.html", "style.css", "viewer.js", "data.js", "runs.js", MARKER}
    # The viewer's modules are joined into viewer.js, in the order viewer/index.html loads them.
    src = viewer_dir()
    modules = re.findall(r'<script src="([^"]+)"></script>', (src / "index.html").read_text())[2:]
    bundle = (out / "viewer.js").read_text()
    at = [bundle.index(f"/* ---- {m} ---- */\n" + (src / m).read_text()) for m in modules]
    assert at == sorted(at) and len(modules) >= 12
    scripts = re.findall(r'<script src="([^"]+)"></script>', index.read_text())
    assert scripts == ["data.js", "runs.js", "viewer.js"]
    assert read_data_js(out / "data.js") == data
    assert (out / "runs.js").read_text() == "window.NNSIG_RUNS = null;\n"
    marker = json.loads((out / MARKER).read_text())
    assert marker["title"] == data["title"]
    assert marker["created"] == data["created"]
    assert set(marker["splits"]) == {"train", "test"}
    assert marker["splits"]["test"]["accuracy"] == data["splits"]["test"]["accuracy"]
    html = index.read_text()
    assert '<script src="data.js"></script>' in html and 'rel="icon" href="data:,"' in html
    assert not (tmp_path / "index.html").exists()  # a lone report gets no parent index


def test_title_argument_overrides_the_data_title(tmp_path, data):
    write_report_data(data, tmp_path / "r", title="Other title")
    assert read_data_js(tmp_path / "r" / "data.js")["title"] == "Other title"
    assert data["title"] != "Other title"  # the caller's dict is untouched


def test_data_js_cannot_close_the_script_or_break_lines(tmp_path, data):
    evil = "</script><script>alert(1)</script>\u2028\u2029<!-- & >"
    d = dict(data, title=evil, classes=[evil] + data["classes"][1:])
    write_report_data(d, tmp_path / "r")
    raw = (tmp_path / "r" / "data.js").read_text(encoding="utf-8")
    for bad in ("</", "<script", "<!--", "\u2028", "\u2029"):
        assert bad not in raw
    assert read_data_js(tmp_path / "r" / "data.js")["title"] == evil


def test_js_json_handles_numpy_and_non_finite_numbers():
    obj = {
        "a": np.int64(3),
        "b": np.float32(0.5),
        "c": np.arange(3),
        "d": float("nan"),
        "e": [np.float64("inf"), 1.0],
        4: (1, 2),
    }
    assert json.loads(js_json(obj)) == {
        "a": 3,
        "b": 0.5,
        "c": [0, 1, 2],
        "d": None,
        "e": [None, 1.0],
        "4": [1, 2],
    }
    assert not math.isnan(json.loads(js_json({"x": np.float64("nan")}))["x"] or 0)


def test_refuses_a_non_empty_directory_that_is_not_a_report(tmp_path, data):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ReportError, match="not empty and is not an nnsig report"):
        write_report_data(data, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ReportError, match="not a directory"):
        write_report_data(data, tmp_path / "afile")


def test_writes_into_an_empty_directory_and_replaces_a_report(tmp_path, data):
    out = tmp_path / "rep"
    out.mkdir()
    write_report_data(data, out)
    (out / "stale.js").write_text("old")
    write_report_data(dict(data, title="Second"), out)
    assert not (out / "stale.js").exists()
    assert read_data_js(out / "data.js")["title"] == "Second"
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary left behind


def test_replaces_the_report_in_the_working_directory_in_place(tmp_path, data, monkeypatch):
    out = tmp_path / "rep"
    write_report_data(data, out)
    (out / "stale.js").write_text("old")
    monkeypatch.chdir(out)
    write_report_data(dict(data, title="Here"), ".")
    assert Path.cwd() == out.resolve() and out.is_dir()
    assert not (out / "stale.js").exists()
    assert read_data_js(out / "data.js")["title"] == "Here"


def test_rejects_what_is_not_report_data(tmp_path, data):
    with pytest.raises(TypeError):
        write_report_data([1, 2], tmp_path / "a")
    with pytest.raises(ReportError, match="lacks splits"):
        write_report_data({"classes": [], "layers": []}, tmp_path / "b")
    with pytest.raises(ReportError, match="newer"):
        write_report_data(dict(data, format_version=99), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_viewer_dir_finds_the_static_files():
    d = viewer_dir()
    assert (d / "index.html").is_file() and (d / "app.js").is_file()
    assert (d / "runs-index.html").is_file()


def test_viewer_loads_every_script_and_knows_the_data_format():
    d = viewer_dir()
    html = (d / "index.html").read_text()
    scripts = re.findall(r'<script src="([^"]+)"></script>', html)
    assert scripts[:2] == ["data.js", "runs.js"] and scripts[-1] == "app.js"
    assert sorted(scripts[2:]) == sorted(p.name for p in d.glob("*.js"))
    model = (d / "model.js").read_text()
    assert f"const SUPPORTED_FORMAT = {SUPPORTED_FORMAT};" in model
    assert REPORT_FORMAT_VERSION == SUPPORTED_FORMAT


def test_viewer_never_inserts_markup_and_needs_no_network():
    d = viewer_dir()
    names = sorted(p.name for p in d.glob("*.js")) + ["index.html", "runs-index.html"]
    assert len(names) >= 14
    for name in names:
        text = (d / name).read_text()
        for bad in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "fetch(",
            "XMLHttpRequest",
            "http://",
            "https://",
        ):
            assert bad not in text.replace("http://www.w3.org/2000/svg", ""), (name, bad)


def test_viewer_dir_prefers_the_wheel_copy(tmp_path, monkeypatch):
    import nnsig_core

    pkg = tmp_path / "nnsig_core"
    (pkg / "_viewer").mkdir(parents=True)
    (pkg / "_viewer" / "index.html").write_text("x")
    monkeypatch.setattr(nnsig_core, "__file__", str(pkg / "__init__.py"))
    assert viewer_dir() == (pkg / "_viewer").resolve()


def test_viewer_dir_error_is_clear(tmp_path, monkeypatch):
    import nnsig_core

    monkeypatch.setattr(nnsig_core, "__file__", str(tmp_path / "x" / "__init__.py"))
    monkeypatch.setattr(rw, "__file__", str(tmp_path / "y" / "z" / "report" / "write.py"))
    with pytest.raises(ReportError, match="static files were not found"):
        viewer_dir()


def test_write_report_builds_the_data_then_writes(tmp_path, monkeypatch, data):
    calls = []

    def build_report_data(analysis, store, splits, title=None, scores=None):
        calls.append((analysis, store, tuple(splits), title, scores))
        return data

    fake = types.ModuleType("nnsig_core.report.data")
    fake.build_report_data = build_report_data
    monkeypatch.setitem(sys.modules, "nnsig_core.report.data", fake)
    index = write_report(
        "ANALYSIS", "STORE", tmp_path / "r", splits=("test",), title="T", scores="S"
    )
    assert calls == [("ANALYSIS", "STORE", ("test",), "T", "S")]
    assert read_data_js(index.parent / "data.js")["title"] == "T"


# --------------------------------------------------------------------------- index


def test_index_written_when_a_second_report_appears(tmp_path, data):
    write_report_data(
        dict(data, title="First", created="2026-01-01T00:00:00+00:00"), tmp_path / "a"
    )
    assert not (tmp_path / "index.html").exists()
    write_report_data(
        dict(data, title="Second", created="2026-02-01T00:00:00+00:00"), tmp_path / "b"
    )
    index = tmp_path / "index.html"
    assert index.is_file() and (tmp_path / "reports.js").is_file()
    assert 'content="nnsig-index"' in index.read_text()
    reports = list_reports(tmp_path)
    assert [r["dir"] for r in reports] == ["b", "a"]  # newest first
    assert [r["title"] for r in reports] == ["Second", "First"]
    for d in ("a", "b"):
        runs = (tmp_path / d / "runs.js").read_text()
        payload = json.loads(runs[len("window.NNSIG_RUNS = ") : -2])
        assert payload["current"] == d and payload["index"] == "../index.html"
        assert [r["dir"] for r in payload["runs"]] == ["b", "a"]
    # Replacing a report keeps the index and the run list up to date.
    write_report_data(dict(data, title="First again"), tmp_path / "a")
    assert "First again" in (tmp_path / "reports.js").read_text()
    assert "NNSIG_RUNS = {" in (tmp_path / "a" / "runs.js").read_text()


def test_write_index_refuses_a_foreign_index_and_a_report(tmp_path, data):
    (tmp_path / "index.html").write_text("<html>my own page</html>")
    write_report_data(data, tmp_path / "a")
    with pytest.warns(NnsigWarning, match="not the index"):  # writes the report anyway
        write_report_data(data, tmp_path / "b")
    assert (tmp_path / "b" / MARKER).is_file()
    assert (tmp_path / "index.html").read_text() == "<html>my own page</html>"
    with pytest.raises(ReportError, match="not written by nnsig"):
        write_index(tmp_path)
    with pytest.raises(ReportError, match="is a report itself"):
        write_index(tmp_path / "a")
    with pytest.raises(ReportError, match="not a directory"):
        write_index(tmp_path / "missing")


def test_write_index_explicitly_and_skips_non_reports(tmp_path, data):
    write_report_data(data, tmp_path / "only")
    (tmp_path / "other").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / MARKER).write_text("{}")
    index = write_index(tmp_path)
    assert index == tmp_path / "index.html"
    assert [r["dir"] for r in list_reports(tmp_path)] == ["only"]


# --------------------------------------------------------------------------- server


def raw_get(
    port: int, path: str, host: str | None = None, method: str = "GET"
) -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    return status, headers, body


@pytest.fixture(scope="module")
def served(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("root")
    (root / "secret.txt").write_text("outside the report")
    write_report_data(data, root / "rep")
    rep = root / "rep"
    (rep / "sub").mkdir()
    (rep / "sub" / "file.txt").write_text("inside")
    (rep / ".hidden.txt").write_text("hidden")
    os.symlink(root / "secret.txt", rep / "link-out.txt")
    os.symlink(root, rep / "dir-out")
    os.symlink(rep / "sub" / "file.txt", rep / "link-in.txt")
    server, url = serve_report(rep, open_browser=False)
    try:
        yield server, url, rep
    finally:
        server.close()


def test_serves_the_report_with_content_types(served):
    server, url, rep = served
    port = server.server_address[1]
    assert url == f"http://127.0.0.1:{port}/"
    status, headers, body = raw_get(port, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == (rep / "index.html").read_bytes()
    for path, ctype in (
        ("/index.html", "text/html"),
        ("/viewer.js", "text/javascript"),
        ("/data.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/nnsig-report.json", "application/json"),
        ("/sub/file.txt", "text/plain"),
    ):
        status, headers, _ = raw_get(port, path)
        assert status == 200, path
        assert headers["content-type"].startswith(ctype), path
        assert headers["x-content-type-options"] == "nosniff"
    assert raw_get(port, "/link-in.txt")[2] == b"inside"  # a link inside the report is fine
    status, headers, body = raw_get(port, "/viewer.js", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/../../../../etc/passwd",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..\\secret.txt",
        "/%5c..%5csecret.txt",
    ],
)
def test_refuses_paths_outside_the_directory(served, path):
    server, _, _ = served
    status, _, body = raw_get(server.server_address[1], path)
    assert status in (403, 404), path
    assert b"outside the report" not in body


def test_refuses_symlinks_out_hidden_files_and_listings(served):
    server, _, _ = served
    port = server.server_address[1]
    assert raw_get(port, "/link-out.txt")[0] == 403
    assert raw_get(port, "/dir-out/secret.txt")[0] == 403
    assert raw_get(port, "/.hidden.txt")[0] == 404
    assert raw_get(port, "/nope.js")[0] == 404
    status, _, body = raw_get(port, "/sub/")  # no index.html: no listing
    assert status == 404 and b"file.txt" not in body
    status, headers, _ = raw_get(port, "/sub")
    assert status == 301 and headers["location"] == "/sub/"
    assert raw_get(port, "/", method="POST")[0] == 501
    assert raw_get(port, "/", host="evil.example:80")[0] == 403  # DNS rebinding
    assert raw_get(port, "/", host=f"localhost:{port}")[0] == 200


def test_port_in_use_gives_a_clear_error(served):
    server, _, rep = served
    port = server.server_address[1]
    with pytest.raises(PortInUseError, match=f"port {port} .* already in use") as e:
        serve_report(rep, port=port, open_browser=False)
    assert isinstance(e.value, OSError)


def test_serve_checks_the_directory_and_opens_the_browser(tmp_path, data, monkeypatch):
    with pytest.raises(ReportError, match="not a directory"):
        serve_report(tmp_path / "missing", open_browser=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no index.html"):
        serve_report(tmp_path / "empty", open_browser=False)
    opened = []
    monkeypatch.setattr(rs.webbrowser, "open", lambda url: opened.append(url) or True)
    write_report_data(data, tmp_path / "r")
    server, url = serve_report(tmp_path / "r")
    try:
        assert opened == [url]
        assert raw_get(server.server_address[1], "/data.js")[0] == 200
    finally:
        server.close()


def test_serve_forever_method_waits_for_the_background_thread(tmp_path, data):
    """``server.serve_forever()`` after :func:`serve_report` waits rather than running a
    second loop, and ``server_close()`` stops the background thread."""
    import threading

    write_report_data(data, tmp_path / "r")
    server, _ = serve_report(tmp_path / "r", open_browser=False)
    port = server.server_address[1]
    t = threading.Thread(target=server.serve_forever)
    t.start()
    assert raw_get(port, "/")[0] == 200
    assert t.is_alive()
    server.server_close()
    t.join(5)
    assert not t.is_alive() and not server.thread.is_alive()
    with pytest.raises(OSError):
        raw_get(port, "/")
