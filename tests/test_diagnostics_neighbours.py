"""The scorer's own statistics (class-conditional neighbours), the layer combiner, the default
path, and saved scores across versions (0.1's format written by hand)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnsig_core import NnsigWarning, capture_arrays, open_store
from nnsig_core.analysis.engine import SignatureAnalysis
from nnsig_core.diagnostics import SCORES, SignatureScorer, detection_metrics, signature_scores
from nnsig_core.diagnostics.combine import LayerCombiner
from nnsig_core.diagnostics.neighbours import ClassNeighbours, component_logs, normalise_rows
from nnsig_core.diagnostics.persist import (
    SCORES_FORMAT,
    LegacyScoresError,
    load_scores,
    saved_score_splits,
    saved_scores_format,
)
from nnsig_core.store import StoreError


def _brute(X, Xref, yref, classes, k=1, reduce=None):
    """Distance of each row of X to the k-th nearest reference row of each class, computed
    from the formula (normalise, centre, optionally project, add the residual)."""
    U, R = normalise_rows(X).astype(np.float64), normalise_rows(Xref).astype(np.float64)
    mean = R.mean(axis=0)
    U, R = U - mean, R - mean
    if reduce is not None:
        Zu, Zr = U @ reduce, R @ reduce
        res2 = np.maximum((U * U).sum(1) - (Zu * Zu).sum(1), 0)
    else:
        Zu, Zr, res2 = U, R, np.zeros(len(U))
    out = np.empty((len(X), len(classes)))
    for j, c in enumerate(classes):
        d2 = ((Zu[:, None, :] - Zr[yref == c][None]) ** 2).sum(-1)
        out[:, j] = np.sqrt(np.sort(d2, axis=1)[:, min(k, d2.shape[1]) - 1] + res2)
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3), st.integers(2, 4))
def test_class_distances_match_the_formula(seed, k, n_classes):
    rng = np.random.default_rng(seed)
    d = 5
    y = np.r_[np.arange(n_classes), rng.integers(0, n_classes, 40)]
    X = np.abs(rng.normal(size=(y.size, d))) + 0.01
    Q = np.abs(rng.normal(size=(7, d))) + 0.01
    cn = ClassNeighbours(n_components=8).fit_arrays({"a": X}, y)  # d <= n_components: centred
    got = cn.layer("a").class_distances(Q, n_neighbors=k)
    np.testing.assert_allclose(got, _brute(Q, X, y, range(n_classes), k), rtol=1e-4, atol=1e-5)


def test_reduced_space_and_residual():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    X = np.abs(rng.normal(size=(300, 12))) + 3 * np.eye(12)[y]
    cn = ClassNeighbours(n_components=4).fit_arrays({"a": X}, y)
    ln = cn.layer("a")
    assert ln.components_.shape == (12, 4) and 0 < ln.explained_variance_ratio_ < 1
    Q = np.abs(rng.normal(size=(9, 12)))
    np.testing.assert_allclose(ln.class_distances(Q),
                               _brute(Q, X, y, [0, 1, 2], reduce=ln.components_.astype(float)),
                               rtol=1e-4, atol=1e-5)
    # The residual keeps what the axes leave out: never nearer than in the reduced space.
    Z, res2 = ln.transform(Q)
    assert (res2 >= 0).all() and res2.max() > 0


def test_leave_one_out_and_own_other():
    X = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    y = np.array([0, 0, 1, 1])
    ln = ClassNeighbours().fit_arrays({"a": X}, y, rows=np.array([10, 11, 12, 13])).layer("a")
    D = ln.class_distances(X)
    assert np.allclose(D[[0, 1], 0], 0, atol=1e-3) and np.allclose(D[[2, 3], 1], 0, atol=1e-3)
    loo = ln.class_distances(X, exclude_rows=np.array([10, 11, 12, 99]))
    assert loo[0, 0] > 0.05 and loo[1, 0] > 0.05 and loo[2, 1] > 0.05
    assert loo[3, 1] == pytest.approx(0, abs=1e-3)  # 99 is no reference row: nothing left out
    own, other = ln.own_other(D, [0, 0, 1, 7])
    assert own[0] == pytest.approx(D[0, 0]) and other[0] == pytest.approx(D[0, 1])
    assert own[3] == pytest.approx(D[3].max())  # an unknown predicted class: the farthest
    logs = component_logs(np.array([1.0, 0.0]), np.array([np.e, np.inf]))
    assert logs["distance"][0] == 0 and logs["margin"][0] == pytest.approx(-1.0)
    assert np.isfinite(logs["distance"][1]) and logs["margin"][1] == 0


def test_memory_limit_subsamples_the_reference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    X = rng.normal(size=(2000, 4))
    with pytest.warns(NnsigWarning, match="subsample"):
        cn = ClassNeighbours(n_components=4, memory_limit=32 * 1024)
        cn._select(np.arange(2000), y, 1, 4)
    with pytest.raises(ValueError, match="n_components"):
        ClassNeighbours(n_components=0).fit_arrays({"a": X}, y)


def _layers(rng, n, shift):
    """Two layers of (distance, margin) components; layer "b" carries the signal."""
    return {"a": {"distance": rng.normal(size=n), "margin": rng.normal(size=n)},
            "b": {"distance": rng.normal(size=n) + shift, "margin": rng.normal(size=n) + shift}}


def test_layer_combiner_standardises_chooses_and_guards():
    rng = np.random.default_rng(0)
    ref = _layers(rng, 500, 0.0)
    ref["a"]["distance"] = 3 + 2 * ref["a"]["distance"]
    target = rng.random(600) < 0.3
    tune = _layers(rng, 600, 0.0)
    for t in ("distance", "margin"):
        tune["b"][t] = tune["b"][t] + 2 * target
    comb = LayerCombiner().fit(ref, tune, target)
    assert comb.selected_ == ["b"] and comb.tuning_auroc_ > 0.85
    assert comb.mean_[("a", "distance")] == pytest.approx(3, abs=0.3)
    assert comb.scale_[("a", "distance")] == pytest.approx(2, abs=0.2)
    Z = comb.standardised(ref)
    assert np.abs(Z.mean(axis=0)).max() < 1e-9 and np.allclose(Z.std(axis=0), 1)
    # Inside every layer's reference range the guard adds nothing ...
    inside = comb.transform(ref)
    want = (Z[:, 1, 0] + Z[:, 1, 1]) / 2
    np.testing.assert_allclose(inside, want)
    # ... and a sample far outside the range of the layer left out is still flagged.
    far = copy.deepcopy({k: {t: v[:1] for t, v in d.items()} for k, d in ref.items()})
    mu, sd = comb.mean_[("a", "distance")], comb.scale_[("a", "distance")]
    far["a"]["distance"] = np.array([mu + sd * (comb.range_["a"] + 50)])
    assert comb.transform(far)[0] > inside.max()
    assert comb.transform(far)[0] == pytest.approx(
        want[0] + np.log1p(50), rel=1e-6)
    no_guard = LayerCombiner(guard=False).fit(ref, tune, target)
    assert no_guard.transform(far)[0] == pytest.approx(want[0])
    untuned = LayerCombiner().fit(ref)
    assert untuned.selected_ == ["a", "b"] and untuned.tuned_ is False
    with pytest.raises(ValueError, match="all negatives"):
        LayerCombiner().fit(ref, tune, np.zeros(600, bool))
    with pytest.raises(ValueError, match="subset"):
        comb.transform(ref, layers=["zz"])
    with pytest.raises(ValueError, match="margin"):
        LayerCombiner().fit({"a": {"distance": np.zeros(3)}})


def test_greedy_layer_choice_beyond_max_exhaustive():
    rng = np.random.default_rng(1)
    n = 400
    target = rng.random(n) < 0.3
    ref = {f"l{i}": {"distance": rng.normal(size=n), "margin": rng.normal(size=n)}
           for i in range(5)}
    tune = {f"l{i}": {t: rng.normal(size=n) + (2 * target if i in (1, 3) else 0)
                      for t in ("distance", "margin")} for i in range(5)}
    exhaustive = LayerCombiner().fit(ref, tune, target)
    greedy = LayerCombiner(max_exhaustive=2).fit(ref, tune, target)
    assert set(exhaustive.selected_) >= {"l1", "l3"}
    assert set(greedy.selected_) >= {"l1", "l3"}
    assert greedy.tuning_auroc_ <= exhaustive.tuning_auroc_ + 1e-12


# ---------------------------------------------------------------------------- default path
def _blobs(rng, n, n_classes, d=10, flip=0.0, novel=0):
    """Class blobs in two ReLU layers; ``flip`` of the samples predicted wrongly with their
    activations moved halfway to the predicted class; ``novel`` samples of a new class."""
    centres = [np.abs(np.random.default_rng(k).normal(0, 1, (n_classes + 1, d))) * 4
               for k in (11, 12)]
    y = rng.integers(0, n_classes, n)
    pred = y.copy()
    wrong = rng.random(n) < flip
    pred[wrong] = (y[wrong] + 1) % n_classes
    y = np.r_[y, np.full(novel, n_classes)]
    pred = np.r_[pred, rng.integers(0, n_classes, novel)]
    acts = {}
    for name, C in zip(("a", "b"), centres, strict=True):
        base = C[y].copy()
        base[: wrong.size][wrong] = 0.5 * (C[y[: wrong.size][wrong]] + C[pred[: wrong.size][wrong]])
        acts[name] = np.maximum(base + rng.normal(0, 1, base.shape), 0).astype(np.float32)
    logits = (5 * np.eye(n_classes)[pred] + rng.normal(0, 0.1, (y.size, n_classes)))
    return acts, logits.astype(np.float32), y


@pytest.fixture(scope="module")
def blob_store(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("nb") / "s.zarr"
    for split, kw in (("train", dict(n=1200, flip=0.05)), ("val", dict(n=500, flip=0.1)),
                      ("test", dict(n=500, flip=0.1, novel=100))):
        acts, logits, y = _blobs(rng, n_classes=4, **kw)
        capture_arrays(acts, logits, y, path, split=split, progress=False)
    store = open_store(path, mode="r+")
    return store, SignatureAnalysis(progress=False).fit(store, "train")


def test_default_path_detects_errors_and_novel_samples(blob_store):
    store, analysis = blob_store
    assert analysis.n_clusters_ == [10, 10]  # SignatureAnalysis() with no argument
    y, p = store.labels("test"), store.predictions("test")
    novel, wrong = y == 4, (y != p) & (y < 4)
    for val in ("val", None):
        scores = signature_scores(analysis, store, "test", validation_split=val)
        assert list(scores) == [*SCORES, "combined", *(["p_value"] if val else [])]
        comb = scores["combined"]
        assert np.isfinite(comb).all()
        assert detection_metrics(comb, novel)["auroc"] > 0.95, val
        assert detection_metrics(comb[y < 4], wrong[y < 4])["auroc"] > 0.85, val
    sc = SignatureScorer().fit(analysis, store)
    assert sc.validation_split_ is None and sc.describe()["combination"]["method"] == "layers"
    sc.calibrate(store, "val")
    desc = sc.describe()
    n_ok = int((store.labels("val") == store.predictions("val")).sum())
    # Half of the validation split's correct samples calibrate the conformal threshold only.
    assert desc["validation_split"] == "val" and desc["n_conformal"] == n_ok // 2
    assert desc["combination"]["n_reference"] == n_ok - n_ok // 2
    out, layers = sc.score(store, "test", return_layers=True)
    assert set(layers) == {"a", "b"}
    np.testing.assert_allclose(sc.layer_combiner_.transform(layers), out["combined"])
    # The fit split is scored leave-one-out: its correct samples look like unseen ones.
    tr = sc.score(store, "train")["combined"]
    ok_tr = store.labels("train") == store.predictions("train")
    ok_val = store.labels("val") == store.predictions("val")
    val_c = sc.score(store, "val")["combined"]
    assert abs(np.median(tr[ok_tr]) - np.median(val_c[ok_val])) < 0.5


@pytest.mark.slow
def test_method_rank_combines_every_component(blob_store):
    store, analysis = blob_store
    scores = signature_scores(analysis, store, "test", validation_split="val", method="rank")
    comb = scores["combined"]
    assert 0 <= comb.min() and comb.max() <= 1


# ---------------------------------------------------------------------------- saved scores
def test_analysis_saved_without_scores_loads(blob_store):
    store, analysis = blob_store
    copy.deepcopy(analysis).save(store, "bare", overwrite=True)
    loaded = SignatureAnalysis.load(store, "bare")
    assert saved_score_splits(store, "bare") == []
    with pytest.raises(StoreError, match="No saved scores"):
        load_scores(store, "bare", "test")
    assert loaded.n_clusters_ == analysis.n_clusters_
    s = signature_scores(loaded, store, "test", save=True)
    assert saved_scores_format(store, "bare", "test") == SCORES_FORMAT
    np.testing.assert_array_equal(load_scores(store, "bare", "test")["combined"], s["combined"])


def test_scores_saved_by_0_1_are_refused_or_read(blob_store):
    """0.1 (git 5ce32a6) wrote analysis/<name>/scores/<split>/<score> float64 arrays and the
    attribute nnsig_scores without a scores_format; written here by hand with zarr."""
    store, analysis = blob_store
    copy.deepcopy(analysis).save(store, "old", overwrite=True)
    n = store.n_samples("test")
    old = {"path_surprisal": np.linspace(0, 1, n), "combined": np.linspace(1, 0, n)}
    # zarr's groups through nnsig's store, which follows the analysis's pointer (issue 22)
    root = open_store(store.path, mode="r+").root
    g = root.require_group("analysis/old/scores").create_group("test")
    g.attrs["nnsig_scores"] = {"split": "test", "n_samples": n,
                               "fingerprint": store.fingerprint("test"),
                               "scores": list(old), "alpha": 1.0, "geometry": "cosine",
                               "combination": {"method": "rank", "tuned": False}}
    for k, v in old.items():
        g.create_array(k, data=v, chunks=(n,), dimension_names=["sample"])
    fresh = open_store(store.path)
    assert saved_score_splits(fresh, "old") == ["test"]
    assert saved_scores_format(fresh, "old", "test") == 1
    with pytest.raises(LegacyScoresError, match=r"nnsig 0\.1.*legacy=True"):
        load_scores(fresh, "old", "test")
    with pytest.warns(NnsigWarning, match=r"0\.1"):
        back = load_scores(fresh, "old", "test", legacy=True)
    assert list(back) == list(old)
    for k, v in old.items():
        np.testing.assert_array_equal(back[k], v)
    # The analysis next to them still loads, and saving new scores replaces the old ones
    # (they came from no scorer of this version; scored again at once, nothing to warn of).
    loaded = SignatureAnalysis.load(fresh, "old")
    signature_scores(loaded, open_store(store.path, mode="r+"), "test", save=True)
    assert saved_scores_format(open_store(store.path), "old", "test") == SCORES_FORMAT
    assert list(load_scores(open_store(store.path), "old", "test")) == [*SCORES, "combined"]


@pytest.mark.parametrize("r", [5, 40], ids=["narrow", "partial-test"])
@pytest.mark.parametrize("cell_rows", [1, 7, 10_000])
def test_the_cell_search_finds_the_brute_force_s_neighbours(monkeypatch, cell_rows, r) -> None:
    """The pruned search (cells with bounds; rows wide enough: the partial-distance test too)
    returns the brute force's own and other distances, leave-one-out included, and an unknown
    predicted class still takes the largest class distance; from one-row cells to one cell
    per class."""
    from nnsig_core.diagnostics import cells
    from nnsig_core.diagnostics.reference import LayerNeighbours

    monkeypatch.setattr(cells, "CELL_ROWS", cell_rows)
    monkeypatch.setattr(cells, "STEP_ROWS", 64)  # several steps
    monkeypatch.setattr(cells, "PARTIAL_DIMS", 6)  # on 40 coordinates, not on 5
    rng = np.random.default_rng(3)
    n, C = 600, 4
    y = np.sort(rng.integers(0, C, n))
    Z = (rng.normal(size=(C, r))[y] + 0.6 * rng.normal(size=(n, r))).astype(np.float32)
    Z *= np.geomspace(3.0, 0.05, r, dtype=np.float32)  # variance in the leading coordinates
    offsets = np.r_[np.searchsorted(y, np.arange(C)), n]
    ln = LayerNeighbours(np.zeros(r), None, Z, np.arange(n) * 2, offsets, np.arange(C))
    assert ln._cells.partial_dims == (6 if r == 40 else None)
    X = np.vstack([Z[::3], rng.normal(size=(50, r))]).astype(np.float32)
    preds = np.r_[y[::3], rng.integers(0, C + 1, 50)]  # C: a class the reference lacks
    loo = np.r_[np.arange(0, n, 3) * 2, np.full(50, -5)]
    # The steps on one thread and on a pool of two (whatever BLAS may use in this process:
    # one thread under pytest-xdist, see conftest.py).
    for threads, exclude in [(1, None), (1, loo), (2, None), (2, loo)]:
        monkeypatch.setattr(cells, "search_threads", lambda t=threads: t)
        want = ln.own_other(ln.class_distances(X, 1, exclude), preds)
        got = ln.own_other_of(X, preds, 1, exclude)
        for w, g in zip(want, got, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert np.isinf(ln.own_other_of(X[:3], preds[:3], 1, None)[1]).sum() == 0


def test_neighbour_distances_do_not_depend_on_the_rows_searched_with_them(monkeypatch) -> None:
    """A row's own and other distances are the same, to the bit, whether it is searched in one
    block, in blocks of 7 rows or alone, on one thread or two: the local driver's blocks span
    several chunks where a Dask worker's are one chunk (the float32 search only ranks; the
    distances to the rows it finds are taken again in float64)."""
    from nnsig_core.diagnostics import cells
    from nnsig_core.diagnostics.reference import LayerNeighbours

    rng = np.random.default_rng(5)
    n, d, r, C = 900, 96, 24, 5
    y = np.sort(rng.integers(0, C, n))
    X = (rng.normal(size=(C, d))[y] + 0.8 * rng.normal(size=(n, d))).astype(np.float32)
    neighbours = ClassNeighbours(n_components=r).fit_arrays({"h": X}, y)
    ln = neighbours.layer("h")
    assert isinstance(ln, LayerNeighbours) and ln.components_ is not None
    Q = np.vstack([X[::12], rng.normal(size=(20, d))]).astype(np.float32)
    preds = np.r_[y[::12], rng.integers(0, C, 20)]
    loo = np.r_[np.arange(0, n, 12), np.full(20, -1)]
    for threads in (1, 2):
        monkeypatch.setattr(cells, "search_threads", lambda t=threads: t)
        whole = ln.own_other_of(Q, preds, 1, loo)
        for size, rows in ((7, len(Q)), (1, 12)):
            parts = [ln.own_other_of(Q[i:i + size], preds[i:i + size], 1, loo[i:i + size])
                     for i in range(0, rows, size)]
            for k in (0, 1):
                np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]),
                                              whole[k][:rows])
