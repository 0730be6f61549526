"""Reports of several runs side by side: the data, what changed, the API forms and the CLI."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from nnsig_core import open_store
from nnsig_core.analysis import SignatureAnalysis
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.cli import main
from nnsig_core.report import ReportRun, build_report_data, write_report
from nnsig_core.report.spec import normalize_runs

try:
    from test_report_data import decode_png, sprite_cell
except ImportError:  # tests/ is a package
    from tests.test_report_data import decode_png, sprite_cell

K = 4


def read_data(report: Path) -> dict:
    text = (report / "data.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("=") + 1 : text.rindex(";")])


def _model_store(path: Path, error_rate: float, error_seed: int):
    """The same samples (activations, labels, order) with a model's own predictions."""
    from nnsig_core.analysis.synthetic import make_blob_activations
    from nnsig_core.capture import capture_arrays

    store = path
    for i, (split, n) in enumerate((("train", 500), ("test", 300))):
        blobs = make_blob_activations(n_samples=n, n_classes=K, seed=0, sample_seed=1 + i)
        rng = np.random.default_rng(error_seed * 10 + i)
        labels = blobs["labels"]
        preds = labels.copy()
        wrong = rng.random(n) < error_rate
        preds[wrong] = (labels[wrong] + 1) % K
        outputs = np.eye(K, dtype=np.float32)[preds]
        images = (np.arange(n)[:, None, None] % 255 + np.zeros((1, 8, 8))).astype(np.uint8)
        store = capture_arrays(blobs["activations"], outputs=outputs, labels=labels, store=store,
                               split=split, progress=False, inputs=images,
                               class_names=[f"c{c}" for c in range(K)])
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):
    """Two "models" on the same samples (same labels and order, other predictions), and a
    store of other samples."""
    root = tmp_path_factory.mktemp("cmp")
    a = _model_store(root / "a.zarr", error_rate=0.06, error_seed=1)
    b = _model_store(root / "b.zarr", error_rate=0.15, error_seed=2)
    other = make_blob_store(root / "o.zarr", error_rate=0.05, seed=3, n_samples=[500, 250],
                            n_classes=K, inputs=True)
    fit = {name: SignatureAnalysis(n_clusters=K, progress=False).fit(st, "train")
           for name, st in (("a", a), ("b", b), ("o", other))}
    fit["a6"] = SignatureAnalysis(n_clusters=6, random_state=1, progress=False).fit(a, "train")
    for name in ("a", "b", "o"):
        fit[name].save(open_store(root / f"{name}.zarr", mode="r+"), "default")
    fit["a6"].save(open_store(root / "a.zarr", mode="r+"), "k6")
    return {"root": root, "a": open_store(root / "a.zarr"), "b": open_store(root / "b.zarr"),
            "o": open_store(root / "o.zarr"), **{f"fit_{k}": v for k, v in fit.items()}}


@pytest.mark.slow
def test_two_analyses_of_one_store(stores) -> None:
    a, a6, st = stores["fit_a"], stores["fit_a6"], stores["a"]
    data = build_report_data([a, a6], st, map_points=200)
    json.dumps(data, allow_nan=False)
    assert data["format_version"] == 2
    assert [r["label"] for r in data["runs"]] == ["default", "k6"]  # the analyses' names
    assert data["classes"] == ["c0", "c1", "c2", "c3"]
    assert [r["analysis"]["n_clusters"] for r in data["runs"]] == [[K] * 3, [6] * 3]
    cmp = data["comparison"]
    assert cmp["runs"] == [r["label"] for r in data["runs"]]
    for s in ("train", "test"):
        info = cmp["splits"][s]
        assert info["same_samples"] is True and info["reason"] is None
        assert info["changed"]["n_changed"] == 0  # one model: the same predictions
        maps = [r["splits"][s]["map"] for r in data["runs"]]
        assert maps[0]["positions"] == maps[1]["positions"]  # the same samples on both maps
        assert maps[1]["thumbnails"] == {"run": 0}  # stored once
        assert maps[0]["thumbnails"]["shape"] == [8, 8]
    assert data["title"] == " vs ".join(cmp["runs"])


