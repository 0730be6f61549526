"""The main job, ``examples/mnist_torch.py``, end to end on a small slice of MNIST."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from nnsig_core import open_store

REPO = Path(__file__).resolve().parents[1]
# Skipped without them, found without importing them (collection stays light).
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("torch", "torchvision")),
    reason="needs torch and torchvision")


def _example():
    spec = importlib.util.spec_from_file_location("mnist_torch", REPO / "examples" / "mnist_torch.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["mnist_torch"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.mnist
@pytest.mark.slow
def test_example_end_to_end_on_a_slice(mnist_root: Path, tmp_path: Path, capsys) -> None:
    example = _example()
    out = tmp_path / "run"
    argv = ["--data-root", str(mnist_root), "--out", str(out), "--max-train", "3000",
            "--max-test", "600", "--epochs", "1", "--train-classes", "0-4", "--val", "500",
            "--quiet"]
    assert example.main(argv) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "purity" in printed
    assert "nnsig view" in printed and "report:" in printed

    store = open_store(out / "store.zarr")
    assert store.splits == ["test", "train", "val"]
    assert store.is_complete("train") and store.is_complete("test")
    assert store.layers("train") == ["relu1", "relu2", "relu3"]
    assert store.n_samples("train") == 2500 and store.n_samples("test") == 600
    assert store.n_samples("val") == 500  # held out of the 3,000 training images
    # Only digits 0-4 were trained on; the test split holds all ten.
    assert set(np.unique(store.labels("train"))) <= {0, 1, 2, 3, 4}
    assert set(np.unique(store.labels("test"))) > {0, 1, 2, 3, 4}
    # sample_index points into the source data set: labels agree with MNIST's own.
    import torchvision

    source = torchvision.datasets.MNIST(str(mnist_root), train=False, download=False)
    idx = store.sample_index("test")
    np.testing.assert_array_equal(source.targets.numpy()[idx], store.labels("test"))
    assert store.inputs("test") is not None and store.inputs("test").shape[1:] == (28, 28)
    assert "default" in store.analyses

    report = out / "report"
    assert (report / "index.html").is_file()
    data = (report / "data.js").read_text()
    payload = json.loads(data[data.index("{"): data.rindex("}") + 1])
    assert payload["train_classes"] == [0, 1, 2, 3, 4]
    assert "scores" in payload["splits"]["test"] and "scores" in payload["splits"]["val"]
    assert list(payload["splits"]) == ["train", "test", "val"] and payload["open_split"] == "test"
    assert payload["threshold"]["kind"] == "conformal" and payload["threshold"]["split"] == "val"

    # A rerun reuses the cached weights instead of training again.
    weights = list(out.glob("mlp-*.pt"))
    assert len(weights) == 1
    mtime = weights[0].stat().st_mtime
    assert example.main(argv) == 0
    assert weights[0].stat().st_mtime == mtime


def test_missing_data_says_where_to_put_it(tmp_path: Path, monkeypatch) -> None:
    example = _example()
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(SystemExit, match="MNIST/raw"):
        example.main(["--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])


def test_idx_files_are_read_without_torchvision(tmp_path: Path) -> None:
    """MNIST files on disk are parsed by the example itself, shapes from their headers;
    a file that is not IDX, or is cut short, is named with the fix."""
    example = _example()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    header = b"\x00\x00\x08\x03" + np.array([7, 28, 28], ">u4").tobytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(
        b"\x00\x00\x08\x01" + np.array([7], ">u4").tobytes() + labels.tobytes())
    x, y = example.load_mnist(tmp_path, train=False)
    np.testing.assert_array_equal(x.numpy(), images)
    np.testing.assert_array_equal(y.numpy(), labels)
    assert str(y.dtype) == "torch.int64"

    (raw / "t10k-images-idx3-ubyte").write_bytes(header + images.tobytes()[:-5])
    with pytest.raises(SystemExit, match="truncated; delete it"):
        example.load_mnist(tmp_path, train=False)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(SystemExit, match="not an IDX file"):
        example.load_mnist(tmp_path, train=False)
