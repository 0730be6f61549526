"""A capture run in its own process, for the tests of concurrent writers and killed captures.

Usage: ``python tests/capture_worker.py STORE SPLIT VALUE N [--start-at T | --wait-for FILE]
[--sleep S] [--resume] [--overwrite]``. Captures ``N`` samples whose activations are
``VALUE + row / 1000`` (so two writers' rows, and rows of one writer, are told
apart), in batches of 10, sleeping ``S`` seconds per batch; waits until the
wall-clock time ``T``, or prints ``READY`` and waits until ``FILE`` exists,
before starting (so two processes start together).
Prints ``OK`` on success, or ``ERROR <class>: <message>`` and exits 3.
With ``--trials K`` the process runs K captures one after the other (one interpreter
start for many trials): trial ``i`` writes ``STORE/t<i>.zarr`` once ``FILE<i>`` exists,
and prints its ``READY`` and its result line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from nnsig_core import ArrayAdapter, capture


def rows(value: float, n: int, width: int = 8) -> np.ndarray:
    """The activations written for samples 0..n-1."""
    return (value + np.arange(n, dtype=np.float32)[:, None] / 1000
            + np.zeros((1, width), dtype=np.float32))


def batches(n: int, sleep: float):
    for lo in range(0, n, 10):
        if sleep:
            time.sleep(sleep)
        yield np.arange(lo, min(lo + 10, n)), np.arange(lo, min(lo + 10, n)) % 3


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("split")
    p.add_argument("value", type=float)
    p.add_argument("n", type=int)
    p.add_argument("--start-at", type=float, default=0.0)
    p.add_argument("--wait-for", default=None,
                   help="print READY, then wait until this file exists before starting")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--trials", type=int, default=0,
                   help="run this many captures in turn (see the module doc)")
    p.add_argument("--record-every-chunk", action="store_true",
                   help="record the written count after every chunk (not once a second)")
    args = p.parse_args()
    if args.record_every_chunk:
        from nnsig_core.capture import session

        session.RECORD_EVERY_S = 0.0
    acts = rows(args.value, args.n)
    adapter = ArrayAdapter({"h": acts}, np.eye(3, dtype=np.float32)[np.arange(args.n) % 3])
    if args.trials:
        for i in range(args.trials):
            _one(args, adapter, str(Path(args.store) / f"t{i}.zarr"), f"{args.wait_for}{i}")
        return 0
    return _one(args, adapter, args.store, args.wait_for)


def _one(args: argparse.Namespace, adapter: ArrayAdapter, store: str,
         wait_for: str | None) -> int:
    if wait_for:
        print("READY", flush=True)
        while not Path(wait_for).exists():
            time.sleep(0.0005)
    while time.time() < args.start_at:
        time.sleep(0.001)
    try:
        capture(adapter, batches(args.n, args.sleep), store, split=args.split,
                chunk_bytes=8 * 4 * 10, resume=args.resume, overwrite=args.overwrite,
                progress=False)
    except Exception as exc:
        print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
        return 3
    print("OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
