"""Tests of nnsig_keras.KerasAdapter with small real Keras 3 models (torch backend, no TensorFlow).

Every captured value is compared with an independent computation: a NumPy
re-implementation from ``layer.get_weights()``, or the sub-layers called one
by one.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported; TensorFlow is not needed

import importlib.util
import json
import logging
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import zarr

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from keras import layers  # noqa: E402
from nnsig_keras import (  # noqa: E402
    KerasAdapter,
    LayerSelectionError,
    ModelNotBuiltError,
    NonFiniteActivationError,
    UnknownLayerError,
    UnsupportedModelError,
    available_layers,
)

import nnsig_core  # noqa: E402
from nnsig_core import NnsigWarning, open_store  # noqa: E402

# Keras' torch backend converts tensors with np.array(x, copy=False) internally (NumPy 2 warns).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TORCH_BACKEND = keras.backend.backend() == "torch"
needs_torch_backend = pytest.mark.skipif(not TORCH_BACKEND, reason="hooks need the torch backend")

ATOL = 1e-5


# ---------------------------------------------------------------------------- helpers
def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def dense(layer, x: np.ndarray, act=None) -> np.ndarray:
    """NumPy Dense from the layer's weights, in float64."""
    w, b = layer.get_weights()
    y = x.astype(np.float64) @ w.astype(np.float64) + b
    return act(y) if act is not None else y


def call(layer, x) -> np.ndarray:
    """Call one Keras layer eagerly and return NumPy."""
    return keras.ops.convert_to_numpy(layer(x))


def mlp(name: str = "mlp") -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((8,)),
            layers.Dense(16, activation="relu", name="fc1"),
            layers.Dense(12, activation="relu", name="fc2"),
            layers.Dense(3, activation="softmax", name="out"),
        ],
        name=name,
    )


def mlp_reference(model: keras.Model, x: np.ndarray) -> dict[str, np.ndarray]:
    h1 = dense(model.get_layer("fc1"), x, relu)
    h2 = dense(model.get_layer("fc2"), h1, relu)
    return {"fc1": h1, "fc2": h2, "out": dense(model.get_layer("out"), h2, softmax)}


def n_nodes(model: keras.Model) -> dict[str, int]:
    """Inbound node counts of every layer, nested ones included (to check nothing is added)."""
    return {
        f"{id(layer)}": len(layer._inbound_nodes)
        for layer in model._flatten_layers(include_self=True, recursive=True)
    }


# ---------------------------------------------------------------------------- Sequential
def test_sequential_with_input_default_layers_and_values(caplog):
    model = mlp()
    x = rng().normal(size=(10, 8)).astype("float32")
    with caplog.at_level(logging.INFO, logger="nnsig_keras"):
        adapter = KerasAdapter(model)
    assert "fc1, fc2" in caplog.text and "default selection" in caplog.text
    outputs, acts = adapter.run(x)
    ref = mlp_reference(model, x)
    assert list(acts) == ["fc1", "fc2"]  # the output layer is left out by default
    for name in acts:
        assert acts[name].dtype == np.float32 and acts[name].shape == ref[name].shape
        np.testing.assert_allclose(acts[name], ref[name], atol=ATOL)
    assert outputs.dtype == np.float32 and outputs.shape == (10, 3)
    np.testing.assert_allclose(outputs, ref["out"], atol=ATOL)
    _, again = adapter.run(x[:4])  # same stable order on every call
    assert list(again) == ["fc1", "fc2"]
    assert adapter.layer_names == ["fc1", "fc2"]


def test_sequential_built_by_build():
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [layers.Dense(6, activation="tanh", name="h"), layers.Dense(2, name="o")]
    )
    model.build((None, 5))
    x = rng(1).normal(size=(4, 5)).astype("float32")
    outputs, acts = KerasAdapter(model).run(x)
    assert list(acts) == ["h"]
    np.testing.assert_allclose(acts["h"], dense(model.get_layer("h"), x, np.tanh), atol=ATOL)
    np.testing.assert_allclose(outputs, dense(model.get_layer("o"), acts["h"]), atol=ATOL)


