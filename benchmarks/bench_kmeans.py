"""Benchmark: the out-of-core k-means (Lloyd's iterations) against the exact KMeans, on time and inertia.

A layer whose fit rows do not fit ``memory_limit`` is clustered out of core,
reading the store pass by pass. This prints, side by side in one run on the
three hidden layers of the prototype's MNIST MLP (the store of
``bench_analysis.py``, built when missing), for each method:

- ``lloyd``: :mod:`nnsig_core.analysis.lloyd`, the algorithm the Dask driver
  runs too (k-means++ on a sample, Lloyd's iterations as reductions over passes);
  (nnsig 0.2's ``MiniBatchKMeans`` path, compared when Lloyd's replaced it, is gone:
  ``docs/design.md`` keeps the figures);
- ``exact``: scikit-learn's ``KMeans`` on the rows in memory (the reference);

the wall time, the inertia relative to the exact fit's, and the adjusted Rand
index against the exact partition. Usage::

    .venv/bin/python benchmarks/bench_kmeans.py [--data-root ../shared/data]
        [--store runs/bench_mnist.zarr] [--clusters 10] [--memory-limit 16MiB]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("NNSIG_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--store", type=Path, default=REPO / "runs" / "bench_mnist.zarr")
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--memory-limit", default="16MiB",
                        help="budget below a layer's fit rows (123 MB each): out of core")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)

    from bench_analysis import LAYERS, build_store
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from nnsig_core import open_store
    from nnsig_core.analysis.cluster import LayerClusterer
    from nnsig_core.analysis.source import StoreSource

    try:
        store = open_store(args.store)
        assert store.is_complete("train")
    except Exception:  # noqa: BLE001 - build it
        args.store.parent.mkdir(parents=True, exist_ok=True)
        build_store(args.store, args.data_root, 1, 0)
        store = open_store(args.store)
    labels, preds = store.labels("train"), store.predictions("train")
    rows = np.flatnonzero((labels == preds) & (labels >= 0))
    print(f"{rows.size} fit rows, k={args.clusters}, memory_limit={args.memory_limit}")
    print(f"{'layer':8} {'seed':>4} {'method':10} {'seconds':>8} {'inertia/exact':>14} "
          f"{'ARI vs exact':>12} {'iterations':>10}")
    totals: dict[str, list[float]] = {"lloyd": []}
    for name in LAYERS:
        X = np.asarray(store.activations("train", name)[:], dtype=np.float32)[rows]
        X = X.reshape(X.shape[0], -1)
        for seed in args.seeds:
            t0 = time.perf_counter()
            km = KMeans(args.clusters, n_init=1, random_state=seed).fit(X)
            t_exact = time.perf_counter() - t0
            print(f"{name:8} {seed:>4} {'exact':10} {t_exact:8.2f} {1.0:14.4f} {1.0:12.3f} "
                  f"{km.n_iter_:>10}")
            for method in ("lloyd",):
                lc = LayerClusterer(n_clusters=args.clusters, memory_limit=args.memory_limit,
                                    random_state=seed, method=method)
                t0 = time.perf_counter()
                lc.fit(StoreSource(store, "train", name, rows), name=name)
                dt = time.perf_counter() - t0
                ratio = lc.inertia_ / km.inertia_
                totals[method].append(ratio)
                ari = adjusted_rand_score(km.labels_, lc.predict(X))
                print(f"{name:8} {seed:>4} {method:10} {dt:8.2f} {ratio:14.4f} {ari:12.3f} "
                      f"{getattr(lc, 'n_iter_', '-'):>10}")
    for method, ratios in totals.items():
        print(f"{method}: inertia / exact, mean {np.mean(ratios):.4f}, worst {max(ratios):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
