"""Nothing lost or mixed without a word: damaged and missing chunks, concurrent writers,
killed captures, other weights, durable writes, and the inputs that used to slip through."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest

from nnsig_core import ArrayAdapter, CaptureError, StoreError, capture, capture_arrays, open_store
from nnsig_core.analysis import SignatureAnalysis
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.cli import main as cli_main
from nnsig_core.store import ClaimError, DamagedChunkError, DamagedMetadataError, MissingChunkError

WORKER = Path(__file__).with_name("capture_worker.py")
sys.path.insert(0, str(WORKER.parent))
from capture_worker import rows as worker_rows  # noqa: E402


def _store(tmp_path: Path) -> Path:
    """Blob activations, train and test, 200 samples each in chunks of 50 rows."""
    from nnsig_core.analysis.synthetic import make_blob_activations

    path = tmp_path / "s.zarr"
    for i, split in enumerate(("train", "test")):
        blobs = make_blob_activations(n_samples=200, seed=0, sample_seed=1 + i)
        capture_arrays(blobs["activations"], blobs["outputs"], blobs["labels"], path,
                       split=split, batch_size=50, chunk_bytes=8 * 4 * 50, progress=False)
    return path


def _chunk(path: Path, split: str, layer: str, index: int) -> Path:
    key = open_store(path).split_attrs(split)["layers"]
    key = next(d["key"] for d in key if d["name"] == layer)
    return path / split / key / "c" / str(index) / "0"


# ---------------------------------------------------------------------------- missing chunks
def test_a_deleted_chunk_is_an_error_naming_split_layer_and_rows(tmp_path: Path, capsys) -> None:
    path = _store(tmp_path)
    _chunk(path, "train", "layer0", 1).unlink()
    with pytest.raises(MissingChunkError, match=r"Chunk 1 of layer 'layer0' of split 'train' "
                                                r"\(rows 50-99\) is missing.*nnsig verify"):
        SignatureAnalysis(n_clusters=3, progress=False).fit(path, "train")
    with pytest.raises(MissingChunkError, match="rows 50-99"):
        open_store(path).activations("train", "layer0")[:]  # plain zarr reads too
    report = open_store(path).verify()
    assert not report.ok and report.rows_to_recapture() == {"train": [(50, 99)]}
    assert [p.kind for p in report.problems] == ["missing"]
    assert cli_main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "missing chunk: 'layer0' of split 'train', rows 50-99" in out and "rows 50-99 must" in out


def test_a_missing_labels_chunk_and_a_missing_array_are_reported(tmp_path: Path) -> None:
    path = _store(tmp_path)
    (path / "test" / "labels" / "c" / "3").unlink()
    with pytest.raises(MissingChunkError, match="array 'labels' of split 'test' \\(rows 150-199"):
        open_store(path).labels("test")
    import shutil

    shutil.rmtree(path / "train" / "outputs")
    report = open_store(path).verify()
    assert {(p.split, p.name) for p in report.problems} == {("test", "labels"),
                                                             ("train", "outputs")}
    assert report.rows_to_recapture() == {"test": [(150, 199)], "train": [(0, 199)]}
    # The advice is the fix that works: a resume for the lost chunk, the whole split again
    # for the lost array (a resume refuses it).
    text = report.format()
    assert "split 'test': rows 150-199 must be captured again (capture(..., split='test', " \
           "resume=True)" in text
    assert "split 'train': an array's metadata is missing or damaged" in text
    assert "split='train', overwrite=True" in text


def test_rows_not_yet_written_of_an_interrupted_split_read_as_missing_data_not_errors(
        tmp_path: Path) -> None:
    """Only chunks of rows the split says were written must exist."""
    path = _store(tmp_path)
    store = open_store(path, mode="r+")
    info = store.split_attrs("train")
    info.update(complete=False, n_written=100)
    store.write_split_attrs("train", info)
    for i in (2, 3):
        _chunk(path, "train", "layer0", i).unlink()
    store = open_store(path)
    store.activations("train", "layer0")[:]  # beyond n_written: no data yet, no error
    report = store.verify()
    assert report.ok and "train" in report.incomplete
    assert "INCOMPLETE" in report.format()  # and the command fails: a split is unfinished
    assert cli_main(["verify", str(path)]) == 1
    _chunk(path, "train", "layer0", 1).unlink()
    assert open_store(path).verify().rows_to_recapture() == {"train": [(50, 99)]}


# ---------------------------------------------------------------------------- damaged data
@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_chunk_is_an_error_naming_the_chunk(tmp_path: Path, damage: str) -> None:
    path = _store(tmp_path)
    f = _chunk(path, "test", "layer1", 2)
    data = bytearray(f.read_bytes())
    if damage == "flip":
        data[7] ^= 0x40
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    f.write_bytes(bytes(data))
    a = SignatureAnalysis(n_clusters=3, progress=False).fit(path, "train")
    with pytest.raises(DamagedChunkError,
                       match=r"Chunk 2 of layer 'layer1' of split 'test' \(rows 100-149\) is "
                             r"damaged.*c/2/0.*nnsig verify"):
        a.transform(path, "test")
    report = open_store(path).verify()
    assert [(p.kind, p.split, p.name, p.rows) for p in report.problems] == [
        ("damaged", "test", "layer1", (100, 149))]


def test_damaged_analysis_arrays_are_reported(tmp_path: Path) -> None:
    path = _store(tmp_path)
    store = open_store(path, mode="r+")
    SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train").save(store, "a")
    centers = next((path / "analysis").glob(".new-a-*/layers/*/centers/c/0/0"))
    centers.write_bytes(centers.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DamagedChunkError, match="array 'analysis/a/layers/.*/centers'.*save"):
        SignatureAnalysis.load(open_store(path), "a")
    report = open_store(path).verify()
    assert len(report.problems) == 1 and report.problems[0].split is None
    assert "save them again" in report.format()


@pytest.mark.parametrize("which", ["zarr.json", "train/zarr.json", "train/labels/zarr.json"])
def test_a_damaged_metadata_file_is_named(tmp_path: Path, which: str, capsys) -> None:
    path = _store(tmp_path)
    (path / which).write_text('{"zarr_format": 3, "node_type": "gr', encoding="utf-8")
    with pytest.raises(StoreError, match=f"{path / which}.*not valid JSON.*nnsig verify"):
        store = open_store(path)
        store.labels("train")
    if which.count("/") < 2:  # the root's and the split's metadata: nnsig info reads them
        assert cli_main(["info", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path / which) in err and "nnsig verify" in err
    if which != "zarr.json":
        report = open_store(path).verify()
        assert report.problems[0].kind == "metadata" and report.problems[0].key == which
        assert cli_main(["verify", str(path)]) == 1
    if which == "train/labels/zarr.json":  # one problem, not also a missing array
        assert len(report.problems) == 1 and report.problems[0].split == "train"
        assert "overwrite=True" in report.format() and "resume=True" not in report.format()


def test_verify_of_a_sound_store(tmp_path: Path, capsys) -> None:
    path = _store(tmp_path)
    report = open_store(path).verify()
    assert report.ok and report.chunks_checked > 0 and report.unchecked == 0
    assert cli_main(["verify", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


# ---------------------------------------------------------------------------- one writer per split
def _worker(path: Path, split: str, value: float, n: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(path), split, str(value), str(n),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _together(go: Path, *procs: subprocess.Popen) -> list[str]:
    """Let the workers (started with ``--wait-for go``) start at once, once all are ready;
    return what each printed last."""
    for p in procs:
        assert p.stdout.readline().strip() == "READY"
    go.touch()
    return [p.communicate(timeout=120)[0].strip() for p in procs]


@pytest.mark.slow
def test_two_writers_of_one_split_never_mix(tmp_path: Path) -> None:
    """20 trials: two processes capture the same split at the same moment. Each either
    finishes, or fails with a ClaimError naming the other writer; the split always holds the
    rows of exactly one of them."""
    outcomes = []
    go = tmp_path / "go"
    procs = [_worker(tmp_path, "train", v, 400, "--wait-for", str(go), "--sleep", "0.002",
                     "--overwrite", "--trials", "20") for v in (1.0, 2.0)]
    for trial in range(20):  # two processes, each capturing the 20 stores in turn
        path = tmp_path / f"t{trial}.zarr"
        for p in procs:
            assert p.stdout.readline().strip() == "READY"
        (tmp_path / f"go{trial}").touch()
        results = [p.stdout.readline().strip() for p in procs]
        assert all(r == "OK" or r.startswith("ERROR ClaimError") for r in results), results
        for r in results:
            if r != "OK":
                assert "being written by another capture (pid " in r and "started 20" in r
                assert "Nothing was changed" in r
        store = open_store(path)
        assert store.is_complete("train")
        stored = store.activations("train", "h")[:]
        assert any(np.array_equal(stored, worker_rows(v, 400)) for v in (1.0, 2.0)), trial
        outcomes.append(results.count("OK"))
    for p in procs:
        assert p.wait(timeout=60) == 0, p.communicate()[1]
    assert 1 in outcomes, "the writers never overlapped: the test did not test anything"


@pytest.mark.slow
def test_two_processes_create_one_new_store_for_different_splits(tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [_worker(tmp_path, split, 1.0, 30, "--wait-for", str(go), "--trials", "10")
             for split in ("train", "test")]
    for trial in range(10):  # two processes, each creating the 10 stores in turn
        for p in procs:
            assert p.stdout.readline().strip() == "READY"
        (tmp_path / f"go{trial}").touch()
        assert [p.stdout.readline().strip() for p in procs] == ["OK", "OK"]
        assert open_store(tmp_path / f"t{trial}.zarr").splits == ["test", "train"]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.communicate()[1]


def test_a_claim_held_in_this_process_refuses_a_second_writer(tmp_path: Path) -> None:
    path = _store(tmp_path)
    store = open_store(path, mode="r+")
    before = store.activations("test", "layer0")[:]
    with store.claim("test"), pytest.raises(ClaimError, match=f"pid {os.getpid()}"):
        make_blob_store(path, splits=("test",), seed=3, overwrite=True)
    np.testing.assert_array_equal(open_store(path).activations("test", "layer0")[:], before)
    make_blob_store(path, splits=("test",), seed=3, overwrite=True)  # released: fine now


@pytest.mark.slow
def test_a_capture_killed_at_random_points_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    """Kill -9 a capture at a random moment, resume it: the split equals a clean capture."""
    rng = random.Random(0)
    n = 600
    clean = tmp_path / "clean.zarr"
    assert _worker(clean, "train", 5.0, n).communicate(timeout=120)[0].strip() == "OK"
    want = open_store(clean).activations("train", "h")[:]
    interrupted = 0
    for trial in range(5):
        path = tmp_path / f"k{trial}.zarr"
        p = _worker(path, "train", 5.0, n, "--sleep", "0.02", "--record-every-chunk")
        deadline = time.time() + 120
        while not (path / "train" / "zarr.json").exists() and time.time() < deadline:
            time.sleep(0.005)  # until the split exists; the capture then runs >= 1.2 s
        time.sleep(rng.uniform(0.0, 1.0))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        if (path / "train" / "zarr.json").exists() and not open_store(path).is_complete("train"):
            interrupted += 1
        r = _worker(path, "train", 5.0, n, "--resume").communicate(timeout=120)[0].strip()
        assert r == "OK", r
        store = open_store(path)
        assert store.is_complete("train") and store.verify().ok
        np.testing.assert_array_equal(store.activations("train", "h")[:], want)
        np.testing.assert_array_equal(store.labels("train"), np.arange(n) % 3)
    assert interrupted >= 3, f"only {interrupted} of 5 kills fell inside the capture"


# ---------------------------------------------------------------------------- other weights
class Weighted(ArrayAdapter):
    """An ArrayAdapter whose 'weights' have a fingerprint, as the framework adapters do."""

    def __init__(self, acts: np.ndarray, weights: str) -> None:
        super().__init__({"h": acts}, np.eye(3, dtype=np.float32)[np.arange(len(acts)) % 3])
        self.weights = weights

    def model_fingerprint(self) -> str:
        return f"test:{self.weights}"


def _interrupted(path: Path, adapter: ArrayAdapter, n: int, stop: int) -> None:
    def data():
        for lo in range(0, n, 10):
            if lo >= stop:
                raise KeyboardInterrupt
            yield np.arange(lo, lo + 10), np.arange(lo, lo + 10) % 3

    with pytest.raises(KeyboardInterrupt):
        capture(adapter, data(), path, chunk_bytes=8 * 4 * 10, progress=False)


def test_resume_with_other_weights_is_refused(tmp_path: Path, monkeypatch) -> None:
    from nnsig_core.capture import session

    monkeypatch.setattr(session, "RECORD_EVERY_S", 0.0)
    acts = worker_rows(0.0, 120)
    path = tmp_path / "s.zarr"
    _interrupted(path, Weighted(acts, "A"), 120, 50)
    data = (np.arange(120), np.arange(120) % 3)
    with pytest.raises(CaptureError, match="differ from this one's.*test:A then, test:B now"):
        capture(Weighted(acts, "B"), data, path, resume=True, progress=False)
    assert not open_store(path).is_complete("train")
    capture(Weighted(acts, "A"), data, path, resume=True, progress=False)
    store = open_store(path)
    assert store.is_complete("train")
    assert store.split_attrs("train")["model_fingerprint"] == "test:A"
    # A second split from other weights is refused too, unless the user says why.
    with pytest.raises(CaptureError, match="captured split 'train'.*allow_other_weights"):
        capture(Weighted(acts, "B"), data, path, split="test", progress=False)
    capture(Weighted(acts, "B"), data, path, split="test", progress=False,
            allow_other_weights="epoch 2 vs epoch 1")
    assert open_store(path).summary()["splits"]["test"]["other_weights"] == "epoch 2 vs epoch 1"
    # The store's own weights are still welcome (compared with 'train', not with 'test').
    capture(Weighted(acts, "A"), data, path, split="val", progress=False)
    capture(Weighted(acts, "A"), data, path, overwrite=True, progress=False)
    with pytest.raises(CaptureError, match="captured split '(train|val)'"):
        capture(Weighted(acts, "C"), data, path, split="other", progress=False)


def test_torch_weights_fingerprint_tells_models_apart(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from nnsig_torch import TorchAdapter

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    b = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    fa, fb = TorchAdapter(a).model_fingerprint(), TorchAdapter(b).model_fingerprint()
    assert fa.startswith("blake2b:") and fa != fb
    b.load_state_dict(a.state_dict())
    assert TorchAdapter(b).model_fingerprint() == fa
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    store = capture(TorchAdapter(a), (x, y), tmp_path / "s.zarr", progress=False)
    assert open_store(store.path).summary()["splits"]["train"]["model_fingerprint"] == fa
    with torch.no_grad():
        b[0].weight[0, 0] += 1
    with pytest.raises(CaptureError, match="weights differ"):
        capture(TorchAdapter(b), (x, y), store.path, split="test", progress=False)


# ---------------------------------------------------------------------------- durable writes
def test_durable_capture(tmp_path: Path, monkeypatch) -> None:
    """durable=True fsyncs every chunk file and directory, then the split's metadata, before and
    after the completion mark (os.fsync is observed, and still called)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def observed_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", observed_fsync)
    acts = worker_rows(1.0, 95)
    store = capture_arrays({"h": acts}, acts[:, :3], np.arange(95) % 3, tmp_path / "s.zarr",
                           chunk_bytes=8 * 4 * 10, durable=True, progress=False)
    monkeypatch.undo()
    split = tmp_path / "s.zarr" / "train"
    chunks = {str(f) for f in split.rglob("c/**/*") if f.is_file()}
    # 5 arrays x 10 chunks, and the one chunk of the class coordinate ``output``
    assert len(chunks) == 5 * 10 + 1 and chunks <= set(synced)
    assert str(split / "h" / "c") in synced  # the directories holding new entries too
    last_chunk = max(i for i, f in enumerate(synced) if f in chunks)
    assert synced[-1] == str(tmp_path / "s.zarr") or str(split / "zarr.json") in synced[last_chunk:]
    assert synced.count(str(split / "zarr.json")) >= 2  # before and after the completion mark
    assert store.split_attrs("train")["capture"]["durable"] is True
    np.testing.assert_array_equal(open_store(store.path).activations("train", "h")[:], acts)
    assert open_store(store.path).verify().ok


