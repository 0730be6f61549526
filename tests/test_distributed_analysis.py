"""The analysis and the diagnostics on a real dask.distributed cluster give the single-process answers."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from distributed import futures_of  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from nnsig_core import capture_arrays, open_store  # noqa: E402
from nnsig_core._util import to_json_safe  # noqa: E402
from nnsig_core.analysis import (  # noqa: E402
    EmptySelectionError,
    MissingLabelsError,
    SignatureAnalysis,
    TooFewSamplesError,
)
from nnsig_core.analysis.lloyd import lloyd  # noqa: E402
from nnsig_core.analysis.synthetic import make_blob_activations, make_blob_store  # noqa: E402
from nnsig_core.diagnostics import Baselines, SignatureScorer, signature_scores  # noqa: E402
from nnsig_core.diagnostics.neighbours import ClassNeighbours, neighbour_scores  # noqa: E402
from nnsig_core.distributed import split_view as dask_view  # noqa: E402
from nnsig_core.report import build_report_data  # noqa: E402
from nnsig_core.store import MissingChunkError  # noqa: E402

BLOBS = dict(n_samples=(1500, 700), error_rate=0.15, separation=6.0, noise=1.5,
             layer_shapes=((8,), (6,), (2, 3)))


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    path = tmp_path_factory.mktemp("blobs") / "b.zarr"
    make_blob_store(path, chunk_bytes=4096, inputs=True, **BLOBS)
    return open_store(path)


VIEWS = ["table", "by_output_class", "by_signature", "cluster_composition"]


def _same_signatures(local, dist, exemplars: bool = True) -> None:
    assert dist.lazy and not local.lazy
    got = dist.compute()
    np.testing.assert_array_equal(got.cluster_ids, local.cluster_ids)
    np.testing.assert_allclose(got.distances, local.distances, rtol=1e-5, atol=1e-5)
    for view in VIEWS:
        assert list(getattr(dist, view)()) == list(getattr(local, view)()), view
    assert list(dist.transitions(include_io=True)) == list(local.transitions(include_io=True))
    np.testing.assert_array_equal(dist.purity(), local.purity())
    np.testing.assert_array_equal(dist.entropy(), local.entropy())
    assert (dist.n_samples, dist.n_signatures, dist.accuracy, dist.n_classes, got.n_classes) == (
        local.n_samples, local.n_signatures, local.accuracy, local.n_classes, local.n_classes)
    if exemplars:  # nearest first, ties by position: equal distances needed
        assert dist.exemplars(n=3) == local.exemplars(n=3)
        assert dist.exemplars(n=2, mask=dist.correct) == local.exemplars(n=2, mask=local.correct)
    assert dist.subset(dist.correct).n_signatures == local.subset(local.correct).n_signatures
    for by in ("input", "output"):
        for a, b in zip(dist.composition(by=by), local.composition(by=by), strict=True):
            np.testing.assert_array_equal(a, b)


def _same_fit(local, dist) -> None:
    assert dist.layers_ == local.layers_ and dist.classes_ == local.classes_
    assert (dist.n_fit_samples_, dist.n_classes_) == (local.n_fit_samples_, local.n_classes_)
    for name, a, b in zip(local.layers_, local.fit_composition_, dist.fit_composition_,
                          strict=True):
        np.testing.assert_array_equal(a, b)
        la, lb = local.clusterers_[name], dist.clusterers_[name]
        assert lb.method_ == la.method_
        np.testing.assert_array_equal(la.fit_counts_, lb.fit_counts_)
        np.testing.assert_allclose(la.cluster_centers_, lb.cluster_centers_, rtol=1e-4,
                                   atol=1e-4)
        assert lb.inertia_ == pytest.approx(la.inertia_, rel=1e-5)


# ---------------------------------------------------------------------------- same answers
def test_a_quick_fit_and_table(client, tmp_path) -> None:
    path = tmp_path / "q.zarr"
    make_blob_store(path, n_samples=(300, 100), layer_shapes=((4,),), error_rate=0.1)
    local = SignatureAnalysis(n_clusters=3, progress=False).fit(path, client=False)
    dist = SignatureAnalysis(n_clusters=3, progress=False).fit(path, client=client)
    _same_fit(local, dist)
    sigs = dist.transform(path, "test", client=client)
    assert list(sigs.table()) == list(local.transform(path, "test", client=False).table())



@pytest.mark.parametrize("discretizer", [None, "uniform:5", "quantile:4", "binary",
                                         "uniform:4:unit", "quantile:3:unit"])
@pytest.mark.slow
def test_the_distributed_fit_gives_the_exact_fit_s_partition(client, blobs, discretizer) -> None:
    """From the same k-means++ seeds (every fit row is in the seeding sample), Lloyd's
    iterations on the cluster reach the partition KMeans reaches: identical canonical ids,
    also on discretized features, whose lattice makes exact ties frequent (they are broken as
    KMeans breaks them). The bins are the single-process bins (quantiles from the same
    reservoir rows)."""
    kw = dict(n_clusters=6, discretizer=discretizer, progress=False)
    local = SignatureAnalysis(**kw).fit(blobs, "train", client=False)
    dist = SignatureAnalysis(**kw).fit(blobs, "train", client=client)
    _same_fit(local, dist)
    for name in local.layers_:
        da, db = local.clusterers_[name].discretizer_, dist.clusterers_[name].discretizer_
        if da is not None and da.bin_edges_ is not None:
            np.testing.assert_array_equal(da.bin_edges_, db.bin_edges_)
    for split in ("train", "test"):
        theirs = dist.transform(blobs, split, client=client)
        # The centres agree to float32 rounding (float64 sums here, float32 in KMeans): on
        # a lattice, exemplars tied in distance may then swap; against the same centres the
        # distances are the same bits.
        _same_signatures(local.transform(blobs, split, client=False), theirs,
                         exemplars=discretizer is None)
        _same_signatures(dist.transform(blobs, split, client=False), theirs)


@pytest.mark.slow
def test_classes_all_samples_and_unit_shapes(client, blobs) -> None:
    kw = dict(n_clusters={"layer0": 3, "layer2": 5}, only_correct=False, progress=False,
              layers=["layer0", "layer2"])
    local = SignatureAnalysis(**kw).fit(blobs, "train", classes=[0, 1, 3], client=False)
    dist = SignatureAnalysis(**kw).fit(blobs, "train", classes=[0, 1, 3], client=client)
    _same_fit(local, dist)
    assert dist.fit_classes_ == [0, 1, 3] and dist.layer_shapes_ == [[8], [2, 3]]
    _same_signatures(local.transform(blobs, "test", client=False),
                     dist.transform(blobs, "test", client=client))


@pytest.mark.parametrize("wide", [False, True], ids=["covariance", "subspace"])
@pytest.mark.slow
def test_the_pca_is_one_algorithm_on_both_drivers(client, blobs, monkeypatch, wide) -> None:
    """The exact PCA (or, for layers too wide for a d x d covariance, the randomized subspace
    iteration) is computed from the same aggregates here and on the cluster: the same
    components as scikit-learn's PCA, and the same partition on both drivers."""
    from sklearn.decomposition import PCA

    from nnsig_core.analysis import pca as pca_module

    if wide:
        monkeypatch.setattr(pca_module, "COVARIANCE_MAX_FEATURES", 4)
    kw = {"n_clusters": 4, "reduce": 3, "progress": False, "layers": ["layer0", "layer1"]}
    local = SignatureAnalysis(**kw).fit(blobs, client=False)
    dist = SignatureAnalysis(**kw).fit(blobs, client=client)
    rows = local.selection_mask(blobs, "train")
    ref = PCA(3).fit(blobs.activations("train", "layer0")[:][rows])
    for analysis in (local, dist):
        red = analysis.clusterers_["layer0"].reducer_
        np.testing.assert_allclose(red.explained_variance_, ref.explained_variance_, rtol=1e-5)
        np.testing.assert_allclose(red.explained_variance_ratio_, ref.explained_variance_ratio_,
                                   rtol=1e-5)
        np.testing.assert_allclose(red.components_, ref.components_, atol=1e-4)
    for name in kw["layers"]:
        a, b = local.clusterers_[name].reducer_, dist.clusterers_[name].reducer_
        np.testing.assert_allclose(a.components_, b.components_, atol=1e-6)
        np.testing.assert_allclose(a.mean_, b.mean_, atol=1e-6)
    _same_fit(local, dist)
    _same_signatures(local.transform(blobs, "test", client=False),
                     dist.transform(blobs, "test", client=client))


