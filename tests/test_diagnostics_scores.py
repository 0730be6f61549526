"""Signature scores: known answers on synthetic stores, formulas by hand, the no-novel-tuning rule."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from nnsig_core import NnsigWarning, capture_arrays, open_store
from nnsig_core.analysis.engine import SignatureAnalysis
from nnsig_core.analysis.errors import MissingLabelsError
from nnsig_core.diagnostics import (
    SCORES,
    NovelClassError,
    ScoreCombiner,
    SignatureScorer,
    baseline_scores,
    detection_metrics,
    signature_scores,
)
from nnsig_core.diagnostics.components import min_hamming
from nnsig_core.diagnostics.geometry import nearest_distances, split_distances
from nnsig_core.diagnostics.persist import load_scores, saved_score_splits

D = 6


def _split(rng, n, *, flip=0.0, n_ood=0):
    """Two ReLU-like layers for 3 classes; ``flip`` of the samples are misclassified
    (their activations stay in the true class's region); ``n_ood`` samples of a novel
    class 3 lie off every class's region in both layers and are predicted as class 0."""
    y = rng.integers(0, 3, n)
    a = 10 * np.eye(D)[y] + rng.normal(size=(n, D))
    b = 10 * np.eye(D)[y + 3] + rng.normal(size=(n, D))
    pred = y.copy()
    wrong = rng.random(n) < flip
    pred[wrong] = (y[wrong] + 1 + rng.integers(0, 2, wrong.sum())) % 3
    if n_ood:
        a_o = 10 * np.eye(D)[1] + 8 * np.eye(D)[4] + rng.normal(size=(n_ood, D))
        b_o = 10 * np.eye(D)[2 + 3] + 8 * np.eye(D)[0] + rng.normal(size=(n_ood, D))
        a, b = np.vstack([a, a_o]), np.vstack([b, b_o])
        y = np.r_[y, np.full(n_ood, 3)]
        pred = np.r_[pred, np.zeros(n_ood, dtype=int)]
    logits = 5 * np.eye(4)[pred][:, :3] + rng.normal(0, 0.1, (len(y), 3))
    acts = {"a": np.maximum(a, 0).astype(np.float32), "b": np.maximum(b, 0).astype(np.float32)}
    return acts, logits.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("dx") / "s.zarr"
    for split, kw in (("train", dict(n=900, flip=0.05)), ("val", dict(n=400, flip=0.15)),
                      ("test", dict(n=300, flip=0.1, n_ood=60))):
        acts, logits, y = _split(rng, **kw)
        capture_arrays(acts, logits, y, path, split=split, progress=False)
    store = open_store(path, mode="r+")
    analysis = SignatureAnalysis(n_clusters=6, random_state=0, progress=False).fit(store, "train")
    return store, analysis


def test_every_score_flags_the_novel_cluster(fitted):
    store, analysis = fitted
    scores = signature_scores(analysis, store, "test", save=False)
    assert list(scores) == [*SCORES, "combined"]
    y, pred = store.labels("test"), store.predictions("test")
    novel = y == 3
    ok = y == pred  # in-distribution and correctly classified
    for name, s in scores.items():
        assert s.shape == (len(y),) and np.isfinite(s).all(), name
        assert detection_metrics(s[novel | ok], novel[novel | ok])["auroc"] > 0.97, name
        assert s[novel].mean() > s[~novel].mean(), name  # misclassified ones included
    assert (scores["path_hamming"][novel] == 2).all()  # differs in both layers from class 0
    assert scores["path_hamming"][ok].max() <= 1


def test_misclassified_samples_disagree(fitted):
    store, analysis = fitted
    scores = signature_scores(analysis, store, "val", save=False)
    wrong = store.labels("val") != store.predictions("val")
    assert detection_metrics(scores["disagreement"], wrong)["auroc"] > 0.95


def test_calibration_on_known_classes_only(fitted, tmp_path):
    store, analysis = fitted
    scorer = SignatureScorer().fit(analysis, store)
    # Without a validation split, the layers are chosen on the fit split's own errors.
    desc = scorer.describe()
    assert desc["validation_split"] is None and desc["combination"]["method"] == "layers"
    assert desc["combination"]["tuned"] is True
    with pytest.raises(NovelClassError, match=r"classes \[3\]"):
        scorer.calibrate(store, "test")
    with pytest.raises(NovelClassError):
        signature_scores(analysis, store, "test", validation_split="test", save=False)
    scorer.calibrate(store, "val")
    desc = scorer.describe()
    assert desc["validation_split"] == "val" and desc["combination"]["tuned"] is True
    assert desc["combination"]["tuning_auroc"] > 0.95
    scorer.calibrate(store, "val", method="logistic")
    assert scorer.combiner_.method == "logistic"
    y = store.labels("test")
    keep = (y == 3) | (y == store.predictions("test"))
    comb = scorer.score(store, "test")["combined"]
    assert detection_metrics(comb[keep], (y == 3)[keep])["auroc"] > 0.9
    # The low-level combiner enforces the rule too, and unlabelled data cannot be checked.
    ref = {"x": np.arange(4.0)}
    with pytest.raises(NovelClassError):
        ScoreCombiner().fit(ref, labels=[0, 1, 3, 0], predictions=[0, 0, 0, 0],
                            known_classes=[0, 1, 2])
    with pytest.raises(MissingLabelsError):
        ScoreCombiner().fit(ref, labels=[0, 1, -1, 0], predictions=[0, 0, 0, 0],
                            known_classes=[0, 1, 2])
    with pytest.raises(ValueError, match="known_classes"):
        ScoreCombiner().fit(ref, labels=[0, 1, 1, 0], predictions=[0, 0, 0, 0])
    with pytest.raises(NovelClassError):
        scorer.calibrate_arrays(np.zeros((2, 2), int), np.zeros((2, 2)), [0, 7], [0, 0])


def test_misclassified_fit_samples_are_capped_at_n_reference(fitted):
    """The layers are chosen on at most ``n_reference`` misclassified fit samples (a draw);
    up to the cap every one is used."""
    store, analysis = fitted
    y, pred = store.labels("train"), store.predictions("train")
    n_wrong = int((y != pred).sum())
    assert n_wrong > 20
    full = SignatureScorer(random_state=0).fit(analysis, store)
    assert full.n_misclassified_ == full.describe()["n_misclassified"] == n_wrong
    capped = SignatureScorer(n_reference=20, random_state=0).fit(analysis, store)
    assert capped.n_misclassified_ == 20 and capped.describe()["combination"]["tuned"] is True
    assert capped.layer_combiner_.n_reference_ == 20
    roomy = SignatureScorer(n_reference=n_wrong, random_state=0).fit(analysis, store)
    assert roomy.n_misclassified_ == n_wrong
    small = SignatureScorer(n_reference=n_wrong - 1, random_state=0).fit(analysis, store)
    assert small.n_misclassified_ == n_wrong - 1


@pytest.mark.filterwarnings("ignore:The fit split .* has no misclassified sample")
def test_calibration_rejects_unlabelled_split(tmp_path, fitted):
    _, analysis = fitted
    rng = np.random.default_rng(5)
    path = tmp_path / "u.zarr"
    for split, lab in (("train", True), ("val", False)):
        acts, logits, y = _split(rng, 300)
        capture_arrays(acts, logits, y if lab else None, path, split=split, progress=False)
    store = open_store(path, mode="r+")
    an = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    with pytest.raises(MissingLabelsError):
        SignatureScorer().fit(an, store).calibrate(store, "val")


def test_scores_saved_next_to_the_analysis(fitted, tmp_path):
    store, analysis = fitted
    saved = copy.deepcopy(analysis).save(store, name="dx", splits=["train"])
    scores = signature_scores(saved, store, "test", save=True)  # under the analysis's name
    loaded = SignatureAnalysis.load(store, "dx")
    again = signature_scores(loaded, store, "test", save=False)
    for k in scores:
        np.testing.assert_allclose(again[k], scores[k], rtol=1e-6, atol=1e-9)
    assert saved_score_splits(store, "dx") == ["test"]
    back = load_scores(store, "dx", "test")
    assert list(back) == list(scores)
    for k in scores:
        np.testing.assert_array_equal(back[k], scores[k])
    attrs = dict(store.root["analysis/dx/scores/test"].attrs)["nnsig_scores"]
    assert attrs["split"] == "test" and attrs["classes"] == [0, 1, 2]
    ro = open_store(store.path, mode="r")
    with pytest.warns(NnsigWarning, match="read-only"):
        signature_scores(analysis, ro, "val", name="dx", save=True)
    assert saved_score_splits(store, "dx") == ["test"]
    with pytest.warns(NnsigWarning, match="not been saved"):
        signature_scores(analysis, store, "val", save=True)  # unnamed: nothing to save next to
    with pytest.warns(NnsigWarning, match="no analysis 'nope'"):
        signature_scores(analysis, store, "val", name="nope", save=True)
    assert "nope" not in store.analyses
    signature_scores(saved, store, "val")  # computing does not write unless asked
    assert saved_score_splits(store, "dx") == ["test"]


# ---------------------------------------------------------------------------- formulas by hand
IDS = np.array([[0, 0], [0, 0], [0, 1], [1, 1]])
DIST = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [5.0, 4.0]])
LAB = np.array([0, 0, 0, 1])