# ---------------------------------------------------------------------------- clear errors
def test_labels_below_minus_one_are_refused(tmp_path: Path) -> None:
    y = np.arange(30) % 3
    y[17] = -5
    with pytest.raises(CaptureError, match="Sample 17 has label -5.*-1 for an unknown"):
        capture_arrays({"h": np.ones((30, 2))}, np.eye(3)[np.arange(30) % 3], y,
                       tmp_path / "s.zarr", progress=False)
    assert "train" not in open_store(tmp_path / "s.zarr").splits


def test_class_names_are_checked(tmp_path: Path) -> None:
    acts, out, y = np.ones((30, 2)), np.eye(3)[np.arange(30) % 3], np.arange(30) % 3
    with pytest.raises(CaptureError, match="class_names has 2 names but the model has 3 classes"):
        capture_arrays({"h": acts}, out, y % 2, tmp_path / "a.zarr", class_names=["a", "b"],
                       progress=False)
    with pytest.raises(CaptureError, match="Sample 2 has label 2, but class_names names only 2"):
        capture_arrays({"h": acts}, out, y, tmp_path / "a.zarr", class_names=["a", "b"],
                       progress=False)
    with pytest.raises(CaptureError, match="'b' twice \\(classes 1 and 2\\)"):
        capture_arrays({"h": acts}, out, y, tmp_path / "a.zarr", class_names=["a", "b", "b"],
                       progress=False)
    with pytest.raises(CaptureError, match="sequence of names"):
        capture_arrays({"h": acts}, out, y, tmp_path / "a.zarr", class_names="abc",
                       progress=False)
    s = capture_arrays({"h": acts}, out, y, tmp_path / "a.zarr", progress=False,
                       class_names=["a", "b", "c", "d"])  # more names than classes: fine
    assert s.class_names() == ["a", "b", "c", "d"]


