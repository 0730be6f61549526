"""Store and capture: round trips, streaming, interruption and resume, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnsig_core
from nnsig_core import (
    ArrayAdapter,
    CaptureError,
    IncompleteStoreError,
    StoreError,
    capture,
    capture_arrays,
    open_store,
)
from nnsig_core.capture import make_thumbnails
from nnsig_core.store import layer_key


class LinearReLU:
    """A tiny two-layer numpy network implementing the adapter protocol."""

    framework = "numpy-test"

    def __init__(self, d_in: int = 6, d_hidden: int = 5, n_out: int = 3, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.normal(size=(d_in, d_hidden)).astype(np.float32)
        self.w2 = rng.normal(size=(d_hidden, n_out)).astype(np.float32)
        self.calls = 0

    def hidden(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(np.asarray(x, dtype=np.float32) @ self.w1, 0)

    def run(self, inputs):
        self.calls += 1
        h = self.hidden(inputs)
        out = h @ self.w2
        return out, {"hidden": h, "out/logits": out.copy()}

    def model_summary(self):
        return {
            "model_class": "LinearReLU",
            "parameters": int(self.w1.size + self.w2.size),
            "layers": [
                {"name": "hidden", "type": "ReLU", "parameters": int(self.w1.size)},
                {"name": "out/logits", "type": "Linear", "parameters": int(self.w2.size)},
            ],
        }

    def to_numpy(self, x):
        return np.asarray(x)


def _data(n: int = 103, d: int = 6, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 3, size=n)


def test_round_trip_arrays(tmp_path: Path) -> None:
    model = LinearReLU()
    X, y = _data()
    store = capture(model, (X, y), tmp_path / "s.zarr", batch_size=10, class_names=["a", "b", "c"],
                    chunk_bytes=64, progress=False)
    again = open_store(tmp_path / "s.zarr")
    assert again.splits == ["train"]
    assert again.layers("train") == ["hidden", "out/logits"]
    assert again.is_complete("train")
    assert again.n_samples("train") == len(X)
    h = again.activations("train", "hidden")
    assert isinstance(h, zarr.Array)
    assert h.shape == (103, 5)
    assert h.chunks[0] < 103  # several chunks, aligned writes across batch boundaries
    np.testing.assert_allclose(h[:], model.hidden(X), rtol=1e-6)
    np.testing.assert_array_equal(again.labels("train"), y)
    out = model.hidden(X) @ model.w2
    np.testing.assert_allclose(again.outputs("train")[:], out, rtol=1e-5)
    np.testing.assert_array_equal(again.predictions("train"), out.argmax(1))
    np.testing.assert_array_equal(again.sample_index("train"), np.arange(103))
    assert again.class_names() == ["a", "b", "c"]
    info = again.split_attrs("train")
    assert info["framework"] == "numpy-test"
    assert info["model"]["model_class"] == "LinearReLU"
    layers = {d["name"]: d for d in again.layer_info("train")}
    assert layers["hidden"]["type"] == "ReLU" and layers["hidden"]["shape"] == [5]
    assert info["capture"]["dtype"] == "float32"
    assert store.path == tmp_path / "s.zarr"


def test_dimension_names_and_xarray(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    X, y = _data(40)
    capture(LinearReLU(), (X, y), tmp_path / "s.zarr", progress=False)
    ds = xr.open_zarr(tmp_path / "s.zarr", group="train", consolidated=True)
    assert ds.sizes["sample"] == 40
    assert set(ds.data_vars) == {"hidden", "outputs", layer_key("out/logits")}
    assert set(ds.coords) == {"labels", "predictions", "sample_index", "output"}
    np.testing.assert_array_equal(ds["labels"].values, y)


def test_iterable_batches_and_unknown_length(tmp_path: Path) -> None:
    model = LinearReLU()
    X, y = _data(57)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for lo in range(0, 57, 8):
            yield X[lo : lo + 8], y[lo : lo + 8]

    store = capture(model, gen(), tmp_path / "s.zarr", split="test", chunk_bytes=40, progress=False)
    assert store.split_attrs("test")["n_expected"] == 57
    np.testing.assert_allclose(store.activations("test", "hidden")[:], model.hidden(X), rtol=1e-6)
    np.testing.assert_array_equal(store.sample_index("test"), np.arange(57))


def test_max_samples_and_float16(tmp_path: Path) -> None:
    X, y = _data(50)
    store = capture(LinearReLU(), (X, y), tmp_path / "s.zarr", batch_size=7, max_samples=20,
                    dtype="float16", progress=False)
    arr = store.activations("train", "hidden")
    assert arr.shape == (20, 5) and arr.dtype == np.float16
    np.testing.assert_allclose(arr[:], LinearReLU().hidden(X[:20]), rtol=2e-3, atol=2e-3)


def test_one_hot_labels_and_no_labels(tmp_path: Path) -> None:
    X, y = _data(30)
    onehot = np.eye(3)[y]
    s = capture(LinearReLU(), (X, onehot), tmp_path / "a.zarr", progress=False)
    np.testing.assert_array_equal(s.labels("train"), y)
    s2 = capture(LinearReLU(), (X, None), tmp_path / "b.zarr", progress=False)
    assert not s2.has_labels("train")
    assert (s2.labels("train") == -1).all()
    # Class probabilities (label smoothing) count as one-hot.
    soft = 0.9 * onehot + 0.1 / 3
    s3 = capture(LinearReLU(), (X, soft), tmp_path / "c.zarr", progress=False)
    np.testing.assert_array_equal(s3.labels("train"), y)


def test_a_second_input_read_as_labels_is_refused(tmp_path: Path) -> None:
    """A (ids, mask, labels) batch, as TensorDataset(ids, mask, y) yields it, is read as
    (inputs, labels, sample_index): the mask is not one-hot, so nothing is stored as labels."""
    X, y = _data(30)
    mask = np.ones((30, 4), dtype=np.int64)
    mask[:, 3] = 0
    batches = [(X[i : i + 10], mask[i : i + 10], y[i : i + 10]) for i in range(0, 30, 10)]
    with pytest.raises(CaptureError, match=r"not one-hot: row 0 sums to 3.*'attention_mask'"):
        capture(LinearReLU(), batches, tmp_path / "m.zarr", progress=False)
    assert not (tmp_path / "m.zarr" / "train").exists()


class Boom(RuntimeError):
    pass


def _interrupting(X: np.ndarray, y: np.ndarray, bs: int, fail_after: int):
    for i, lo in enumerate(range(0, len(X), bs)):
        if i == fail_after:
            raise Boom("power cut")
        yield X[lo : lo + bs], y[lo : lo + bs]


@pytest.fixture
def record_progress_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record the written count after every chunk (normally about once a second)."""
    monkeypatch.setattr(sys.modules["nnsig_core.capture.session"], "RECORD_EVERY_S", 0.0)