def _hand_scorer(**kw):
    return SignatureScorer(alpha=1.0, beta=1.0, min_cluster_size=1, **kw).fit_arrays(
        IDS, DIST, LAB, n_clusters=[2, 2])


def test_formulas_by_hand():
    sc = _hand_scorer()
    q = np.array([[0, 1], [1, 0]])
    d = np.array([[2.5, 3.5], [0.5, 0.5]])
    out = sc.component_scores(q, d, [0, 0])
    # 3 distinct training paths -> V = 4; class 0 has N = 3, path (0, 1) once.
    assert out["path_surprisal"][0] == pytest.approx(-np.log((1 + 1) / (3 + 4)))
    assert out["path_surprisal"][1] == pytest.approx(-np.log(1 / 7))
    assert out["path_hamming"].tolist() == [0, 1]
    # (0, 1) as class 0: layer 0 cluster 0 is 3/3 class 0, layer 1 cluster 1 is 1/2; C = 2.
    assert out["disagreement"][0] == pytest.approx(((1 - 4 / 5) + (1 - 2 / 4)) / 2)
    # Distances: layer 0 cluster 0 holds 1, 2, 3 (one >= 2.5); layer 1 cluster 1 holds 3, 4.
    p0, p1 = (1 + 1) / (1 + 3), (1 + 1) / (1 + 2)
    assert out["centroid_distance"][0] == pytest.approx(-2 * (np.log(p0) + np.log(p1)))
    # Markov chain: P(k1=0 | c=0) = 4/5, P(k2=1 | k1=0, c=0) = (1 + 1)/(3 + 2).
    assert out["transition_surprisal"][0] == pytest.approx(-np.log(4 / 5) - np.log(2 / 5))
    # (1, 0) as class 0: P(k1=1 | 0) = 1/5, transition never seen from 1: 1/(0 + 2).
    assert out["transition_surprisal"][1] == pytest.approx(-np.log(1 / 5) - np.log(1 / 2))
    # Class 0's layer distances are 1, 2, 3 in both layers: one >= 2.5, none >= 3.5.
    assert out["class_distance"][0] == pytest.approx(-2 * (np.log(2 / 4) + np.log(1 / 4)))
    assert out["class_distance"][1] == pytest.approx(-2 * 2 * np.log(4 / 4))
    assert "class_margin" not in out and "class_margin" not in sc.components_
    near = (np.array([[0.5, 2.0], [1.0, 1.0]]), np.array([[1.0, 0.5], [np.inf, 4.0]]))
    m = sc.component_scores(q, d, [0, 0], nearest=near)["class_margin"]
    assert m == pytest.approx([np.log(0.5) + np.log(4.0), 0.0 + np.log(0.25)], rel=1e-6)
    minp = _hand_scorer(distance_combine="minp").component_scores(q, d, [0, 0])
    assert minp["centroid_distance"][0] == pytest.approx(-min(0.0, np.log(2 * min(p0, p1))))
    # A class with no training sample is maximally unfamiliar.
    out = sc.component_scores(q[:1], d[:1], [5])
    assert out["path_hamming"][0] == 2 and out["path_surprisal"][0] == pytest.approx(np.log(4))