@pytest.mark.parametrize("keep", [True, False], ids=["rows-kept", "read-every-pass"])
@pytest.mark.slow
def test_the_out_of_core_fit_is_the_same_on_both_drivers(client, blobs, monkeypatch,
                                                          keep) -> None:
    """Rows over memory_limit take Lloyd's path on both drivers (a seeding sample, then
    iterations as reductions): the same centres and partition, whether the cluster keeps the
    rows in the workers' memory or reads them again at every pass."""
    if not keep:
        monkeypatch.setattr(dask_view, "PERSIST_FRACTION", 0.0)
    kw = dict(n_clusters=5, memory_limit="8KiB", progress=False)
    local = SignatureAnalysis(**kw).fit(blobs, client=False)
    dist = SignatureAnalysis(**kw).fit(blobs, client=client)
    assert {lc.method_ for lc in local.clusterers_.values()} == {"lloyd"}
    assert all(lc.cached_raw_ == keep for lc in dist.clusterers_.values())
    _same_fit(local, dist)
    for a, b in zip(local.clusterers_.values(), dist.clusterers_.values(), strict=True):
        assert a.n_iter_ == b.n_iter_


@pytest.mark.slow
def test_rows_gathered_for_the_exact_fit_come_in_waves_the_workers_can_hold(
        client, blobs, monkeypatch) -> None:
    """Rows within memory_limit but over the workers' memory are gathered in waves of at most
    PERSIST_FRACTION of the cluster's memory (computed at once, 1M rows x 512 on two 1 GiB
    workers killed them): one block per wave here gives the fit of the local driver."""
    waves = []
    real = dask_view._waves
    monkeypatch.setattr(dask_view, "_waves", lambda *a: waves.append(real(*a)) or waves[-1])
    monkeypatch.setattr(dask_view, "PERSIST_FRACTION", 1e-12)
    kw = dict(n_clusters=5, progress=False)
    local = SignatureAnalysis(**kw).fit(blobs, client=False)
    dist = SignatureAnalysis(**kw).fit(blobs, client=client)
    assert {lc.method_ for lc in dist.clusterers_.values()} == {"exact"}
    assert waves and all(len(w) > 1 and all(hi == lo + 1 for lo, hi in w) for w in waves)
    _same_fit(local, dist)


