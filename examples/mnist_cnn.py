"""MNIST with a small convnet: train it, capture pooled conv maps and the dense layer, report.

The network: three convolution blocks (conv, batch norm, ReLU, max pool:
16 x 14 x 14, 32 x 7 x 7, 64 x 3 x 3) then a dense hidden layer of 128 ReLU
units and the 10-way output. Each block's feature map is averaged over its
positions by the adapter (``pool="auto"``: one value per channel, 16, 32 and 64
features), the dense layer is kept as it is; the train and test splits go
into one Zarr store, a SignatureAnalysis clusters each layer on the correctly
classified training samples, the diagnostic scores are computed, and a
static report is written.

    python examples/mnist_cnn.py                       # all ten digits
    python examples/mnist_cnn.py --train-classes 0-4   # digits 5-9 unseen in training
    NNSIG_DATA=../shared/data python examples/mnist_cnn.py

Without ``layers=``, the adapter would pick the three block outputs
(``features.0``, ``features.1``, ``features.2``: the convnet rule of
``nnsig_torch``'s default selection); the dense layer is added here because it
is where the classes separate. MNIST is read with torchvision from
``--data-root`` (no download when the files are there); the trained weights are
cached next to the store, so a rerun skips training.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger("nnsig.examples.mnist_cnn")

DEFAULT_ROOT = Path.home() / ".cache" / "nnsig" / "data"
MEAN, STD = 0.1307, 0.3081
LAYERS = ["features.0", "features.1", "features.2", "classifier.2"]


def _mnist_helpers():
    """The data helpers of ``examples/mnist_torch.py`` (loading, class selection, nnsig command)."""
    here = Path(__file__).resolve().parent / "mnist_torch.py"
    spec = importlib.util.spec_from_file_location("_nnsig_example_mnist_torch", here)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def normalise(images):
    """uint8 (n, 28, 28) -> float32 (n, 1, 28, 28), standardised."""
    import torch

    return images.to(torch.float32).div_(255.0).sub_(MEAN).div_(STD).unsqueeze(1)


class Batches:
    """(images, labels, source positions) batches, normalised per batch."""

    def __init__(self, images, labels, index, batch_size: int) -> None:
        self.images, self.labels, self.index, self.batch_size = images, labels, index, batch_size
        self.dataset = range(len(images))  # lets capture() know the length

    def __iter__(self) -> Iterator:
        for lo in range(0, len(self.images), self.batch_size):
            hi = lo + self.batch_size
            yield normalise(self.images[lo:hi]), self.labels[lo:hi], self.index[lo:hi]

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


def small_cnn():
    """Three conv blocks (16, 32, 64 channels) and a 128-unit dense layer."""
    from torch import nn

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(block(1, 16), block(16, 32), block(32, 64))
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 3 * 3, 128),
                                            nn.ReLU(), nn.Linear(128, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    return SmallCNN()


def train(model, images, labels, epochs: int, batch_size: int, lr: float, seed: int,
          progress: bool = True) -> None:
    import torch
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n = len(images)
    steps = epochs * -(-n // batch_size)
    with tqdm(total=steps, desc="train", unit="step", dynamic_ncols=True,
              disable=None if progress else True) as bar:
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
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            pred = model(normalise(images[lo : lo + batch_size])).argmax(1)
            correct += int((pred == labels[lo : lo + batch_size]).sum())
    return correct / max(len(images), 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train a small MNIST convnet, capture its pooled conv maps and dense layer, "
        "analyse and report.",
    )
    p.add_argument("--data-root", type=Path,
                   default=Path(os.environ.get("NNSIG_DATA") or DEFAULT_ROOT),
                   help="directory holding MNIST/raw (default: $NNSIG_DATA or ~/.cache/nnsig/data)")
    p.add_argument("--out", type=Path, default=Path("runs/mnist_cnn"),
                   help="output directory: store.zarr, weights, report/ (default: runs/mnist_cnn)")
    p.add_argument("--train-classes", default="0-9", help="classes to train on (default: 0-9)")
    p.add_argument("--test-classes", default="0-9", help="classes to test on (default: 0-9)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="adam learning rate (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--clusters", type=int, default=10, help="clusters per layer (default: 10)")
    p.add_argument("--max-train", type=int, default=None, help="use at most N training samples")
    p.add_argument("--max-test", type=int, default=None, help="use at most N test samples")
    p.add_argument("--retrain", action="store_true", help="ignore cached weights")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch
    from nnsig_torch import TorchAdapter

    from nnsig_core import SignatureAnalysis, capture, open_store, write_report
    from nnsig_core.diagnostics import SignatureScorer, signature_scores

    helpers = _mnist_helpers()
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    train_classes = helpers.parse_classes(args.train_classes)
    test_classes = helpers.parse_classes(args.test_classes)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    train_x, train_y = helpers.load_mnist(args.data_root, train=True)
    test_x, test_y = helpers.load_mnist(args.data_root, train=False)
    train_x, train_y, train_idx = helpers.select(train_x, train_y, train_classes, args.max_train)
    test_x, test_y, test_idx = helpers.select(test_x, test_y, test_classes, args.max_test)
    log.info("MNIST: %d training samples of classes %s, %d test samples of classes %s",
             len(train_x), args.train_classes, len(test_x), args.test_classes)

    settings = {k: getattr(args, k) for k in
                ("train_classes", "epochs", "batch_size", "lr", "seed", "max_train")}
    tag = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    weights = out / f"cnn-{tag}.pt"
    model = small_cnn()
    if weights.exists() and not args.retrain:
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
        log.info("Loaded cached weights %s (pass --retrain to train again)", weights)
    else:
        train(model, train_x, train_y, args.epochs, args.batch_size, args.lr, args.seed,
              progress=not args.quiet)
        torch.save(model.state_dict(), weights)
    test_acc = accuracy(model, test_x, test_y)
    log.info("Test accuracy: %.4f", test_acc)

    # -- capture: the conv blocks averaged over their positions, the dense layer as it is
    store_path = out / "store.zarr"
    adapter = TorchAdapter(model, layers=LAYERS)  # pool="auto": (C, H, W) maps -> (C,)
    names = [str(c) for c in range(10)]
    for split, (x, y, idx) in {"train": (train_x, train_y, train_idx),
                               "test": (test_x, test_y, test_idx)}.items():
        capture(adapter, Batches(x, y, idx, 1000), store_path, split=split, class_names=names,
                keep_inputs=True, overwrite=True, progress=not args.quiet)

    # -- signatures, diagnostics, report
    analysis = SignatureAnalysis(n_clusters=args.clusters, random_state=args.seed,
                                 progress=not args.quiet)
    store = open_store(store_path, mode="r+")
    analysis.fit(store, split="train")
    analysis.save(store, name="default", overwrite=True)
    scorer = SignatureScorer().fit(analysis, store)
    scores = {split: signature_scores(analysis, store, split, scorer=scorer, save=True)["combined"]
              for split in ("train", "test")}
    report = write_report(analysis, store, out / "report", splits=("train", "test"),
                          title=f"MNIST convnet, trained on {args.train_classes}", scores=scores)

    summary = analysis.summary(store, "test")
    print()
    print(f"test accuracy      {test_acc:.4f}")
    for info in store.layer_info("train"):
        layer = next(x for x in summary["layers"] if x["name"] == info["name"])
        print(f"layer {info['name']:13s} {str(tuple(info['source_shape'])):13s} -> "
              f"{str(tuple(info['shape'])):7s} ({info['pool']:4s})  purity {layer['purity']:.3f}  "
              f"entropy {layer['entropy']:.3f} bits")
    print(f"distinct test signatures: {summary['n_signatures']}")
    print("most frequent test signatures (input class, signature, output class, count):")
    for row in analysis.signatures(store, "test").table().to_records()[:5]:
        path = " -> ".join(map(str, row["signature"]))
        print(f"  {row['input_class']}   {path}   {row['output_class']}   {row['count']}")
    print(f"\nreport: {report}")
    print(f"open it: {helpers.nnsig_command()} view {report.parent}   (or open {report} in a browser)")
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    from tqdm.contrib.logging import logging_redirect_tqdm

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with logging_redirect_tqdm():  # log lines above the progress bars, not through them
        sys.exit(main())