def test_leave_one_out_reference():
    ref = _hand_scorer().reference_
    # Sample 2 is the only class-0 sample on path (0, 1): without it, N = 2, count 0.
    assert ref["path_surprisal"][2] == pytest.approx(-np.log(1 / (2 + 4)))
    assert ref["path_hamming"].tolist() == [0, 0, 1, 2]  # sample 3 is class 1's only path
    # Sample 0's distance 1 in layer 0 cluster 0 against the others (2, 3): p = 3/3.
    assert ref["centroid_distance"][0] == pytest.approx(
        -2 * (np.log(3 / 3) + np.log((1 + 1) / (1 + 1))))


def test_hamming_matches_bruteforce():
    rng = np.random.default_rng(7)
    for L, K in itertools.product((1, 3, 5), (2, 4)):
        Q = rng.integers(0, K, (40, L))
        P = np.unique(rng.integers(0, K, (30, L)), axis=0)
        want = np.array([(q != P).sum(1).min() for q in Q])
        np.testing.assert_array_equal(min_hamming(Q, P, budget=50), want)
        ex = rng.integers(-1, len(P), 40)
        want_ex = np.array([min([(q != p).sum() for j, p in enumerate(P) if j != e] or [L + 1])
                            for q, e in zip(Q, ex, strict=True)])
        np.testing.assert_array_equal(min_hamming(Q, P, exclude=ex), want_ex)