@given(st.lists(st.integers(0, 50), max_size=30), st.integers(1, 16), st.integers(1, 2000))
def test_waves_cover_the_blocks_in_order_within_their_budget(sizes, row_bytes, wave_bytes):
    waves = dask_view._waves(sizes, row_bytes, wave_bytes)
    assert [i for lo, hi in waves for i in range(lo, hi)] == list(range(len(sizes)))
    for lo, hi in waves:
        assert hi > lo
        assert hi == lo + 1 or sum(sizes[lo:hi]) * row_bytes <= wave_bytes


def test_a_lone_part_is_handed_back_without_a_copy_unless_it_is_an_input() -> None:
    """The local driver returns a lone block's part as it is (no copy of a whole layer), but
    never a view of an input column: the caller may change the result in place."""
    from nnsig_core.execute.blocks import map_blocks

    x = np.arange(6.0)
    made: list[np.ndarray] = []
    fresh = map_blocks(lambda col, *, lo: {"v": [made.append(col * 2) or made[-1]]}, [x])["v"]
    assert fresh is made[0]
    view = map_blocks(lambda col, *, lo: {"v": [col[1:]]}, [x])["v"]
    view += 100
    np.testing.assert_array_equal(x, np.arange(6.0))


def test_lloyd_iterations_and_empty_clusters_follow_scikit_learn(client) -> None:
    """On both drivers, the same centres, iterations and stopping point as KMeans from the same seeds, an empty
    cluster (a seed far from every row) moved to the farthest row as KMeans moves it."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, size=(300, 4)) for c in (0, 4, 8)]).astype(np.float32)
    init = np.concatenate([X[[0, 350, 700]], np.full((1, 4), 100.0, np.float32)])
    blocks = [(np.arange(i, i + 150), np.zeros(150, np.int64), X[i : i + 150])
              for i in range(0, 900, 150)]
    from dask import delayed

    from nnsig_core.execute.blocks import fold
    from nnsig_core.execute.dask_blocks import reduce_delayed

    km = KMeans(4, init=init, n_init=1, tol=1e-4, algorithm="lloyd").fit(X)
    on_workers = [delayed(b) for b in client.scatter(blocks)]
    for reduce in (lambda part, merge=None, **kw: fold(blocks, part, merge, **kw),
                   lambda part, merge=None, **kw: reduce_delayed(client, on_workers, part, merge,
                                                                 **kw)):
        res = lloyd(reduce, init, tol=1e-4, max_iter=300)
        np.testing.assert_allclose(res.centers, km.cluster_centers_, rtol=1e-4, atol=1e-4)
        assert res.converged and res.n_iter == km.n_iter_


# ---------------------------------------------------------------------------- errors
@pytest.mark.slow
def test_errors_are_those_of_the_single_process_fit(client, blobs, tmp_path) -> None:
    with pytest.raises(TooFewSamplesError, match="Lower n_clusters"):
        SignatureAnalysis(n_clusters=5000, progress=False).fit(blobs, client=client)
    with pytest.raises(EmptySelectionError, match="labels present are"):
        SignatureAnalysis(progress=False).fit(blobs, classes=[7], client=client)
    data = make_blob_activations(n_samples=60)
    capture_arrays(data["activations"], data["outputs"], None, tmp_path / "u.zarr",
                   progress=False)
    with pytest.raises(MissingLabelsError, match="only_correct=False"):
        SignatureAnalysis(n_clusters=2, progress=False).fit(tmp_path / "u.zarr", client=client)
    a = SignatureAnalysis(n_clusters=2, only_correct=False, progress=False)
    sigs = a.fit(tmp_path / "u.zarr", client=client).transform(tmp_path / "u.zarr", "train",
                                                               client=client)
    assert not sigs.has_labels and np.isnan(sigs.purity()).all()
    with pytest.raises(MissingLabelsError):
        sigs.composition(by="input")


@pytest.mark.slow
def test_nan_in_a_layer_names_the_sample(client, tmp_path) -> None:
    from nnsig_core import NonFiniteActivationError

    data = make_blob_activations(n_samples=300)
    acts = dict(data["activations"])
    acts["layer1"] = acts["layer1"].copy()
    acts["layer1"][217, 2] = np.nan
    capture_arrays(acts, data["outputs"], data["labels"], tmp_path / "n.zarr", progress=False,
                   chunk_bytes=512, keep_nonfinite=True)
    with pytest.raises(NonFiniteActivationError, match="layer 'layer1' of split 'train' at "
                                                       "sample 217 .data set index 217."):
        SignatureAnalysis(n_clusters=2, only_correct=False, progress=False).fit(
            tmp_path / "n.zarr", client=client)


# ---------------------------------------------------------------------------- save, report, scores
@pytest.mark.slow
def test_saved_by_the_workers_and_loaded_anywhere(client, tmp_path) -> None:
    path = tmp_path / "s.zarr"
    make_blob_store(path, chunk_bytes=4096, **BLOBS)
    store = open_store(path, mode="r+")
    dist = SignatureAnalysis(n_clusters=5, progress=False).fit(store, client=client)
    dist.save(store, "d", client=client)
    assert store.verify().ok
    loaded = SignatureAnalysis.load(store, "d")
    local = SignatureAnalysis(n_clusters=5, progress=False).fit(store, client=False)
    for split in ("train", "test"):
        saved = loaded.signatures(store, split, client=False)  # read from the store
        np.testing.assert_array_equal(saved.cluster_ids,
                                      local.transform(store, split, client=False).cluster_ids)
        again = loaded.signatures(store, split, client=client)  # read as dask arrays
        _same_signatures(saved, again)
    dist.save(store, "d", overwrite=True, splits=["test"], client=client)
    assert store.group("analysis/d/signatures/test") is not None
    assert store.group("analysis/d/signatures/train") is None


def _copy(blobs, tmp_path: Path, name: str = "w.zarr"):
    """A writable copy of the blobs store (the fixture is shared, and opened read-only)."""
    shutil.copytree(blobs.path, tmp_path / name)
    return open_store(tmp_path / name, mode="r+")


def _small(store, n_clusters: int = 4) -> SignatureAnalysis:
    return SignatureAnalysis(n_clusters=n_clusters, layers=["layer0", "layer2"],
                             progress=False).fit(store, client=False)


@pytest.mark.slow
def test_transform_of_a_saved_analysis_writes_the_ids_into_the_store(client, blobs,
                                                                     tmp_path) -> None:
    store = _copy(blobs, tmp_path)
    _small(store).save(store, "d", splits=(), client=client)
    loaded = SignatureAnalysis.load(store, "d")
    sigs = loaded.transform(store, "test", client=client)
    grp = store.group("analysis/d/signatures/test")
    assert grp is not None
    local = loaded.transform(store, "test", client=False)
    np.testing.assert_array_equal(grp["cluster_ids"][...], local.cluster_ids)
    attrs = dict(grp.attrs)
    assert attrs["fingerprint"] == to_json_safe(store.fingerprint("test"))
    assert (attrs["split"], attrs["layers"]) == ("test", loaded.layers_)
    assert list(sigs.table()) == list(local.table())
    # Read from the store, not persisted in the workers' memory.
    assert not futures_of(sigs.cluster_ids) and not futures_of(sigs.distances)
    np.testing.assert_array_equal(sigs.compute().cluster_ids, local.cluster_ids)
    # Saving again reuses them; under a new name they are written there too.
    loaded.save(store, "d", overwrite=True, splits=["test"], client=client)
    assert dict(store.group("analysis/d/signatures/test").attrs)["created"] == attrs["created"]
    loaded.save(store, "e", splits=["test"], client=client)
    np.testing.assert_array_equal(store.group("analysis/e/signatures/test")["cluster_ids"][...],
                                  local.cluster_ids)
    grp["cluster_ids"][0, 0] = 99  # the signatures returned read this very array
    assert client.compute(sigs.cluster_ids[0, 0], sync=True) == 99


@pytest.mark.slow
def test_transform_of_an_analysis_not_saved_in_the_store_writes_nothing(client, blobs, tmp_path,
                                                                        caplog) -> None:
    store = _copy(blobs, tmp_path)
    with caplog.at_level(logging.INFO, logger="nnsig"):
        sigs = _small(store).transform(store, "test", client=client)
    assert "analysis.save(store, name, client=...) writes them" in caplog.text
    assert futures_of(sigs.cluster_ids) and store.analyses == []
    # Loaded from another store that holds it under a name this store gives another analysis.
    other = _copy(blobs, tmp_path, "o.zarr")
    _small(other).save(other, "d", splits=(), client=False)
    _small(store, n_clusters=3).save(store, "d", splits=(), client=False)
    SignatureAnalysis.load(other, "d").transform(store, "test", client=client)
    assert store.group("analysis/d/signatures/test") is None


@pytest.mark.slow
def test_transform_on_a_read_only_store_writes_nothing(client, blobs, tmp_path) -> None:
    store = _copy(blobs, tmp_path)
    _small(store).save(store, "d", splits=(), client=False)
    ro = open_store(tmp_path / "w.zarr", mode="r")
    loaded = SignatureAnalysis.load(ro, "d")
    sigs = loaded.transform(ro, "test", client=client)
    assert ro.group("analysis/d/signatures/test") is None
    np.testing.assert_array_equal(sigs.compute().cluster_ids,
                                  loaded.transform(ro, "test", client=False).cluster_ids)


def test_a_failed_write_leaves_no_signatures_group(client, blobs, tmp_path) -> None:
    store = _copy(blobs, tmp_path)
    analysis = _small(store).save(store, "d", splits=(), client=False)
    key = next(d["key"] for d in store.split_attrs("test")["layers"] if d["name"] == "layer0")
    (tmp_path / "w.zarr" / "test" / key / "c" / "3" / "0").unlink()
    with pytest.raises(MissingChunkError, match="layer 'layer0' of split 'test'"):
        analysis.transform(store, "test", client=client)
    assert list(store.group("analysis/d/signatures").keys()) == []


@pytest.mark.slow
def test_report_data_is_the_same(client, blobs) -> None:
    local = SignatureAnalysis(n_clusters=5, progress=False).fit(blobs, client=False)
    scores = {"test": np.linspace(0, 1, blobs.n_samples("test"))}
    scores["test"][::7] = np.nan
    a = build_report_data(local, blobs, scores=scores, client=False)
    b = build_report_data(local, blobs, scores=scores, client=client)
    a.pop("created"), b.pop("created")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.slow
@pytest.mark.parametrize("geometry", ["cosine", "euclidean"])
def test_scores_and_baselines_are_the_same(client, blobs, geometry) -> None:
    local = SignatureAnalysis(n_clusters=6, progress=False).fit(blobs, client=False)
    comps = None if geometry == "cosine" else ["path_surprisal", "disagreement",
                                               "centroid_distance"]
    for validation in ("train", None):  # calibrated, and the fit split's own reference
        # n_components below the layers' widths: the neighbour statistics use principal axes
        kw = dict(geometry=geometry, components=comps, validation_split=validation,
                  n_components=4)
        # The fit split too: its training samples are scored leave-one-out on both drivers.
        for split in ("test", "train"):
            a = signature_scores(local, blobs, split, client=False, **kw)
            b = signature_scores(local, blobs, split, client=client, **kw)
            assert sorted(a) == sorted(b)
            if comps is None:
                assert {"neighbour_distance", "neighbour_margin", "combined"} <= set(a)
            for k in a:
                np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9,
                                           err_msg=f"{split}: {k}")
    fa = Baselines.from_analysis(local, blobs, client=False, memory_limit=4000)
    fb = Baselines.from_analysis(local, blobs, client=client, memory_limit=4000)
    assert fb.n_knn_samples_ == fa.n_knn_samples_ < fa.n_fit_samples_  # subsampled alike
    sa, sb = fa.score(blobs, "test", client=False), fb.score(blobs, "test", client=client)
    for k in sa:
        np.testing.assert_allclose(sb[k], sa[k], rtol=1e-7, atol=1e-9, err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("params", [dict(n_components=4), dict(n_components=4, pca_rows=300),
                                    dict(n_components=4, memory_limit="16KiB"), dict()],
                         ids=["axes", "axes-from-subsample", "over-memory-limit", "narrow"])
def test_neighbour_statistics_are_fitted_and_searched_alike(client, blobs, params) -> None:
    """The scorer's neighbour statistics fitted on the workers are those of the single-process
    fit (same reference subsample, mean, axes and reduced rows), and so are the searches of a
    whole split and of a subset of the fit split left out of its own search."""
    rows = np.flatnonzero(blobs.labels("train") == blobs.predictions("train"))
    y = blobs.labels("train")[rows]
    layers = blobs.layers("train")
    a = ClassNeighbours(**params).fit(blobs, "train", rows, y, layers, client=False)
    b = ClassNeighbours(**params).fit(blobs, "train", rows, y, layers, client=client)
    assert b.n_reference_ == a.n_reference_
    if "memory_limit" in params:
        assert a.n_reference_ < rows.size
    for name in layers:
        la, lb = a.layer(name), b.layer(name)
        assert (la.components_ is None) == (lb.components_ is None) == ("n_components" not in
                                                                         params)
        np.testing.assert_array_equal(lb.reference_rows_, la.reference_rows_)
        np.testing.assert_array_equal(lb.offsets_, la.offsets_)
        np.testing.assert_allclose(lb.mean_, la.mean_, rtol=1e-6, atol=1e-7)
        if la.components_ is not None:
            np.testing.assert_allclose(lb.components_, la.components_, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lb.reference_, la.reference_, rtol=1e-5, atol=1e-6)
        assert lb.explained_variance_ratio_ == pytest.approx(la.explained_variance_ratio_)
    some = rows[::3]
    for split, subset, loo in (("test", None, False), ("train", some, True)):
        preds = blobs.predictions(split)
        preds = preds if subset is None else preds[subset]
        sa = neighbour_scores(a, blobs, split, subset, preds, leave_one_out=loo, client=False)
        sb = neighbour_scores(a, blobs, split, subset, preds, leave_one_out=loo, client=client)
        for name in layers:
            for kind in ("distance", "margin"):
                np.testing.assert_allclose(sb[name][kind], sa[name][kind], rtol=1e-6,
                                           atol=1e-6, err_msg=f"{split} {name} {kind}")


@pytest.mark.slow
def test_the_neighbour_search_reads_no_layer_on_the_driver(client, blobs, monkeypatch) -> None:
    """With a client, fitting the scorer and scoring a split read no activation on the driver
    (the main thread: this cluster's workers are threads of this process); every read of a
    layer that returns values is recorded by thread (``from_zarr`` reads a 0-row slice here
    for its meta), and the single-process search is seen reading here."""
    import threading

    import zarr

    local = SignatureAnalysis(n_clusters=6, progress=False).fit(blobs, client=False)
    paths = {blobs.activations(s, n).path for s in ("train", "test") for n in blobs.layers(s)}
    reads: list[tuple[bool, str]] = []
    getitem = zarr.Array.__getitem__

    def recorded(self: zarr.Array, selection: object) -> object:
        out = getitem(self, selection)
        if self.path in paths and np.size(out):
            reads.append((threading.current_thread() is threading.main_thread(), self.path))
        return out

    monkeypatch.setattr(zarr.Array, "__getitem__", recorded)
    scorer = SignatureScorer(n_components=4).fit(local, blobs, client=client)
    scores = scorer.score(blobs, "test", client=client)
    assert np.isfinite(scores["combined"]).all()
    assert reads and not [p for here, p in reads if here]
    reads.clear()
    neighbour_scores(scorer.neighbours_, blobs, "test", None, blobs.predictions("test"),
                     client=False)
    assert {p for here, p in reads if here} == {blobs.activations("test", n).path
                                                for n in blobs.layers("test")}


# ---------------------------------------------------------------------------- MNIST
def _idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def mnist_relu_store(root: Path, path: Path, n_train: int, n_test: int) -> Path:
    """MNIST through a fixed random ReLU network with a ridge read-out (tests/test_analysis_mnist)."""
    raw = root / "MNIST" / "raw"
    images = {"train": _idx(raw / "train-images-idx3-ubyte")[:n_train],
              "test": _idx(raw / "t10k-images-idx3-ubyte")[:n_test]}
    labels = {"train": _idx(raw / "train-labels-idx1-ubyte")[:n_train].astype(np.int64),
              "test": _idx(raw / "t10k-labels-idx1-ubyte")[:n_test].astype(np.int64)}
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(784, 256)).astype(np.float32) / 10
    w2 = rng.normal(size=(256, 64)).astype(np.float32) / 16

    def hidden(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h1 = np.maximum(x.reshape(len(x), -1).astype(np.float32) / 255 @ w1, 0)
        return h1, np.maximum(h1 @ w2, 0)

    h1, h2 = hidden(images["train"])
    a = np.c_[h1, h2, np.ones(len(h1), np.float32)]
    w_out = np.linalg.solve(a.T @ a + np.eye(a.shape[1]),
                            a.T @ np.eye(10, dtype=np.float32)[labels["train"]])
    for split in ("train", "test"):
        h1, h2 = hidden(images[split])
        out = np.c_[h1, h2, np.ones(len(h1), np.float32)] @ w_out
        capture_arrays(activations={"relu1": h1, "relu2": h2}, outputs=out,
                       labels=labels[split], store=path, split=split, inputs=images[split],
                       class_names=[str(c) for c in range(10)], progress=False)
    return path


@pytest.mark.slow
@pytest.mark.mnist
def test_mnist_same_partition_and_table(client, mnist_root, tmp_path) -> None:
    """On MNIST (10,000 training digits), the distributed fit starts from the exact fit's
    k-means++ seeds and reaches the same partition: identical canonical cluster ids on both
    splits, hence the same signature table; and the same scores to 1e-9 (the neighbour
    distances do not depend on the rows a block holds: a worker's block is one chunk, the
    local driver's many)."""
    store = open_store(mnist_relu_store(mnist_root, tmp_path / "m.zarr", 10_000, 2_000))
    local = SignatureAnalysis(n_clusters=10, progress=False).fit(store, client=False)
    dist = SignatureAnalysis(n_clusters=10, progress=False).fit(store, client=client)
    _same_fit(local, dist)
    for split in ("train", "test"):
        _same_signatures(local.transform(store, split, client=False),
                         dist.transform(store, split, client=client))
    a = signature_scores(local, store, "test", client=False)
    b = signature_scores(local, store, "test", client=client)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-9, atol=1e-9, err_msg=k)
