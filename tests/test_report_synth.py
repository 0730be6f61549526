"""Synthetic report data following docs/report-data.md, for the viewer and report tests.

``make_report_data`` draws samples whose cluster paths mostly follow a few
"typical" clusters per class and layer, with some deviations and
misclassifications, then aggregates them exactly as the contract says (rows,
per-cluster counts, typical clusters, score histograms, thumbnails). The tests
at the bottom check the generator itself against the contract.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter

import numpy as np

LAYER_TYPES = ["Linear", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Linear", "ReLU", "Linear"]


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def make_report_data(
    n_classes: int = 10,
    n_layers: int = 4,
    clusters: list[int] | None = None,
    samples: dict[str, int] | None = None,
    class_names: list[str] | None = None,
    train_classes: list[int] | None = None,
    thumbnails: bool = True,
    thumb_shape: tuple[int, ...] = (8, 8),
    scores: bool = True,
    n_exemplars: int = 4,
    deviation: float = 0.12,
    error_rate: float = 0.06,
    title: str = "Synthetic MLP",
    seed: int = 0,
    images: dict[str, np.ndarray] | None = None,
) -> dict:
    """A report data dict (format 1) for synthetic samples.

    ``samples`` maps split name to sample count (default train 3000, test 800,
    which gives a few hundred distinct rows with 10 classes and 4 layers).
    ``images``, when given, maps split name to a uint8 array (n, *thumb_shape)
    used for the thumbnails instead of random patterns.
    """
    rng = np.random.default_rng(seed)
    samples = samples or {"train": 3000, "test": 800}
    if clusters is None:
        clusters = [int(k) for k in rng.integers(10, 21, size=n_layers)]
    assert len(clusters) == n_layers
    names = class_names or [str(c) for c in range(n_classes)]
    assert len(names) == n_classes
    fitted = list(range(n_classes)) if train_classes is None else list(train_classes)
    layer_names = [f"net.{2 * i + 1}" for i in range(n_layers)]
    units = [int(u) for u in rng.choice([32, 64, 128, 256, 512], size=n_layers)]

    # Typical clusters of each class per layer: one main cluster, sometimes a second.
    pref = [
        [rng.choice(clusters[layer], size=2, replace=False) for _ in range(n_classes)]
        for layer in range(n_layers)
    ]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels = rng.integers(0, n_classes, size=n)
        paths = np.empty((n, n_layers), dtype=np.int64)
        deviated = np.zeros(n, dtype=bool)
        for layer in range(n_layers):
            main = np.array([pref[layer][c][0] for c in labels])
            second = np.array([pref[layer][c][1] for c in labels])
            u = rng.random(n)
            dev = u < deviation * (1 + layer * 0.3)
            col = np.where(u < deviation + 0.25, second, main)
            col = np.where(dev, rng.integers(0, clusters[layer], size=n), col)
            paths[:, layer] = col
            deviated |= dev
        p_err = np.where(deviated, 0.35, error_rate / 3)
        wrong = rng.random(n) < p_err
        unseen = ~np.isin(labels, fitted)
        wrong |= unseen & (rng.random(n) < 0.7)
        other = (labels + rng.integers(1, n_classes, size=n)) % n_classes
        outputs = np.where(wrong, other, labels)
        return labels, paths, outputs

    drawn = {s: draw(n) for s, n in samples.items()}

    # typical[l][c]: clusters holding >= 10% of class c's fit samples (train split).
    fit_split = "train" if "train" in drawn else next(iter(drawn))
    fl, fp, fo = drawn[fit_split]
    fit_mask = np.isin(fl, fitted)
    typical = []
    for layer in range(n_layers):
        per_class = []
        for c in range(n_classes):
            sel = fp[(fl == c) & fit_mask, layer]
            if sel.size == 0:
                per_class.append([])
                continue
            cnt = np.bincount(sel, minlength=clusters[layer])
            per_class.append([int(k) for k in np.flatnonzero(cnt >= 0.1 * sel.size)])
        typical.append(per_class)

    thumbs: dict[str, str] = {}
    out_splits = {}
    for s, (labels, paths, outputs) in drawn.items():
        n = labels.size
        sample_scores = None
        if scores:
            base = np.where(labels == outputs, rng.beta(2, 6, size=n), rng.beta(5, 2, size=n))
            unseen = ~np.isin(labels, fitted)
            sample_scores = np.where(unseen, rng.beta(4, 2.5, size=n), base)
        groups: dict[tuple, list[int]] = {}
        for i in range(n):
            groups.setdefault(
                (int(labels[i]), tuple(int(x) for x in paths[i]), int(outputs[i])), []
            ).append(i)
        rows = []
        for (inp, path, outp), idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            rows.append(
                {
                    "input": inp,
                    "path": list(path),
                    "output": outp,
                    "count": len(idx),
                    "score": round(float(sample_scores[idx].mean()), 4) if scores else None,
                }
            )
        layer_clusters = []
        purity, entropy = [], []
        for layer in range(n_layers):
            k = clusters[layer]
            table = np.zeros((k, n_classes), dtype=np.int64)
            np.add.at(table, (paths[:, layer], labels), 1)
            cl = []
            for cid in range(k):
                members = np.flatnonzero(paths[:, layer] == cid)
                ex = [f"{s}/{int(i)}" for i in members[:n_exemplars]]
                if thumbnails:
                    for key, i in zip(ex, members[:n_exemplars], strict=False):
                        if images is not None and s in images:
                            px = np.asarray(images[s][int(i)], dtype=np.uint8)
                        else:
                            px = _pattern(int(labels[i]), thumb_shape, rng)
                        thumbs[key] = base64.b64encode(px.tobytes()).decode("ascii")
                tot = int(table[cid].sum())
                cl.append(
                    {
                        "id": cid,
                        "count": tot,
                        "by_class": [int(v) for v in table[cid]],
                        "purity": round(float(table[cid].max() / tot), 4) if tot else None,
                        "exemplars": ex,
                    }
                )
            layer_clusters.append(cl)
            nz = table.sum(1) > 0
            purity.append(round(float(table.max(1)[nz].sum() / n), 4))
            entropy.append(
                round(float(sum(_entropy_bits(row) * row.sum() for row in table[nz]) / n), 4)
            )
        sp = {
            "n_samples": int(n),
            "accuracy": round(float((labels == outputs).mean()), 4),
            "n_signatures": len({tuple(p) for p in paths.tolist()}),
            "purity": purity,
            "entropy": entropy,
            "rows": rows,
            "clusters": layer_clusters,
        }
        if scores:
            bins = np.linspace(0.0, 1.0, 21)
            correct = (labels == outputs) & np.isin(labels, fitted)
            mis = (labels != outputs) & np.isin(labels, fitted)
            unseen = ~np.isin(labels, fitted)
            sp["scores"] = {
                "name": "combined",
                "bins": [round(float(b), 4) for b in bins],
                "counts": {
                    g: [int(v) for v in np.histogram(sample_scores[m], bins=bins)[0]]
                    for g, m in (("correct", correct), ("misclassified", mis), ("unseen", unseen))
                },
            }
        out_splits[s] = sp

    data = {
        "format_version": 1,
        "title": title,
        "created": dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.timezone.utc).isoformat(),
        "store": "runs/synthetic.zarr",
        "analysis": {
            "name": "default",
            "n_clusters": list(clusters),
            "discretizer": None,
            "reduce": None,
            "only_correct": True,
            "fit_split": fit_split,
            "fit_samples": int(fit_mask.sum()),
            "random_state": 0,
        },
        "model": {
            "model_class": "MLP",
            "framework": "torch",
            "parameters": int(sum(u * 100 for u in units)),
            "layers": [
                {
                    "name": layer_names[i],
                    "type": LAYER_TYPES[i % len(LAYER_TYPES)],
                    "shape": [units[i]],
                    "units": units[i],
                    "parameters": units[i] * 100 if i % 2 == 0 else 0,
                }
                for i in range(n_layers)
            ],
        },
        "classes": names,
        "train_classes": fitted,
        "layers": layer_names,
        "typical": typical,
        "splits": out_splits,
    }
    if thumbnails:
        data["thumbnails"] = {"shape": list(thumb_shape), "images": thumbs}
    return data


def _pattern(label: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A small grey (or colour) image that looks different per class."""
    h, w = shape[0], shape[1]
    yy, xx = np.mgrid[0:h, 0:w]
    img = 128 + 110 * np.sin((xx * (label % 3 + 1) + yy * (label // 3 + 1)) / 2.0)
    img = np.clip(img + rng.normal(0, 20, size=(h, w)), 0, 255).astype(np.uint8)
    if len(shape) == 3:
        img = np.repeat(img[..., None], shape[2], axis=2)
    return img


def expected_nodes(data: dict, split: str) -> tuple[int, list[int]]:
    """(total node count, nodes per column) the Sankey should draw for a split."""
    rows = [r for r in data["splits"][split]["rows"] if r["count"] > 0]
    n_layers = len(data["layers"])
    cols = [{r["input"] for r in rows}]
    cols += [{r["path"][layer] for r in rows} for layer in range(n_layers)]
    cols.append({r["output"] for r in rows})
    per = [len(c) for c in cols]
    return sum(per), per


# --------------------------------------------------------------------------- tests of the generator


def test_generator_follows_the_contract():
    data = make_report_data(seed=1)
    n_classes = len(data["classes"])
    assert data["layers"] == [layer["name"] for layer in data["model"]["layers"]]
    assert len(data["typical"]) == len(data["layers"])
    for name, sp in data["splits"].items():
        assert sum(r["count"] for r in sp["rows"]) == sp["n_samples"]
        assert 100 <= len(sp["rows"]) <= 2000, len(sp["rows"])
        assert any(r["input"] != r["output"] for r in sp["rows"])
        keys = {(r["input"], tuple(r["path"]), r["output"]) for r in sp["rows"]}
        assert len(keys) == len(sp["rows"])
        for layer, cl in enumerate(sp["clusters"]):
            assert [c["id"] for c in cl] == list(range(data["analysis"]["n_clusters"][layer]))
            assert sum(c["count"] for c in cl) == sp["n_samples"]
            for c in cl:
                assert len(c["by_class"]) == n_classes
                assert all(k.startswith(name + "/") for k in c["exemplars"])
        counts = sp["scores"]["counts"]
        assert sum(sum(v) for v in counts.values()) == sp["n_samples"]
        assert len(sp["scores"]["bins"]) == len(counts["correct"]) + 1
    for key in data["thumbnails"]["images"]:
        assert len(base64.b64decode(data["thumbnails"]["images"][key])) == 64


def test_generator_unseen_classes_have_no_typical_clusters():
    data = make_report_data(train_classes=[0, 1, 2, 3, 4, 5, 6, 7], seed=2)
    for per_class in data["typical"]:
        assert per_class[8] == [] and per_class[9] == []
        assert all(per_class[c] for c in range(8))
    assert Counter(r["input"] for r in data["splits"]["test"]["rows"])[9] > 0
