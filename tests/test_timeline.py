"""The training timeline: clusters matched between checkpoints, the Timeline analysis and its
report data (tracking on exact ids; the analysis on checkpoints written as arrays)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from nnsig_core import open_store
from nnsig_core.analysis import AnalysisError
from nnsig_core.analysis.timeline import Timeline
from nnsig_core.analysis.tracking import assign_tracks, match_clusters, overlap_table
from nnsig_core.capture import capture_arrays, list_checkpoints
from nnsig_core.capture.probe import CHECKPOINT_KEY, checkpoint_split
from nnsig_core.report import show
from nnsig_core.report.timeline import (
    build_timeline_data,
    encode_u16,
    timeline_section,
    write_timeline_report,
)
from nnsig_core.report.write import js_json

# --------------------------------------------------------------------------- tracking


def test_overlap_table_counts_shared_members():
    before = np.array([0, 0, 1, 1, 2])
    after = np.array([1, 1, 0, 2, 2])
    C = overlap_table(before, after, 3, 3)
    assert C.tolist() == [[0, 2, 0], [1, 0, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="samples"):
        overlap_table(before, after[:3], 3, 3)


def test_a_relabelled_clustering_is_matched_one_to_one():
    rng = np.random.default_rng(0)
    before = rng.integers(0, 6, 600)
    perm = rng.permutation(6)
    m = match_clusters(overlap_table(before, perm[before], 6, 6))
    assert sorted(m["pairs"]) == sorted((i, int(perm[i])) for i in range(6))
    assert m["splits"] == [] and m["merges"] == []
    assert all(j == 1.0 for j in m["jaccard"])


def test_a_split_and_a_merge_are_named():
    # cluster 0 (40 samples) splits into 0 and 2; clusters 1 and 3 merge into 1
    before = np.array([0] * 40 + [1] * 20 + [3] * 20)
    after = np.array([0] * 20 + [2] * 20 + [1] * 40)
    m = match_clusters(overlap_table(before, after, 4, 3))
    assert m["splits"] == [(0, [0, 2])]
    assert m["merges"] == [([1, 3], 1)]
    assert (0, 0) in m["pairs"] or (0, 2) in m["pairs"]


def test_an_unrelated_pairing_is_not_a_continuation():
    # the Hungarian assignment must pair cluster 1 with cluster 1, but they share 1 of 30
    before = np.array([0] * 30 + [1] * 30)
    after = np.array([0] * 30 + [1] + [0] * 29)
    m = match_clusters(overlap_table(before, after, 2, 2), min_jaccard=0.2)
    assert m["pairs"] == [(0, 0)]


def test_tracks_keep_their_id_while_a_cluster_persists():
    base = np.repeat(np.arange(3), 20)
    ids = [base, np.array([2, 0, 1])[base], np.array([1, 2, 0])[base]]
    split = ids[2].copy()
    split[:10] = 3  # half of the first cluster becomes a cluster of its own
    ids.append(split)
    tracks, events, n = assign_tracks(ids, [3, 3, 3, 4])
    # the samples of each original cluster keep their track through the relabellings
    for t in range(3):
        assert (tracks[t][ids[t]] == base).all()
    assert n == 4
    assert tracks[3][3] == 3  # the new part is a new track
    assert events[0] == []
    kinds = [e["kind"] for e in events[3]]
    assert "split" in kinds
    split_ev = next(e for e in events[3] if e["kind"] == "split")
    assert split_ev["from"] == [0] and sorted(split_ev["to"]) == [0, 3]
    assert events[1][-1] == {"kind": "continued", "count": 3}


def test_new_and_ended_clusters():
    # clusters 1, 2, 3 (12 samples each) are dealt out evenly into three new clusters: no
    # pair shares enough to continue, and no part is mostly made of one cluster
    before = np.array([0] * 12 + [1] * 12 + [2] * 12 + [3] * 12)
    after = np.concatenate([np.zeros(12, int), np.tile([1, 2, 3], 12)])
    tracks, events, n = assign_tracks([before, after, after], [4, 4, 5], min_jaccard=0.25)
    kinds = sorted(e["kind"] for e in events[1])
    assert kinds == ["continued", "end", "end", "end", "new", "new", "new"]
    assert tracks[1][0] == 0 and set(tracks[1][1:].tolist()) == {4, 5, 6}
    # an empty cluster gets no track
    assert tracks[2][4] == -1 and n == 7
    assert events[2] == [{"kind": "continued", "count": 4}]


# --------------------------------------------------------------------------- Timeline


def _checkpoint_store(path, n_checkpoints=3, n=240, seed=0, overwrite=False, steps=None):
    """Checkpoints of 4 classes in 2 layers: layer a separates every class from the start,
    layer b mixes classes 0 and 1 until the last checkpoint; the blobs move and the
    predictions improve from one checkpoint to the next."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n // 4)
    for t in (range(n_checkpoints) if steps is None else steps):
        centres_a = rng.permutation(4)[:, None] * 10.0 + rng.normal(0, 1, (4, 6))
        a = centres_a[labels] + rng.normal(0, 0.3, (n, 6))
        merged = labels.copy()
        if t < n_checkpoints - 1:
            merged[merged == 1] = 0
        centres_b = rng.normal(0, 10, (4, 5))
        b = centres_b[merged] + rng.normal(0, 0.3, (n, 5))
        wrong = rng.random(n) < 0.3 / (t + 1)
        pred = np.where(wrong, (labels + 1) % 4, labels)
        outputs = np.eye(4)[pred] * 5.0
        split = checkpoint_split(10 * t)
        store = capture_arrays({"a": a, "b": b}, outputs=outputs, labels=labels, store=path,
                               split=split, progress=False, allow_other_weights="test",
                               overwrite=overwrite,
                               inputs=(rng.random((n, 8, 8)) * 255).astype(np.uint8),
                               class_names=["zero", "one", "two", "<three>"])
        info = store.split_attrs(split)
        record = {"step": 10 * t, "epoch": t, **({"replaced": True} if overwrite else {})}
        store.write_split_attrs(split, {**info, CHECKPOINT_KEY: record})  # as a probe does
    return store


