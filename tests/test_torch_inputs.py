"""Capturing real PyTorch models fed in every form: dicts, tuples, sequence-first batches.

Also the token row space in the store, and the copies the adapter makes (or
not): memory a module reuses from batch to batch, and the pinned buffers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnsig_torch import TorchAdapter  # noqa: E402
from nnsig_torch._runtime import PinnedPool  # noqa: E402

from nnsig_core import NnsigWarning, capture, open_store  # noqa: E402
from nnsig_core.capture import CaptureError  # noqa: E402
from nnsig_core.store import StoreError  # noqa: E402

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


class TextNet(nn.Module):
    """Embedding, one encoder layer, mean over real tokens, head: takes input_ids/attention_mask."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        h = self.block(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        w = attention_mask.unsqueeze(-1).float()
        return self.head((h * w).sum(1) / w.sum(1))


def _text(n=10, length=6):
    ids = torch.randint(1, 30, (n, length))
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::3, length - 2 :] = 0
    labels = torch.arange(n) % 3
    return ids, mask, labels


class DictLoader:
    """Batches as tokenizers and HF datasets give them: one dict per batch, labels inside."""

    def __init__(self, ids, mask, labels, batch_size, label_name="labels"):
        self.ids, self.mask, self.labels = ids, mask, labels
        self.batch_size, self.label_name = batch_size, label_name
        self.dataset = range(len(ids))

    def __iter__(self):
        for lo in range(0, len(self.ids), self.batch_size):
            sl = slice(lo, lo + self.batch_size)
            yield {"input_ids": self.ids[sl], "attention_mask": self.mask[sl],
                   self.label_name: self.labels[sl]}


def test_dict_batches_with_labels_inside(tmp_path: Path):
    model = TextNet().eval()
    ids, mask, labels = _text()
    adapter = TorchAdapter(model, layers="block", pool=("mean", "tokens"))
    store = capture(adapter, DictLoader(ids, mask, labels, 4), tmp_path / "t.zarr",
                    progress=False)
    np.testing.assert_array_equal(store.labels("train"), labels.numpy())
    with torch.no_grad():
        h = model.block(model.embed(ids), src_key_padding_mask=mask == 0)
        logits = model(ids, mask)
    w = mask.unsqueeze(-1).float()
    np.testing.assert_allclose(store.activations("train", "block")[:], (h * w).sum(1) / w.sum(1),
                               atol=ATOL)
    np.testing.assert_allclose(store.outputs("train")[:], logits, atol=ATOL)
    # the token row space: padding left out, each row's sample, position and token id
    keep = mask.bool().numpy()
    sample, position = np.nonzero(keep)
    assert store.splits == ["train", "train.tokens"] and store.token_split("train") == "train.tokens"
    assert store.n_samples("train.tokens") == keep.sum() and store.is_complete("train.tokens")
    rows = store.token_rows("train.tokens")
    np.testing.assert_array_equal(rows["sample_row"], sample)
    np.testing.assert_array_equal(rows["position"], position)
    np.testing.assert_array_equal(rows["token"], ids.numpy()[sample, position])
    np.testing.assert_allclose(store.activations("train.tokens", "block")[:],
                               h.numpy()[sample, position], atol=ATOL)
    np.testing.assert_array_equal(store.labels("train.tokens"), labels.numpy()[sample])
    np.testing.assert_array_equal(store.predictions("train.tokens"),
                                  store.predictions("train")[sample])
    info = store.split_attrs("train.tokens")
    assert info["level"] == "tokens" and info["parent"] == "train"
    assert store.layer_info("train.tokens")[0]["pool"] == "mean+tokens"
    # another key for the labels, or none at all
    other = capture(adapter, DictLoader(ids, mask, labels, 4, "target"), tmp_path / "u.zarr",
                    label_key="target", progress=False)
    np.testing.assert_array_equal(other.labels("train"), labels.numpy())
    with pytest.raises(CaptureError, match="no 'labels'.*keys are"):
        capture(adapter, DictLoader(ids, mask, labels, 4, "target"), tmp_path / "v.zarr",
                label_key="labels", progress=False)
    # Without label_key, a labels key of another name is named, with the fix (the model
    # then refuses it as an input).
    with pytest.warns(NnsigWarning, match=r"'target' \(one integer per sample\) goes to the "
                      r"model.*label_key='target'"), pytest.raises(TypeError, match="target"):
        capture(adapter, DictLoader(ids, mask, labels, 4, "target"), tmp_path / "w.zarr",
                progress=False)


