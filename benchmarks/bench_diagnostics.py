"""Diagnostics benchmark: signature scores vs baselines on MNIST error and novelty detection.

For each seed, two models (the prototype's MLP, 784-512-512-512-n ReLU, Adam,
2 epochs, batch 128, inputs normalised with mean 0.1307 and std 0.3081) are
trained with torch on the MNIST training set minus a held-out validation
split of known classes:

``all10``  trained on the ten digits. Task A (error detection) on the
           10,000 test images.
``0-4``    trained on digits 0-4 only (5 outputs). Tasks A, B (novelty: test
           digits 5-9 are positives) and C (both) on the 10,000 test images.

Train, validation (5,000 known-class samples not used for training) and test
are captured with ``nnsig_torch.TorchAdapter(model, layers=torch.nn.ReLU)``;
a ``SignatureAnalysis`` is fitted on the correctly classified training
samples; the signature scores' combination is tuned on the validation split's
error-detection task only (the API refuses a split with novel classes); the
baselines (MSP, energy, Mahalanobis, kNN, activation patterns; last hidden
layer) are fitted on the same training samples. Metrics: AUROC, AUPR-In,
AUPR-Out, FPR@95TPR with the suspicious samples as positives.

Run from the repository root::

    .venv/bin/python benchmarks/bench_diagnostics.py --out runs/bench_diagnostics.csv
    .venv/bin/python benchmarks/bench_diagnostics.py --quick     # 1 seed, fewer samples
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTINGS = {"all10": tuple(range(10)), "0-4": tuple(range(5))}
MEAN, STD = 0.1307, 0.3081


def load_mnist(root: str):
    import torchvision

    tr = torchvision.datasets.MNIST(root, train=True, download=False)
    te = torchvision.datasets.MNIST(root, train=False, download=False)
    return tr.data, tr.targets, te.data, te.targets


def normalise(images):
    import torch

    return images.to(torch.float32).div(255.0).sub(MEAN).div(STD).reshape(len(images), -1)


def make_mlp(n_out: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, n_out),
    )


def train(model, X, y, epochs: int, batch_size: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for lo in range(0, len(X), batch_size):
            idx = perm[lo : lo + batch_size]
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def run_one(seed: int, setting: str, data, args, work: Path) -> tuple[list[dict], dict]:
    """Train, capture, analyse and evaluate one (seed, setting); returns tidy rows and timings."""
    import torch
    from nnsig_torch import TorchAdapter

    from nnsig_core import capture, open_store
    from nnsig_core.analysis.engine import SignatureAnalysis
    from nnsig_core.diagnostics import Baselines, SignatureScorer, evaluate

    Xtr_all, ytr_all, Xte, yte = data
    known = SETTINGS[setting]
    t: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(np.isin(ytr_all.numpy(), known))
    pool = rng.permutation(pool)
    n_val = args.n_val
    val_idx, train_idx = np.sort(pool[:n_val]), np.sort(pool[n_val:])
    if args.n_train:
        train_idx = np.sort(rng.choice(train_idx, size=min(args.n_train, train_idx.size),
                                       replace=False))
    test_idx = np.arange(len(yte))
    if args.n_test:
        test_idx = np.sort(rng.choice(test_idx, size=min(args.n_test, test_idx.size),
                                      replace=False))
    Xtr, ytr = Xtr_all[train_idx], ytr_all[train_idx]
    Xva, yva = Xtr_all[val_idx], ytr_all[val_idx]
    Xt, yt = Xte[test_idx], yte[test_idx]

    t0 = time.perf_counter()
    model = train(make_mlp(len(known), seed), Xtr, ytr, args.epochs, 128, seed)
    t["train"] = time.perf_counter() - t0

    path = work / f"seed{seed}-{setting}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    adapter = TorchAdapter(model, layers=torch.nn.ReLU)
    for split, X, y in (("train", Xtr, ytr), ("val", Xva, yva), ("test", Xt, yt)):
        capture(adapter, (X, y), path, split=split, batch_size=1000, progress=False)
    t["capture"] = time.perf_counter() - t0
    store = open_store(path, mode="r+")

    t0 = time.perf_counter()
    analysis = SignatureAnalysis(n_clusters=args.clusters, random_state=seed,
                                 progress=False).fit(store, "train", classes=known)
    t["analysis"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scorer = SignatureScorer(method=args.method).fit(analysis, store).calibrate(store, "val")
    scores = scorer.score(store, "test")
    t["signature_scores"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores.update(Baselines.from_analysis(analysis, store, k=args.k).score(store, "test"))
    t["baselines"] = time.perf_counter() - t0

    labels, preds = store.labels("test"), store.predictions("test")
    rows = evaluate(scores, labels, preds, analysis.classes_, as_frame=False)
    acc = float((labels == preds)[np.isin(labels, known)].mean())
    comb = scorer.combiner_.describe()
    chosen = [c for c, w in zip(comb["components"], comb["weights"], strict=True) if w]
    for r in rows:
        r.update(seed=seed, setting=setting)
    info = {"seed": seed, "setting": setting, "test_accuracy_known": acc,
            "n_train": int(len(ytr)), "n_val": int(len(yva)), "n_test": int(len(yt)),
            "combined": "+".join(chosen) if args.method == "rank" else str(comb["weights"]),
            **{f"t_{k}": round(v, 1) for k, v in t.items()}}
    if not args.keep:
        del store
        shutil.rmtree(path, ignore_errors=True)
    return rows, info


def print_table(summary: list[dict], metric: str = "auroc") -> None:
    cols = [("all10", "error"), ("0-4", "error"), ("0-4", "novelty"), ("0-4", "both")]
    scores: list[str] = []
    for r in summary:
        if r["score"] not in scores:
            scores.append(r["score"])
    cell = {(r["score"], r["setting"], r["task"]): r for r in summary if r["metric"] == metric}
    head = f"{'score':22s}" + "".join(f"{s + ' ' + t:>19s}" for s, t in cols)
    print(f"\n{metric.upper()} (mean ± std over seeds; positives = suspicious samples)")
    print(head)
    print("-" * len(head))
    for s in scores:
        line = f"{s:22s}"
        for c in cols:
            r = cell.get((s, *c))
            line += f"{r['mean']:>12.4f} ± {r['std']:.3f}" if r else f"{'-':>19s}"
        print(line)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("NNSIG_DATA",
                                                         str(here.parent / "shared" / "data")))
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 15,000 training / 2,000 validation / 4,000 test samples")
    p.add_argument("--clusters", type=int, default=100, help="clusters per layer")
    p.add_argument("--method", default="rank", choices=["rank", "logistic"],
                   help="combination of the signature scores, tuned on validation errors")
    p.add_argument("--k", type=int, default=50, help="neighbour rank of the kNN baseline")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n-val", type=int, default=5000)
    p.add_argument("--n-train", type=int, default=0, help="cap on training samples (0: all)")
    p.add_argument("--n-test", type=int, default=0, help="cap on test samples (0: all)")
    p.add_argument("--settings", default="all10,0-4")
    p.add_argument("--out", default=None, help="write every (seed, setting, score, task, metric) "
                   "row and the mean ± std summary to this CSV (summary: <out>.summary.csv)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the stores")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = 1
        args.n_train = args.n_train or 15000
        args.n_val = 2000
        args.n_test = args.n_test or 4000
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from nnsig_core.diagnostics import summarize

    torch.set_num_threads(args.threads)
    images, labels, test_images, test_labels = load_mnist(args.data_root)
    data = (normalise(images), labels, normalise(test_images), test_labels)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nnsig-bench-dx-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    rows: list[dict] = []
    infos: list[dict] = []
    t_all = time.perf_counter()
    for seed in range(args.seeds):
        for setting in settings:
            r, info = run_one(seed, setting, data, args, work)
            rows += r
            infos.append(info)
            print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    summary = summarize(rows, by=("setting", "score", "task", "metric"), as_frame=False)
    print_table(summary, "auroc")
    print_table(summary, "fpr95")
    print(f"\n{args.seeds} seed(s), {args.clusters} clusters per layer, combination "
          f"{args.method!r} tuned on validation errors; total {time.perf_counter() - t_all:.0f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["seed", "setting", "score", "task", "metric",
                                              "value", "n_positive", "n_negative"])
            w.writeheader()
            w.writerows(rows)
        summ = out.with_suffix(".summary.csv")
        with open(summ, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["setting", "score", "task", "metric", "mean", "std",
                                              "n"])
            w.writeheader()
            w.writerows(summary)
        print(f"wrote {out} and {summ}")
    if not args.workdir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
