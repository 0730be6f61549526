"""Benchmark: signature analysis read from disk vs scikit-learn KMeans on in-memory arrays.

Trains the prototype's MNIST MLP (784-512-512-512-10, ReLU; one epoch of Adam
by default, a few seconds on CPU) with torch, captures its three hidden ReLU
layers for the 60,000 training and 10,000 test images into a store (or reuses
``--store`` when it already holds both splits), then times, in the same run:

nnsig
    ``SignatureAnalysis(n_clusters=10, n_init=1).fit(store, "train")`` +
    ``transform(store, "test")`` + ``table()``, everything read from the store
    on disk;
baseline
    ``sklearn.cluster.KMeans(n_clusters=10, n_init=1)`` fitted on the same
    three layers (the correctly classified training samples) already in memory.

and prints the ratio nnsig / baseline of the fastest of ``--repeat``
interleaved runs of each (target <= 1.2), the per-layer purity and the number
of distinct test signatures. Usage::

    .venv/bin/python benchmarks/bench_analysis.py [--data-root ../shared/data]
        [--store runs/bench_mnist.zarr] [--repeat 3] [--epochs 1]

``--data-root`` (default ``$NNSIG_DATA`` or ``../shared/data`` relative to
the repository) holds ``MNIST/raw/*-ubyte`` (the torchvision layout).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["net.1", "net.3", "net.5"]


def read_idx(path: Path) -> np.ndarray:
    """Read an (uncompressed or .gz) IDX file of unsigned bytes."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / "MNIST" / "raw"
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        files = {}
        for kind, name in (("x", f"{prefix}-images-idx3-ubyte"), ("y", f"{prefix}-labels-idx1-ubyte")):
            p = raw / name
            if not p.exists() and (raw / (name + ".gz")).exists():
                p = raw / (name + ".gz")
            if not p.exists():
                sys.exit(f"MNIST file {p} not found: pass --data-root (the folder holding MNIST/raw).")
            files[kind] = read_idx(p)
        out[split] = (files["x"], files["y"].astype(np.int64))
    return out