@pytest.mark.parametrize("name", ["zarr.json", "ZARR.JSON", ".hidden", "__init__", "c", "labels"])
def test_layers_named_like_zarr_or_store_files(tmp_path: Path, name: str) -> None:
    acts = np.arange(60, dtype=np.float32).reshape(30, 2)
    s = capture_arrays({name: acts, "other": acts + 1}, np.eye(3)[np.arange(30) % 3],
                       np.arange(30) % 3, tmp_path / "s.zarr", progress=False)
    s = open_store(s.path)
    assert s.layers("train") == [name, "other"]
    np.testing.assert_array_equal(s.activations("train", name)[:], acts)
    assert s.verify().ok


def test_open_store_modes(tmp_path: Path) -> None:
    path = _store(tmp_path)
    with pytest.raises(ValueError, match="mode must be 'r'.*'r\\+'.*'a'.*got 'rw'"):
        open_store(path, mode="rw")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and holds no Zarr store"):
        open_store(tmp_path / "full", mode="a")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    # A file where the store should be: named, whatever the mode (it was mkdir's traceback).
    (tmp_path / "file.zarr").write_text("mine")
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match="is a file, not a store.*choose a new path"):
            open_store(tmp_path / "file.zarr", mode=mode)
    assert (tmp_path / "file.zarr").read_text() == "mine"
    # Another process's zarr.json in flight (zarr writes it as a .partial file, then moves it
    # into place) is not a foreign directory: both processes create the store.
    (tmp_path / "racing").mkdir()
    (tmp_path / "racing" / "zarr.json.0123abcd.partial").write_bytes(b"")
    assert open_store(tmp_path / "racing", mode="a").splits == []


