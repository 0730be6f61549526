"""Probe benchmark: what capturing a probe set every epoch adds to training.

The MNIST CNN of ``examples/mnist_cnn.py`` (three conv blocks and a dense layer)
is trained on the 60,000 training images (batches of 128, Adam) for
``--epochs`` epochs; after each epoch ``TorchProbe.capture`` writes the first
``--probe`` test images (2,000 by default) through the four layers of the
example into a new store on disk. The time of each epoch and of each capture
are measured in the same process, one after the other, so the machine's load
hits them alike; the ratio is the probe's cost per epoch (the target: at most
10%).

    python benchmarks/bench_probe.py --data-root ../shared/data [--epochs 2] [--probe 2000]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE.parent / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("NNSIG_DATA") or
                                                          Path.home() / ".cache/nnsig/data"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--probe", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)

    import torch
    from nnsig_torch import TorchProbe

    torch.manual_seed(0)
    cnn, helpers = _example("mnist_cnn"), _example("mnist_torch")
    train_x, train_y = helpers.load_mnist(args.data_root, train=True)
    test_x, test_y = helpers.load_mnist(args.data_root, train=False)
    model = cnn.small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    probe_x, probe_y = cnn.normalise(test_x[: args.probe]), test_y[: args.probe]
    epochs, probes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        probe = TorchProbe((probe_x, probe_y), Path(tmp) / "timeline.zarr", layers=cnn.LAYERS,
                           keep_inputs=True)
        probe.capture(model, step=0, epoch=0)  # the first capture creates the store
        step = 0
        for epoch in range(args.epochs):
            model.train()
            order = torch.randperm(len(train_x))
            t0 = time.perf_counter()
            for lo in range(0, len(train_x), args.batch_size):
                idx = order[lo : lo + args.batch_size]
                loss = torch.nn.functional.cross_entropy(model(cnn.normalise(train_x[idx])),
                                                         train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            epochs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            probe.capture(model, step=step, epoch=epoch + 1)
            probes.append(time.perf_counter() - t0)
            print(f"epoch {epoch + 1}: {epochs[-1]:.1f} s, probe of {args.probe} samples: "
                  f"{probes[-1]:.2f} s ({100 * probes[-1] / epochs[-1]:.1f}% of the epoch)",
                  flush=True)
    e, q = statistics.median(epochs), statistics.median(probes)
    print(f"median: epoch {e:.1f} s, probe {q:.2f} s: {100 * q / e:.1f}% of an epoch "
          f"(torch threads: {torch.get_num_threads()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
