"""One scoring workflow: the analysis's scorer, its fingerprinted scores, the conformal
threshold, and one report whatever the route (issue 21)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnsig_core import NnsigWarning, SignatureAnalysis, open_store
from nnsig_core.analysis.synthetic import make_blob_activations, make_blob_store
from nnsig_core.capture import capture_arrays
from nnsig_core.diagnostics import SignatureScorer, signature_scores
from nnsig_core.diagnostics.conformal import (
    conformal_p_values,
    conformal_threshold,
    false_positive_spread,
)
from nnsig_core.report import build_report_data, write_report
from nnsig_core.report.write import DATA_FILE

K = 4


def _data(out) -> dict:
    text = (out / DATA_FILE).read_text()
    data = json.loads(text[text.index("{"): text.rindex("}") + 1])
    data.pop("created")
    return data


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "s.zarr"
    make_blob_store(path, splits=("train", "val", "test"), n_samples=[500, 400, 300],
                    n_classes=K, error_rate=0.1, inputs=True)
    store = open_store(path, mode="r+")
    analysis = SignatureAnalysis(n_clusters=K, progress=False).fit(store, "train")
    analysis.save(store, "default")
    return analysis, store


# --------------------------------------------------------------------------- the conformal rule
@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([0.01, 0.05, 0.1, 0.3]))
def test_conformal_threshold_and_p_values_agree(values, alpha) -> None:
    cal = np.array(values)
    t = conformal_threshold(cal, alpha)
    n = cal.size
    k = math.ceil((n + 1) * (1 - alpha) - 1e-12)
    assert (t == np.inf) == (k > n)
    # At most floor(alpha (n + 1)) - ... : the calibration scores above t are at most n - k.
    assert (cal > t).sum() <= max(n - k, 0)
    probe = np.concatenate([cal, cal + 1e-9, cal - 1e-9, [-10.0, 10.0]])
    p = conformal_p_values(cal, probe)
    # Flagged by the threshold exactly when the p-value is at most alpha.
    np.testing.assert_array_equal(probe > t, p <= alpha + 1e-12)


def test_conformal_threshold_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha"):
        conformal_threshold(np.ones(10), 1.5)
    with pytest.raises(ValueError, match="No finite calibration score"):
        conformal_threshold(np.array([np.nan]), 0.1)


def test_the_false_positive_rate_holds_over_random_calibration_sets() -> None:
    """Exchangeable scores: the realised false-positive rate averages alpha within the spread
    the Beta-binomial predicts."""
    rng = np.random.default_rng(0)
    alpha, n, m, reps = 0.05, 400, 2000, 300
    rates = []
    for _ in range(reps):
        x = rng.standard_normal(n + m)
        t = conformal_threshold(x[:n], alpha)
        rates.append((x[n:] > t).mean())
    mean, sd = false_positive_spread(n, alpha, m)
    assert mean <= alpha and mean > alpha - 1 / (n + 1)
    assert abs(np.mean(rates) - mean) < 4 * sd / math.sqrt(reps)
    assert 0.7 * sd < np.std(rates) < 1.3 * sd


# --------------------------------------------------------------------------- item 1
@pytest.mark.slow
def test_the_threshold_comes_from_the_scorer_of_the_scores_shown(saved, tmp_path,
                                                                  capsys) -> None:
    """evaluate --validation val, then evaluate --split val, then report: one scorer, and
    the validation split is scored (and saved) by the first call."""
    from nnsig_core.cli.main import main

    analysis, store = saved
    loc = store.location
    assert main(["evaluate", loc, "--split", "test", "--validation", "val",
                 "--no-baselines"]) == 0
    from nnsig_core.diagnostics.persist import saved_score_splits, saved_scorer

    st_ = open_store(loc)
    record = saved_scorer(st_, "default")
    assert record["validation_split"] == "val" and record["conformal_scores"].size > 0
    assert set(saved_score_splits(st_, "default")) == {"val", "test"}
    assert main(["evaluate", loc, "--split", "val", "--no-baselines"]) == 0
    assert saved_scorer(open_store(loc), "default")["fingerprint"] == record["fingerprint"]
    capsys.readouterr()  # --json names the saved scorer's validation split (it said null)
    assert main(["evaluate", loc, "--split", "test", "--no-baselines", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["validation_split"] == "val"
    out = tmp_path / "r"
    assert main(["report", loc, "--out", str(out)]) == 0
    thr = _data(out)["threshold"]
    assert thr["kind"] == "conformal" and thr["split"] == "val"
    assert thr["fingerprint"] == record["fingerprint"]
    assert thr["value"] == np.nextafter(conformal_threshold(record["conformal_scores"], 0.05),
                                        np.inf)
    # A scorer of other settings replaces the saved one and the scores of the old one go.
    # The warning names what is gone, not the split scored again now (it named it too).
    with pytest.warns(NnsigWarning, match=r"scores of split\(s\) val for analysis 'default' "
                                          "came from another scorer"):
        signature_scores(analysis, open_store(loc, mode="r+"), "test", n_neighbors=3,
                         save=True)
    assert saved_score_splits(open_store(loc), "default") == ["test"]
    assert "threshold" not in build_report_data(analysis, open_store(loc))


def test_scores_of_two_scorers_cannot_share_a_report(saved) -> None:
    analysis, store = saved
    a = signature_scores(analysis, store, "test", validation_split="val")
    b = signature_scores(analysis, store, "train", validation_split="val", n_neighbors=2)
    assert a.fingerprint != b.fingerprint
    with pytest.raises(ValueError, match="several scorers"):
        build_report_data(analysis, store, scores=[a, b])


def test_the_scorer_holds_out_its_conformal_samples(saved) -> None:
    analysis, store = saved
    scorer = SignatureScorer().fit(analysis, store).calibrate(store, "val")
    ok = store.labels("val") == store.predictions("val")
    assert scorer.conformal_scores_.size == int(np.floor(0.5 * ok.sum()))
    assert scorer.layer_combiner_.n_reference_ == ok.sum() - scorer.conformal_scores_.size
    scores = scorer.score(store, "test")
    np.testing.assert_allclose(scores["p_value"],
                               conformal_p_values(scorer.conformal_scores_, scores["combined"]))
    assert scorer.threshold(0.05) == conformal_threshold(scorer.conformal_scores_, 0.05)


# --------------------------------------------------------------------------- items 2, 3
@pytest.mark.slow
def test_write_report_and_nnsig_report_are_one_report(saved, tmp_path) -> None:
    from nnsig_core.cli.main import main

    analysis, store = saved
    for s in ("train", "test"):
        signature_scores(analysis, store, s, validation_split="val", save=True)
    api = tmp_path / "api"
    write_report(analysis, store, api)
    cli = tmp_path / "cli"
    assert main(["report", store.location, "--out", str(cli)]) == 0
    a, b = _data(api), _data(cli)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    # The fit split first, then capture order; opening on the first that is neither the fit
    # split nor the split that calibrated the threshold (its rates are not held-out ones).
    assert list(a["splits"]) == ["train", "val", "test"] and a["open_split"] == "test"
    # Reports of another analysis of the store are told apart by their titles (run menu).
    SignatureAnalysis(n_clusters=K, progress=False).fit(store, "train").save(store, "k4b")
    from nnsig_core.analysis import SignatureAnalysis as SA

    other = build_report_data(SA.load(store, "k4b"), store, map_points=0)
    assert other["title"] == a["title"].replace("s.zarr", "s.zarr, analysis k4b")
    assert a["title"].endswith("s.zarr") or a["title"].endswith("s.zarr)")
    assert "scores" in a["splits"]["test"] and a["threshold"]["split"] == "val"


def test_scores_takes_what_signature_scores_returns(saved) -> None:
    analysis, store = saved
    test = signature_scores(analysis, store, "test", validation_split="val")
    data = build_report_data(analysis, store, scores=test)
    assert "scores" in data["splits"]["test"] and "scores" not in data["splits"]["train"]
    assert data["threshold"]["fingerprint"] == test.fingerprint
    with pytest.raises(TypeError, match="what signature_scores returns"):
        build_report_data(analysis, store, scores={"test": {"combined": test["combined"]}})


# --------------------------------------------------------------------------- item 4
def test_a_store_handle_sees_what_another_handle_wrote(tmp_path) -> None:
    path = tmp_path / "h.zarr"
    make_blob_store(path, splits=("train",), n_samples=300, n_classes=K)
    store = open_store(path, mode="r+")
    analysis = SignatureAnalysis(n_clusters=K, progress=False).fit(store, "train")
    blobs = make_blob_activations(n_samples=120, n_classes=K, seed=0, sample_seed=7)
    capture_arrays(blobs["activations"], outputs=blobs["outputs"], labels=blobs["labels"],
                   store=path, split="test", progress=False)
    assert analysis.transform(store, "test").n_samples == 120
    # The split captured again through another handle, with fewer and then more samples:
    # each operation of the old handle reads the new capture (it read 120 rows of 60, then
    # 120 of 200, or failed on a misleading shape).
    for n, seed in ((60, 8), (200, 9)):
        again = make_blob_activations(n_samples=n, n_classes=K, seed=0, sample_seed=seed)
        capture_arrays(again["activations"], outputs=again["outputs"], labels=again["labels"],
                       store=path, split="test", overwrite=True, progress=False)
        sigs = analysis.transform(store, "test")
        assert sigs.n_samples == n
        np.testing.assert_array_equal(sigs.labels, again["labels"])
        scores = signature_scores(analysis, store, "test")
        assert scores["combined"].shape == (n,)
    # A handle that listed 'test' (its group opened) but never read its record.
    lister = open_store(path, mode="r+")
    SignatureAnalysis(n_clusters=K, progress=False).fit(lister, "train")
    assert "test" in lister.splits
    again = make_blob_activations(n_samples=90, n_classes=K, seed=0, sample_seed=10)
    capture_arrays(again["activations"], outputs=again["outputs"], labels=again["labels"],
                   store=path, split="test", overwrite=True, progress=False)
    assert analysis.transform(lister, "test").n_samples == 90


# --------------------------------------------------------------------------- items 8, 9
@pytest.mark.slow
def test_evaluate_shows_each_task_once_and_fails_fast(saved, tmp_path, capsys) -> None:
    from nnsig_core.cli.main import main
    from nnsig_core.diagnostics.persist import saved_scorer

    analysis, store = saved
    assert main(["evaluate", store.location, "--validation", "val", "--no-baselines"]) == 0
    out = capsys.readouterr().out
    # Every class is known: "both" would repeat "error".
    assert "error:" in out and "both:" not in out and "novelty:" not in out
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "95%%" not in capsys.readouterr().out
    # A split without errors or novel classes: refused before any scoring.
    path = tmp_path / "perfect.zarr"
    make_blob_store(path, splits=("train", "test"), n_samples=200, n_classes=K, error_rate=0.0)
    rw = open_store(path, mode="r+")
    SignatureAnalysis(n_clusters=K, progress=False).fit(rw, "train").save(rw, "default")
    assert main(["evaluate", str(path), "--no-baselines"]) == 1
    assert "Nothing to evaluate on split 'test'" in capsys.readouterr().err
    assert saved_scorer(open_store(path), "default") is None


def test_evaluate_scores_and_saves_an_unlabelled_split(tmp_path, capsys) -> None:
    """Unlabelled inputs (production data) are scored and saved for the report; evaluate says
    why there is no table instead of blaming missing errors."""
    from nnsig_core.cli.main import main
    from nnsig_core.diagnostics.persist import load_scores, saved_score_splits

    path = tmp_path / "u.zarr"
    make_blob_store(path, splits=("train",), n_samples=300, n_classes=K)
    blobs = make_blob_activations(n_samples=80, n_classes=K, seed=0, sample_seed=5)
    capture_arrays(blobs["activations"], outputs=blobs["outputs"], labels=None, store=path,
                   split="prod", progress=False)
    rw = open_store(path, mode="r+")
    analysis = SignatureAnalysis(n_clusters=K, progress=False).fit(rw, "train").save(rw)
    assert main(["evaluate", str(path), "--split", "prod", "--no-baselines"]) == 0
    assert "'prod' has no labels: its scores are saved" in capsys.readouterr().out
    store = open_store(path)
    assert "prod" in saved_score_splits(store, "default")
    np.testing.assert_allclose(load_scores(store, "default", "prod")["combined"],
                               signature_scores(analysis, store, "prod")["combined"])


def test_energy_on_probabilities_is_flagged(tmp_path) -> None:
    from nnsig_core.diagnostics import baseline_scores

    blobs = make_blob_activations(n_samples=300, n_classes=K, seed=0, sample_seed=1)
    z = blobs["outputs"]
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    path = tmp_path / "p.zarr"
    for split in ("train", "test"):
        capture_arrays(blobs["activations"], outputs=probs, labels=blobs["labels"], store=path,
                       split=split, progress=False)
    store = open_store(path)
    analysis = SignatureAnalysis(n_clusters=K, progress=False).fit(store, "train")
    with pytest.warns(NnsigWarning, match="look like probabilities"):
        baseline_scores(analysis, store, "test", which=("energy",))


@pytest.mark.slow
def test_export_every_split_in_every_format_with_the_saved_scores(saved, tmp_path) -> None:
    from nnsig_core.cli.main import main

    analysis, store = saved
    signature_scores(analysis, store, "test", validation_split="val", save=True)
    pq = pytest.importorskip("pyarrow.parquet")
    for fmt in ("csv", "json", "parquet"):
        out = tmp_path / fmt
        assert main(["export", store.location, "--format", fmt, "--out", str(out)]) == 0
        for s in ("train", "val", "test"):
            assert (out / f"signatures_{s}.{fmt}").is_file()
    per_sample = pq.read_table(tmp_path / "parquet" / "signatures_test.parquet").to_pydict()
    saved_combined = signature_scores(analysis, store, "test")["combined"]
    np.testing.assert_allclose(per_sample["score:combined"], saved_combined)
    assert "score:combined" not in pq.read_table(
        tmp_path / "parquet" / "signatures_train.parquet").column_names
    rows = json.loads((tmp_path / "json" / "signatures_val.json").read_text())
    assert len(rows) == store.n_samples("val") and "score:p_value" in rows[0]


# --------------------------------------------------------------------------- item 10
def test_a_class_with_one_training_sample_does_not_break_the_combination(tmp_path) -> None:
    """Its sample has no leave-one-out neighbour: 0.2 raised scikit-learn's "Input contains
    NaN"; it is left out of the reference, with a warning the user sees."""
    path = tmp_path / "low.zarr"
    for i, split in enumerate(("train", "test")):
        b = make_blob_activations(n_samples=400, n_classes=K, seed=0, sample_seed=i + 1,
                                  error_rate=0.3)
        out = b["outputs"].copy()
        if split == "train":  # one correctly classified training sample of class 2
            idx = np.flatnonzero(b["labels"] == 2)[1:]
            out[idx, 2], out[idx, 0] = -1e3, 1e3
        capture_arrays(b["activations"], outputs=out, labels=b["labels"], store=path,
                       split=split, progress=False)
    store = open_store(path)
    analysis = SignatureAnalysis(n_clusters=K, progress=False).fit(store, "train")
    with pytest.warns(NnsigWarning, match="no finite neighbour score"):
        scores = signature_scores(analysis, store, "train")
    assert np.isfinite(scores["combined"]).sum() >= store.n_samples("train") - 1


