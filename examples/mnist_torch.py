"""MNIST end to end with PyTorch: train the prototype's MLP, capture, analyse, report.

The prototype's network (784-512-512-512-10, ReLU, adam) is trained on the
chosen training classes (5,000 training images held out as a validation
split); its three hidden ReLU layers are captured for the train, val and
test splits into one Zarr store; a SignatureAnalysis clusters each layer (10
clusters) on the correctly classified training samples; the diagnostic scores
are tuned on the validation split, whose held-out part calibrates their
conformal threshold; and a static report is written.

    python examples/mnist_torch.py                       # all ten digits
    python examples/mnist_torch.py --train-classes 0-4   # digits 5-9 unseen in training
    NNSIG_DATA=../shared/data python examples/mnist_torch.py   # MNIST already on disk

MNIST's IDX files already under ``root/MNIST/raw`` (torchvision's layout) are read
as they are (no network needed); otherwise ``torchvision.datasets.MNIST(root,
download=True)`` downloads them there.
The trained weights are cached next to the store, so a rerun skips training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger("nnsig.examples.mnist")

DEFAULT_ROOT = Path.home() / ".cache" / "nnsig" / "data"
MEAN, STD = 0.1307, 0.3081


# ---------------------------------------------------------------------------- data
def parse_classes(spec: str) -> list[int]:
    """``"0-4"`` -> [0..4]; ``"0,3,7"`` -> [0, 3, 7]."""
    from nnsig_core.cli.commands import parse_classes as parse

    classes = parse(spec)
    assert classes is not None
    bad = [c for c in classes if not 0 <= c <= 9]
    if bad:
        raise SystemExit(f"mnist_torch: error: MNIST classes are 0-9, got {bad}")
    return classes


def read_idx(path: Path):
    """One uncompressed IDX file of unsigned bytes (MNIST's format) as a uint8 array."""
    import numpy as np

    data = path.read_bytes()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise SystemExit(f"mnist_torch: error: {path} is not an IDX file of unsigned bytes; "
                         "delete it to download MNIST again.")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    pixels = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if pixels.size != int(np.prod(shape)):
        raise SystemExit(f"mnist_torch: error: {path} is truncated; delete it to download "
                         "MNIST again.")
    return pixels.reshape(shape)


def load_mnist(root: Path, train: bool):
    """MNIST as uint8 images (n, 28, 28) and int64 labels: the IDX files under
    ``root/MNIST/raw`` read as they are, or downloaded there by torchvision."""
    import torch

    prefix = "train" if train else "t10k"
    raw = root / "MNIST" / "raw"
    files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    if all(f.is_file() for f in files):
        # Read here: importing torchvision only to parse two files costs two seconds.
        images, labels = (torch.from_numpy(read_idx(f).copy()) for f in files)
        return images, labels.to(torch.int64)
    import torchvision

    try:
        ds = torchvision.datasets.MNIST(str(root), train=train, download=True)
    except Exception as exc:  # no network, or a broken partial download
        raise SystemExit(
            f"mnist_torch: error: MNIST is not under {root}/MNIST/raw and could not be "
            f"downloaded ({type(exc).__name__}: {exc}). Put the four IDX files "
            "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            f"t10k-labels-idx1-ubyte) in {root}/MNIST/raw, or pass --data-root / set NNSIG_DATA."
        ) from None
    return ds.data, ds.targets


def select(images, labels, classes: Sequence[int], limit: int | None):
    """Rows of the chosen classes (source positions kept), at most ``limit`` of them."""
    import torch

    keep = torch.isin(labels, torch.tensor(list(classes)))
    index = torch.nonzero(keep).flatten()
    if limit is not None:
        index = index[:limit]
    return images[index], labels[index], index


def normalise(images):
    import torch

    return images.to(torch.float32).div_(255.0).sub_(MEAN).div_(STD).flatten(1)


class Batches:
    """(inputs, labels, source positions) batches over uint8 images, normalised per batch."""

    def __init__(self, images, labels, index, batch_size: int) -> None:
        self.images, self.labels, self.index, self.batch_size = images, labels, index, batch_size
        self.dataset = range(len(images))  # lets capture() know the length

    def __iter__(self) -> Iterator:
        for lo in range(0, len(self.images), self.batch_size):
            hi = lo + self.batch_size
            yield normalise(self.images[lo:hi]), self.labels[lo:hi], self.index[lo:hi]

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


