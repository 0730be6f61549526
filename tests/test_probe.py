"""The probe: a fixed probe set captured at checkpoints of a training run (PyTorch loop,
Lightning, Hugging Face Trainer callback, Keras callback)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from nnsig_torch import TorchProbe, hf_callback, lightning_callback  # noqa: E402
from nnsig_torch.callbacks import Schedule  # noqa: E402
from nnsig_torch.probe import probe_arrays  # noqa: E402
from torch import nn  # noqa: E402

from nnsig_core import NnsigWarning, open_store  # noqa: E402
from nnsig_core.capture import CaptureError, Probe, checkpoint_split, list_checkpoints  # noqa: E402
from nnsig_core.capture.probe import CHECKPOINT_KEY  # noqa: E402


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 6, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    return X, y


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def _step(model, X, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = nn.functional.cross_entropy(model(X), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_checkpoint_split_names_sort_by_step():
    names = [checkpoint_split(s) for s in (0, 9, 10, 12345)]
    assert names == sorted(names) == ["step_00000000", "step_00000009", "step_00000010",
                                      "step_00012345"]
    with pytest.raises(CaptureError):
        checkpoint_split(-1)
    with pytest.raises(TypeError, match="split"):
        Probe(_data(), "x.zarr", make_adapter=lambda m: m, split="train")


@pytest.mark.slow  # the first capture through torch: a few seconds on a busy machine
def test_probe_captures_one_split_per_checkpoint(tmp_path):
    X, y = _data()
    model = _mlp()
    probe = TorchProbe((X, y), tmp_path / "t.zarr", n=100, class_names=["a", "b", "c"])
    model.train()
    assert probe.capture(model, step=0, epoch=0) == "step_00000000"
    for step in (5, 10):
        _step(model, X, y)
        assert probe.capture(model, step=step, epoch=step // 5, loss=0.5) == checkpoint_split(step)
        assert model.training  # the adapter restored the training mode
    cps = list_checkpoints(tmp_path / "t.zarr")
    assert [c["step"] for c in cps] == [0, 5, 10] and [c["epoch"] for c in cps] == [0, 1, 2]
    assert len({c["fingerprint"] for c in cps}) == 3 and cps[1]["loss"] == 0.5
    assert len(probe.timings) == 3 and all(t > 0 for t in probe.timings)
    store = open_store(tmp_path / "t.zarr")
    for c in cps:
        assert store.n_samples(c["split"]) == 100
        np.testing.assert_array_equal(store.labels(c["split"]), y[:100].numpy())
        assert store.split_attrs(c["split"])["model_fingerprint"] == c["fingerprint"]
    assert probe.checkpoints() == cps


@pytest.mark.slow  # a few captures through torch
def test_a_resumed_run_skips_what_it_has_and_replaces_what_differs(tmp_path, caplog):
    X, y = _data()
    model = _mlp()
    path = tmp_path / "t.zarr"
    probe = TorchProbe((X, y), path)
    probe.capture(model, step=0)
    first = list_checkpoints(path)[0]
    # a restarted run (a new probe object, the same weights): skipped
    again = TorchProbe((X, y), path)
    assert again.capture(model, step=0) is None and again.timings == []
    # the record was lost (killed between the capture and its record): only the record is written
    store = open_store(path, mode="r+")
    info = store.split_attrs("step_00000000")
    store.write_split_attrs("step_00000000", {k: v for k, v in info.items() if k != CHECKPOINT_KEY})
    assert list_checkpoints(path) == []
    assert again.capture(model, step=0) == "step_00000000"
    assert open_store(path).split_attrs("step_00000000")["capture"]["capture_id"] == \
        info["capture"]["capture_id"]
    assert again.timings == []  # nothing was captured
    # other weights at a step already captured: replaced, with a warning that names the
    # later checkpoints of the earlier run left in the store
    assert again.capture(model, step=5) == "step_00000005"
    _step(model, X, y)
    with pytest.warns(NnsigWarning, match=r"step_00000000 was captured with other weights.*"
                      r"the later checkpoints \['step_00000005'\] stay"):
        assert again.capture(model, step=0) == "step_00000000"
    now = list_checkpoints(path)[0]
    assert now["fingerprint"] != first["fingerprint"]
    # an interrupted capture (incomplete split) is captured again
    store = open_store(path, mode="r+")
    info = store.split_attrs("step_00000000")
    store.write_split_attrs("step_00000000", {**info, "complete": False})
    assert again.capture(model, step=0) == "step_00000000"
    assert open_store(path).is_complete("step_00000000")


def test_probe_data_in_another_order_is_refused_at_the_second_checkpoint(tmp_path):
    """A shuffling DataLoader gives each checkpoint its samples in another order: refused when
    the second checkpoint is captured (not when the timeline is fitted after training), that
    checkpoint removed; a 0-d tensor recorded with a checkpoint is its number."""
    X, y = _data()
    model = _mlp()
    path = tmp_path / "s.zarr"
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X[:64], y[:64]),
                                         batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    probe = TorchProbe(loader, path)
    probe.capture(model, step=0, loss=torch.tensor(0.25))
    assert list_checkpoints(path)[0]["loss"] == 0.25
    _step(model, X, y)
    with pytest.raises(CaptureError, match="another order, than at checkpoint step_00000000 "
                                           r"\(a DataLoader with shuffle=True"):
        probe.capture(model, step=1)
    assert [c["split"] for c in list_checkpoints(path)] == ["step_00000000"]
    assert open_store(path).splits == ["step_00000000"]


def test_the_core_probe_with_any_adapter(tmp_path):
    """Probe is framework-neutral: here the "model" is a dict of arrays and its adapter an
    ArrayAdapter (no weights fingerprint: a recorded step is skipped)."""
    from nnsig_core import ArrayAdapter

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)

    def model(t):
        return {"h": rng.normal(size=(50, 4)) + t, "out": np.eye(3)[labels] * (t + 1)}

    probe = Probe((np.arange(50), labels), tmp_path / "a.zarr", batch_size=20,
                  make_adapter=lambda m: ArrayAdapter({"h": m["h"]}, m["out"]))
    for t in range(3):
        assert probe.capture(model(t), step=10 * t, epoch=t) == checkpoint_split(10 * t)
    assert probe.capture(model(9), step=0) is None  # recorded, no fingerprint to compare
    cps = probe.checkpoints()
    assert [(c["step"], c["epoch"], c["fingerprint"]) for c in cps] == [
        (0, 0, None), (10, 1, None), (20, 2, None)]
    assert len(probe.timings) == 3
    other = Probe((np.arange(50), labels), tmp_path / "a.zarr", prefix="val",
                  make_adapter=lambda m: ArrayAdapter({"h": m["h"]}, m["out"]))
    other.capture(model(0), step=5)
    assert [c["split"] for c in list_checkpoints(tmp_path / "a.zarr")] == [
        "step_00000000", "val_00000005", "step_00000010", "step_00000020"]
    assert [c["split"] for c in other.checkpoints()] == ["val_00000005"]


def test_a_probe_gives_adapter_options_to_its_adapter(tmp_path):
    """mask=, token_key=... go to the probe's adapter (they reached capture(), which refused
    them once training had started); the others still go to capture."""

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, ids, pad):
            return self.head(self.emb(ids).mean(1))

    torch.manual_seed(0)
    model = Masked()
    ids = torch.randint(1, 20, (6, 5))
    pad = torch.ones(6, 5, dtype=torch.long)
    pad[:, 3:] = 0
    data = [({"ids": ids, "pad": pad}, torch.arange(6) % 2)]
    probe = TorchProbe(data, tmp_path / "p.zarr", layers=["emb"], pool="mean", mask="pad",
                       token_key="ids", keep_inputs=False)
    split = probe.capture(model, step=0, epoch=0)
    with torch.no_grad():
        want = model.emb(ids)[:, :3].mean(1).numpy()  # the padding left out
    np.testing.assert_allclose(open_store(tmp_path / "p.zarr").activations(split, "emb")[:],
                               want, atol=1e-6)


def test_a_dataset_is_read_once_into_tensors():
    X, y = _data(50)
    ds = torch.utils.data.TensorDataset(X, y)
    px, py = probe_arrays(ds, n=20)
    assert torch.equal(px, X[:20]) and torch.equal(py, y[:20])
    px, py = probe_arrays(ds, indices=[3, 1])
    assert torch.equal(px, X[[3, 1]])
    px, py = probe_arrays((X.numpy(), y.numpy()), indices=[4])
    assert px.shape == (1, 6)
    px, py = probe_arrays((list(X), y.tolist()), n=3)  # lists stay lists
    assert len(px) == 3 and torch.equal(px[2], X[2]) and py == y[:3].tolist()
    loader = torch.utils.data.DataLoader(ds, batch_size=10)
    assert probe_arrays(loader) is loader


def test_a_sequence_first_probe_cuts_along_its_batch_axis(tmp_path):
    """With batch_axis=1, n= and indices= take samples along axis 1 of X (they cut the
    sequence axis), and a data set's collated inputs are given sequence-first."""
    ids, y = torch.randint(0, 20, (5, 30)), torch.arange(30) % 3  # (seq, batch)
    px, py = probe_arrays((ids, y), n=8, batch_axis=1)
    assert torch.equal(px, ids[:, :8]) and torch.equal(py, y[:8])
    px, py = probe_arrays((ids.numpy(), y.numpy()), indices=[4, 2], batch_axis=1)
    np.testing.assert_array_equal(px, ids.numpy()[:, [4, 2]])
    px, _ = probe_arrays(torch.utils.data.TensorDataset(ids.T, y), n=6, batch_axis=1)
    assert torch.equal(px, ids[:, :6])

    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(20, 4), nn.Linear(4, 3)

        def forward(self, x):  # (seq, batch)
            return self.head(self.emb(x).mean(0))

    model = SeqFirst()
    probe = TorchProbe((ids, y), tmp_path / "s.zarr", n=8, batch_axis=1, layers=["emb"])
    split = probe.capture(model, step=0)
    with torch.no_grad():
        want = model.emb(ids[:, :8]).mean(0).numpy()
    np.testing.assert_allclose(open_store(tmp_path / "s.zarr").activations(split, "emb")[:],
                               want, atol=1e-6)