def build_store(store_path: Path, data_root: Path, epochs: int, seed: int) -> None:
    """Train the MLP with torch and capture its hidden ReLU layers into ``store_path``."""
    import torch
    from torch import nn

    from nnsig_core import capture_arrays

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    mnist = load_mnist(data_root)
    xtr = torch.from_numpy(mnist["train"][0].reshape(-1, 784).astype(np.float32) / 255.0)
    ytr = torch.from_numpy(mnist["train"][1])
    # Hidden ReLUs are net.1, net.3, net.5, as the prototype named them.
    model = nn.Sequential()
    model.add_module("net", nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10),
    ))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 128):
            idx = perm[i : i + 128]
            opt.zero_grad()
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    print(f"trained {epochs} epoch(s) in {time.perf_counter() - t0:.1f} s")
    model.eval()
    net = model.net
    for split, (x, y) in mnist.items():
        xs = torch.from_numpy(x.reshape(-1, 784).astype(np.float32) / 255.0)
        acts = {name: np.empty((len(xs), 512), dtype=np.float32) for name in LAYERS}
        logits = np.empty((len(xs), 10), dtype=np.float32)
        with torch.no_grad():
            for i in range(0, len(xs), 5000):
                h = xs[i : i + 5000]
                for j, layer in enumerate(net):
                    h = layer(h)
                    if f"net.{j}" in acts:
                        acts[f"net.{j}"][i : i + 5000] = h.numpy()
                logits[i : i + 5000] = h.numpy()
        capture_arrays(
            activations=acts, outputs=logits, labels=y, store=store_path, split=split,
            model_class="MLP", layer_types={n: "ReLU" for n in LAYERS}, inputs=x,
            class_names=[str(c) for c in range(10)], overwrite=True, progress=False,
        )
        acc = float((logits.argmax(1) == y).mean())
        print(f"captured {split}: {len(xs)} samples, accuracy {acc:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("NNSIG_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--store", type=Path, default=REPO / "runs" / "bench_mnist.zarr",
                        help="store to reuse, or to create when it lacks train/test")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads for both sides (default: all cores)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from nnsig_core import open_store
    from nnsig_core.analysis import SignatureAnalysis

    def ready() -> bool:
        try:
            s = open_store(args.store)
        except Exception:
            return False
        return all(sp in s.splits and s.is_complete(sp) for sp in ("train", "test"))

    if not ready():
        args.store.parent.mkdir(parents=True, exist_ok=True)
        build_store(args.store, args.data_root, args.epochs, args.seed)
    else:
        print(f"reusing {args.store}")

    store = open_store(args.store)
    labels, preds = store.labels("train"), store.predictions("train")
    rows = np.flatnonzero((labels == preds) & (labels >= 0))
    print(f"threads: {args.threads or os.cpu_count()}; "
          f"train: {store.n_samples('train')} samples, {rows.size} correctly classified; "
          f"test: {store.n_samples('test')} samples")
    # Baseline data, read outside the timed region.
    in_memory = {name: np.asarray(store.activations("train", name)[:])[rows] for name in LAYERS}

    def run_baseline() -> tuple[float, float, dict[str, np.ndarray]]:
        t0, c0 = time.perf_counter(), time.process_time()
        out = {}
        for name, X in in_memory.items():
            out[name] = KMeans(n_clusters=args.clusters, n_init=1,
                               random_state=args.seed).fit(X).labels_
        return time.perf_counter() - t0, time.process_time() - c0, out

    def run_nnsig():
        t0, c0 = time.perf_counter(), time.process_time()
        st = open_store(args.store)
        analysis = SignatureAnalysis(n_clusters=args.clusters, n_init=1, random_state=args.seed,
                                     layers=LAYERS, progress=False).fit(st, "train")
        test = analysis.transform(st, "test")
        table = test.table()
        return time.perf_counter() - t0, time.process_time() - c0, analysis, test, table

    from threadpoolctl import threadpool_limits

    base_times, nnsig_times, base_cpu, nnsig_cpu = [], [], [], []
    with threadpool_limits(limits=args.threads):
        for _ in range(args.repeat):  # interleaved, so both sides see the same machine load
            tb, cb, base_labels = run_baseline()
            tn, cn, analysis, test, table = run_nnsig()
            base_times.append(tb)
            nnsig_times.append(tn)
            base_cpu.append(cb)
            nnsig_cpu.append(cn)
    # The fastest run of each side is the least disturbed by other processes on a shared
    # machine; the median and the paired ratios show the spread.
    tb, tn = min(base_times), min(nnsig_times)
    paired = [round(n / b, 2) for n, b in zip(nnsig_times, base_times, strict=False)]

    print()
    print(f"baseline KMeans x3 (in memory):  best {tb:.2f} s  median "
          f"{statistics.median(base_times):.2f} s  runs {[round(t, 2) for t in base_times]}")
    print(f"nnsig fit+transform(test)+table: best {tn:.2f} s  median "
          f"{statistics.median(nnsig_times):.2f} s  runs {[round(t, 2) for t in nnsig_times]}")
    print(f"ratio nnsig / baseline (best runs): {tn / tb:.2f}  (target <= 1.2); "
          f"per run: {paired}")
    print(f"CPU time (all threads), best runs: baseline {min(base_cpu):.2f} s, nnsig "
          f"{min(nnsig_cpu):.2f} s, ratio {min(nnsig_cpu) / min(base_cpu):.2f}")
    print()
    train_sigs = analysis.transform(store, "train")
    fit_sigs = train_sigs.subset(rows)
    print(f"{'layer':8} {'method':9} {'purity(fit)':>11} {'purity(test)':>12} "
          f"{'entropy(test)':>13} {'ARI vs sklearn':>14}")
    for j, name in enumerate(LAYERS):
        ari = adjusted_rand_score(base_labels[name], fit_sigs.cluster_ids[:, j])
        print(f"{name:8} {analysis.clusterers_[name].method_:9} {fit_sigs.purity()[j]:11.3f} "
              f"{test.purity()[j]:12.3f} {test.entropy()[j]:13.3f} {ari:14.3f}")
    print()
    print(f"distinct test signatures: {test.n_signatures} "
          f"({test.subset(test.correct).n_signatures} among correctly classified), "
          f"test accuracy {test.accuracy:.4f}, table rows {len(table)}")
    print("top rows of the test table:")
    for r in table[:5]:
        print(f"  input {r['input_class']}  path {r['signature']}  output {r['output_class']}  "
              f"count {r['count']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