def test_runs_on_the_same_samples_list_what_changed(stores) -> None:
    a, b = stores["fit_a"], stores["fit_b"]
    sa, sb = stores["a"], stores["b"]
    data = build_report_data([(a, sa), (b, sb)], labels=["good", "worse"], map_points=250)
    assert [r["label"] for r in data["runs"]] == ["good", "worse"]
    test = data["comparison"]["splits"]["test"]
    assert test["same_samples"] is True
    labels = sa.labels("test")
    right = np.column_stack([sa.predictions("test") == labels, sb.predictions("test") == labels])
    changed = np.flatnonzero(right[:, 0] != right[:, 1])
    ch = test["changed"]
    assert ch["n_changed"] == changed.size > 10 and ch["truncated"] is False
    assert sorted(s["position"] for s in ch["samples"]) == changed.tolist()
    assert ch["right_in"] == right[changed].sum(axis=0).tolist()
    # right only in the first run is listed first
    first_b = next(i for i, s in enumerate(ch["samples"]) if s["outputs"][1] == s["label"])
    assert all(s["outputs"][0] == s["label"] for s in ch["samples"][:first_b])
    sigs = [a.signatures(sa, "test"), b.signatures(sb, "test")]
    sheet = decode_png(ch["thumbnails"]["png"])
    for k, s in enumerate(ch["samples"]):
        p = s["position"]
        assert s["label"] == labels[p] and s["sample_index"] == sa.sample_index("test")[p]
        assert s["outputs"] == [int(sa.predictions("test")[p]), int(sb.predictions("test")[p])]
        for i, run in enumerate(data["runs"]):
            row = run["splits"]["test"]["rows"][s["rows"][i]]
            assert row["input"] == labels[p] and row["output"] == s["outputs"][i]
            assert row["path"] == sigs[i].cluster_ids[p].tolist()
        np.testing.assert_array_equal(sprite_cell(sheet, ch["thumbnails"], k), sa.inputs("test")[p])
    # The changed samples are on both maps (they fit in the budget), at the same positions.
    maps = [r["splits"]["test"]["map"] for r in data["runs"]]
    assert set(changed) <= set(maps[0]["positions"]) and maps[0]["positions"] == maps[1]["positions"]
    assert maps[0]["kinds"]["changed"] == [changed.size, changed.size]
    # One set of points for both runs: its misclassified are those of either run, and say so.
    either = (sa.labels("test") != sa.predictions("test")) | (
        sb.labels("test") != sb.predictions("test"))
    assert maps[0]["kinds"]["misclassified"][0] == int(either.sum())
    assert maps[0]["kinds_in"] == maps[1]["kinds_in"] == "either run"


def test_runs_on_other_samples_say_why_and_keep_their_own_maps(stores) -> None:
    data = build_report_data([(stores["fit_a"], stores["a"]), (stores["fit_o"], stores["o"])],
                             map_points=100)
    test = data["comparison"]["splits"]["test"]
    assert test["same_samples"] is False and "changed" not in test
    assert "300 samples" in test["reason"] and "250" in test["reason"]
    train = data["comparison"]["splits"]["train"]
    # Same count and sample_index (0..499), other data: told apart by the labels.
    assert train["same_samples"] is False and "the labels of 'train' differ" in train["reason"]
    for run, st in zip(data["runs"], (stores["a"], stores["o"]), strict=True):
        m = run["splits"]["test"]["map"]
        sheet = decode_png(m["thumbnails"]["png"])
        np.testing.assert_array_equal(sprite_cell(sheet, m["thumbnails"], 3),
                                      st.inputs("test")[m["positions"][3]])


def test_runs_need_the_same_classes(stores, tmp_path: Path) -> None:
    from nnsig_core.analysis.synthetic import make_blob_activations
    from nnsig_core.capture import capture_arrays

    blobs = make_blob_activations(n_samples=200, n_classes=K)
    other = capture_arrays(blobs["activations"], outputs=blobs["outputs"], labels=blobs["labels"],
                           store=tmp_path / "names.zarr", split="train", progress=False,
                           class_names=["cat", "dog", "cow", "hen"])
    fit = SignatureAnalysis(n_clusters=K, progress=False).fit(other, "train")
    with pytest.raises(ValueError, match="name class 0 differently .'c0' vs 'cat'."):
        build_report_data([(stores["fit_a"], stores["a"]), (fit, other)], splits=("train",))


