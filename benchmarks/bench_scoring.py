"""Benchmark: what the scores cost beside the analysis they explain, on the MNIST demo's store.

Issue 21's target: the scorer's fit plus the scores of the 60,000 training
(here 55,000: the demo holds 5,000 out as ``val``) and 10,000 test samples in
at most 1.5 times the analysis's fit. This prints, in one run on the store of
``make demo`` (train, val, test; the prototype's MLP), the wall time of:

- the analysis's fit (``SignatureAnalysis(random_state=0)``, its defaults);
- the scorer's fit, tuned and calibrated on ``val`` (the demo's workflow);
- the scores of the training split (each sample leave-one-out) and of the test split;

and the ratio of the scorer's total to the analysis's fit. Run it on quiet cores::

    .venv/bin/python benchmarks/bench_scoring.py [--store runs/mnist_torch/store.zarr] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fit_on_val(scorer, analysis, store):
    """The demo's workflow: the scorer tuned and calibrated on ``val`` (an older nnsig, which
    ``fit`` does not take ``validation_split``: fit, then calibrate)."""
    try:
        return scorer.fit(analysis, store, validation_split="val")
    except TypeError:
        return scorer.fit(analysis, store).calibrate(store, "val")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=REPO / "runs" / "mnist_torch" / "store.zarr")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from nnsig_core import SignatureAnalysis, open_store
    from nnsig_core.diagnostics import SignatureScorer

    if not args.store.exists():
        print(f"{args.store} not found: run `make demo` first.", file=sys.stderr)
        return 2
    store = open_store(args.store)
    best: dict[str, float] = {}

    def timed(name: str, fn):  # the best of the repeats: the least disturbed
        t0 = time.perf_counter()
        out = fn()
        best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        return out

    for _ in range(max(args.repeats, 1)):
        analysis = timed("analysis fit", lambda: SignatureAnalysis(random_state=0,
                                                                   progress=False).fit(store))
        for split in ("train", "val", "test"):  # the signatures, cached (the report needs them)
            analysis.transform(store, split)
        scorer = SignatureScorer()
        timed("scorer fit, tuned and calibrated on val", partial(fit_on_val, scorer, analysis, store))
        for split in ("train", "test"):
            timed(f"scores of {split} ({store.n_samples(split)})",
                  partial(scorer.score, store, split))
    for name, t in best.items():
        print(f"{name:28s} {t:7.2f} s")
    fit = best.pop("analysis fit")
    total = sum(best.values())
    print(f"{'scorer total':28s} {total:7.2f} s = {total / fit:.2f} x the analysis fit "
          "(target: at most 1.5 x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
