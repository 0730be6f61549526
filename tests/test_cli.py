"""The ``nnsig`` command: every subcommand, its output and its error paths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nnsig_core import capture, open_store
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.cli import main

NNSIG = [sys.executable, "-m", "nnsig_core"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "s.zarr"
    make_blob_store(path)
    return path


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    """``nnsig ARGS`` in its own process (what a shell runs)."""
    return subprocess.run([*NNSIG, *map(str, args)], capture_output=True, text=True, timeout=120, **kw)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def nnsig(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``nnsig ARGS`` in this process: the console script's ``main``, its exit status (argparse's
    ``SystemExit`` for usage errors) and what it printed. Subprocess runs (:func:`run`) check
    the process itself once; the commands' behaviour is checked here, without paying the
    interpreter's start and imports for every command."""

    def call(*args: Any) -> Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return call


def test_info_text_and_json(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "split train:" in out and "complete" in out and "layer" in out
    assert main(["info", str(store_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    store = open_store(store_path)
    assert set(info["splits"]) == set(store.splits)
    train = info["splits"]["train"]
    assert [d["name"] for d in train["layers"]] == store.layers("train")
    assert train["n_samples"] == store.n_samples("train")
    assert all(d["bytes_stored"] > 0 for d in train["layers"])


def test_info_imports_neither_scikit_learn_nor_the_analysis(store_path: Path) -> None:
    """``nnsig info`` starts light: the heavy modules load only in the commands that need them."""
    code = (
        "import sys; from nnsig_core.cli import main; "
        f"status = main(['info', {str(store_path)!r}]); "
        "heavy = [m for m in ('sklearn', 'nnsig_core.analysis', 'nnsig_core.diagnostics', "
        "'nnsig_core.report') if m in sys.modules]; "
        "assert status == 0 and not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "split train:" in r.stdout


def test_info_reports_incomplete_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Stop(Exception):
        pass

    class Net:
        framework = "test"

        def run(self, x):
            return x[:, :2], {"h": x}

        def model_summary(self):
            return {"model_class": "Net", "layers": []}

        def to_numpy(self, x):
            return np.asarray(x)

    def batches():
        rng = np.random.default_rng(0)
        for i in range(5):
            if i == 3:
                raise Stop
            yield rng.random((10, 4)).astype(np.float32), np.zeros(10, int)

    with pytest.raises(Stop):
        capture(Net(), batches(), tmp_path / "s.zarr", progress=False)
    assert main(["info", str(tmp_path / "s.zarr")]) == 0
    assert "INCOMPLETE" in capsys.readouterr().out


def test_errors_are_one_line_with_status_1(tmp_path: Path) -> None:
    r = run("info", tmp_path / "missing.zarr")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("nnsig: error: No store at")
    assert "Traceback" not in r.stderr
    r = run("--debug", "info", tmp_path / "missing.zarr")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_usage_errors_exit_2(nnsig: Callable[..., Result]) -> None:
    assert run().returncode == 2  # the process's own exit status, once
    assert nnsig("info").returncode == 2
    assert nnsig("frobnicate").returncode == 2
    r = nnsig("--help")
    assert r.returncode == 0 and "analyze" in r.stdout and "view" in r.stdout
    for cmd in ("info", "analyze", "report", "view", "export", "evaluate", "migrate"):
        r = nnsig(cmd, "--help")
        assert r.returncode == 0, cmd
        assert "usage: nnsig " + cmd in r.stdout
    # A global option after the command: where it goes.
    r = nnsig("info", "s3://b/s.zarr", "--storage-option", "endpoint_url=http://127.0.0.1:1")
    assert r.returncode == 2 and "--storage-option goes before the command" in r.stderr
    for port in ("99999", "-5"):  # bind() said "port must be 0-65535", with status 1
        r = nnsig("view", ".", "--port", port)
        assert r.returncode == 2 and "--port: must be from 0 to 65535" in r.stderr
    # The British spelling runs the same command.
    r = nnsig("analyse", "--help")
    assert r.returncode == 0 and "usage: nnsig analyze" in r.stdout


@pytest.mark.slow
def test_analyze_report_export(store_path: Path, tmp_path: Path,
                               nnsig: Callable[..., Result]) -> None:
    r = nnsig("analyze", store_path, "--clusters", "4", "--name", "cli")
    assert r.returncode == 0, r.stderr
    assert "purity" in r.stdout.lower()
    assert "cli" in open_store(store_path).analyses
    # The same name again is refused unless --overwrite.
    r = nnsig("analyze", store_path, "--clusters", "4", "--name", "cli")
    assert r.returncode == 1 and "--overwrite" in r.stderr
    r = nnsig("analyze", store_path, "--clusters", "3", "--name", "cli", "--overwrite",
            "--discretize", "uniform:5", "--json")
    assert r.returncode == 0, r.stderr
    summaries = json.loads(r.stdout)
    assert set(summaries) == set(open_store(store_path).splits)

    out = tmp_path / "report"
    r = nnsig("report", store_path, "--analysis", "cli", "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "index.html").is_file() and (out / "data.js").is_file()
    assert "nnsig view" in r.stdout

    r = nnsig("export", store_path, "--analysis", "cli", "--split", "test", "--out", tmp_path / "x")
    assert r.returncode == 0, r.stderr
    assert any(name.endswith(".csv") for name in os.listdir(tmp_path / "x"))
    r = nnsig("export", store_path, "--analysis", "cli", "--out", tmp_path / "p", "--prototype")
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "p" / "clusters_info.json").read_text())
    assert {"layer", "class", "instances_count", "cluster_index"} <= set(info[0][0] if isinstance(info[0], list) else info[0])
    header = (tmp_path / "p" / "clusterized_values.csv").read_text().splitlines()[0]
    assert header.startswith("input_class,cluster_in_layer1") and header.endswith("output_class")


@pytest.mark.slow
def test_analyze_and_report_errors(store_path: Path, tmp_path: Path,
                                   nnsig: Callable[..., Result]) -> None:
    r = nnsig("analyze", store_path, "--layers", "nope", "--name", "bad")
    assert r.returncode == 1 and "nope" in r.stderr
    # Named before a name clash (fixing the clash first would only lead to it).
    assert nnsig("analyze", store_path, "--clusters", "2", "--name", "taken").returncode == 0
    r = nnsig("analyze", store_path, "--layers", "nope", "--name", "taken")
    assert r.returncode == 1 and "'nope' not in split 'train'" in r.stderr, r.stderr
    assert "Available layers" in r.stderr and "already exists" not in r.stderr
    # Every malformed option is a usage error (exit 2) naming the option, as --reduce abc is.
    for bad in (["--clusters", "x="], ["--clusters", "abc"], ["--discretize", "bogus:3"],
                ["--classes", "9-1"], ["--reduce", "abc"], ["--clusters", "0"],
                ["--clusters", "a=2,b=0"], ["--reduce", "0"], ["--seed", "-1"],
                ["--memory-limit", "2GB7"]):
        r = nnsig("analyze", store_path, *bad)
        assert r.returncode == 2 and bad[0] in r.stderr and "usage:" in r.stderr, (bad, r.stderr)
    # A memory limit the fit rows exceed: the layers are clustered out of core.
    r = nnsig("analyze", store_path, "--clusters", "2", "--name", "small", "--memory-limit",
              "1KiB", "--json")
    assert r.returncode == 0, r.stderr
    assert {lay["method"] for s in json.loads(r.stdout).values() for lay in s["layers"]} == {
        "lloyd"}
    r = nnsig("report", store_path, "--analysis", "missing", "--out", tmp_path / "r")
    assert r.returncode == 1
    assert "No analysis named 'missing'" in r.stderr and "nnsig analyze" in r.stderr
    r = nnsig("export", store_path, "--analysis", "missing", "--out", tmp_path / "x")
    assert r.returncode == 1 and "missing" in r.stderr
    r = nnsig("report", tmp_path / "nostore.zarr", "--out", tmp_path / "r")
    assert r.returncode == 1 and "No store" in r.stderr


@pytest.mark.slow
def test_evaluate(store_path: Path, tmp_path: Path,
                  nnsig: Callable[..., Result]) -> None:
    assert nnsig("analyze", store_path, "--clusters", "4", "--name", "ev", "--classes", "0-1").returncode == 0
    r = nnsig("evaluate", store_path, "--analysis", "ev", "--split", "test", "--csv", tmp_path / "m.csv")
    assert r.returncode == 0, r.stderr
    for word in ("AUROC", "AUPR", "FPR95", "novelty", "combined (default)", "knn", "energy"):
        assert word in r.stdout, word
    assert "class_margin" not in r.stdout  # the components only with --components
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0].startswith("score,task,metric,value")
    assert {line.split(",")[2] for line in lines[1:]} == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    r = nnsig("evaluate", store_path, "--analysis", "ev", "--split", "test", "--json", "--components")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["default_score"] == "combined" and "novelty" in out["tasks"]
    nov = out["tasks"]["novelty"]
    assert nov["n_positive"] > 0 and {"combined", "class_margin", "msp", "knn"} <= set(nov["scores"])
    assert set(nov["scores"]["combined"]) == {"auroc", "aupr_out", "aupr_in", "fpr95"}
    assert 0 <= nov["scores"]["combined"]["auroc"] <= 1
    # Tuning the combined score on a split holding novel classes is refused.
    r = nnsig("evaluate", store_path, "--analysis", "ev", "--validation", "test")
    assert r.returncode == 1 and "novel" in r.stderr.lower()
    r = nnsig("evaluate", store_path, "--analysis", "nope")
    assert r.returncode == 1 and "nope" in r.stderr
    # The report picks up the scores that evaluate saved.
    r = nnsig("report", store_path, "--analysis", "ev", "--out", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "rep" / "data.js").read_text()
    payload = json.loads(data[data.index("{"): data.rindex("}") + 1])
    assert "scores" in payload["splits"]["test"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_view_serves_and_stops_on_interrupt(store_path: Path, tmp_path: Path,
                                           nnsig: Callable[..., Result],
                                           nnsig_from_a_terminal: list[str]) -> None:
    out = tmp_path / "report"
    assert nnsig("analyze", store_path, "--clusters", "3", "--name", "view").returncode == 0
    assert nnsig("report", store_path, "--analysis", "view", "--out", out).returncode == 0
    inherited = (signal.getsignal(signal.SIGINT),
                 signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    proc = subprocess.Popen([*nnsig_from_a_terminal, "view", str(out), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "serving" in line and "http://127.0.0.1:" in line
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "data.js", timeout=10) as resp:
            assert resp.status == 200
            assert resp.read().startswith(b"window.NNSIG_REPORT")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        # A second server on the same port is refused with a clear message.
        r = run("view", out, "--no-browser", "--port", port)
        assert r.returncode == 1 and str(port) in r.stderr and "in use" in r.stderr.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"nnsig view ignored Ctrl-C (this process's SIGINT handler and "
                                 f"blocked: {inherited})") from None
    assert proc.returncode == 0


def test_view_refuses_non_report(tmp_path: Path, nnsig: Callable[..., Result]) -> None:
    r = nnsig("view", tmp_path, "--no-browser", "--port", _free_port())
    assert r.returncode == 1 and "index.html" in r.stderr
    r = nnsig("view", tmp_path / "nope", "--no-browser")
    assert r.returncode == 1 and "not a directory" in r.stderr


def test_python_m_matches_console_script(store_path: Path) -> None:
    exe = Path(sys.executable).parent / "nnsig"
    if not exe.exists():
        pytest.skip("console script not installed next to this interpreter")
    a = subprocess.run([str(exe), "info", str(store_path), "--json"], capture_output=True, text=True)
    b = run("info", store_path, "--json")
    assert a.returncode == b.returncode == 0
    assert json.loads(a.stdout) == json.loads(b.stdout)
