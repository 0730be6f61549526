"""The built wheel is a complete package: installed on its own (outside this checkout) it
imports from where it was installed, says its version, ships its py.typed markers, licence
and viewer (and nothing called adapters or viewer at the top), and writes a report with
that viewer. The wheel is built once for the module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

pytest.importorskip("hatchling", reason="the build backend (dev extra) is not installed")


def _project_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml has no version"
    return match.group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True,
    )
    (path,) = out.glob("nnsig-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed alone into a directory of its own (its dependencies are this
    interpreter's)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    return target


def _run(installed: Path, cwd: Path, *args: str) -> str:
    """Run with only the installed wheel ahead of this interpreter's packages, from a
    directory outside the checkout, so that no source of the checkout is imported."""
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONNOUSERSITE": "1"}
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_wheel_ships_typed_packages_its_licence_and_the_whole_viewer(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert "adapters" not in tops and "viewer" not in tops  # the checkout's folders, not packages
    for package in ("nnsig_core", "nnsig_torch", "nnsig_keras"):
        assert f"{package}/py.typed" in names, package
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "nnsig = nnsig_core.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names)
    viewer = {p.name for p in (REPO / "viewer").iterdir() if p.is_file()}
    assert {"index.html", "runs-index.html", "app.js", "style.css"} <= viewer
    missing = [f for f in viewer if f"nnsig_core/_viewer/{f}" not in names]
    assert not missing, f"viewer files missing from the wheel: {missing}"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert f"\nVersion: {_project_version()}\n" in text
    for url in ("Homepage", "Documentation", "Source", "Changelog"):
        assert f"Project-URL: {url}, https://" in text, url


def test_the_installed_wheel_is_what_is_imported_and_says_its_version(
    installed: Path, tmp_path: Path
) -> None:
    code = textwrap.dedent("""
        import importlib.metadata, nnsig_core, nnsig_torch
        import nnsig_core.report as report
        print(nnsig_core.__file__)
        print(nnsig_torch.__file__)
        print(report.viewer_dir())
        print(nnsig_core.__version__)
        print(importlib.metadata.version("nnsig"))
    """)
    core, torch_adapter, viewer, version, meta = _run(
        installed, tmp_path, sys.executable, "-c", code).split()
    for path in (core, torch_adapter, viewer):
        assert Path(path).is_relative_to(installed), path
    assert Path(viewer) == installed / "nnsig_core" / "_viewer"
    assert version == meta == _project_version()


def test_the_nnsig_command_says_the_version(installed: Path, tmp_path: Path) -> None:
    expected = f"nnsig {_project_version()}"
    assert _run(installed, tmp_path, sys.executable, "-m", "nnsig_core",
                "--version").strip() == expected
    script = installed / "bin" / "nnsig"  # the console script pip wrote for the wheel
    assert script.is_file()
    assert _run(installed, tmp_path, sys.executable, str(script),
                "--version").strip() == expected


def test_the_installed_wheel_writes_a_report_with_its_own_viewer(
    installed: Path, tmp_path: Path
) -> None:
    code = textwrap.dedent("""
        import sys, warnings
        import numpy as np
        from nnsig_core import NnsigWarning, SignatureAnalysis, capture_arrays, open_store
        from nnsig_core import write_report

        warnings.simplefilter("ignore", NnsigWarning)
        rng = np.random.default_rng(0)
        for split, n in (("train", 300), ("test", 100)):
            y = rng.integers(0, 3, n)
            a = rng.normal(size=(n, 8)) + y[:, None]
            b = rng.normal(size=(n, 4)) + y[:, None]
            logits = np.eye(3)[y] + 0.1 * rng.normal(size=(n, 3))
            capture_arrays({"a": a, "b": b}, outputs=logits, labels=y, store="run.zarr",
                           split=split, progress=False)
        store = open_store("run.zarr", mode="r+")
        analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
        print(write_report(analysis, store, "report"))
    """)
    # A mark in the installed viewer only: the report must carry it.
    shipped = installed / "nnsig_core" / "_viewer" / "style.css"
    mark = "/* the installed wheel's viewer */\n"
    if mark not in shipped.read_text():
        shipped.write_text(shipped.read_text() + mark)
    index = tmp_path / Path(_run(installed, tmp_path, sys.executable, "-c", code).strip())
    assert index == tmp_path / "report" / "index.html" and index.is_file()
    assert (tmp_path / "report" / "style.css").read_text().endswith(mark)
    assert (tmp_path / "report" / "data.js").is_file()
    assert (tmp_path / "report" / "viewer.js").is_file()


def test_a_source_checkout_finds_the_viewer() -> None:
    from nnsig_core.report import viewer_dir

    assert (viewer_dir() / "index.html").is_file()