def test_a_probe_of_other_settings_is_refused_not_skipped(tmp_path):
    """A checkpoint recorded by a probe of other settings (sample count, layers) is refused
    before anything is written, naming the fix; a re-run with the same settings skips it; a
    changed count at a new step is named as such, not blamed on shuffling."""
    X, y = _data()
    model = _mlp()
    path = tmp_path / "t.zarr"
    TorchProbe((X, y), path, n=50, layers=["1"]).capture(model, step=0)
    assert TorchProbe((X, y), path, n=50, layers=["1"]).capture(model, step=0) is None
    for other in (dict(n=80, layers=["1"]), dict(n=50, layers=["1", "3"])):
        with pytest.raises(CaptureError, match="captured by a probe with other settings") as e:
            TorchProbe((X, y), path, **other).capture(model, step=0)
        assert "remove_split('step_00000000')" in str(e.value) and "new store" in str(e.value)
        # another prefix only where the layers are the same (a store's splits share them)
        assert ("prefix=" in str(e.value)) == (other["layers"] == ["1"])
    # the fix it names works: another prefix
    assert TorchProbe((X, y), path, n=80, layers=["1"], prefix="big").capture(
        model, step=0) == "big_00000000"
    # the named removal works too
    open_store(path, mode="r+").remove_split("step_00000000")
    assert TorchProbe((X, y), path, n=80, layers=["1"]).capture(model, step=0) == "step_00000000"
    # a probe that cannot tell its size beforehand (a generator): the count is checked after
    gen = TorchProbe(((X[i:i + 10], y[i:i + 10]) for i in range(0, 60, 10)), path,
                     layers=["1"])
    with pytest.raises(CaptureError, match="gave 60 samples, where checkpoint step_00000000 "
                                           "holds 80"):
        gen.capture(model, step=5)
    assert [c["split"] for c in list_checkpoints(path, prefix="step")] == ["step_00000000"]


