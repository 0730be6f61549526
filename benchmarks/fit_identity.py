"""Check: does a change move the single-process fit? Cluster centres and ids, before and after.

Fits ``SignatureAnalysis(random_state=0)`` on a store's ``train`` split in six
settings (the defaults; ``quantile:4`` and ``uniform:5`` bins; ``reduce=20``;
out of core with ``memory_limit="16MiB"``; out of core with ``reduce=20``),
maps ``test`` onto each, times each, and saves the centres and the test ids.
Run it once per checkout, then compare::

    PYTHONPATH=/path/to/old/checkout:/path/to/old/checkout/adapters \\
        .venv/bin/python benchmarks/fit_identity.py fit runs/mnist_torch/store.zarr /tmp/old.npz
    .venv/bin/python benchmarks/fit_identity.py fit runs/mnist_torch/store.zarr /tmp/new.npz
    .venv/bin/python benchmarks/fit_identity.py compare /tmp/old.npz /tmp/new.npz

(an older checkout may need its own copy of the store, in the format it reads).
"""

from __future__ import annotations

import sys
import time

import numpy as np

SETTINGS: dict[str, dict[str, object]] = {
    "default": {},
    "quantile": {"discretizer": "quantile:4"},
    "uniform": {"discretizer": "uniform:5"},
    "reduce": {"reduce": 20},
    "lloyd": {"memory_limit": "16MiB"},
    "lloyd_reduce": {"memory_limit": "4MiB", "reduce": 20},
}


def fit(store_path: str, out: str) -> None:
    from nnsig_core import SignatureAnalysis, open_store

    store = open_store(store_path)
    saved: dict[str, np.ndarray] = {}
    for name, kw in SETTINGS.items():
        t0 = time.perf_counter()
        analysis = SignatureAnalysis(random_state=0, progress=False, **kw).fit(store, "train")
        sigs = analysis.transform(store, "test")
        methods = [lc.method_ for lc in analysis.clusterers_.values()]
        print(f"{name:13} {time.perf_counter() - t0:7.2f} s  {methods}")
        saved[f"{name}/ids"] = sigs.cluster_ids
        for layer, lc in analysis.clusterers_.items():
            saved[f"{name}/{layer}/centers"] = lc.cluster_centers_
    np.savez(out, **saved)


def compare(a_path: str, b_path: str) -> int:
    a, b = np.load(a_path), np.load(b_path)
    differ = 0
    for key in a.files:
        same = key in b.files and np.array_equal(a[key], b[key])
        differ += not same
        print(f"{key:40} {'identical' if same else 'DIFFERENT'}")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "fit":
        fit(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
