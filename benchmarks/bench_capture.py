"""Capture benchmark: the cost of a capture next to the forward pass it records.

Three parts, each printing ratios measured side by side in one run (best of
``--repeats``, the runs of the measures interleaved so the machine's load hits
them alike):

``mlp``
    The prototype's model (784-512-512-512-10 ReLU MLP, briefly trained) on the
    60,000 MNIST training images, batches of 1000, the three hidden ReLUs:
    (a) plain forward passes (inference mode), (a2) ``TorchAdapter.run`` alone,
    (b) ``nnsig_core.capture`` to a complete on-disk store (the targets of issue
    25 on two quiet cores: (a2) at most 1.05 times (a), (b) at most 1.45 times), the same into a memory file system (``--tmpfs``, default
    ``/dev/shm``: the library's cost without the disk file system's), the other
    codecs and float16, (c) one text CSV per layer
    (the prototype's way), and the peak RSS of capturing 10,000 vs 60,000
    samples, each in a fresh process.
``resnet``
    torchvision's ResNet-18 (random weights) on 32 x 32 images (MNIST digits
    padded and repeated on three channels), batches of 256, its four block
    outputs mean-pooled (nnsig's default for it): forward passes, the adapter,
    a capture into a new store, and TorchLens (``torchlens.trace``) on the same
    model and batches, saving the same four module outputs and saving every
    layer (its default). The values of both are compared.
``fixed``
    The fixed cost of a short capture of many layers: DenseNet-121 with 127
    captures (its 120 convolutions, 4 dense blocks, 3 transitions, all
    mean-pooled), 3 batches of 16: forward passes, the adapter, a capture into
    a new store, and the creation of the 127 arrays (metadata written once and
    concurrently, as ``ActivationStore.create_split`` does) next to zarr's
    ``create_array`` one array at a time.

Run from the repository root (``flock`` keeps two timing runs from overlapping)::

    flock /tmp/nnsig-bench.lock .venv/bin/python benchmarks/bench_capture.py --data-root ../shared/data
    .venv/bin/python benchmarks/bench_capture.py --parts resnet fixed --repeats 2
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def time_run_only(model, images, labels, batch_size: int) -> float:
    """The adapter alone: hooks, pooling, the finite check, host arrays; no store."""
    from nnsig_torch import TorchAdapter

    adapter = TorchAdapter(model, layers=["1", "3", "5"])
    t = time.perf_counter()
    for x, _y in batches(images, labels, batch_size):
        adapter.run(x)
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


def time_capture_via_store_api(model, images, labels, batch_size: int, path: Path) -> float:
    """A default capture whose chunks all go through zarr's ``Store.set`` (the path every
    non-local store takes) instead of the local file fast path."""
    from nnsig_core.capture import chunks

    chunks.LOCAL_FAST_PATH = False
    try:
        return time_capture(model, images, labels, batch_size, path)
    finally:
        chunks.LOCAL_FAST_PATH = True


#: CPU seconds (all threads of this process) of the best run of each measure.
CPU: dict[str, float] = {}
#: Every wall time of each measure, in the order of the rounds (for the median ratios).
RUNS: dict[str, list[float]] = {}


def interleaved(measures: dict[str, Any], repeats: int) -> dict[str, float]:
    """Best wall time of each measure over ``repeats`` rounds, the measures taking turns
    (the CPU time of that run goes to :data:`CPU`, every time to :data:`RUNS`)."""
    best = {k: float("inf") for k in measures}
    RUNS.clear()
    for _ in range(repeats):
        for k, fn in measures.items():
            c = time.process_time()
            wall = fn()
            RUNS.setdefault(k, []).append(wall)
            if wall < best[k]:
                best[k], CPU[k] = wall, time.process_time() - c
    return best


def targets(base: str, goals: dict[str, float]) -> None:
    """Each measure's ratio to ``base`` next to its target (issue 25): of the best runs, and
    the median of the per-round ratios (each round runs the measures one after the other,
    so a busy machine slows a round's measures alike)."""
    print(f"{'target (ratio to ' + base + ')':40s} {'goal':>6s} {'best':>7s} {'median':>7s}"
          f" {'spread':>13s}")
    for name, goal in goals.items():
        if name not in RUNS or base not in RUNS:
            continue
        pairs = sorted(r / b for r, b in zip(RUNS[name], RUNS[base], strict=False))
        best = min(RUNS[name]) / min(RUNS[base])
        median = float(np.median(pairs))
        mark = "ok" if median <= goal else "over"
        print(f"{name:40s} {goal:6.2f} {best:7.2f} {median:7.2f} {pairs[0]:6.2f}-{pairs[-1]:<6.2f}"
              f" {mark}")


def table(title: str, results: dict[str, float], base: str, sizes: dict[str, int] | None = None,
          notes: dict[str, str] | None = None) -> None:
    """Wall seconds and their ratio to ``base``, and the same for CPU seconds when known."""
    print(f"\n{title}")
    print(f"{'measure':40s} {'seconds':>8s} {'ratio':>7s} {'cpu s':>8s} {'cpu ratio':>9s}")
    for name, secs in results.items():
        size = f"  {sizes[name] / 2**20:7.1f} MiB" if sizes and name in sizes else ""
        note = f"  {notes[name]}" if notes and name in notes else ""
        cpu = (f"{CPU[name]:8.3f} {CPU[name] / CPU[base]:9.2f}" if name in CPU and base in CPU
               else f"{'':8s} {'':9s}")
        print(f"{name:40s} {secs:8.3f} {secs / results[base]:7.2f} {cpu}{size}{note}")


# ---------------------------------------------------------------------------- MLP
def part_mlp(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> None:
    import torch
    from zarr.codecs import BloscCodec, ZstdCodec

    images, labels = load_mnist_uint8(args.data_root)
    model = train_briefly(make_model(), images, labels)
    weights = work / "mlp.pt"
    torch.save(model.state_dict(), weights)
    store = work / "capture.zarr"
    memory_dir = (Path(tempfile.mkdtemp(prefix="nnsig-bench-", dir=args.tmpfs))
                  if args.tmpfs and Path(args.tmpfs).is_dir() else None)
    if memory_dir:
        atexit.register(shutil.rmtree, memory_dir, True)  # 355 MB of memory until removed
    bs = args.batch_size
    time_forward(model, images, labels, bs)  # warm-up
    results = interleaved({
        "(a) forward": lambda: time_forward(model, images, labels, bs),
        "(a2) TorchAdapter.run only": lambda: time_run_only(model, images, labels, bs),
        "(b) capture, default (raw chunks)": lambda: time_capture(model, images, labels, bs, store),
        "(b) capture, durable=True (fsync)": lambda: time_capture(model, images, labels, bs,
                                                                  store, durable=True),
        "(b) capture via zarr's Store.set": lambda: time_capture_via_store_api(
            model, images, labels, bs, store),
        **({"(b) capture, store in memory (tmpfs)": lambda: time_capture(
            model, images, labels, bs, memory_dir / "capture.zarr")} if memory_dir else {}),
    }, args.repeats)
    time_capture(model, images, labels, bs, store)
    sizes = {"(b) capture, default (raw chunks)": dir_size(store)}
    crc_seconds = time_checksums(store)
    variants = {
        "(b) capture, float16": {"dtype": "float16"},
        "(b) capture, lz4 bit shuffle 1": {"compressor": "lz4"},
        "(b) capture, lz4 byte shuffle 5": {"compressor": BloscCodec(cname="lz4", clevel=5,
                                                                     shuffle="shuffle")},
        "(b) capture, blosc zstd 1": {"compressor": BloscCodec(cname="zstd", clevel=1,
                                                               shuffle="bitshuffle")},
        "(b) capture, zstd default level": {"compressor": ZstdCodec()},
    }
    if not args.no_codecs:
        for name, kw in variants.items():
            results[name] = time_capture(model, images, labels, bs, store, **kw)
            sizes[name] = dir_size(store)
        results["(c) one CSV per layer"] = time_csv(model, images, labels, bs, work / "csv")
        sizes["(c) one CSV per layer"] = dir_size(work / "csv")
    print(f"MNIST train, 60,000 samples, batches of {bs}, layers 1/3/5 (3 x 512 ReLU); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    table("MLP: ratio to (a) forward", results, "(a) forward", sizes)
    targets("(a) forward", {"(a2) TorchAdapter.run only": 1.05,
                            "(b) capture, default (raw chunks)": 1.45})
    print(f"crc32c of every chunk of the default capture (computed by the writer thread): "
          f"{crc_seconds:.3f} s, {crc_seconds / results['(b) capture, default (raw chunks)']:.1%}"
          " of that capture's time")
    if memory_dir:
        print(f"store in memory: the same capture into {memory_dir} (tmpfs), i.e. without the "
              "disk file system's cost of creating the chunk files")
        shutil.rmtree(memory_dir, ignore_errors=True)
    rss = {}
    if not args.no_rss:
        rss = {"10k": rss_child(args, 10_000, weights, work / "rss10.zarr"),
               "60k": rss_child(args, 60_000, weights, work / "rss60.zarr")}
        print(f"peak RSS capturing 10k: {rss['10k'] / 2**20:.0f} MiB, 60k: "
              f"{rss['60k'] / 2**20:.0f} MiB, 60k/10k = {rss['60k'] / rss['10k']:.3f}")
    out["mlp"] = {"seconds": results, "bytes": sizes, "rss": rss}


# ---------------------------------------------------------------------------- ResNet-18
def digits_32(root: str, n: int):
    """``n`` MNIST digits as 32 x 32 RGB images (padded by 2, repeated on 3 channels)."""
    import torch

    images, _ = load_mnist_uint8(root)
    x = images[:n].to(torch.float32).div_(255.0)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2))
    return ((x - 0.1307) / 0.3081).unsqueeze(1).repeat(1, 3, 1, 1)


def part_resnet(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> None:
    import torch
    import torchvision
    from nnsig_torch import TorchAdapter

    from nnsig_core import capture

    blocks = ["layer1", "layer2", "layer3", "layer4"]
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = digits_32(args.data_root, 256 * args.resnet_batches)
    chunks = list(torch.split(x, 256))
    labels = torch.zeros(len(x), dtype=torch.int64)

    def forward() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for b in chunks:
                model(b)
        return time.perf_counter() - t

    def run_only() -> float:
        adapter = TorchAdapter(model)  # the default: the four block outputs, mean-pooled
        assert adapter.layer_names == blocks
        t = time.perf_counter()
        for b in chunks:
            adapter.run(b)
        return time.perf_counter() - t

    def capture_store() -> float:
        path = work / "resnet.zarr"
        shutil.rmtree(path, ignore_errors=True)
        t = time.perf_counter()
        capture(TorchAdapter(model), (x, labels), path, batch_size=256, progress=False)
        return time.perf_counter() - t

    measures = {"(a) forward": forward, "(b) nnsig TorchAdapter.run": run_only,
                "(c) nnsig capture to a store": capture_store}
    notes = {}
    try:
        import torchlens as tl
    except ImportError:
        tl = None
        print("TorchLens is not installed: pip install torchlens to compare with it.")
    if tl is not None:
        selected = tl.module(blocks[0])
        for b in blocks[1:]:
            selected = selected | tl.module(b)

        def torchlens_blocks() -> float:
            t = time.perf_counter()
            for b in chunks:
                tl.trace(model, b, save=selected)
            return time.perf_counter() - t

        def torchlens_all() -> float:
            t = time.perf_counter()
            for b in chunks:
                tl.trace(model, b)
            return time.perf_counter() - t

        measures["(d) TorchLens, the 4 block outputs"] = torchlens_blocks
        measures["(e) TorchLens, every layer (default)"] = torchlens_all
        version = getattr(tl, "__version__", None)
        if version is None:
            from importlib.metadata import version as pkg_version

            version = pkg_version("torchlens")
        notes["(d) TorchLens, the 4 block outputs"] = f"torchlens {version}"
    forward()  # warm-up
    results = interleaved(measures, args.repeats)
    print(f"\nResNet-18, {len(x)} images 32 x 32, batches of 256, block outputs mean-pooled")
    table("ResNet-18: ratio to (a) forward", results, "(a) forward", notes=notes)
    targets("(a) forward", {"(c) nnsig capture to a store": 1.3})
    if tl is not None:  # the same values
        trace = tl.trace(model, chunks[0], save=selected)
        acts = TorchAdapter(model).run(chunks[0])[1]
        diff = max(float((trace.modules[b].out.float().mean((2, 3)) - torch.from_numpy(acts[b]))
                         .abs().max()) for b in blocks)
        print(f"largest difference between nnsig's and TorchLens' block outputs: {diff:.2e}")
    out["resnet"] = {"seconds": results}


# ---------------------------------------------------------------------------- fixed cost
def part_fixed(args: argparse.Namespace, work: Path, out: dict[str, Any]) -> None:
    import torch
    import torchvision
    import zarr
    from nnsig_torch import TorchAdapter
    from torch import nn

    from nnsig_core import capture
    from nnsig_core.store.create import create_arrays
    from nnsig_core.store.format import layer_key, split_array_specs

    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None, num_classes=10).eval()
    layers = [nn.Conv2d] + [f"features.denseblock{i}" for i in range(1, 5)] + [
        f"features.transition{i}" for i in range(1, 4)]
    x = digits_32(args.data_root, 48)
    labels = torch.zeros(len(x), dtype=torch.int64)
    chunks = list(torch.split(x, 16))
    adapter = TorchAdapter(model, layers=layers)
    acts = adapter.run(chunks[0])[1]
    n_layers = len(acts)
    specs = split_array_specs([(k, layer_key(k), v.shape[1:]) for k, v in acts.items()],
                              10, len(x), 16, np.float32, None)

    def forward() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for b in chunks:
                model(b)
        return time.perf_counter() - t

    def run_only() -> float:
        a = TorchAdapter(model, layers=layers)
        t = time.perf_counter()
        for b in chunks:
            a.run(b)
        return time.perf_counter() - t

    def capture_store() -> float:
        path = work / "densenet.zarr"
        shutil.rmtree(path, ignore_errors=True)
        t = time.perf_counter()
        capture(TorchAdapter(model, layers=layers), (x, labels), path, batch_size=16,
                progress=False)
        return time.perf_counter() - t

    def group() -> Any:
        path = work / "arrays.zarr"
        shutil.rmtree(path, ignore_errors=True)
        return zarr.open_group(str(path), mode="w", zarr_format=3).create_group("train")

    def create_once() -> float:
        g = group()
        t = time.perf_counter()
        create_arrays(g, specs)
        return time.perf_counter() - t

    def create_one_by_one() -> float:
        g = group()
        t = time.perf_counter()
        for key, spec in specs.items():
            g.create_array(key, **spec)
        return time.perf_counter() - t

    forward()
    results = interleaved({
        "(a) forward": forward, "(b) TorchAdapter.run": run_only,
        "(c) capture into a new store": capture_store,
        f"(d) create the {len(specs)} arrays, at once": create_once,
        f"(e) create the {len(specs)} arrays, one by one": create_one_by_one,
    }, args.repeats)
    print(f"\nDenseNet-121, {n_layers} captured layers, 3 batches of 16 images 32 x 32")
    table("Fixed cost: ratio to (a) forward", results, "(a) forward")
    out["fixed"] = {"seconds": results, "layers": n_layers}


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("NNSIG_DATA", str(here.parent / "shared" / "data")))
    p.add_argument("--parts", nargs="+", choices=["mlp", "resnet", "fixed"],
                   default=["mlp", "resnet", "fixed"], help="which parts to run (default: all)")
    p.add_argument("--batch-size", type=int, default=1000, help="MLP batch size (default: 1000)")
    p.add_argument("--repeats", type=int, default=3, help="best of N for each timing")
    p.add_argument("--resnet-batches", type=int, default=4, help="ResNet-18 batches of 256")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    p.add_argument("--no-codecs", action="store_true", help="MLP: skip the codec variants and CSV")
    p.add_argument("--no-rss", action="store_true", help="MLP: skip the peak-RSS subprocesses")
    p.add_argument("--workdir", default=None, help="where stores are written (default: a temp dir)")
    p.add_argument("--tmpfs", default="/dev/shm",
                   help="MLP: a memory file system for the capture to tmpfs row ('' to skip)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nnsig-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "cores": os.cpu_count()}
    parts = {"mlp": part_mlp, "resnet": part_resnet, "fixed": part_fixed}
    for name in args.parts:
        parts[name](args, work, out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
