"""``SignatureScorer.fit(..., validation_split=...)``: the scorer of fit-then-calibrate, without
the internal leave-one-out reference of the fit split (issue 21: the demo's scorer cost)."""

from __future__ import annotations

import numpy as np
import pytest

from nnsig_core import SignatureAnalysis, open_store
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.diagnostics import SignatureScorer, neighbours


@pytest.mark.parametrize("method", ["layers", "rank"])
def test_fit_with_a_validation_split_is_fit_then_calibrate(tmp_path, monkeypatch, method) -> None:
    path = tmp_path / "s.zarr"
    make_blob_store(path, splits=("train", "val", "test"), n_samples=[240, 200, 100],
                    n_classes=3, error_rate=0.15)
    store = open_store(path)
    analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    two_steps = SignatureScorer(method=method).fit(analysis, store).calibrate(store, "val")

    searched: list[tuple[str, bool]] = []
    real = neighbours.neighbour_scores

    def spy(nb, st, split, rows, preds, **kw):
        searched.append((split, kw.get("leave_one_out", False)))
        return real(nb, st, split, rows, preds, **kw)

    monkeypatch.setattr("nnsig_core.diagnostics.scorer.neighbour_scores", spy)
    monkeypatch.setattr("nnsig_core.diagnostics.calibration.neighbour_scores", spy)
    one_step = SignatureScorer(method=method).fit(analysis, store, validation_split="val")
    assert searched == [("val", False)]  # no leave-one-out search of the fit split
    assert one_step.fingerprint_ == two_steps.fingerprint_
    assert one_step.validation_split_ == "val" and one_step.n_misclassified_ is None
    assert one_step.components_ == two_steps.components_
    np.testing.assert_array_equal(one_step.conformal_scores_, two_steps.conformal_scores_)
    a, b = one_step.score(store, "test"), two_steps.score(store, "test")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_the_validation_split_is_scored_once(tmp_path, monkeypatch) -> None:
    """signature_scores(..., validation_split="val", save=True) saves val's scores too: they
    are calibrate's, not a second search, and equal to a fresh scoring."""
    path = tmp_path / "s.zarr"
    make_blob_store(path, splits=("train", "val"), n_samples=[240, 200], n_classes=3,
                    error_rate=0.15)
    store = open_store(path)
    analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    scorer = SignatureScorer().fit(analysis, store, validation_split="val")
    searched: list[str] = []
    real = neighbours.neighbour_scores
    monkeypatch.setattr("nnsig_core.diagnostics.scorer.neighbour_scores",
                        lambda nb, st, split, *a, **kw: searched.append(split)
                        or real(nb, st, split, *a, **kw))
    kept = scorer.score(store, "val")
    assert searched == []
    scorer._calibration_components = None  # what score() computes without it
    fresh = scorer.score(store, "val")
    assert searched == ["val"]
    for k in fresh:
        np.testing.assert_array_equal(kept[k], fresh[k], err_msg=k)
