"""Discretizer: the prototype's global equal-width bins, per-unit bins, quantiles, binary, streaming."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import KBinsDiscretizer

from nnsig_core._util import parse_bytes
from nnsig_core.analysis import Discretizer, parse_discretizer_spec
from nnsig_core.analysis._util import Reservoir


def _relu_data(n: int = 300, f: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(n, f)) * rng.uniform(0.5, 3, size=f), 0)
    x[:, 0] = 0.0  # a dead unit
    return x.astype(np.float32)


def test_uniform_layer_scope_is_the_prototype_binning() -> None:
    X = _relu_data()
    d = Discretizer(strategy="uniform", n_bins=10).fit(X)
    lo, hi = X.min(), X.max()
    np.testing.assert_allclose(d.bin_edges_, np.linspace(lo, hi, 11))
    expected = np.clip(np.floor((X - lo) / (hi - lo) * 10), 0, 9).astype(int)
    got = d.transform(X)
    assert got.dtype == np.int16
    # Only values sitting exactly on an inner edge may differ by rounding.
    assert (got != expected).mean() < 1e-3
    assert got.min() == 0 and got.max() == 9


def test_out_of_range_values_fall_in_edge_bins() -> None:
    X = _relu_data()
    for scope in ("layer", "unit"):
        d = Discretizer(strategy="uniform", n_bins=5, scope=scope).fit(X)
        out = d.transform(np.vstack([X.min(axis=0) - 100, X.max(axis=0) + 100]))
        assert (out[0] == 0).all()
        top = np.asarray(d.n_bins_) - 1 if scope == "unit" else d.n_bins_ - 1
        assert (out[1] == top).all()


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_unit_scope_matches_kbinsdiscretizer(strategy: str) -> None:
    X = _relu_data(n=400, f=5, seed=3)
    X[:, 1] = np.random.default_rng(0).normal(size=400)  # a unit with negative values
    ours = Discretizer(strategy=strategy, n_bins=6, scope="unit", subsample=None).fit(X)
    ref = KBinsDiscretizer(n_bins=6, encode="ordinal", strategy=strategy,
                           subsample=None if strategy == "quantile" else 200_000)
    with pytest.warns(UserWarning):  # the dead unit (and merged quantile bins)
        ref.fit(X)
    np.testing.assert_array_equal(ours.transform(X), ref.transform(X).astype(np.int16))
    Y = np.random.default_rng(1).normal(scale=3, size=(50, 5)).astype(np.float32)
    np.testing.assert_array_equal(ours.transform(Y), ref.transform(Y).astype(np.int16))


def test_binary_is_the_relu_on_off_pattern() -> None:
    X = _relu_data()
    d = Discretizer(strategy="binary").fit(X)
    np.testing.assert_array_equal(d.transform(X), (X > 0).astype(np.int16))
    d2 = Discretizer(strategy="binary", threshold=1.0).fit(X)
    np.testing.assert_array_equal(d2.transform(X), (X > 1.0).astype(np.int16))
    assert d2.spec == "binary:1"


def test_quantile_layer_scope_merges_repeated_edges() -> None:
    X = _relu_data(n=500)  # about half exact zeros
    d = Discretizer(strategy="quantile", n_bins=10).fit(X)
    assert d.n_bins_ < 10
    assert np.all(np.diff(d.bin_edges_) > 0)
    counts = np.bincount(d.transform(X).ravel())
    assert counts[0] >= (X == 0).sum()  # every zero in the first bin


def test_constant_layer_gets_one_bin() -> None:
    X = np.full((20, 3), 2.5, dtype=np.float32)
    for scope in ("layer", "unit"):
        d = Discretizer(strategy="uniform", n_bins=4, scope=scope).fit(X)
        assert (d.transform(X) == 0).all()


def _chunks(X: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    bounds = sorted({0, len(X), *[c % (len(X) + 1) for c in cuts]})
    return [X[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=False)]


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 400), max_size=6),
    strategy=st.sampled_from(["uniform", "quantile", "binary"]),
    scope=st.sampled_from(["layer", "unit"]),
)
def test_partial_fit_over_chunks_equals_fit(cuts: list[int], strategy: str, scope: str) -> None:
    X = _relu_data(n=180, f=4, seed=7)
    params = {"strategy": strategy, "n_bins": 5, "scope": scope, "subsample": 120, "random_state": 0}
    ref = Discretizer(**params).fit(X)
    streamed = Discretizer(**params)
    for c in _chunks(X, cuts):
        streamed.partial_fit(c)
    np.testing.assert_array_equal(streamed.transform(X), ref.transform(X))
    if ref.bin_edges_ is not None:
        np.testing.assert_array_equal(streamed.bin_edges_, ref.bin_edges_)


def test_train_bins_are_reused_for_test_data() -> None:
    train, test = _relu_data(seed=1), _relu_data(seed=2) * 1.5
    d = Discretizer(strategy="uniform", n_bins=8).fit(train)
    edges = d.bin_edges_.copy()
    d.transform(test)
    np.testing.assert_array_equal(d.bin_edges_, edges)
    # The same value gets the same bin whichever data set it comes from.
    v = np.array([[0.3] * train.shape[1]], dtype=np.float32)
    np.testing.assert_array_equal(d.transform(v), d.transform(v.copy()))


def test_inverse_transform_gives_bin_centres() -> None:
    X = _relu_data()
    d = Discretizer(strategy="uniform", n_bins=4).fit(X)
    centres = d.inverse_transform(d.transform(X))
    assert np.abs(centres - X).max() <= (X.max() - X.min()) / 8 + 1e-6
    du = Discretizer(strategy="uniform", n_bins=4, scope="unit").fit(X)
    cu = du.inverse_transform(du.transform(X))
    assert cu.shape == X.shape
    assert np.all(np.abs(cu - X) <= (X.max(axis=0) - X.min(axis=0)) / 8 + 1e-6)


def test_state_round_trip() -> None:
    X = _relu_data()
    for d in (Discretizer(strategy="uniform", n_bins=7),
              Discretizer(strategy="quantile", n_bins=5, scope="unit"),
              Discretizer(strategy="binary", threshold=0.2)):
        d.fit(X)
        attrs, arrays = d._state()
        again = Discretizer._from_state(attrs, arrays)
        np.testing.assert_array_equal(again.transform(X), d.transform(X))
        assert again.get_params() == d.get_params()


def test_sklearn_conventions_and_errors() -> None:
    d = Discretizer(strategy="quantile", n_bins=5)
    assert clone(d).get_params() == d.get_params()
    with pytest.raises(NotFittedError):
        d.transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="strategy"):
        Discretizer(strategy="kmeans").fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="scope"):
        Discretizer(scope="neuron").fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="n_bins"):
        Discretizer(n_bins=1).fit(np.zeros((3, 2)))
    fitted = Discretizer().fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2 features"):
        fitted.transform(np.zeros((3, 5)))


def test_parse_discretizer_spec() -> None:
    d = parse_discretizer_spec("uniform:10")
    assert (d.strategy, d.n_bins, d.scope) == ("uniform", 10, "layer")
    d = parse_discretizer_spec("quantile:20:unit")
    assert (d.strategy, d.n_bins, d.scope) == ("quantile", 20, "unit")
    assert parse_discretizer_spec("binary").threshold == 0.0
    assert parse_discretizer_spec("binary:0.5").threshold == 0.5
    assert parse_discretizer_spec("uniform").n_bins == 10
    assert parse_discretizer_spec("none") is None and parse_discretizer_spec(None) is None
    for spec in ("uniform:10", "quantile:5:unit", "binary", "binary:0.5:unit"):
        assert parse_discretizer_spec(spec).spec == spec
    for bad in ("gauss:3", "uniform:x", "uniform:3:4:5"):
        with pytest.raises(ValueError, match="STRATEGY"):
            parse_discretizer_spec(bad)
    with pytest.raises(ValueError, match="n_bins"):
        parse_discretizer_spec("uniform:1")


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(0, 300), max_size=5), size=st.integers(1, 60))
def test_the_reservoir_ignores_chunk_boundaries(cuts: list[int], size: int) -> None:
    X = np.arange(300 * 2, dtype=np.float32).reshape(300, 2)
    ref = Reservoir(size, seed=3)
    ref.add(X)
    r = Reservoir(size, seed=3)
    for c in _chunks(X, cuts):
        r.add(c)
    np.testing.assert_array_equal(r.sample(), ref.sample())
    assert len({tuple(row) for row in r.sample()}) == size  # no duplicates


def test_parse_bytes() -> None:
    assert parse_bytes("2GiB") == 2 << 30
    assert parse_bytes("500MB") == 500_000_000
    assert parse_bytes(1234) == 1234
    assert parse_bytes("1.5kib") == 1536
    with pytest.raises(ValueError, match="GiB"):
        parse_bytes("lots")