@pytest.fixture(scope="module")
def timeline_store(tmp_path_factory):
    return _checkpoint_store(tmp_path_factory.mktemp("tl") / "tl.zarr")


@pytest.fixture(scope="module")
def fitted(timeline_store):
    return Timeline(n_clusters=4).fit(timeline_store)


def test_timeline_follows_the_checkpoints_in_step_order(timeline_store, fitted):
    assert [c["split"] for c in list_checkpoints(timeline_store)] == [
        "step_00000000", "step_00000010", "step_00000020"]
    assert len(fitted) == 3 and fitted.layers_ == ["a", "b"]
    assert [c["step"] for c in fitted.checkpoints_] == [0, 10, 20]
    acc = fitted.accuracy()
    assert acc[0] < acc[1] < acc[2]
    assert "3 checkpoints" in repr(fitted)


def test_a_class_cluster_keeps_its_track_through_the_checkpoints(fitted):
    labels = np.asarray(fitted.signatures_[0].labels)
    for c in range(4):
        tracks = {int(fitted.track_paths(t)[labels == c, 0][0]) for t in range(3)}
        assert len(tracks) == 1, (c, tracks)  # layer a: one cluster per class, followed
    # layer b: classes 0 and 1 share a cluster until the last checkpoint, where they split
    kinds = [e["kind"] for e in fitted.events_[2][1]]
    assert "split" in kinds or "new" in kinds


def test_changes_between_two_checkpoints(fitted):
    ch = fitted.changes(0, 2)
    sg0, sg2 = fitted.signatures_[0], fitted.signatures_[2]
    assert ch["fixed"].sum() == (~np.asarray(sg0.correct) & np.asarray(sg2.correct)).sum() > 0
    labels = np.asarray(sg0.labels)
    # layer b's mixed cluster split: samples of class 0 or 1 changed path there
    assert ch["path"][(labels == 0) | (labels == 1)].any()
    assert set(np.unique(ch["first_layer"])) <= {-1, 0, 1}