def test_rank_combiner_selects_informative_component():
    rng = np.random.default_rng(1)
    n = 400
    labels = rng.integers(0, 3, n)
    preds = labels.copy()
    wrong = rng.random(n) < 0.2
    preds[wrong] = (labels[wrong] + 1) % 3
    comps = {"good": wrong + rng.normal(0, 0.3, n), "noise": rng.normal(size=n)}
    comb = ScoreCombiner().fit(comps, labels, preds, [0, 1, 2])
    assert comb.describe()["weights"] == [1.0, 0.0]
    assert detection_metrics(comb.transform(comps), wrong)["auroc"] > 0.9
    untuned = ScoreCombiner().fit(comps)
    assert untuned.describe()["weights"] == [1.0, 1.0]
    assert 0 <= untuned.transform(comps).min() and untuned.transform(comps).max() <= 1
    log_c = ScoreCombiner(method="logistic").fit(comps, labels, preds, [0, 1, 2])
    w = log_c.describe()["weights"]
    assert w[0] > 5 * abs(w[1])
    with pytest.raises(ValueError, match="needs a target"):
        ScoreCombiner(method="logistic").fit(comps)


def test_owners_and_nearest():
    sc = _hand_scorer()
    # Layer 0: cluster 0 is class 0's, cluster 1 class 1's; layer 1: cluster 0 class 0's,
    # cluster 1 is tied (1 and 1) -> argmax picks class 0.
    assert {c: v.tolist() for c, v in sc.owners_[0].items()} == {0: [0], 1: [1]}
    assert {c: v.tolist() for c, v in sc.owners_[1].items()} == {0: [0, 1], 1: [1]}
    D = np.array([[1.0, 3.0], [2.0, 0.5], [4.0, 1.0]])
    own, other = nearest_distances(sc.owners_[0], D, np.array([0, 1, 9]))
    assert own.tolist() == [1.0, 0.5, 4.0]  # class 9 never seen: the farthest centroid
    assert other.tolist() == [3.0, 2.0, 1.0]


def test_euclidean_geometry_matches_signature_distances(fitted):
    store, analysis = fitted
    sc = SignatureScorer(geometry="euclidean").fit(analysis, store)
    sigs = analysis.signatures(store, "test")
    every = np.ones(sigs.predictions.size, dtype=bool)
    ids, geo = split_distances(analysis, sc.owners_, store, "test", sigs, sigs.predictions,
                               every, cosine=False, features=True)
    np.testing.assert_array_equal(ids, sigs.cluster_ids)
    np.testing.assert_allclose(geo.assigned, sigs.distances, rtol=1e-4, atol=1e-4)
    hard = SignatureScorer(geometry="euclidean", components=["disagreement", "centroid_distance"])
    out = hard.fit(analysis, store).score(store, "test")
    assert list(out) == ["disagreement", "centroid_distance", "combined"]
    assert not hard._needs_features()  # the signatures' own distances suffice
    cos = SignatureScorer().fit(analysis, store)
    _, g = split_distances(analysis, cos.owners_, store, "test", sigs, sigs.predictions,
                           every, cosine=True, features=True)
    assert (g.assigned <= 2 + 1e-9).all() and (g.own <= g.assigned + 1e-9).any()


