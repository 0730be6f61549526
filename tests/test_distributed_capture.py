"""capture_distributed on a real dask.distributed cluster: bytes, shards, retries, resume, refusals."""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from nnsig_core import (  # noqa: E402
    CaptureError,
    IncompleteStoreError,
    capture,
    open_store,
)
from nnsig_core.analysis import SignatureAnalysis  # noqa: E402
from nnsig_core.distributed import capture_distributed  # noqa: E402
from nnsig_core.distributed.shards import shard_marker_prefix  # noqa: E402
from nnsig_core.store import ClaimError  # noqa: E402

# Worker processes cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Rows read by the data sets of this module, in this process (in-process clusters only).
READ: list[int] = []
FAILED: set[int] = set()
BUILT: list[int] = []


class LinearReLU:
    """A two-layer numpy network implementing the adapter protocol (with a weights fingerprint)."""

    framework = "numpy-test"

    def __init__(self, d_in: int = 6, d_hidden: int = 5, n_out: int = 3, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.normal(size=(d_in, d_hidden)).astype(np.float32)
        self.w2 = rng.normal(size=(d_hidden, n_out)).astype(np.float32)

    def run(self, inputs):
        h = np.maximum(np.asarray(inputs, dtype=np.float32).reshape(len(inputs), -1) @ self.w1, 0)
        out = h @ self.w2
        return out, {"hidden": h, "out/logits": out.copy()}

    def model_summary(self):
        return {"model_class": "LinearReLU", "parameters": int(self.w1.size + self.w2.size),
                "layers": [{"name": "hidden", "type": "ReLU"}, {"name": "out/logits",
                                                                 "type": "Linear"}]}

    def model_fingerprint(self) -> str:
        return hashlib.blake2b(self.w1.tobytes() + self.w2.tobytes(), digest_size=8).hexdigest()

    def to_numpy(self, x):
        return np.asarray(x)


def make_linear(d_in: int = 6, seed: int = 0) -> LinearReLU:
    return LinearReLU(d_in=d_in, seed=seed)


def make_differing() -> LinearReLU:
    """Each call (each worker) builds other weights."""
    BUILT.append(1)
    return LinearReLU(seed=len(BUILT))


class Dataset:
    """A map-style data set of (x, y) pairs, recording the rows read."""

    def __init__(self, X: np.ndarray, y: np.ndarray | None, fail_at: int | None = None,
                 error: type[BaseException] = RuntimeError, once: bool = False,
                 bad_label_at: int | None = None) -> None:
        self.X, self.y = X, y
        self.fail_at, self.error, self.once, self.bad_label_at = fail_at, error, once, bad_label_at

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int):
        READ.append(int(i))
        if i == self.fail_at and not (self.once and i in FAILED):
            FAILED.add(i)
            raise self.error(f"cannot read sample {i}")
        label = -5 if i == self.bad_label_at else (None if self.y is None else int(self.y[i]))
        return (self.X[i], label)


def _data(n: int = 1003, d: int = 6, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 3, size=n)


def _files(split_dir: Path) -> dict[str, bytes]:
    """Every file of a split but the split's own metadata (which records times and ids)."""
    return {str(f.relative_to(split_dir)): f.read_bytes() for f in split_dir.rglob("*")
            if f.is_file() and f != split_dir / "zarr.json"}


def _same_bytes(a: Path, b: Path, split: str = "train") -> None:
    fa, fb = _files(a / split), _files(b / split)
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == []


# ---------------------------------------------------------------------------- bytes
@pytest.mark.parametrize("form", ["arrays", "dataset"])
@pytest.mark.parametrize("shard_rows", [None, 400])
def test_chunks_are_byte_identical_to_a_single_process_capture(client, tmp_path, form,
                                                               shard_rows) -> None:
    X, y = _data()
    data = (X, y) if form == "arrays" else Dataset(X, y)
    # 200 rows per chunk (the layers' 4000 bytes), 40 per batch: shards of whole chunks cut
    # the data into the single-process capture's batches.
    s = capture_distributed(make_linear, data, tmp_path / "d.zarr", batch_size=40,
                            chunk_bytes=4000, shard_rows=shard_rows, client=client,
                            progress=False)
    capture(make_linear(), (X, y), tmp_path / "s.zarr", batch_size=40, chunk_bytes=4000,
            progress=False)
    _same_bytes(tmp_path / "d.zarr", tmp_path / "s.zarr")
    info = s.split_attrs("train")
    assert info["complete"] and info["n_samples"] == 1003 and info["has_labels"]
    assert info["capture"]["chunk_rows"] == 200
    assert info["capture"]["distributed"] and info["capture"]["shard_rows"] == (shard_rows or 200)
    assert info["model_fingerprint"] == make_linear().model_fingerprint()
    np.testing.assert_array_equal(s.sample_index("train"), np.arange(1003))
    assert s.verify().ok
    assert not (tmp_path / "d.zarr" / shard_marker_prefix("train")).exists()  # markers removed