def test_mapping_of_arrays_and_array_pairs_of_dicts(tmp_path: Path):
    model = TextNet().eval()
    ids, mask, labels = _text(9)
    adapter = TorchAdapter(model, layers="block")
    a = capture(adapter, {"input_ids": ids, "attention_mask": mask, "labels": labels},
                tmp_path / "a.zarr", batch_size=4, progress=False)
    b = capture(adapter, ({"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, labels),
                tmp_path / "b.zarr", batch_size=5, max_samples=7, progress=False)
    np.testing.assert_allclose(a.activations("train", "block")[:7], b.activations("train", "block")[:],
                               atol=ATOL)
    assert b.n_samples("train") == 7 and a.split_attrs("train")["capture"]["batch_size"] == 4


def test_positional_inputs_as_tuples(tmp_path: Path):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(2, 4)
            self.act = nn.Tanh()

        def forward(self, x, y):
            return self.act(self.a(x) + self.b(y))

    model = Two().eval()
    x, y, labels = torch.randn(8, 3), torch.randn(8, 2), torch.arange(8) % 4
    store = capture(TorchAdapter(model), ((x, y), labels), tmp_path / "p.zarr", batch_size=3,
                    progress=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, labels),
                                         batch_size=3)
    pairs = (((xb, yb), lb) for xb, yb, lb in loader)
    store2 = capture(TorchAdapter(model), list(pairs), tmp_path / "q.zarr", progress=False)
    with torch.no_grad():
        ref = model(x, y)
    for s in (store, store2):
        np.testing.assert_allclose(s.activations("train", "act")[:], ref, atol=ATOL)


def test_a_model_failing_on_the_first_batch_keeps_its_error_and_is_told_the_inputs(
        tmp_path: Path):
    """The model's own exception comes through (type, message, traceback) with a note naming
    the structure of the inputs it was given; the store holds no split."""
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    inputs = {"x": torch.randn(5, 10), "extra": (torch.zeros(5, 2, dtype=torch.int64),)}
    with pytest.raises(TypeError, match="unexpected keyword") as info:
        capture(TorchAdapter(model), (inputs, torch.arange(5) % 4), tmp_path / "d.zarr",
                progress=False)
    assert "{'x': float32 (5, 10) on cpu, 'extra': (int64 (5, 2) on cpu)}" in str(
        info.value.__notes__)
    with pytest.raises(RuntimeError, match="cannot be multiplied") as info:
        capture(TorchAdapter(model), (torch.randn(5, 10), torch.arange(5) % 4),
                tmp_path / "s.zarr", progress=False)
    assert info.value.__notes__ == ["nnsig: the model raised on the first batch, whose inputs "
                                    "were float32 (5, 10) on cpu; pass inputs its forward takes."]
    assert open_store(tmp_path / "s.zarr").splits == []
    # float32 tensors for a float64 model: the note names the model's dtype and a fix that works
    wide = nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x, y = torch.randn(5, 10), torch.arange(5) % 2
    with pytest.raises(RuntimeError) as info:
        capture(TorchAdapter(wide), (x, y), tmp_path / "f.zarr", progress=False)
    assert "the model's parameters are float64: give tensors of that dtype, " \
        "x.to(torch.float64), or NumPy arrays" in info.value.__notes__[0]
    for fixed in (x.to(torch.float64), x.numpy()):
        capture(TorchAdapter(wide), (fixed, y), tmp_path / "f.zarr", progress=False,
                overwrite=True)


def test_sequence_first_batches(tmp_path: Path):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)  # (seq, batch, dim)

    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.enc(x).mean(0))

    model = SeqFirst().eval()
    x = torch.randn(6, 10, 8)  # 6 tokens, 10 samples
    labels = torch.arange(10) % 3
    loader = [(x[:, lo : lo + 4], labels[lo : lo + 4]) for lo in range(0, 10, 4)]
    with pytest.raises(CaptureError, match="labels match axis 1.*batch_axis=1"):
        capture(TorchAdapter(model), loader, tmp_path / "bad.zarr", progress=False)
    with pytest.raises(ValueError, match="no batch axis of size 6.*batch_axis=1"):
        TorchAdapter(model).run(x[:, :4])
    adapter = TorchAdapter(model, batch_axis=1)
    store = capture(adapter, loader, tmp_path / "s.zarr", progress=False)
    again = capture(adapter, (x, labels), tmp_path / "t.zarr", batch_size=3, progress=False)
    with torch.no_grad():
        h = model.enc.layers[1](model.enc.layers[0](x))  # (6, 10, 8)
    for s in (store, again):
        assert s.n_samples("train") == 10 and s.layers("train") == ["enc.layers.0", "enc.layers.1"]
        np.testing.assert_array_equal(s.labels("train"), labels.numpy())
        np.testing.assert_allclose(s.activations("train", "enc.layers.1")[:], h.mean(0), atol=ATOL)
    with pytest.raises(CaptureError, match="batch_axis=0.*adapter has batch_axis=1"):
        capture(adapter, loader, tmp_path / "u.zarr", batch_axis=0, progress=False)


