"""The analysis on real MNIST digits, through a fixed random ReLU network (no framework needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnsig_core import capture_arrays, open_store
from nnsig_core.analysis import SignatureAnalysis
from nnsig_core.report import build_report_data

pytestmark = [pytest.mark.mnist, pytest.mark.slow]


def _idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="module")
def mnist_store(mnist_root: Path, tmp_path_factory: pytest.TempPathFactory):
    raw = mnist_root / "MNIST" / "raw"
    images = {"train": _idx(raw / "train-images-idx3-ubyte")[:6000],
              "test": _idx(raw / "t10k-images-idx3-ubyte")[:1500]}
    labels = {"train": _idx(raw / "train-labels-idx1-ubyte")[:6000].astype(np.int64),
              "test": _idx(raw / "t10k-labels-idx1-ubyte")[:1500].astype(np.int64)}
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(784, 256)).astype(np.float32) / 10
    w2 = rng.normal(size=(256, 64)).astype(np.float32) / 16

    def hidden(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h1 = np.maximum(x.reshape(len(x), -1).astype(np.float32) / 255 @ w1, 0)
        return h1, np.maximum(h1 @ w2, 0)

    def design(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        return np.c_[h1, h2, np.ones(len(h1), np.float32)]

    a = design(*hidden(images["train"]))
    onehot = np.eye(10, dtype=np.float32)[labels["train"]]
    w_out = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ onehot)  # ridge read-out
    path = tmp_path_factory.mktemp("mnist") / "m.zarr"
    for split in ("train", "test"):
        h1, h2 = hidden(images[split])
        out = design(h1, h2) @ w_out
        capture_arrays(activations={"relu1": h1, "relu2": h2}, outputs=out, labels=labels[split],
                       store=path, split=split, inputs=images[split],
                       class_names=[str(c) for c in range(10)], progress=False)
    return open_store(path)


def test_mnist_signatures(mnist_store, tmp_path: Path) -> None:
    store = mnist_store
    acc = float((store.labels("test") == store.predictions("test")).mean())
    assert acc > 0.75  # a linear read-out of random ReLU features
    a = SignatureAnalysis(n_clusters=10, progress=False).fit(store, "train")
    test = a.transform(store, "test")
    assert test.n_samples == 1500 and 10 <= test.n_signatures < 1500
    assert (test.purity() > 0.3).all() and (test.purity() <= 1).all()  # chance: about 0.11
    # Out of core, Lloyd's iterations from a sample's KMeans find a partition about as tight
    # as exact KMeans'.
    s = SignatureAnalysis(n_clusters=10, memory_limit="1MB", progress=False).fit(store, "train")
    assert {lc.method_ for lc in s.clusterers_.values()} == {"lloyd"}
    for name in a.layers_:
        ratio = s.clusterers_[name].inertia_ / a.clusterers_[name].inertia_
        assert ratio < 1.1, (name, ratio)
    assert (s.transform(store, "test").purity() > 0.3).all()
    # Binned activations, as the prototype did.
    b = SignatureAnalysis(n_clusters=10, discretizer="uniform:10", progress=False).fit(store)
    assert (b.transform(store, "test").purity() > 0.25).all()
    data = build_report_data(a, store)
    size = len(json.dumps(data))
    assert size < 1_000_000
    assert data["thumbnails"]["shape"] == [28, 28]
