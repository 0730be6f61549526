"""MNIST with a small vision transformer: CLS-level signatures and a token-level view.

The network: each 28 x 28 digit is cut into 16 patches of 7 x 7 pixels, each
patch embedded into 64 dimensions; a learned class token (CLS) is put in front
and position embeddings added, so every image is a sequence of 17 tokens;
four transformer encoder blocks (4 heads, pre-norm) follow, and the head reads
the CLS token after a final layer norm.

One capture records each block's output twice (``pool=("cls", "tokens")``):

* the CLS token of each image (64 features per block): the ``train`` and
  ``test`` splits, one row per image, analysed like any classifier's layers:
  the report ``report/cls``;
* every token of each image, padding-free (17 rows per image): the token row
  spaces ``train.tokens`` and ``test.tokens``, where each row records its
  image and position. An analysis fitted on them clusters tokens, so a path
  says how one token (the CLS token, or the patch at row r, column c) travels
  through the blocks: the report ``report/tokens`` lists the tokens on each
  path and shows each cluster's exemplars as their image with the token's
  patch lit.

    python examples/vit_mnist.py
    NNSIG_DATA=../shared/data python examples/vit_mnist.py --epochs 3

Training (three epochs over the 60,000 digits) took 16 CPU-minutes here, so
about 8 minutes on two free cores, and reached 97.3% test accuracy; the
weights are cached next to the store. The token rows of the whole training
set would be a million rows, so by default the first ``--max-capture``
training images (10,000) are captured.
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

log = logging.getLogger("nnsig.examples.vit_mnist")

DEFAULT_ROOT = Path.home() / ".cache" / "nnsig" / "data"
MEAN, STD = 0.1307, 0.3081
PATCH, GRID = 7, 4  # 4 x 4 patches of 7 x 7 pixels


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


def token_label(position: int, token: int = -1) -> str:
    """``"CLS"`` for position 0, else the patch's row and column: ``"patch r2 c3"``."""
    if position == 0:
        return "CLS"
    r, c = divmod(position - 1, GRID)
    return f"patch r{r} c{c}"


class Batches:
    """(images, labels, source positions) batches, normalised per batch."""

    def __init__(self, images, labels, index, batch_size: int) -> None:
        self.images, self.labels, self.index, self.batch_size = images, labels, index, batch_size
        self.dataset = range(len(images))

    def __iter__(self) -> Iterator:
        for lo in range(0, len(self.images), self.batch_size):
            hi = lo + self.batch_size
            yield normalise(self.images[lo:hi]), self.labels[lo:hi], self.index[lo:hi]

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


def small_vit(dim: int = 64, depth: int = 4, heads: int = 4):
    """A ViT for 28 x 28 digits: 16 patch tokens and a class token, ``depth`` encoder blocks."""
    import torch
    from torch import nn

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = nn.Conv2d(1, dim, PATCH, stride=PATCH)  # (n, dim, 4, 4)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.randn(1, GRID * GRID + 1, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                               activation="gelu", batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 10)

        def forward(self, x):
            tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (n, 16, dim)
            cls = self.cls_token.expand(len(x), -1, -1)
            h = self.encoder(torch.cat([cls, tokens], dim=1) + self.pos_embed)  # (n, 17, dim)
            return self.head(self.norm(h[:, 0]))

    return ViT()


