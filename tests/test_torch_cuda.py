"""The CUDA path of the torch adapter, end to end: captures on the GPU equal captures on the CPU.

Skipped without CUDA (CI has no GPU); run on a machine with one. What only the
GPU path does is exercised here: captures kept on the device until the pass
ends (in-place changes detected there), one non-blocking copy per batch into
pinned host buffers reused from batch to batch (a buffer must not be handed out
again while the writer's queue still holds arrays made from it), and pooling
with attention masks on the device.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnsig_torch import TorchAdapter  # noqa: E402

from nnsig_core import capture, open_store  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


class Block(nn.Module):
    """A residual block with an in-place ReLU and an in-place add (values change after capture)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn(self.conv(x))
        out += x
        return self.relu(out)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.block1 = Block(16)
        self.block2 = Block(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        h = self.block2(self.block1(self.act(self.stem(x))))
        return self.head(h.mean((2, 3)))


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = Net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


LAYERS = ["stem", "block1.bn", "block1", "block2"]


def test_capture_on_cuda_equals_capture_on_cpu(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(200, 3, 12, 12)
    y = torch.randint(0, 5, (200,))
    cpu = capture(TorchAdapter(_net(), layers=LAYERS, pool={"block2": "mean"}), (x, y),
                  tmp_path / "cpu.zarr", batch_size=16, progress=False)
    # Small chunks: many batches wait in the writer's queue while pinned buffers are reused.
    gpu = capture(TorchAdapter(_net().cuda(), layers=LAYERS, pool={"block2": "mean"}), (x, y),
                  tmp_path / "gpu.zarr", batch_size=16, chunk_bytes=16 * 1024, progress=False)
    a, b = open_store(cpu.location), open_store(gpu.location)
    assert a.layers("train") == b.layers("train") == LAYERS
    for layer in LAYERS:
        np.testing.assert_allclose(b.activations("train", layer)[:], a.activations("train", layer)[:],
                                   atol=1e-4, rtol=1e-3, err_msg=layer)
    np.testing.assert_allclose(b.outputs("train")[:], a.outputs("train")[:], atol=1e-4, rtol=1e-3)
    np.testing.assert_array_equal(b.labels("train"), a.labels("train"))


def test_reused_pinned_buffers_never_overwrite_a_batch_still_held():
    adapter = TorchAdapter(_net().cuda(), layers=["block1", "block2"])
    torch.manual_seed(2)
    xs = [torch.randn(8, 3, 12, 12) for _ in range(6)]
    ref = TorchAdapter(_net(), layers=["block1", "block2"])
    held = [adapter.run(x)[1] for x in xs]  # every batch's arrays kept alive at once
    for x, acts in zip(xs, held, strict=True):
        want = ref.run(x)[1]
        for name in want:
            np.testing.assert_allclose(acts[name], want[name], atol=1e-4, rtol=1e-3)


def test_masked_mean_and_tokens_on_cuda():
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True,
                                       dropout=0.0)
    enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.encoder = enc
            self.out = nn.Linear(16, 3)

        def forward(self, input_ids, attention_mask):
            h = self.encoder(self.emb(input_ids), src_key_padding_mask=attention_mask == 0)
            return self.out(h[:, 0])

    model = Tagger().eval()
    ids = torch.randint(1, 50, (6, 9))
    mask = torch.ones(6, 9, dtype=torch.int64)
    mask[1, 5:] = 0
    mask[4, 2:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    blocks = ["encoder.layers.0", "encoder.layers.1"]
    for pool in ("mean", "last"):
        _, want = TorchAdapter(model, layers=blocks, pool=pool).run(batch)
        _, got = TorchAdapter(model.cuda(), layers=blocks, pool=pool).run(
            {k: v.cuda() for k, v in batch.items()})
        model.cpu()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=1e-3,
                                       err_msg=f"{pool} {name}")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_captures_on_two_devices_get_their_own_buffers():
    """One batch's captures on two devices: each device's copy goes to its own pinned buffer
    (the pool hands a buffer out once per call, before any array of it exists)."""
    from nnsig_torch._runtime import PinnedPool, to_host

    a = torch.arange(12, dtype=torch.float32, device="cuda:0").reshape(3, 4)
    b = -torch.arange(12, dtype=torch.float32, device="cuda:1").reshape(3, 4)
    host = to_host([a, b], PinnedPool())
    np.testing.assert_array_equal(host[0], a.cpu().numpy())
    np.testing.assert_array_equal(host[1], b.cpu().numpy())
