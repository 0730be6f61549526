"""Layouts and pooling in nnsig_torch: found from the modules, overridable, exact under masks.

The torch reductions are compared with the NumPy reference of
``nnsig_core.protocol.pooling`` (property-based), and with computations by hand
on real models.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
nn = torch.nn

from nnsig_torch import TorchAdapter  # noqa: E402
from nnsig_torch._pool import pool_tensor, token_rows_tensor  # noqa: E402

from nnsig_core import NnsigWarning  # noqa: E402
from nnsig_core.protocol.axes import (  # noqa: E402
    AmbiguousLayoutError,
    Layout,
    parse_layout,
    split_modes,
)
from nnsig_core.protocol.pooling import pool_array, token_rows_array  # noqa: E402

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- layout strings --------------------------------------------------------------------


def test_layout_strings():
    assert parse_layout("NCHW") == Layout("first", 2) and parse_layout("nhwc").code == "NHWC"
    assert parse_layout("NTC") == Layout("last", 1) and parse_layout("NLC").is_sequence
    assert parse_layout("channels_last", 5).code == "NDHWC"
    assert parse_layout("channels_first", 7).code == "channels_first:5"
    assert parse_layout("NC").positions == 0
    with pytest.raises(ValueError, match="describes 4-axis tensors"):
        parse_layout("NCHW", 3)
    with pytest.raises(ValueError, match="Unknown layout 'NWHC'.*NCHW"):
        parse_layout("NWHC")
    assert split_modes(("cls", "tokens")) == ("cls", True, True)
    assert split_modes("tokens") == (None, False, True)
    with pytest.raises(ValueError, match="pair must be one sample-level mode and 'tokens'"):
        TorchAdapter(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), pool=("cls", "mean"))


# -- layouts found from the modules -----------------------------------------------------


class Permute(nn.Module):  # named like torchvision.ops.Permute: the tracker follows its dims
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class SwinLike(nn.Module):
    """A channels-last block (Swin, ConvNeXt): conv, permute to NHWC, norm, MLP, GELU."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.to_last = Permute([0, 2, 3, 1])
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 12)
        self.act = nn.GELU()
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        h = self.act(self.fc(self.norm(self.to_last(self.stem(x)))))
        return self.head(h.mean((1, 2)))