def test_unbuilt_sequential_is_an_error_or_built_from_input_shape():
    model = keras.Sequential(
        [layers.Dense(6, activation="relu", name="h"), layers.Dense(2, name="o")]
    )
    with pytest.raises(
        ModelNotBuiltError, match=r"model\.build\(\(None, \*input_shape\)\).*input_shape="
    ):
        KerasAdapter(model)
    # The batch axis in input_shape builds the model for another rank (a variable-length
    # axis is a sample's own, so it is not refused): the first batch's error says so.
    wrong = keras.Sequential([layers.Dense(6, name="h"), layers.Dense(2, name="o")])
    with pytest.warns(NnsigWarning, match="freshly"):
        adapter = KerasAdapter(wrong, input_shape=(None, 5))
    with pytest.raises(Exception) as raised:
        adapter.run(rng(2).normal(size=(3, 5)).astype("float32"))
    assert any("built for input_shape=(None, 5), samples of 2 axes, but these have 1: "
               "input_shape is one sample's shape, without the batch axis (here (5,))" in n
               for n in getattr(raised.value, "__notes__", []))
    with pytest.warns(NnsigWarning, match="freshly"):
        adapter = KerasAdapter(model, input_shape=(5,))
    x = rng(2).normal(size=(3, 5)).astype("float32")
    _, acts = adapter.run(x)
    np.testing.assert_allclose(acts["h"], dense(model.get_layer("h"), x, relu), atol=ATOL)


def test_empty_sequential_is_an_error():
    with pytest.raises(ModelNotBuiltError, match="no layers"):
        KerasAdapter(keras.Sequential(name="empty"))


# ---------------------------------------------------------------------------- functional
def branchy() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((6,), name="x")
    a1 = layers.Dense(5, activation="relu", name="a1")(inp)
    a2 = layers.Dense(4, activation="relu", name="a2")(a1)
    b1 = layers.Dense(3, activation="sigmoid", name="b1")(inp)
    cat = layers.Concatenate(name="cat")([a2, b1])
    out = layers.Dense(2, name="logits")(cat)
    return keras.Model(inp, out, name="branchy")


def test_functional_branches_and_merge_with_mixed_selection():
    model = branchy()
    x = rng(3).normal(size=(7, 6)).astype("float32")
    adapter = KerasAdapter(model, layers=["a2", "b*", layers.Concatenate, "logits"])
    outputs, acts = adapter.run(x)
    assert set(acts) == {"a2", "b1", "cat", "logits"}
    a2 = dense(model.get_layer("a2"), dense(model.get_layer("a1"), x, relu), relu)
    b1 = dense(model.get_layer("b1"), x, lambda v: 1 / (1 + np.exp(-v)))
    cat = np.concatenate([a2, b1], axis=1)
    np.testing.assert_allclose(acts["a2"], a2, atol=ATOL)
    np.testing.assert_allclose(acts["b1"], b1, atol=ATOL)
    np.testing.assert_allclose(acts["cat"], cat, atol=ATOL)
    np.testing.assert_allclose(acts["logits"], dense(model.get_layer("logits"), cat), atol=ATOL)
    np.testing.assert_allclose(outputs, acts["logits"], atol=ATOL)
    # the default: every layer but the input and the output layers, in model.layers order
    assert [layer.name for layer in model.layers] == ["x", "a1", "a2", "b1", "cat", "logits"]
    assert list(KerasAdapter(model).run(x)[1]) == ["a1", "a2", "b1", "cat"]


def test_class_selection_reaches_every_depth():
    model, _ = nested_model()
    adapter = KerasAdapter(model, layers=layers.Dense)
    _, acts = adapter.run(np.zeros((2, 6), "float32"))
    assert list(acts) == ["encoder/e1", "encoder/e2", "head", "out"]


