"""Tests of nnsig_torch.TorchAdapter on real models.

Captured values are checked against computations that do not go through the
adapter (functional re-implementations, or the modules called by hand).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from nnsig_torch import (  # noqa: E402
    LayerList,
    LayerSelectionError,
    TorchAdapter,
    UnknownLayerError,
    available_layers,
)

from nnsig_core import NnsigWarning  # noqa: E402

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def close(a, b, atol=ATOL):
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)


def hooks_snapshot(model):
    return {
        name: (list(m._forward_hooks.items()), list(m._forward_pre_hooks.items()))
        for name, m in model.named_modules()
    }


# -- models -------------------------------------------------------------------


def mlp():
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)
    ).eval()


def randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model


class Block(nn.Module):
    """A ResNet basic block: in-place ReLU and an in-place residual add."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.block1 = Block(8)
        self.block2 = Block(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu(self.conv(x))
        x = self.block2(self.block1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def bn(m, x):
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def conv(m, x):
    return F.conv2d(x, m.weight, m.bias, padding=1)


def cnn_reference(model, x):
    """Every intermediate value of CNN, computed functionally (nothing in place)."""
    r = {"conv": conv(model.conv, x)}
    h = F.relu(r["conv"])
    for name in ("block1", "block2"):
        b = getattr(model, name)
        r[f"{name}.conv1"] = conv(b.conv1, h)
        r[f"{name}.bn1"] = bn(b.bn1, r[f"{name}.conv1"])
        r[f"{name}.relu"] = F.relu(r[f"{name}.bn1"])
        r[f"{name}.conv2"] = conv(b.conv2, r[f"{name}.relu"])
        r[f"{name}.bn2"] = bn(b.bn2, r[f"{name}.conv2"])
        h = r[f"{name}.relu:1"] = F.relu(r[f"{name}.bn2"] + h)
    r["pool"] = h.mean(dim=(2, 3), keepdim=True)
    r["out"] = F.linear(r["pool"].flatten(1), model.fc.weight, model.fc.bias)
    return r


@pytest.fixture
def cnn():
    return randomize_bn(CNN()).eval()


@pytest.fixture
def images():
    return torch.randn(4, 3, 8, 8)


# -- values -------------------------------------------------------------------


def test_mlp_values_match_manual_computation():
    model = mlp()
    x = torch.randn(5, 6)
    outputs, acts = TorchAdapter(model).run(x)
    assert list(acts) == ["1", "3"]  # the ReLUs, by default
    w0, b0, w2, b2 = model[0].weight, model[0].bias, model[2].weight, model[2].bias
    h1 = F.relu(x @ w0.T + b0)
    h2 = F.relu(h1 @ w2.T + b2)
    close(acts["1"], h1)
    close(acts["3"], h2)
    close(outputs, h2 @ model[4].weight.T + model[4].bias)
    assert all(a.dtype == np.float32 for a in acts.values()) and outputs.dtype == np.float32


def test_numpy_float64_input_is_cast_to_model_dtype():
    model = mlp()
    x = np.random.default_rng(0).normal(size=(3, 6))
    outputs, acts = TorchAdapter(model, layers="0").run(x)
    xt = torch.from_numpy(x).float()
    close(acts["0"], xt @ model[0].weight.T + model[0].bias)
    assert outputs.shape == (3, 3)


def test_inplace_relu_and_residual_do_not_alter_captures(cnn, images):
    layers = ["conv", "block1.conv1", "block1.bn1", "block1.bn2", "block2.bn2", "block1.relu"]
    adapter = TorchAdapter(cnn, layers=layers, pool=None)
    outputs, acts = adapter.run(images)
    ref = cnn_reference(cnn, images)
    assert list(acts) == [
        "conv",
        "block1.conv1",
        "block1.bn1",
        "block1.relu",
        "block1.bn2",
        "block1.relu:1",
        "block2.bn2",
    ]
    for name, value in acts.items():
        close(value, ref[name])
    assert (acts["conv"] < 0).any() and (acts["block1.bn2"] < 0).any()  # pre-ReLU values kept
    close(outputs, ref["out"])
    # Later batches: the layers changed in place were found on the first one (version
    # counters) and are copied in their hooks; the others are kept by reference.
    assert {n for n, p in adapter._plans.items() if p.eager} == {
        "conv", "block1.bn1", "block1.bn2", "block2.bn2"
    }
    for _ in range(2):
        x = torch.randn(4, 3, 8, 8)
        outputs, acts = adapter.run(x)
        ref = cnn_reference(cnn, x)
        for name, value in acts.items():
            close(value, ref[name])
        close(outputs, ref["out"])


def test_module_called_twice_yields_two_captures():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.Tanh()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.act(self.fc(self.act(self.fc(x)))))

    model = Twice().eval()
    x = torch.randn(3, 4)
    _, acts = TorchAdapter(model, layers=["fc", "act"]).run(x)
    assert list(acts) == ["fc", "act", "fc:1", "act:1"]
    w, b = model.fc.weight, model.fc.bias
    h1 = x @ w.T + b
    h2 = torch.tanh(h1) @ w.T + b
    close(acts["fc"], h1)
    close(acts["act"], torch.tanh(h1))
    close(acts["fc:1"], h2)
    close(acts["act:1"], torch.tanh(h2))
    _, acts2 = TorchAdapter(model).run(x)  # default: the Tanh, both calls
    assert list(acts2) == ["act", "act:1"]


def test_lstm_outputs_are_flattened_batch_first():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(5, 7, num_layers=2, batch_first=True)
            self.gru = nn.GRU(7, 6)  # sequence-first
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            out, _ = self.lstm(x)
            out2, _ = self.gru(out.transpose(0, 1))
            return self.head(out2[-1])

    model = Seq().eval()
    x = torch.randn(4, 9, 5)
    adapter = TorchAdapter(model, layers=["lstm", "gru"], pool=None)
    outputs, acts = adapter.run(x)
    assert list(acts) == ["lstm.0", "lstm.1.0", "lstm.1.1", "gru.0", "gru.1"]
    with torch.no_grad():
        out, (h, c) = model.lstm(x)
        out2, h2 = model.gru(out.transpose(0, 1))
    close(acts["lstm.0"], out)  # (n, L, H)
    close(acts["lstm.1.0"], h.transpose(0, 1).reshape(4, -1))  # (n, layers x H)
    close(acts["lstm.1.1"], c.transpose(0, 1).reshape(4, -1))
    close(acts["lstm.1.0"][:, -7:], out[:, -1])
    close(acts["gru.0"], out2.transpose(0, 1))  # (n, L, H) although the GRU is sequence-first
    close(acts["gru.1"], h2[0])
    close(outputs, model.head(out2[-1]))
    shapes = {e["name"]: e["shape"] for e in adapter.model_summary()["layers"]}
    assert shapes == {
        "lstm.0": [9, 7],
        "lstm.1.0": [14],
        "lstm.1.1": [14],
        "gru.0": [9, 6],
        "gru.1": [6],
    }


@pytest.mark.parametrize("cell, layers, bidirectional",
                         [(nn.GRU, 1, False), (nn.GRU, 2, False), (nn.LSTM, 2, True)])
def test_a_recurrent_final_state_is_one_row_per_sample(cell, layers, bidirectional, recwarn):
    """h_n (and c_n), (layers x directions, n, H) whatever batch_first says, is captured as
    (n, layers x directions x H) with the default pooling: not averaged over its layers and
    directions as if they were positions (nor a masked mean, with a wrong padding warning),
    and a one-layer state not dropped as shared by the batch."""
    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 8)
            self.rnn = cell(8, 5, num_layers=layers, batch_first=True,
                            bidirectional=bidirectional)
            self.head = nn.Linear(5 * (2 if bidirectional else 1), 3)

        def forward(self, input_ids, attention_mask):
            out, _ = self.rnn(self.emb(input_ids))
            return self.head(out[:, -1])

    model = Text().eval()
    ids = torch.randint(1, 30, (6, 7))
    mask = (torch.arange(7)[None] < torch.tensor([7, 3, 5, 7, 2, 4])[:, None]).long()
    _, acts = TorchAdapter(model, layers=["rnn"]).run({"input_ids": ids * mask,
                                                       "attention_mask": mask})
    with torch.no_grad():
        _, state = model.rnn(model.emb(ids * mask))
    states = state if isinstance(state, tuple) else (state,)
    names = ["rnn.1.0", "rnn.1.1"] if cell is nn.LSTM else ["rnn.1"]
    assert set(names) <= set(acts)
    for name, s in zip(names, states, strict=True):
        close(acts[name], s.transpose(0, 1).reshape(6, -1))
    assert not [w for w in recwarn if "mask" in str(w.message)]


