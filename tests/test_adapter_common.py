"""Tests of what the adapters share (nnsig_core.protocol): layer selection and the non-finite check.

The shared pieces are tested on plain dicts and NumPy arrays; the last tests
check that the PyTorch and Keras adapters raise the very same error classes.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

from nnsig_core.protocol import (
    LayerSelectionError,
    NonFiniteActivationError,
    SelectionWording,
    UnknownLayerError,
    check_batch_finite,
    check_finite,
    is_glob,
    nonfinite_rows,
    resolve_selection,
)
from nnsig_core.protocol import finite as finite_mod


# ---------------------------------------------------------------------------- selection
class Block:
    pass


class Dense(Block):
    pass


class Head:
    pass


CANDIDATES = {"enc": Block(), "enc.fc1": Dense(), "enc.fc2": Dense(), "head": Head()}
WORDING = SelectionWording(
    model="model 'm'",
    item="layer",
    kind="class",
    kinds="classes",
    entries="a layer name, a glob pattern or a class",
    listing="list_layers(m) lists every name.",
)


def select(layers, **kw):
    return resolve_selection(layers, CANDIDATES, WORDING, **kw)


def test_resolver_names_globs_and_classes_in_candidate_order():
    s = select(["head", "enc.fc1"])
    assert s.matched == ["enc.fc1", "head"]  # candidate order, not the order given
    assert s.named == {"enc.fc1", "head"} and s.extra == set()
    s = select("enc.*")
    assert s.matched == ["enc.fc1", "enc.fc2"] and s.named == set()
    assert select(Dense).matched == ["enc.fc1", "enc.fc2"]
    assert select(Block).matched == ["enc", "enc.fc1", "enc.fc2"]  # subclasses are instances
    s = select(["enc.fc1", "enc.*", Dense, "enc.fc1"])
    assert s.matched == ["enc.fc1", "enc.fc2"] and s.named == {"enc.fc1"}  # no duplicates


def test_resolver_extra_names_rename_and_exact_names_with_glob_characters():
    s = select(["head:1", "enc"], extra=["head", "head:1", "head:2"])
    assert s.matched == ["enc"] and s.extra == {"head:1"}
    s = select("head*", extra=["head", "head:1"])  # a pattern matches both kinds of name
    assert s.matched == ["head"] and s.extra == {"head:1"}
    s = select("module.head", rename=lambda n: n.removeprefix("module."))
    assert s.matched == ["head"] and s.named == {"head"}
    s = resolve_selection("a[0]", {"a[0]": Block(), "a0": Block()}, WORDING)
    assert s.matched == ["a[0]"]  # an exact name wins over its reading as a pattern
    assert is_glob("enc.*") and is_glob("a?") and is_glob("a[01]") and not is_glob("enc.fc1")


def test_resolver_unknown_name_lists_close_matches_and_where_to_look():
    with pytest.raises(UnknownLayerError) as err:
        select(["head", "enc.fc"])
    msg = str(err.value)
    assert msg.startswith("Unknown layer 'enc.fc' in model 'm'. Did you mean: 'enc.fc")
    assert "'enc.fc1'" in msg and "'enc.fc2'" in msg and "'head'" not in msg
    assert msg.endswith("? list_layers(m) lists every name.")
    assert isinstance(err.value, KeyError) and isinstance(err.value, LayerSelectionError)
    with pytest.raises(UnknownLayerError, match=r"Did you mean: 'head:1'"):
        select("head:7", extra=["head:1"])
    with pytest.raises(UnknownLayerError) as err:
        select("zzz")
    assert "Did you mean" not in str(err.value)


def test_resolver_selections_that_select_nothing():
    with pytest.raises(
        LayerSelectionError,
        match=r"Pattern 'dec\.\*' matches no layer of model 'm'; layer names look like: 'enc', ",
    ):
        select("dec.*")

    class Conv:
        pass

    with pytest.raises(
        LayerSelectionError,
        match=r"No layer of class Conv in model 'm'; classes present: Block, Dense, Head\.",
    ):
        select(Conv)
    with pytest.raises(LayerSelectionError, match="`layers` is empty"):
        select([])
    with pytest.raises(TypeError, match=r"a layer name, a glob pattern or a class; got 3"):
        select(["head", 3])
    with pytest.raises(TypeError, match="got <class 'int'>"):
        select(int, base=Block)  # a class that does not derive from `base`


# ---------------------------------------------------------------------------- non-finite rows
def test_nonfinite_rows_finds_nan_and_infinities():
    block = np.ones((6, 5), dtype=np.float32)
    assert nonfinite_rows(block).dtype == np.int64 and nonfinite_rows(block).size == 0
    block[1, 2] = np.nan
    block[3, 0] = np.inf
    block[4, 4] = -np.inf
    np.testing.assert_array_equal(nonfinite_rows(block), [1, 3, 4])
    block[5, :2] = [np.inf, -np.inf]  # the sum is NaN
    np.testing.assert_array_equal(nonfinite_rows(block), [1, 3, 4, 5])
    cube = np.zeros((3, 2, 2, 2), dtype=np.float64)
    cube[2, 1, 0, 1] = np.nan
    np.testing.assert_array_equal(nonfinite_rows(cube), [2])  # read as (n, -1)
    assert nonfinite_rows(np.arange(12).reshape(3, 4)).size == 0  # integers are finite
    assert nonfinite_rows(np.empty((0, 4), dtype=np.float32)).size == 0


def test_nonfinite_rows_does_not_report_a_sum_that_overflows_with_finite_values():
    big = np.finfo(np.float32).max
    block = np.array([[big, big, 1.0], [1.0, 2.0, 3.0], [1.0, np.nan, 0.0]], dtype=np.float32)
    with np.errstate(over="ignore"):
        sums = block.sum(axis=1, dtype=np.float32)
    assert not np.isfinite(sums[0])  # the overflow the check must see through
    np.testing.assert_array_equal(nonfinite_rows(block), [2])
    np.testing.assert_array_equal(nonfinite_rows(block, sums), [2])
    np.testing.assert_array_equal(nonfinite_rows(block[:2]), [])
    half = np.full((2, 4), 60000.0, dtype=np.float16)  # its float16 sum would overflow
    assert nonfinite_rows(half).size == 0


def test_nonfinite_rows_tests_only_the_rows_whose_given_sum_is_not_finite():
    block = np.ones((4, 3), dtype=np.float32)
    block[0, 0] = block[2, 1] = np.nan
    sums = np.array([np.nan, 3.0, 3.0, 3.0], dtype=np.float32)  # e.g. computed on a GPU
    np.testing.assert_array_equal(nonfinite_rows(block, sums), [0])
    with pytest.raises(ValueError, match="row_sums has 3 values for 4 rows"):
        nonfinite_rows(block, sums[:3])


def test_check_finite_is_one_reduction_without_a_boolean_copy(monkeypatch):
    seen: list[int] = []
    isfinite = np.isfinite

    def spy(x, *args, **kwargs):
        seen.append(np.size(x))
        return isfinite(x, *args, **kwargs)

    monkeypatch.setattr(finite_mod.np, "isfinite", spy)
    block = np.random.default_rng(0).normal(size=(64, 1000)).astype(np.float32)
    check_finite(block, layer="fc")
    check_finite(block, layer="fc", row_sums=block.sum(axis=1))
    assert seen and max(seen) <= 64  # a scalar or the row sums, never the block


# ---------------------------------------------------------------------------- the error
def test_check_finite_message_names_layer_split_sample_unit_value_count_and_fix():
    block = np.ones((6, 4), dtype=np.float32)
    block[3, 2] = np.inf
    block[5, 0] = np.nan
    check_finite(block[:3], layer="layer1")  # finite: nothing raised
    with pytest.raises(NonFiniteActivationError) as err:
        check_finite(
            block,
            layer="layer1",
            split="train",
            rows=np.arange(50, 56),
            sample_index=np.arange(100) * 10,
            fix="Re-capture the split.",
        )
    e = err.value
    assert str(e) == (
        "NaN or Inf in layer 'layer1' of split 'train' at sample 53 (data set index 530): "
        "unit 2 is inf; 2 sample(s) of this block affected. Re-capture the split."
    )
    assert (e.layer, e.split, e.row, e.sample_index) == ("layer1", "train", 53, 530)
    assert NonFiniteActivationError.__bases__ == (ValueError,)


def test_check_finite_in_a_batch_and_for_the_model_output():
    maps = np.zeros((3, 2, 2, 2), dtype=np.float32)
    maps[1, 1, 0, 1] = -np.inf
    with pytest.raises(
        NonFiniteActivationError,
        match=r"^NaN or Inf in layer 'conv' at sample 1 of the batch: unit \(1, 0, 1\) is -inf; "
        r"1 sample\(s\) of the batch affected\. Check the inputs and weights, or pass "
        r"keep_nonfinite=True to keep them\.$",
    ) as err:
        check_batch_finite(np.zeros((3, 2)), {"fc": np.zeros((3, 4)), "conv": maps})
    e = err.value
    assert (e.layer, e.row, e.split, e.sample_index) == ("conv", 1, None, None)
    out = np.zeros((3, 2), dtype=np.float32)
    out[2, 1] = np.nan
    with pytest.raises(NonFiniteActivationError, match="the model output at sample 2") as err:
        check_batch_finite(out, {"fc": np.zeros((3, 4))})
    assert err.value.layer is None
    with pytest.raises(
        NonFiniteActivationError, match=r"sample 2 of this block \(data set index 7\)"
    ):
        check_finite(out, layer=None, sample_index=np.array([5, 6, 7]))


# ---------------------------------------------------------------------------- both adapters
# Keras' torch backend converts tensors with np.array(x, copy=False) internally (NumPy 2 warns).
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_torch_and_keras_raise_the_same_errors(monkeypatch):
    torch = pytest.importorskip("torch")
    if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ:
        monkeypatch.setenv("KERAS_BACKEND", "torch")  # TensorFlow is not needed
    keras = pytest.importorskip("keras")
    import nnsig_keras
    import nnsig_torch

    assert nnsig_torch.NonFiniteActivationError is NonFiniteActivationError
    assert nnsig_keras.NonFiniteActivationError is NonFiniteActivationError
    assert nnsig_torch.UnknownLayerError is nnsig_keras.UnknownLayerError is UnknownLayerError

    class Poison(torch.nn.Module):
        def forward(self, x):
            x = x.clone()
            x[2, 1] = math.nan
            return x

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), Poison(), torch.nn.Linear(4, 2)).eval()
    with pytest.raises(NonFiniteActivationError) as err:
        nnsig_torch.TorchAdapter(net, layers=["0", "1"]).run(torch.randn(4, 3))
    assert type(err.value) is NonFiniteActivationError
    assert (err.value.layer, err.value.row) == ("1", 2)

    inputs = keras.Input(shape=(3,))
    hidden = keras.layers.Dense(4, name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    x = np.ones((4, 3), dtype="float32")
    x[2, 0] = np.nan
    with pytest.raises(NonFiniteActivationError) as err:
        nnsig_keras.KerasAdapter(model, layers="fc1").run(x)
    assert type(err.value) is NonFiniteActivationError
    assert (err.value.layer, err.value.row) == ("fc1", 2)

    with pytest.raises(UnknownLayerError, match="Did you mean: '1'"):
        nnsig_torch.TorchAdapter(net, layers="1x")
    with pytest.raises(UnknownLayerError, match="Did you mean: 'fc1'"):
        nnsig_keras.KerasAdapter(model, layers="fc")
    # A pool/layout key that matches no captured layer: the same error from both, on the
    # first batch, with the closest name; a layout that does not fit names the layer.
    for key in ("pool", "layout"):
        spec = {"fc2": "mean"} if key == "pool" else {"fc2": "NC"}
        with pytest.raises(LayerSelectionError, match=rf"{key} key\(s\) 'fc2' match no captured "
                                                      r"layer; did you mean 'fc1'"):
            nnsig_keras.KerasAdapter(model, layers="fc1", **{key: spec}).run(np.ones((4, 3), "f4"))
        spec = {"2x": "mean"} if key == "pool" else {"2x": "NC"}
        with pytest.raises(LayerSelectionError, match=rf"{key} key\(s\) '2x' match no captured "
                                                      r"layer; did you mean '2'"):
            nnsig_torch.TorchAdapter(net, layers=["0", "2"], **{key: spec}).run(torch.randn(4, 3))
    with pytest.raises(ValueError, match="layout of layer 'fc1'"):
        nnsig_keras.KerasAdapter(model, layers="fc1", layout={"fc1": "NCHW"}).run(np.ones((4, 3), "f4"))
    with pytest.raises(ValueError, match="layout of layer '0'"):
        nnsig_torch.TorchAdapter(net, layers=["0"], layout={"0": "NCHW"}).run(torch.randn(4, 3))


@pytest.mark.parametrize("package, framework, extra", [("nnsig_torch", "torch", "torch"),
                                                       ("nnsig_keras", "keras", "keras")])
def test_an_adapter_without_its_framework_names_the_extra(package, framework, extra,
                                                          monkeypatch) -> None:
    """Importing an adapter whose framework is not installed names the install command (it
    was the bare "No module named 'torch'")."""
    import importlib

    pytest.importorskip(package)
    monkeypatch.setitem(sys.modules, framework, None)  # as if not installed
    monkeypatch.delitem(sys.modules, package)
    with pytest.raises(ImportError, match=rf"{package} needs .* pip install 'nnsig\[{extra}\]'"):
        importlib.import_module(package)


def test_a_capture_name_given_as_a_layer_names_its_layer():
    """available_layers lists capture names ('attn.0', an output of module 'attn'); given to
    layers= they were "unknown", with advice pointing back at the same listing."""
    with pytest.raises(UnknownLayerError, match=r"'enc.fc1.0' is a capture name of layer "
                                                r"'enc.fc1'.*select 'enc.fc1'"):
        select("enc.fc1.0")
    with pytest.raises(UnknownLayerError, match="Did you mean: 'enc.fc2', 'enc.fc1'"):
        select("enc.fc")  # a typo of a submodule stays a typo
    # An output's key, unlike any child of the layer (a Hugging Face ViT's
    # 'vit.last_hidden_state'): its layer, although other names are close.
    vit = {n: Block() for n in ("vit", "vit.embeddings", "vit.layers", "vit.layers.0",
                                "vit.layers.0.attention", "vit.layernorm")}
    with pytest.raises(UnknownLayerError, match=r"'vit.last_hidden_state' is a capture name of "
                                                r"layer 'vit'.*select 'vit'"):
        resolve_selection("vit.last_hidden_state", vit, WORDING)
    with pytest.raises(UnknownLayerError, match=r"Did you mean: 'vit.layers'"):
        resolve_selection("vit.layer", vit, WORDING)
    with pytest.raises(UnknownLayerError, match=r"Did you mean: 'vit.layers.0.attention'"):
        resolve_selection("vit.attention", vit, WORDING)  # a module deeper down, misnamed
    blocks = {"blocks": Block(), "blocks.0": Block(), "blocks.1": Block()}
    with pytest.raises(UnknownLayerError, match=r"Unknown layer 'blocks.2'.*Did you mean"):
        resolve_selection("blocks.2", blocks, WORDING)  # an index out of range, not an output