def test_conv2d_values():
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            layers.Conv2D(2, 3, activation="relu", name="conv"),
            layers.Flatten(name="flat"),
            layers.Dense(3, name="dense"),
        ]
    )
    x = rng(4).normal(size=(5, 6, 6, 1)).astype("float32")
    _, acts = KerasAdapter(model, layers=["conv", "flat"], pool=None).run(x)
    kernel, bias = model.get_layer("conv").get_weights()  # (3, 3, 1, 2)
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (3, 3), axis=(1, 2))
    ref = relu(np.einsum("nijcab,abcf->nijf", windows, kernel) + bias)  # (5, 4, 4, 2)
    assert acts["conv"].shape == (5, 4, 4, 2)
    np.testing.assert_allclose(acts["conv"], ref, atol=ATOL)
    np.testing.assert_allclose(acts["flat"], ref.reshape(5, -1), atol=ATOL)
    # "auto": channels last (Keras' convention) averaged over the 4 x 4 positions
    adapter = KerasAdapter(model, layers=["conv", "flat"])
    _, pooled = adapter.run(x)
    np.testing.assert_allclose(pooled["conv"], ref.mean((1, 2)), atol=ATOL)
    np.testing.assert_allclose(pooled["flat"], acts["flat"], atol=ATOL)
    entry = adapter.model_summary()["layers"][0]
    assert entry["layout"] == "NHWC" and entry["pool"] == "mean" and entry["shape"] == [2]
    assert entry["source_shape"] == [4, 4, 2]
    _, mx = KerasAdapter(model, layers="conv", pool="max").run(x)
    np.testing.assert_allclose(mx["conv"], ref.max((1, 2)), atol=ATOL)
    _, cf = KerasAdapter(model, layers="conv", pool="mean", layout="NCHW").run(x)
    np.testing.assert_allclose(cf["conv"], ref.mean((2, 3)), atol=ATOL)  # as told
    # Channels first into a channels-last model: Keras' error names nnsig's wrapper model,
    # so a note says what that is and what the batch held.
    with pytest.raises(ValueError, match="incompatible") as info:
        KerasAdapter(model, layers="conv").run(x.transpose(0, 3, 1, 2))
    (note,) = info.value.__notes__  # Keras numbers the models of a session: _sequential_2
    assert re.fullmatch(
        r"nnsig: the model raised on the first batch, whose inputs were float32 \(5, 1, 6, 6\); "
        r"pass inputs the model takes \(nnsig runs it as 'nnsig_layer_model_sequential\w*', a "
        r"Keras model of its graph that also returns the captured layers\)\. The model takes "
        r"samples of shape \(6, 6, 1\) and these are \(1, 6, 6\), channels first: pass "
        r"numpy\.moveaxis\(x, 1, -1\)\.", note), note
    _, back = KerasAdapter(model, layers="conv").run(
        np.moveaxis(x.transpose(0, 3, 1, 2), 1, -1))  # the fix named
    np.testing.assert_allclose(back["conv"], ref.mean((1, 2)), atol=ATOL)


def test_inference_mode_for_dropout_and_batch_normalization():
    keras.utils.set_random_seed(13)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(4, name="d"),
            layers.BatchNormalization(name="bn"),
            layers.Dropout(0.5, name="drop"),
            layers.Dense(2, name="o"),
        ]
    )
    bn = model.get_layer("bn")
    gamma, beta, mean, var = (
        rng(20 + i).uniform(0.5, 2.0, size=4).astype("float32") for i in range(4)
    )
    bn.set_weights([gamma, beta, mean, var])
    x = rng(13).normal(size=(6, 4)).astype("float32")
    _, acts = KerasAdapter(model).run(x)
    d = dense(model.get_layer("d"), x)
    ref = (d - mean) / np.sqrt(var + bn.epsilon) * gamma + beta  # moving statistics
    np.testing.assert_allclose(acts["bn"], ref, atol=1e-4)
    np.testing.assert_array_equal(acts["drop"], acts["bn"])  # dropout off


# ---------------------------------------------------------------------------- nested models
def nested_model() -> tuple[keras.Model, keras.Model]:
    keras.utils.set_random_seed(5)
    encoder = keras.Sequential(
        [
            keras.Input((6,)),
            layers.Dense(5, activation="relu", name="e1"),
            layers.Dense(4, activation="relu", name="e2"),
        ],
        name="encoder",
    )
    inp = keras.Input((6,), name="x")
    h = layers.Dense(3, activation="relu", name="head")(encoder(inp))
    out = layers.Dense(2, activation="softmax", name="out")(h)
    return keras.Model(inp, out, name="outer"), encoder


