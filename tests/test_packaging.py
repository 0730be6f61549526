"""The wheel ships the right packages and the viewer, and nothing called adapters/viewer."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {"nnsig_core", "nnsig_torch", "nnsig_keras"} <= tops
    assert "adapters" not in tops and "viewer" not in tops
    assert "nnsig_core/_viewer/index.html" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "nnsig = nnsig_core.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_finds_its_viewer(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    code = (
        "import nnsig_core, nnsig_core.report as r; "
        "print(nnsig_core.__file__); print(r.viewer_dir())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
    ).stdout.split()
    assert out[0].startswith(str(target))
    assert Path(out[1]) == target / "nnsig_core" / "_viewer"
    assert (Path(out[1]) / "index.html").is_file()


def test_source_checkout_finds_viewer() -> None:
    from nnsig_core.report import viewer_dir

    assert (viewer_dir() / "index.html").is_file()