def test_the_forms_of_runs_and_their_errors(stores) -> None:
    a, b, st = stores["fit_a"], stores["fit_b"], stores["a"]
    runs, several = normalize_runs(a, st)
    assert several is False and runs[0].store is not None and runs[0].label == "default"
    runs, several = normalize_runs([a, (b, stores["b"]), ReportRun(a, st, label="again")], st)
    assert several and [r.label for r in runs][2] == "again"
    assert len({r.label for r in runs}) == 3
    runs, _ = normalize_runs([(a, st, {"test": np.zeros(300)}), b], stores["b"])
    assert runs[0].scores is not None and runs[1].store is not None
    with pytest.raises(ValueError, match="empty list of runs"):
        normalize_runs([], st)
    with pytest.raises(ValueError, match="at most 4 runs"):
        normalize_runs([a] * 5, st)
    with pytest.raises(TypeError, match="give scores as a list"):
        normalize_runs([a, b], st, scores={"test": np.zeros(300)})
    with pytest.raises(ValueError, match="2 score mappings for 3 runs"):
        normalize_runs([a, b, a], st, scores=[None, None])
    with pytest.raises(ValueError, match="run 2 has no store"):
        normalize_runs([(a, st), b])
    with pytest.raises(ValueError, match="1 labels for 2 runs"):
        normalize_runs([a, b], st, labels=["x"])
    with pytest.raises(TypeError, match="run 2 of the report is a str"):
        normalize_runs([a, "b"], st)
    with pytest.raises(ValueError, match="run 1 got scores twice"):
        normalize_runs([(a, st, {"test": np.zeros(300)})], scores=[{"test": np.zeros(300)}])


def test_write_report_of_runs_and_its_marker(stores, tmp_path: Path) -> None:
    index = write_report([stores["fit_a"], stores["fit_a6"]], stores["a"], tmp_path / "r",
                         map_points=50, labels=["k=4", "k=6"])
    marker = json.loads((index.parent / "nnsig-report.json").read_text())
    assert [r["label"] for r in marker["runs"]] == ["k=4", "k=6"]
    assert marker["splits"]["test"]["n_samples"] == 300
    assert read_data(index.parent)["runs"][1]["label"] == "k=6"
    with pytest.raises(TypeError, match="needs out_dir"):
        write_report(stores["fit_a"], stores["a"])


def test_cli_reports_several_analyses_and_several_stores(stores, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = stores["root"]
    a = str(root / "a.zarr")
    assert main(["report", a, "--analysis", "default", "--analysis", "k6", "--out",
                 str(tmp_path / "two"), "--map-points", "40"]) == 0
    assert "comparing 2 runs" in capsys.readouterr().out
    data = read_data(tmp_path / "two")
    assert [r["analysis"]["name"] for r in data["runs"]] == ["default", "k6"]
    assert data["runs"][0]["splits"]["test"]["map"]["n_points"] == 40
    assert main(["report", a, str(root / "b.zarr"), "--label", "A", "--label", "B", "--out",
                 str(tmp_path / "stores")]) == 0
    # A second report beside the first: the parent's run selector, said out loud.
    assert f"run selector:   {tmp_path.resolve() / 'index.html'}" in capsys.readouterr().out
    data = read_data(tmp_path / "stores")
    assert [r["label"] for r in data["runs"]] == ["A", "B"]
    assert data["comparison"]["splits"]["test"]["changed"]["n_changed"] > 0
    assert main(["report", a, "--map-points", "0", "--out", str(tmp_path / "one")]) == 0
    one = read_data(tmp_path / "one")
    assert "runs" not in one and "map" not in one["splits"]["test"]
    capsys.readouterr()
    # Runs that do not pair up are usage errors (exit 2), as argparse's own.
    for bad, says in (
            ([a, str(root / "b.zarr"), "--analysis", "default", "--analysis", "k6", "--analysis",
              "x"], "2 stores and 3 --analysis"),
            ([a, "--label", "x"], "--label names the runs of a comparison"),
            ([a, str(root / "b.zarr"), "--label", "A"], "1 --label for 2 runs"),
            ([a, "--map-points", "-5"], "--map-points: must be at least 0")):
        with pytest.raises(SystemExit) as exit_:
            main(["report", *bad, "--out", str(tmp_path / "bad")])
        assert exit_.value.code == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_sprite_keys_are_base64_pngs(stores) -> None:
    data = build_report_data(stores["fit_a"], stores["a"], map_points=20)
    for sprite in (data["thumbnails"], data["splits"]["test"]["map"]["thumbnails"]):
        assert base64.b64decode(sprite["png"])[:4] == b"\x89PNG"
