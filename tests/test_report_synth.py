"""Synthetic report data following docs/report-data.md, for the viewer and report tests.

``make_report_data`` draws samples whose cluster paths mostly follow a few
"typical" clusters per class and layer, with some deviations and
misclassifications, then aggregates them exactly as the contract says (rows,
per-cluster counts, per-class purity, typical clusters, score histograms and
the default threshold, thumbnail sprites, the layer map's points). It writes
format 2 by default and format 1 (no map, raw thumbnails) with ``version=1``,
to check the viewer still reads it. The tests at the bottom check the
generator itself against the contract.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter

import numpy as np

from nnsig_core.report.layermap import encode_xy
from nnsig_core.report.sprite import make_sprite

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
    version: int = 2,
    unlabelled: tuple[str, ...] = (),
    map_points: int = 400,
) -> dict:
    """A report data dict (format 2, or 1 with ``version=1``) for synthetic samples.

    ``samples`` maps split name to sample count (default train 3000, test 800,
    which gives a few hundred distinct rows with 10 classes and 4 layers).
    ``images``, when given, maps split name to a uint8 array (n, *thumb_shape)
    used for the thumbnails instead of random patterns. The splits named in
    ``unlabelled`` have no labels (-1). ``map_points`` points per split go on
    the layer map (misclassified ones first; 0 or ``version=1``: no map).
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
    true_labels = {s: d[0].copy() for s, d in drawn.items()}
    for s in unlabelled:
        labels, paths, outputs = drawn[s]
        drawn[s] = (np.full_like(labels, -1), paths, outputs)

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

    thumbs: list[tuple[str, np.ndarray]] = []
    out_splits = {}
    sample_scores_of: dict[str, np.ndarray] = {}
    for s, (labels, paths, outputs) in drawn.items():
        n = labels.size
        truth = true_labels[s]
        lab = labels >= 0
        sample_scores = None
        if scores:
            base = np.where(truth == outputs, rng.beta(2, 6, size=n), rng.beta(5, 2, size=n))
            sample_scores = np.where(~np.isin(truth, fitted), rng.beta(4, 2.5, size=n), base)
            sample_scores_of[s] = sample_scores
        groups: dict[tuple, list[int]] = {}
        for i in range(n):
            groups.setdefault(
                (int(labels[i]), tuple(int(x) for x in paths[i]), int(outputs[i])), []
            ).append(i)
        rows = []
        row_of = np.zeros(n, dtype=np.int64)
        for (inp, path, outp), idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            row_of[idx] = len(rows)
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
        purity, entropy, class_purity = [], [], []
        n_lab = int(lab.sum())
        for layer in range(n_layers):
            k = clusters[layer]
            table = np.zeros((k, n_classes), dtype=np.int64)
            np.add.at(table, (paths[lab, layer], labels[lab]), 1)
            cl = []
            for cid in range(k):
                members = np.flatnonzero(paths[:, layer] == cid)
                ex = [f"{s}/{int(i)}" for i in members[:n_exemplars]]
                if thumbnails:
                    for key, i in zip(ex, members[:n_exemplars], strict=False):
                        if images is not None and s in images:
                            px = np.asarray(images[s][int(i)], dtype=np.uint8)
                        else:
                            px = _pattern(int(truth[i]), thumb_shape, rng)
                        thumbs.append((key, px))
                tot = int(table[cid].sum())
                cl.append(
                    {
                        "id": cid,
                        "count": int(members.size),
                        "by_class": [int(v) for v in table[cid]],
                        "purity": round(float(table[cid].max() / tot), 4) if tot else None,
                        "exemplars": ex,
                    }
                )
            layer_clusters.append(cl)
            nz = table.sum(1) > 0
            purity.append(round(float(table.max(1)[nz].sum() / n_lab), 4) if n_lab else None)
            entropy.append(
                round(float(sum(_entropy_bits(row) * row.sum() for row in table[nz]) / n_lab), 4)
                if n_lab else None
            )
            share = table / np.maximum(table.sum(1, keepdims=True), 1)
            per_c = table.sum(0)
            class_purity.append([
                round(float((table[:, c] * share[:, c]).sum() / per_c[c]), 4) if per_c[c] else None
                for c in range(n_classes)
            ])
        sp = {
            "n_samples": int(n),
            "accuracy": round(float((labels[lab] == outputs[lab]).mean()), 4) if n_lab else None,
            "n_signatures": len({tuple(p) for p in paths.tolist()}),
            "purity": purity,
            "entropy": entropy,
            "rows": rows,
            "clusters": layer_clusters,
        }
        if version >= 2:
            sp.update(has_labels=bool(n_lab), n_labelled=n_lab, class_purity=class_purity)
        out_splits[s] = sp
        sp["_arrays"] = (labels, paths, outputs, row_of)

    fit_split_scores = sample_scores_of.get(fit_split)
    threshold = None
    if scores and version >= 2 and fit_split_scores is not None:
        fl_, _, fo_ = drawn[fit_split]
        ok = (fl_ == fo_) & np.isin(fl_, fitted)
        v = np.sort(fit_split_scores[ok])
        threshold = float(v[v.size - int(np.floor(0.05 * v.size))])
    for s, sp in out_splits.items():
        labels, paths, outputs, row_of = sp.pop("_arrays")
        if scores:
            bins = np.linspace(0.0, 1.0, 21)
            seen = np.isin(labels, fitted)
            lab = labels >= 0
            masks = {"correct": lab & seen & (labels == outputs),
                     "misclassified": lab & seen & (labels != outputs),
                     "unseen": lab & ~seen, "unlabelled": ~lab}
            if version < 2 or not (~lab).any():
                masks.pop("unlabelled")
            sc = sample_scores_of[s]
            sp["scores"] = {
                "name": "combined",
                "bins": [round(float(b), 4) for b in bins],
                "counts": {g: [int(x) for x in np.histogram(sc[m], bins=bins)[0]]
                           for g, m in masks.items()},
            }
            if threshold is not None:
                sp["scores"]["at_threshold"] = {
                    "flagged": {g: int((sc[m] >= threshold).sum()) for g, m in masks.items()},
                    "total": {g: int(m.sum()) for g, m in masks.items()},
                }
        if version >= 2 and map_points > 0:
            sp["map"] = _map_points(s, labels, paths, outputs, row_of, sample_scores_of.get(s),
                                    threshold, clusters, map_points, images, thumb_shape,
                                    true_labels[s], rng)

    data = {
        "format_version": version,
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
    if version >= 2:
        data["label"] = "default"
        data["separable_purity"] = 0.9
        if threshold is not None:
            data["threshold"] = {"value": threshold, "split": fit_split, "rate": 0.05,
                                 "n_correct": 0, "score": "combined"}
        if map_points > 0:
            data["map"] = {"method": "pca", "fitted_on": fit_split, "max_points": map_points}
    if thumbnails and thumbs:
        if version >= 2:
            data["thumbnails"] = make_sprite(np.stack([px for _, px in thumbs]),
                                             [k for k, _ in thumbs])
        else:
            data["thumbnails"] = {"shape": list(thumb_shape), "images": {
                k: base64.b64encode(px.tobytes()).decode("ascii") for k, px in thumbs}}
    return data


def _map_points(split, labels, paths, outputs, row_of, scores, threshold, clusters, max_points,
                images, thumb_shape, truth, rng):
    """A split's ``map`` entry: misclassified samples first, points near their cluster's centre."""
    mis = np.flatnonzero((labels >= 0) & (labels != outputs))
    rest = np.flatnonzero(~((labels >= 0) & (labels != outputs)))
    take_mis = mis[: min(mis.size, (2 * max_points) // 3)]
    take_rest = rng.choice(rest, size=min(rest.size, max_points - take_mis.size), replace=False)
    pos = np.sort(np.concatenate([take_mis, take_rest]).astype(np.int64))
    layers = []
    for layer, k in enumerate(clusters):
        ang = 2 * np.pi * np.arange(k) / k
        centres = np.column_stack([10 * np.cos(ang), 6 * np.sin(ang)])
        xy = centres[paths[pos, layer]] + rng.normal(0, 0.9, size=(pos.size, 2))
        xy += 0.4 * np.column_stack([np.cos(truth[pos]), np.sin(truth[pos])])
        allp = np.vstack([xy, centres])
        lo, hi = allp.min(0) - 0.5, allp.max(0) + 0.5
        bounds = [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])]
        cq = np.frombuffer(base64.b64decode(encode_xy(centres, bounds)), dtype="<u2").reshape(-1, 2)
        layers.append({"xy": encode_xy(xy, bounds), "bounds": bounds,
                       "centroids": cq.astype(int).tolist(), "explained": [0.3, 0.1]})
    if images is not None and split in images:
        pix = np.asarray(images[split][pos], dtype=np.uint8)
    else:
        pix = np.stack([_pattern(int(truth[i]), thumb_shape, rng) for i in pos])
    flagged = (scores >= threshold) if (scores is not None and threshold is not None) else None
    kinds = {"misclassified": [int(mis.size), int(take_mis.size)]}
    if flagged is not None:
        kinds["flagged"] = [int(flagged.sum()), int(flagged[pos].sum())]
    kinds["other"] = [int(rest.size), int(take_rest.size)]
    out = {
        "n_points": int(pos.size),
        "positions": pos.tolist(),
        "sample_index": (pos + 1000).tolist(),
        "rows": row_of[pos].tolist(),
        "kinds": kinds,
        "layers": layers,
        "thumbnails": make_sprite(pix),
    }
    if scores is not None:
        out["scores"] = [round(float(x), 4) for x in scores[pos]]
    return out


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
    keys = {k for sp in data["splits"].values() for cl in sp["clusters"] for c in cl
            for k in c["exemplars"]}
    assert set(data["thumbnails"]["keys"]) == keys and data["thumbnails"]["shape"] == [8, 8]
    for sp in data["splits"].values():
        m = sp["map"]
        assert m["n_points"] == len(m["positions"]) == len(m["rows"]) == len(m["scores"])
        assert m["positions"] == sorted(set(m["positions"]))
        for layer in m["layers"]:
            assert len(base64.b64decode(layer["xy"])) == 4 * m["n_points"]
        mis = sum(r["count"] for r in sp["rows"] if r["input"] != r["output"])
        assert m["kinds"]["misclassified"][0] == mis
    v1 = make_report_data(seed=1, version=1)
    assert v1["format_version"] == 1 and "map" not in v1["splits"]["train"]
    for key in v1["thumbnails"]["images"]:
        assert len(base64.b64decode(v1["thumbnails"]["images"][key])) == 64


def test_generator_unlabelled_split():
    data = make_report_data(seed=3, unlabelled=("test",), samples={"train": 600, "test": 300})
    test = data["splits"]["test"]
    assert test["has_labels"] is False and test["accuracy"] is None
    assert {r["input"] for r in test["rows"]} == {-1}
    assert sum(test["scores"]["counts"]["unlabelled"]) == 300
    assert all(sum(c["by_class"]) == 0 for cl in test["clusters"] for c in cl)


def test_generator_unseen_classes_have_no_typical_clusters():
    data = make_report_data(train_classes=[0, 1, 2, 3, 4, 5, 6, 7], seed=2)
    for per_class in data["typical"]:
        assert per_class[8] == [] and per_class[9] == []
        assert all(per_class[c] for c in range(8))
    assert Counter(r["input"] for r in data["splits"]["test"]["rows"])[9] > 0