def test_replacing_an_analysis_says_its_scores_go(saved) -> None:
    """`nnsig analyze --overwrite` (save(overwrite=True)) over an analysis with a scorer and
    scores removes them: a warning says so and how to compute them again."""
    analysis, store = saved
    signature_scores(analysis, store, "test", validation_split="val", save=True)
    other = SignatureAnalysis(n_clusters=K + 1, progress=False).fit(store, "train")
    with pytest.warns(NnsigWarning, match=r"removes the scorer .* scores of test, val.*"
                                          r"nnsig evaluate --validation"):
        other.save(store, "default", overwrite=True)
    assert store.analyses == ["default"]


def test_a_class_the_model_never_gets_right_is_no_novel_class(tmp_path, capsys) -> None:
    """Class 9 is in the fit split but always predicted as 8: the analysis leaves it out (it
    says so), and evaluate scored its samples as a novel class, taking them out of the
    error task. Its known classes are the fit split's labels."""
    import warnings

    from nnsig_core.cli.main import main

    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 10, n)
        acts = {"l1": rng.normal(size=(n, 6)) + y[:, None],
                "l2": rng.normal(size=(n, 4)) + 0.5 * y[:, None]}
        logits = rng.normal(size=(n, 10))
        logits[np.arange(n), y] += 4
        wrong = rng.random(n) < 0.1
        logits[wrong, (y[wrong] + 1) % 10] += 8
        logits[y == 9, 8] += 20  # class 9 is always predicted as 8
        return acts, logits, y

    path = str(tmp_path / "never.zarr")
    for split, n in (("train", 1500), ("test", 600)):
        acts, logits, y = make(n)
        capture_arrays(acts, outputs=logits, labels=y, store=path, split=split, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # class 9 left out of the fit: warned of, tested elsewhere
        assert main(["analyze", path, "--clusters", "4"]) == 0
    capsys.readouterr()
    assert main(["evaluate", path, "--no-baselines", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["tasks"]) == {"error"}
    labels = open_store(path).labels("test")
    wrong = labels != open_store(path).predictions("test")
    assert out["tasks"]["error"]["n_positive"] == int(wrong.sum())  # class 9's errors count
    analysis = SignatureAnalysis.load(path)
    assert 9 not in analysis.classes_ and analysis.known_classes_ == list(range(10))
    data = build_report_data(analysis, open_store(path))  # the report: no "unseen" class 9
    assert data["train_classes"] == list(range(10))
