"""Benchmark: capture and analysis on a Dask cluster (``nnsig_core.distributed``), two runs.

``outofcore``
    A synthetic store four times the workers' total memory (default 4,200,000
    rows x 512 float32 units = 8.0 GiB, ten Gaussian classes, plus a 200,000-row
    test split) analysed by ``LocalCluster(n_workers=2, memory_limit="1GiB")``:
    fit, transform of both splits, the signature table, the signature scores,
    the Mahalanobis and logit baselines and the report data (``--all-baselines`` adds k-NN and the
    pattern monitor, whose cost grows with the training subsample times the
    queries, not with the data's size). Prints the time of each step, the peak memory (RSS) of each
    worker process, sampled every 0.5 s, against its limit, every memory or spill
    warning the workers logged, and the measured per-block cost (written to
    ``--json`` for the projection in docs/design.md).
``scaling``
    On MNIST (``--data-root``): rows per second of the capture (a 784-512-512-512-10
    ReLU MLP, 60,000 images) and of the analysis (fit + transform + table of the
    three 512-unit layers, 60,000 + 10,000 samples) in one process and on
    ``LocalCluster``s of 1 and 2 single-threaded worker processes, measured side by
    side in one run; then the analysis of one 512-unit layer at growing sizes
    (synthetic) in one process vs 2 workers, to find the crossover size.

Usage (timing runs on a shared machine: ``flock /tmp/nnsig-bench.lock ...``)::

    .venv/bin/python benchmarks/bench_distributed.py outofcore [--rows 2000000] [--dir runs/dist]
    .venv/bin/python benchmarks/bench_distributed.py scaling [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ---------------------------------------------------------------------------- helpers
class Blobs:
    """An adapter whose 'inputs' are row positions: Gaussian classes, generated per batch."""

    framework = "synthetic"

    def __init__(self, units: int, n_classes: int = 10, seed: int = 0, noise: float = 1.0,
                 error_rate: float = 0.05) -> None:
        rng = np.random.default_rng(seed)
        self.centres = rng.uniform(0, 6, size=(n_classes, units)).astype(np.float32)
        self.seed, self.noise, self.error_rate = seed, noise, error_rate

    def labels(self, rows: np.ndarray) -> np.ndarray:
        return (rows * 7919 + 13) % len(self.centres)

    def run(self, rows: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rows = np.asarray(rows, dtype=np.int64)
        rng = np.random.default_rng([self.seed, int(rows[0])])
        y = self.labels(rows)
        x = self.centres[y] + rng.normal(0, self.noise, size=(len(rows), self.centres.shape[1]))
        pred = np.where(rng.random(len(rows)) < self.error_rate, (y + 1) % len(self.centres), y)
        out = np.full((len(rows), len(self.centres)), -1.0, np.float32)
        out[np.arange(len(rows)), pred] = 1.0
        return out, {"layer": x.astype(np.float32)}

    def model_summary(self) -> dict[str, Any]:
        return {"model_class": "Blobs", "parameters": 0, "layers": [{"name": "layer"}]}

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


def blob_store(path: Path, rows: int, test_rows: int, units: int) -> Any:
    from nnsig_core import capture, open_store

    try:
        s = open_store(path)
        if all(sp in s.splits and s.is_complete(sp) for sp in ("train", "test")) and \
                s.n_samples("train") == rows:
            return s
    except Exception:  # noqa: BLE001 - absent or partial: write it
        pass
    t0 = time.perf_counter()
    for split, n, seed in (("train", rows, 0), ("test", test_rows, 1)):
        a = Blobs(units, seed=0)
        a.seed = seed
        positions = np.arange(n)
        capture(a, (positions, a.labels(positions)), path, split=split, batch_size=32768,
                overwrite=True, progress=False)
    print(f"wrote {path} ({rows:,} + {test_rows:,} rows x {units} units) in "
          f"{time.perf_counter() - t0:.0f} s")
    return open_store(path)


class MemoryWatch:
    """Peak RSS of each worker process, sampled every ``every`` seconds."""

    def __init__(self, client: Any, every: float = 0.5) -> None:
        self.client, self.every = client, every
        self.peak: dict[str, int] = {}
        self.phase = "start"
        self.phases: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        import psutil

        def rss() -> int:
            return psutil.Process().memory_info().rss

        while not self.stop.is_set():
            try:
                for w, v in self.client.run(rss).items():
                    self.peak[w] = max(self.peak.get(w, 0), int(v))
                    self.phases[self.phase] = max(self.phases.get(self.phase, 0), int(v))
            except Exception:  # noqa: BLE001 - a worker restarting: sample again
                pass
            self.stop.wait(self.every)

    def close(self) -> dict[str, int]:
        self.stop.set()
        self.thread.join()
        return self.peak


def memory_warnings(client: Any) -> list[str]:
    words = ("memory", "spill", "paus", "restart", "killed", "terminat")
    out = []
    for worker, records in client.get_worker_logs().items():
        for level, msg in records:
            if level in ("WARNING", "ERROR", "CRITICAL") and any(w in msg.lower() for w in words):
                out.append(f"{worker}: {level} {msg[:160]}")
    return out


def timed(label: str, fn: Any, results: dict[str, float], watch: Any = None) -> Any:
    if watch is not None:
        watch.phase = label
    t0 = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - t0
    peak = f"   peak worker RSS {watch.phases.get(label, 0) / 2**20:5.0f} MiB" if watch else ""
    print(f"  {label:<28} {results[label]:8.1f} s{peak}", flush=True)
    return out


# ---------------------------------------------------------------------------- out of core
def outofcore(args: argparse.Namespace) -> int:
    from distributed import Client, LocalCluster

    from nnsig_core import open_store
    from nnsig_core.analysis import SignatureAnalysis
    from nnsig_core.analysis import lloyd as dk
    from nnsig_core.diagnostics import baseline_scores, signature_scores
    from nnsig_core.diagnostics.baselines import BASELINES
    from nnsig_core.report import build_report_data

    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"blobs-{args.rows}x{args.units}.zarr"
    store = blob_store(path, args.rows, args.test_rows, args.units)
    nbytes = store.nbytes_stored("train", "layer")
    limit = int(args.memory_limit_bytes)
    print(f"store: {nbytes / 2**30:.2f} GiB of activations (train), workers: {args.workers} x "
          f"{limit / 2**30:.2f} GiB = {args.workers * limit / 2**30:.2f} GiB "
          f"({nbytes / (args.workers * limit):.1f}x the workers' memory)")
    iterations: list[float] = []
    orig = dk.lloyd

    def lloyd(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        res = orig(*a, **k)
        iterations.append((time.perf_counter() - t0) / max(res.n_iter, 1))
        return res

    dk.lloyd = lloyd  # fit_lloyd calls it from its module
    times: dict[str, float] = {}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        watch = MemoryWatch(client)
        st = open_store(path, mode="r+")
        a = timed("fit (train)", lambda: SignatureAnalysis(
            n_clusters=args.clusters, progress=False).fit(st, "train", client=client), times, watch)
        print(f"    ({a.clusterers_['layer'].n_iter_} Lloyd iterations, "
              f"{iterations[0]:.1f} s each)", flush=True)
        sig = timed("transform (train)", lambda: a.transform(st, "train", client=client), times, watch)
        test = timed("transform (test)", lambda: a.transform(st, "test", client=client), times, watch)
        table = timed("table (train)", lambda: sig.table(), times, watch)
        timed("purity/entropy (train)", lambda: (sig.purity(), sig.entropy()), times, watch)
        scores = timed("signature scores (test)", lambda: signature_scores(
            a, st, "test", client=client), times, watch)
        which = BASELINES if args.all_baselines else ("msp", "energy", "mahalanobis")
        base = timed("baselines (test)", lambda: baseline_scores(
            a, st, "test", client=client, which=which), times, watch)
        tracemalloc.start()
        data = timed("report data (train, test)", lambda: build_report_data(
            a, st, splits=("train", "test"), scores={"test": scores["combined"]},
            client=client), times, watch)
        report_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peak = watch.close()
        warnings = memory_warnings(client)
        workers = len(client.scheduler_info()["workers"])
        block_rows = _block_rows(store, client)
    n_blocks = -(-args.rows // block_rows)
    lc = a.clusterers_["layer"]
    print(f"\nfit: {lc.n_iter_} Lloyd iterations, {iterations[0]:.2f} s each; "
          f"{n_blocks} blocks of {block_rows} rows "
          f"({block_rows * args.units * 4 / 2**20:.0f} MiB) per pass")
    per_sample = (args.rows + args.test_rows) * (8 + 32)
    print(f"report data: {len(json.dumps(data)) / 2**20:.2f} MiB of JSON; the driver's traced "
          f"peak while building it {report_peak / 2**20:.0f} MiB (every sample's signature "
          f"vectors would be {per_sample / 2**20:.0f} MiB)")
    print(f"table: {len(table)} rows; test: {test.n_samples:,} samples, "
          f"{len(scores)} signature scores, {len(base)} baselines; "
          f"purity {sig.purity().round(3).tolist()}")
    print("peak worker memory (RSS): " + ", ".join(
        f"{v / 2**20:.0f} MiB ({v / limit:.0%} of the limit)" for v in peak.values()))
    print(f"workers at the end: {workers} of {args.workers}; memory/spill warnings: "
          f"{len(warnings)}")
    for w in warnings[:20]:
        print("   ", w)
    per_block = iterations[0] * args.workers / n_blocks
    record = {"rows": args.rows, "units": args.units, "clusters": args.clusters,
              "workers": args.workers, "memory_limit": limit, "times_s": times,
              "lloyd_iterations": int(lc.n_iter_), "seconds_per_iteration": iterations[0],
              "blocks_per_pass": n_blocks, "block_rows": block_rows,
              "seconds_per_block_per_worker": per_block,
              "peak_rss": peak, "warnings": warnings,
              "report_driver_traced_peak": report_peak}
    print(f"per block and worker: {per_block:.3f} s per Lloyd pass")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))
        print(f"written {args.json}")
    ok = max(peak.values()) < limit and not warnings and workers == args.workers
    print("OK: peak under the limit, no memory warnings" if ok else "NOT OK")
    return 0 if ok else 1


def _block_rows(store: Any, client: Any = None) -> int:
    from nnsig_core.distributed.reductions import MIN_BLOCKS
    from nnsig_core.execute.dask_blocks import block_bytes

    chunk = int(store.split_attrs("train")["capture"]["chunk_rows"])
    widest = max(int(np.prod(d["shape"])) * 4 for d in store.layer_info("train"))
    n = store.n_samples("train")
    return chunk * min(max(1, block_bytes(client) // (widest * chunk)),
                       max(1, -(-n // (MIN_BLOCKS * chunk))))


# ---------------------------------------------------------------------------- scaling
def make_mlp(seed: int = 0) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential()
    model.add_module("net", nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512),
                                          nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                          nn.Linear(512, 10)))
    return model


def mlp_adapter(seed: int = 0) -> Any:
    import torch
    from nnsig_torch import TorchAdapter

    return TorchAdapter(make_mlp(seed), layers=torch.nn.ReLU)


def scaling(args: argparse.Namespace) -> int:
    import shutil

    from bench_analysis import build_store, load_mnist
    from distributed import Client, LocalCluster

    from nnsig_core import capture, open_store
    from nnsig_core.analysis import SignatureAnalysis
    from nnsig_core.distributed import capture_distributed

    args.dir.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist(args.data_root)
    X = (mnist["train"][0].reshape(-1, 784).astype(np.float32) / 255.0)[: args.capture_rows]
    y = mnist["train"][1][: args.capture_rows]
    store = args.dir / "mnist.zarr"
    if not store.exists():
        build_store(store, args.data_root, 1, 0)
    n_an = open_store(store).n_samples("train") + open_store(store).n_samples("test")

    def run_capture(client: Any | None) -> float:
        out = args.dir / "capture.zarr"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        if client is None:
            capture(mlp_adapter(), (X, y), out, batch_size=500, progress=False)
        else:
            capture_distributed(mlp_adapter, (X, y), out, batch_size=500, client=client,
                                progress=False)
        return time.perf_counter() - t0

    def run_analysis(client: Any, path: Path = store) -> float:
        t0 = time.perf_counter()
        a = SignatureAnalysis(n_clusters=10, progress=False).fit(path, "train", client=client)
        a.transform(path, "test", client=client).table()
        return time.perf_counter() - t0

    results: dict[str, dict[str, list[float]]] = {"capture": {}, "analysis": {}}
    clusters = {}
    for w in (1, 2):
        cluster = LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        clusters[w] = (cluster, Client(cluster))
        clusters[w][1].wait_for_workers(w)
    try:
        for _ in range(args.repeat):  # interleaved: every side sees the same machine load
            for side in ("single", 1, 2):
                client = False if side == "single" else clusters[side][1]
                results["capture"].setdefault(str(side), []).append(
                    run_capture(None if side == "single" else client))
                results["analysis"].setdefault(str(side), []).append(run_analysis(client))
        print(f"\nrows per second, best of {args.repeat} interleaved runs "
              f"(torch threads in one process: {_torch_threads()}; workers: 1 thread each)")
        print(f"{'':<10}{'one process':>14}{'1 worker':>12}{'2 workers':>12}"
              f"{'2w / 1 process':>16}{'2w / 1w':>10}")
        for what, n in (("capture", len(X)), ("analysis", n_an)):
            best = {k: min(v) for k, v in results[what].items()}
            rate = {k: n / t for k, t in best.items()}
            print(f"{what:<10}{rate['single']:>14,.0f}{rate['1']:>12,.0f}{rate['2']:>12,.0f}"
                  f"{rate['2'] / rate['single']:>16.2f}{rate['2'] / rate['1']:>10.2f}")
        print("\ncrossover: analysis of one 512-unit layer (fit + transform + table), "
              "one process vs 2 workers")
        print(f"{'rows':>10}{'one process s':>15}{'2 workers s':>13}{'ratio':>8}")
        for rows in args.sizes:
            path = args.dir / f"size-{rows}.zarr"
            blob_store(path, rows, max(rows // 10, 1000), 512)
            one = min(run_analysis(False, path) for _ in range(args.repeat))
            two = min(run_analysis(clusters[2][1], path) for _ in range(args.repeat))
            print(f"{rows:>10,}{one:>15.2f}{two:>13.2f}{two / one:>8.2f}", flush=True)
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
    return 0


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("outofcore")
    p.add_argument("--rows", type=int, default=4_200_000)
    p.add_argument("--all-baselines", action="store_true")
    p.add_argument("--test-rows", type=int, default=200_000)
    p.add_argument("--units", type=int, default=512)
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="1GiB")
    p.add_argument("--json", default=None, help="write the measurements here")
    p = sub.add_parser("scaling")
    p.add_argument("--data-root", type=Path,
                   default=Path(os.environ.get("NNSIG_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--capture-rows", type=int, default=60_000)
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[20_000, 100_000, 400_000])
    p.add_argument("--repeat", type=int, default=2)
    for p in sub.choices.values():
        p.add_argument("--dir", type=Path, default=REPO / "runs" / "bench_distributed")
        p.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the workers' log is read below
    if args.what == "outofcore":
        from dask.utils import parse_bytes

        args.memory_limit_bytes = parse_bytes(args.memory_limit)
        return outofcore(args)
    return scaling(args)


if __name__ == "__main__":
    sys.exit(main())
