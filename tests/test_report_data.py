"""build_report_data: the JSON contract of docs/report-data.md."""

from __future__ import annotations

import base64
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnsig_core import open_store
from nnsig_core.analysis import SignatureAnalysis
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.report import build_report_data

K = 4


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("report") / "r.zarr"
    store = make_blob_store(path, n_samples=400, n_classes=K, error_rate=0.1, inputs=True)
    # Three seen classes, three clusters; class 3 stays unseen.
    analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train",
                                                                     classes=[0, 1, 2])
    return analysis, open_store(path)


def test_structure_and_counts(fitted) -> None:
    analysis, store = fitted
    data = build_report_data(analysis, store, title="Blobs")
    data = json.loads(json.dumps(data, allow_nan=False))  # strictly JSON-serialisable
    assert data["format_version"] == 2 and data["title"] == "Blobs"
    assert data["classes"] == ["c0", "c1", "c2", "c3"]
    assert data["train_classes"] == [0, 1, 2]
    assert data["layers"] == ["layer0", "layer1", "layer2"]
    assert [lay["name"] for lay in data["model"]["layers"]] == data["layers"]
    assert data["model"]["layers"][2] == {"name": "layer2", "type": "unknown", "shape": [2, 3],
                                          "units": 6, "parameters": None}
    assert data["model"]["parameters"] is None  # arrays: unknown, not 0
    a = data["analysis"]
    assert a["n_clusters"] == [3] * 3 and a["fit_split"] == "train"
    assert a["fit_samples"] == analysis.n_fit_samples_ and a["only_correct"] is True
    assert set(data["splits"]) == {"train", "test"}
    for name, split in data["splits"].items():
        n = store.n_samples(name)
        assert split["n_samples"] == n
        assert sum(r["count"] for r in split["rows"]) == n
        counts = [r["count"] for r in split["rows"]]
        assert counts == sorted(counts, reverse=True)
        assert all(len(r["path"]) == 3 and r["score"] is None for r in split["rows"])
        assert split["n_signatures"] == len({tuple(r["path"]) for r in split["rows"]})
        labels, preds = store.labels(name), store.predictions(name)
        assert split["accuracy"] == pytest.approx(float((labels == preds).mean()), abs=1e-6)
        assert split["has_labels"] is True and split["n_labelled"] == n
        assert len(split["purity"]) == len(split["entropy"]) == 3
        assert len(split["class_purity"]) == 3 and all(len(c) == K for c in split["class_purity"])
        for layer in split["clusters"]:
            assert [c["id"] for c in layer] == list(range(3))
            assert sum(c["count"] for c in layer) == n
            assert sum(sum(c["by_class"]) for c in layer) == n
            assert all(len(c["by_class"]) == K for c in layer)
            for c in layer:
                assert len(c["exemplars"]) <= 4
                assert all(k.startswith(name + "/") for k in c["exemplars"])


def test_typical_clusters_and_misclassification_focus(fitted) -> None:
    analysis, store = fitted
    data = build_report_data(analysis, store)
    typical = data["typical"]
    assert len(typical) == 3 and all(len(per_class) == K for per_class in typical)
    for per_class in typical:
        for c in (0, 1, 2):
            assert len(per_class[c]) == 1  # one blob = one cluster per seen class
        assert per_class[3] == []  # unseen class
    # A seen class follows its typical clusters in every layer.
    for row in data["splits"]["test"]["rows"]:
        if row["input"] in (0, 1, 2):
            assert all(row["path"][j] in typical[j][row["input"]] for j in range(3))


def test_thumbnails_of_exemplars_only(fitted) -> None:
    analysis, store = fitted
    data = build_report_data(analysis, store)
    thumbs = data["thumbnails"]
    assert thumbs["shape"] == [8, 8]
    keys = {k for s in data["splits"].values() for layer in s["clusters"] for c in layer
            for k in c["exemplars"]}
    assert set(thumbs["keys"]) == keys and len(thumbs["keys"]) == len(keys)
    sheet = decode_png(thumbs["png"])
    for i, key in enumerate(thumbs["keys"]):
        split, row = key.split("/")
        np.testing.assert_array_equal(sprite_cell(sheet, thumbs, i), store.inputs(split)[int(row)])