# ---------------------------------------------------------------------------- model
def prototype_mlp():
    """784-512-512-512-10 with ReLU: the prototype's network."""
    from torch import nn

    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(784, 512)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(512, 512)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(512, 512)), ("relu3", nn.ReLU()),
        ("out", nn.Linear(512, 10)),
    ]))


def train(model, images, labels, epochs: int, batch_size: int, lr: float, seed: int,
          progress: bool = True) -> None:
    import torch
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = len(images)
    steps = epochs * -(-n // batch_size)
    with tqdm(total=steps, desc="train", unit="step", dynamic_ncols=True, disable=None if progress else True) as bar:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=g)
            for lo in range(0, n, batch_size):
                idx = order[lo : lo + batch_size]
                loss = torch.nn.functional.cross_entropy(model(normalise(images[idx])), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
    model.eval()


def accuracy(model, images, labels, batch_size: int = 2000) -> float:
    import torch

    correct = 0
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            pred = model(normalise(images[lo : lo + batch_size])).argmax(1)
            correct += int((pred == labels[lo : lo + batch_size]).sum())
    return correct / max(len(images), 1)


def nnsig_command() -> str:
    """How to call ``nnsig`` from here: plain when on PATH, else the venv's script."""
    import shutil

    if shutil.which("nnsig"):
        return "nnsig"
    script = Path(sys.executable).parent / "nnsig"
    if script.exists():
        try:
            return str(script.relative_to(Path.cwd()))
        except ValueError:
            return str(script)
    return "python -m nnsig_core"


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train the prototype's MNIST MLP, capture its hidden layers, analyse and report.",
    )
    p.add_argument("--data-root", type=Path,
                   default=Path(os.environ.get("NNSIG_DATA") or DEFAULT_ROOT),
                   help="directory holding MNIST/raw (default: $NNSIG_DATA or ~/.cache/nnsig/data)")
    p.add_argument("--out", type=Path, default=Path("runs/mnist_torch"),
                   help="output directory: store.zarr, model weights, report/ (default: runs/mnist_torch)")
    p.add_argument("--train-classes", default="0-9", help="classes to train on (default: 0-9)")
    p.add_argument("--test-classes", default="0-9", help="classes to test on (default: 0-9)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="adam learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--clusters", type=int, default=10, help="clusters per layer (default: 10)")
    p.add_argument("--discretize", default=None, metavar="STRATEGY[:BINS]",
                   help="discretize before clustering, e.g. uniform:10 (default: none)")
    p.add_argument("--max-train", type=int, default=None, help="use at most N training samples")
    p.add_argument("--max-test", type=int, default=None, help="use at most N test samples")
    p.add_argument("--val", type=int, default=5000,
                   help="training images held out as the validation split (default: 5000)")
    p.add_argument("--retrain", action="store_true", help="ignore cached weights")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch
    from nnsig_torch import TorchAdapter

    from nnsig_core import SignatureAnalysis, capture, open_store, write_report

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    train_classes = parse_classes(args.train_classes)
    test_classes = parse_classes(args.test_classes)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    train_x, train_y = load_mnist(args.data_root, train=True)
    test_x, test_y = load_mnist(args.data_root, train=False)
    train_x, train_y, train_idx = select(train_x, train_y, train_classes, args.max_train)
    test_x, test_y, test_idx = select(test_x, test_y, test_classes, args.max_test)
    # A validation split held out of training (the last --val training images): it tunes the
    # diagnostic score and calibrates its threshold, on inputs the model never saw.
    n_val = min(max(int(args.val), 0), len(train_x) // 2)
    cut = len(train_x) - n_val
    val_x, val_y, val_idx = train_x[cut:], train_y[cut:], train_idx[cut:]
    train_x, train_y, train_idx = train_x[:cut], train_y[:cut], train_idx[:cut]
    log.info("MNIST: %d training samples of classes %s (and %d held out for validation), "
             "%d test samples of classes %s", len(train_x), args.train_classes, n_val,
             len(test_x), args.test_classes)

    # -- train, or reuse the weights cached for exactly these settings
    settings = {k: getattr(args, k) for k in
                ("train_classes", "epochs", "batch_size", "lr", "seed", "max_train", "val")}
    tag = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    weights = out / f"mlp-{tag}.pt"
    model = prototype_mlp()
    if weights.exists() and not args.retrain:
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
        log.info("Loaded cached weights %s (pass --retrain to train again)", weights)
    else:
        train(model, train_x, train_y, args.epochs, args.batch_size, args.lr, args.seed,
              progress=not args.quiet)
        torch.save(model.state_dict(), weights)
    test_acc = accuracy(model, test_x, test_y)
    known = torch.isin(test_y, torch.tensor(train_classes))
    known_acc = accuracy(model, test_x[known], test_y[known]) if bool(known.any()) else float("nan")
    log.info("Test accuracy: %.4f (on trained classes: %.4f)", test_acc, known_acc)

    # -- capture the three hidden ReLU layers for train and test, into one store
    store_path = out / "store.zarr"
    adapter = TorchAdapter(model, layers=torch.nn.ReLU)
    names = [str(c) for c in range(10)]
    progress = not args.quiet
    store = None
    # Captured in this order, so the report (fit split first, then capture order) opens on test.
    splits = {"train": (train_x, train_y, train_idx), "test": (test_x, test_y, test_idx),
              "val": (val_x, val_y, val_idx)}
    for split, (x, y, idx) in splits.items():
        if split == "val" and not len(x):
            continue
        store = capture(adapter, Batches(x, y, idx, 1000), store_path, split=split,
                        class_names=names, keep_inputs=True, overwrite=True, progress=progress)
    assert store is not None

    # -- signatures, diagnostics, report
    from nnsig_core.analysis import parse_discretizer_spec

    analysis = SignatureAnalysis(
        n_clusters=args.clusters,
        discretizer=parse_discretizer_spec(args.discretize) if args.discretize else None,
        random_state=args.seed,
        progress=progress,
    )
    analysis.fit(store, split="train")
    rw = open_store(store_path, mode="r+")
    analysis.save(rw, name="default", overwrite=True)
    # Per-sample suspicion scores, saved with the analysis and its scorer: tuned on the
    # validation split, whose held-out part calibrates the conformal threshold the report
    # shows (at most 5% of correctly classified inputs like it flagged). The report shows the
    # saved scores: the same report as `nnsig report`.
    from nnsig_core.diagnostics import signature_scores

    # The held-out splits are scored (with val, when there is one: signature_scores scores
    # and saves it too); scoring the training split, each sample leave-one-out against the
    # 54,000 others, would cost more than everything else here.
    signature_scores(analysis, rw, "test", validation_split="val" if n_val else None,
                     save=True)
    report = write_report(analysis, rw, out / "report",
                          title=f"MNIST MLP, trained on {args.train_classes}")

    # -- summary
    summary = analysis.summary(rw, "test")
    print()
    print(f"test accuracy      {test_acc:.4f}" + (
        f"  (trained classes {known_acc:.4f})" if len(train_classes) < 10 else ""))
    for layer in summary["layers"]:
        print(f"layer {layer['name']:8s}  purity {layer['purity']:.3f}  "
              f"entropy {layer['entropy']:.3f} bits  clusters {layer['n_clusters']}")
    print(f"distinct test signatures: {summary['n_signatures']}")
    table = analysis.signatures(rw, "test").table()
    print("most frequent test signatures (input class, signature, output class, count):")
    for row in table.to_records()[:5]:
        path = " -> ".join(map(str, row["signature"]))
        print(f"  {row['input_class']}   {path}   {row['output_class']}   {row['count']}")
    print(f"\nreport: {report}")
    print(f"open it: {nnsig_command()} view {report.parent}   (or open {report} in a browser)")
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    from tqdm.contrib.logging import logging_redirect_tqdm

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with logging_redirect_tqdm():  # log lines above the progress bars, not through them
        sys.exit(main())
