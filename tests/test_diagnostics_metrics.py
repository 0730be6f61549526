"""Detection metrics against hand-computed values, task masks, the tidy evaluation table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnsig_core.diagnostics import METRICS, detection_metrics, evaluate, summarize
from nnsig_core.diagnostics.metrics import fpr_at_tpr, task_masks

# Three positives (suspicious) and four negatives, no ties.
POS = [0.9, 0.8, 0.4]
NEG = [0.7, 0.3, 0.2, 0.1]
SCORES = np.array(POS + NEG)
IS_POS = np.array([True] * 3 + [False] * 4)


def test_hand_computed_example():
    m = detection_metrics(SCORES, IS_POS)
    # AUROC: 0.9 and 0.8 beat all 4 negatives, 0.4 beats 3 -> 11 of 12 pairs.
    assert m["auroc"] == pytest.approx(11 / 12)
    # Catching >= 95% of 3 positives needs all 3: threshold 0.4 also flags 0.7 -> 1 of 4.
    assert m["fpr95"] == pytest.approx(0.25)
    # AUPR-Out, ranked by score: P P N P ... -> precisions 1, 1, 3/4 at the three positives.
    assert m["aupr_out"] == pytest.approx((1 + 1 + 0.75) / 3)
    # AUPR-In, normal as positive ranked by -score: 0.1 0.2 0.3 (N) 0.4 (P) 0.7 (N)
    # -> precisions 1, 1, 1, 4/5 at the four normal samples.
    assert m["aupr_in"] == pytest.approx((3 + 0.8) / 4)
    assert set(m) == set(METRICS)


def test_perfect_and_reversed_and_ties():
    y = np.array([1, 1, 0, 0], dtype=bool)
    perfect = detection_metrics([3.0, 2.0, 1.0, 0.0], y)
    assert perfect == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    rev = detection_metrics([0.0, 1.0, 2.0, 3.0], y)
    assert rev["auroc"] == 0.0 and rev["fpr95"] == 1.0
    ties = detection_metrics([1.0, 1.0, 1.0, 1.0], y)
    assert ties["auroc"] == 0.5 and ties["fpr95"] == 1.0  # ties are flagged together
    assert ties["aupr_out"] == pytest.approx(0.5)


def test_fpr_at_tpr_threshold_rule():
    # 20 positives scored 1..20, 10 negatives at 0.5, 1.5, ..., 9.5.
    pos = np.arange(1, 21, dtype=float)
    neg = np.arange(10) + 0.5
    s = np.concatenate([pos, neg])
    y = np.r_[np.ones(20, bool), np.zeros(10, bool)]
    # 95% of 20 = 19 positives: highest threshold is 2 -> negatives >= 2 are 2.5..9.5 -> 8 of 10.
    assert fpr_at_tpr(s, y, tpr=0.95) == pytest.approx(0.8)
    # 50%: 10 positives, threshold 11 -> no negative flagged.
    assert fpr_at_tpr(s, y, tpr=0.5) == 0.0
    assert fpr_at_tpr(s, y, tpr=1.0) == pytest.approx(0.9)  # threshold 1 flags 1.5..9.5


def test_metric_input_errors():
    with pytest.raises(ValueError, match="both positives"):
        detection_metrics([1.0, 2.0], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        detection_metrics([np.nan, 2.0], [True, False])
    with pytest.raises(ValueError, match="values"):
        detection_metrics([1.0, 2.0, 3.0], [True, False])
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1.0, 2.0], [True, False], tpr=0.0)


def test_task_masks():
    labels = np.array([0, 1, 2, 3, 1, -1, 0])
    preds = np.array([0, 0, 2, 1, 1, 0, 2])
    m = task_masks(labels, preds, known_classes=[0, 1, 2])
    inc, pos = m["error"]
    assert inc.tolist() == [1, 1, 1, 0, 1, 0, 1]
    assert (pos & inc).tolist() == [0, 1, 0, 0, 0, 0, 1]
    inc, pos = m["novelty"]
    assert inc.tolist() == [1, 1, 1, 1, 1, 0, 1]
    assert (pos & inc).tolist() == [0, 0, 0, 1, 0, 0, 0]
    inc, pos = m["both"]
    assert (pos & inc).tolist() == [0, 1, 0, 1, 0, 0, 1]
    # Every class known: novelty and both collapse; novelty is left out.
    m = task_masks(labels[labels != 3], preds[labels != 3], [0, 1, 2])
    assert "novelty" not in m and "error" in m


def test_evaluate_table_rows_and_frame():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.8, labels, (labels + 1) % 3)
    preds[labels == 3] = 0
    bad = (labels != preds) | (labels == 3)
    scores = {"good": bad + rng.normal(0, 0.1, 200), "noise": rng.normal(size=200)}
    rows = evaluate(scores, labels, preds, [0, 1, 2], as_frame=False)
    assert len(rows) == 2 * 3 * 4
    assert {r["task"] for r in rows} == {"error", "novelty", "both"}
    good = {(r["task"], r["metric"]): r["value"] for r in rows if r["score"] == "good"}
    assert good[("both", "auroc")] > 0.99
    err = [r for r in rows if r["task"] == "error"][0]
    known = np.isin(labels, [0, 1, 2])
    assert err["n_positive"] == int((labels != preds)[known].sum())
    assert err["n_negative"] == int((labels == preds)[known].sum())
    frame = evaluate(scores, labels, preds, [0, 1, 2], tasks=["novelty"])
    pd = pytest.importorskip("pandas")
    assert isinstance(frame, pd.DataFrame) and set(frame["task"]) == {"novelty"}
    # Wide by default: one row per task and score, so that it prints whole.
    assert len(frame) == 2 and list(frame.columns) == ["task", "score", *METRICS,
                                                       "n_positive", "n_negative"]
    wide = evaluate(scores, labels, preds, [0, 1, 2], as_frame=False, layout="wide")
    assert len(wide) == 2 * 3
    assert {(r["task"], r["auroc"]) for r in wide if r["score"] == "good"} == {
        (t, good[(t, "auroc")]) for t in ("error", "novelty", "both")}
    with pytest.raises(ValueError, match="Unknown task"):
        evaluate(scores, labels, preds, [0, 1, 2], tasks=["nope"])
    with pytest.raises(ValueError, match="values for"):
        evaluate({"short": np.zeros(3)}, labels, preds, [0, 1, 2])


def test_without_novel_samples_evaluate_has_no_both_rows_unless_asked():
    """With every class known, "both" is "error" (same samples, same positives): evaluate()
    leaves it out by default, as ``nnsig evaluate`` does (it printed the same table twice)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 100)
    preds = np.where(rng.random(100) < 0.8, labels, (labels + 1) % 3)
    scores = {"s": rng.normal(size=100)}
    rows = evaluate(scores, labels, preds, [0, 1, 2], as_frame=False)
    assert {r["task"] for r in rows} == {"error"}
    asked = evaluate(scores, labels, preds, [0, 1, 2], tasks=["error", "both"], as_frame=False)
    by = {(r["task"], r["metric"]): r["value"] for r in asked}
    assert {t for t, _ in by} == {"error", "both"}
    assert all(by[("both", m)] == by[("error", m)] for m in METRICS)