@pytest.mark.parametrize("compressor,dtype", [("lz4", "float32"), ("zstd", "float16")])
def test_codecs_thumbnails_and_no_labels(client, tmp_path, compressor, dtype) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, size=(333, 8, 8)).astype(np.float32)
    kw = dict(batch_size=40, chunk_bytes=2000, compressor=compressor, dtype=dtype,
              keep_inputs=True, progress=False)
    capture_distributed(functools.partial(make_linear, 64), (images, None), tmp_path / "d.zarr",
                        client=client, **kw)
    capture(make_linear(64), (images, None), tmp_path / "s.zarr", **kw)
    _same_bytes(tmp_path / "d.zarr", tmp_path / "s.zarr")
    s = open_store(tmp_path / "d.zarr")
    assert not s.has_labels("train") and s.inputs("train").shape == (333, 8, 8)


def test_a_shard_not_a_multiple_of_the_chunk_is_refused(client, tmp_path) -> None:
    X, y = _data(300)
    with pytest.raises(CaptureError, match="multiple of the split's 200 rows per chunk"):
        capture_distributed(make_linear, (X, y), tmp_path / "d.zarr", batch_size=40,
                            chunk_bytes=4000, shard_rows=250, client=client, progress=False)
    # Refused before any shard: no split is left, so the corrected call needs no overwrite.
    assert open_store(tmp_path / "d.zarr").splits == []
    capture_distributed(make_linear, (X, y), tmp_path / "d.zarr", batch_size=40,
                        chunk_bytes=4000, shard_rows=200, client=client, progress=False)
    assert open_store(tmp_path / "d.zarr").is_complete("train")


# ---------------------------------------------------------------------------- failures
def test_a_failing_task_is_retried(client, tmp_path) -> None:
    X, y = _data(600)
    FAILED.clear()
    capture_distributed(make_linear, Dataset(X, y, fail_at=321, error=OSError, once=True),
                        tmp_path / "d.zarr", batch_size=50, chunk_bytes=4000, shard_rows=200,
                        client=client, progress=False)
    assert 321 in FAILED  # it failed once, then the retried task wrote the shard
    capture(make_linear(), (X, y), tmp_path / "s.zarr", batch_size=50, chunk_bytes=4000,
            progress=False)
    _same_bytes(tmp_path / "d.zarr", tmp_path / "s.zarr")


def test_errors_in_the_data_stop_the_capture_without_retries(client, tmp_path) -> None:
    X, y = _data(600)
    READ.clear()
    with pytest.raises(CaptureError, match="Sample 455 has label -5"):
        capture_distributed(make_linear, Dataset(X, y, bad_label_at=455), tmp_path / "d.zarr",
                            batch_size=50, chunk_bytes=4000, shard_rows=200, client=client,
                            retries=3, progress=False)
    assert READ.count(455) == 1  # not retried
    s = open_store(tmp_path / "d.zarr")
    assert not s.is_complete("train")
    with pytest.raises(IncompleteStoreError, match="resume=True"):
        SignatureAnalysis(n_clusters=2, progress=False).fit(s, "train", client=client)