def test_transformer_encoder_submodules_are_captured():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.1, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    x = torch.randn(3, 5, 16)
    fast = torch.backends.mha.get_fastpath_enabled()
    default = TorchAdapter(model)  # the transformer blocks (the residual stream), mean-pooled
    assert default.layer_names == ["layers.0", "layers.1"]
    _, blocks = default.run(x)
    with torch.no_grad():
        h0 = model.layers[0](x)
    close(blocks["layers.0"], h0.mean(1))
    adapter = TorchAdapter(model, layers=["layers.*.linear*", "layers.*.norm*", "*.out_proj"],
                           pool=None)
    with pytest.warns(NnsigWarning, match=r"2 selected module\(s\) never ran.*out_proj"):
        outputs, acts = adapter.run(x)  # out_proj: only its weights are used
    assert torch.backends.mha.get_fastpath_enabled() == fast
    for i in (0, 1):
        for leaf in ("linear1", "linear2", "norm1", "norm2"):
            assert acts[f"layers.{i}.{leaf}"].shape == (3, 5, 32 if leaf == "linear1" else 16)
    assert not any("out_proj" in k for k in acts)  # never runs: only its weights are used
    lin1 = model.layers[0].linear1
    close(
        acts["layers.0.linear1"],
        F.linear(torch.from_numpy(acts["layers.0.norm1"]), lin1.weight, lin1.bias),
    )
    with torch.no_grad():
        expected = model(x)  # the fused fast path
    close(outputs, expected.reshape(3, -1), atol=1e-4)
    close(acts["layers.1.norm2"], expected, atol=1e-4)
    _, acts2 = TorchAdapter(model, layers="layers.0", pool=lambda t: t.mean(1)).run(x)
    assert acts2["layers.0"].shape == (3, 16)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_transformer_with_padding_mask_and_nested_fast_path():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2).eval()  # nested tensors when fused
    x = torch.randn(3, 5, 16)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 3:] = True
    outputs, acts = TorchAdapter(model, layers=["layers.0", "layers.1.linear2"], pool=None).run(
        {"src": x, "src_key_padding_mask": mask}
    )
    assert acts["layers.0"].shape == (3, 5, 16) and acts["layers.1.linear2"].shape == (3, 5, 16)
    with torch.no_grad():
        expected = model(x, src_key_padding_mask=mask)  # padded positions are zeros there
    keep = ~mask
    close(outputs.reshape(3, 5, 16)[keep.numpy()], expected[keep], atol=1e-4)


