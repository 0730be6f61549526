"""The peer models of issue 25, captured exactly, and the finite check summed in the hooks.

* a model whose ``forward(x)`` takes one tuple (TorchLens' ``TupleInputModel``);
* a sequence-first ``nn.TransformerEncoder`` fed with the default ``batch_axis=0``;
* Hugging Face T5's whole blocks, which return ``(hidden, position bias (1, heads, q, k))``,
  named exactly, with as many samples as heads, and with a last batch of one sample;
* the decoder blocks of an encoder-decoder pooled over the decoder's tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnsig_torch import TorchAdapter  # noqa: E402

from nnsig_core import capture  # noqa: E402
from nnsig_core.capture import CaptureError  # noqa: E402
from nnsig_core.protocol import NonFiniteActivationError  # noqa: E402

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- a model whose one argument is a tuple ----------------------------------------------


class TupleInputModel(nn.Module):
    """TorchLens' test model: ``forward(x)`` with ``a, b = x``."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 5)
        self.act = nn.ReLU()

    def forward(self, x):
        a, b = x
        return self.act(self.linear(a)) + self.act(self.linear(b))


def test_a_tuple_argument_is_passed_as_a_dict_or_a_one_tuple(tmp_path: Path):
    model = TupleInputModel().eval()
    a, b = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.arange(8) % 2
    with torch.no_grad():
        ref = torch.relu(model.linear(a)), torch.relu(model.linear(b))
    # a bare tuple is positional arguments: the error names both ways to pass it
    with pytest.raises(TypeError, match=r"\{'x': \(\.\.\., \.\.\.\)\}.*1-tuple"):
        TorchAdapter(model, layers="act").run((a, b))
    with pytest.raises(TypeError, match=r"\{'x': \(\.\.\., \.\.\.\)\}"):
        capture(TorchAdapter(model, layers="act"), [((a, b), y)], tmp_path / "bad.zarr",
                progress=False)
    forms = {
        "loader, dict": [({"x": (a[:5], b[:5])}, y[:5]), ({"x": (a[5:], b[5:])}, y[5:])],
        "loader, 1-tuple": [(((a[:5], b[:5]),), y[:5]), (((a[5:], b[5:]),), y[5:])],
        "arrays, dict": ({"x": (a, b)}, y),
        "arrays, 1-tuple": (((a, b),), y),
    }
    for i, (form, data) in enumerate(forms.items()):
        store = capture(TorchAdapter(model, layers="act"), data, tmp_path / f"{i}.zarr",
                        batch_size=3, progress=False)
        assert store.n_samples("train") == 8, form
        assert store.layers("train") == ["act", "act:1"], form
        np.testing.assert_array_equal(store.labels("train"), y.numpy())
        np.testing.assert_allclose(store.activations("train", "act")[:], ref[0], atol=ATOL)
        np.testing.assert_allclose(store.activations("train", "act:1")[:], ref[1], atol=ATOL)


# -- a sequence-first TransformerEncoder -------------------------------------------------


def _no_classes(out):
    """The predictions of a model without a classification head (its outputs are hidden
    states per position), as the capture's error advises."""
    return np.zeros(len(out), int)


def test_sequence_first_labels_error_says_batch_axis_1(tmp_path: Path):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # (seq, batch, dim)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(6, 10, 8)  # 6 tokens, 10 samples
    labels = torch.arange(10) % 3
    loader = [(x[:, lo: lo + 4], labels[lo: lo + 4]) for lo in range(0, 10, 4)]
    with pytest.raises(CaptureError, match=r"6 inputs.*but 4 labels.*labels match axis 1"
                                           r".*batch_axis=1"):
        capture(TorchAdapter(model), loader, tmp_path / "bad.zarr", progress=False)
    with pytest.raises(CaptureError, match=r"y has 10.*labels match axis 1.*batch_axis=1"):
        capture(TorchAdapter(model), (x, labels), tmp_path / "bad2.zarr", progress=False)
    # the fix the message gives works, exactly (a model without a head: predictions given)
    store = capture(TorchAdapter(model, batch_axis=1), loader, tmp_path / "s.zarr",
                    progress=False, predict=_no_classes)
    with torch.no_grad():
        h0 = model.layers[0](x)
        h1 = model.layers[1](h0)
    assert store.layers("train") == ["layers.0", "layers.1"]
    np.testing.assert_allclose(store.activations("train", "layers.0")[:], h0.mean(0), atol=ATOL)
    np.testing.assert_allclose(store.activations("train", "layers.1")[:], h1.mean(0), atol=ATOL)