def test_a_loader_probe_takes_n_and_keeps_the_random_state(tmp_path):
    """n= cuts a DataLoader (it was ignored), indices= with one is a TypeError naming what
    works, and a capture leaves torch's global random state as it was (iterating a loader
    draws from it: a probe changed the training run); nested tensors in the record become
    numbers."""
    X, y = _data()
    ds = torch.utils.data.TensorDataset(X, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    probe = TorchProbe(loader, tmp_path / "l.zarr", n=40)
    model = _mlp()
    torch.manual_seed(3)
    before = torch.get_rng_state()
    probe.capture(model, step=0, metrics={"acc": torch.tensor(0.5), "k": [np.float32(2)]})
    assert torch.equal(torch.get_rng_state(), before)
    assert open_store(tmp_path / "l.zarr").n_samples("step_00000000") == 40
    assert list_checkpoints(tmp_path / "l.zarr")[0]["metrics"] == {"acc": 0.5, "k": [2.0]}
    with pytest.raises(TypeError, match=r"TorchProbe\(loader.dataset, indices=\.\.\.\)"):
        TorchProbe(loader, tmp_path / "m.zarr", indices=[1, 2])
    px, _ = probe_arrays(loader.dataset, indices=[1, 2])  # the fix it names
    assert torch.equal(px, X[[1, 2]])


def test_schedule():
    s = Schedule(every_n_epochs=2, every_n_steps=5)
    assert [s.epoch_due(e) for e in (1, 2, 3, 4)] == [False, True, False, True]
    assert [s.step_due(k) for k in (0, 5, 6, 10)] == [False, True, False, True]
    assert not Schedule(None).epoch_due(1)
    with pytest.raises(ValueError):
        Schedule(0)


@pytest.mark.slow
def test_lightning_callback(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    X, y = _data(96)

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, t = batch
            return nn.functional.cross_entropy(self.net(x), t)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.3)

    module = Module()
    probe = TorchProbe((X, y), tmp_path / "pl.zarr", layers=["net.1", "net.3"])
    cb = lightning_callback(probe, every_n_epochs=1, every_n_steps=4)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32)
    trainer.fit(module, loader)
    cps = list_checkpoints(tmp_path / "pl.zarr")
    # step 0, every 4 steps, and each epoch end (3 and 6 steps)
    assert [c["step"] for c in cps] == [0, 3, 4, 6]
    # epochs done, as at an epoch's end: step 4 is the first of the second epoch's 3 steps
    assert [c["epoch"] for c in cps] == [0, 1, 1.333, 2]
    assert open_store(tmp_path / "pl.zarr").layers("step_00000006") == ["net.1", "net.3"]


