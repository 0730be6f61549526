"""Benchmark: does the conformal threshold keep its promise on MNIST?

The promise (:mod:`nnsig_core.diagnostics.conformal`): calibrated on ``n``
correctly classified inputs, the threshold at ``alpha`` flags a new correctly
classified input drawn like them with probability at most ``alpha`` and at
least ``alpha - 1/(n + 1)``. Over random calibration sets the realised rate on
``m`` test inputs has the Beta-binomial's mean and spread.

On the store of the MNIST demo (``make demo``: train, val and test splits, the
analysis ``default``), the scorer is fitted on the training split and tuned on
the validation split; then the MNIST test split's correctly classified samples
are partitioned at random ``--partitions`` times (default 50) into a
calibration half and a test half. For each ``alpha`` this prints the mean and
standard deviation of the realised false-positive rate over the partitions
beside the predicted ones, and whether the mean lies within one point of
``alpha``. It also prints the rate on the whole test split of the threshold the
report uses (calibrated on the validation split's held-out half).

    .venv/bin/python benchmarks/bench_conformal.py [--store runs/mnist_torch/store.zarr]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=REPO / "runs" / "mnist_torch" / "store.zarr")
    parser.add_argument("--analysis", default="default")
    parser.add_argument("--partitions", type=int, default=50)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from nnsig_core import SignatureAnalysis, open_store
    from nnsig_core.diagnostics import SignatureScorer
    from nnsig_core.diagnostics.conformal import conformal_threshold, false_positive_spread

    if not args.store.exists():
        print(f"{args.store} not found: run `make demo` first (it writes the MNIST store with "
              "train, val and test splits).", file=sys.stderr)
        return 2
    store = open_store(args.store)
    analysis = SignatureAnalysis.load(store, args.analysis)
    t0 = time.perf_counter()
    scorer = SignatureScorer().fit(analysis, store).calibrate(store, "val")
    scores = scorer.score(store, "test")["combined"]
    print(f"scorer fitted, tuned on 'val' and the test split scored in "
          f"{time.perf_counter() - t0:.1f} s")
    ok = (store.labels("test") == store.predictions("test")) & np.isfinite(scores)
    correct = scores[ok]
    n = correct.size // 2
    m = correct.size - n
    rng = np.random.default_rng(args.seed)
    print(f"{args.partitions} random partitions of the test split's {correct.size} correct "
          f"samples: calibration n={n}, test m={m}")
    print(f"{'alpha':>6} {'mean FPR':>9} {'predicted':>9} {'sd':>7} {'predicted sd':>12} "
          f"{'|mean-alpha|<=0.01':>18}")
    ok_all = True
    for alpha in args.alphas:
        rates = []
        for _ in range(args.partitions):
            perm = rng.permutation(correct.size)
            t = conformal_threshold(correct[perm[:n]], alpha)
            rates.append(float((correct[perm[n:]] > t).mean()))
        mean, sd = false_positive_spread(n, alpha, m)
        within = abs(np.mean(rates) - alpha) <= 0.01
        ok_all &= within
        print(f"{alpha:6.2f} {np.mean(rates):9.4f} {mean:9.4f} {np.std(rates, ddof=1):7.4f} "
              f"{sd:12.4f} {str(within):>18}")
    cal = scorer.conformal_scores_
    for alpha in args.alphas:
        t = scorer.threshold(alpha)
        rate = float((correct > t).mean())
        mean, sd = false_positive_spread(cal.size, alpha, correct.size)
        print(f"the report's threshold at {alpha:.2f} (calibrated on {cal.size} held-out correct "
              f"samples of 'val'): FPR {rate:.4f} on the test split's correct samples "
              f"(predicted {mean:.4f} +- {sd:.4f} if val and test were alike; "
              f"{abs(rate - mean) / max(sd, 1e-12):.1f} sd away)")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