def train(model, images, labels, epochs: int, batch_size: int, lr: float, seed: int,
          progress: bool = True) -> None:
    import torch
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    n = len(images)
    steps = epochs * -(-n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    model.train()
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
                sched.step()
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
        description="Train a small ViT on MNIST; CLS-level and token-level signatures, two reports.",
    )
    p.add_argument("--data-root", type=Path,
                   default=Path(os.environ.get("NNSIG_DATA") or DEFAULT_ROOT),
                   help="directory holding MNIST/raw (default: $NNSIG_DATA or ~/.cache/nnsig/data)")
    p.add_argument("--out", type=Path, default=Path("runs/vit_mnist"),
                   help="output directory: store.zarr, weights, report/ (default: runs/vit_mnist)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--clusters", type=int, default=10, help="clusters per layer (default: 10)")
    p.add_argument("--max-train", type=int, default=None, help="train on at most N samples")
    p.add_argument("--max-capture", type=int, default=10000,
                   help="capture at most N training images (default: 10000; 17 token rows each)")
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
    from nnsig_core.analysis import paths_by_token, tokens_by_path

    helpers = _mnist_helpers()
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    all_classes = list(range(10))
    train_x, train_y = helpers.load_mnist(args.data_root, train=True)
    test_x, test_y = helpers.load_mnist(args.data_root, train=False)
    train_x, train_y, train_idx = helpers.select(train_x, train_y, all_classes, args.max_train)
    test_x, test_y, test_idx = helpers.select(test_x, test_y, all_classes, args.max_test)

    settings = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "seed", "max_train")}
    tag = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    weights = out / f"vit-{tag}.pt"
    model = small_vit()
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

    # -- one capture, two row spaces: the CLS token per image, and every token per image.
    # The default selection finds the four encoder blocks (the residual stream); their
    # layout, (n, 17 tokens, 64), is found from the modules around them.
    adapter = TorchAdapter(model, pool=("cls", "tokens"))
    keep = args.max_capture
    store_path = out / "store.zarr"
    names = [str(c) for c in range(10)]
    for split, (x, y, idx) in {"train": (train_x[:keep], train_y[:keep], train_idx[:keep]),
                               "test": (test_x, test_y, test_idx)}.items():
        capture(adapter, Batches(x, y, idx, 500), store_path, split=split, class_names=names,
                keep_inputs=True, overwrite=True, progress=not args.quiet)
    store = open_store(store_path, mode="r+")

    # -- CLS level: one row per image
    cls = SignatureAnalysis(n_clusters=args.clusters, random_state=args.seed,
                            progress=not args.quiet).fit(store, split="train")
    cls.save(store, name="cls", overwrite=True)
    reports = out / "report"
    cls_report = write_report(cls, store, reports / "cls", splits=("train", "test"),
                              title="MNIST ViT: the CLS token through the blocks")

    # -- token level: one row per token (the CLS token and the 16 patches of every image)
    tok = SignatureAnalysis(n_clusters=args.clusters, random_state=args.seed,
                            progress=not args.quiet).fit(store, split="train.tokens")
    tok.save(store, name="tokens", overwrite=True)
    tok_report = write_report(tok, store, reports / "tokens", splits=("train.tokens", "test.tokens"),
                              title="MNIST ViT: every token through the blocks",
                              token_label=token_label, token_grid=(GRID, GRID, 1))

    # -- summary
    summary = cls.summary(store, "test")
    print()
    print(f"test accuracy      {test_acc:.4f}")
    print("CLS token per image (split test):")
    for layer in summary["layers"]:
        print(f"  layer {layer['name']:18s} purity {layer['purity']:.3f}  "
              f"entropy {layer['entropy']:.3f} bits")
    print(f"  distinct test signatures: {summary['n_signatures']}")
    sigs = tok.signatures(store, "test.tokens")
    print(f"every token (split test.tokens, {sigs.n_samples} tokens of {len(test_x)} images):")
    print("  most frequent token paths, with the tokens on them:")
    for row in tokens_by_path(sigs, store, label=token_label, top=3).to_records()[:5]:
        path = " -> ".join(map(str, row["signature"]))
        print(f"    {path:24s} {row['count']:6d} tokens of {row['inputs']:5d} images: "
              f"{row['tokens']}")
    print("  the usual paths of a few tokens:")
    for row in paths_by_token(sigs, store, label=token_label, top=2).to_records():
        if row["label"] in ("CLS", "patch r0 c0", "patch r1 c1", "patch r2 c2"):
            print(f"    {row['label']:12s} {row['paths']:4d} distinct paths; most often "
                  f"{row['top_paths']}")
    print(f"\nreports: {cls_report}\n         {tok_report}")
    print(f"open them: {helpers.nnsig_command()} view {reports}   (or open {reports}/index.html)")
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    from tqdm.contrib.logging import logging_redirect_tqdm

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with logging_redirect_tqdm():  # log lines above the progress bars, not through them
        sys.exit(main())
