"""build_report_data: the JSON contract of docs/report-data.md."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from nnsig_core import open_store
from nnsig_core.analysis import SignatureAnalysis
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.report import build_report_data

K = 4


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("report") / "r.zarr"
    store = make_blob_store(path, n_samples=400, n_classes=K, error_rate=0.1, inputs=True)
    # Three seen classes, three clusters; class 3 stays unseen.
    analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train",
                                                                     classes=[0, 1, 2])
    return analysis, open_store(path)


def test_structure_and_counts(fitted) -> None:
    analysis, store = fitted
    data = build_report_data(analysis, store, title="Blobs")
    data = json.loads(json.dumps(data, allow_nan=False))  # strictly JSON-serialisable
    assert data["format_version"] == 1 and data["title"] == "Blobs"
    assert data["classes"] == ["c0", "c1", "c2", "c3"]
    assert data["train_classes"] == [0, 1, 2]
    assert data["layers"] == ["layer0", "layer1", "layer2"]
    assert [lay["name"] for lay in data["model"]["layers"]] == data["layers"]
    assert data["model"]["layers"][2] == {"name": "layer2", "type": "unknown", "shape": [2, 3],
                                          "units": 6, "parameters": 0}
    a = data["analysis"]
    assert a["n_clusters"] == [3] * 3 and a["fit_split"] == "train"
    assert a["fit_samples"] == analysis.n_fit_samples_ and a["only_correct"] is True
    assert set(data["splits"]) == {"train", "test"}
    for name, split in data["splits"].items():
        n = store.n_samples(name)
        assert split["n_samples"] == n
        assert sum(r["count"] for r in split["rows"]) == n
        counts = [r["count"] for r in split["rows"]]
        assert counts == sorted(counts, reverse=True)
        assert all(len(r["path"]) == 3 and r["score"] is None for r in split["rows"])
        assert split["n_signatures"] == len({tuple(r["path"]) for r in split["rows"]})
        labels, preds = store.labels(name), store.predictions(name)
        assert split["accuracy"] == pytest.approx(float((labels == preds).mean()), abs=1e-6)
        assert len(split["purity"]) == len(split["entropy"]) == 3
        for layer in split["clusters"]:
            assert [c["id"] for c in layer] == list(range(3))
            assert sum(c["count"] for c in layer) == n
            assert sum(sum(c["by_class"]) for c in layer) == n
            assert all(len(c["by_class"]) == K for c in layer)
            for c in layer:
                assert len(c["exemplars"]) <= 4
                assert all(k.startswith(name + "/") for k in c["exemplars"])


def test_typical_clusters_and_misclassification_focus(fitted) -> None:
    analysis, store = fitted
    data = build_report_data(analysis, store)
    typical = data["typical"]
    assert len(typical) == 3 and all(len(per_class) == K for per_class in typical)
    for per_class in typical:
        for c in (0, 1, 2):
            assert len(per_class[c]) == 1  # one blob = one cluster per seen class
        assert per_class[3] == []  # unseen class
    # A seen class follows its typical clusters in every layer.
    for row in data["splits"]["test"]["rows"]:
        if row["input"] in (0, 1, 2):
            assert all(row["path"][j] in typical[j][row["input"]] for j in range(3))


def test_thumbnails_of_exemplars_only(fitted) -> None:
    analysis, store = fitted
    data = build_report_data(analysis, store)
    thumbs = data["thumbnails"]
    assert thumbs["shape"] == [8, 8]
    keys = {k for s in data["splits"].values() for layer in s["clusters"] for c in layer
            for k in c["exemplars"]}
    assert set(thumbs["images"]) == keys
    key = next(iter(keys))
    split, row = key.split("/")
    pix = np.frombuffer(base64.b64decode(thumbs["images"][key]), dtype=np.uint8).reshape(8, 8)
    np.testing.assert_array_equal(pix, store.inputs(split)[int(row)])


def test_no_thumbnails_without_inputs(tmp_path: Path) -> None:
    store = make_blob_store(tmp_path / "n.zarr", n_samples=100)
    a = SignatureAnalysis(n_clusters=K, progress=False).fit(store)
    assert "thumbnails" not in build_report_data(a, store)


def test_scores_histograms_and_row_means(fitted) -> None:
    analysis, store = fitted
    n = store.n_samples("test")
    scores = np.linspace(0, 1, n)
    scores[5] = np.nan
    data = build_report_data(analysis, store, scores={"test": scores}, score_bins=10)
    json.dumps(data, allow_nan=False)
    test, train = data["splits"]["test"], data["splits"]["train"]
    assert "scores" not in train and all(r["score"] is None for r in train["rows"])
    sc = test["scores"]
    assert sc["name"] == "combined" and len(sc["bins"]) == 11 and sc["bins"][0] == 0.0
    labels = store.labels("test")
    unseen = int((labels == 3).sum())
    assert sum(sc["counts"]["unseen"]) == unseen - (labels[5] == 3)
    total = sum(sum(v) for v in sc["counts"].values())
    assert total == n - 1
    assert all(r["score"] is not None for r in test["rows"])
    with pytest.raises(ValueError, match="one score per sample"):
        build_report_data(analysis, store, scores={"test": scores[:-1]})


def test_missing_split_is_skipped_with_a_warning(fitted, caplog: pytest.LogCaptureFixture) -> None:
    analysis, store = fitted
    with caplog.at_level(logging.WARNING, logger="nnsig"):
        data = build_report_data(analysis, store, splits=("train", "validation"))
    assert set(data["splits"]) == {"train"}
    assert "validation" in caplog.text


def test_saved_analysis_name_and_size(tmp_path: Path) -> None:
    path = tmp_path / "m.zarr"
    make_blob_store(path, n_samples=3000, error_rate=0.02, inputs=True, chunk_bytes=1 << 16)
    store = open_store(path, mode="r+")
    SignatureAnalysis(n_clusters=10, progress=False).fit(store).save(store, "mine",
                                                                     splits=["train", "test"])
    loaded = SignatureAnalysis.load(open_store(path), "mine")
    data = build_report_data(loaded, open_store(path))
    assert data["analysis"]["name"] == "mine"
    assert len(json.dumps(data)) < 200_000


def test_the_report_writer_accepts_it(fitted, tmp_path: Path) -> None:
    report = pytest.importorskip("nnsig_core.report")
    analysis, store = fitted
    index = report.write_report_data(build_report_data(analysis, store), tmp_path / "rep")
    assert index.is_file()
