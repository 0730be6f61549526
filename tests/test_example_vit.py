"""``examples/vit_mnist.py`` end to end on a slice: CLS-level and token-level signatures, two reports."""

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
    spec = importlib.util.spec_from_file_location("vit_mnist", REPO / "examples" / "vit_mnist.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["vit_mnist"] = module
    spec.loader.exec_module(module)
    return module


def _payload(report: Path) -> dict:
    data = (report / "data.js").read_text()
    return json.loads(data[data.index("{"): data.rindex("}") + 1])


@pytest.mark.mnist
@pytest.mark.slow
def test_vit_example_end_to_end_on_a_slice(mnist_root: Path, tmp_path: Path, capsys) -> None:
    example = _example()
    out = tmp_path / "run"
    argv = ["--data-root", str(mnist_root), "--out", str(out), "--max-train", "1500",
            "--max-capture", "600", "--max-test", "300", "--epochs", "1", "--quiet"]
    assert example.main(argv) == 0
    printed = capsys.readouterr().out
    assert "CLS token per image" in printed and "every token" in printed
    assert "patch r0 c0" in printed

    store = open_store(out / "store.zarr")
    assert store.splits == ["test", "test.tokens", "train", "train.tokens"]
    blocks = [f"encoder.layers.{i}" for i in range(4)]
    assert store.layers("train") == blocks and store.layers("train.tokens") == blocks
    assert store.n_samples("train") == 600 and store.n_samples("train.tokens") == 600 * 17
    assert store.level("test.tokens") == "tokens" and store.token_split("test") == "test.tokens"
    info = store.layer_info("test")[0]
    assert info["layout"] == "NLC" and info["source_shape"] == [17, 64] and info["shape"] == [64]
    rows = store.token_rows("test.tokens")
    assert np.array_equal(rows["position"][:17], np.arange(17))
    assert np.array_equal(rows["sample_row"], np.repeat(np.arange(300), 17))
    # the CLS row of the token space is the CLS-level row of its image
    np.testing.assert_array_equal(store.activations("test.tokens", "encoder.layers.3")[::17],
                                  store.activations("test", "encoder.layers.3")[:])
    np.testing.assert_array_equal(store.labels("test.tokens"), np.repeat(store.labels("test"), 17))
    assert set(store.analyses) == {"cls", "tokens"}

    reports = out / "report"
    assert (reports / "index.html").is_file()
    cls, tok = _payload(reports / "cls"), _payload(reports / "tokens")
    assert cls["layers"] == blocks and "level" not in cls["splits"]["test"]
    entry = tok["splits"]["test.tokens"]
    assert entry["level"] == "tokens" and entry["n_samples"] == 300 * 17
    labels = {t[0] for row in entry["rows"] for t in row.get("tokens", [])}
    assert "CLS" in labels and any(x.startswith("patch r") for x in labels)
    assert sum(row["count"] for row in entry["rows"]) == 300 * 17
    thumbs = tok["thumbnails"]
    assert thumbs["shape"] == [28, 28] and any(k.startswith("test.tokens/") for k in thumbs["keys"])
