"""End to end: nnsig_core.capture with a TorchAdapter and a DataLoader."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
core = pytest.importorskip("nnsig_core")
nn = torch.nn

from nnsig_torch import TorchAdapter  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = self.act(self.conv(x))
        return self.fc(self.act(h).flatten(1))  # the ReLU runs twice


def test_capture_dataloader_into_store(tmp_path):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(10, 1, 8, 8)
    y = torch.arange(10) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    adapter = TorchAdapter(model, layers=["conv", "act"], pool={"act:1": "mean", "conv": None})
    store = core.capture(
        adapter, loader, tmp_path / "run.zarr", batch_size=4, keep_inputs=True, progress=False
    )
    assert store.layers("train") == ["conv", "act", "act:1"]
    with torch.no_grad():
        conv = model.conv(x)
    np.testing.assert_allclose(np.asarray(store.activations("train", "conv")[:]), conv, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(store.activations("train", "act:1")[:]),
        conv.relu().mean((2, 3)),
        atol=1e-5,
    )
    np.testing.assert_array_equal(store.labels("train"), y.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(store.outputs("train")[:]), model(x), atol=1e-5)
    info = {d["name"]: d for d in store.layer_info("train")}
    assert info["conv"]["type"] == "Conv2d" and info["act:1"]["shape"] == [4]
    # the loader's own batch size is recorded (it was None; capture_distributed records it)
    assert store.split_attrs("train")["capture"]["batch_size"] == 4
    assert info["conv"]["config"]["out_channels"] == 4


def test_capture_tensor_pair(tmp_path):
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2)).eval()
    x, y = torch.randn(7, 5), torch.tensor([0, 1, 0, 1, 1, 0, 1])
    store = core.capture(
        TorchAdapter(model), (x, y), tmp_path / "pair.zarr", batch_size=3, progress=False
    )
    with torch.no_grad():
        h = model[1](model[0](x))
    np.testing.assert_allclose(np.asarray(store.activations("train", "1")[:]), h, atol=1e-6)


def test_an_analysis_on_a_split_of_other_weights_warns(tmp_path):
    """The fit split captured again with a retrained model: the saved analysis (the old
    model's clusters) gave the report's signatures without a word. Now every split of other
    weights than the fit split had is transformed with a warning naming the refit, whose
    command works; splits of the same weights give none."""
    import warnings

    from nnsig_core import NnsigWarning, SignatureAnalysis, open_store
    from nnsig_core.cli.main import main

    torch.manual_seed(0)
    x, y = torch.randn(90, 5), torch.arange(90) % 3
    path = tmp_path / "w.zarr"

    def model(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()

    a, b = model(0), model(1)
    for split in ("train", "test"):
        core.capture(TorchAdapter(a), (x, y), path, split=split, progress=False)
    store = open_store(path, mode="r+")
    analysis = SignatureAnalysis(n_clusters=3, only_correct=False, progress=False).fit(store)
    analysis.save(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        analysis.transform(store, "test")  # the same weights: nothing to say
    for split in ("train", "test"):
        core.capture(TorchAdapter(b), (x, y), path, split=split, progress=False, overwrite=True,
                     allow_other_weights="retrained")
    saved = SignatureAnalysis.load(path)
    assert saved.fit_weights_ == analysis.fit_weights_ is not None
    with pytest.warns(NnsigWarning, match=r"Split 'test' was captured with other model weights"
                      r".*analysis 'default'.*sklearn.base.clone\(analysis\).fit\(store, 'train'\)"
                      r".save\(store, 'default', overwrite=True\)"):
        saved.transform(path, "test")
    from sklearn.base import clone

    store = open_store(path, mode="r+")
    refit = clone(saved).fit(store, "train").save(store, "default", overwrite=True)  # as named
    assert refit.n_clusters_ == saved.n_clusters_ and refit.only_correct is False
    assert main(["analyze", str(path), "--fit-split", "train", "--all-samples", "--clusters", "3",
                 "--overwrite"]) == 0  # or the command, with its settings
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        SignatureAnalysis.load(path).transform(path, "test")


def test_an_interrupted_capture_with_token_rows_names_the_fix_that_works(tmp_path):
    """A capture with token rows is not resumed: the incomplete split's errors (both row
    spaces), `nnsig info` and `verify` say to capture the sample split again, which works."""
    from nnsig_core import SignatureAnalysis, capture, open_store
    from nnsig_core.cli.format import format_info
    from nnsig_core.store import IncompleteStoreError

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.head = nn.Linear(3, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.head(torch.relu(self.block(x))[:, 0])

    x, y = torch.randn(90, 5, 3), torch.randint(0, 3, (90,))
    adapter = TorchAdapter(Tokens(), layers=["block"], pool=("cls", "tokens"))
    path = tmp_path / "t.zarr"

    def interrupted():
        yield x[:30], y[:30]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        capture(adapter, interrupted(), path, progress=False)
    fix = "capture(..., split='train', overwrite=True)"
    for split in ("train", "train.tokens"):
        with pytest.raises(IncompleteStoreError) as err:
            SignatureAnalysis(n_clusters=2).fit(path, split)
        assert fix in str(err.value) and "resume=True" not in str(err.value)
    store = open_store(path)
    assert fix in format_info(store.summary()) and fix in str(store.verify().incomplete)
    capture(adapter, (x, y), path, overwrite=True, batch_size=30, progress=False)
    assert open_store(path).is_complete("train") and open_store(path).is_complete("train.tokens")
    # The split's own token rows, replaced with it, are not another split to agree with.
    for names in (["a", "b", "c"], ["x", "y", "z"]):
        capture(adapter, (x, y), path, overwrite=True, class_names=names, progress=False)
    assert open_store(path).split_attrs("train.tokens")["class_names"] == ["x", "y", "z"]