def test_sequence_first_transformer_is_made_batch_first():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)  # (L, n, E)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

        def forward(self, x):  # x: (n, L, E)
            return self.enc(x.transpose(0, 1)).transpose(0, 1)

    model = Wrap().eval()
    x = torch.randn(2, 6, 8)
    _, acts = TorchAdapter(model, layers="enc.layers.0", pool=None).run(x)
    with torch.no_grad():
        close(acts["enc.layers.0"], model(x), atol=1e-5)


# -- torchvision --------------------------------------------------------------


def test_resnet18_names_shapes_and_avgpool():
    tv = pytest.importorskip("torchvision")
    model = randomize_bn(tv.models.resnet18(weights=None, num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    adapter = TorchAdapter(model, layers=[nn.ReLU, "avgpool", "layer4"], pool=None)
    outputs, acts = adapter.run(x)
    assert list(acts)[:4] == ["relu", "layer1.0.relu", "layer1.0.relu:1", "layer1.1.relu"]
    assert len([k for k in acts if "relu" in k]) == 1 + 8 * 2
    assert acts["relu"].shape == (2, 64, 16, 16)
    assert acts["layer4.1.relu:1"].shape == (2, 512, 1, 1)
    assert acts["avgpool"].shape == (2, 512, 1, 1)
    with torch.no_grad():  # the forward pass by hand
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        h = model.layer4(model.layer3(model.layer2(model.layer1(h))))
        feats = F.adaptive_avg_pool2d(h, 1).flatten(1)
        logits = feats @ model.fc.weight.T + model.fc.bias
    close(acts["layer4"], h)
    close(acts["avgpool"].reshape(2, -1), feats)
    close(outputs, logits, atol=1e-4)
    summary = adapter.model_summary()
    assert summary["model_class"] == "ResNet"
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    entry = next(e for e in summary["layers"] if e["name"] == "layer4")
    assert entry["type"] == "Sequential" and entry["shape"] == [512, 1, 1]
    assert entry["parameters"] == sum(p.numel() for p in model.layer4.parameters())


def test_mobilenet_v3_small_default_selection_and_classifier():
    tv = pytest.importorskip("torchvision")
    model = randomize_bn(tv.models.mobilenet_v3_small(weights=None, num_classes=5)).eval()
    x = torch.randn(2, 3, 32, 32)
    adapter = TorchAdapter(model)  # the blocks of `features`, at most 12, mean-pooled
    outputs, acts = adapter.run(x)
    assert len(acts) == 12 and list(acts)[0] == "features.0" and list(acts)[-1] == "features.12"
    assert acts["features.0"].shape == (2, 16) and acts["features.12"].shape == (2, 576)
    with torch.no_grad():
        feats = model.features(x)
        logits = model.classifier(feats.mean((2, 3)))
    close(acts["features.12"], feats.mean((2, 3)), atol=1e-4)
    close(outputs, logits, atol=1e-4)
    assert all(np.isfinite(a).all() for a in acts.values())
    head = TorchAdapter(model, layers="classifier.1", pool="mean").run(x)[1]["classifier.1"]
    assert head.shape == (2, 1024)


def test_squeezenet_glob_selection_with_max_pool():
    tv = pytest.importorskip("torchvision")
    model = tv.models.squeezenet1_1(weights=None, num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    adapter = TorchAdapter(model, layers="features.*.expand3x3_activation", pool="max")
    _, acts = adapter.run(x)
    assert len(acts) == 8 and all(a.shape[0] == 2 and a.ndim == 2 for a in acts.values())
    with torch.no_grad():
        fire = model.features[3]
        expand = F.relu(fire.expand3x3(F.relu(fire.squeeze(model.features[:3](x)))))
    close(acts["features.3.expand3x3_activation"], expand.amax(dim=(2, 3)))


# -- structured outputs --------------------------------------------------------


@dataclass
class Pair:
    hidden: torch.Tensor
    gate: torch.Tensor | None = None
    note: str = "not a tensor"


@dataclass
class Output:
    loss: torch.Tensor
    logits: torch.Tensor


class DictModel(nn.Module):
    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)

        def forward(self, x):
            h = self.fc(x)
            return OrderedDict(
                hidden=h, extra=(h * 2, [h + 1]), index=h.argmax(1), meta="text", scalar=h.sum()
            )

    class Gate(nn.Module):
        def forward(self, h):
            return Pair(hidden=h - 1, gate=torch.sigmoid(h))

    def __init__(self):
        super().__init__()
        self.enc = self.Enc()
        self.gate = self.Gate()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        d = self.enc(x)
        p = self.gate(d["hidden"])
        logits = self.head(p.gate)
        return Output(loss=logits.mean(), logits=logits)


def test_dict_and_dataclass_outputs_are_flattened():
    model = DictModel().eval()
    x = torch.randn(3, 4)
    outputs, acts = TorchAdapter(model, layers=["enc", "gate"]).run(x)
    assert list(acts) == ["enc.hidden", "enc.extra.0", "enc.extra.1.0", "gate.hidden", "gate.gate"]
    h = x @ model.enc.fc.weight.T + model.enc.fc.bias
    close(acts["enc.hidden"], h)
    close(acts["enc.extra.0"], 2 * h)
    close(acts["enc.extra.1.0"], h + 1)
    close(acts["gate.hidden"], h - 1)
    close(acts["gate.gate"], torch.sigmoid(h))
    close(outputs, torch.sigmoid(h) @ model.head.weight.T + model.head.bias)  # the logits field


def test_model_output_rules():
    class Returns(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.fc = nn.Linear(2, 3)
            self.kind = kind

        def forward(self, x):
            y = self.fc(x)
            if self.kind == "dict":
                return {"hidden": y * 0, "logits": y}
            if self.kind == "tuple":
                return (x.argmax(1), y, y * 0)
            return y.reshape(-1, 3, 1)

    x = torch.randn(4, 2)
    for kind in ("dict", "tuple", "tensor"):
        model = Returns(kind).eval()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            outputs, _ = TorchAdapter(model, layers="fc").run(x)
        close(outputs, x @ model.fc.weight.T + model.fc.bias)
        # (scores, as wide): no warning, as for (logits, features) below.
        assert not [w for w in seen if issubclass(w.category, NnsigWarning)]


def test_hidden_states_returned_before_the_logits_are_named():
    """(hidden, logits): the hidden states were taken as class scores without a word (their
    argmax, 23-47, as predictions of 5 classes); the warning's wrapper fix takes the logits."""
    class HiddenFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(3, 8), nn.Linear(8, 5)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return h, self.head(h)

    class Logits(nn.Module):  # the fix the warning names
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)[1]

    class FeaturesAfter(HiddenFirst):
        def forward(self, x):
            h, y = super().forward(x)
            return y, h

    model, x = HiddenFirst().eval(), torch.randn(6, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        TorchAdapter(FeaturesAfter().eval(), layers=["body"]).run(x)
    with pytest.warns(NnsigWarning, match=r"2 tensors.*0 \(6, 8\), 1 \(6, 5\).*takes the "
                                          r"first, 0.*model\(x\)\[1\]"):
        TorchAdapter(model, layers=["body"]).run(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        outputs, _ = TorchAdapter(Logits(model), layers=["model.body"]).run(x)
    close(outputs, model(x)[1])


def test_integer_layer_output_is_an_error():
    class ArgMax(nn.Module):
        def forward(self, x):
            return x.argmax(1)

    model = nn.Sequential(nn.Linear(3, 4), ArgMax()).eval()
    with pytest.raises(TypeError, match=r"'1'.*int64"):
        TorchAdapter(model, layers="1").run(torch.randn(2, 3))


def test_low_precision_activations_become_float32():
    model = mlp().to(torch.bfloat16)
    x = torch.randn(4, 6, dtype=torch.bfloat16)
    outputs, acts = TorchAdapter(model, pool="flatten").run(x)
    assert acts["1"].dtype == np.float32 and outputs.dtype == np.float32
    ref = F.relu(x @ model[0].weight.T + model[0].bias).float()
    close(acts["1"], ref, atol=1e-2)


# -- pooling -------------------------------------------------------------------


def test_pool_modes_and_per_layer_dict(cnn, images):
    ref = cnn_reference(cnn, images)
    layers = ["conv", "block1.bn1", "block1.conv2", "block2.conv1", "fc"]
    pool = {"conv": "max", "block1.*": "mean", "block2.conv1": "flatten", "fc": "mean"}
    _, acts = TorchAdapter(cnn, layers=layers, pool=pool).run(images)
    close(acts["conv"], ref["conv"].amax(dim=(2, 3)))
    close(acts["block1.bn1"], ref["block1.bn1"].mean(dim=(2, 3)))
    close(acts["block1.conv2"], ref["block1.conv2"].mean(dim=(2, 3)))
    close(acts["block2.conv1"], ref["block2.conv1"].reshape(4, -1))
    close(acts["fc"], ref["out"])  # 2-D tensors are not pooled
    for mode in ("mean", "max", "flatten", None):
        _, a = TorchAdapter(cnn, layers="block2.bn2", pool=mode).run(images)
        expected = {
            "mean": (4, 8),
            "max": (4, 8),
            "flatten": (4, 8 * 8 * 8),
            None: (4, 8, 8, 8),
        }[mode]
        assert a["block2.bn2"].shape == expected


def test_pool_dict_key_for_one_call_and_callable(cnn, images):
    ref = cnn_reference(cnn, images)
    pool = {"block1.relu:1": "mean", "block1.relu": lambda t: t[:, :2].sum((2, 3))}
    _, acts = TorchAdapter(cnn, layers="block1.relu", pool=pool).run(images)
    close(acts["block1.relu"], ref["block1.relu"][:, :2].sum((2, 3)), atol=1e-4)
    close(acts["block1.relu:1"], ref["block1.relu:1"].mean((2, 3)))


def test_invalid_pool_and_unused_pool_key(cnn, images):
    with pytest.raises(ValueError, match="Invalid pool"):
        TorchAdapter(cnn, pool="avg")
    adapter = TorchAdapter(cnn, layers="conv", pool={"convv": "mean"})
    with pytest.raises(LayerSelectionError, match="'convv'.*did you mean 'conv'"):
        adapter.run(images)


# -- selection -----------------------------------------------------------------


def test_glob_type_and_mixed_selection(cnn, images):
    a = TorchAdapter(cnn, layers="block1.conv*")
    assert a.layer_names == ["block1.conv1", "block1.conv2"]
    b = TorchAdapter(cnn, layers=nn.BatchNorm2d)
    assert b.layer_names == ["block1.bn1", "block1.bn2", "block2.bn1", "block2.bn2"]
    c = TorchAdapter(cnn, layers=["fc", nn.Conv2d, "block2.*"])
    assert c.layer_names[:3] == ["conv", "block1.conv1", "block1.conv2"]
    assert "fc" in c.layer_names and "block2.relu" in c.layer_names
    _, acts = c.run(images)
    assert "block2.relu:1" in acts and "fc" in acts
    with pytest.raises(LayerSelectionError, match="nothing|matches no module"):
        TorchAdapter(cnn, layers="decoder.*")
    with pytest.raises(LayerSelectionError, match="No module of type LSTM"):
        TorchAdapter(cnn, layers=nn.LSTM)
    with pytest.raises(LayerSelectionError, match="empty"):
        TorchAdapter(cnn, layers=[])


def test_default_selection_is_logged(cnn, caplog):
    with caplog.at_level(logging.INFO, logger="nnsig_torch"):
        adapter = TorchAdapter(cnn)
    assert adapter.layer_names == ["block1", "block2"]
    assert "2 block outputs by default" in caplog.text
    mlp_ = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    with caplog.at_level(logging.INFO, logger="nnsig_torch"):
        assert TorchAdapter(mlp_).layer_names == ["1"]
    assert "activation modules" in caplog.text
    plain = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Dropout(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.Linear(5, 2)
    )
    with caplog.at_level(logging.INFO, logger="nnsig_torch"):
        assert TorchAdapter(plain).layer_names == ["0", "3"]  # not dropout/flatten nor the head
    assert "hidden leaf modules" in caplog.text
    with pytest.raises(LayerSelectionError, match="no hidden layer"):
        TorchAdapter(nn.Linear(3, 2))


def test_unknown_name_lists_close_matches(cnn):
    with pytest.raises(UnknownLayerError) as err:
        TorchAdapter(cnn, layers=["block1.conv"])
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    msg = str(err.value)
    assert "Unknown layer 'block1.conv'" in msg and "'block1.conv1'" in msg
    assert not msg.startswith('"')  # not KeyError's quoted repr
    with pytest.raises(TypeError):
        TorchAdapter(cnn, layers=[3])


def test_layer_that_never_runs_is_an_error(images):
    class Unused(CNN):
        def __init__(self):
            super().__init__()
            self.aux = nn.Linear(8, 2)

    model = Unused().eval()
    with pytest.raises(LayerSelectionError, match="never ran.*aux"):
        TorchAdapter(model, layers=["conv", "aux"]).run(images)
    with pytest.warns(NnsigWarning, match="never ran and are not captured: aux"):
        _, acts = TorchAdapter(model, layers=nn.Linear).run(images)  # by type: aux left out
    assert list(acts) == ["fc"]


def test_captured_names_must_not_change_between_batches():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Linear(2, 2)

        def forward(self, x):
            return self.b(x) if x.shape[0] > 2 else self.a(x)

    adapter = TorchAdapter(Branchy().eval(), layers=nn.Linear)
    with pytest.warns(NnsigWarning, match="never ran and are not captured: a"):
        adapter.run(torch.randn(4, 2))
    with pytest.raises(LayerSelectionError, match="missing: b"):
        adapter.run(torch.randn(2, 2))
    named = TorchAdapter(Branchy().eval(), layers=["a", "b"])
    with pytest.raises(LayerSelectionError, match="never ran.*: a"):
        named.run(torch.randn(4, 2))


def test_shape_change_between_batches_is_an_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU()).eval()
    adapter = TorchAdapter(model, pool=None)
    adapter.run(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="per-sample shape"):
        adapter.run(torch.randn(2, 6, 3))
    auto = TorchAdapter(model)  # (n, L, 4) from a Linear: tokens, averaged
    assert auto.run(torch.randn(2, 5, 3))[1]["1"].shape == (2, 4)
    assert auto.run(torch.randn(2, 6, 3))[1]["1"].shape == (2, 4)
    pooled = TorchAdapter(model, pool=lambda t: t.mean(1))
    assert pooled.run(torch.randn(2, 5, 3))[1]["1"].shape == (2, 4)
    assert pooled.run(torch.randn(2, 6, 3))[1]["1"].shape == (2, 4)


def test_order_is_stable_across_batches(cnn, images):
    adapter = TorchAdapter(cnn, layers=["block2.bn1", "conv", "block1"])
    names = list(adapter.run(images)[1])
    assert names == ["conv", "block1", "block2.bn1"]  # the order in which they ran
    assert list(adapter.run(images[:2])[1]) == names


# -- non-finite values ---------------------------------------------------------


class Poison(nn.Module):
    def forward(self, x):
        x = x.clone()
        x[2, 1] = math.nan
        return x


def test_nan_is_an_error_naming_layer_and_sample():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), Poison(), nn.Linear(4, 2)).eval()
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"layer '2' at sample 2 of the batch"):
        TorchAdapter(model, layers=["1", "2", "3"]).run(x)
    outputs, acts = TorchAdapter(model, layers=["1", "2"], keep_nonfinite=True).run(x)
    assert np.isnan(acts["2"][2, 1]) and np.isfinite(np.delete(acts["2"], 2, axis=0)).all()
    assert np.isnan(outputs[2]).all()
    with pytest.raises(ValueError, match="the model output at sample 2"):
        TorchAdapter(model, layers="1").run(x)