def test_damaged_metadata_error_class(tmp_path: Path) -> None:
    path = _store(tmp_path)
    (path / "test" / "zarr.json").write_text("{", encoding="utf-8")
    store = open_store(path)
    assert store.splits == ["train"] and list(store.damaged_splits) == ["test"]
    with pytest.raises(DamagedMetadataError, match="overwrite=True"):
        store.labels("test")


def test_resume_repairs_the_damaged_written_part_of_an_interrupted_split(
        tmp_path: Path, monkeypatch) -> None:
    from nnsig_core.capture import session

    monkeypatch.setattr(session, "RECORD_EVERY_S", 0.0)
    acts = worker_rows(0.0, 120)
    path = tmp_path / "s.zarr"
    _interrupted(path, Weighted(acts, "A"), 120, 70)
    (path / "train" / "h" / "c" / "2" / "0").unlink()  # rows 20-29, below n_written
    capture(Weighted(acts, "A"), (np.arange(120), np.arange(120) % 3), path, resume=True,
            batch_size=10, chunk_bytes=8 * 4 * 10, progress=False)
    store = open_store(path)
    assert store.is_complete("train") and store.verify().ok
    np.testing.assert_array_equal(store.activations("train", "h")[:], acts)


def test_replacing_a_group_switches_a_pointer_and_leaves_no_copy_behind(tmp_path: Path) -> None:
    """A replacement is written aside and switched in by one pointer document; the copy it
    replaced is deleted, and zarr's listings show the logical group only."""
    path = _store(tmp_path)
    store = open_store(path, mode="r+")
    for name, value in (("old", 1.0), ("new", 2.0)):
        store.group(f"analysis/.new-{name}", create=True).create_array("x", data=np.full(3, value))
    store.replace_group("analysis/.new-old", "analysis/kept")
    store.replace_group("analysis/.new-new", "analysis/kept")
    np.testing.assert_array_equal(open_store(path).root["analysis/kept/x"][:], 2.0)
    assert sorted(p.name for p in (path / "analysis").iterdir()) == [".new-new", "kept",
                                                                      "zarr.json"]
    assert json.loads((path / "analysis" / "kept" / "zarr.json").read_text())["attributes"] == {
        "nnsig_pointer": {"target": ".new-new", "switched": ANY}}
    assert [k for k, _ in open_store(path).root["analysis"].groups()] == ["kept"]
    store.delete("analysis/kept")
    assert sorted(p.name for p in (path / "analysis").iterdir()) == ["zarr.json"]


def test_a_store_that_cannot_be_written_is_refused_before_the_work(tmp_path: Path) -> None:
    """A store on a read-only disk (or another user's): `nnsig analyze` fitted, then failed
    at its first write with the file system's error. It is refused when opened for writing,
    naming what only reads, which works."""
    from nnsig_core.cli.main import main

    path = _store(tmp_path)
    os.chmod(path, 0o555)
    try:
        if os.access(path, os.W_OK):  # root writes anywhere permissions allow nothing
            pytest.skip("this user can write to a read-only directory (root)")
        with pytest.raises(StoreError, match="cannot be written here.*only read it"):
            open_store(path, mode="r+")
        assert main(["analyze", str(path)]) == 1
        assert main(["info", str(path)]) == 0  # what only reads still works
    finally:
        os.chmod(path, 0o755)
