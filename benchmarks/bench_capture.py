"""Capture benchmark: forward pass vs capture to a complete store vs one CSV per layer.

The prototype's model (784-512-512-512-10 ReLU MLP, briefly trained so its
activations look like a real network's) on the 60,000 MNIST training images,
batches of 1000, capturing the three hidden ReLU outputs. Printed, measured in
the same run, each as a ratio to (a):

(a)  plain forward passes over the batches (inference mode),
(b)  ``nnsig_core.capture`` to a complete on-disk store (default codec), plus
     the other codecs and float16 for comparison (why the default is what it is),
(c)  the same layers written as one text CSV per layer (the prototype's way),

and the peak RSS of capturing 10,000 vs 60,000 samples, each in a fresh process.

Run from the repository root::

    .venv/bin/python benchmarks/bench_capture.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def load_mnist_uint8(root: str, train: bool = True):
    import torchvision

    ds = torchvision.datasets.MNIST(root, train=train, download=False)
    return ds.data, ds.targets  # uint8 (n, 28, 28), int64 (n,)


def batches(images, labels, batch_size: int, limit: int | None = None):
    """MNIST batches straight from the uint8 tensor: scaled and flattened per batch."""
    import torch

    n = len(images) if limit is None else min(limit, len(images))
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        x = images[lo:hi].to(torch.float32).div_(255.0).sub_(0.1307).div_(0.3081).view(hi - lo, -1)
        yield x, labels[lo:hi]


class _Sized:
    """An iterable of batches that knows its length (as a DataLoader does)."""

    def __init__(self, images, labels, batch_size: int, limit: int | None = None):
        self.images, self.labels, self.batch_size, self.limit = images, labels, batch_size, limit
        self.dataset = range(len(images) if limit is None else min(limit, len(images)))

    def __iter__(self):
        return batches(self.images, self.labels, self.batch_size, self.limit)


def make_model(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def train_briefly(model, images, labels, steps: int = 300, batch_size: int = 128, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=g)
        x = images[idx].to(torch.float32).div_(255.0).sub_(0.1307).div_(0.3081).view(batch_size, -1)
        loss = torch.nn.functional.cross_entropy(model(x), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def time_forward(model, images, labels, batch_size: int) -> float:
    import torch

    t = time.perf_counter()
    with torch.inference_mode():
        for x, _y in batches(images, labels, batch_size):
            model(x)
    return time.perf_counter() - t


def time_capture(model, images, labels, batch_size: int, path: Path, **kw) -> float:
    from nnsig_torch import TorchAdapter

    from nnsig_core import capture

    shutil.rmtree(path, ignore_errors=True)
    adapter = TorchAdapter(model, layers=["1", "3", "5"])
    t = time.perf_counter()
    capture(adapter, _Sized(images, labels, batch_size), path, progress=False, **kw)
    return time.perf_counter() - t


def time_csv(model, images, labels, batch_size: int, out: Path) -> float:
    """The prototype's way: one text CSV per layer, rows appended batch by batch."""
    import torch

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model[i].register_forward_hook(lambda m, i_, o, name=f"layer{i}": captured.__setitem__(name, o))
        for i in (1, 3, 5)
    ]
    files = {f"layer{i}": open(out / f"layer{i}.csv", "w") for i in (1, 3, 5)}
    t = time.perf_counter()
    try:
        with torch.inference_mode():
            for x, _y in batches(images, labels, batch_size):
                model(x)
                for name, f in files.items():
                    np.savetxt(f, captured[name].numpy(), delimiter=",", fmt="%.6g")
    finally:
        for f in files.values():
            f.close()
        for h in hooks:
            h.remove()
    return time.perf_counter() - t


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rss_child(args: argparse.Namespace, n: int, weights: Path, path: Path) -> int:
    """Peak RSS (bytes) of a fresh process that captures ``n`` samples."""
    code = f"""
import resource, sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
import bench_capture as b
from nnsig_core import capture
from nnsig_torch import TorchAdapter
images, labels = b.load_mnist_uint8({args.data_root!r})
model = b.make_model(); model.load_state_dict(torch.load({str(weights)!r})); model.eval()
capture(TorchAdapter(model, layers=["1", "3", "5"]), b._Sized(images, labels, {args.batch_size}, {n}),
        {str(path)!r}, overwrite=True, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def time_checksums(store: Path) -> float:
    """Seconds to compute the crc32c of every chunk file of ``store`` (already in memory):
    the checksum's share of the writer's work."""
    import google_crc32c
    import numpy as np

    blobs = [np.frombuffer(f.read_bytes(), dtype=np.uint8) for f in store.rglob("c/**/*")
             if f.is_file()]
    t0 = time.perf_counter()
    for b in blobs:
        google_crc32c.value(b[:-4])
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("NNSIG_DATA", str(here.parent / "shared" / "data")))
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3, help="best of N for each timing")
    p.add_argument("--workdir", default=None, help="where stores are written (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    import torch
    from zarr.codecs import BloscCodec, ZstdCodec

    torch.set_num_threads(os.cpu_count() or 1)
    images, labels = load_mnist_uint8(args.data_root)
    model = train_briefly(make_model(), images, labels)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nnsig-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "mlp.pt"
    torch.save(model.state_dict(), weights)

    def best(fn, *a, **kw) -> float:
        return min(fn(*a, **kw) for _ in range(args.repeats))

    time_forward(model, images, labels, args.batch_size)  # warm-up
    results: dict[str, float] = {}
    results["a_forward"] = best(time_forward, model, images, labels, args.batch_size)
    store = work / "capture.zarr"
    variants = {
        "b_capture_default (raw)": {},
        "b_capture_float16": {"dtype": "float16"},
        "b_capture_lz4_bitshuffle_1": {"compressor": "lz4"},
        "b_capture_lz4_byteshuffle_5": {"compressor": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")},
        "b_capture_blosc_zstd1": {"compressor": BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")},
        "b_capture_zstd_default_level": {"compressor": ZstdCodec()},
        "b_capture_durable (fsync)": {"durable": True},
        "b_capture_via_store_api": {"fast_path": False},
    }
    sizes: dict[str, int] = {}
    from nnsig_core.capture import chunks

    for name, kw in variants.items():
        chunks.LOCAL_FAST_PATH = kw.pop("fast_path", True)  # LocalStore.set for every chunk
        results[name] = best(time_capture, model, images, labels, args.batch_size, store, **kw)
        chunks.LOCAL_FAST_PATH = True
        sizes[name] = dir_size(store)
        if name.startswith("b_capture_default"):
            crc_seconds = time_checksums(store)
    results["a_forward_again"] = best(time_forward, model, images, labels, args.batch_size)
    results["c_csv_per_layer"] = time_csv(model, images, labels, args.batch_size, work / "csv")
    sizes["c_csv_per_layer"] = dir_size(work / "csv")
    forward = min(results["a_forward"], results["a_forward_again"])

    print(f"MNIST train, 60,000 samples, batches of {args.batch_size}, layers 1/3/5 (3 x 512 ReLU)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"{'measure':34s} {'seconds':>8s} {'ratio to (a)':>13s} {'on disk':>10s}")
    print(f"{'(a) forward only':34s} {forward:8.3f} {1.0:13.2f}")
    for name, secs in results.items():
        if name.startswith("a_"):
            continue
        size = f"{sizes[name] / 2**20:8.1f} MiB" if name in sizes else ""
        print(f"{name:34s} {secs:8.3f} {secs / forward:13.2f} {size:>10s}")

    print(f"crc32c of every chunk of the default capture (computed by the writer thread): "
          f"{crc_seconds:.3f} s, {crc_seconds / results['b_capture_default (raw)']:.1%} of "
          "that capture's time")
    rss10 = rss_child(args, 10_000, weights, work / "rss10.zarr")
    rss60 = rss_child(args, 60_000, weights, work / "rss60.zarr")
    print(f"peak RSS capturing 10k: {rss10 / 2**20:.0f} MiB, 60k: {rss60 / 2**20:.0f} MiB, "
          f"60k/10k = {rss60 / rss10:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"seconds": results, "bytes": sizes, "rss": {"10k": rss10, "60k": rss60}}, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
