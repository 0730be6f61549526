"""The estimators' parameters with scikit-learn's machinery, keyword-only parameters, and
:class:`~nnsig_core.NnsigWarning`."""

from __future__ import annotations

import inspect
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone

import nnsig_core
from nnsig_core import (
    InvalidParameterError,
    NnsigWarning,
    capture_arrays,
    open_store,
)
from nnsig_core.analysis import Discretizer, LayerClusterer, SignatureAnalysis
from nnsig_core.analysis.synthetic import make_blob_activations
from nnsig_core.diagnostics import Baselines, ScoreCombiner, SignatureScorer
from nnsig_core.diagnostics.combine import LayerCombiner
from nnsig_core.diagnostics.detectors import (
    ActivationPatternMonitor,
    KNNDistance,
    MahalanobisDistance,
)
from nnsig_core.diagnostics.neighbours import ClassNeighbours

#: Every estimator of nnsig_core (a subclass of scikit-learn's BaseEstimator).
ESTIMATORS = [SignatureAnalysis, LayerClusterer, Discretizer, SignatureScorer, Baselines,
              ClassNeighbours, ScoreCombiner, LayerCombiner, MahalanobisDistance, KNNDistance,
              ActivationPatternMonitor]

#: A bad value of one parameter of each estimator that has constraints.
BAD = {
    SignatureAnalysis: {"n_clusters": 0},
    LayerClusterer: {"n_init": "often"},
    Discretizer: {"n_bins": 1},
    SignatureScorer: {"method": "nope"},
    Baselines: {"k": 0},
    ClassNeighbours: {"n_components": 0},
}


def test_every_estimator_is_listed() -> None:
    import nnsig_core.analysis as an
    import nnsig_core.diagnostics as dg
    from nnsig_core.diagnostics import combine, detectors, neighbours

    found = {v for mod in (an, dg, combine, detectors, neighbours) for v in vars(mod).values()
             if isinstance(v, type) and issubclass(v, BaseEstimator)
             and v.__module__.startswith("nnsig_core")}
    assert found == set(ESTIMATORS)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_scikit_learn_validate_params_clone_and_get_params(cls: type) -> None:
    est = cls()
    assert not hasattr(est, "_parameter_constraints")  # scikit-learn's name, with its types
    est._validate_params()  # scikit-learn's method runs nnsig's checks: the defaults pass
    params = est.get_params()
    assert set(params) == set(inspect.signature(cls).parameters)
    twin = clone(est)
    assert type(twin) is cls and twin is not est and twin.get_params() == params
    assert repr(est).startswith(cls.__name__)


@pytest.mark.parametrize("cls", list(BAD), ids=lambda c: c.__name__)
def test_a_bad_value_is_still_refused(cls: type) -> None:
    (name, value), = BAD[cls].items()
    est = cls(**BAD[cls])
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of {cls.__name__}"):
        est._validate_params()
    with pytest.raises(InvalidParameterError):
        clone(est).set_params(**{name: value})._validate_params()


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_estimator_parameters_are_keyword_only(cls: type) -> None:
    params = inspect.signature(cls).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    first = next(iter(inspect.signature(cls).parameters))
    with pytest.raises(TypeError, match="positional argument"):
        cls(getattr(cls(), first))