def test_checkpoints_must_hold_the_same_samples(tmp_path):
    store = _checkpoint_store(tmp_path / "a.zarr", n_checkpoints=1)
    capture_arrays({"a": np.zeros((8, 6)), "b": np.zeros((8, 5))}, outputs=np.zeros((8, 4)),
                   labels=np.zeros(8, int), store=store, split="other", progress=False,
                   allow_other_weights="test")
    with pytest.raises(AnalysisError, match="same probe samples"):
        Timeline(n_clusters=2).fit(store, ["step_00000000", "other"])
    with pytest.raises(AnalysisError, match="no checkpoint"):
        Timeline().fit(store, prefix="nothing")


def test_timeline_report_data(timeline_store, fitted):
    data = build_timeline_data(fitted, timeline_store, map_points=100)
    tl = data["timeline"]
    assert data["splits"].keys() == {"step_00000020"} and data["label"] == "epoch 2"
    assert tl["layers"] == ["a", "b"] and tl["shown"] == 2 and tl["n_samples"] == 240
    assert len(tl["checkpoints"]) == 3
    for t, cp in enumerate(tl["checkpoints"]):
        assert sum(r["count"] for r in cp["rows"]) == 240
        row_of = np.frombuffer(__import__("base64").b64decode(cp["row_of"]), "<u2")
        paths = fitted.track_paths(t)
        for i in (0, 77, 239):  # each sample's row holds its label, tracks and prediction
            r = cp["rows"][row_of[i]]
            assert r["path"] == paths[i].tolist()
        assert len(cp["separable"]) == 4 and cp["scores"]["counts"].keys() == {"correct", "misclassified"}
        assert cp["label"] == f"epoch {t}"
    # layer a separates every class from the first checkpoint; class 0 only at layer a
    assert tl["checkpoints"][0]["separable"][2] == 0
    assert tl["score"]["name"] == "msp" and len(tl["score"]["bins"]) == 21
    assert tl["thumbnails"]["shape"] == [8, 8]
    text = js_json(data)
    assert "<three>" not in text  # every string escaped for the script
    json.loads(text.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&"))


def test_checkpoints_given_one_epoch_are_told_apart_by_their_step(timeline_store, fitted):
    """Two checkpoints recorded with the same epoch (a second fit() numbering its epochs from
    0 again, an epoch given by hand) keep distinct labels in the views."""
    import copy

    twice = copy.deepcopy(fitted)
    for rec in twice.checkpoints_:
        rec["epoch"] = 1 if rec["step"] else 0
    section = timeline_section(twice, timeline_store, score=None)
    assert [c["label"] for c in section["checkpoints"]] == [
        "epoch 0", "epoch 1 (step 10)", "epoch 1 (step 20)"]


def test_timeline_report_is_written_and_shown(tmp_path, timeline_store, fitted):
    index = write_timeline_report(fitted, timeline_store, tmp_path / "rep", map_points=0, score=None)
    assert index == tmp_path / "rep" / "index.html"
    bundle = (tmp_path / "rep" / "viewer.js").read_text()
    assert "/* ---- timelinemodel.js ---- */" in bundle and "/* ---- timeline.js ---- */" in bundle
    nb = show(fitted, timeline_store, map_points=0, score=None)
    assert [c["label"] for c in nb.summary()["timeline"]] == ["epoch 0", "epoch 1", "epoch 2"]
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match=r"call timeline.fit\(store\) first"):
        show(Timeline())
    assert "timeline accuracy: epoch 0" in repr(nb)
    assert "accuracy epoch 2 " in repr(nb) and "step_000" not in repr(nb)  # named as shown
    assert "score" not in nb.data["timeline"]


