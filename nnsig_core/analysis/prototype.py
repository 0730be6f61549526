"""The academic prototype's two output files, for tools written against them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sklearn.utils.validation import check_is_fitted

from nnsig_core.analysis.tables import Table
from nnsig_core.store import ActivationStore, open_store


def export_prototype(analysis: Any, store: ActivationStore | str | os.PathLike[str], split: str,
                     out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the prototype's ``clusters_info.json`` and ``clusterized_values.csv`` into ``out_dir``.

    ``clusters_info.json``
        One list per layer of ``{"layer": l, "class": c, "instances_count": n,
        "cluster_index": i}`` records (``l`` 1-based, non-zero counts only): fit samples of
        class ``c`` in cluster ``i``.
    ``clusterized_values.csv``
        Header ``input_class,cluster_in_layer1,...,cluster_in_layerL,output_class``;
        one line per sample of ``split``.

    Returns ``{"clusters_info": path, "clusterized_values": path}``.
    """
    check_is_fitted(analysis, "clusterers_")
    store = open_store(store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = [
        [{"layer": j + 1, "class": int(c), "instances_count": int(comp[i, c]),
          "cluster_index": int(i)}
         for c in range(comp.shape[1]) for i in range(comp.shape[0]) if comp[i, c]]
        for j, comp in enumerate(analysis.fit_composition_)
    ]
    sigs = analysis.signatures(store, split)  # first: a split it cannot read writes nothing
    p_info = out / "clusters_info.json"
    p_info.write_text(json.dumps(info, indent=1), encoding="utf-8")
    header = ["input_class", *[f"cluster_in_layer{j + 1}" for j in range(len(sigs.layers))],
              "output_class"]
    rows = [(int(a), *(int(x) for x in ids), int(b))
            for a, ids, b in zip(sigs.labels, sigs.cluster_ids, sigs.predictions, strict=True)]
    p_csv = out / "clusterized_values.csv"
    Table(header, rows).to_csv(p_csv)
    return {"clusters_info": p_info, "clusterized_values": p_csv}