@pytest.mark.parametrize(("func", "positional"), [
    (SignatureAnalysis.fit, ["self", "store", "split"]),
    (SignatureAnalysis.transform, ["self", "store", "split"]),
    (SignatureAnalysis.fit_transform, ["self", "store", "split"]),
    (SignatureAnalysis.signatures, ["self", "store", "split"]),
    (SignatureAnalysis.save, ["self", "store", "name"]),
    (SignatureScorer.fit, ["self", "analysis", "store"]),
    (SignatureScorer.score, ["self", "store", "split"]),
    (SignatureScorer.calibrate, ["self", "store", "split"]),
    (Baselines.fit, ["self", "store", "split"]),
    (Baselines.score, ["self", "store", "split"]),
    (nnsig_core.capture, ["adapter", "data", "store"]),
    (nnsig_core.capture_arrays, ["activations", "outputs", "labels", "store"]),
    (nnsig_core.capture_distributed, ["make_adapter", "dataset", "store"]),
    (nnsig_core.signature_scores, ["analysis", "store", "split"]),
    (nnsig_core.baseline_scores, ["analysis", "store", "split"]),
    (nnsig_core.evaluate, ["scores", "labels", "predictions", "known_classes"]),
    (nnsig_core.build_report_data, ["analysis", "store"]),
    (nnsig_core.write_report, ["analysis", "store", "out_dir"]),
    (nnsig_core.write_report_data, ["data", "out_dir"]),
    (nnsig_core.serve_report, ["directory"]),
], ids=lambda x: getattr(x, "__qualname__", None))
def test_data_positional_the_rest_keyword_only(func, positional) -> None:
    params = inspect.signature(func).parameters.values()
    plain = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert plain == positional
    assert all(p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY,
                          inspect.Parameter.VAR_KEYWORD) for p in params)


def _store(path: Path) -> None:
    data = make_blob_activations(n_samples=90, n_classes=3, layer_shapes=[(5,), (4,)], seed=1)
    capture_arrays(data["activations"], data["outputs"], data["labels"], path, split="train",
                   progress=False)


def test_fit_refuses_options_given_positionally(tmp_path: Path) -> None:
    _store(tmp_path / "s.zarr")
    analysis = SignatureAnalysis(n_clusters=3, progress=False)
    with pytest.raises(TypeError, match="positional argument"):
        analysis.fit(tmp_path / "s.zarr", "train", [0, 1])
    analysis.fit(tmp_path / "s.zarr", "train", classes=[0, 1])
    assert analysis.classes_ == [0, 1]


def test_nnsig_warning_points_at_the_users_call(tmp_path: Path) -> None:
    assert issubclass(NnsigWarning, UserWarning) and "NnsigWarning" in nnsig_core.__all__
    _store(tmp_path / "s.zarr")
    store = open_store(tmp_path / "s.zarr")
    with pytest.warns(NnsigWarning, match=r"Classes \[7\] have no sample in split 'train'") as rec:
        SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train", classes=[0, 7])
    assert len(rec) == 1
    assert rec[0].filename == __file__  # not a line inside nnsig_core


@pytest.mark.slow
def test_a_warning_reaches_the_cli_user_as_one_line(tmp_path: Path) -> None:
    _store(tmp_path / "s.zarr")
    root = Path(__file__).resolve().parents[1]
    env_path = f"{root}:{root / 'adapters'}"
    out = subprocess.run(
        [sys.executable, "-m", "nnsig_core", "analyze", str(tmp_path / "s.zarr"),
         "--clusters", "3", "--classes", "0,7"],
        capture_output=True, text=True, cwd=root, env={"PYTHONPATH": env_path, "PATH": ""},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "nnsig: Classes [7] have no sample in split 'train'.\n" in out.stderr
    assert "NnsigWarning" not in out.stderr  # one clean line, not Python's two


def test_a_constant_layer_warns_once_not_per_batch() -> None:
    """scikit-learn's warnings of KMeans (exact, or on the out-of-core path's sample) are
    NnsigWarnings, each message once per layer."""
    from nnsig_core.analysis.source import MemorySource

    X = np.zeros((4000, 3), dtype=np.float32)  # two distinct points for four clusters
    X[:2] = 1.0
    for method in ("exact", "lloyd"):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            LayerClusterer(n_clusters=4, method=method, progress=False).fit(
                MemorySource(X, np.arange(4000), block_rows=100), name="flat")
        msgs = [str(w.message) for w in rec]
        assert all(w.category is NnsigWarning and w.filename == __file__ for w in rec)
        assert len(msgs) == 2 and all(m.startswith("Layer 'flat': ") for m in msgs), msgs
        assert "Number of distinct clusters (2)" in msgs[0] and "2 of 4 clusters" in msgs[1]