def test_token_row_space_lifecycle(tmp_path: Path):
    model = TextNet().eval()
    ids, mask, labels = _text(12)
    path = tmp_path / "s.zarr"
    both = TorchAdapter(model, layers=["embed", "block"], pool=("mean", "tokens"))
    capture(both, DictLoader(ids, mask, labels, 5), path, progress=False)
    capture(both, DictLoader(ids[:6], mask[:6], labels[:6], 5), path, split="test", progress=False)
    store = open_store(path)
    assert store.splits == ["test", "test.tokens", "train", "train.tokens"]
    with pytest.raises(CaptureError, match="reserved for the token rows"):
        capture(both, DictLoader(ids, mask, labels, 5), path, split="x.tokens", progress=False)
    with pytest.raises(StoreError, match="one row per sample, not per token"):
        store.token_rows("train")
    # a capture with other token-level layers does not match the other token row spaces
    other = TorchAdapter(model, layers=["embed", "block"],
                         pool={"embed": ("mean", "tokens"), "block": "mean"})
    with pytest.raises(StoreError, match=r"does not match split '(train|test).tokens'.*\['block'\]"):
        capture(other, DictLoader(ids, mask, labels, 5), path, split="val", progress=False)
    # replacing the split without token layers removes its old token rows
    capture(TorchAdapter(model, layers=["embed", "block"]), DictLoader(ids, mask, labels, 5), path,
            split="test", overwrite=True, progress=False)
    assert open_store(path).splits == ["test", "train", "train.tokens"]
    # an interrupted capture with token rows cannot be resumed, and says so
    store = open_store(path, mode="r+")
    info = store.split_attrs("train")
    store.write_split_attrs("train", dict(info, complete=False))
    with pytest.raises(CaptureError, match="token-level layers.*overwrite=True"):
        capture(both, DictLoader(ids, mask, labels, 5), path, resume=True, progress=False)


class Keep(nn.Module):
    """Writes its input into a buffer it keeps and returns that buffer (a cache, a static
    CUDA-graph output): the memory it hands out is written again on the next batch."""

    def __init__(self):
        super().__init__()
        self.register_buffer("out", torch.zeros(5, 6), persistent=False)

    def forward(self, h):
        n = len(h)
        self.out[:n].copy_(h)
        return self.out[:n]


def test_memory_a_module_writes_again_is_copied(caplog, tmp_path: Path):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), Keep(), nn.Linear(6, 2)).eval()
    x = torch.randn(20, 4)
    adapter = TorchAdapter(model, layers=["1", "2"], pool=None)
    with caplog.at_level(logging.INFO, logger="nnsig_torch"):
        store = capture(adapter, (x, None), tmp_path / "r.zarr", batch_size=5, progress=False)
    with torch.no_grad():
        ref = model[1](model[0](x))
    for layer in ("1", "2"):  # every batch's own values, although "2" is always the same memory
        np.testing.assert_allclose(store.activations("train", layer)[:], ref, atol=ATOL)
    assert "Layer '2' reuses its memory from batch to batch" in caplog.text
    assert adapter._plans["2"].owned and not adapter._plans["1"].owned