class SequenceFirstClassifier(nn.Module):
    """``forward(input_ids, attention_mask)``, both ``(seq, batch)``, as ``batch_first=False``
    modules take them."""

    def __init__(self, vocab: int = 50, dim: int = 8):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(dim, 2, 16, dropout=0.0),
                                         1, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, input_ids, attention_mask):
        h = self.enc(self.emb(input_ids), src_key_padding_mask=(attention_mask == 0).T)
        return self.head(h.mean(0))


def test_sequence_first_mask_and_token_ids_read_along_batch_axis_1(tmp_path: Path):
    """With batch_axis=1 the mask and token ids of a dict batch are (seq, batch), as its inputs:
    the masked mean and each token row's id are exact, also for square batches (seq == batch),
    where reading them batch-first would have passed the shape check."""
    model = SequenceFirstClassifier().eval()
    n, length = 24, 6
    lengths = torch.randint(2, length + 1, (n,))
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = torch.randint(1, 50, (n, length)) * mask
    y = torch.arange(n) % 3
    batches = [{"input_ids": ids[i: i + 6].T, "attention_mask": mask[i: i + 6].T,
                "labels": y[i: i + 6]} for i in range(0, n, 6)]  # 6 x 6: square
    store = capture(TorchAdapter(model, layers=["enc.layers.0"], batch_axis=1,
                                 pool=("mean", "tokens")), batches, tmp_path / "s.zarr",
                    progress=False)
    with torch.no_grad():
        h = model.enc.layers[0](model.emb(ids.T), src_key_padding_mask=(mask == 0)).transpose(0, 1)
    real = mask.bool()
    means = torch.stack([h[i][real[i]].mean(0) for i in range(n)])
    np.testing.assert_allclose(store.activations("train", "enc.layers.0")[:], means, atol=ATOL)
    rows = store.token_rows("train.tokens")
    np.testing.assert_array_equal(rows["token"], ids.numpy()[rows["sample_row"], rows["position"]])
    assert len(rows["token"]) == int(mask.sum())


def test_labels_length_error_without_a_matching_axis(tmp_path: Path):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    loader = [(torch.randn(5, 4), torch.zeros(3, dtype=torch.long))]
    with pytest.raises(CaptureError, match=r"5 inputs.*but 3 labels.*one label per sample"
                                           r".*batch_axis=1\)"):
        capture(TorchAdapter(model), loader, tmp_path / "s.zarr", progress=False)


# -- Hugging Face T5 ------------------------------------------------------------------


def _t5(heads: int = 2):
    tf = pytest.importorskip("transformers")
    config = tf.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                         num_heads=heads, decoder_start_token_id=0)
    return tf.T5ForConditionalGeneration(config).eval()


def _t5_batch(n: int, src: int = 6, tgt: int = 4, pad: bool = True):
    ids = torch.randint(3, 100, (n, src))
    mask = torch.ones(n, src, dtype=torch.long)
    if pad:
        mask[0, src - 2:] = 0
    return {"input_ids": ids, "attention_mask": mask,
            "decoder_input_ids": torch.randint(3, 100, (n, tgt))}


def _block_outputs(model, names, batch):
    seen = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: seen.__setitem__(n, o[0].detach().clone())) for n in names]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for h in handles:
            h.remove()
    return seen


def _masked_mean(h, mask):
    w = mask.float().unsqueeze(-1)
    return ((h * w).sum(1) / w.sum(1)).numpy()