def _interrupted_capture(path: Path, fail_after: int) -> tuple[LinearReLU, np.ndarray, np.ndarray]:
    """A capture of 200 samples in batches of 16 that fails at batch ``fail_after``."""
    model = LinearReLU()
    X, y = _data(200)
    with pytest.raises(Boom):
        capture(model, _interrupting(X, y, 16, fail_after=fail_after), path, chunk_bytes=200,
                progress=False)
    return model, X, y


def test_an_interrupted_capture_records_every_chunk_it_wrote(tmp_path: Path) -> None:
    """The count is recorded about once a second while a capture runs, and once more when it
    stops on an exception: a resume then starts after the last chunk written, not at the last
    record (a capture under a second long recorded none)."""
    path = tmp_path / "s.zarr"
    _interrupted_capture(path, fail_after=7)  # 112 rows given
    s = open_store(path)
    chunk = s.activations("train", "hidden").chunks[0]
    written = s.split_attrs("train")["n_written"]
    assert 0 < written <= 112 and written % chunk == 0
    assert s.verify().ok  # every chunk it counts is there
    assert (path / "train" / "hidden" / "c" / str(written // chunk - 1) / "0").is_file()


@pytest.mark.usefixtures("record_progress_every_chunk")
def test_interrupted_capture_is_incomplete_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    model, X, y = _interrupted_capture(path, fail_after=7)
    s = open_store(path)
    assert not s.is_complete("train")
    written = s.split_attrs("train")["n_written"]
    chunk = s.activations("train", "hidden").chunks[0]
    assert 0 < written < 200 and written % chunk == 0
    with pytest.raises(IncompleteStoreError, match="resume=True"):
        s.require_complete("train")
    # Without resume or overwrite an existing split is an error, not an append.
    with pytest.raises(StoreError, match="resume=True"):
        capture(model, (X, y), path, progress=False)
    calls_before = model.calls
    s = capture(model, (X, y), path, batch_size=16, resume=True, progress=False)
    assert s.is_complete("train") and s.n_samples("train") == 200
    # Only the missing samples were run again.
    assert model.calls - calls_before == -(-(200 - written) // 16)
    np.testing.assert_allclose(s.activations("train", "hidden")[:], model.hidden(X), rtol=1e-6)
    np.testing.assert_array_equal(s.labels("train"), y)


@pytest.mark.usefixtures("record_progress_every_chunk")
def test_resume_iterable_checks_order(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    model, X, y = _interrupted_capture(path, fail_after=9)
    perm = np.random.default_rng(5).permutation(200)
    with pytest.raises(CaptureError, match="same order"):
        capture(model, _interrupting(X[perm], y[perm], 16, 99), path, resume=True, progress=False)
    s = capture(model, _interrupting(X, y, 16, 99), path, resume=True, progress=False)
    assert s.is_complete("train")
    np.testing.assert_allclose(s.activations("train", "hidden")[:], model.hidden(X), rtol=1e-6)
    np.testing.assert_array_equal(s.sample_index("train"), np.arange(200))


def test_a_generator_repairs_the_complete_split_it_wrote(tmp_path: Path) -> None:
    """A complete split captured from a generator, a chunk deleted: `resume=True` with the same
    generator (what `nnsig verify` advises) recaptures its rows (it said "this data gives
    None"); the values are those of the first capture."""
    import shutil

    X, y = _data(200)
    model = LinearReLU()

    def batches():
        for i in range(0, 200, 20):
            yield X[i:i + 20], y[i:i + 20]

    path = tmp_path / "s.zarr"
    capture(model, batches(), path, chunk_bytes=512, progress=False)
    before = np.asarray(open_store(path).activations("train", "hidden")[:])
    chunks = sorted((path / "train").glob("*/c/1/*"))
    assert chunks
    shutil.rmtree(chunks[0]) if chunks[0].is_dir() else chunks[0].unlink()
    assert not open_store(path).verify().ok
    store = capture(model, batches(), path, resume=True, chunk_bytes=512, progress=False)
    assert store.verify().ok and store.is_complete("train")
    np.testing.assert_array_equal(store.activations("train", "hidden")[:], before)


def test_keyboard_interrupt_leaves_incomplete(tmp_path: Path) -> None:
    class Interrupting(LinearReLU):
        def run(self, inputs):
            if self.calls == 3:
                raise KeyboardInterrupt
            return super().run(inputs)

    X, y = _data(100)
    with pytest.raises(KeyboardInterrupt):
        capture(Interrupting(), (X, y), tmp_path / "s.zarr", batch_size=10, progress=False)
    assert not open_store(tmp_path / "s.zarr").is_complete("train")


def test_overwrite_and_resume_of_complete(tmp_path: Path) -> None:
    X, y = _data(30)
    path = tmp_path / "s.zarr"
    capture(LinearReLU(seed=0), (X, y), path, progress=False)
    s = capture(LinearReLU(seed=0), (X, y), path, resume=True, progress=False)
    assert s.is_complete("train")
    s = capture(LinearReLU(seed=3), (X[:10], y[:10]), path, overwrite=True, progress=False)
    assert s.n_samples("train") == 10
    np.testing.assert_allclose(s.activations("train", "hidden")[:], LinearReLU(seed=3).hidden(X[:10]),
                               rtol=1e-6)
    with pytest.raises(CaptureError, match="not both"):
        capture(LinearReLU(), (X, y), path, resume=True, overwrite=True, progress=False)


def test_other_split_must_match_model(tmp_path: Path) -> None:
    X, y = _data(30)
    path = tmp_path / "s.zarr"
    capture(LinearReLU(), (X, y), path, progress=False)
    with pytest.raises(StoreError, match=r"layer 'hidden' has shape \(7,\) here but \(5,\)"):
        capture(LinearReLU(d_hidden=7), (X, y), path, split="test", progress=False)

    class Fewer(LinearReLU):
        def run(self, inputs):
            out, acts = super().run(inputs)
            return out, {"hidden": acts["hidden"]}

    with pytest.raises(StoreError, match="layers missing from this model: \\['out/logits'\\]"):
        capture(Fewer(), (X, y), path, split="test", progress=False)
    # The refused captures left no half-made split behind... only the good one.
    s = capture(LinearReLU(), (X, y), path, split="test", progress=False)
    assert s.splits == ["test", "train"]


def test_bad_inputs(tmp_path: Path) -> None:
    X, y = _data(30)
    with pytest.raises(CaptureError, match="not an nnsig adapter"):
        capture(object(), (X, y), tmp_path / "s.zarr")  # type: ignore[arg-type]
    for bad in ["", "analysis", "labels", "a/b", "_x"]:
        with pytest.raises(CaptureError, match="Invalid split name"):
            capture(LinearReLU(), (X, y), tmp_path / "s.zarr", split=bad, progress=False)
    with pytest.raises(CaptureError, match="X has 30 rows but y has 29"):
        capture(LinearReLU(), (X, y[:-1]), tmp_path / "s.zarr", progress=False)
    with pytest.raises(CaptureError, match="dtype"):
        capture(LinearReLU(), (X, y), tmp_path / "s.zarr", dtype="int8", progress=False)
    with pytest.raises(CaptureError, match="integer class indices"):
        capture(LinearReLU(), (X, y + 0.5), tmp_path / "t.zarr", progress=False)
    with pytest.raises(CaptureError, match="no samples"):
        capture(LinearReLU(), iter([]), tmp_path / "u.zarr", progress=False)
    # The inputs alone: the fix named works.
    with pytest.raises(CaptureError, match=r"one array of shape \(30, 6\).*\(X, None\)"):
        capture(LinearReLU(), X, tmp_path / "v.zarr", progress=False)
    assert not capture(LinearReLU(), (X, None), tmp_path / "v.zarr", progress=False).has_labels(
        "train")
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").create_group("x")
    with pytest.raises(StoreError, match="not an nnsig store"):
        open_store(tmp_path / "foreign.zarr")
    with pytest.raises(StoreError, match="non-empty Zarr group that nnsig did not write"):
        capture(LinearReLU(), (X, y), tmp_path / "foreign.zarr", progress=False)


def test_store_errors_name_alternatives(tmp_path: Path) -> None:
    X, y = _data(30)
    s = capture(LinearReLU(), (X, y), tmp_path / "s.zarr", progress=False)
    with pytest.raises(StoreError, match="Did you mean 'hidden'"):
        s.activations("train", "hiden")
    with pytest.raises(StoreError, match="available splits: train"):
        s.labels("test")
    ro = open_store(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="read-only"):
        capture(LinearReLU(), (X, y), ro, split="test", progress=False)


def test_nonfinite_writer_error_surfaces(tmp_path: Path) -> None:
    class Broken(LinearReLU):
        def run(self, inputs):
            out, acts = super().run(inputs)
            if self.calls == 2:
                acts["hidden"] = acts["hidden"][:, :2]
            return out, acts

    X, y = _data(40)
    with pytest.raises(CaptureError, match="Layer 'hidden' gave shape"):
        capture(Broken(), (X, y), tmp_path / "s.zarr", batch_size=10, progress=False)
    assert not open_store(tmp_path / "s.zarr").is_complete("train")


def test_capture_arrays_and_thumbnails(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((64, 1, 40, 40)).astype(np.float32)
    acts = {"conv": rng.random((64, 4, 3, 3)).astype(np.float32), "fc": rng.random((64, 8))}
    out = rng.random((64, 10))
    labels = rng.integers(0, 10, 64)
    s = capture_arrays(acts, out, labels, tmp_path / "s.zarr", inputs=images, batch_size=10,
                       layer_types={"conv": "Conv2d"}, progress=False)
    assert s.split_attrs("train")["framework"] == "arrays"
    np.testing.assert_allclose(s.activations("train", "conv")[:], acts["conv"])
    thumbs = s.inputs("train")
    assert thumbs is not None and thumbs.dtype == np.uint8 and thumbs.shape == (64, 20, 20)
    np.testing.assert_array_equal(thumbs[:], make_thumbnails(images))
    with pytest.raises(ValueError, match="samples but outputs has"):
        ArrayAdapter({"a": np.zeros((3, 2))}, np.zeros((4, 2)))


def test_make_thumbnails_layouts() -> None:
    flat = np.arange(2 * 784, dtype=np.float32).reshape(2, 784)
    assert make_thumbnails(flat).shape == (2, 28, 28)
    rgb_first = np.random.default_rng(0).random((3, 3, 64, 48))
    t = make_thumbnails(rgb_first)
    assert t.shape == (3, 32, 24, 3) and t.dtype == np.uint8
    assert make_thumbnails(np.zeros((2, 10, 10, 1), np.uint8)).shape == (2, 10, 10)
    with pytest.raises(CaptureError, match="not a square image"):
        make_thumbnails(np.zeros((2, 10)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 90),
    batch=st.integers(1, 40),
    chunk_bytes=st.sampled_from([1, 20, 64, 300, 10_000]),
)
def test_chunking_never_changes_values(tmp_path_factory, n: int, batch: int, chunk_bytes: int) -> None:
    path = tmp_path_factory.mktemp("h") / "s.zarr"
    model = LinearReLU()
    X, y = _data(n)
    s = capture(model, (X, y), path, batch_size=batch, chunk_bytes=chunk_bytes, progress=False)
    np.testing.assert_allclose(s.activations("train", "hidden")[:], model.hidden(X), rtol=1e-6)
    np.testing.assert_array_equal(s.labels("train"), y)
    np.testing.assert_array_equal(s.sample_index("train"), np.arange(n))
    # An edge chunk is stored whole: no chunk longer than the split, whose length a list of
    # batches tells as well as arrays do.
    assert s.activations("train", "hidden").chunks[0] <= n
    batches = [(X[lo : lo + batch], y[lo : lo + batch]) for lo in range(0, n, batch)]
    s = capture(model, batches, path, split="listed", chunk_bytes=chunk_bytes, progress=False)
    assert s.split_attrs("listed")["n_expected"] == n
    assert s.activations("listed", "hidden").chunks[0] <= n
    np.testing.assert_allclose(s.activations("listed", "hidden")[:], model.hidden(X), rtol=1e-6)


def test_core_never_imports_a_framework() -> None:
    code = (
        "import sys, nnsig_core\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(nnsig_core.__path__, 'nnsig_core.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = [m for m in ('torch', 'keras', 'tensorflow', 'jax', 'nnsig_torch', 'nnsig_keras',"
        " 'datasets')"
        " if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


def test_public_api_is_listed() -> None:
    """Every name a package's __all__ lists resolves; no other module has an __all__."""
    import importlib
    import pkgutil

    packages = ["nnsig_core"] + [m.name for m in pkgutil.walk_packages(nnsig_core.__path__,
                                                                        "nnsig_core.") if m.ispkg]
    for package in packages:
        module = importlib.import_module(package)
        for name in module.__all__:
            assert hasattr(module, name), (package, name)
    root = Path(nnsig_core.__file__).parent
    with_all = [str(p.relative_to(root)) for p in root.rglob("*.py")
                if p.name != "__init__.py" and "\n__all__" in p.read_text()]
    assert not with_all, with_all


def test_the_public_names_are_listed_once_in_the_design() -> None:
    """docs/design.md's "Public names" table is each package's __all__, exactly."""
    import importlib
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text()
    section = text.split("## Public names", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)` \| (.+) \|$", section, flags=re.M)
    assert rows, "no table under '## Public names'"
    for package, names in rows:
        listed = re.findall(r"`(\w+)`", names)
        module = importlib.import_module(package)
        assert sorted(listed) == sorted(module.__all__), (
            package, sorted(set(module.__all__) - set(listed)),
            sorted(set(listed) - set(module.__all__)))


def test_batches_may_carry_source_positions(tmp_path: Path) -> None:
    X, y = _data(40)
    keep = np.flatnonzero(y != 1)

    def subset():
        for lo in range(0, len(keep), 6):
            idx = keep[lo : lo + 6]
            yield X[idx], y[idx], idx

    s = capture(LinearReLU(), subset(), tmp_path / "s.zarr", progress=False)
    np.testing.assert_array_equal(s.sample_index("train"), keep)
    np.testing.assert_array_equal(s.labels("train"), y[keep])
    with pytest.raises(CaptureError, match="sample indices"):
        capture(LinearReLU(), [(X[:4], y[:4], keep[:3])], tmp_path / "t.zarr", progress=False)


def test_adapters_share_one_selection_error_type() -> None:
    from nnsig_core import LayerSelectionError, UnknownLayerError
    from nnsig_core.protocol import close_matches

    assert issubclass(UnknownLayerError, LayerSelectionError)
    assert issubclass(UnknownLayerError, KeyError)
    assert str(UnknownLayerError("no 'x'")) == "no 'x'"
    names = ["encoder/dense_2", "dense_1", "layer1.0.conv1", "fc"]
    assert close_matches("dense_2", names)[0] == "encoder/dense_2"
    assert "layer1.0.conv1" in close_matches("conv1", names)
    assert close_matches("zzz", names) == []


@pytest.mark.parametrize("compressor", [None, "lz4", "zstd"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_codecs_round_trip(tmp_path: Path, compressor, dtype) -> None:
    """Every codec goes through nnsig's chunk encoder, whose chunk files hold exactly the bytes
    zarr itself writes for the same data and metadata (checksum included)."""
    import zarr

    from nnsig_core.capture.chunks import ChunkEncoder

    model = LinearReLU()
    X, y = _data(77)
    s = capture(model, (X, y), tmp_path / "s.zarr", batch_size=9, chunk_bytes=100,
                compressor=compressor, dtype=dtype, progress=False)
    for key in ("hidden", "labels", "outputs"):
        a = s.activations("train", "hidden") if key == "hidden" else s.root["train"][key]
        assert ChunkEncoder.for_array(a) is not None
        assert a.metadata.codecs[-1].to_dict() == {"name": "crc32c"}
        by_zarr = zarr.create_array(tmp_path / f"zarr-{key}.zarr", shape=a.shape,
                                    chunks=a.chunks, dtype=a.dtype,
                                    fill_value=a.fill_value, compressors=a.compressors,
                                    config={"write_empty_chunks": True})
        by_zarr[:] = a[:]

        def chunk_files(directory: Path) -> dict[str, bytes]:
            return {str(f.relative_to(directory)): f.read_bytes()
                    for f in (directory / "c").rglob("*") if f.is_file()}

        ours = chunk_files(tmp_path / "s.zarr" / "train" / a.basename)
        assert len(ours) == -(-a.shape[0] // a.chunks[0]), key
        assert ours == chunk_files(tmp_path / f"zarr-{key}.zarr"), key
    arr = s.activations("train", "hidden")
    tol = 2e-3 if dtype == "float16" else 1e-6
    np.testing.assert_allclose(arr[:], model.hidden(X), rtol=tol, atol=tol)
    np.testing.assert_array_equal(s.labels("train"), y)
    recorded = s.split_attrs("train")["capture"]["compressor"]
    assert (recorded is None) == (compressor is None)
    with pytest.raises(CaptureError, match="Unknown compressor"):
        capture(model, (X, y), tmp_path / "t.zarr", compressor="brotli", progress=False)
    assert not (tmp_path / "t.zarr").exists()


# ---------------------------------------------------------------------------- review findings
class MultiInput(LinearReLU):
    """Takes a list [x, bias] of two inputs, as torch's default_collate builds them."""

    def run(self, inputs):
        x, bias = inputs
        return super().run(np.asarray(x) + np.asarray(bias))


def test_writer_failure_with_a_full_queue_raises_instead_of_hanging(tmp_path, monkeypatch) -> None:
    import time as _time

    from nnsig_core.capture import writer

    def disk_full(*args, **kwargs):
        _time.sleep(0.3)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_chunks", disk_full)
    X, y = _data(30)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            capture(LinearReLU(), (X, y), tmp_path / "s.zarr", batch_size=10, chunk_bytes=200,
                    progress=False)
        except BaseException as exc:
            errors.append(exc)

    import threading

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "capture hung after the writer failed"
    assert len(errors) == 1 and isinstance(errors[0], CaptureError)
    assert "No space left" in str(errors[0])
    assert not open_store(tmp_path / "s.zarr").is_complete("train")


@pytest.mark.usefixtures("record_progress_every_chunk")
def test_resume_with_column_labels(tmp_path: Path) -> None:
    X, y = _data(100)
    col = y[:, None]
    with pytest.raises(Boom):
        capture(LinearReLU(), _interrupting(X, col, 10, 6), tmp_path / "s.zarr", chunk_bytes=200,
                progress=False)
    s = capture(LinearReLU(), _interrupting(X, col, 10, 99), tmp_path / "s.zarr", resume=True,
                progress=False)
    np.testing.assert_array_equal(s.labels("train"), y)


@pytest.mark.usefixtures("record_progress_every_chunk")
def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    X, y = _data(100)
    images = np.random.default_rng(0).random((100, 16)).astype(np.float32)
    path = tmp_path / "s.zarr"
    with pytest.raises(Boom):
        capture(LinearReLU(d_in=16), _interrupting(images, y, 10, 6), path, chunk_bytes=200,
                keep_inputs=True, progress=False)
    with pytest.raises(CaptureError, match="keep_inputs was True"):
        capture(LinearReLU(d_in=16), _interrupting(images, y, 10, 99), path, resume=True,
                progress=False)
    with pytest.raises(CaptureError, match="dtype was 'float32'"):
        capture(LinearReLU(d_in=16), _interrupting(images, y, 10, 99), path, resume=True,
                keep_inputs=True, dtype="float16", progress=False)
    written = open_store(path).split_attrs("train")["n_written"]
    with pytest.raises(CaptureError, match="max_samples"):
        capture(LinearReLU(d_in=16), _interrupting(images, y, 10, 99), path, resume=True,
                keep_inputs=True, max_samples=written - 1, progress=False)
    s = capture(LinearReLU(d_in=16), _interrupting(images, y, 10, 99), path, resume=True,
                keep_inputs=True, progress=False)
    assert s.is_complete("train")
    assert (np.asarray(s.inputs("train")[:]).reshape(100, -1).max(axis=1) == 255).all()


def test_empty_batch_does_not_end_the_data(tmp_path: Path) -> None:
    X, y = _data(100)
    batches = [(X[:20], y[:20]), (X[:0], y[:0]), (X[20:], y[20:])]
    s = capture(LinearReLU(), batches, tmp_path / "s.zarr", progress=False)
    assert s.n_samples("train") == 100
    np.testing.assert_array_equal(s.labels("train"), y)


def test_failed_creation_leaves_no_half_made_split(tmp_path: Path) -> None:
    X, y = _data(30, d=7)
    with pytest.raises(CaptureError, match="not a square image"):
        capture(LinearReLU(d_in=7), (X, y), tmp_path / "s.zarr", keep_inputs=True, progress=False)
    s = capture(LinearReLU(d_in=7), (X, y), tmp_path / "s.zarr", progress=False)
    assert s.is_complete("train")


def test_resume_after_the_last_chunk_was_written(tmp_path: Path) -> None:
    """Interrupted between the last chunk and the completion mark (e.g. Ctrl-C there)."""
    X, y = _data(100)
    path = tmp_path / "s.zarr"
    s = capture(LinearReLU(), (X, y), path, chunk_bytes=200, progress=False)
    chunk = s.activations("train", "hidden").chunks[0]
    for written in (100, 100 - 100 % chunk + 0, 50):  # all, a chunk boundary, mid-chunk
        rw = open_store(path, mode="r+")
        info = rw.split_attrs("train")
        info.update(complete=False, n_written=written)
        rw.write_split_attrs("train", info)
        s = capture(LinearReLU(), (X, y), path, resume=True, progress=False)
        assert s.is_complete("train") and s.n_samples("train") == 100
        np.testing.assert_allclose(s.activations("train", "hidden")[:], LinearReLU().hidden(X),
                                   rtol=1e-6)


def test_list_of_inputs_is_cut_per_input(tmp_path: Path) -> None:
    X, y = _data(40)
    bias = np.ones_like(X)
    batches = [([X[i : i + 10], bias[i : i + 10]], y[i : i + 10]) for i in range(0, 40, 10)]
    s = capture(MultiInput(), batches, tmp_path / "s.zarr", max_samples=15, progress=False)
    assert s.n_samples("train") == 15
    np.testing.assert_allclose(s.activations("train", "hidden")[:], LinearReLU().hidden(X[:15] + 1),
                               rtol=1e-6)


def test_refused_overwrite_keeps_the_old_split(tmp_path: Path) -> None:
    X, y = _data(30)
    path = tmp_path / "s.zarr"
    capture(LinearReLU(), (X, y), path, progress=False)
    with pytest.raises(CaptureError, match="X has 30 rows but y has 29"):
        capture(LinearReLU(), (X, y[:-1]), path, overwrite=True, progress=False)
    capture(LinearReLU(), (X, y), path, split="test", progress=False)
    with pytest.raises(StoreError, match="does not match split 'test'"):
        capture(LinearReLU(d_hidden=7), (X, y), path, overwrite=True, progress=False)
    s = open_store(path)
    assert s.n_samples("train") == 30 and s.layer_info("train")[0]["shape"] == [5]


def test_layer_named_like_a_metadata_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    acts = {"labels": rng.random((200, 64)).astype(np.float32)}
    s = capture_arrays(acts, rng.random((200, 3)), rng.integers(0, 3, 200), tmp_path / "s.zarr",
                       compressor=None, progress=False)
    assert s.layers("train") == ["labels"]
    assert s.activations("train", "labels").shape == (200, 64)
    assert s.nbytes_stored("train", "labels") >= 200 * 64 * 4


@pytest.mark.parametrize("bad,match", [
    ({"split": "a/b"}, "Invalid split name"),
    ({"split": "x.tokens"}, "reserved for the token rows"),
    ({"resume": True, "overwrite": True}, "not both"),
    ({"dtype": "int8"}, "dtype must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"max_samples": 0}, "max_samples must be"),
    ({"compressor": "gzip9"}, "Unknown compressor"),
    ({"class_names": "cat"}, "sequence of names"),
    ({"class_names": ["a", "a"]}, "twice"),
])
def test_capture_and_capture_distributed_check_their_shared_options_alike(
        tmp_path: Path, bad: dict, match: str) -> None:
    """One CaptureOptions holds and checks the options both capture functions share: the same
    error from each (before a store or a cluster is touched), and from the options alone."""
    from nnsig_core.capture import CaptureOptions, capture_distributed

    X, y = _data(10)
    with pytest.raises(CaptureError, match=match) as local:
        capture(LinearReLU(), (X, y), tmp_path / "a.zarr", progress=False, **bad)
    with pytest.raises(CaptureError, match=match) as distributed:
        capture_distributed(LinearReLU, (X, y), tmp_path / "b.zarr", progress=False, **bad)
    with pytest.raises(CaptureError, match=match) as alone:
        CaptureOptions(**bad)
    assert str(local.value) == str(distributed.value) == str(alone.value)
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_capture_options_are_frozen_and_normalised() -> None:
    from nnsig_core.capture import CaptureOptions, default_predict

    options = CaptureOptions(class_names=("a", 2), compressor="lz4")
    assert options.class_names == ["a", "2"] and options.predict is default_predict
    assert options.codec is not None and options.settings()["compressor"] != "none"
    with pytest.raises(AttributeError):
        options.split = "test"  # type: ignore[misc]


def test_capture_distributed_is_reached_from_nnsig_core_capture_without_importing_dask() -> None:
    code = ("import importlib, sys; c = importlib.import_module('nnsig_core.capture'); "
            "assert 'dask' not in sys.modules and 'distributed' not in sys.modules; "
            "f = c.capture_distributed; assert f.__module__ == 'nnsig_core.distributed.capture'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_log_lines_go_above_the_progress_bars_on_a_terminal(tmp_path: Path, monkeypatch,
                                                            request) -> None:
    """On a terminal (a script with logging.basicConfig), the log lines of a capture and of
    a fit, which reads ahead on a thread while it logs, start lines of their own: they ran
    into the bars ("...8.27ksample/s]nnsig INFO: Captured ..."); after the bars close, the
    user's handler is the one it was."""
    import io
    import logging

    from nnsig_core import SignatureAnalysis

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    handler = logging.StreamHandler(term)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    nnsig_logger = logging.getLogger("nnsig")
    levels = root.level, nnsig_logger.level
    root.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the loggers' caches
    nnsig_logger.setLevel(logging.NOTSET)
    request.addfinalizer(lambda: (root.setLevel(levels[0]), nnsig_logger.setLevel(levels[1])))
    rng = np.random.default_rng(0)
    n = 3000
    acts = {f"l{i}": rng.normal(size=(n, 16)).astype(np.float32) for i in range(3)}
    labels = np.arange(n) % 3
    adapter = ArrayAdapter(acts, np.eye(3, dtype=np.float32)[labels])
    batches = ((np.arange(i, i + 100), labels[i:i + 100]) for i in range(0, n, 100))
    store = capture(adapter, batches, tmp_path / "t.zarr", progress=True)
    SignatureAnalysis(n_clusters=3, progress=True).fit(store)
    text = term.getvalue()
    logged = [line for line in text.split("\n") if "LOG " in line]
    assert sum("Captured 3000 samples" in line for line in logged) == 1  # once, not twice
    assert any("Fitted layer" in line for line in logged) and "sample/s" in text  # bars shown
    assert all(line.split("\r")[-1].startswith("LOG ") for line in logged), logged
    assert root.handlers == [handler]


def test_class_names_other_than_the_store_s_are_refused(tmp_path):
    """Label i is one class in every split: a split naming the classes otherwise is refused
    before anything is written (the report showed the fit split's cats as birds), and the
    names the error gives are accepted."""
    rng = np.random.default_rng(0)
    acts, labels = rng.normal(size=(60, 4)).astype(np.float32), np.arange(60) % 3
    path = tmp_path / "c.zarr"
    capture_arrays({"h": acts}, acts[:, :3], labels, path, class_names=["cat", "dog", "bird"],
                   progress=False)
    with pytest.raises(CaptureError, match=r"split 'train'.*class_names=\['cat', 'dog', 'bird'\]"):
        capture_arrays({"h": acts}, acts[:, :3], labels, path, split="test",
                       class_names=["bird", "cat", "dog"], progress=False)
    assert open_store(path).splits == ["train"]
    capture_arrays({"h": acts}, acts[:, :3], labels, path, split="test",
                   class_names=["cat", "dog", "bird"], progress=False)
    capture_arrays({"h": acts}, acts[:, :3], labels, path, split="val", progress=False)
