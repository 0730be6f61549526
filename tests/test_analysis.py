"""SignatureAnalysis on synthetic blobs: recovery, canonical ids, paths, invariances, persistence."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from nnsig_core import open_store
from nnsig_core.analysis import (
    Discretizer,
    SignatureAnalysis,
    Signatures,
    export_prototype,
    format_summary,
)
from nnsig_core.analysis.assign import canonical_order
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.store import StoreError

K = 4  # classes = blobs = clusters


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("blobs") / "s.zarr"
    return make_blob_store(path, n_samples=600, n_classes=K, error_rate=0.05, chunk_bytes=1024)


def _fit(store, **kw) -> SignatureAnalysis:
    kw.setdefault("n_clusters", K)
    kw.setdefault("progress", False)
    return SignatureAnalysis(**kw).fit(store, "train")


def _is_permutation_of_classes(comp: np.ndarray) -> bool:
    """Every class in exactly one cluster and every cluster holds one class."""
    nz = comp > 0
    return bool((nz.sum(axis=0) == 1).all() and (nz.sum(axis=1) == 1).all())


# ---------------------------------------------------------------------------- recovery
def test_blobs_are_recovered_and_paths_are_perfect(blobs) -> None:
    a = _fit(blobs)
    assert a.layers_ == ["layer0", "layer1", "layer2"]
    assert [lc.method_ for lc in a.clusterers_.values()] == ["exact"] * 3
    train = blobs.labels("train")
    correct = train == blobs.predictions("train")
    assert a.n_fit_samples_ == correct.sum()
    assert a.classes_ == list(range(K))
    for comp in a.fit_composition_:
        assert _is_permutation_of_classes(comp)
    for split in ("train", "test"):
        sigs = a.transform(blobs, split)
        assert sigs.cluster_ids.shape == (blobs.n_samples(split), 3)
        assert sigs.n_signatures == K  # one path per class, even for misclassified samples
        np.testing.assert_allclose(sigs.purity(), 1.0)
        np.testing.assert_allclose(sigs.entropy(), 0.0, atol=1e-12)
        # The path determines the input class.
        for row in sigs.by_signature():
            assert row["purity"] == 1.0
        assert sigs.distances.dtype == np.float32 and (sigs.distances >= 0).all()


def test_cluster_ids_are_canonical_first_occurrence(blobs) -> None:
    a = _fit(blobs)
    rows = np.flatnonzero(a.selection_mask(blobs, "train"))
    sigs = a.transform(blobs, "train").subset(rows)
    for j in range(3):
        ids = sigs.cluster_ids[:, j]
        _, first = np.unique(ids, return_index=True)
        assert list(ids[np.sort(first)]) == list(range(K))
    # The first fit sample is in cluster 0 of every layer.
    assert (sigs.cluster_ids[0] == 0).all()


def test_canonical_order_puts_empty_clusters_last() -> None:
    centers = np.array([[3.0, 0], [1.0, 5], [1.0, 2], [0.0, 9]])
    order = canonical_order(np.array([3, 3, 0, 3]), centers)
    assert list(order) == [3, 0, 2, 1]  # seen 3 then 0; unseen 2 < 1 lexicographically


@pytest.mark.slow
def test_determinism(blobs) -> None:
    for kw in ({}, {"n_init": 3, "discretizer": "uniform:10"}, {"memory_limit": 1, "reduce": 3}):
        a, b = _fit(blobs, **kw), _fit(blobs, **kw)
        for name in a.layers_:
            np.testing.assert_array_equal(a.clusterers_[name].cluster_centers_,
                                          b.clusterers_[name].cluster_centers_)
        np.testing.assert_array_equal(a.transform(blobs, "test").cluster_ids,
                                      b.transform(blobs, "test").cluster_ids)


@pytest.mark.slow
def test_out_of_core_path_agrees_with_exact_path(blobs) -> None:
    for kw in ({}, {"discretizer": "uniform:10"},
               {"discretizer": Discretizer(strategy="binary", threshold=8.0)}, {"reduce": 3},
               {"discretizer": "quantile:6:unit", "reduce": 4}):
        exact = _fit(blobs, **kw)
        streamed = _fit(blobs, memory_limit=1, **kw)  # forces out-of-core for every layer
        assert {lc.method_ for lc in exact.clusterers_.values()} == {"exact"}, kw
        assert {lc.method_ for lc in streamed.clusterers_.values()} == {"lloyd"}, kw
        for split in ("train", "test"):
            np.testing.assert_array_equal(
                exact.transform(blobs, split).cluster_ids,
                streamed.transform(blobs, split).cluster_ids, err_msg=str(kw))


def test_raw_cache_path_equals_uncached_path(blobs) -> None:
    """With a discretizer, rows fitting the budget are read once and reused from memory."""
    n, f = 567, 8
    just_enough = n * f * 4 * 2  # raw rows + discretized rows of the widest layer
    cached = _fit(blobs, discretizer="uniform:10", memory_limit=just_enough)
    # Room for every layer's discretized rows (exact KMeans), not for raw + discretized ones.
    uncached = _fit(blobs, discretizer="uniform:10", memory_limit=n * 4 * 10)
    assert {lc.method_ for lc in uncached.clusterers_.values()} == {"exact"}
    assert all(lc.cached_raw_ for lc in cached.clusterers_.values())
    assert not any(lc.cached_raw_ for lc in uncached.clusterers_.values())
    for name in cached.layers_:
        np.testing.assert_array_equal(cached.clusterers_[name].cluster_centers_,
                                      uncached.clusterers_[name].cluster_centers_)


def test_an_analysis_fitted_by_nnsig_0_2_out_of_core_still_loads(blobs, tmp_path) -> None:
    """0.2 saved the MiniBatchKMeans path's parameters (batch_size, streaming_passes) and
    method_ "streaming": such an analysis loads and maps samples as it did."""
    import shutil

    from nnsig_core.analysis.persist import ANALYSIS_ATTR
    from nnsig_core.store.format import analysis_path

    shutil.copytree(blobs.path, tmp_path / "c.zarr")
    store = open_store(tmp_path / "c.zarr", mode="r+")
    a = _fit(store, memory_limit=1).save(store, "old", splits=())
    g = store.group(analysis_path("old"))
    meta = dict(g.attrs)[ANALYSIS_ATTR]
    meta["params"].update(batch_size=1024, streaming_passes=2)
    g.attrs[ANALYSIS_ATTR] = meta
    for lm in meta["layers"]:
        lg = g["layers"][lm["key"]]
        lg.attrs["state"] = {**dict(lg.attrs)["state"], "method": "streaming"}
    old = SignatureAnalysis.load(open_store(tmp_path / "c.zarr"), "old")
    assert {lc.method_ for lc in old.clusterers_.values()} == {"streaming"}
    assert "batch_size" not in old.get_params()
    np.testing.assert_array_equal(old.transform(store, "test").cluster_ids,
                                  a.transform(store, "test").cluster_ids)


_REF: dict[str, np.ndarray] = {}


@settings(max_examples=8, deadline=None)
@given(chunk_bytes=st.sampled_from([100, 350, 1500, 1 << 20]),
       streaming=st.booleans())
@pytest.mark.slow
def test_signatures_do_not_depend_on_chunk_size(chunk_bytes: int, streaming: bool) -> None:
    kw = {"memory_limit": 1} if streaming else {}
    key = str(streaming)
    with tempfile.TemporaryDirectory() as d:
        if key not in _REF:
            ref_store = make_blob_store(Path(d) / "ref.zarr", n_samples=160, chunk_bytes=100_000,
                                        error_rate=0.05)
            _REF[key] = _fit(ref_store, discretizer="uniform:8", **kw).transform(
                ref_store, "test").cluster_ids
        store = make_blob_store(Path(d) / "s.zarr", n_samples=160, chunk_bytes=chunk_bytes,
                                error_rate=0.05)
        sigs = _fit(store, discretizer="uniform:8", **kw).transform(store, "test")
        np.testing.assert_array_equal(sigs.cluster_ids, _REF[key])


def test_train_and_test_are_discretized_with_the_training_bins(blobs) -> None:
    a = _fit(blobs, discretizer="uniform:10")
    train_acts = blobs.activations("train", "layer0")[:]
    rows = a.selection_mask(blobs, "train")
    d = a.clusterers_["layer0"].discretizer_
    lo, hi = train_acts[rows].min(), train_acts[rows].max()
    np.testing.assert_allclose(d.bin_edges_, np.linspace(lo, hi, 11), rtol=1e-6)
    # Test samples go through the same bins: transforming rows of the test split by hand
    # with the training discretizer and centres gives the transform() result.
    test_acts = blobs.activations("test", "layer0")[:]
    lc = a.clusterers_["layer0"]
    ids = lc.predict(test_acts)
    np.testing.assert_array_equal(ids, a.transform(blobs, "test").cluster_ids[:, 0])


def test_class_subset_for_novelty_studies(blobs) -> None:
    a = SignatureAnalysis(n_clusters=2, progress=False).fit(blobs, "train", classes=[0, 2])
    labels, preds = blobs.labels("train"), blobs.predictions("train")
    assert a.classes_ == [0, 2] and a.fit_classes_ == [0, 2]
    assert a.n_fit_samples_ == int((np.isin(labels, [0, 2]) & (labels == preds)).sum())
    typical = a.typical_clusters()
    assert typical[0][1] == [] and typical[0][3] == []  # unseen classes have no typical cluster
    test = a.transform(blobs, "test")
    assert test.n_samples == blobs.n_samples("test")  # every test sample, seen or not


def test_per_layer_clusters_and_layer_subset(blobs) -> None:
    a = _fit(blobs, n_clusters={"layer0": 2, "layer2": 3}, layers=["layer2", "layer0"])
    assert a.layers_ == ["layer0", "layer2"]  # model order
    assert a.n_clusters_ == [2, 3]
    sigs = a.transform(blobs, "test")
    assert sigs.cluster_ids[:, 0].max() == 1 and sigs.cluster_ids[:, 1].max() == 2
    with pytest.raises(ValueError, match="not analysed"):
        _fit(blobs, n_clusters={"layer9": 3})


def test_wide_multidim_layer_with_reduction(tmp_path: Path) -> None:
    store = make_blob_store(tmp_path / "c.zarr", n_samples=300, layer_shapes=[(4, 5, 5), (12,)],
                            chunk_bytes=4000)
    a = _fit(store, reduce=5)
    lc = a.clusterers_["layer0"]
    assert lc.reducer_ is not None and lc.cluster_centers_.shape == (K, 5)
    assert a.clusterers_["layer1"].reducer_.components_.shape == (5, 12)
    np.testing.assert_allclose(a.transform(store, "test").purity(), 1.0)


def test_sklearn_conventions(blobs) -> None:
    a = SignatureAnalysis(n_clusters=3, discretizer="uniform:4", memory_limit="1GiB")
    assert clone(a).get_params() == a.get_params()
    assert "memory_limit" in a.get_params()
    sigs = SignatureAnalysis(n_clusters=K, progress=False).fit_transform(blobs, "train")
    assert isinstance(sigs, Signatures) and sigs.split == "train"


# ---------------------------------------------------------------------------- tables
def test_prototype_table_and_grouped_views(blobs) -> None:
    a = _fit(blobs)
    sigs = a.transform(blobs, "test")
    t = sigs.table()
    assert t.columns == ["input_class", "signature", "output_class", "count"]
    counts = t.column("count")
    assert sum(counts) == blobs.n_samples("test")
    assert counts == sorted(counts, reverse=True)
    assert all(len(s) == 3 for s in t.column("signature"))
    assert a.signatures(blobs, "test").table() == t  # through the analysis (cached signatures)
    by_out = sigs.by_output_class()
    assert sum(by_out.column("count")) == blobs.n_samples("test")
    assert sum(by_out.column("n_misclassified")) == int((~sigs.correct).sum())
    by_sig = sigs.by_signature()
    assert len(by_sig) == sigs.n_signatures
    assert sum(sum(r["by_class"].values()) for r in by_sig) == sigs.n_samples


def test_composition_transitions_exemplars(blobs) -> None:
    a = _fit(blobs)
    sigs = a.transform(blobs, "train")
    comp = sigs.cluster_composition()
    per_layer: dict[str, int] = {}
    for r in comp:
        per_layer[r["layer"]] = per_layer.get(r["layer"], 0) + r["count"]
    assert per_layer == {n: sigs.n_samples for n in a.layers_}
    by_out = sigs.composition(by="output")
    assert all(m.sum() == sigs.n_samples for m in by_out)

    tr = sigs.transitions()
    assert {(r["source_layer"], r["target_layer"]) for r in tr} == {("layer0", "layer1"),
                                                                  ("layer1", "layer2")}
    assert sum(r["count"] for r in tr) == 2 * sigs.n_samples
    io = sigs.transitions(include_io=True)
    assert sum(r["count"] for r in io) == 4 * sigs.n_samples
    assert {r["source_layer"] for r in io} >= {"input"}

    ex = sigs.exemplars(n=3)
    for j in range(3):
        assert len(ex[j]) == K
        for c, rows in enumerate(ex[j]):
            assert len(rows) == 3
            assert (sigs.cluster_ids[rows, j] == c).all()
            members = np.flatnonzero(sigs.cluster_ids[:, j] == c)
            assert sigs.distances[rows[0], j] == sigs.distances[members, j].min()


def test_frames_csv_json(blobs, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    a = _fit(blobs)
    sigs = a.transform(blobs, "test")
    df = sigs.table(as_frame=True)
    assert isinstance(df, pd.DataFrame) and df["count"].sum() == sigs.n_samples
    per = sigs.to_frame()
    assert len(per) == sigs.n_samples and "cluster:layer0" in per.columns
    text = sigs.table().to_csv()
    assert text.splitlines()[0] == "input_class,signature,output_class,count"
    assert "-" in text.splitlines()[1].split(",")[1]
    sigs.to_csv(tmp_path / "s.csv")
    assert len((tmp_path / "s.csv").read_text().splitlines()) == sigs.n_samples + 1
    records = json.loads(sigs.by_signature().to_json())
    assert isinstance(records[0]["signature"], list)


def test_tables_work_without_pandas(blobs, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _fit(blobs)
    sigs = a.transform(blobs, "test")
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="to_csv"):
        sigs.table(as_frame=True)
    assert sigs.table().to_csv().startswith("input_class,")
    assert json.loads(sigs.to_json())[0]["row"] == 0


def test_summary_and_text(blobs) -> None:
    a = _fit(blobs)
    s = a.summary(blobs, "test")
    json.dumps(s)
    assert s["n_signatures"] == K and s["fit"]["n_samples"] == a.n_fit_samples_
    assert [lay["purity"] for lay in s["layers"]] == [1.0, 1.0, 1.0]
    assert s["accuracy"] == pytest.approx(float((blobs.labels("test") == blobs.predictions("test")).mean()))
    text = format_summary(s)
    assert "layer0" in text and "purity" in text and "exact" in text


def test_export_prototype(blobs, tmp_path: Path) -> None:
    a = _fit(blobs)
    paths = export_prototype(a, blobs, "test", tmp_path / "proto")
    info = json.loads(paths["clusters_info"].read_text())
    assert len(info) == 3
    assert set(info[0][0]) == {"layer", "class", "instances_count", "cluster_index"}
    assert [sum(r["instances_count"] for r in layer) for layer in info] == [a.n_fit_samples_] * 3
    lines = paths["clusterized_values"].read_text().splitlines()
    assert lines[0] == "input_class,cluster_in_layer1,cluster_in_layer2,cluster_in_layer3,output_class"
    assert len(lines) == blobs.n_samples("test") + 1
    first = [int(x) for x in lines[1].split(",")]
    sigs = a.transform(blobs, "test")
    assert first == [int(sigs.labels[0]), *sigs.cluster_ids[0].tolist(), int(sigs.predictions[0])]


# ---------------------------------------------------------------------------- persistence
@pytest.mark.slow
def test_save_and_load_give_identical_signatures(tmp_path: Path) -> None:
    path = tmp_path / "p.zarr"
    make_blob_store(path, n_samples=300, error_rate=0.05)
    store = open_store(path, mode="r+")
    for name, kw in (("plain", {}), ("binned", {"discretizer": "quantile:5:unit", "reduce": 3}),
                     ("streamed", {"memory_limit": 1, "discretizer": "uniform:6"})):
        a = _fit(store, **kw)
        before = {s: a.transform(store, s) for s in ("train", "test")}
        a.save(store, name=name)
        assert a.name_ == name
        ro = open_store(path)
        b = SignatureAnalysis.load(ro, name)
        assert b.get_params() == a.get_params() or kw.get("discretizer") is not None
        assert b.layers_ == a.layers_ and b.n_fit_samples_ == a.n_fit_samples_
        for s in ("train", "test"):
            after = b.transform(ro, s)
            np.testing.assert_array_equal(after.cluster_ids, before[s].cluster_ids)
            np.testing.assert_array_equal(after.distances, before[s].distances)
        for j, comp in enumerate(a.fit_composition_):
            np.testing.assert_array_equal(b.fit_composition_[j], comp)
    assert open_store(path).analyses == ["binned", "plain", "streamed"]
    groups = sorted(k for k, _ in open_store(path).root["analysis"]["binned"]["layers"]["layer0"].arrays())
    assert "centers" in groups and "disc_bin_edges" in groups and "pca_components" in groups


def test_saved_signatures_are_reused_until_recapture(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "q.zarr"
    make_blob_store(path, n_samples=200)
    store = open_store(path, mode="r+")
    a = _fit(store)
    a.save(store, "default", splits=["train", "test"])
    b = SignatureAnalysis.load(open_store(path))

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(SignatureAnalysis, "transform", boom)
    sigs = b.signatures(open_store(path), "test")
    assert sigs.n_samples == 200 and sigs.labels.size == 200
    monkeypatch.undo()
    # Re-capturing the split makes the saved signatures stale.
    make_blob_store(store, splits=["test"], n_samples=150, overwrite=True)
    assert b.signatures(open_store(path), "test").n_samples == 150


def test_another_store_s_analysis_of_the_same_name_is_not_this_one(tmp_path: Path) -> None:
    for name, seed in (("a.zarr", 0), ("b.zarr", 5)):
        make_blob_store(tmp_path / name, n_samples=200, seed=seed)
        _fit(open_store(tmp_path / name, mode="r+")).save(tmp_path / name, "default")
    from_a = SignatureAnalysis.load(open_store(tmp_path / "a.zarr"))
    b = open_store(tmp_path / "b.zarr")
    # b's saved signatures (of b's own "default") must not be taken for from_a's.
    np.testing.assert_array_equal(from_a.signatures(b, "test").cluster_ids,
                                  from_a.transform(b, "test").cluster_ids)
    assert not np.array_equal(SignatureAnalysis.load(b).signatures(b, "test").cluster_ids,
                              from_a.transform(b, "test").cluster_ids)


def test_save_refusals(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    make_blob_store(path, n_samples=200)
    a = _fit(open_store(path))
    with pytest.raises(StoreError, match="read-only.*mode='r\\+'"):
        a.save(open_store(path), "x")
    a.save(path, "x")  # a path is opened read-write
    with pytest.raises(StoreError, match="overwrite=True"):
        a.save(path, "x")
    a.save(path, "x", overwrite=True)
    with pytest.raises(StoreError, match="Invalid analysis name"):
        a.save(path, "a/b")
    with pytest.raises(StoreError, match="saved analyses: x"):
        SignatureAnalysis.load(path, "nope")


def test_export_writes_every_view(blobs, tmp_path: Path) -> None:
    a = _fit(blobs)
    written = a.transform(blobs, "test").export(tmp_path / "out")
    assert written == ["signatures_test.csv", "table_test.csv", "by_output_test.csv",
                       "by_signature_test.csv", "transitions_test.csv", "composition_test.csv"]
    for name in written:
        assert (tmp_path / "out" / name).stat().st_size > 0
    header = (tmp_path / "out" / "signatures_test.csv").read_text().splitlines()[0]
    assert header.startswith("row,sample_index,label,prediction,correct,cluster:layer0")


def test_save_defaults_to_every_complete_split(tmp_path: Path) -> None:
    path = tmp_path / "d.zarr"
    make_blob_store(path, n_samples=120)
    store = open_store(path, mode="r+")
    _fit(store).save(store)
    assert sorted(k for k, _ in store.root["analysis"]["default"]["signatures"].groups()) == [
        "test", "train"]
    _fit(store).save(store, "none", splits=())
    assert list(store.root["analysis"]["none"]["signatures"].groups()) == []


def test_prefetched_reads_give_the_same_fit(blobs) -> None:
    """Layers read ahead in a background thread (budget for 3 layers) or in turn: same result."""
    ahead = _fit(blobs)  # default budget: every layer is prefetched
    in_turn = _fit(blobs, memory_limit=40_000)  # one layer fits, three do not
    assert {lc.method_ for lc in in_turn.clusterers_.values()} == {"exact"}
    assert ahead.prefetched_ == ahead.layers_ and in_turn.prefetched_ == []
    for name in ahead.layers_:
        np.testing.assert_array_equal(ahead.clusterers_[name].cluster_centers_,
                                      in_turn.clusterers_[name].cluster_centers_)


def test_table_prints_as_aligned_text() -> None:
    from nnsig_core.analysis import Table

    t = Table(["input_class", "signature", "output_class", "count"],
              [(3, (2, 5, 9), 3, 120), (8, (1, 0, 0), 3, 7)])
    lines = str(t).splitlines()
    assert lines[0].split() == ["input_class", "signature", "output_class", "count"]
    assert lines[1].split() == ["3", "2-5-9", "3", "120"]
    assert len({len(line) for line in lines}) == 1
    assert str(t[:1]).count("\n") == 1
    assert "1 more rows" in t.format(max_rows=1)


# ---------------------------------------------------------------------------- stale and partial saves
def _recapture_in_the_same_second(store, split: str) -> None:
    """Re-capture ``split`` with other samples, then give it the first capture's time stamps,
    as a re-capture within the same second would have."""
    old = store.split_attrs(split)["capture"]
    make_blob_store(store, splits=(split,), n_samples=store.n_samples(split), seed=7,
                    overwrite=True)
    info = store.split_attrs(split)
    info["capture"] = dict(info["capture"], started=old["started"], finished=old["finished"])
    store.write_split_attrs(split, info)


def test_signatures_follow_a_recapture_within_the_same_second(tmp_path: Path) -> None:
    store = make_blob_store(tmp_path / "s.zarr", n_samples=200)
    a = _fit(store)
    before = a.signatures(store, "test")
    _recapture_in_the_same_second(store, "test")
    after = a.signatures(store, "test")
    assert not np.array_equal(after.labels, before.labels)
    np.testing.assert_array_equal(after.cluster_ids, a.transform(store, "test").cluster_ids)
    a.save(store, "saved", splits=["test"])
    _recapture_in_the_same_second(store, "test")  # saved signatures are stale too
    loaded = SignatureAnalysis.load(store, "saved")
    np.testing.assert_array_equal(loaded.signatures(store, "test").labels, store.labels("test"))


def test_a_refused_subset_leaves_saved_signatures_alone(tmp_path: Path) -> None:
    from nnsig_core.analysis.persist import save_signatures

    store = make_blob_store(tmp_path / "s.zarr", n_samples=200)
    a = _fit(store).save(store, "a", splits=["test"])
    whole = a.signatures(store, "test")
    with pytest.raises(ValueError, match="whole-split"):
        save_signatures(store, "a", whole.subset(np.arange(50)))
    assert "test" in store.root["analysis/a/signatures"]  # the saved copy is still there
    saved = SignatureAnalysis.load(store, "a").signatures(store, "test")
    np.testing.assert_array_equal(saved.cluster_ids, whole.cluster_ids)
    save_signatures(store, "a", a.transform(store, "test"))  # a whole split replaces them
    assert sorted(k for k, _ in store.root["analysis/a/signatures"].groups()) == ["test"]


@pytest.mark.filterwarnings("ignore:The fit split .* has no misclassified sample")
def test_overwrite_replaces_an_analysis_only_once_the_new_one_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails half-way (disk full) leaves the old analysis and its scores."""
    import zarr

    from nnsig_core.diagnostics import signature_scores
    from nnsig_core.diagnostics.persist import saved_score_splits

    store = make_blob_store(tmp_path / "s.zarr", n_samples=200)
    old = _fit(store).save(store, "a", splits=["test"])
    signature_scores(old, store, "test", save=True)
    new = _fit(store, n_clusters=3)
    real = zarr.Group.create_array
    calls = {"n": 0}

    def disk_full_on_the_fourth_array(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", disk_full_on_the_fourth_array)
    with pytest.raises(OSError, match="No space"):
        new.save(store, "a", overwrite=True)
    monkeypatch.undo()
    back = SignatureAnalysis.load(open_store(store.path), "a")
    assert back.n_clusters_ == old.n_clusters_
    assert saved_score_splits(store, "a") == ["test"]
    assert store.analyses == ["a"]  # the half-written copy is gone
    new.save(store, "a", overwrite=True)
    assert SignatureAnalysis.load(open_store(store.path), "a").n_clusters_ == [3, 3, 3]
    assert saved_score_splits(store, "a") == []  # scores of the old fit went with it


def test_an_analysis_whose_fit_split_was_captured_again_warns(tmp_path: Path) -> None:
    """The fit split captured again (the same weights, other samples): the saved analysis,
    its fit composition and typical clusters, went on describing samples no longer there.
    Now using it on that store warns, naming the refit, whose command works; on another
    store, whose captures are its own, nothing is said."""
    import warnings

    from nnsig_core import NnsigWarning, capture_arrays
    from nnsig_core.cli.main import main

    rng = np.random.default_rng(0)

    def split(path, name, n):
        labels = np.arange(n) % 3
        acts = {"h": (np.eye(3)[labels] * 4 + rng.normal(0, 0.5, (n, 3))).astype(np.float32)}
        capture_arrays(acts, np.eye(3)[labels] * 2, labels, path, split=name, progress=False,
                       overwrite=True)

    path = tmp_path / "a.zarr"
    for name, n in (("train", 90), ("test", 30)):
        split(path, name, n)
    store = open_store(path, mode="r+")
    SignatureAnalysis(n_clusters=3, progress=False).fit(store).save(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        SignatureAnalysis.load(path).transform(path, "test")
        other = tmp_path / "b.zarr"  # another store with a 'train' of its own
        for name, n in (("train", 60), ("test", 30)):
            split(other, name, n)
        SignatureAnalysis.load(path).transform(other, "test")
    split(path, "train", 60)
    with pytest.warns(NnsigWarning, match=r"'train', which analysis 'default' was fitted on, was "
                      r"captured again since \(90 samples then, 60 now\).*clone\(analysis\)"):
        SignatureAnalysis.load(path).signatures(path, "test")
    assert main(["analyze", str(path), "--clusters", "3", "--overwrite"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        SignatureAnalysis.load(path).signatures(path, "test")


def test_unlabelled_samples_are_neither_correct_nor_wrong_in_the_export(tmp_path: Path) -> None:
    """An unlabelled split's samples were exported correct=False, as misclassified ones are,
    and its summary counted signatures "among correctly classified samples"."""
    from nnsig_core import capture_arrays
    from nnsig_core.analysis import format_summary

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    acts = {"h": (np.eye(3)[labels] * 4 + rng.normal(0, 0.5, (60, 3))).astype(np.float32)}
    path = tmp_path / "u.zarr"
    capture_arrays(acts, np.eye(3)[labels], labels, path, split="train", progress=False)
    capture_arrays(acts, np.eye(3)[labels], None, path, split="prod", progress=False)
    a = SignatureAnalysis(n_clusters=3, progress=False).fit(path)
    table = a.signatures(path, "prod").per_sample()
    assert [r[table.columns.index("correct")] for r in table.rows] == [None] * 60
    table.to_csv(tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines()[1].split(",")[4] == ""
    frame = a.signatures(path, "prod").to_frame()  # the same in the frame
    assert frame["correct"].isna().all() and str(frame["correct"].dtype) == "boolean"
    assert "among correctly classified" not in format_summary(a.summary(path, "prod"))
    assert "among correctly classified" in format_summary(a.summary(path, "train"))