def test_t5_blocks_named_exactly_give_their_hidden_states(tmp_path: Path):
    model = _t5(heads=2)
    names = ["encoder.block.0", "encoder.block.1", "decoder.block.0", "decoder.block.1"]
    for n in (2, 3):  # 2: as many samples as heads, the bias (1, 2, q, k) is no batch axis
        batch = _t5_batch(n)
        _, acts = TorchAdapter(model, layers=names).run(batch)
        assert list(acts) == [k + ".0" for k in names], list(acts)
        ref = _block_outputs(model, names, batch)
        for k in names[:2]:
            np.testing.assert_allclose(acts[k + ".0"], _masked_mean(ref[k], batch["attention_mask"]),
                                       atol=ATOL)
        for k in names[2:]:  # the decoder's tokens: no padding (no decoder_attention_mask)
            np.testing.assert_allclose(acts[k + ".0"], ref[k].mean(1).numpy(), atol=ATOL)
    # a capture whose batches hold as many samples as heads, the last one a single sample
    parts = [_t5_batch(2), _t5_batch(2), _t5_batch(1)]
    loader = [(b, torch.zeros(len(b["input_ids"]), dtype=torch.long)) for b in parts]
    store = capture(TorchAdapter(model, layers=names), loader, tmp_path / "t5.zarr",
                    progress=False, predict=_no_classes)
    assert store.layers("train") == [k + ".0" for k in names]
    got = store.activations("train", "decoder.block.1.0")[:]
    want = np.concatenate([_block_outputs(model, ["decoder.block.1"], b)["decoder.block.1"]
                           .mean(1).numpy() for b in parts])
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_encoder_decoder_decoder_blocks_use_the_decoder_mask():
    model = _t5(heads=2)
    names = ["encoder.block.1", "decoder.block.1"]
    batch = _t5_batch(3, src=5, tgt=5)  # equal lengths: the encoder's mask must not be used
    _, acts = TorchAdapter(model).run(batch)  # the default: every block, first tensor
    ref = _block_outputs(model, names, batch)
    np.testing.assert_allclose(acts["encoder.block.1"],
                               _masked_mean(ref["encoder.block.1"], batch["attention_mask"]),
                               atol=ATOL)
    np.testing.assert_allclose(acts["decoder.block.1"], ref["decoder.block.1"].mean(1).numpy(),
                               atol=ATOL)
    dmask = torch.ones(3, 5, dtype=torch.long)
    dmask[1, 3:] = 0
    batch["decoder_attention_mask"] = dmask
    _, acts = TorchAdapter(model, pool={"decoder.block.1": ("mean", "tokens")}).run(batch)
    ref = _block_outputs(model, names, batch)
    np.testing.assert_allclose(acts["decoder.block.1"], _masked_mean(ref["decoder.block.1"], dmask),
                               atol=ATOL)
    rows = acts["decoder.block.1@tokens"]
    assert len(rows) == int(dmask.sum())
    np.testing.assert_array_equal(rows.token, batch["decoder_input_ids"][dmask.bool()].numpy())


# -- the finite check, summed in the hooks from the second batch on ------------------------


class Poison(nn.Module):
    def __init__(self):
        super().__init__()
        self.value = None

    def forward(self, x):
        if self.value is None:
            return x
        x = x.clone()
        x[2, 1] = self.value
        return x


def test_finite_check_summed_in_the_hook_on_later_batches():
    poison = Poison()
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), poison, nn.Linear(4, 2)).eval()
    adapter = TorchAdapter(model, layers=["1", "2"])
    x = torch.randn(4, 3)
    for _ in range(2):
        adapter.run(x)
    assert adapter._hook_sums == {"1", "2"}
    for value in (math.nan, math.inf, -math.inf):
        poison.value = value
        with pytest.raises(NonFiniteActivationError, match=r"layer '2' at sample 2 of the batch"):
            adapter.run(x)
    # finite values whose sum overflows float32: confirmed element-wise, no error
    poison.value = None
    big = nn.Sequential(nn.Identity(), nn.Identity()).eval()
    adapter = TorchAdapter(big, layers="0")
    x = torch.full((3, 4), 3e38)
    for _ in range(3):
        _, acts = adapter.run(x)
        np.testing.assert_array_equal(acts["0"], x.numpy())