@pytest.mark.slow
def test_hugging_face_trainer_records_its_checkpoints(tmp_path):
    """A real ``Trainer`` (CPU, 3 steps per epoch, max_steps stops it in its third epoch):
    the callback records the start, every 5th step, every epoch's end and the stop, with the
    Trainer's own epoch count (the stop was recorded as epoch 2, rounded); the last
    checkpoint is the trained model's."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    X, y = _data(48)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()

        def forward(self, x, labels=None):
            logits = self.net(x)
            loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    train = [{"x": X[i], "labels": y[i]} for i in range(len(y))]
    model = Classifier()
    probe = TorchProbe((X, y), tmp_path / "hf.zarr", layers=["net.1"])
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, max_steps=7,
        learning_rate=0.1, save_strategy="no", report_to=[], use_cpu=True, logging_steps=100,
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train,
                                   callbacks=[hf_callback(probe, every_n_epochs=1,
                                                          every_n_steps=5)])
    trainer.train()
    cps = list_checkpoints(tmp_path / "hf.zarr")
    assert isinstance(trainer.callback_handler.callbacks[-1], transformers.TrainerCallback)
    assert [(c["step"], c["epoch"]) for c in cps] == [(0, 0), (3, 1), (5, 1.667), (6, 2),
                                                      (7, 2.333)]
    store = open_store(tmp_path / "hf.zarr")
    with torch.no_grad():
        np.testing.assert_allclose(store.activations(cps[-1]["split"], "net.1")[:],
                                   model.net[:2](X).numpy(), atol=1e-6)


@pytest.mark.slow
def test_keras_callback(tmp_path):
    keras = pytest.importorskip("keras")
    from nnsig_keras import KerasProbe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="h1"),
                              keras.layers.Dense(6, activation="relu", name="h2"),
                              keras.layers.Dense(2, name="out")])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe = KerasProbe((x[:40], y[:40]), tmp_path / "k.zarr", every_n_epochs=1)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[probe])
    cps = probe.checkpoints()
    assert [(c["step"], c["epoch"]) for c in cps] == [(0, 0), (2, 1), (4, 2)]
    assert "loss" in cps[1]["logs"] and len(probe.timings) == 3
    assert open_store(tmp_path / "k.zarr").layers("step_00000002") == ["h1", "h2"]
    # fit() again: its epochs, numbered from 0 by Keras, continue the count; mid-epoch
    # checkpoints are fractions of the epoch done
    probe.schedule.every_n_steps = 1
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[probe])
    cps = probe.checkpoints()
    assert [(c["step"], c["epoch"]) for c in cps][3:] == [(5, 2.5), (6, 3)]
    # by hand, in any loop
    assert probe.capture(model, step=100, epoch=3) == "step_00000100"