def decode_png(b64: str) -> np.ndarray:
    """Our PNGs (8-bit grey or RGB, filter 0 on every row) back to pixels."""
    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, head = 8, b"", None
    while pos < len(raw):
        n = int.from_bytes(raw[pos : pos + 4], "big")
        kind, payload = raw[pos + 4 : pos + 8], raw[pos + 8 : pos + 8 + n]
        assert zlib.crc32(kind + payload) == int.from_bytes(raw[pos + 8 + n : pos + 12 + n], "big")
        if kind == b"IHDR":
            head = payload
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + n
    w, h = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:8], "big")
    ch = {0: 1, 2: 3}[head[9]]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * ch)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, ch) if ch == 3 else rows[:, 1:].reshape(h, w)


def sprite_cell(sheet: np.ndarray, sprite: dict, i: int) -> np.ndarray:
    h, w = sprite["shape"][:2]
    r, c = divmod(i, sprite["columns"])
    return sheet[r * h : (r + 1) * h, c * w : (c + 1) * w]


def test_no_thumbnails_without_inputs(tmp_path: Path) -> None:
    store = make_blob_store(tmp_path / "n.zarr", n_samples=100)
    a = SignatureAnalysis(n_clusters=K, progress=False).fit(store)
    assert "thumbnails" not in build_report_data(a, store)


def test_scores_histograms_and_row_means(fitted) -> None:
    analysis, store = fitted
    n = store.n_samples("test")
    scores = np.linspace(0, 1, n)
    scores[5] = np.nan
    data = build_report_data(analysis, store, scores={"test": scores}, score_bins=10)
    json.dumps(data, allow_nan=False)
    test, train = data["splits"]["test"], data["splits"]["train"]
    assert "scores" not in train and all(r["score"] is None for r in train["rows"])
    sc = test["scores"]
    assert sc["name"] == "combined" and len(sc["bins"]) == 11 and sc["bins"][0] == 0.0
    labels = store.labels("test")
    unseen = int((labels == 3).sum())
    assert sum(sc["counts"]["unseen"]) == unseen - (labels[5] == 3)
    assert "unlabelled" not in sc["counts"]  # every test sample has a label
    total = sum(sum(v) for v in sc["counts"].values())
    assert total == n - 1
    assert all(r["score"] is not None for r in test["rows"])
    # Only the test split was scored: no validation or fit split, so no default threshold.
    assert "threshold" not in data and "at_threshold" not in sc
    with pytest.raises(ValueError, match="one score per sample"):
        build_report_data(analysis, store, scores={"test": scores[:-1]})
    with pytest.raises(ValueError, match="not in the store"):
        build_report_data(analysis, store, scores={"tset": scores})