def test_summarize_mean_std():
    rows = [{"score": "a", "task": "error", "metric": "auroc", "value": v} for v in (0.8, 0.9)]
    (r,) = summarize(rows, as_frame=False)
    assert r["mean"] == pytest.approx(0.85) and r["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert r["n"] == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(-3, 3)), min_size=2, max_size=60))
def test_auroc_is_scikit_learn_s(pairs) -> None:
    """The subset searches' AUROC (from ranks, ties counting half) is roc_auc_score's."""
    from sklearn.metrics import roc_auc_score

    from nnsig_core.diagnostics.metrics import auroc

    y = np.array([p for p, _ in pairs])
    s = np.array([v for _, v in pairs], dtype=np.float64) / 3  # many ties
    if y.all() or not y.any():
        with pytest.raises(ValueError, match="positive and negative"):
            auroc(y, s)
        return
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_evaluate_without_labels_says_what_it_needs():
    """``labels=None`` was int()'s TypeError; labels all unknown gave an empty table in
    silence."""
    from nnsig_core import NnsigWarning

    scores = {"s": np.arange(4.0)}
    with pytest.raises(ValueError, match="evaluate needs the true labels.*store.labels"):
        evaluate(scores, None, [0, 1, 0, 1], [0, 1])
    with pytest.warns(NnsigWarning, match="No sample has a label: no task is defined"):
        table = evaluate(scores, [-1] * 4, [0, 1, 0, 1], [0, 1], as_frame=False)
    assert table == []
