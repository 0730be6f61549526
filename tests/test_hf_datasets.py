"""Hugging Face datasets: capture from a Dataset or IterableDataset (numpy, torch, no format),
streamed batch by batch; errors naming the columns; exports as datasets (API and CLI)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from nnsig_core import SignatureAnalysis, capture, open_store  # noqa: E402
from nnsig_core.capture import CaptureError  # noqa: E402
from nnsig_core.cli import main  # noqa: E402

N = 48


class TinyNet:
    """A numpy model with the adapter protocol: one ReLU layer, three outputs."""

    framework = "numpy-test"

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.w1 = rng.normal(size=(4, 5)).astype(np.float32)
        self.w2 = rng.normal(size=(5, 3)).astype(np.float32)

    def hidden(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(np.asarray(x, dtype=np.float32) @ self.w1, 0)

    def run(self, inputs):
        h = self.hidden(inputs)
        return h @ self.w2, {"hidden": h}

    def model_summary(self):
        return {"model_class": "TinyNet", "parameters": 35,
                "layers": [{"name": "hidden", "type": "ReLU", "parameters": 20}]}

    def to_numpy(self, x):
        return np.asarray(x)


def _rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, 4)).astype(np.float32), np.arange(N) % 3


def _dataset():
    X, y = _rows()
    features = datasets.Features({
        "x": datasets.Sequence(datasets.Value("float32"), length=4),
        "label": datasets.ClassLabel(names=["cat", "dog", "fox"]),
        "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"x": X.tolist(), "label": y.tolist(), "text": [f"s{i}" for i in range(N)]},
        features=features), X, y


@pytest.mark.parametrize("fmt", ["numpy", None])
def test_capture_from_a_dataset(tmp_path: Path, fmt) -> None:
    ds, X, y = _dataset()
    model = TinyNet()
    store = capture(model, ds.with_format(fmt), tmp_path / "s.zarr", batch_size=10,
                    chunk_bytes=64, progress=False)
    np.testing.assert_allclose(store.activations("train", "hidden")[:], model.hidden(X),
                               rtol=1e-6)
    np.testing.assert_array_equal(store.labels("train"), y)
    assert store.class_names() == ["cat", "dog", "fox"]  # from the ClassLabel column
    assert store.split_attrs("train")["n_expected"] == N


def test_an_iterable_dataset_is_streamed(tmp_path: Path) -> None:
    X, y = _rows()
    read = []

    def rows():
        for i in range(N):
            read.append(i)
            yield {"x": X[i].tolist(), "label": int(y[i])}

    stream = datasets.IterableDataset.from_generator(rows).with_format("numpy")
    model = TinyNet()
    store = capture(model, stream, tmp_path / "s.zarr", batch_size=8, max_samples=16,
                    progress=False)
    assert store.n_samples("train") == 16
    assert len(read) < N  # stopped after the batches it needed, not read whole
    np.testing.assert_allclose(store.activations("train", "hidden")[:], model.hidden(X[:16]),
                               rtol=1e-6)
    np.testing.assert_array_equal(store.labels("train"), y[:16])


def test_errors_name_the_columns(tmp_path: Path) -> None:
    ds, _, _ = _dataset()
    model = TinyNet()
    with pytest.raises(CaptureError, match=r"no label column 'target'.*\['x', 'label', 'text'\]"):
        capture(model, ds, tmp_path / "a.zarr", label_key="target", progress=False)
    with pytest.raises(CaptureError, match=r"no column 'pixels'.*\['x', 'label', 'text'\]"):
        capture(model, ds, tmp_path / "b.zarr", input_columns="pixels", progress=False)
    with pytest.raises(CaptureError, match=r"No input column.*\['label', 'text'\].*tokenizer"):
        capture(model, ds.select_columns(["label", "text"]), tmp_path / "c.zarr",
                progress=False)
    ragged = datasets.Dataset.from_dict({"x": [[1.0, 2.0], [1.0]], "label": [0, 1]})
    with pytest.raises(CaptureError, match="'x' holds values of different lengths.*padding"):
        capture(model, ragged.with_format("numpy"), tmp_path / "d.zarr", progress=False)
    with pytest.raises(CaptureError, match="input_columns names the columns"):
        capture(model, _rows(), tmp_path / "e.zarr", input_columns="x", progress=False)


def test_an_input_column_that_is_also_the_label(tmp_path: Path) -> None:
    """input_columns naming the label column too (a model that computes its own loss): the
    column was selected twice (pyarrow's "Field 'label' exists 2 times")."""

    class TwoInputs(TinyNet):
        def run(self, inputs):
            assert set(inputs) == {"x", "label"}
            return super().run(inputs["x"])

    ds, X, y = _dataset()
    store = capture(TwoInputs(), ds.with_format("numpy"), tmp_path / "l.zarr",
                    input_columns=["x", "label"], progress=False)
    np.testing.assert_array_equal(store.labels("train"), y)


def test_labels_outside_the_format_s_columns_or_under_another_name(tmp_path: Path) -> None:
    """``set_format(columns=[inputs])`` still stores the label column (it was a KeyError); a
    label column under another name is named in a warning with the label_key that works."""
    from nnsig_core import NnsigWarning

    ds, _, y = _dataset()
    model = TinyNet()
    inputs_only = ds.with_format("numpy", columns=["x"])
    store = capture(model, inputs_only, tmp_path / "a.zarr", batch_size=10, progress=False)
    np.testing.assert_array_equal(store.labels("train"), y)
    renamed = ds.rename_column("label", "target").with_format("numpy")

    class KeywordNet(TinyNet):  # takes a dict of inputs, ignoring the ones it does not know
        def run(self, inputs):
            return super().run(inputs["x"])

    with pytest.warns(NnsigWarning, match=r"no 'label' or 'labels' column.*'target' \(one "
                      r"integer per example\) goes to the model.*label_key='target'"):
        store = capture(KeywordNet(), renamed, tmp_path / "b.zarr", progress=False)
    assert (store.labels("train") == -1).all()
    store = capture(model, renamed, tmp_path / "c.zarr", label_key="target", progress=False)
    np.testing.assert_array_equal(store.labels("train"), y)


def test_a_torch_probe_reads_a_dataset_as_capture_does(tmp_path: Path) -> None:
    """A tokenised dataset keeping its text column: the probe cuts it (n=) and captures it
    as capture() does (it collated the text into the batch and failed)."""
    torch = pytest.importorskip("torch")
    from nnsig_torch import TorchProbe

    ds, X, y = _dataset()
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    probe = TorchProbe(ds.with_format("torch"), tmp_path / "p.zarr", n=20, layers=["1"])
    split = probe.capture(model, step=0, epoch=0)
    store = open_store(tmp_path / "p.zarr")
    np.testing.assert_array_equal(store.labels(split), y[:20])
    with torch.no_grad():
        np.testing.assert_allclose(store.activations(split, "1")[:],
                                   model[:2](torch.from_numpy(X[:20])).numpy(), atol=1e-6)


def test_torch_model_from_a_tokenised_dataset(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from nnsig_torch import TorchAdapter

    class TextNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(20, 6)
            self.body = torch.nn.Linear(6, 6)
            self.head = torch.nn.Linear(6, 2)

        def forward(self, input_ids, attention_mask):
            w = attention_mask.unsqueeze(-1).float()
            h = torch.relu(self.body((self.embed(input_ids) * w).sum(1) / w.sum(1)))
            return self.head(h)

    torch.manual_seed(0)
    model = TextNet().eval()
    ids = torch.randint(1, 20, (12, 5))
    mask = torch.ones(12, 5, dtype=torch.long)
    mask[::2, 3:] = 0
    labels = torch.arange(12) % 2
    ds = datasets.Dataset.from_dict({"text": ["t"] * 12, "input_ids": ids.tolist(),
                                     "attention_mask": mask.tolist(), "labels": labels.tolist()})
    ds.set_format("torch")
    store = capture(TorchAdapter(model, layers=["body"]), ds, tmp_path / "t.zarr",
                    batch_size=5, progress=False)
    with torch.no_grad():
        logits = model(ids, mask)
    np.testing.assert_allclose(store.outputs("train")[:], logits.numpy(), atol=1e-5)
    np.testing.assert_array_equal(store.labels("train"), labels.numpy())
    # token rows from the same dataset, read back with xarray with their own coordinates
    tokens = capture(TorchAdapter(model, layers=["embed"], pool=("mean", "tokens")), ds,
                     tmp_path / "tok.zarr", batch_size=5, progress=False)
    xr = pytest.importorskip("xarray")
    rows = xr.open_zarr(tmp_path / "tok.zarr", group="train.tokens")
    assert {"sample_row", "position", "token", "labels"} <= set(rows.coords)
    keep = mask.bool().numpy()
    np.testing.assert_array_equal(rows["token"].values, ids.numpy()[keep])
    np.testing.assert_array_equal(rows["labels"].values,
                                  tokens.labels("train")[np.nonzero(keep)[0]])


def test_a_mask_column_left_out_of_input_columns_is_named(tmp_path: Path) -> None:
    """input_columns without the dataset's attention_mask (a model taking the ids only): the
    token means included the padding without a word. The warning's fix (the adapter's mask
    from the ids) gives the mean over the real tokens, and silences it."""
    torch = pytest.importorskip("torch")
    from nnsig_torch import TorchAdapter

    from nnsig_core import NnsigWarning

    class Ids(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(20, 4, padding_idx=0)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, input_ids):
            return self.head(self.embed(input_ids).sum(1))

    torch.manual_seed(0)
    model = Ids().eval()
    mask = (torch.arange(6)[None] < torch.tensor([6, 2, 4, 3])[:, None]).long()
    ids = torch.randint(1, 20, (4, 6)) * mask
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                                     "label": [0, 1, 0, 1]}).with_format("torch")
    with pytest.warns(NnsigWarning, match=r"'attention_mask' is not in input_columns.*"
                                          r"mask=lambda input_ids: input_ids != PAD_ID"):
        capture(TorchAdapter(model, layers=["embed"]), ds, tmp_path / "a.zarr",
                input_columns="input_ids", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        store = capture(TorchAdapter(model, layers=["embed"], mask=lambda input_ids: input_ids != 0),
                        ds, tmp_path / "b.zarr", input_columns="input_ids", progress=False)
    with torch.no_grad():
        e = model.embed(ids)
    want = (e * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    np.testing.assert_allclose(store.activations("train", "embed")[:], want.numpy(), atol=1e-6)
    # A list of columns: the batch is a dict, and so is what the advised callable takes.
    with pytest.warns(NnsigWarning, match=r"mask=lambda x: x\['input_ids'\] != PAD_ID"):
        capture(TorchAdapter(model, layers=["embed"]), ds, tmp_path / "c.zarr",
                input_columns=["input_ids"], progress=False)
    store = capture(TorchAdapter(model, layers=["embed"], mask=lambda x: x["input_ids"] != 0),
                    ds, tmp_path / "d.zarr", input_columns=["input_ids"], progress=False)
    np.testing.assert_allclose(store.activations("train", "embed")[:], want.numpy(), atol=1e-6)


def test_exports_as_hf_datasets(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ds, X, y = _dataset()
    store = capture(TinyNet(), ds, tmp_path / "s.zarr", batch_size=16, progress=False)
    store = open_store(tmp_path / "s.zarr", mode="r+")
    analysis = SignatureAnalysis(n_clusters=2, only_correct=False, random_state=0,
                                 progress=False).fit(store, "train")
    sigs = analysis.transform(store, "train")
    score = np.linspace(0, 1, N)
    table = sigs.to_hf_dataset(scores={"mine": score})
    assert table.num_rows == N
    np.testing.assert_array_equal(table["label"], y)
    np.testing.assert_array_equal(table["cluster:hidden"], sigs.cluster_ids[:, 0])
    np.testing.assert_allclose(table["score:mine"], score)
    capfd.readouterr()
    names = sigs.export(tmp_path / "out", format="datasets")
    assert "signatures_train" in names and "table_train" in names
    assert capfd.readouterr().err == ""  # no progress bars off a terminal
    assert datasets.is_progress_bar_enabled()  # and the user's setting is back
    again = datasets.load_from_disk(str(tmp_path / "out" / "signatures_train"))
    assert again.column_names == table.column_names[:-1]  # no scores given to export
    analysis.save(store, name="default")
    assert main(["export", str(tmp_path / "s.zarr"), "--format", "datasets",
                 "--out", str(tmp_path / "cli")]) == 0
    by_sig = datasets.load_from_disk(str(tmp_path / "cli" / "by_signature_train"))
    assert by_sig.num_rows >= 1


def test_torch_model_from_an_image_dataset(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from nnsig_torch import TorchAdapter

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 6 * 6, 2)).eval()
    images = torch.rand(10, 1, 8, 8)
    features = datasets.Features({"pixel_values": datasets.Array3D((1, 8, 8), "float32"),
                                  "label": datasets.ClassLabel(names=["no", "yes"])})
    ds = datasets.Dataset.from_dict({"pixel_values": images.numpy(), "label": [0, 1] * 5},
                                    features=features).with_format("torch")
    store = capture(TorchAdapter(model), ds, tmp_path / "img.zarr", batch_size=4,
                    keep_inputs=True, progress=False)
    with torch.no_grad():
        logits = model(images)
    np.testing.assert_allclose(store.outputs("train")[:], logits.numpy(), atol=1e-5)
    assert store.class_names() == ["no", "yes"]
    assert store.split_attrs("train")["n_samples"] == 10
    assert store.root["train/inputs"].shape[0] == 10  # thumbnails of the image tensors
