"""``examples/mnist_cnn.py`` end to end on a slice of MNIST: pooled conv maps plus the dense layer."""

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
    spec = importlib.util.spec_from_file_location("mnist_cnn", REPO / "examples" / "mnist_cnn.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["mnist_cnn"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.mnist
@pytest.mark.slow
def test_cnn_example_end_to_end_on_a_slice(mnist_root: Path, tmp_path: Path, capsys) -> None:
    example = _example()
    out = tmp_path / "run"
    argv = ["--data-root", str(mnist_root), "--out", str(out), "--max-train", "2000",
            "--max-test", "400", "--epochs", "1", "--quiet"]
    assert example.main(argv) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "purity" in printed and "report:" in printed

    store = open_store(out / "store.zarr")
    assert store.splits == ["test", "train"]
    assert store.layers("train") == ["features.0", "features.1", "features.2", "classifier.2"]
    info = {d["name"]: d for d in store.layer_info("train")}
    # conv maps averaged over their positions (channels first), the dense layer as it is
    assert info["features.0"]["source_shape"] == [16, 14, 14] and info["features.0"]["shape"] == [16]
    assert info["features.2"]["layout"] == "NCHW" and info["features.2"]["shape"] == [64]
    assert info["classifier.2"]["shape"] == [128] and info["classifier.2"]["pool"] == "none"
    assert store.n_samples("train") == 2000 and store.n_samples("test") == 400

    # the stored values are those of the model, pooled
    import torch

    model = example.small_cnn()
    model.load_state_dict(torch.load(next(out.glob("cnn-*.pt")), weights_only=True))
    model.eval()
    import torchvision

    source = torchvision.datasets.MNIST(str(mnist_root), train=False, download=False)
    idx = store.sample_index("test")[:50]
    with torch.no_grad():
        x = example.normalise(source.data[idx])
        feats = model.features[0](x)
    np.testing.assert_allclose(store.activations("test", "features.0")[:50],
                               feats.mean((2, 3)).numpy(), atol=1e-5)

    data = (out / "report" / "data.js").read_text()
    payload = json.loads(data[data.index("{"): data.rindex("}") + 1])
    assert payload["layers"] == store.layers("train")
    assert [m["shape"] for m in payload["model"]["layers"]] == [[16], [32], [64], [128]]
    assert "scores" in payload["splits"]["test"] and payload.get("thumbnails")
