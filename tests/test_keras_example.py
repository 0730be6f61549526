"""Tests of examples/keras_mnist.py: the IDX reader, the arguments, and main() on a slice of MNIST."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported; TensorFlow is not needed

import gzip
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")

import nnsig_core  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]


def _load_example():
    spec = importlib.util.spec_from_file_location(
        "keras_mnist", REPO / "examples" / "keras_mnist.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["keras_mnist"] = module
    spec.loader.exec_module(module)
    return module


example = _load_example()


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_read_idx_plain_and_gzipped(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(example.read_idx(tmp_path / name), arr)
    (tmp_path / "bad").write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(example.DataError, match="truncated"):
        example.read_idx(tmp_path / "bad")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(example.DataError, match="not an IDX file"):
        example.read_idx(tmp_path / "junk")


def test_parse_classes():
    assert example.parse_classes("0-9") == list(range(10))
    assert example.parse_classes("0-2,7") == [0, 1, 2, 7]
    assert example.parse_classes("5") == [5]
    for bad in ("x", "3-12", ""):
        with pytest.raises(Exception, match="class"):
            example.parse_classes(bad)


def test_missing_files_say_where_to_put_them(tmp_path, caplog):
    rc = example.main(["--data-root", str(tmp_path), "--no-download", "--out", str(tmp_path / "o")])
    assert rc == 1
    assert str(tmp_path / "MNIST" / "raw") in caplog.text and "--data-root" in caplog.text


@pytest.mark.mnist
def test_loads_mnist(mnist_root):  # fixture of conftest.py: skips without MNIST, fails in CI
    data = example.load_mnist(mnist_root, download=False)
    assert data["train"][0].shape == (60000, 28, 28) and data["test"][1].shape == (10000,)
    assert np.bincount(data["test"][1]).tolist()[:3] == [980, 1135, 1032]


@pytest.mark.mnist
@pytest.mark.slow
def test_main_on_a_slice_captures_and_reports(tmp_path, mnist_root, monkeypatch, caplog):
    root = mnist_root
    out = tmp_path / "run"
    args = [
        "--data-root",
        str(root),
        "--no-download",
        "--max-train",
        "1000",
        "--max-test",
        "200",
        "--epochs",
        "1",
        "--train-classes",
        "0-4",
        "--test-classes",
        "0-9",
        "--out",
        str(out),
    ]
    rc = example.main(args)
    store = nnsig_core.open_store(out / "activations.zarr")
    assert sorted(store.splits) == ["test", "train"]
    assert store.layers("train") == ["fc1", "fc2", "fc3"]
    assert store.n_samples("train") == 1000 and store.n_samples("test") == 200
    assert set(np.unique(store.labels("train"))) <= {0, 1, 2, 3, 4}
    assert len(np.unique(store.labels("test"))) == 10
    fc1 = store.activations("train", "fc1")[:]
    assert fc1.shape == (1000, 512) and fc1.min() >= 0  # ReLU outputs
    accuracy = float(np.mean(store.predictions("train") == store.labels("train")))
    assert accuracy > 0.6  # one epoch on five digits
    assert store.inputs("train").shape == (1000, 28, 28)
    try:
        example._analysis_api()
    except ImportError:
        assert rc == example.EXIT_NO_ANALYSIS
    else:
        assert rc == 0
        assert (out / "report" / "index.html").is_file()

    # Run again into the same directory without the analysis: the splits are recaptured,
    # and the script stops after the capture with a clear message and exit status 2.
    def missing():
        raise ImportError("cannot import name 'SignatureAnalysis'")

    monkeypatch.setattr(example, "_analysis_api", missing)
    rc = example.main(args)
    assert rc == example.EXIT_NO_ANALYSIS
    assert "analysis part of nnsig is not available" in caplog.text
    assert nnsig_core.open_store(out / "activations.zarr").n_samples("train") == 1000
