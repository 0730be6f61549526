"""The report of a run on a Dask cluster: every figure a reduction there, the same report."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("distributed")

import dask.array as da  # noqa: E402

from nnsig_core import open_store  # noqa: E402
from nnsig_core.analysis import (
    SignatureAnalysis,  # noqa: E402
    Signatures,  # noqa: E402
)
from nnsig_core.analysis.synthetic import make_blob_store  # noqa: E402
from nnsig_core.diagnostics import signature_scores  # noqa: E402
from nnsig_core.report import build_report_data  # noqa: E402
from nnsig_core.report.points import select_points  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "r.zarr"
    make_blob_store(path, splits=("train", "val", "test"), n_samples=(900, 400, 500),
                    chunk_bytes=4096, inputs=True, error_rate=0.12, separation=5.0, noise=1.5)
    store = open_store(path, mode="r+")
    analysis = SignatureAnalysis(n_clusters=5, progress=False).fit(store, client=False)
    analysis.save(store, "a")
    for s in ("train", "test"):  # the validation split is scored and saved with them
        signature_scores(analysis, store, s, validation_split="val", save=True, client=False)
    return analysis, open_store(path)


def _no_whole_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a split's signatures are brought to the driver whole."""
    compute = Signatures.compute

    def refuse(self):
        if self.lazy:
            raise AssertionError(f"the signatures of {self.split!r} were brought to the driver")
        return compute(self)

    monkeypatch.setattr(Signatures, "compute", refuse)


def _same(a: dict, b: dict) -> None:
    a, b = dict(a), dict(b)
    a.pop("created"), b.pop("created")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.slow
def test_the_report_on_the_cluster_is_the_report_here(client, run, monkeypatch) -> None:
    analysis, store = run
    # The saved scores: read here, or read on the cluster.
    a = build_report_data(analysis, store, splits=("train", "test"), client=False,
                          map_points=150)
    _no_whole_split(monkeypatch)
    b = build_report_data(analysis, store, splits=("train", "test"), client=client,
                          map_points=150)
    _same(a, b)
    # The scorer's conformal threshold, calibrated on held-out samples of the validation split.
    assert b["threshold"]["split"] == "val" and b["threshold"]["kind"] == "conformal"
    assert b["splits"]["test"]["map"]["kinds"]["flagged"][0] > 0
    assert b["splits"]["test"]["scores"]["at_threshold"]["flagged"]["correct"] > 0


@pytest.mark.slow
def test_a_comparison_on_the_cluster_is_the_comparison_here(client, run, tmp_path,
                                                           monkeypatch) -> None:
    from test_report_compare import _model_store

    analysis, store = run
    a = open_store(_model_store(tmp_path / "a.zarr", error_rate=0.06, error_seed=1))
    b = open_store(_model_store(tmp_path / "b.zarr", error_rate=0.15, error_seed=2))
    runs = [(SignatureAnalysis(n_clusters=4, progress=False).fit(st, client=False), st)
            for st in (a, b)] + [(analysis, store)]
    here = build_report_data(runs, splits=("test",), client=False, map_points=100)
    _no_whole_split(monkeypatch)
    there = build_report_data(runs, splits=("test",), client=client, map_points=100)
    _same(here, there)
    info = there["comparison"]["splits"]["test"]
    assert not info["same_samples"] and "samples" in info["reason"]  # the third run's store
    two = build_report_data(runs[:2], splits=("test",), client=client, map_points=100)
    _same(build_report_data(runs[:2], splits=("test",), client=False, map_points=100), two)
    changed = two["comparison"]["splits"]["test"]["changed"]
    assert changed["n_changed"] > 0 and len(changed["samples"]) == changed["n_changed"]


@pytest.mark.parametrize("blocks", [97, 500, 5000])
def test_the_map_draw_does_not_depend_on_the_blocks(client, blocks) -> None:
    rng = np.random.default_rng(blocks)
    n = 5000
    labels = rng.integers(-1, 6, size=n)
    preds = rng.integers(0, 6, size=n)
    mis = (labels >= 0) & (labels != preds) & (rng.random(n) < 0.3)
    flag = rng.random(n) < 0.05
    want = select_points(labels, preds, {"misclassified": mis, "flagged": flag}, 400, seed=2,
                         chunk_rows=50)
    lazy = [da.from_array(x, chunks=blocks) for x in (labels, preds, mis, flag)]
    got = select_points(lazy[0], lazy[1], {"misclassified": lazy[2], "flagged": lazy[3]}, 400,
                        seed=2, chunk_rows=50, client=client)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]


@pytest.mark.slow
def test_nnsig_report_with_a_scheduler(client, run, tmp_path, monkeypatch) -> None:
    from nnsig_core.cli.main import main
    from nnsig_core.report.write import DATA_FILE

    analysis, store = run
    _no_whole_split(monkeypatch)
    out = tmp_path / "report"
    assert main(["report", store.location, "--analysis", "a", "--out", str(out),
                 "--scheduler", client.scheduler.address]) == 0
    text = (out / DATA_FILE).read_text()
    data = json.loads(text[text.index("{"): text.rindex("}") + 1])
    assert data["threshold"]["split"] == "val"  # the saved scorer's conformal threshold
    assert set(data["splits"]) == {"train", "val", "test"}
