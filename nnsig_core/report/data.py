"""Build the report's data (``docs/report-data.md``, format version 2) of one run, or of
several side by side (:mod:`~nnsig_core.report.compare`); everything is aggregated except the
layer map's bounded sample of points.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sklearn.utils.validation import check_is_fitted

from nnsig_core._util import now_iso
from nnsig_core.report import layermap
from nnsig_core.report.compare import comparison_data
from nnsig_core.report.single import MapOptions, draw_map_points, prepare_run, run_body
from nnsig_core.report.spec import normalize_runs, opening_split, report_splits
from nnsig_core.report.summary import SUPPORTED_FORMAT
from nnsig_core.report.token_report import check_token_grid
from nnsig_core.store import ActivationStore

if TYPE_CHECKING:
    from nnsig_core.analysis.engine import SignatureAnalysis

#: Version of the report data format (``docs/report-data.md``).
REPORT_FORMAT_VERSION = SUPPORTED_FORMAT


def build_report_data(
    analysis: SignatureAnalysis | Sequence[Any],
    store: ActivationStore | str | os.PathLike[str] | None = None, *,
    splits: Sequence[str] | None = None, title: str | None = None,
    scores: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
    labels: Sequence[str] | None = None, score_name: str = "combined", score_bins: int = 20,
    n_exemplars: int = 4, projection: str = "pca", map_points: int = 2000,
    map_thumbnail_size: int | None = 16, random_state: int = 0, token_label: Any = None,
    token_grid: Sequence[int] | None = None, client: Any = None,
) -> dict[str, Any]:
    """The report data of ``docs/report-data.md`` as a JSON-serialisable dict.

    Parameters
    ----------
    analysis : SignatureAnalysis or sequence of runs
        A fitted analysis, or up to 4 runs side by side: analyses of ``store``,
        ``(analysis, store[, scores])`` tuples or :class:`~nnsig_core.report.spec.ReportRun`.
    store : ActivationStore or path, optional
        The store of every run that does not give its own.
    splits : sequence of str, optional
        Splits to include (default: every complete split of the analysis's row level in every
        run's store, the fit split first); the report opens on the first other one.
    title : str, optional
        Header of the page (default: the model class and store name, or the run labels).
    scores : optional
        None shows the scores saved with the analysis; what ``signature_scores`` returns shows
        its ``combined`` score (and a calibrated scorer's conformal threshold); ``{split:
        array}`` the arrays (NaN where unknown); False none. With several runs, a list.
    labels : sequence of str, optional
        The runs' names (default: the analyses' names, with the store's name if equal).
    score_name : str
        Name of the scores shown by the viewer.
    score_bins : int
        Histogram bins.
    n_exemplars : int
        Exemplars (nearest the centre) kept per cluster.
    projection : {"pca", "umap"}
        The layer map's projection; ``"umap"`` needs ``umap-learn``.
    map_points : int
        Most points of a split on the layer map (0: no map); misclassified, flagged and
        changed samples first.
    map_thumbnail_size : int or None
        Largest side, in pixels, of a map point's thumbnail (None keeps them whole).
    random_state : int
        Seed of the map's sampling and projection.
    token_label : callable, optional
        For token row spaces: ``label(position, token_id) -> str`` naming listed tokens.
    token_grid : (rows, columns, prefix), optional
        For token row spaces of image models: the patch grid of each token's input.
    client : dask.distributed.Client, None or False
        Compute or read the signatures on this Dask cluster (``None``: the active client;
        ``False``: here); only aggregates and bounded data come here.

    Returns
    -------
    dict

    Raises
    ------
    TypeError, ValueError
        For runs, scores or labels that cannot be read; ImportError for ``projection="umap"``
        without umap-learn.
    """
    layermap.check_projection(projection)
    if int(map_points) < 0:
        raise ValueError(f"map_points must be >= 0, not {map_points}")
    runs, several = normalize_runs(analysis, store, scores, labels)
    for r in runs:
        check_is_fitted(r.analysis)
    splits = report_splits(runs, splits)
    first = runs[0].store
    assert isinstance(first, ActivationStore)  # normalize_runs opened it
    token_grid = check_token_grid(token_grid, first, runs[0].analysis.row_level(first), splits)
    opts = MapOptions(projection, int(map_points), map_thumbnail_size, int(random_state))
    body_kw = {"score_name": score_name, "score_bins": score_bins, "n_exemplars": n_exemplars,
               "token_label": token_label, "token_grid": token_grid}
    preps = [prepare_run(r, splits, client=client) for r in runs]
    if several:
        data = comparison_data(preps, opts, with_map=opts.max_points > 0, **body_kw)
        head = {"format_version": REPORT_FORMAT_VERSION,
                "title": title or " vs ".join(str(r.label) for r in runs),
                "created": now_iso(),
                "open_split": opening_split([s for s in splits if s in preps[0].splits],
                                            runs[0].analysis.fit_split_,
                                            _calibration_split(preps[0]))}
        return {**head, **data}
    prep = preps[0]
    positions, kinds = None, {}
    if opts.max_points > 0:
        positions = {}
        for s in prep.splits:
            positions[s], kinds[s] = draw_map_points(prep, s, opts)
    body = run_body(prep, positions, kinds, opts, **body_kw)
    return {"format_version": REPORT_FORMAT_VERSION,
            "title": title or _default_title(prep, _model_name(body["model"])),
            "created": now_iso(),
            "open_split": opening_split(prep.splits, prep.run.analysis.fit_split_,
                                        _calibration_split(prep)),
            **body}


def _model_name(model: dict[str, Any]) -> str | None:
    """The model's class, or for Keras' generic ``Functional`` and ``Sequential`` the name
    given to the model (``keras.Model(..., name="textclf")``)."""
    cls, name = model.get("model_class"), model.get("name")
    named = name and not str(name).startswith(("functional", "sequential"))  # not Keras' own
    return str(name) if cls in ("Functional", "Sequential", "Model") and named else cls


def _calibration_split(prep: Any) -> str | None:
    return prep.threshold.get("split") if prep.threshold else None


def _default_title(prep: Any, model_class: str | None) -> str:
    """``Model (store)``, with the analysis's name when it is not the default one and the
    row level of a token analysis: reports of one store tell each other apart in a run
    menu."""
    where = prep.store.location.rstrip("/").rsplit("/", 1)[-1] or prep.store.location
    name = getattr(prep.run.analysis, "name_", None)
    extra = [f"analysis {name}"] if name not in (None, "default") else []
    if prep.run.analysis.row_level(prep.store) == "tokens":
        extra.append("tokens")
    where = ", ".join([where, *extra])
    return f"{model_class} ({where})" if model_class and model_class != "unknown" else where
