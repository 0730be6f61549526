"""Bad input: every refusal names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnsig_core import InvalidParameterError, capture_arrays, open_store
from nnsig_core.analysis import (
    AnalysisError,
    EmptySelectionError,
    MissingLabelsError,
    NonFiniteActivationError,
    NotFittedError,
    SignatureAnalysis,
    TooFewSamplesError,
)
from nnsig_core.analysis.synthetic import make_blob_activations, make_blob_store
from nnsig_core.store import IncompleteStoreError, StoreError


def _capture(path: Path, n: int = 120, labels: bool = True, wrong: bool = False,
             nan_at: int | None = None, split: str = "train", **kw) -> None:
    data = make_blob_activations(n_samples=n, n_classes=3, layer_shapes=[(5,), (4,)], seed=1)
    acts = data["activations"]
    if nan_at is not None:
        acts["layer1"][nan_at, 2] = np.nan
    outputs = data["outputs"]
    if wrong:
        outputs = np.roll(outputs, 1, axis=1)
    capture_arrays(activations=acts, outputs=outputs, labels=data["labels"] if labels else None,
                   store=path, split=split, progress=False, chunk_bytes=128, **kw)


def _analysis(**kw) -> SignatureAnalysis:
    kw.setdefault("n_clusters", 3)
    return SignatureAnalysis(progress=False, **kw)


def test_no_correctly_classified_sample(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr", wrong=True)
    with pytest.raises(EmptySelectionError, match="classified correctly.*only_correct=False"):
        _analysis().fit(tmp_path / "s.zarr")
    _analysis(only_correct=False).fit(tmp_path / "s.zarr")  # the fix works


@pytest.mark.parametrize("driver", ["local", "dask"])
def test_a_class_with_no_correct_sample_is_named_in_a_warning(tmp_path: Path, driver,
                                                              request) -> None:
    """only_correct=True leaves out a class none of whose samples the model gets right: a
    warning names it and the fix, on either driver; the fix works, silently."""
    from nnsig_core import NnsigWarning

    data = make_blob_activations(n_samples=150, n_classes=3, layer_shapes=[(5,)], seed=1)
    outputs = data["outputs"].copy()
    outputs[data["labels"] == 2] = np.roll(outputs[data["labels"] == 2], 1, axis=1)
    capture_arrays(activations=data["activations"], outputs=outputs, labels=data["labels"],
                   store=tmp_path / "s.zarr", progress=False, chunk_bytes=128)
    client = request.getfixturevalue("client") if driver == "dask" else False
    with pytest.warns(NnsigWarning, match=r"leaves out class\(es\) \[2\].*none of their 50 "
                                          r"samples.*only_correct=False"):
        a = _analysis().fit(tmp_path / "s.zarr", client=client)
    assert a.classes_ == [0, 1]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NnsigWarning)
        assert _analysis(only_correct=False).fit(tmp_path / "s.zarr",
                                                 client=client).classes_ == [0, 1, 2]


def test_fewer_samples_than_clusters(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr", n=30)
    with pytest.raises(TooFewSamplesError, match="Only 30 sample.*at most 30"):
        _analysis(n_clusters=50).fit(tmp_path / "s.zarr")
    with pytest.raises(TooFewSamplesError, match="'layer1': 40"):
        _analysis(n_clusters={"layer1": 40}).fit(tmp_path / "s.zarr")


def test_empty_class_subset(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr")
    with pytest.raises(EmptySelectionError, match="classes is empty"):
        _analysis().fit(tmp_path / "s.zarr", classes=[])
    with pytest.raises(EmptySelectionError, match=r"label in \[7, 8\].*labels present are \[0, 1, 2\]"):
        _analysis().fit(tmp_path / "s.zarr", classes=[7, 8])


def test_unknown_layer_lists_the_available_ones(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="'layr1'.*Available layers: layer0, layer1.*did you mean 'layer1'"):
        _analysis(layers=["layr1"]).fit(tmp_path / "s.zarr")
    # Asked before fitting (as `nnsig analyze` does): the same answer, the layers in model order.
    with pytest.raises(StoreError, match="'layr1'.*Available layers: layer0, layer1"):
        _analysis(layers=["layr1"]).resolve_layers(tmp_path / "s.zarr", "train")
    assert _analysis(layers=["layer1", "layer0"]).resolve_layers(tmp_path / "s.zarr",
                                                                 "train") == ["layer0", "layer1"]


def test_missing_split(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="available splits: train"):
        _analysis().fit(tmp_path / "s.zarr", "validation")


def test_incomplete_store(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr")
    store = open_store(tmp_path / "s.zarr", mode="r+")
    info = store.split_attrs("train")
    info["complete"] = False
    store.write_split_attrs("train", info)
    with pytest.raises(IncompleteStoreError, match="resume=True"):
        _analysis().fit(open_store(tmp_path / "s.zarr"))


def test_missing_labels(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr", labels=False)
    with pytest.raises(MissingLabelsError, match="no labels.*only_correct=False"):
        _analysis().fit(tmp_path / "s.zarr")
    with pytest.raises(MissingLabelsError, match="no labels"):
        _analysis(only_correct=False).fit(tmp_path / "s.zarr", classes=[0])
    a = _analysis(only_correct=False).fit(tmp_path / "s.zarr")
    sigs = a.transform(tmp_path / "s.zarr", "train")
    assert sigs.accuracy is None and np.isnan(sigs.purity()).all()
    with pytest.raises(MissingLabelsError, match="by='output'"):
        sigs.composition()
    assert sum(m.sum() for m in sigs.composition(by="output")) == 2 * sigs.n_samples
    assert a.summary(tmp_path / "s.zarr", "train")["layers"][0]["purity"] is None


def test_capture_arrays_refuses_nan_naming_layer_and_sample(tmp_path: Path) -> None:
    """NaN in arrays is refused at capture (it used to pass, and fit refused it later), with
    the layer, the sample and the fixes; keep_nonfinite=True stores it as it is."""
    with pytest.raises(NonFiniteActivationError, match=r"layer 'layer1' at sample 57: unit 2 "
                       r"is nan.*np.nan_to_num.*keep_nonfinite=True") as ei:
        _capture(tmp_path / "s.zarr", nan_at=57)
    assert ei.value.row == 57 and ei.value.layer == "layer1"
    assert "train" not in open_store(tmp_path / "s.zarr").splits  # nothing that looks whole
    data = make_blob_activations(n_samples=20, n_classes=3, layer_shapes=[(5,)], seed=1)
    outputs = data["outputs"].copy()
    outputs[4, 0] = np.inf
    with pytest.raises(NonFiniteActivationError, match="the model output at sample 4"):
        capture_arrays(data["activations"], outputs, data["labels"], tmp_path / "o.zarr",
                       progress=False)


def test_nan_names_layer_and_sample(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr", nan_at=57, keep_nonfinite=True)
    with pytest.raises(NonFiniteActivationError, match="'layer1' of split 'train'.*sample 57") as ei:
        _analysis(only_correct=False).fit(tmp_path / "s.zarr")
    assert ei.value.row == 57 and ei.value.layer == "layer1"
    # Also when only the split being transformed has it.
    _capture(tmp_path / "t.zarr")
    _capture(tmp_path / "t.zarr", split="test", nan_at=3, keep_nonfinite=True)
    a = _analysis().fit(tmp_path / "t.zarr")
    with pytest.raises(NonFiniteActivationError, match="split 'test'.*sample 3"):
        a.transform(tmp_path / "t.zarr", "test")


def test_not_fitted(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr")
    a = _analysis()
    for call in (lambda: a.transform(tmp_path / "s.zarr", "train"),
                 lambda: a.summary(tmp_path / "s.zarr", "train"),
                 lambda: a.save(tmp_path / "s.zarr")):
        with pytest.raises(NotFittedError, match="fit"):
            call()


def test_bad_parameters(tmp_path: Path) -> None:
    _capture(tmp_path / "s.zarr")
    with pytest.raises(InvalidParameterError, match="'memory_limit'.*memory size.*'plenty'"):
        _analysis(memory_limit="plenty").fit(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="STRATEGY"):
        _analysis(discretizer="gaussian").fit(tmp_path / "s.zarr")
    with pytest.raises(InvalidParameterError, match="'n_clusters'.*int >= 1.*got 0"):
        _analysis(n_clusters=0).fit(tmp_path / "s.zarr")
    with pytest.raises(AnalysisError, match="n_clusters must be an int >= 1 for every layer"):
        _analysis(n_clusters={"layer1": 0}).fit(tmp_path / "s.zarr")
    with pytest.raises(InvalidParameterError, match="'n_init'.*'auto'"):
        _analysis(n_init=0).fit(tmp_path / "s.zarr")
    with pytest.raises(InvalidParameterError, match="'reduce'"):
        _analysis(reduce=0).fit(tmp_path / "s.zarr")
    with pytest.raises(InvalidParameterError, match="'layers'.*non-empty"):
        _analysis(layers=[]).fit(tmp_path / "s.zarr")


def test_transform_of_another_model(tmp_path: Path) -> None:
    make_blob_store(tmp_path / "a.zarr", splits=["train"], n_samples=100)
    make_blob_store(tmp_path / "b.zarr", splits=["train"], n_samples=100,
                    layer_shapes=[(8,), (7,), (2, 3)])
    a = _analysis(n_clusters=4).fit(tmp_path / "a.zarr")
    with pytest.raises(StoreError, match="'layer1' has unit shape"):
        a.transform(tmp_path / "b.zarr", "train")


# --------------------------------------------------------------------------- a new user's slips
@pytest.fixture
def blobs(tmp_path: Path):
    path = tmp_path / "b.zarr"
    make_blob_store(path, splits=("train", "val", "test"), n_samples=[300, 200, 100],
                    n_classes=3, error_rate=0.1)
    return open_store(path)


def test_an_unfitted_analysis_is_not_fitted_everywhere(blobs) -> None:
    """Scores, a report and a notebook view of an analysis never fitted: scikit-learn's
    NotFittedError, as transform and save give (not an AttributeError)."""
    from sklearn.exceptions import NotFittedError

    from nnsig_core.diagnostics import signature_scores
    from nnsig_core.report import show, write_report

    with pytest.raises(NotFittedError):
        signature_scores(SignatureAnalysis(), blobs, "test")
    with pytest.raises(NotFittedError):
        write_report(SignatureAnalysis(), blobs, blobs.location + "-report")
    with pytest.raises(NotFittedError):
        show(SignatureAnalysis(), blobs)


def test_a_report_of_no_split_in_the_store_names_those_it_holds(blobs, tmp_path) -> None:
    from nnsig_core.report import write_report

    analysis = _analysis().fit(blobs, "train")
    for splits in (["tst"], ["test", "tst"]):  # with a split that is there: no warning then
        with pytest.raises(ValueError, match=r"'tst' not in .*Did you mean 'test'\? Its "
                           r"splits: .*test"):  # an error to act on (it was warned, then left)
            write_report(analysis, blobs, tmp_path / "r", splits=splits)
    assert not (tmp_path / "r").exists()


def test_scores_of_a_missing_split_fail_before_any_fit(blobs) -> None:
    from nnsig_core.diagnostics import signature_scores

    analysis = _analysis().fit(blobs, "train")
    with pytest.raises(StoreError, match="'tst' is not in the store.*available splits"):
        signature_scores(analysis, blobs, "tst")
    assert not analysis.__dict__.get("_scorers")  # nothing was fitted first


def test_scoring_the_validation_split_itself_warns(blobs) -> None:
    from nnsig_core.diagnostics import signature_scores

    analysis = _analysis().fit(blobs, "train")
    with pytest.warns(UserWarning, match="optimistic"):
        signature_scores(analysis, blobs, "val", validation_split="val")