@pytest.fixture(scope="module")
def with_val(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("val") / "v.zarr"
    store = make_blob_store(path, splits=("train", "val", "test"), n_samples=[600, 400, 300],
                            n_classes=K, error_rate=0.1, inputs=True)
    analysis = SignatureAnalysis(n_clusters=K, progress=False).fit(store, "train")
    rng = np.random.default_rng(4)
    scores = {s: rng.random(store.n_samples(s)) for s in ("train", "val", "test")}
    return analysis, open_store(path), scores


def _correct(store, split):
    return (store.labels(split) == store.predictions(split)) & (store.labels(split) >= 0)


def test_plain_score_arrays_come_without_a_threshold(with_val) -> None:
    analysis, store, scores = with_val
    # Nothing says which scorer gave plain arrays: no threshold is taken from them (0.2 took
    # 5% of the val split's correct samples, whatever their settings).
    data = build_report_data(analysis, store, scores=scores)
    assert "threshold" not in data
    assert all("at_threshold" not in data["splits"][s]["scores"] for s in scores)


def test_a_named_split_that_is_not_in_the_store_is_an_error(fitted) -> None:
    """A split asked for by name and missing (a typo) is an error naming the store's splits,
    not a warning and a report without it."""
    analysis, store = fitted
    with pytest.raises(ValueError, match=r"'validation' not in .* Its splits: test, train"):
        build_report_data(analysis, store, splits=("train", "validation"))


def test_saved_analysis_name_and_size(tmp_path: Path) -> None:
    path = tmp_path / "m.zarr"
    make_blob_store(path, n_samples=3000, error_rate=0.02, inputs=True, chunk_bytes=1 << 16)
    store = open_store(path, mode="r+")
    SignatureAnalysis(n_clusters=10, progress=False).fit(store).save(store, "mine",
                                                                     splits=["train", "test"])
    loaded = SignatureAnalysis.load(open_store(path), "mine")
    data = build_report_data(loaded, open_store(path), map_points=0)
    assert data["analysis"]["name"] == "mine"
    assert "map" not in data and "map" not in data["splits"]["train"]
    assert len(json.dumps(data)) < 200_000
    # The layer map adds its bounded sample of points: 2,000 of each split's 3,000 here.
    with_map = build_report_data(loaded, open_store(path))
    assert with_map["splits"]["train"]["map"]["n_points"] == 2000
    assert len(json.dumps(with_map)) < len(json.dumps(data)) + 2 * 2000 * 60


def test_the_report_writer_accepts_it(fitted, tmp_path: Path) -> None:
    report = pytest.importorskip("nnsig_core.report")
    analysis, store = fitted
    index = report.write_report_data(build_report_data(analysis, store), tmp_path / "rep")
    assert index.is_file()


# --------------------------------------------------------------------------- the layer map


def _decode_xy(b64: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype="<u2").reshape(-1, 2)


def test_layer_map_points_link_to_their_rows_and_the_store(fitted) -> None:
    analysis, store = fitted
    data = build_report_data(analysis, store, map_points=150)
    assert data["map"] == {"method": "pca", "fitted_on": "train", "max_points": 150}
    for s, split in data["splits"].items():
        m = split["map"]
        sigs = analysis.signatures(store, s)
        pos = np.array(m["positions"])
        assert m["n_points"] == pos.size == 150 and (np.diff(pos) > 0).all()
        assert m["sample_index"] == store.sample_index(s)[pos].tolist()
        for p, r in zip(pos, m["rows"], strict=True):
            row = split["rows"][r]
            assert row["input"] == sigs.labels[p] and row["output"] == sigs.predictions[p]
            assert row["path"] == sigs.cluster_ids[p].tolist()
        mis = np.flatnonzero(sigs.labels != sigs.predictions)
        assert set(mis) <= set(pos)  # every misclassified sample is on the map (they fit)
        assert m["kinds"]["misclassified"] == [mis.size, mis.size]
        assert m["kinds"]["other"][1] == 150 - mis.size
        assert len(m["layers"]) == 3
        for j, layer in enumerate(m["layers"]):
            assert _decode_xy(layer["xy"]).shape == (150, 2)
            assert len(layer["centroids"]) == analysis.n_clusters_[j]
        thumbs = m["thumbnails"]
        sheet = decode_png(thumbs["png"])
        assert thumbs["shape"] == [8, 8]  # already under 16 px: not shrunk
        for i in (0, 77, 149):
            np.testing.assert_array_equal(sprite_cell(sheet, thumbs, i), store.inputs(s)[pos[i]])


def test_layer_map_is_the_pca_of_the_fit_split_in_the_clustering_space(fitted) -> None:
    from sklearn.decomposition import PCA

    analysis, store = fitted
    data = build_report_data(analysis, store, map_points=300)
    for j, name in enumerate(analysis.layers_):
        lc = analysis.clusterers_[name]
        feats = {}
        for s in ("train", "test"):
            pos = np.array(data["splits"][s]["map"]["positions"])
            raw = np.asarray(store.activations(s, name)[:]).reshape(store.n_samples(s), -1)[pos]
            feats[s] = lc.features(raw)
        pca = PCA(n_components=2, random_state=0).fit(feats["train"])
        layer = data["splits"]["test"]["map"]["layers"][j]
        x0, x1, y0, y1 = layer["bounds"]
        want = pca.transform(feats["test"])
        q = np.column_stack([(want[:, 0] - x0) / (x1 - x0), (want[:, 1] - y0) / (y1 - y0)])
        want_q = np.rint(np.clip(q, 0, 1) * 65535)
        np.testing.assert_allclose(_decode_xy(layer["xy"]), want_q, atol=2)
        cents = pca.transform(lc.cluster_centers_)
        cq = np.rint(np.column_stack([(cents[:, 0] - x0) / (x1 - x0), (cents[:, 1] - y0) / (y1 - y0)])
                     * 65535)
        np.testing.assert_allclose(np.array(layer["centroids"]), cq, atol=2)
        assert layer["explained"] == [round(float(r), 4) for r in pca.explained_variance_ratio_]
        # Train and test share one plane (the same bounds and centres).
        assert data["splits"]["train"]["map"]["layers"][j]["bounds"] == layer["bounds"]


def test_layer_map_reads_a_large_split_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    from nnsig_core.report.layermap import project_layers

    n = 20_000
    store = make_blob_store(tmp_path / "big.zarr", n_samples=[n, 10], splits=("train", "test"),
                            layer_shapes=((256,),), chunk_bytes=256 << 10)
    analysis = SignatureAnalysis(n_clusters=4, progress=False).fit(store, "train")
    layer_bytes = n * 256 * 4  # 20 MB
    pos = {"train": np.arange(0, n, 40)}  # 500 points (0.5 MB) spread over every chunk
    tracemalloc.start()
    try:
        out, _ = project_layers(analysis, store, pos, "train", read_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert _decode_xy(out["train"][0]["xy"]).shape == (500, 2)
    # The points, their PCA and one read of about 1 MB: never the whole layer.
    assert peak < layer_bytes / 4, peak


def test_no_map_and_projection_errors(fitted, monkeypatch: pytest.MonkeyPatch) -> None:
    analysis, store = fitted
    data = build_report_data(analysis, store, map_points=0)
    assert "map" not in data and all("map" not in s for s in data["splits"].values())
    with pytest.raises(ValueError, match="projection must be one of pca, umap"):
        build_report_data(analysis, store, projection="tsne")
    with pytest.raises(ValueError, match="map_points must be >= 0"):
        build_report_data(analysis, store, map_points=-1)
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(ImportError, match=r"umap-learn.*pip install 'nnsig\[umap\]'"):
        build_report_data(analysis, store, projection="umap")


@pytest.mark.slow  # numba compiles UMAP on first use: a minute or two
def test_layer_map_with_umap_when_installed(fitted) -> None:
    pytest.importorskip("umap")
    analysis, store = fitted
    data = build_report_data(analysis, store, projection="umap", map_points=120)
    assert data["map"]["method"] == "umap"
    layer = data["splits"]["test"]["map"]["layers"][0]
    assert layer["explained"] is None and _decode_xy(layer["xy"]).shape == (120, 2)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 400), st.integers(0, 300), st.integers(1, 6), st.floats(0, 0.5),
       st.floats(0, 0.5), st.integers(0, 3), st.sampled_from([None, 1, 3]))
