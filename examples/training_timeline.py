"""Watch an MNIST convnet learn: a probe set captured at checkpoints, a timeline report.

The network of ``examples/mnist_cnn.py`` (three conv blocks averaged per
channel, then a 128-unit dense layer) is trained with Adam; a ``TorchProbe``
captures the same 2,000 test images through its four layers before training
and at ``--checkpoints - 1`` more steps, spaced geometrically (the network
changes fastest at the start), into one store, one split per checkpoint with
its step, epoch and the weights' fingerprint. A ``Timeline`` then analyses
every checkpoint and matches its clusters to the previous one's, and the
report shows it: a slider over the checkpoints, the flows at each, the
accuracy and the score over time, where each digit becomes separable, the
images that change path or outcome.

    python examples/training_timeline.py                      # about 10 checkpoints
    NNSIG_DATA=../shared/data python examples/training_timeline.py --epochs 2

It ends with the path of the report, what the probe cost, and when and where
each digit became separable.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("nnsig.examples.training_timeline")

DEFAULT_ROOT = Path.home() / ".cache" / "nnsig" / "data"


def _example(name: str):
    here = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_nnsig_example_{name}", here)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def checkpoint_steps(total: int, n: int) -> list[int]:
    """``n`` checkpoint steps from 0 to ``total``: 0, then geometrically spaced."""
    if n < 2 or total < 1:
        return [0]
    steps = np.unique(np.round(np.geomspace(1, total, n - 1)).astype(int))
    return [0, *[int(s) for s in steps]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path,
                   default=Path(os.environ.get("NNSIG_DATA") or DEFAULT_ROOT),
                   help="directory holding MNIST/raw (default: $NNSIG_DATA or ~/.cache/nnsig/data)")
    p.add_argument("--out", type=Path, default=Path("runs/training_timeline"),
                   help="output directory: timeline.zarr, report/ (default: runs/training_timeline)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--max-train", type=int, default=12000,
                   help="training images used (default: 12000)")
    p.add_argument("--probe", type=int, default=2000, help="probe images (default: 2000)")
    p.add_argument("--checkpoints", type=int, default=10, help="checkpoints (default: 10)")
    p.add_argument("--clusters", type=int, default=10, help="clusters per layer (default: 10)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from nnsig_torch import TorchProbe

    from nnsig_core.analysis.timeline import Timeline
    from nnsig_core.report import write_report_data
    from nnsig_core.report.timeline import build_timeline_data

    t0 = time.perf_counter()
    cnn, helpers = _example("mnist_cnn"), _example("mnist_torch")
    torch.manual_seed(args.seed)
    train_x, train_y = helpers.load_mnist(args.data_root, train=True)
    test_x, test_y = helpers.load_mnist(args.data_root, train=False)
    train_x, train_y = train_x[: args.max_train], train_y[: args.max_train]
    per_epoch = -(-len(train_x) // args.batch_size)
    total = args.epochs * per_epoch
    due = set(checkpoint_steps(total, args.checkpoints))

    args.out.mkdir(parents=True, exist_ok=True)
    store_path = args.out / "timeline.zarr"
    shutil.rmtree(store_path, ignore_errors=True)  # a new run, a new timeline
    probe = TorchProbe((cnn.normalise(test_x[: args.probe]), test_y[: args.probe]), store_path,
                       layers=cnn.LAYERS, class_names=[str(d) for d in range(10)],
                       keep_inputs=True)
    model = cnn.small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    step, train_time = 0, 0.0
    probe.capture(model, step=0, epoch=0.0)
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=g)
        for lo in range(0, len(train_x), args.batch_size):
            t1 = time.perf_counter()
            idx = order[lo : lo + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(cnn.normalise(train_x[idx])), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            train_time += time.perf_counter() - t1
            if step in due:
                probe.capture(model, step=step, epoch=round(step / per_epoch, 3), loss=loss.item())
    log.info("trained %d steps in %.1f s; %d checkpoints", step, train_time, len(probe.timings))

    timeline = Timeline(n_clusters=args.clusters, random_state=args.seed).fit(store_path)
    data = build_timeline_data(timeline, store_path, title="MNIST convnet: training timeline")
    report = write_report_data(data, args.out / "report")

    # -- what the timeline shows, in words
    cps = data["timeline"]["checkpoints"]
    layers = timeline.layers_
    print()
    print(f"{'checkpoint':12s} {'step':>6s}  accuracy  purity per layer ({', '.join(layers)})")
    for cp in cps:
        print(f"{cp['label']:12s} {cp['step']:6d}  {cp['accuracy']:.3f}     "
              + "  ".join(f"{p:.2f}" for p in cp["purity"]))
    print("where each digit first becomes separable (its class purity >= 0.9 in a layer):")
    for c in range(10):
        first = next(((cp, cp["separable"][c]) for cp in cps
                      if cp["separable"][c] is not None and cp["separable"][c] >= 0), None)
        where = "never" if first is None else \
            f"{first[0]['label']} (step {first[0]['step']}) at {layers[first[1]]}"
        print(f"  digit {c}: {where}")
    per_probe = float(np.median(probe.timings))
    print(f"probe: {len(probe.timings)} captures of {args.probe} images, median {per_probe:.2f} s "
          f"({100 * per_probe / max(train_time / args.epochs, 1e-9):.1f}% of an epoch of "
          f"{train_time / args.epochs:.1f} s)")
    print(f"\nreport: {report}")
    print(f"open it: {helpers.nnsig_command()} view {report.parent}   (or open {report} in a browser)")
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