def test_pinned_pool_hands_a_buffer_out_again_only_once_its_arrays_are_gone():
    pool = PinnedPool(allocate=lambda n: torch.empty(n, dtype=torch.float32), keep=2)
    buf, users = pool.acquire(10)
    arr = buf[:10].numpy()
    users.append(__import__("weakref").ref(arr))
    other, _ = pool.acquire(8)
    assert other.data_ptr() != buf.data_ptr()  # still in use
    del arr
    again, _ = pool.acquire(6)
    assert again.data_ptr() in (buf.data_ptr(), other.data_ptr())
    big, _ = pool.acquire(100)
    assert big.numel() >= 100 and len(pool.buffers) <= 2


def test_inference_mode_tensors_are_copied_in_their_hook():
    """Tensors made under torch.inference_mode() keep no version counter: they are assumed to
    change and are processed in their hook, so an in-place op after the hook cannot alter them."""

    class InferenceForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.act = nn.ReLU()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            with torch.inference_mode():
                h = self.act(self.fc(x))
                h.add_(1.0)  # in place, after the hook of `act`
                return self.head(h)

    model = InferenceForward().eval()
    adapter = TorchAdapter(model, layers="act", pool=None)
    for _ in range(3):
        x = torch.randn(5, 3)
        _, acts = adapter.run(x)
        with torch.no_grad():
            np.testing.assert_allclose(acts["act"], torch.relu(model.fc(x)), atol=ATOL)
    assert adapter._plans["act"].eager


class PaddingNet(TextNet):
    """TextNet whose batches carry PyTorch's convention: ``padding_mask`` nonzero at padding."""

    def forward(self, input_ids, padding_mask):
        return super().forward(input_ids, (padding_mask == 0).long())


def test_a_padding_mask_of_the_padding_is_not_read_backwards(tmp_path: Path):
    """PyTorch's own padding masks are nonzero at the padding (key_padding_mask): the torch
    adapter read a batch's ``padding_mask`` as nonzero for real tokens, and averaged the
    padding only. It is not a default key there: the first batch warns, naming the fix,
    which gives the mean over the real tokens."""
    model = PaddingNet().eval()
    ids, mask, labels = _text(12)
    pad = 1 - mask
    batch = [({"input_ids": ids, "padding_mask": pad}, labels)]
    with pytest.warns(NnsigWarning, match=r"'padding_mask' looks like an attention mask.*"
                      r"no mask is under 'attention_mask'.*mask=lambda x: <it> == 0"):
        capture(TorchAdapter(model, layers="block"), batch, tmp_path / "a.zarr", progress=False)
    adapter = TorchAdapter(model, layers="block", mask=lambda x: x["padding_mask"] == 0)
    store = capture(adapter, batch, tmp_path / "b.zarr", progress=False)
    with torch.no_grad():
        h = model.block(model.embed(ids), src_key_padding_mask=pad == 1)
        w = mask.unsqueeze(-1).float()
        want = ((h * w).sum(1) / w.sum(1)).numpy()
    np.testing.assert_allclose(store.activations("train", "block")[:], want, atol=ATOL)


def test_logits_per_position_need_predict_and_examples_need_batching(tmp_path: Path):
    """A language model's (n, L, V) logits: the argmax of the flattened row was taken as the
    class without a word; now refused, naming predict=, whose example works. A list of
    single examples (0-d labels) named as such (it was "len() of a 0-d tensor")."""

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(30, 8)
            self.out = nn.Linear(8, 30)

        def forward(self, x):
            return self.out(torch.relu(self.embed(x)))

    ids = torch.randint(1, 30, (8, 5))
    lm = LM().eval()
    with pytest.raises(CaptureError, match=r"shape \(5, 30\) per sample.*predict=lambda out: "
                                           r"out.reshape\(len\(out\), -1, 30\)\[:, -1\]"):
        capture(TorchAdapter(lm), (ids, None), tmp_path / "lm.zarr", progress=False)

    def predict(out):  # the example of the message
        return out.reshape(len(out), -1, 30)[:, -1].argmax(-1)

    store = capture(TorchAdapter(lm), (ids, None), tmp_path / "lm.zarr", predict=predict,
                    progress=False, overwrite=True)
    with torch.no_grad():
        want = lm(ids)[:, -1].argmax(-1).numpy()
    np.testing.assert_array_equal(store.predictions("train"), want)
    examples = [{"input_ids": ids[i], "label": torch.tensor(i % 3)} for i in range(4)]
    with pytest.raises(CaptureError, match="single examples, not batches.*DataLoader"):
        capture(TorchAdapter(TextNet().eval()), examples, tmp_path / "ex.zarr", progress=False)