# -- modes and hooks -------------------------------------------------------------


class ModeSpy(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return x


def test_eval_no_grad_and_training_modes_restored(cnn, images):
    spy = ModeSpy()
    model = nn.Sequential(cnn, spy)
    model.train()
    cnn.block1.bn1.eval()  # a partly frozen model
    before = {n: m.training for n, m in model.named_modules()}
    outputs, _ = TorchAdapter(model, layers="0.conv").run(images)
    assert spy.seen == [(False, False)]
    assert {n: m.training for n, m in model.named_modules()} == before
    cnn.eval()
    close(outputs, cnn_reference(cnn, images)["out"])  # BN used running statistics


def test_hooks_removed_after_success_and_after_exception(cnn, images):
    user_hook_calls = []
    cnn.block1.register_forward_hook(lambda m, i, o: user_hook_calls.append(1))
    cnn.train()
    before = hooks_snapshot(cnn)
    TorchAdapter(cnn, layers=[nn.Conv2d, "block1"]).run(images)
    assert hooks_snapshot(cnn) == before and user_hook_calls == [1]

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    cnn.block2.bn2.register_forward_pre_hook(lambda m, i: None)
    cnn.block2.bn2 = nn.Sequential(cnn.block2.bn2, Boom())
    before = hooks_snapshot(cnn)
    modes = {n: m.training for n, m in cnn.named_modules()}
    with pytest.raises(RuntimeError, match="boom"):
        TorchAdapter(cnn, layers=[nn.Conv2d, nn.ReLU, "block1"]).run(images)
    assert hooks_snapshot(cnn) == before
    assert {n: m.training for n, m in cnn.named_modules()} == modes


def test_hooks_removed_after_an_exception_in_our_hook_or_in_pooling(cnn, images):
    before = hooks_snapshot(cnn)
    with pytest.raises(ZeroDivisionError):  # pooling fails (after the pass, on batch 1)
        TorchAdapter(cnn, pool={"conv": lambda t: 1 / 0 and t}, layers="conv").run(images)
    assert hooks_snapshot(cnn) == before
    adapter = TorchAdapter(cnn, pool={"block1.bn2": lambda t: t.mean((2, 3))},
                           layers=["block1.bn2"])
    adapter.run(images)  # bn2 is changed in place later: from now on pooled in its hook
    assert adapter._plans["block1.bn2"].eager
    adapter.pool = {"block1.bn2": lambda t: 1 / 0 and t}
    adapter._plans["block1.bn2"].mode = adapter.pool["block1.bn2"]
    with pytest.raises(ZeroDivisionError):  # raised inside our hook
        adapter.run(images)
    assert hooks_snapshot(cnn) == before


def test_data_parallel_is_unwrapped(cnn, images):
    wrapped = nn.DataParallel(cnn)
    adapter = TorchAdapter(wrapped, layers=["block1.conv1", "module.fc"], pool=None)
    assert adapter.layer_names == ["block1.conv1", "fc"]
    outputs, acts = adapter.run(images)
    assert list(acts) == ["block1.conv1", "fc"]
    # With CUDA present, DataParallel moves the model to the first GPU.
    ref = cnn_reference(cnn, images.to(next(cnn.parameters()).device))
    close(acts["block1.conv1"], ref["block1.conv1"])
    close(outputs, ref["out"])
    assert TorchAdapter(wrapped).layer_names == ["block1", "block2"]
    assert all(not i.name.startswith("module.") for i in available_layers(wrapped))


@pytest.mark.slow
def test_torch_compile_is_unwrapped():
    model = mlp()
    compiled = torch.compile(model)
    adapter = TorchAdapter(compiled, layers=["_orig_mod.1", "3"])
    assert adapter.layer_names == ["1", "3"] and adapter.model is model
    x = torch.randn(2, 6)
    close(adapter.run(x)[1]["1"], F.relu(x @ model[0].weight.T + model[0].bias))


def test_multi_input_models_tuple_and_dict():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(2, 4)

        def forward(self, x, y=None, scale=1.0):
            return self.a(x) + self.b(y) * scale

    model = Two().eval()
    x, y = torch.randn(5, 3), np.ones((5, 2))
    ya = torch.ones(5, 2)
    expected = x @ model.a.weight.T + model.a.bias + 2 * (ya @ model.b.weight.T + model.b.bias)
    outputs, acts = TorchAdapter(model, layers="b").run({"x": x, "y": y, "scale": 2.0})
    close(outputs, expected)
    close(acts["b"], ya @ model.b.weight.T + model.b.bias)
    outputs, _ = TorchAdapter(model, layers="b").run((x, ya, 2.0))
    close(outputs, expected)


# -- listing and summary ---------------------------------------------------------


def test_available_layers_on_class_and_instance(cnn, images):
    listing = TorchAdapter.available_layers(cnn, images)
    assert isinstance(listing, LayerList)
    by_name = {i.name: i for i in listing}
    assert by_name["block1.relu:1"].module == "block1.relu"
    assert by_name["block1.conv1"].shape == (8, 8, 8) and by_name["block1.conv1"].type == "Conv2d"
    assert by_name["fc"].shape == (4,) and by_name["fc"].parameters == 8 * 4 + 4
    assert by_name["block1"].selected and not by_name["conv"].selected  # the default selection
    text = repr(listing)
    assert text.splitlines()[0].split() == ["name", "type", "shape", "params"]
    assert "block1.relu:1" in text and "(8, 8, 8)" in text
    adapter = TorchAdapter(cnn, layers="block2.*")
    mine = adapter.available_layers(images)
    assert {i.name for i in mine if i.selected} >= {"block2.conv1", "block2.relu:1"}
    assert not any(i.selected for i in mine if i.module == "relu")
    no_shapes = adapter.available_layers()
    assert [i.name for i in no_shapes] == [n for n, _ in cnn.named_modules() if n]
    assert all(i.shape is None for i in no_shapes)


def test_model_summary(cnn, images):
    adapter = TorchAdapter(cnn, layers=["conv", "block1.relu", "fc"], pool={"block1.*": "mean"})
    before = adapter.model_summary()
    assert [e["name"] for e in before["layers"]] == ["conv", "block1.relu", "fc"]
    adapter.run(images)
    s = adapter.model_summary()
    assert s["model_class"] == "CNN"
    assert s["parameters"] == sum(p.numel() for p in cnn.parameters())
    layers = {e["name"]: e for e in s["layers"]}
    assert list(layers) == ["conv", "block1.relu", "block1.relu:1", "fc"]
    assert layers["conv"]["type"] == "Conv2d" and layers["conv"]["shape"] == [8]  # "auto"
    assert layers["conv"]["source_shape"] == [8, 8, 8] and layers["conv"]["layout"] == "NCHW"
    assert layers["conv"]["pool"] == "mean" and layers["fc"]["pool"] == "none"
    assert layers["conv"]["parameters"] == 3 * 8 * 9 + 8
    assert layers["conv"]["config"]["kernel_size"] == [3, 3]
    assert layers["conv"]["config"]["out_channels"] == 8
    assert layers["block1.relu:1"]["shape"] == [8] and layers["block1.relu"]["config"] == {
        "inplace": True
    }
    assert layers["fc"]["config"] == {"in_features": 8, "out_features": 4, "bias": True}
    import json

    json.dumps(s)  # JSON-serialisable


def test_protocol_and_to_numpy():
    adapter = TorchAdapter(mlp())
    assert adapter.framework == "torch"
    adapter_mod = pytest.importorskip("nnsig_core.protocol")
    assert isinstance(adapter, adapter_mod.Adapter)
    t = torch.arange(6).reshape(2, 3)
    assert np.array_equal(adapter.to_numpy(t), t.numpy())
    assert adapter.to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32
    assert adapter.to_numpy(torch.ones(2, requires_grad=True)).tolist() == [1.0, 1.0]
    assert adapter.to_numpy([1, 2]).tolist() == [1, 2]


# -- CUDA ----------------------------------------------------------------------


def test_cuda_matches_cpu(cnn, images):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    layers = ["conv", "block1.bn2", "block2", "fc"]
    ref_out, ref = TorchAdapter(cnn, layers=layers, pool={"block2": "mean"}).run(images)
    gpu = cnn.cuda()
    adapter = TorchAdapter(gpu, layers=layers, pool={"block2": "mean"})
    for _ in range(2):
        outputs, acts = adapter.run(images)  # CPU inputs are moved to the model's device
        assert list(acts) == list(ref)
        for name in ref:
            assert isinstance(acts[name], np.ndarray)
            np.testing.assert_allclose(acts[name], ref[name], atol=1e-4, rtol=1e-3)
        np.testing.assert_allclose(outputs, ref_out, atol=1e-4, rtol=1e-3)
    half = TorchAdapter(gpu.half(), layers="conv").run(images.cuda().half())[1]["conv"]
    assert half.dtype == np.float32
    bad = nn.Sequential(nn.Linear(3, 4), Poison()).cuda().eval()
    with pytest.raises(ValueError, match="sample 2"):
        TorchAdapter(bad, layers="1").run(torch.randn(4, 3))