class Tokens(nn.Module):
    """Patch embedding with functional flatten/transpose; the layer norm after it says NLC."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 4, stride=4)
        self.mix = nn.Identity()
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        t = self.mix(self.embed(x).flatten(2).transpose(1, 2))  # (n, 4, 6): no module said so
        return self.head(self.norm(t).mean(1))


class Einsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 5))

    def forward(self, x):
        return torch.einsum("nabc,cd->nabd", x, self.w)


class Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.mix = Einsum()
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.mix(x).mean((1, 2)))


def test_channels_last_blocks_are_found():
    model = SwinLike().eval()
    x = torch.randn(3, 3, 8, 8)
    adapter = TorchAdapter(model, layers=["stem", "norm", "act"])
    _, acts = adapter.run(x)
    with torch.no_grad():
        stem = model.stem(x)
        act = model.act(model.fc(model.norm(stem.permute(0, 2, 3, 1))))
    layouts = {e["name"]: e["layout"] for e in adapter.model_summary()["layers"]}
    assert layouts == {"stem": "NCHW", "norm": "NHWC", "act": "NHWC"}  # GELU: like its input
    np.testing.assert_allclose(acts["stem"], stem.mean((2, 3)), atol=ATOL)
    np.testing.assert_allclose(acts["act"], act.mean((1, 2)), atol=ATOL)
    assert acts["act"].shape == (3, 12)  # one value per channel, not per row of the map


def test_a_reader_tells_the_layout_of_a_functional_transpose():
    model = Tokens().eval()
    x = torch.randn(2, 3, 8, 8)
    adapter = TorchAdapter(model, layers=["mix"], pool="max")
    _, acts = adapter.run(x)
    with torch.no_grad():
        t = model.embed(x).flatten(2).transpose(1, 2)
    assert adapter.model_summary()["layers"][0]["layout"] == "NLC"
    np.testing.assert_allclose(acts["mix"], t.amax(1), atol=ATOL)


def test_unknown_layout_is_an_error_that_says_how_to_choose():
    model = Opaque().eval()
    x = torch.randn(2, 4, 3, 5)
    with pytest.raises(AmbiguousLayoutError, match=r"'mix'.*\(4, 3, 5\).*layout=\{'mix': 'NCHW'\}"):
        TorchAdapter(model, layers="mix", pool="mean").run(x)
    with pytest.warns(NnsigWarning, match=r"layout of 1 layer\(s\) is unknown"):
        _, acts = TorchAdapter(model, layers="mix").run(x)  # "auto": kept whole, with a warning
    assert acts["mix"].shape == (2, 4, 3, 5)
    _, told = TorchAdapter(model, layers="mix", layout={"mi*": "NHWC"}).run(x)
    with torch.no_grad():
        np.testing.assert_allclose(told["mix"], model.mix(x).mean((1, 2)), atol=ATOL)
    with pytest.raises(ValueError, match="layout of layer 'mix'.*3-axis"):
        TorchAdapter(model, layers="mix", layout="NLC").run(x)
    from nnsig_core.protocol import LayerSelectionError

    with pytest.raises(LayerSelectionError, match="layout key.*'mox'"):
        TorchAdapter(model, layers="mix", layout={"mox": "NHWC"}).run(x)


def test_cls_and_last_need_a_sequence():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()
    x = torch.randn(2, 3, 6, 6)
    model(x)
    with pytest.raises(ValueError, match="pool 'cls' of layer '0' needs a sequence.*NCHW"):
        TorchAdapter(model, layers="0", pool="cls").run(x)


# -- the torch reductions are the NumPy reference's -------------------------------------


@st.composite
def batches(draw):
    n = draw(st.integers(1, 4))
    positions = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    c = draw(st.integers(1, 5))
    side = draw(st.sampled_from(["first", "last"]))
    shape = (n, c, *positions) if side == "first" else (n, *positions, c)
    x = draw(st.lists(st.floats(-100, 100, width=32), min_size=int(np.prod(shape)),
                      max_size=int(np.prod(shape))))
    mask = None
    if len(positions) == 1 and draw(st.booleans()):
        rows = [draw(st.lists(st.booleans(), min_size=positions[0], max_size=positions[0])
                     .filter(any)) for _ in range(n)]
        mask = np.array(rows, dtype=bool)
    return np.array(x, dtype=np.float32).reshape(shape), Layout(side, len(positions)), mask


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(["mean", "max", "cls", "last", "flatten", None, "auto"]))
def test_torch_pooling_matches_the_numpy_reference(batch, mode):
    a, layout, mask = batch
    t, m = torch.from_numpy(a), None if mask is None else torch.from_numpy(mask)
    if mode in ("cls", "last") and not layout.is_sequence:
        with pytest.raises(ValueError, match="needs a sequence"):
            pool_tensor(t, mode, layout, m, "x")
        return
    got = pool_tensor(t, mode, layout, m, "x").numpy()
    want = pool_array(a, mode, layout, mask, name="x")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    if mode == "mean" and mask is not None:  # padding never enters the mean
        axis = layout.position_axes()[0]
        moved = np.moveaxis(a, axis, 1)
        for i in range(len(a)):
            np.testing.assert_allclose(want[i], moved[i][mask[i]].mean(0), rtol=1e-5, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(batches())
def test_torch_token_rows_match_the_numpy_reference(batch):
    a, layout, mask = batch
    ids = None
    if layout.is_sequence:
        length = a.shape[layout.position_axes()[0]]
        ids = np.arange(a.shape[0] * length).reshape(a.shape[0], length) + 100
    t, m = torch.from_numpy(a), None if mask is None else torch.from_numpy(mask)
    values, sample, position, token = token_rows_tensor(
        t, layout, m, None if ids is None else torch.from_numpy(ids), "x")
    ref = token_rows_array(a, layout, mask, ids, name="x")
    np.testing.assert_allclose(values.numpy(), ref.values, atol=1e-6)
    np.testing.assert_array_equal(sample.numpy(), ref.sample)
    np.testing.assert_array_equal(position.numpy(), ref.position)
    if ids is None:
        assert token is None and ref.token is None
    else:
        np.testing.assert_array_equal(token.numpy(), ref.token)
        np.testing.assert_array_equal(ref.token, ids[ref.sample, ref.position])
    channel = a.shape[layout.channel_axis]
    assert ref.values.shape[1:] == (channel,)
    n_pos = int(np.prod([a.shape[i] for i in layout.position_axes()]))
    expected = a.shape[0] * n_pos if mask is None else int(mask.sum())
    assert len(ref) == expected


# -- text: masks, cls/last, token ids ---------------------------------------------------


def _bert():
    tf = pytest.importorskip("transformers")
    config = tf.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=20)
    return tf.BertForSequenceClassification(config).eval()


def _output_of(model, module, batch):
    """What ``module`` returns (its first tensor) when ``model`` runs on ``batch``: a plain hook."""
    seen = []

    def hook(m, args, out):
        seen.append(out[0] if isinstance(out, tuple) else out)

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        handle.remove()
    return seen[0]


def _text_batch():
    ids = torch.randint(3, 50, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 4:] = 0  # right padding
    mask[2, :2] = 0  # left padding
    return {"input_ids": ids, "attention_mask": mask}


def test_padding_never_enters_a_mean_and_last_is_the_last_real_token():
    model = _bert()
    batch = _text_batch()
    layer = "bert.encoder.layer.1"
    with torch.no_grad():
        hidden = model.bert(**batch).last_hidden_state
    keep = batch["attention_mask"].bool()
    modes = {"mean": None, "max": None, "cls": None, "last": None}
    for mode in modes:
        _, acts = TorchAdapter(model, layers=layer, pool=mode).run(batch)
        modes[mode] = acts[layer]
    for i in range(3):
        real = hidden[i][keep[i]]
        np.testing.assert_allclose(modes["mean"][i], real.mean(0), atol=ATOL)
        np.testing.assert_allclose(modes["max"][i], real.amax(0), atol=ATOL)
        np.testing.assert_allclose(modes["cls"][i], real[0], atol=ATOL)  # first real token
        np.testing.assert_allclose(modes["last"][i], real[-1], atol=ATOL)
    with pytest.raises(ValueError, match="no token in its attention mask"):
        empty = dict(batch, attention_mask=batch["attention_mask"].clone())
        empty["attention_mask"][1] = 0
        TorchAdapter(model, layers=layer, pool="mean").run(empty)


def test_a_mask_of_another_length_is_named_not_silently_dropped():
    """A mask whose length is not the layer's cannot apply: both pooling implementations say
    so (once per layer) and keep every position, rather than average padding in silently."""
    a = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3)
    layout, mask = Layout("last", 1), np.ones((2, 4), dtype=bool)
    for pool, rows in ((pool_array, token_rows_array), (pool_tensor, token_rows_tensor)):
        x, m = (a, mask) if pool is pool_array else (torch.from_numpy(a), torch.from_numpy(mask))
        with pytest.warns(NnsigWarning, match=r"Layer 'h' has 6 positions but the batch's "
                          r"attention mask has shape \(2, 4\).*padding included"):
            out = pool(x, "mean", layout, m, name="h")
        np.testing.assert_allclose(np.asarray(out), a.mean(axis=1))
        with pytest.warns(NnsigWarning, match="has 6 positions"):
            got = rows(x, layout, m, None, name="h")
        assert len(got.values if pool is pool_array else got[0]) == 12


def test_a_mask_key_the_batch_lacks_is_an_error_naming_the_batch_s_keys():
    """A misspelt ``mask=`` key would pool every position, padding included: refused, naming
    the batch's keys; the key it names works."""
    model, batch, layer = _bert(), _text_batch(), "bert.encoder.layer.0"
    with pytest.raises(ValueError, match=r"mask='atention_mask': the batch has no such key "
                       r"\(its keys are \['attention_mask', 'input_ids'\]\).*mask=None"):
        TorchAdapter(model, layers=layer, pool="mean", mask="atention_mask").run(batch)
    fixed = TorchAdapter(model, layers=layer, pool="mean", mask="attention_mask").run(batch)[1]
    default = TorchAdapter(model, layers=layer, pool="mean").run(batch)[1]
    np.testing.assert_array_equal(fixed[layer], default[layer])