def test_nested_model_inner_layers_by_path():
    model, encoder = nested_model()
    before = n_nodes(model)
    x = rng(5).normal(size=(6, 6)).astype("float32")
    adapter = KerasAdapter(model, layers=["encoder/e1", "encoder/e2", "encoder", "head"])
    outputs, acts = adapter.run(x)
    assert list(acts) == ["encoder/e1", "encoder/e2", "encoder", "head"]
    e1 = dense(encoder.get_layer("e1"), x, relu)
    e2 = dense(encoder.get_layer("e2"), e1, relu)
    head = dense(model.get_layer("head"), e2, relu)
    np.testing.assert_allclose(acts["encoder/e1"], e1, atol=ATOL)
    np.testing.assert_allclose(acts["encoder/e2"], e2, atol=ATOL)
    np.testing.assert_allclose(acts["encoder"], e2, atol=ATOL)
    np.testing.assert_allclose(acts["head"], head, atol=ATOL)
    np.testing.assert_allclose(outputs, dense(model.get_layer("out"), head, softmax), atol=ATOL)
    # the user's model is untouched: no node added, layer outputs and serialisation still work
    assert n_nodes(model) == before
    assert tuple(encoder.get_layer("e1").output.shape) == (None, 5)
    assert json.loads(model.to_json())["class_name"] == "Functional"
    # the default does not expand nested models; a glob does
    assert list(KerasAdapter(model).run(x)[1]) == ["encoder", "head"]
    assert list(KerasAdapter(model, layers="encoder/*").run(x)[1]) == ["encoder/e1", "encoder/e2"]


def test_nested_two_levels_and_nested_model_called_twice():
    keras.utils.set_random_seed(6)
    inner = keras.Sequential(
        [keras.Input((4,)), layers.Dense(3, activation="relu", name="d")], name="inner"
    )
    mid_in = keras.Input((4,))
    mid = keras.Model(mid_in, layers.Dense(2, name="m")(inner(mid_in)), name="mid")
    xa, xb = keras.Input((4,), name="xa"), keras.Input((4,), name="xb")
    merged = layers.Add(name="add")([mid(xa), mid(xb)])  # "mid" is called twice
    model = keras.Model([xa, xb], merged, name="siamese")
    a = rng(6).normal(size=(5, 4)).astype("float32")
    b = rng(7).normal(size=(5, 4)).astype("float32")
    adapter = KerasAdapter(model, layers=["mid/inner/d", "mid/m"])
    outputs, acts = adapter.run([a, b])
    assert list(acts) == ["mid/inner/d", "mid/m", "mid:1/inner/d", "mid:1/m"]
    d, m = inner.get_layer("d"), mid.get_layer("m")
    for key, v in (("mid", a), ("mid:1", b)):
        np.testing.assert_allclose(acts[f"{key}/inner/d"], dense(d, v, relu), atol=ATOL)
        np.testing.assert_allclose(acts[f"{key}/m"], dense(m, dense(d, v, relu)), atol=ATOL)
    np.testing.assert_allclose(outputs, acts["mid/m"] + acts["mid:1/m"], atol=ATOL)
    assert adapter.model_summary()["layers"][0]["path"] == "mid/inner/d"


# ---------------------------------------------------------------------------- reuse, outputs
def test_layer_used_twice_captures_every_call():
    keras.utils.set_random_seed(8)
    inp = keras.Input((4,))
    shared = layers.Dense(3, activation="relu", name="shared")
    first = shared(inp)
    second = shared(layers.Dense(4, name="pre")(inp))
    out = layers.Dense(2, name="out")(layers.Concatenate(name="cat")([first, second]))
    model = keras.Model(inp, out)
    x = rng(8).normal(size=(3, 4)).astype("float32")
    _, acts = KerasAdapter(model, layers="shared").run(x)
    assert list(acts) == ["shared", "shared:1"]
    s = model.get_layer("shared")
    np.testing.assert_allclose(acts["shared"], dense(s, x, relu), atol=ATOL)
    np.testing.assert_allclose(
        acts["shared:1"], dense(s, dense(model.get_layer("pre"), x), relu), atol=ATOL
    )
    _, only = KerasAdapter(model, layers=["shared:1"]).run(x)  # one call by its capture name
    assert list(only) == ["shared:1"]
    info = {r["name"]: r for r in available_layers(model)}
    assert info["shared"]["calls"] == ["shared", "shared:1"]


class Halves(keras.layers.Layer):
    """A layer with two outputs."""

    def call(self, x):
        return x[:, :2] * 2.0, x[:, 2:] + 1.0

    def compute_output_spec(self, x):
        n = x.shape[0]
        return (
            keras.KerasTensor((n, 2), dtype=x.dtype),
            keras.KerasTensor((n, x.shape[1] - 2), dtype=x.dtype),
        )


