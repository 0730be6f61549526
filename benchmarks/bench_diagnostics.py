"""Diagnostics benchmark: nnsig's default scores vs baselines and pytorch-ood, on an MLP and a CNN.

For each seed, four models are trained with torch (Adam, lr 1e-3, batch 128,
2 epochs) on 20,000 images drawn at random from the MNIST training set
(``--n-train``; 0 takes all), after a held-out validation split of 5,000
known-class images is set aside:

``mlp``  the prototype's MLP (784-512-512-512-n, ReLU); nnsig captures the three ReLUs.
``cnn``  a small CNN (three 3x3 conv blocks with 2x2 max-pooling, 16/32/64
         channels, a dense ReLU layer of 128 units); nnsig captures the conv
         blocks mean-pooled over positions (``TorchAdapter(pool=...)``) and the
         dense layer.

each in two settings: ``all10`` (trained on the ten digits) and ``0-4``
(trained on digits 0-4). Tasks, on the 10,000 test images unless said:

``error``    all10: misclassified test images (positives) vs the correct ones.
``novelty``  0-4: test digits 5-9 (positives) vs digits 0-4.
far sets     cnn all10 (and ``--far-mlp``): 2,000 inverted test images,
             2,000 test images rotated 90 degrees, 2,000 uniform and 2,000
             Gaussian noise images, scikit-learn's 1,797 8x8 digits scaled to
             28x28 (positives) vs the whole test set.

nnsig runs with its defaults: ``SignatureAnalysis()`` (ten clusters per
layer) fitted on the training split, then ``signature_scores(analysis, store,
split, validation_split="val")`` (what is chosen on the validation split, and
nothing else, is printed; ``combined (no val)`` is the same score without a
validation split). Its baselines (MSP, energy, Mahalanobis, k-NN, activation
patterns on the last hidden layer) and pytorch-ood's detectors (MaxSoftmax,
Energy, MaxLogit, Entropy, Mahalanobis, RMD, KNN, ViM, DICE, ReAct, ASH; see
``dx_models.ood_scores``) run on the same models and data in the same run.
Metrics: AUROC (and FPR at 95% TPR) with the suspicious samples as positives.

Run from the repository root (needs the ``bench`` extra: ``pip install -e ".[bench]"``)::

    flock /tmp/nnsig-bench.lock .venv/bin/python benchmarks/bench_diagnostics.py --out runs/dx.csv
    .venv/bin/python benchmarks/bench_diagnostics.py --quick      # 1 seed, fewer samples
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

NNSIG = ("combined", "combined (no val)", "neighbour_distance", "neighbour_margin",
         "class_distance", "class_margin")
NNSIG_BASELINES = ("msp", "energy", "mahalanobis", "knn", "pattern")
COLUMNS = {"mlp": ["error", "novelty"],
           "cnn": ["error", "novelty", "inverted", "rot90", "uniform", "gaussian", "digits"]}


def run_one(seed: int, kind: str, setting: str, data, args, work: Path) -> tuple[list[dict], dict]:
    """Train, capture, score and evaluate one model; returns tidy AUROC/FPR rows and notes."""
    import torch
    from dx_models import MODELS, far_ood_sets, normalise, ood_scores, representations, train
    from nnsig_torch import TorchAdapter

    from nnsig_core import capture, open_store
    from nnsig_core.analysis import SignatureAnalysis
    from nnsig_core.diagnostics import Baselines, SignatureScorer, detection_metrics, evaluate

    images, labels, test_images, test_labels = data
    known = tuple(range(10)) if setting == "all10" else tuple(range(5))
    t: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    pool = rng.permutation(np.flatnonzero(np.isin(labels.numpy(), known)))
    val_idx, train_idx = np.sort(pool[: args.n_val]), np.sort(pool[args.n_val :])
    if args.n_train:
        train_idx = np.sort(rng.choice(train_idx, min(args.n_train, train_idx.size), False))
    test_idx = np.arange(len(test_labels))
    if args.n_test:
        test_idx = np.sort(rng.choice(test_idx, min(args.n_test, test_idx.size), False))
    X = normalise(images)
    sets = {"train": (X[train_idx], labels[train_idx]), "val": (X[val_idx], labels[val_idx]),
            "test": (normalise(test_images[test_idx]), test_labels[test_idx])}
    if setting == "all10" and (kind == "cnn" or args.far_mlp):
        for name, im in far_ood_sets(test_images, args.n_far, seed).items():
            sets[f"far_{name}"] = (normalise(im), None)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = train(MODELS[kind](len(known)), *sets["train"], args.epochs, 128, seed)
    t["train"] = time.perf_counter() - t0

    path = work / f"{kind}-{setting}-{seed}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    adapter = TorchAdapter(model, layers=list(model.capture_layers), pool=model.pool)
    for split, (x, y) in sets.items():
        capture(adapter, (x, y), path, split=split, batch_size=1000, progress=False)
    store = open_store(path, mode="r+")
    t["capture"] = time.perf_counter() - t0

    # nnsig with its defaults.
    t0 = time.perf_counter()
    analysis = SignatureAnalysis(progress=False).fit(store, "train")
    t["analysis"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer = SignatureScorer().fit(analysis, store)
    no_val = scorer.combiner_
    scorer.calibrate(store, "val")  # = signature_scores(..., validation_split="val")
    evals = [s for s in sets if s == "test" or s.startswith("far_")]
    scores, layer_scores = {}, {}
    for split in evals:
        scores[split], layer_scores[split] = scorer.score(store, split, return_layers=True)
        scores[split]["combined (no val)"] = no_val.transform(layer_scores[split])
    t["nnsig_scores"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = Baselines.from_analysis(analysis, store)
    for split in evals:
        scores[split].update(base.score(store, split))
    t["nnsig_baselines"] = time.perf_counter() - t0

    # pytorch-ood on the same model and data.
    t0 = time.perf_counter()
    reps = {s: representations(model, x) for s, (x, _) in sets.items()
            if s == "train" or s in evals}
    ood = ood_scores(model, reps.pop("train"), sets["train"][1], reps)
    for split in evals:
        scores[split].update(ood[split])
    t["pytorch_ood"] = time.perf_counter() - t0

    y_test, p_test = store.labels("test"), store.predictions("test")
    tidy = evaluate(scores["test"], y_test, p_test, analysis.classes_, as_frame=False)
    rows = [dict(r, seed=seed, model=kind, setting=setting) for r in tidy
            if r["metric"] in ("auroc", "fpr95")]
    for split in evals[1:]:
        for name, s in scores[split].items():
            ref = scores["test"][name]
            m = detection_metrics(np.r_[ref, s], np.r_[np.zeros(ref.size), np.ones(s.size)])
            for metric in ("auroc", "fpr95"):
                rows.append({"score": name, "task": split[4:], "metric": metric,
                             "value": m[metric], "n_positive": s.size, "n_negative": ref.size,
                             "seed": seed, "model": kind, "setting": setting})
    desc = scorer.describe()["combination"]
    notes = {"seed": seed, "model": kind, "setting": setting,
             "acc": round(float((y_test == p_test)[np.isin(y_test, known)].mean()), 4),
             "layers (val)": "+".join(desc["selected"]),
             "layers (no val)": "+".join(no_val.describe()["selected"]),
             **peeking(scorer.combiner_, layer_scores["test"], y_test, p_test, known),
             **{f"t_{k}": round(v, 1) for k, v in t.items()}}
    if not args.keep:
        del store
        shutil.rmtree(path, ignore_errors=True)
    return rows, notes


def peeking(combiner, layers, y, p, known) -> dict[str, str]:
    """What choosing the layers on the *test* task would pick and gain (test peeking; reported
    only to show how far the validation-only choice is from it)."""
    from sklearn.metrics import roc_auc_score

    kn = np.isin(y, known)
    task = ("error", kn, (y != p)) if kn.all() else ("novelty", np.ones(y.size, bool), ~kn)
    name, inc, pos = task
    auc = {}
    for k in range(1, len(combiner.layers_) + 1):
        for sub in itertools.combinations(combiner.layers_, k):
            auc[sub] = roc_auc_score(pos[inc], combiner.transform(layers, layers=sub)[inc])
    best = max(auc, key=auc.get)
    chosen = auc[tuple(combiner.selected_)]
    return {"peek task": name, "peek layers": "+".join(best),
            "peek gain": f"{auc[best] - chosen:+.4f}"}


def summarise(rows: list[dict], metric: str = "auroc") -> dict:
    """{(model, task, score): (mean, std, worst, per-seed values)}; worst = min AUROC / max FPR."""
    vals: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r["metric"] != metric:
            continue
        task = r["task"]
        if (r["setting"], task) not in (("all10", "error"), ("0-4", "novelty")) and \
                task in ("error", "novelty", "both"):
            task = f"{task} ({r['setting']})"
        vals.setdefault((r["model"], task, r["score"]), {})[r["seed"]] = r["value"]
    out = {}
    for key, d in vals.items():
        v = np.array([d[s] for s in sorted(d)])
        worst = v.min() if metric == "auroc" else v.max()
        out[key] = (v.mean(), v.std(ddof=1) if v.size > 1 else 0.0, worst, d)
    return out


def print_tables(rows: list[dict]) -> None:
    summ = summarise(rows)
    for kind in ("mlp", "cnn"):
        cols = [c for c in COLUMNS[kind] if any(k[:2] == (kind, c) for k in summ)]
        if not cols:
            continue
        names = list(dict.fromkeys(k[2] for k in summ if k[0] == kind))
        order = [n for n in NNSIG if n in names] + [n for n in NNSIG_BASELINES if n in names] + \
            sorted(n for n in names if n.startswith("ood:"))
        print(f"\n{kind.upper()}: AUROC, mean over seeds / worst seed (positives = suspicious)")
        head = f"{'score':22s}" + "".join(f"{c:>16s}" for c in cols) + f"{'task mean':>16s}"
        print(head)
        print("-" * len(head))
        for n in order:
            cells, means, worsts = [], [], []
            for c in cols:
                m = summ.get((kind, c, n))
                cells.append(f"{m[0]:.4f} / {m[2]:.4f}" if m else "-")
                if m:
                    means.append(m[0])
                    worsts.append(m[2])
            tm = f"{np.mean(means):.4f} / {np.mean(worsts):.4f}" if len(means) == len(cols) else "-"
            print(f"{n:22s}" + "".join(f"{c:>16s}" for c in cells) + f"{tm:>16s}")
        verdicts(summ, kind, cols)


def verdicts(summ: dict, kind: str, cols: list[str]) -> None:
    """combined vs the best baseline per seed (nnsig's own, then pytorch-ood's too)."""
    seeds = sorted(summ.get((kind, cols[0], "combined"), (0, 0, 0, {}))[3])
    for label, pool in (("nnsig baselines", NNSIG_BASELINES),
                        ("every baseline incl. pytorch-ood", None)):
        print(f"  combined - best of {label}, per task: worst seed / mean over seeds")
        task_means = []
        for c in cols:
            names = [k[2] for k in summ if k[:2] == (kind, c) and
                     (k[2] in pool if pool else (k[2] in NNSIG_BASELINES or k[2].startswith("ood:")))]
            comb = summ[(kind, c, "combined")][3]
            diffs = [comb[s] - max(summ[(kind, c, n)][3][s] for n in names) for s in seeds]
            best_mean = max(names, key=lambda n: summ[(kind, c, n)][0])
            task_means.append((summ[(kind, c, "combined")][0], summ[(kind, c, best_mean)][0]))
            print(f"    {c:10s} {min(diffs):+.4f} / {np.mean(diffs):+.4f}   (best on the mean: "
                  f"{best_mean} {summ[(kind, c, best_mean)][0]:.4f}; wins {sum(d >= 0 for d in diffs)}"
                  f"/{len(diffs)} seeds)")
        if len(cols) > 1:
            per_name = {}
            for n in {k[2] for k in summ if k[0] == kind}:
                if (n in pool) if pool else (n in NNSIG_BASELINES or n.startswith("ood:")):
                    if all((kind, c, n) in summ for c in cols):
                        per_name[n] = np.mean([summ[(kind, c, n)][0] for c in cols])
            best = max(per_name, key=per_name.get)
            comb = np.mean([summ[(kind, c, "combined")][0] for c in cols])
            print(f"    mean of the tasks: combined {comb:.4f} vs {best} {per_name[best]:.4f} "
                  f"({comb - per_name[best]:+.4f})")


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("NNSIG_DATA",
                                                         str(here.parent / "shared" / "data")))
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--settings", default="all10,0-4")
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 12,000 training / 2,000 validation / 4,000 test samples")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n-val", type=int, default=5000)
    p.add_argument("--n-train", type=int, default=20000,
                   help="training samples per model, drawn at random (0: all; default 20,000 "
                        "keeps five seeds within ~20 minutes on 2 cores)")
    p.add_argument("--n-test", type=int, default=0, help="cap on test samples (0: all)")
    p.add_argument("--n-far", type=int, default=2000, help="images per far-OOD set")
    p.add_argument("--far-mlp", action="store_true", help="far-OOD sets for the MLP too")
    p.add_argument("--out", default=None, help="write every row (seed, model, setting, score, "
                   "task, metric, value) to this CSV, the notes to <out>.notes.csv")
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true", help="keep the stores")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds = 1
        args.n_train = min(args.n_train or 12000, 12000)
        args.n_val, args.n_test = 2000, args.n_test or 4000
        args.n_far = min(args.n_far, 1000)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import torch
    from dx_models import load_mnist

    torch.set_num_threads(args.threads)
    data = load_mnist(args.data_root)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nnsig-bench-dx-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    notes: list[dict] = []
    t_all = time.perf_counter()
    for seed in range(args.seeds):
        for kind in args.models.split(","):
            for setting in args.settings.split(","):
                r, info = run_one(seed, kind, setting, data, args, work)
                rows += r
                notes.append(info)
                print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    print_tables(rows)
    print(f"\n{args.seeds} seed(s); total {time.perf_counter() - t_all:.0f} s "
          f"({torch.get_num_threads()} torch threads)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        for path, data_rows in ((out, rows), (out.with_suffix(".notes.csv"), notes)):
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in data_rows
                                                                    for k in r)))
                w.writeheader()
                w.writerows(data_rows)
        print(f"wrote {out} and {out.with_suffix('.notes.csv')}")
    if not args.workdir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