def test_a_mask_passed_positionally_is_named_in_a_warning():
    """A model called as model(ids, mask): the default keys find no mask, so padding would be
    pooled in without a word; a warning names the input and the mask= that works."""
    from nnsig_core import NnsigWarning

    model, batch, layer = _bert(), _text_batch(), "bert.encoder.layer.0"
    pair = (batch["input_ids"], batch["attention_mask"])
    with pytest.warns(NnsigWarning, match=r"input at position 1 looks like an attention "
                      r"mask.*mask=lambda x: x\[1\]"):
        TorchAdapter(model, layers=layer, pool="mean").run(pair)
    fixed = TorchAdapter(model, layers=layer, pool="mean", mask=lambda x: x[1]).run(pair)[1]
    default = TorchAdapter(model, layers=layer, pool="mean").run(batch)[1]
    np.testing.assert_allclose(fixed[layer], default[layer], atol=ATOL)
    # token_type_ids are 0 and 1 too, but no mask: no warning for a batch without padding
    types = torch.zeros_like(batch["input_ids"])
    types[:, 4:] = 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        TorchAdapter(model, layers=layer, pool="mean").run(
            {"input_ids": batch["input_ids"], "token_type_ids": types})


def test_tokens_on_a_layer_without_positions_names_the_per_layer_form():
    """pool=("mean", "tokens") as the tokens guide shows, on a model with a pooled head among
    its layers: the error gives the per-layer form, which works."""
    model, batch = _bert(), _text_batch()
    layers = ["bert.encoder.layer.0", "bert.pooler"]
    with pytest.raises(ValueError, match=r"pool 'tokens' of layer 'bert.pooler' needs positions"
                       r".*pool=\{'<sequence layer>': \('mean', 'tokens'\)\}"):
        TorchAdapter(model, layers=layers, pool=("mean", "tokens")).run(batch)
    _, acts = TorchAdapter(model, layers=layers,
                           pool={"bert.encoder.*": ("mean", "tokens")}).run(batch)
    assert set(acts) == {"bert.encoder.layer.0", "bert.encoder.layer.0@tokens", "bert.pooler"}