def test_layer_with_several_outputs_and_model_output_choice():
    keras.utils.set_random_seed(9)
    inp = keras.Input((5,))
    lo, hi = Halves(name="halves")(inp)
    main = layers.Dense(2, name="main")(hi)
    aux = layers.Dense(4, name="aux")(lo)
    model = keras.Model(inp, [main, aux])
    x = rng(9).normal(size=(4, 5)).astype("float32")
    outputs, acts = KerasAdapter(model, layers="halves").run(x)
    assert list(acts) == ["halves.0", "halves.1"]
    np.testing.assert_allclose(acts["halves.0"], x[:, :2] * 2, atol=ATOL)
    np.testing.assert_allclose(acts["halves.1"], x[:, 2:] + 1, atol=ATOL)
    np.testing.assert_allclose(outputs, dense(model.get_layer("main"), x[:, 2:] + 1), atol=ATOL)
    outputs, acts = KerasAdapter(model, layers=["halves.1"], output="aux").run(x)
    assert list(acts) == ["halves.1"]
    np.testing.assert_allclose(outputs, dense(model.get_layer("aux"), x[:, :2] * 2), atol=ATOL)
    with pytest.raises(ValueError, match="not an output layer"):
        KerasAdapter(model, layers="halves", output="halves")


# ---------------------------------------------------------------------------- subclassed (hooks)
class Block(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.a = layers.Dense(4, activation="relu", name="a")
        self.b = layers.Dense(4, name="b")

    def call(self, x):
        return self.b(self.a(x)) + x[:, :4]


class SubNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blk = Block(name="blk")
        self.drop = layers.Dropout(0.9, name="drop")
        self.mid = layers.Dense(4, activation="tanh", name="mid")
        self.top = layers.Dense(3, activation="softmax", name="top")

    def call(self, x):
        h = self.mid(self.drop(self.blk(x)))  # dropout is off when captured
        h = self.mid(h)  # "mid" runs twice
        return self.top(h)


def subnet_reference(model: SubNet, x: np.ndarray) -> dict[str, np.ndarray]:
    a = dense(model.blk.a, x, relu)
    blk = dense(model.blk.b, a) + x[:, :4]
    mid = dense(model.mid, blk, np.tanh)
    mid1 = dense(model.mid, mid, np.tanh)
    return {
        "blk/a": a,
        "blk": blk,
        "drop": blk,
        "mid": mid,
        "mid:1": mid1,
        "top": dense(model.top, mid1, softmax),
    }


@needs_torch_backend
def test_subclassed_model_with_forward_hooks():
    keras.utils.set_random_seed(10)
    model = SubNet(name="subnet")
    x = rng(10).normal(size=(5, 6)).astype("float32")
    model(x[:1])
    ref = subnet_reference(model, x)
    outputs, acts = KerasAdapter(model).run(x)  # default: top-level layers but the output one
    assert list(acts) == ["blk", "drop", "mid", "mid:1"]
    np.testing.assert_array_equal(acts["drop"], acts["blk"])
    for name, value in acts.items():
        np.testing.assert_allclose(value, ref[name], atol=ATOL)
    np.testing.assert_allclose(outputs, ref["top"], atol=ATOL)
    adapter = KerasAdapter(model, layers=["blk/a", "top"])
    for _ in range(2):
        _, acts = adapter.run(x)
        assert list(acts) == ["blk/a", "top"]
    np.testing.assert_allclose(acts["blk/a"], ref["blk/a"], atol=ATOL)
    summary = adapter.model_summary()
    assert summary["model_class"] == "SubNet"
    assert [entry["name"] for entry in summary["layers"]] == ["blk/a", "top"]
    assert not any(layer._forward_hooks for layer in model._flatten_layers())  # hooks removed


@needs_torch_backend
def test_subclassed_layer_inside_functional_model():
    keras.utils.set_random_seed(11)
    inp = keras.Input((6,))
    blk = Block(name="blk")
    out = layers.Dense(2, name="out")(blk(inp))
    model = keras.Model(inp, out)
    x = rng(11).normal(size=(3, 6)).astype("float32")
    outputs, acts = KerasAdapter(model, layers=["blk/a", "blk/b", "blk"]).run(x)
    assert list(acts) == ["blk/a", "blk/b", "blk"]
    a = dense(blk.a, x, relu)
    np.testing.assert_allclose(acts["blk/a"], a, atol=ATOL)
    np.testing.assert_allclose(acts["blk/b"], dense(blk.b, a), atol=ATOL)
    np.testing.assert_allclose(acts["blk"], dense(blk.b, a) + x[:, :4], atol=ATOL)
    np.testing.assert_allclose(outputs, dense(model.get_layer("out"), acts["blk"]), atol=ATOL)


def test_subclassed_never_called_is_an_error_or_built_from_input_shape():
    model = SubNet(name="fresh")
    with pytest.raises(ModelNotBuiltError, match=r"never been called.*model\(x\[:1\]\)"):
        KerasAdapter(model)
    if TORCH_BACKEND:
        with pytest.warns(NnsigWarning, match="'fresh' once on zeros of shape"):
            adapter = KerasAdapter(model, input_shape=(6,))
        assert model.built
        assert list(adapter.run(np.ones((2, 6), "float32"))[1]) == ["blk", "drop", "mid", "mid:1"]


def test_subclassed_on_another_backend_is_an_error_naming_the_limit(monkeypatch):
    keras.utils.set_random_seed(12)
    model = SubNet(name="elsewhere")
    model(np.zeros((1, 6), "float32"))
    inp = keras.Input((6,))
    functional = keras.Model(inp, layers.Dense(2, name="out")(Block(name="blk")(inp)))
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(
        UnsupportedModelError, match=r"subclassed SubNet.*torch backend.*'jax'.*functional API"
    ):
        KerasAdapter(model)
    with pytest.raises(UnsupportedModelError, match=r"under 'blk'.*Block 'blk'.*torch backend"):
        KerasAdapter(functional, layers="blk/a")
    KerasAdapter(functional, layers="blk")  # the subclassed layer as a whole is in the graph


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed (second backend)"
)
@pytest.mark.slow
def test_graph_capture_on_the_jax_backend():
    """A fresh process on the jax backend: graph models work, subclassed ones are a clear
    error, and TensorFlow is never imported."""
    script = textwrap.dedent(
        """
        import os, sys
        os.environ["KERAS_BACKEND"] = "jax"
        import numpy as np
        import keras
        from keras import layers
        from nnsig_keras import KerasAdapter, UnsupportedModelError
        assert keras.backend.backend() == "jax"
        inner = keras.Sequential([keras.Input((3,)), layers.Dense(4, activation="relu", name="h")],
                                 name="enc")
        inp = keras.Input((3,))
        model = keras.Model(inp, layers.Dense(2, name="o")(inner(inp)))
        x = np.arange(6, dtype="float32").reshape(2, 3)
        out, acts = KerasAdapter(model, layers=["enc/h", "enc"]).run(x)
        w, b = inner.get_layer("h").get_weights()
        np.testing.assert_allclose(acts["enc/h"], np.maximum(x @ w + b, 0), atol=1e-5)
        np.testing.assert_allclose(acts["enc"], acts["enc/h"])
        assert out.shape == (2, 2) and out.dtype == np.float32

        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.d = layers.Dense(2)

            def call(self, x):
                return self.d(x)

        sub = Sub()
        sub(x)
        try:
            KerasAdapter(sub)
            raise AssertionError("no error")
        except UnsupportedModelError as exc:
            assert "torch backend" in str(exc) and "'jax'" in str(exc), exc
        assert "tensorflow" not in sys.modules
        print("OK")
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK" in res.stdout


# ---------------------------------------------------------------------------- bad input
def test_unknown_layer_name_lists_close_matches():
    model, _ = nested_model()
    with pytest.raises(UnknownLayerError, match=r"'e1'.*Did you mean: 'encoder/e1'"):
        KerasAdapter(model, layers=["head", "e1"])
    with pytest.raises(UnknownLayerError, match=r"Did you mean: 'head'"):
        KerasAdapter(model, layers="haed")
    with pytest.raises(LayerSelectionError, match="matches no layer"):
        KerasAdapter(model, layers="conv*")
    with pytest.raises(LayerSelectionError, match="No layer of class Conv2D.*Dense"):
        KerasAdapter(model, layers=layers.Conv2D)
    with pytest.raises(LayerSelectionError, match="empty"):
        KerasAdapter(model, layers=[])
    with pytest.raises(TypeError, match="layer name, a glob pattern or a Keras layer class"):
        KerasAdapter(model, layers=[3])


def test_not_a_keras_model_is_a_type_error():
    with pytest.raises(
        TypeError, match=r"Keras 3 model.*torch\.nn\.modules\.linear\.Linear.*TorchAdapter"
    ):
        KerasAdapter(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"needs a Keras 3 model .*builtins\.dict"):
        KerasAdapter({"not": "a model"})
    with pytest.raises(TypeError, match=r"got the layer .*Dense.*keras\.Sequential"):
        KerasAdapter(layers.Dense(2))


def test_nonfinite_activation_is_an_error_naming_layer_and_sample():
    model = mlp()
    x = rng(12).normal(size=(6, 8)).astype("float32")
    x[4, 0] = np.nan
    adapter = KerasAdapter(model)
    adapter.run(x[:3])  # 3 samples seen: positions are counted within the batch
    with pytest.raises(
        NonFiniteActivationError,
        match=r"layer 'fc1' at sample 4 of the batch: unit 0 is nan; 1 sample\(s\) of the batch "
        r"affected\. .*keep_nonfinite=True",
    ) as err:
        adapter.run(x)
    assert (err.value.layer, err.value.row, err.value.split) == ("fc1", 4, None)
    _, acts = KerasAdapter(model, keep_nonfinite=True).run(x)
    assert np.isnan(acts["fc1"][4]).all() and np.isfinite(acts["fc1"][:4]).all()


# ---------------------------------------------------------------------------- summary, capture
def test_model_summary_metadata():
    model = mlp("summary_mlp")
    adapter = KerasAdapter(model, layers=["fc1", "fc2", "out"])
    before = adapter.model_summary()
    assert [entry["shape"] for entry in before["layers"]] == [[16], [12], [3]]
    adapter.run(np.zeros((2, 8), "float32"))
    summary = adapter.model_summary()
    json.dumps(summary, allow_nan=False)  # JSON-serialisable as is
    assert summary["model_class"] == "Sequential" and summary["name"] == "summary_mlp"
    assert summary["parameters"] == model.count_params() == 8 * 16 + 16 + 16 * 12 + 12 + 12 * 3 + 3
    fc1 = summary["layers"][0]
    assert fc1 | {"config": None} == {
        "source_shape": [16],
        "layout": "NC",
        "pool": "none",
        "name": "fc1",
        "type": "Dense",
        "path": "fc1",
        "shape": [16],
        "units": 16,
        "activation": "relu",
        "parameters": 8 * 16 + 16,
        "config": None,
    }
    assert fc1["config"]["units"] == 16 and fc1["config"]["dtype"] == "float32"
    assert summary["layers"][2]["activation"] == "softmax"
    rows = KerasAdapter.available_layers(model)
    assert [(r["name"], r["default"], r["shape"]) for r in rows] == [
        ("fc1", True, (16,)),
        ("fc2", True, (12,)),
        ("out", False, (3,)),
    ]


def test_capture_end_to_end(tmp_path):
    model = mlp("e2e")
    x = rng(13).normal(size=(50, 8)).astype("float32")
    y = rng(14).integers(0, 3, size=50)
    path = tmp_path / "s.zarr"
    nnsig_core.capture(KerasAdapter(model), (x, y), path, batch_size=16, progress=False)
    store = open_store(path)
    assert store.layers("train") == ["fc1", "fc2"]
    ref = mlp_reference(model, x)
    for name in ("fc1", "fc2"):
        np.testing.assert_allclose(store.activations("train", name)[:], ref[name], atol=ATOL)
    info = {d["name"]: d for d in store.layer_info("train")}
    assert info["fc1"]["type"] == "Dense" and info["fc1"]["activation"] == "relu"
    assert store.split_attrs("train")["framework"] == "keras"


def test_weights_fingerprint_ignores_keras_numbered_names(tmp_path):
    """The same model built again in one session (``sequential_1/dense_2``: Keras numbers
    default names) with the weights loaded has the same fingerprint, so a split of it joins
    the store; other weights are still told apart; a Keras fingerprint of nnsig 0.2 (paths
    hashed) gets an error naming the fix that works."""

    def build(named=True):
        return keras.Sequential([keras.Input((8,)),
                                 layers.Dense(6, activation="relu", name="fc" if named else None),
                                 layers.Dense(3, name="out" if named else None)])

    a, b = build(), build()
    assert a.weights[0].path != b.weights[0].path  # numbered apart
    assert KerasAdapter(a).model_fingerprint() != KerasAdapter(b).model_fingerprint()
    b.set_weights(a.get_weights())
    assert KerasAdapter(b).model_fingerprint() == KerasAdapter(a).model_fingerprint()
    x = rng(16).normal(size=(30, 8)).astype("float32")
    y = rng(17).integers(0, 3, size=30)
    path = tmp_path / "s.zarr"
    nnsig_core.capture(KerasAdapter(a), (x, y), path, progress=False)
    nnsig_core.capture(KerasAdapter(b), (x, y), path, split="test", progress=False)
    assert sorted(open_store(path).splits) == ["test", "train"]
    # Unnamed layers are numbered apart: the store's refusal says to name them.
    c1, c2 = build(named=False), build(named=False)
    c2.set_weights(c1.get_weights())
    nnsig_core.capture(KerasAdapter(c1), (x, y), tmp_path / "c.zarr", progress=False)
    with pytest.raises(nnsig_core.StoreError, match=r"differ only in their numbers") as err:
        nnsig_core.capture(KerasAdapter(c2), (x, y), tmp_path / "c.zarr", split="test",
                           progress=False)
    names = [layer.name for layer in c1.layers]
    assert f"name={names[0]!r}" in str(err.value)
    c3 = keras.Sequential([keras.Input((8,)), layers.Dense(6, activation="relu", name=names[0]),
                           layers.Dense(3, name=names[1])])  # the fix named
    c3.set_weights(c1.get_weights())
    nnsig_core.capture(KerasAdapter(c3), (x, y), tmp_path / "c.zarr", split="test",
                       progress=False)
    # A split of nnsig 0.2 (its fingerprint of the paths, no legacy record): the same model
    # still matches it, by the earlier scheme recorded beside the current one, so a split
    # joins the store and an analysis fitted on the old split takes it without a warning.
    group = zarr.open_group(path / "train", mode="r+")
    info = dict(group.attrs["nnsig_split"])
    assert info["model_fingerprint"].startswith("blake2b-v2:")
    assert info["legacy_fingerprints"] == KerasAdapter(a).legacy_fingerprints()
    del info["legacy_fingerprints"]
    group.attrs["nnsig_split"] = {**info, "model_fingerprint":
                                  KerasAdapter(a).legacy_fingerprints()[0]}
    nnsig_core.capture(KerasAdapter(a), (x, y), path, split="val", progress=False)
    analysis = nnsig_core.SignatureAnalysis(n_clusters=2, only_correct=False).fit(path, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        analysis.transform(path, "val")
    c = keras.Sequential([keras.Input((8,)), layers.Dense(6, name="fc"), layers.Dense(3)])
    with pytest.raises(nnsig_core.CaptureError, match="weights differ"):  # still told apart
        nnsig_core.capture(KerasAdapter(c), (x, y), path, split="other", progress=False)


def test_capture_nested_and_shared_names_into_store(tmp_path):
    model, _ = nested_model()
    x = rng(15).normal(size=(20, 6)).astype("float32")
    adapter = KerasAdapter(model, layers=["encoder/*", "head"])
    path = tmp_path / "s.zarr"
    nnsig_core.capture(adapter, (x, None), path, progress=False)
    store = open_store(path)
    assert store.layers("train") == ["encoder/e1", "encoder/e2", "head"]
    _, acts = adapter.run(x)
    np.testing.assert_array_equal(store.activations("train", "encoder/e2")[:], acts["encoder/e2"])


def test_to_numpy_accepts_numpy_and_tensors():
    adapter = KerasAdapter(mlp())
    assert isinstance(adapter.to_numpy(np.arange(3)), np.ndarray)
    np.testing.assert_array_equal(adapter.to_numpy(torch.arange(3)), [0, 1, 2])
    np.testing.assert_array_equal(adapter.to_numpy(keras.ops.ones((2,))), [1.0, 1.0])
    np.testing.assert_array_equal(adapter.to_numpy([1, 2]), [1, 2])