def test_encode_u16_falls_back_to_a_list():
    assert encode_u16(np.array([1, 2])) == "AQACAA=="
    assert encode_u16(np.array([70000])) == [70000]


# --------------------------------------------------------------------------- in Chromium


@pytest.mark.browser
def test_the_timeline_panel_in_chromium(tmp_path, timeline_store, fitted):
    """The panel draws from one report file: the slider and the play button move over the
    checkpoints, the flows are in track ids (each cluster node carries its track), the
    changed samples between two checkpoints are listed, and nothing fails."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from pathlib import Path

    from nnsig_core.report.browser import find_chromium, launch_chromium

    chromium = find_chromium()
    if not Path(chromium).exists():
        if __import__("os").environ.get("CI"):
            pytest.fail("chromium is required in CI")
        pytest.skip(f"chromium not found at {chromium}")
    index = write_timeline_report(fitted, timeline_store, tmp_path / "rep", map_points=100)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p, executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1200})
            page.on("console", lambda m: m.type in ("error", "warning") and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(index.as_uri())
            page.wait_for_function("window.NNSIG_READY === true", timeout=20000)
            # the last checkpoint first, then the one the slider picks
            assert page.get_attribute("#timeline", "data-t") == "2"
            assert "epoch 2" in page.text_content("#tl-label")
            tracks = page.eval_on_selector_all(
                "#tl-sankey-svg [data-track]", "els => els.map(e => Number(e.dataset.track))")
            labels = np.asarray(fitted.signatures_[2].labels)
            expected = {int(k) for k in np.unique(fitted.track_paths(2))}
            assert set(tracks) == expected and len(labels) == 240
            page.fill("#tl-slider", "0")
            page.dispatch_event("#tl-slider", "input")
            assert page.get_attribute("#timeline", "data-t") == "0"
            assert "epoch 0" in page.text_content("#tl-label")
            # compared with the last checkpoint: what changed by then, in training order (the
            # first checkpoint's wrong digits that training fixed are "fixed"), counted as
            # Timeline.changes does
            page.select_option("#tl-from", "2")
            assert page.text_content("#tl-from-word") == "Samples that changed by "
            ch = fitted.changes(0, 2)
            counts = page.text_content("#tl-counts")
            assert f"{int(ch['fixed'].sum())} fixed, {int(ch['broken'].sum())} broken" in counts
            assert f"{int(ch['path'].sum())} changed path" in counts
            assert page.locator(".tl-change").count() == min(60, int((ch["path"] | ch["prediction"]).sum()))
            assert page.locator(".tl-change canvas[data-drawn]").count() > 0  # thumbnails
            # the separability grid: one row per class, one column per checkpoint
            assert page.locator("#tl-separable tbody tr").count() == 4
            assert page.locator("#tl-separable thead th").count() == 4
            assert page.locator("#tl-accuracy .tl-point").count() == 3
            # the score chart's two series are named
            assert "correct" in page.text_content("#tl-score-legend")
            assert "misclassified" in page.text_content("#tl-score-legend")
            # play runs to the last checkpoint and stops
            page.click("#tl-play")
            page.wait_for_function(
                "document.getElementById('timeline').dataset.t === '2' &&"
                " document.getElementById('tl-play').getAttribute('aria-pressed') === 'false'",
                timeout=10000)
            # the report of the last checkpoint is still below, with its Sankey
            assert page.locator("#sankey-svg path.link").count() > 0
        finally:
            browser.close()
    assert errors == []


def test_nnsig_report_writes_the_timeline_the_api_writes(tmp_path, timeline_store, fitted,
                                                        capsys):
    """A probe's store has no analysis: `nnsig report` names `--timeline` (it advised `nnsig
    analyze`, which fails on a store without a 'train' split), and `--timeline` writes the
    report the API writes."""
    import json

    from nnsig_core.cli.main import main
    from nnsig_core.report.write import DATA_FILE

    store = str(timeline_store.location)
    assert main(["report", store, "--out", str(tmp_path / "x")]) == 1
    assert f"nnsig report {store} --timeline --out DIR" in capsys.readouterr().err
    assert main(["report", store, "--timeline", "--clusters", "4", "--map-points", "0",
                 "--out", str(tmp_path / "cli")]) == 0
    write_timeline_report(fitted, timeline_store, tmp_path / "api", map_points=0)

    def data(out):
        text = (out / DATA_FILE).read_text()
        d = json.loads(text[text.index("{"): text.rindex("}") + 1])
        d.pop("created")
        return d

    assert data(tmp_path / "cli") == data(tmp_path / "api")
    with pytest.raises(SystemExit) as exc:  # what --timeline does not take: usage errors
        main(["report", store, "--timeline", "--splits", "step_00000000", "--out", "y"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["report", store, "--clusters", "4", "--out", "y"])
    assert exc.value.code == 2


def test_two_probes_in_one_store_and_an_unfinished_checkpoint(tmp_path, capsys):
    """Two probes' checkpoints (prefixes) in one store: the error names prefix= and the
    command's --prefix, which work; a checkpoint whose capture did not finish is named in a
    warning (the timeline left it out without a word)."""
    from nnsig_core import NnsigWarning
    from nnsig_core.cli.main import main

    store = _checkpoint_store(tmp_path / "two.zarr", n_checkpoints=2)
    rng = np.random.default_rng(1)
    for split in ("hard_00000000", "step_00000030"):
        capture_arrays({"a": rng.normal(size=(40, 6)), "b": rng.normal(size=(40, 5))},
                       outputs=rng.normal(size=(40, 4)), labels=np.arange(40) % 4, store=store,
                       split=split, progress=False, allow_other_weights="test")
    info = store.split_attrs("hard_00000000")
    store.write_split_attrs("hard_00000000", {**info, CHECKPOINT_KEY: {"step": 0, "epoch": 0}})
    store.write_split_attrs("step_00000030", {**store.split_attrs("step_00000030"),
                                              "complete": False})
    with pytest.raises(AnalysisError, match=r"2 probes \(prefixes 'hard', 'step'\).*"
                                            r"prefix='hard'.*--prefix hard"):
        Timeline(n_clusters=2).fit(store)
    with pytest.warns(NnsigWarning, match="step_00000030 did not finish"):
        assert len(Timeline(n_clusters=2).fit(store, prefix="step")) == 2
    assert len(Timeline(n_clusters=2).fit(store, prefix="hard")) == 1
    assert main(["report", str(store.location), "--out", str(tmp_path / "r")]) == 1
    capsys.readouterr()
    assert main(["report", str(store.location), "--timeline", "--prefix", "hard",
                 "--clusters", "2", "--map-points", "0", "--out", str(tmp_path / "r")]) == 0
    assert "timeline of 1 checkpoints written" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["report", str(store.location), "--prefix", "hard", "--out", "y"])
    assert exc.value.code == 2


def test_a_checkpoint_left_by_another_run_is_named(tmp_path):
    """A shorter training run captured again into a probe's store replaces the steps it
    reaches; the older run's later step (captured before the new steps) is named in a warning
    whose fix (removing it) works: the timeline joined the two runs without a word.
    Checkpoints merely captured out of step order are not named."""
    from nnsig_core import NnsigWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        Timeline(n_clusters=2).fit(_checkpoint_store(tmp_path / "order.zarr", steps=[2, 0, 1]))
    path = tmp_path / "runs.zarr"
    _checkpoint_store(path, n_checkpoints=3)  # run A: steps 0, 10, 20
    store = _checkpoint_store(path, n_checkpoints=2, seed=1, overwrite=True)  # run B: 0, 10
    with pytest.warns(NnsigWarning, match=r"step_00000020 were captured before an earlier step"):
        Timeline(n_clusters=2).fit(store)
    open_store(path, mode="r+").remove_split("step_00000020")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        assert len(Timeline(n_clusters=2).fit(path)) == 2