def test_token_and_pooling_mix_ups_are_refused(tmp_path: Path, capsys):
    """Rows of another kind than the fit rows: baselines of a token analysis scoring sample
    rows (they gave scores), a split pooled another way (the last token where the fit split
    has the mean: mapped onto its clusters), a split of token rows only (IndexError), and
    the token analysis's prototype export (defaulted to 'test' and left a file behind);
    baselines scored on their own fit split warn that they are in-sample."""
    from nnsig_core import SignatureAnalysis
    from nnsig_core.cli.main import main
    from nnsig_core.diagnostics import baseline_scores

    model = TextNet().eval()
    ids, mask, labels = _text(60)
    path = tmp_path / "t.zarr"
    both = TorchAdapter(model, layers="block", pool=("mean", "tokens"))
    for split in ("train", "test"):
        capture(both, DictLoader(ids, mask, labels, 20), path, split=split, progress=False)
    store = open_store(path, mode="r+")
    tok = SignatureAnalysis(n_clusters=3, only_correct=False, progress=False).fit(
        store, "train.tokens")
    with pytest.raises(StoreError, match="Use split 'test.tokens'"):
        baseline_scores(tok, store, "test", which=("knn",))
    assert baseline_scores(tok, store, "test.tokens", which=("knn",))["knn"].shape == (
        store.n_samples("test.tokens"),)
    with pytest.warns(NnsigWarning, match="in-sample"):
        baseline_scores(tok, store, "train.tokens", which=("knn",))
    tok.save(store, name="tok")
    out = tmp_path / "proto"
    assert main(["export", str(path), "--analysis", "tok", "--prototype", "--out", str(out)]) == 0
    rows = (out / "clusterized_values.csv").read_text().strip().splitlines()
    assert len(rows) == store.n_samples("test.tokens") + 1  # its default: the token rows
    assert main(["export", str(path), "--analysis", "tok", "--prototype", "--split", "test",
                 "--out", str(tmp_path / "p2")]) == 1
    assert not (tmp_path / "p2" / "clusters_info.json").exists()  # nothing half-written
    with pytest.raises(SystemExit) as exc:  # --format was ignored with --prototype
        main(["export", str(path), "--analysis", "tok", "--prototype", "--format", "parquet",
              "--out", str(tmp_path / "p3")])
    assert exc.value.code == 2
    # another pooling: refused at capture, and at transform in a store that has it already
    last = TorchAdapter(model, layers="block", pool="last")
    with pytest.raises(StoreError, match=r"layer 'block' is pooled 'last' here but 'mean' in "
                                         r"'(train|test)'"):
        capture(last, DictLoader(ids, mask, labels, 20), path, split="other", progress=False)
    capture(last, DictLoader(ids, mask, labels, 20), tmp_path / "l.zarr", split="other",
            progress=False)
    mean = SignatureAnalysis(n_clusters=3, only_correct=False, progress=False).fit(store)
    import shutil

    shutil.copytree(tmp_path / "l.zarr" / "other", path / "other")
    with pytest.raises(StoreError, match="does not hold the rows the analysis was fitted on"):
        mean.transform(open_store(path), "other")
    # a layer without positions: every mode gives the same row, so any pool is accepted
    mlp = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x5 = torch.randn(30, 5)
    capture(TorchAdapter(mlp, pool="mean"), (x5, labels[:30]), tmp_path / "m.zarr",
            progress=False)
    capture(TorchAdapter(mlp), (x5, labels[:30]), tmp_path / "m.zarr", split="test",
            progress=False)
    # token rows only: the sample split holds no layer
    capture(TorchAdapter(model, layers="block", pool="tokens"), DictLoader(ids, mask, labels, 20),
            tmp_path / "o.zarr", progress=False)
    with pytest.raises(StoreError, match="holds no layer.*Fit on 'train.tokens'"):
        SignatureAnalysis(progress=False).fit(tmp_path / "o.zarr", "train")
