"""Layout-aware pooling, masks and token rows in the Keras adapter."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from nnsig_keras import KerasAdapter  # noqa: E402

import nnsig_core  # noqa: E402
from nnsig_core import open_store  # noqa: E402

layers = keras.layers
ATOL = 1e-5
L = 6


def text_model(mask_key="padding_mask", name=None):
    keras.utils.set_random_seed(3)
    ids = keras.Input((L,), dtype="int32", name="input_ids")
    mask = keras.Input((L,), name=mask_key)
    emb = layers.Embedding(40, 8, name="emb")(ids)
    h = layers.Dense(8, activation="tanh", name="d1")(emb)
    res = layers.Add(name="res")([h, emb])
    pooled = layers.GlobalAveragePooling1D(name="gap")(res * mask[:, :, None])
    out = layers.Dense(3, name="out")(pooled)
    return keras.Model({"input_ids": ids, mask_key: mask}, out, name=name)


def batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 40, size=(n, L)).astype("int32")
    mask = np.ones((n, L), dtype="float32")
    mask[0, 4:] = 0
    mask[2, :1] = 0
    return {"input_ids": ids, "padding_mask": mask}


def reference(model, x):
    probe = keras.Model(model.inputs, [model.get_layer("d1").output, model.get_layer("res").output])
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in probe.predict_on_batch(x)]


def test_masked_means_cls_last_and_token_rows():
    model = text_model()
    x = batch()
    d1, res = reference(model, x)
    keep = x["padding_mask"].astype(bool)
    got = {m: KerasAdapter(model, layers=["res"], pool=m).run(x)[1]["res"]
           for m in ("mean", "max", "cls", "last")}
    for i in range(len(keep)):
        real = res[i][keep[i]]
        np.testing.assert_allclose(got["mean"][i], real.mean(0), atol=ATOL)
        np.testing.assert_allclose(got["max"][i], real.max(0), atol=ATOL)
        np.testing.assert_allclose(got["cls"][i], real[0], atol=ATOL)
        np.testing.assert_allclose(got["last"][i], real[-1], atol=ATOL)
    adapter = KerasAdapter(model, layers=["d1", "res"], pool={"d1": "tokens", "res": ("mean", "tokens")})
    _, acts = adapter.run(x)
    assert set(acts) == {"d1@tokens", "res", "res@tokens"}
    rows = acts["d1@tokens"]
    sample, position = np.nonzero(keep)
    np.testing.assert_array_equal(rows.sample, sample)
    np.testing.assert_array_equal(rows.position, position)
    np.testing.assert_array_equal(rows.token, x["input_ids"][sample, position])
    np.testing.assert_allclose(rows.values, d1[sample, position], atol=ATOL)
    summary = adapter.model_summary()
    assert [e["name"] for e in summary["layers"]] == ["res"]
    assert [e["name"] for e in summary["token_layers"]] == ["d1", "res"]
    assert summary["token_layers"][0]["pool"] == "tokens" and summary["layers"][0]["layout"] == "NLC"


def test_a_mask_key_the_batch_lacks_is_an_error_naming_the_batch_s_keys():
    model, x = text_model(), batch()
    with pytest.raises(ValueError, match=r"mask='attention_mask': the batch has no such key "
                       r"\(its keys are \['input_ids', 'padding_mask'\]\)"):
        KerasAdapter(model, layers=["res"], pool="mean", mask="attention_mask").run(x)
    fixed = KerasAdapter(model, layers=["res"], pool="mean", mask="padding_mask").run(x)[1]
    np.testing.assert_array_equal(fixed["res"], KerasAdapter(model, layers=["res"], pool="mean").run(x)[1]["res"])


def test_a_mask_the_defaults_miss_is_named_in_a_warning():
    """A mask input under another key, or Keras' own mask_zero, was left out without a word
    (padding pooled in): a warning names the input or the layer and the mask= that works."""
    from nnsig_core import NnsigWarning

    model, x = text_model(), batch()
    renamed = {"input_ids": x["input_ids"], "pad": x["padding_mask"]}
    keras_model = text_model("pad")
    with pytest.warns(NnsigWarning, match=r"input 'pad' looks like an attention mask.*"
                                          r"mask='pad'"):
        KerasAdapter(keras_model, layers=["res"], pool="mean").run(renamed)
    fixed = KerasAdapter(keras_model, layers=["res"], pool="mean", mask="pad").run(renamed)[1]
    np.testing.assert_allclose(fixed["res"], KerasAdapter(model, layers=["res"], pool="mean")
                               .run(x)[1]["res"], atol=ATOL)
    ids = keras.Input((L,), dtype="int32")
    emb = layers.Embedding(40, 8, mask_zero=True, name="masked_emb")(ids)
    zero_model = keras.Model(ids, layers.Dense(3)(layers.GlobalAveragePooling1D()(emb)))
    tokens = np.where(x["padding_mask"] > 0, x["input_ids"], 0).astype("int32")
    with pytest.warns(NnsigWarning, match=r"'masked_emb' mask token id 0.*mask=lambda x: x != 0"):
        KerasAdapter(zero_model, layers=["masked_emb"], pool="mean").run(tokens)
    got = KerasAdapter(zero_model, layers=["masked_emb"], pool="mean",
                       mask=lambda t: t != 0).run(tokens)[1]["masked_emb"]
    e = np.asarray(keras.ops.convert_to_numpy(zero_model.get_layer("masked_emb")(tokens)))
    keep = tokens != 0
    np.testing.assert_allclose(got, [e[i][keep[i]].mean(0) for i in range(len(e))], atol=ATOL)


def test_a_named_functional_model_titles_its_report_and_a_misspelt_analysis_is_named(
        tmp_path, capsys):
    """The report of keras.Model(..., name="textclf") is titled after it, not "Functional";
    `nnsig report --analysis` with a typo names the saved analysis."""
    from nnsig_core import SignatureAnalysis
    from nnsig_core.cli.main import main
    from nnsig_core.report import build_report_data

    xs = [batch(4, seed) for seed in range(6)]
    data = [(x, np.arange(4) % 3) for x in xs]
    adapter = KerasAdapter(text_model(name="textclf"), layers=["d1", "res"], pool="mean")
    store = nnsig_core.capture(adapter, data, tmp_path / "k.zarr", progress=False)
    analysis = SignatureAnalysis(n_clusters=2, only_correct=False, progress=False).fit(store)
    assert build_report_data(analysis, store, map_points=0)["title"] == "textclf (k.zarr)"
    analysis.save(open_store(tmp_path / "k.zarr", mode="r+"), "default")
    assert main(["report", str(tmp_path / "k.zarr"), "--analysis", "defualt", "--out",
                 str(tmp_path / "r")]) == 1
    assert "No analysis named 'defualt' in" in (err := capsys.readouterr().err)
    assert "Did you mean 'default'?" in err and "nnsig analyze" not in err


def test_token_rows_captured_into_a_store(tmp_path):
    model = text_model()
    xs = [batch(4, seed) for seed in range(3)]
    data = [(x, np.arange(4) % 3) for x in xs]
    adapter = KerasAdapter(model, layers=["res"], pool=("mean", "tokens"))
    nnsig_core.capture(adapter, data, tmp_path / "k.zarr", progress=False)
    store = open_store(tmp_path / "k.zarr")
    assert store.splits == ["train", "train.tokens"]
    keep = np.concatenate([x["padding_mask"] for x in xs]).astype(bool)
    assert store.n_samples("train.tokens") == keep.sum()
    rows = store.token_rows("train.tokens")
    np.testing.assert_array_equal(rows["sample_row"], np.nonzero(keep)[0])
    res = np.concatenate([reference(model, x)[1] for x in xs])
    np.testing.assert_allclose(store.activations("train.tokens", "res")[:], res[keep], atol=ATOL)


def test_unused_pool_key_and_bad_layout():
    model = text_model()
    from nnsig_core.protocol import LayerSelectionError

    with pytest.raises(LayerSelectionError, match="pool key.*'rez'.*'res'"):
        KerasAdapter(model, layers=["res"], pool={"rez": "mean"}).run(batch())
    with pytest.raises(ValueError, match="layout of layer 'res'.*4-axis"):
        KerasAdapter(model, layers=["res"], layout="NHWC").run(batch())


def test_layers_after_a_channels_first_convolution_are_channels_first():
    """Layers without a data_format (Lambda, Add, ReLU, BatchNormalization(axis=1)) after a
    channels-first convolution took Keras's global channels-last setting: their "units" were
    means over the channels and rows of each column. They follow the layers feeding them."""
    cf = "channels_first"
    inp = keras.Input((3, 10, 12))
    c = keras.layers.Conv2D(8, 3, padding="same", data_format=cf, name="conv")(inp)
    lam = keras.layers.Lambda(lambda t: keras.ops.relu(t), name="lam")(c)
    a = keras.layers.Add(name="add")([c, lam])
    r = keras.layers.ReLU(name="relu")(a)
    bn = keras.layers.BatchNormalization(axis=1, name="bn")(r)
    g = keras.layers.GlobalAveragePooling2D(data_format=cf)(bn)
    model = keras.Model(inp, keras.layers.Dense(3)(g))
    assert keras.config.image_data_format() == "channels_last"
    x = np.random.default_rng(0).random((4, 3, 10, 12)).astype("float32")
    _, acts = KerasAdapter(model, layers=["conv", "lam", "add", "relu", "bn"]).run(x)
    for name, tensor in (("add", a), ("bn", bn)):
        want = keras.ops.convert_to_numpy(keras.Model(inp, tensor)(x)).mean(axis=(2, 3))
        np.testing.assert_allclose(acts[name], want, atol=1e-5)
    assert {k: v.shape[1] for k, v in acts.items()} == dict.fromkeys(acts, 8)