def test_select_points_invariants(n, max_points, n_classes, p_mis, p_flag, seed, chunk) -> None:
    from functools import partial

    from nnsig_core.report.points import select_points

    # Small pools (factor 2) so that drawing from whole chunks happens on these small splits.
    select_points = partial(select_points, chunk_rows=chunk, pool_factor=2)

    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, n_classes, size=n)
    preds = rng.integers(0, n_classes, size=n)
    mis = (labels >= 0) & (rng.random(n) < p_mis)
    flag = rng.random(n) < p_flag
    pos, kinds = select_points(labels, preds, {"misclassified": mis, "flagged": flag}, max_points,
                               seed)
    assert pos.size == min(n, max_points)
    assert (np.diff(pos) > 0).all() and (pos.size == 0 or (0 <= pos[0] and pos[-1] < n))
    prio = mis | flag
    if prio.sum() <= max(max_points // 2, max_points - (~prio).sum()):
        assert set(np.flatnonzero(prio)) <= set(pos)  # the priority samples always fit in
    if mis.sum() <= max_points // 2:
        assert set(np.flatnonzero(mis)) <= set(pos)  # misclassified ones come first
    assert kinds["misclassified"] == [int(mis.sum()), int(mis[pos].sum())]
    assert kinds["other"][0] == int((~prio).sum())
    # Every class of the ordinary samples gets a point when the budget allows.
    others = np.flatnonzero(~prio)
    strata = np.where(labels >= 0, labels, -1 - preds)
    left = max_points - int(prio[pos].sum())
    if others.size and left >= np.unique(strata[others]).size:
        assert set(strata[others]) == set(strata[np.intersect1d(pos, others)])
    again, _ = select_points(labels, preds, {"misclassified": mis, "flagged": flag}, max_points, seed)
    np.testing.assert_array_equal(pos, again)


def test_points_of_a_large_split_come_from_a_bounded_set_of_chunks() -> None:
    from nnsig_core.report.points import select_points

    n, chunk, classes = 400_000, 1000, 20
    labels = np.repeat(np.arange(classes), n // classes)  # written in class order
    rng = np.random.default_rng(0)
    preds = np.where(rng.random(n) < 0.02, (labels + 1) % classes, labels)
    mis = labels != preds
    pos, kinds = select_points(labels, preds, {"misclassified": mis}, 2000, chunk_rows=chunk)
    assert pos.size == 2000 and kinds["misclassified"][1] == 1000  # half the points
    chunks = np.unique(pos // chunk)
    # 40 random chunks (20 x 2,000 rows) plus a few per class, not the 400 of the split.
    assert chunks.size <= 40 + 4 * classes, chunks.size
    assert set(labels[pos]) == set(range(classes))  # every class, though chunks hold one each
    others = pos[~mis[pos]]
    # ...in the split's proportions (equal here), not the pool's.
    share = np.bincount(labels[~mis], minlength=classes) / (~mis).sum()
    got = np.bincount(labels[others], minlength=classes)
    assert np.abs(got - share * others.size).max() <= 1, (got, share * others.size)
    # A small split is sampled from everywhere.
    small, _ = select_points(labels[:30_000], preds[:30_000], {"misclassified": mis[:30_000]},
                             2000, chunk_rows=chunk)
    assert np.unique(small // chunk).size == 30


def test_sprites_round_trip_and_shrink() -> None:
    from nnsig_core.report.sprite import encode_png, make_sprite, shrink

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(7, 5, 9), dtype=np.uint8)
    sp = make_sprite(grey, [f"k{i}" for i in range(7)])
    assert sp["shape"] == [5, 9] and sp["keys"][3] == "k3"
    sheet = decode_png(sp["png"])
    for i in range(7):
        np.testing.assert_array_equal(sprite_cell(sheet, sp, i), grey[i])
    rgb = rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    sp = make_sprite(rgb)
    np.testing.assert_array_equal(sprite_cell(decode_png(sp["png"]), sp, 2), rgb[2])
    small = shrink(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28) % 200, 16)
    assert small.shape == (2, 14, 14)
    assert small[0, 0, 0] == round(np.mean([0, 1, 28, 29]))
    assert shrink(grey, 16) is grey or np.array_equal(shrink(grey, 16), grey)
    assert shrink(rgb, None).shape == rgb.shape
    with pytest.raises(ValueError, match="PNG needs"):
        encode_png(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="2 keys for 3 images"):
        make_sprite(rgb, ["a", "b"])


# --------------------------------------------------------------------------- unlabelled samples


def test_a_split_without_labels(tmp_path: Path) -> None:
    from nnsig_core.analysis.synthetic import make_blob_activations
    from nnsig_core.capture import capture_arrays

    store = make_blob_store(tmp_path / "u.zarr", splits=("train",), n_samples=400, n_classes=K,
                            error_rate=0.05, inputs=True)
    blobs = make_blob_activations(n_samples=200, n_classes=K, seed=0, sample_seed=9)
    images = np.zeros((200, 8, 8), np.uint8)
    capture_arrays(blobs["activations"], outputs=blobs["outputs"], labels=None, store=store,
                   split="wild", progress=False, inputs=images)
    analysis = SignatureAnalysis(n_clusters=K, progress=False).fit(store, "train")
    scores = {"train": np.linspace(0, 1, 400), "wild": np.linspace(0, 1, 200)}
    data = build_report_data(analysis, open_store(tmp_path / "u.zarr"), splits=("train", "wild"),
                             scores=scores)
    wild = data["splits"]["wild"]
    assert wild["has_labels"] is False and wild["n_labelled"] == 0 and wild["accuracy"] is None
    assert {r["input"] for r in wild["rows"]} == {-1}
    assert sum(r["count"] for r in wild["rows"]) == 200
    assert wild["purity"] == [None] * 3 and all(v is None for c in wild["class_purity"] for v in c)
    assert all(sum(c["by_class"]) == 0 for layer in wild["clusters"] for c in layer)
    counts = wild["scores"]["counts"]
    assert sum(counts["unlabelled"]) == 200 and sum(counts["correct"] + counts["misclassified"]) == 0
    assert "threshold" not in data  # plain arrays: no scorer, no threshold
    m = wild["map"]
    assert m["kinds"]["misclassified"] == [0, 0]  # unlabelled samples are not errors
    assert m["n_points"] == 200
    assert "unlabelled" not in data["splits"]["train"]["scores"]["counts"]
