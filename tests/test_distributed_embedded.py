"""Without a client nnsig stays one process and never imports Dask; choosing a client; the CLI's
``--scheduler``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nnsig_core
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.cli import main
from nnsig_core.distributed import parse_scheduler, resolve_client
from nnsig_core.execute.client import SchedulerSpec

ROOT = Path(nnsig_core.__file__).resolve().parent
NNSIG = [sys.executable, "-m", "nnsig_core"]
OPTIONAL = ("dask", "distributed", "s3fs", "moto")


@pytest.mark.slow
def test_without_a_client_dask_is_never_imported(tmp_path: Path) -> None:
    code = f"""
import sys
from nnsig_core import capture_arrays, open_store
from nnsig_core.analysis import SignatureAnalysis
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.diagnostics import baseline_scores, signature_scores
from nnsig_core.report import build_report_data
store = make_blob_store({str(tmp_path / "b.zarr")!r}, n_samples=300)
store = open_store({str(tmp_path / "b.zarr")!r}, mode="r+")
a = SignatureAnalysis(n_clusters=4, progress=False).fit(store, "train")
sigs = a.transform(store, "test")
a.save(store, "x")
signature_scores(a, store, "test", save=True)
baseline_scores(a, store, "test")
build_report_data(a, store)
assert type(sigs).__name__ == "Signatures", type(sigs)
bad = [m for m in sys.modules if m.split(".")[0] in {OPTIONAL!r}]
assert not bad, bad
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Imports run when the module is imported: outside functions and ``if TYPE_CHECKING``."""
    found: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append(node.module)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With)):
                visit(node.body)
                for h in getattr(node, "handlers", []):
                    visit(h.body)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)

    visit(tree.body)
    return found


def test_no_module_of_nnsig_core_imports_dask_at_module_level() -> None:
    offenders = {}
    for path in ROOT.rglob("*.py"):
        mods = [m for m in _module_level_imports(ast.parse(path.read_text(encoding="utf-8")))
                if m.split(".")[0] in OPTIONAL]
        if mods:
            offenders[str(path.relative_to(ROOT))] = mods
    assert not offenders
    # The checker sees an import when there is one.
    assert _module_level_imports(ast.parse("import dask\nif x:\n    from distributed import a")) \
        == ["dask", "distributed"]


def test_parse_scheduler() -> None:
    assert parse_scheduler("local:3") == SchedulerSpec(n_workers=3)
    assert str(parse_scheduler("local:3")) == "local:3"
    assert parse_scheduler("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    assert parse_scheduler("scheduler:8786").address == "scheduler:8786"
    # a host named local... is a host (it was refused); an address without a port is not
    assert parse_scheduler("localhost:8799").address == "localhost:8799"
    assert parse_scheduler("[::1]:8786").address == "[::1]:8786"
    for bad, words in [("local", "number of local workers"), ("local:0", "N >= 1"),
                       ("local:x", "scheduler address"), ("", "scheduler address"),
                       ("a b", "scheduler address"), ("2", "scheduler address"),
                       ("foo", "scheduler address")]:
        with pytest.raises(ValueError, match=words):
            parse_scheduler(bad)


def test_resolve_client() -> None:
    assert resolve_client(False) is None
    with pytest.raises(TypeError, match="dask.distributed.Client"):
        resolve_client("tcp://x:1")
    pytest.importorskip("distributed")
    import distributed  # noqa: F401 - loaded, but no client is running

    assert resolve_client(None) is None


def test_a_malformed_scheduler_is_a_usage_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("local:0", "local"):
        with pytest.raises(SystemExit) as exc:
            main(["analyze", str(tmp_path), "--scheduler", bad])
        assert exc.value.code == 2
        assert "--scheduler" in capsys.readouterr().err


@pytest.mark.slow
def test_analyze_report_and_evaluate_on_a_local_cluster(tmp_path: Path, client, monkeypatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``--scheduler local:2`` starts a cluster of worker processes for one command (its own
    process here); ``--scheduler ADDRESS`` uses a running cluster (the test session's, for
    the commands run in this process); an unreachable address is one error line."""
    path = tmp_path / "s.zarr"
    make_blob_store(path, splits=("train", "val", "test"), n_samples=(400, 200, 200),
                    error_rate=0.1, inputs=True)

    def nnsig(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main([str(a) for a in args])
        out = capsys.readouterr()
        return status, out.out, out.err

    status, here, _ = nnsig("analyze", path, "--clusters", "5", "--json", "--name", "here")
    there = subprocess.run([*NNSIG, "analyze", str(path), "--clusters", "5", "--json",
                            "--name", "there", "--scheduler", "local:2"],
                           capture_output=True, text=True, timeout=600)
    assert status == 0 and there.returncode == 0, there.stderr
    a, b = json.loads(here), json.loads(there.stdout)
    for split in a:
        for la, lb in zip(a[split]["layers"], b[split]["layers"], strict=True):
            assert lb["method"] == la["method"]  # one fit, whichever the driver
            assert (la["purity"], la["entropy"]) == (lb["purity"], lb["entropy"])
        assert a[split]["n_signatures"] == b[split]["n_signatures"]
    store = nnsig_core.open_store(path)
    assert store.group("analysis/there/signatures/test") is not None  # written by the workers
    address = client.scheduler.address
    status, out, err = nnsig("evaluate", path, "--analysis", "there", "--validation", "val",
                             "--scheduler", address)
    assert status == 0, err
    assert "Split 'test'" in out and "AUROC" in out and "mahalanobis" in out
    status, _, err = nnsig("report", path, "--analysis", "there", "--out", tmp_path / "rep",
                           "--scheduler", address)
    assert status == 0, err
    assert (tmp_path / "rep" / "index.html").is_file()
    import nnsig_core.execute.client as execute_client

    monkeypatch.setattr(execute_client, "CONNECT_TIMEOUT_S", 1.0)  # refused: retried till then
    status, _, err = nnsig("analyze", path, "--scheduler", "tcp://127.0.0.1:9", "--name", "x")
    assert status == 1 and "Cannot reach the Dask scheduler" in err


@pytest.mark.slow
def test_a_local_cluster_leaves_this_process_s_thread_settings_alone() -> None:
    """Dask's nannies set OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's) for their workers in the
    environment of the process that starts them, where a numeric library loaded afterwards
    ran on one thread (centroids rounded differently from the same command without
    ``--scheduler``); ``connect`` keeps this process's own settings, the workers theirs."""
    import os

    script = (
        "import os, json\n"
        "from nnsig_core.execute.client import connect\n"
        "names = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')\n"
        "if __name__ == '__main__':\n"
        "    with connect('local:1') as client:\n"
        "        inside = {k: os.environ.get(k) for k in names}\n"
        "        worker = list(client.run(lambda: os.environ.get('OMP_NUM_THREADS')).values())\n"
        "    print(json.dumps([inside, worker, {k: os.environ.get(k) for k in names}]))\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    inside, worker, after = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(inside.values()) == {None} and set(after.values()) == {None}
    assert worker == ["1"]
