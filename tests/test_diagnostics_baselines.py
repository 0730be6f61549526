"""Baselines: crafted logits, far points, brute-force references, fitting from a store."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnsig_core import NnsigWarning, capture_arrays, open_store
from nnsig_core.diagnostics import Baselines
from nnsig_core.diagnostics.detectors import (
    ActivationPatternMonitor,
    KNNDistance,
    MahalanobisDistance,
    energy_score,
    max_softmax_score,
    pack_patterns,
    popcount,
)


def hamming_min_bruteforce(queries, patterns) -> np.ndarray:
    """Reference: min over rows of ``patterns`` of the Hamming distance to each query
    (both boolean (n, d)); an empty ``patterns`` gives ``d``."""
    Q = np.asarray(queries, dtype=bool)
    P = np.asarray(patterns, dtype=bool)
    if P.shape[0] == 0:
        return np.full(Q.shape[0], Q.shape[1], dtype=np.int64)
    return np.array([(q[None, :] != P).sum(axis=1).min() for q in Q], dtype=np.int64)


def test_msp_and_energy_on_crafted_logits():
    logits = np.array([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 2.0, 0.0], [100.0, 99.0, -50.0]])
    msp = max_softmax_score(logits)
    assert msp[0] == pytest.approx(-1 / (1 + 2 * np.exp(-10)))
    assert msp[1] == pytest.approx(-1 / 3)
    assert msp[3] == pytest.approx(-1 / (1 + np.exp(-1)))  # no overflow
    assert msp[1] > msp[2] > msp[0]  # uniform is the most suspicious
    e = energy_score(logits)
    assert e[1] == pytest.approx(-np.log(3))
    assert e[3] == pytest.approx(-(100 + np.log1p(np.exp(-1))))
    assert e[0] < e[2] < e[1]
    assert energy_score(logits, temperature=2.0)[1] == pytest.approx(-2 * np.log(3))
    # One logit: a binary classifier, logits (0, z).
    assert max_softmax_score(np.array([[0.0], [5.0]])).tolist() == pytest.approx(
        [-0.5, -1 / (1 + np.exp(-5))])
    with pytest.raises(ValueError):
        energy_score(logits, temperature=0)


def _blobs(rng, n=300, d=6):
    y = rng.integers(0, 3, n)
    centers = np.eye(d)[:3] * 8
    return centers[y] + rng.normal(size=(n, d)), y


def test_mahalanobis_matches_formula_and_flags_far_points():
    rng = np.random.default_rng(0)
    X, y = _blobs(rng)
    m = MahalanobisDistance().fit(X, y)
    mus = np.stack([X[y == c].mean(0) for c in range(3)])
    R = X - mus[y]
    P = np.linalg.inv(R.T @ R / len(X))
    q = np.vstack([X[:5], [[30, 30, 0, 0, 0, 0]], [[0, 0, 0, 20, 0, 0]]])
    ref = np.array([min((x - mu) @ P @ (x - mu) for mu in mus) for x in q])
    assert m.score(q) == pytest.approx(ref, rel=1e-6)
    assert m.score(q)[5:].min() > m.score(X).max()


def test_mahalanobis_singular_covariance():
    rng = np.random.default_rng(1)
    X, y = _blobs(rng)
    X = np.hstack([X, np.zeros((len(X), 3))])  # dead units
    m = MahalanobisDistance().fit(X, y)
    assert m.rank_ == 6
    assert np.isfinite(m.score(X)).all()


def test_knn_matches_bruteforce_and_chunking():
    rng = np.random.default_rng(2)
    X, _ = _blobs(rng, n=200)
    q = np.vstack([rng.normal(size=(20, 6)) + 8 * np.eye(6)[0], -np.ones((1, 6))])
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    V = q / np.linalg.norm(q, axis=1, keepdims=True)
    D = np.sqrt(((V[:, None, :] - U[None, :, :]) ** 2).sum(-1))
    ref = np.sort(D, axis=1)[:, 9]
    knn = KNNDistance(k=10).fit(X)
    assert knn.score(q) == pytest.approx(ref, abs=1e-5)
    tiny = KNNDistance(k=10, memory_limit=1).fit(X)  # one query per chunk
    assert tiny.score(q) == pytest.approx(ref, abs=1e-5)
    assert knn.score(q)[-1] > knn.score(q)[:-1].max()  # the opposite direction is far
    with pytest.warns(NnsigWarning, match="only 200 training samples; using k=200"):
        assert KNNDistance(k=500).fit(X).k_ == 200


def test_popcount_and_packing():
    w = np.array([0, 1, 3, 2**63, 2**64 - 1], dtype=np.uint64)
    assert popcount(w).tolist() == [0, 1, 2, 1, 64]
    B = np.zeros((2, 70), bool)
    B[0, [0, 65, 69]] = True
    W = pack_patterns(B)
    assert W.shape == (2, 2) and popcount(W).sum(1).tolist() == [3, 0]


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    d=st.integers(1, 140),
    n_train=st.integers(0, 40),
    n_query=st.integers(1, 25),
)
def test_pattern_monitor_matches_bruteforce(data, d, n_train, n_query):
    train = data.draw(hnp.arrays(bool, (n_train, d)))
    y = data.draw(hnp.arrays(np.int64, (n_train,), elements=st.integers(0, 2)))
    queries = data.draw(hnp.arrays(bool, (n_query, d)))
    pred = data.draw(hnp.arrays(np.int64, (n_query,), elements=st.integers(0, 3)))
    budget = data.draw(st.sampled_from([1, 64, 1 << 20]))
    mon = ActivationPatternMonitor(memory_limit=budget).fit_patterns(train, y)
    got = mon.score_patterns(queries, pred)
    want = np.array([hamming_min_bruteforce(q[None], train[y == c])[0]
                     for q, c in zip(queries, pred, strict=True)])
    np.testing.assert_array_equal(got, want)


def test_pattern_monitor_on_activations():
    X = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    mon = ActivationPatternMonitor().fit(X, [0, 0, 1])
    q = np.array([[0.0, 3.0, 0.1], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    assert mon.score(q, [0, 0, 1]).tolist() == [0, 1, 1]
    assert mon.score(q, [2, 2, 2]).tolist() == [3, 3, 3]  # class never seen: all units differ
    assert mon.accepts(q, [0, 0, 1], gamma=0).tolist() == [True, False, False]


def test_baselines_from_store(tmp_path):
    rng = np.random.default_rng(3)
    X, y = _blobs(rng, n=400)
    H = np.maximum(X, 0).astype(np.float32)
    logits = (np.eye(3)[y] * 6 + rng.normal(size=(400, 3))).astype(np.float32)
    path = tmp_path / "s.zarr"
    capture_arrays({"h1": H, "h2": H[:, ::-1].copy()}, logits, y, path, split="train",
                   progress=False)
    Xt = np.vstack([H[:50], np.full((10, 6), 25.0, np.float32)])
    lt = np.vstack([logits[:50], np.zeros((10, 3), np.float32)])
    capture_arrays({"h1": Xt, "h2": Xt[:, ::-1].copy()}, lt, np.r_[y[:50], np.zeros(10, int)],
                   path, split="test", progress=False)
    store = open_store(path)
    b = Baselines(k=5).fit(store, "train")
    assert b.layer_ == "h2"
    s = b.score(store, "test")
    assert list(s) == ["msp", "energy", "mahalanobis", "knn", "pattern"]
    for name in ("msp", "energy", "mahalanobis"):
        assert s[name][50:].min() > s[name][:50].max(), name
    assert s["knn"][50:].mean() > s["knn"][:50].mean()
    only = Baselines(which=["msp"]).fit(store, "train").score(store, "test")
    assert list(only) == ["msp"]
    with pytest.raises(ValueError, match="'which'.*among"):
        Baselines(which=["nope"]).fit(store, "train")
    with pytest.warns(NnsigWarning, match="using k="):
        Baselines(k=1000).fit(store, "train")


@pytest.mark.slow
def test_baselines_stay_within_memory_limit(tmp_path):
    """A layer eight times larger than memory_limit is read in chunks, never whole: the peak
    of traced memory stays under half the layer (per-sample score vectors and Mahalanobis's
    d x d matrices come on top of the limit)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n, d, limit = 8192, 128, 1 << 19
    path = tmp_path / "big.zarr"
    for split in ("train", "test"):
        y = rng.integers(0, 4, n)
        H = (rng.normal(size=(n, d)) + 2 * y[:, None]).astype(np.float32)
        logits = (np.eye(4)[y] * 3).astype(np.float32)
        capture_arrays({"h": H}, logits, y, path, split=split, chunk_bytes=1 << 16,
                       progress=False)
    store = open_store(path)
    layer_bytes = n * d * 4
    assert layer_bytes >= 8 * limit
    tracemalloc.start()
    with pytest.warns(NnsigWarning, match="random subsample"):
        b = Baselines(k=5, memory_limit=limit).fit(store, "train")
        s = b.score(store, "test")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < layer_bytes / 2, f"peak {peak / 2**20:.1f} MiB, layer {layer_bytes / 2**20} MiB"
    assert b.n_fit_samples_ == n and b.n_knn_samples_ < n and b.n_pattern_samples_ <= n
    assert all(v.shape == (n,) and np.isfinite(v).all() for v in s.values())
    full = Baselines(k=5, which=["mahalanobis"]).fit(store, "train").score(store, "test")
    np.testing.assert_allclose(s["mahalanobis"], full["mahalanobis"], rtol=1e-6)