def test_token_rows_leave_padding_out_and_record_token_ids():
    model = _bert()
    batch = _text_batch()
    layer = "bert.encoder.layer.0"
    _, acts = TorchAdapter(model, layers=layer, pool=("mean", "tokens")).run(batch)
    rows = acts[layer + "@tokens"]
    keep = batch["attention_mask"].bool()
    assert len(rows) == int(keep.sum()) and acts[layer].shape == (3, 16)
    sample, position = np.nonzero(keep.numpy())
    np.testing.assert_array_equal(rows.sample, sample)
    np.testing.assert_array_equal(rows.position, position)
    np.testing.assert_array_equal(rows.token, batch["input_ids"].numpy()[sample, position])
    h = _output_of(model, model.bert.encoder.layer[0], batch)
    np.testing.assert_allclose(rows.values, h[sample, position], atol=ATOL)
    no_mask = TorchAdapter(model, layers=layer, pool="tokens", mask=None).run(batch)[1]
    assert len(no_mask[layer + "@tokens"]) == 3 * 7


def test_outputs_without_batch_axis_are_skipped_unless_named(caplog):
    tf = pytest.importorskip("transformers")
    config = tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32,
                           bos_token_id=1, eos_token_id=2)
    model = tf.GPT2LMHeadModel(config).eval()
    batch = {"input_ids": torch.randint(3, 50, (4, 6))}
    with caplog.at_level(logging.INFO, logger="nnsig_torch"):
        adapter = TorchAdapter(model, layers="transformer.w*")  # wte and wpe (no batch axis)
        _, acts = adapter.run(batch)
    assert list(acts) == ["transformer.wte"] and "transformer.wpe (1, 6, 16)" in caplog.text
    with pytest.raises(ValueError, match="'transformer.wpe'.*no batch axis"):
        TorchAdapter(model, layers="transformer.wpe").run(batch)
    _, last = TorchAdapter(model, layers="transformer.h.1", pool="last").run(batch)
    h = _output_of(model, model.transformer.h[1], batch)
    np.testing.assert_allclose(last["transformer.h.1"], h[:, -1], atol=ATOL)


def test_token_rows_of_two_resolutions_name_a_pooling_that_works(tmp_path):
    """Two feature maps of other sizes pooled ("mean", "tokens") cannot share token rows; the
    error's pool= (token rows of one of them) captures (it said "capture them separately",
    and a second split of the other layer was then refused by the store)."""
    import re

    from nnsig_core import capture

    class Stages(nn.Module):
        def __init__(self):
            super().__init__()
            self.s1 = nn.Conv2d(1, 4, 3, padding=1)
            self.s2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.s2(torch.relu(self.s1(x))).mean((2, 3)))

    model = Stages().eval()
    data = (torch.randn(10, 1, 8, 8), torch.arange(10) % 3)
    with pytest.raises(ValueError, match="different tokens") as err:
        capture(TorchAdapter(model, layers=["s1", "s2"], pool=("mean", "tokens")), data,
                tmp_path / "a.zarr", progress=False)
    pool = eval(re.search(r"pool=(\{.*?\})", str(err.value)).group(1))  # noqa: S307
    store = capture(TorchAdapter(model, layers=["s1", "s2"], pool=pool), data,
                    tmp_path / "b.zarr", progress=False)
    assert store.layers("train") == ["s1", "s2"] and store.token_split("train") == "train.tokens"