def test_scorer_input_errors(fitted):
    store, analysis = fitted
    with pytest.raises(ValueError, match="distance_combine"):
        SignatureScorer(distance_combine="max").fit(analysis, store)
    with pytest.raises(ValueError, match=r"components.*among.*got \[.nope.\]"):
        SignatureScorer(components=["nope"]).fit(analysis, store)
    sc = _hand_scorer()
    with pytest.raises(Exception, match="fit_arrays"):
        sc.score(store, "test")
    with pytest.raises(ValueError, match="shape"):
        sc.component_scores(np.zeros((2, 3), int), np.zeros((2, 3)), [0, 0])


@pytest.mark.filterwarnings("ignore:The fit split .* has no misclassified sample")
def test_saved_scores_go_stale_when_the_split_is_recaptured(tmp_path):
    from nnsig_core.analysis.synthetic import make_blob_store
    from nnsig_core.store import StoreError

    path = tmp_path / "s.zarr"
    make_blob_store(path)
    store = open_store(path, mode="r+")
    analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    analysis.save(store, "a")
    scores = signature_scores(analysis, store, "test", save=True)
    np.testing.assert_array_equal(load_scores(store, "a", "test")["combined"], scores["combined"])
    make_blob_store(store, splits=("test",), seed=1, overwrite=True)
    with pytest.raises(StoreError, match="predate"):
        load_scores(open_store(path), "a", "test")


def test_an_unlabelled_fit_split_is_named_alike_by_scores_and_baselines(tmp_path):
    """An analysis fitted with only_correct=False on an unlabelled split: the scores and the
    baselines both say that they need the fit split's labels (the baselines advised
    only_correct=False, which it already was)."""
    rng = np.random.default_rng(6)
    path = tmp_path / "n.zarr"
    for split in ("train", "test"):
        acts, logits, _ = _split(rng, 200)
        capture_arrays(acts, logits, None, path, split=split, progress=False)
    store = open_store(path, mode="r+")
    an = SignatureAnalysis(n_clusters=3, only_correct=False, progress=False).fit(store, "train")
    need = r"fit split 'train' has no labels; the (signature scores|baselines) .*only_correct=False does not help"
    with pytest.raises(MissingLabelsError, match=need):
        signature_scores(an, store, "test")
    with pytest.raises(MissingLabelsError, match=need):
        baseline_scores(an, store, "test")


@pytest.mark.filterwarnings("ignore:only_correct=True leaves out class")
@pytest.mark.filterwarnings("ignore:Scoring split .val.")
def test_a_class_left_out_for_want_of_correct_samples_is_not_called_novel(tmp_path):
    """A class of the fit split that the model never gets right is left out of the analysis;
    a validation split holding it is refused with that reason and the fix that works
    (only_correct=False), not with "hold out known classes", which it already is. A class
    left out by ``classes=`` is novel, as before."""
    rng = np.random.default_rng(7)
    path = tmp_path / "c.zarr"
    for split, n in (("train", 600), ("val", 300)):
        acts, logits, y = _split(rng, n)
        logits[y == 2] = np.array([5.0, 0.0, 0.0], dtype=np.float32)  # never right on class 2
        capture_arrays(acts, logits, y, path, split=split, progress=False)
    store = open_store(path, mode="r+")
    an = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    assert an.classes_ == [0, 1]
    with pytest.raises(NovelClassError, match=r"classes \[2\] that the fit split has but the "
                       r"analysis left out.*only_correct=False.*--all-samples"):
        signature_scores(an, store, "val", validation_split="val", save=False)
    fixed = SignatureAnalysis(n_clusters=3, only_correct=False, progress=False).fit(store, "train")
    assert np.isfinite(signature_scores(fixed, store, "val", validation_split="val",
                                        save=False)["combined"]).all()
    subset = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train", classes=[0, 1])
    with pytest.raises(NovelClassError, match="hold out a validation split of known classes"):
        signature_scores(subset, store, "val", validation_split="val", save=False)