def test_an_interrupted_capture_resumes_with_only_its_missing_shards(client, tmp_path) -> None:
    X, y = _data(1003)
    path = tmp_path / "d.zarr"
    with pytest.raises(RuntimeError, match="cannot read sample 650"):
        capture_distributed(make_linear, Dataset(X, y, fail_at=650), path, batch_size=50,
                            chunk_bytes=4000, shard_rows=200, client=client, retries=0,
                            progress=False)
    s = open_store(path)
    info = s.split_attrs("train")
    assert not info["complete"] and info["n_written"] in (0, 200, 400, 600)
    done = sorted(p.name for p in (path / shard_marker_prefix("train")).iterdir())
    assert "000003.json" not in done and len(done) >= 1  # shard 3 (rows 600-799) failed
    READ.clear()
    capture_distributed(make_linear, Dataset(X, y), path, batch_size=50, client=client,
                        resume=True, progress=False)
    per_shard = np.bincount(np.array(READ) // 200, minlength=6)
    written = {int(name[:6]) for name in done}
    for shard in range(6):  # written shards: only their first and last rows' labels checked
        assert per_shard[shard] == (2 if shard in written else min(200, 1003 - 200 * shard))
    capture(make_linear(), (X, y), tmp_path / "s.zarr", batch_size=50, chunk_bytes=4000,
            progress=False)
    _same_bytes(path, tmp_path / "s.zarr")
    assert open_store(path).is_complete("train")


def _read_beyond_checks(n: int, shard_rows: int) -> set[int]:
    """Rows read in this process but the first and last of each shard (the resume's label
    checks, or the first batch of a repair)."""
    checks = {r for lo in range(0, n, shard_rows) for r in (lo, min(lo + shard_rows, n) - 1)}
    return set(READ) - checks


def test_a_done_shard_missing_a_chunk_has_only_that_chunk_captured_again(client, tmp_path,
                                                                          caplog) -> None:
    X, y = _data(1003)
    path = tmp_path / "d.zarr"
    with pytest.raises(RuntimeError, match="cannot read sample 650"):
        capture_distributed(make_linear, Dataset(X, y, fail_at=650), path, batch_size=50,
                            chunk_bytes=4000, shard_rows=200, client=client, retries=0,
                            progress=False)
    done = {int(p.name[:6]) for p in (path / shard_marker_prefix("train")).iterdir()}
    lost = max(d for d in done if d < 5)  # past the rows recorded as written (not shard 0)
    (path / "train" / "labels" / "c" / str(4 * lost + 1)).unlink()  # its second chunk
    READ.clear()
    with caplog.at_level("INFO", logger="nnsig"):
        capture_distributed(make_linear, Dataset(X, y), path, batch_size=50, client=client,
                            resume=True, progress=False)
    assert f"Shards [{lost}] of split 'train' hold missing or damaged chunks" in caplog.text
    first = 200 * lost + 50
    redone = set(range(first, first + 50))
    assert _read_beyond_checks(1003, 200) & set(range(200 * lost, 200 * lost + 200)) == redone
    record = open_store(path).split_attrs("train")["capture"]["repaired"]
    assert record["ranges"] == [[first, first + 49]] and record["rows"] == 50
    capture(make_linear(), (X, y), tmp_path / "s.zarr", batch_size=50, chunk_bytes=4000,
            progress=False)
    _same_bytes(path, tmp_path / "s.zarr")


def test_a_resume_is_refused_with_other_shards_or_other_data(client, tmp_path) -> None:
    X, y = _data(1003)
    path = tmp_path / "d.zarr"
    with pytest.raises(RuntimeError, match="cannot read sample 650"):
        capture_distributed(make_linear, Dataset(X, y, fail_at=650), path, batch_size=50,
                            chunk_bytes=4000, shard_rows=200, client=client, retries=0,
                            progress=False)
    with pytest.raises(CaptureError, match="started with 200"):
        capture_distributed(make_linear, (X, y), path, batch_size=50, shard_rows=400,
                            client=client, resume=True, progress=False)
    with pytest.raises(CaptureError, match="not in the same order"):
        capture_distributed(make_linear, (X[::-1], y[::-1]), path, batch_size=50,
                            client=client, resume=True, progress=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        capture(make_linear(), _batches(X, y, stop=300), tmp_path / "s.zarr", batch_size=50,
                chunk_bytes=4000, progress=False)
    with pytest.raises(CaptureError, match="single-process capture"):
        capture_distributed(make_linear, (X, y), tmp_path / "s.zarr", batch_size=50,
                            client=client, resume=True, progress=False)


def _batches(X, y, stop):
    for lo in range(0, len(X), 50):
        if lo >= stop:
            raise RuntimeError("interrupted")
        yield X[lo : lo + 50], y[lo : lo + 50]


def test_a_split_being_written_is_refused(client, tmp_path) -> None:
    X, y = _data(100)
    s = open_store(tmp_path / "d.zarr", mode="a")
    with s.claim("train"), pytest.raises(ClaimError, match="being written by another capture"):
        capture_distributed(make_linear, (X, y), s, client=client, progress=False)


def test_workers_building_other_weights_are_refused(client, tmp_path) -> None:
    X, y = _data(2000)
    BUILT.clear()
    with pytest.raises(CaptureError, match="other weights"):
        capture_distributed(make_differing, (X, y), tmp_path / "d.zarr", batch_size=50,
                            chunk_bytes=4000, shard_rows=200, client=client, progress=False)


def test_arguments_are_checked(client, tmp_path) -> None:
    X, y = _data(10)
    with pytest.raises(CaptureError, match="picklable callable"):
        capture_distributed(make_linear(), (X, y), tmp_path / "a.zarr", client=client)
    with pytest.raises(CaptureError, match="map-style"):
        capture_distributed(make_linear, iter([(X, y)]), tmp_path / "a.zarr", client=client)
    with pytest.raises(CaptureError, match="not an nnsig adapter"):
        capture_distributed(lambda: object(), (X, y), tmp_path / "a.zarr", client=client,
                            progress=False)
    with pytest.raises(ValueError, match="needs a Dask cluster"):
        capture_distributed(make_linear, (X, y), tmp_path / "a.zarr", client=False)


# ---------------------------------------------------------------------------- real processes
@pytest.mark.slow
def test_worker_processes_with_a_torch_model_loaded_from_a_file(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from nnsig_torch import TorchAdapter

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    X = np.random.default_rng(0).normal(size=(700, 12)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 4, size=700)
    capture(TorchAdapter(model, layers=torch.nn.ReLU), (torch.from_numpy(X), torch.from_numpy(y)),
            tmp_path / "s.zarr", batch_size=64, chunk_bytes=2048, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        capture_distributed(functools.partial(_torch_adapter, str(weights)), Dataset(X, y),
                            tmp_path / "d.zarr", batch_size=64, chunk_bytes=2048, client=c,
                            progress=False)
        pids = c.run(lambda: __import__("os").getpid())
    assert len(set(pids.values())) == 2
    _same_bytes(tmp_path / "d.zarr", tmp_path / "s.zarr")


def _torch_adapter(path: str):
    import torch
    from nnsig_torch import TorchAdapter

    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    model.load_state_dict(torch.load(path))
    return TorchAdapter(model, layers=torch.nn.ReLU)


class SlowDataset(Dataset):
    """A data set whose rows take a little while to read (so a capture can be interrupted)."""

    def __getitem__(self, i: int):
        import time

        time.sleep(0.004)
        return super().__getitem__(i)


@pytest.mark.slow
def test_losing_every_worker_says_so_and_resume_completes(tmp_path) -> None:
    """Every worker process killed with SIGKILL mid-capture: a CaptureError saying the workers
    were lost and that resume=True continues; the resume completes, byte for byte."""
    import os
    import signal
    import threading
    import time

    X, y = _data(1003)
    path = tmp_path / "d.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        pids = list(c.run(os.getpid).values())
        errors: list[BaseException] = []

        caught: list[warnings.WarningMessage] = []

        def run() -> None:
            try:
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    try:
                        capture_distributed(make_linear, SlowDataset(X, y), path, batch_size=50,
                                            chunk_bytes=4000, shard_rows=200, client=c,
                                            progress=False)
                    finally:
                        caught.extend(seen)
            except BaseException as exc:  # noqa: BLE001 - examined below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        markers = path / shard_marker_prefix("train")
        deadline = time.time() + 120
        while time.time() < deadline and not (markers.is_dir() and any(markers.iterdir())):
            time.sleep(0.01)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        thread.join(timeout=300)
        assert len(errors) == 1 and isinstance(errors[0], CaptureError), errors
        assert re.search("lost its workers.*resume=True.*shards done", str(errors[0]))
        # No claim that tasks ran past a timeout: the workers were lost at once.
        assert not [w for w in caught if "within 300 s" in str(w.message)]
        c.wait_for_workers(2, timeout=120)
        capture_distributed(make_linear, Dataset(X, y), path, batch_size=50, client=c,
                            resume=True, progress=False)
    capture(make_linear(), (X, y), tmp_path / "s.zarr", batch_size=50, chunk_bytes=4000,
            progress=False)
    _same_bytes(path, tmp_path / "s.zarr")
    assert open_store(path).is_complete("train")


def test_a_resume_repairs_exactly_the_rows_verify_lists(client, tmp_path, caplog) -> None:
    """A deleted and a flipped chunk of a complete split: only their rows are captured again
    (not their shards), the split records what (rows, bytes), and the bytes are those of an
    uninterrupted capture."""
    X, y = _data(1003)
    path = tmp_path / "d.zarr"
    capture_distributed(make_linear, Dataset(X, y), path, batch_size=50, chunk_bytes=4000,
                        shard_rows=200, client=client, progress=False)
    fingerprint = open_store(path).fingerprint("train")
    assert open_store(path).split_attrs("train")["capture"]["chunk_rows"] == 50  # the batch
    lost_chunk = path / "train" / "hidden" / "c" / "5" / "0"  # rows 250-299: shard 1
    size = lost_chunk.stat().st_size
    lost_chunk.unlink()
    chunk = path / "train" / "labels" / "c" / "16"  # rows 800-849: shard 4
    data = bytearray(chunk.read_bytes())
    data[5] ^= 0x10
    chunk.write_bytes(bytes(data))
    assert [list(r) for r in open_store(path).verify().rows_to_recapture()["train"]] == [
        [250, 299], [800, 849]]
    READ.clear()
    with caplog.at_level("INFO", logger="nnsig"):
        capture_distributed(make_linear, Dataset(X, y), path, batch_size=50, client=client,
                            resume=True, progress=False)
    assert _read_beyond_checks(1003, 200) == set(range(250, 300)) | set(range(801, 850))
    assert READ.count(800) == 1  # in the repaired rows: read once, not checked
    record = open_store(path).split_attrs("train")["capture"]["repaired"]
    assert record["ranges"] == [[250, 299], [800, 849]] and record["rows"] == 100
    # every array's chunk of those rows is written again: at least the lost one's bytes
    assert record["bytes"] > size
    assert "re-captured rows 250-299, 800-849 (100 rows" in caplog.text
    capture(make_linear(), (X, y), tmp_path / "s.zarr", batch_size=50, chunk_bytes=4000,
            progress=False)
    _same_bytes(path, tmp_path / "s.zarr")
    store = open_store(path)
    assert store.verify().ok and store.fingerprint("train") == fingerprint


@pytest.mark.slow
def test_a_distributed_repair_on_s3_recaptures_exactly_the_lost_rows(s3, client, tmp_path) -> None:
    """On an object store too: a deleted and a flipped object of a split captured on the
    cluster; the resume re-captures only their rows, byte-identical to a local capture."""
    s3fs = pytest.importorskip("s3fs")
    url, options = s3
    X, y = _data(1003)
    kw = dict(batch_size=50, chunk_bytes=4000, shard_rows=200, client=client,
              storage_options=options, progress=False)
    capture_distributed(make_linear, Dataset(X, y), url, **kw)
    fs, root = s3fs.S3FileSystem(**options), url.removeprefix("s3://")
    fs.rm_file(f"{root}/train/hidden/c/5/0")  # rows 250-299
    data = bytearray(fs.cat_file(f"{root}/train/labels/c/16"))  # rows 800-849
    data[5] ^= 0x10
    fs.pipe_file(f"{root}/train/labels/c/16", bytes(data))
    READ.clear()
    capture_distributed(make_linear, Dataset(X, y), url, resume=True,
                        **{k: v for k, v in kw.items() if k != "shard_rows"})
    assert _read_beyond_checks(1003, 200) == set(range(250, 300)) | set(range(801, 850))
    store = open_store(url, storage_options=options)
    record = store.split_attrs("train")["capture"]["repaired"]
    assert record["ranges"] == [[250, 299], [800, 849]] and record["rows"] == 100
    capture(make_linear(), (X, y), tmp_path / "s.zarr", batch_size=50, chunk_bytes=4000,
            progress=False)
    fs.invalidate_cache()
    remote = {k.removeprefix(f"{root}/train/"): fs.cat_file(k) for k in fs.find(f"{root}/train")}
    local = _files(tmp_path / "s.zarr" / "train")
    assert sorted(k for k in remote if k != "zarr.json") == sorted(local)
    assert [k for k in local if remote[k] != local[k]] == []
    assert store.verify().ok
