"""Faults on object stores and on disk (issue 22): saves killed half-way, objects deleted and
flipped, repairs that run, damaged metadata, dead writers' claims, denied writes, an
unreachable endpoint, first batches refused, other layer widths.

The S3 cases run against moto's server on loopback (the ``s3`` fixture); a process "killed"
in the middle of a save is modelled by a store on which, after the k-th write or delete,
every operation fails (nothing of the process reaches the store afterwards), swept over k.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnsig_core import ArrayAdapter, CaptureError, StoreError, capture, capture_arrays, open_store
from nnsig_core.analysis import SignatureAnalysis
from nnsig_core.analysis.synthetic import make_blob_activations
from nnsig_core.store import ClaimError, DamagedMetadataError, MissingChunkError

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

REPO = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """The process died: nothing it does reaches the store any more."""


def _raw(store):
    s = store.root.store_path.store
    while hasattr(s, "_store"):
        s = s._store
    return s


def _kill_after(store, k: int) -> None:
    """From the k-th write or delete on, every operation of ``store`` fails."""
    raw = _raw(store)
    count = _kill_after.count = [0]

    def wrap(name):
        real = getattr(raw, name)

        async def op(*args, **kwargs):
            if count[0] >= k:
                raise Killed(name)
            if name in ("set", "delete", "delete_dir", "set_if_not_exists", "_set_many"):
                count[0] += 1
            return await real(*args, **kwargs)
        return op

    for name in ("set", "delete", "delete_dir", "set_if_not_exists", "_set_many", "get",
                 "exists"):
        object.__setattr__(raw, name, wrap(name))


def _blobs(split: str, n: int = 120) -> dict:
    return make_blob_activations(n_samples=n, seed=0, sample_seed=1 if split == "train" else 2)


def _capture(where, options, split="train", n=120, **kw):
    b = _blobs(split, n)
    return capture_arrays(b["activations"], b["outputs"], b["labels"], where, split=split,
                          batch_size=40, chunk_bytes=8 * 4 * 40, progress=False,
                          storage_options=options or None, **kw)


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """``(store location, storage_options)`` on a local disk or on the S3 server."""
    if request.param == "local":
        return str(tmp_path / "s.zarr"), {}
    return request.getfixturevalue("s3")


def _keys(where, options) -> dict[str, bytes]:
    """Every object (file) of the store by key, with its bytes."""
    url, _ = where, options
    if "://" not in url:
        root = Path(url)
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    base = url[len("s3://"):]
    return {k[len(base) + 1:]: fs.cat_file(k) for k in fs.find(base)}


def _delete(where, options, key: str) -> None:
    if "://" not in where:
        (Path(where) / key).unlink()
        return
    import s3fs

    s3fs.S3FileSystem(**options).rm_file(f"{where[len('s3://'):]}/{key}")


def _put(where, options, key: str, data: bytes) -> None:
    if "://" not in where:
        (Path(where) / key).write_bytes(data)
        return
    import s3fs

    s3fs.S3FileSystem(**options).pipe_file(f"{where[len('s3://'):]}/{key}", data)


# ---------------------------------------------------------------------------- 1. atomic replace
@pytest.mark.slow
def test_a_save_killed_at_any_moment_of_a_replace_on_s3_leaves_an_analysis(s3) -> None:
    url, options = s3
    _capture(url, options)
    store = open_store(url, mode="r+", storage_options=options)
    # One layer: every save writes a third of the objects (each a request to the server);
    # the replace (copies, pointer, removal of the old copy) is the same for any layer count.
    one = {"layers": ["layer1"], "progress": False}
    old = SignatureAnalysis(n_clusters=3, **one).fit(store, "train")
    old.save(store, "default", splits=())
    new = SignatureAnalysis(n_clusters=4, **one).fit(store, "train")
    counting = open_store(url, mode="r+", storage_options=options)
    _kill_after(counting, 10**9)
    new.save(counting, "probe", splits=())
    n = _kill_after.count[0]  # writes and deletes of one save
    results = set()
    for k in sorted({1, n // 4, n // 2, n - 3, n - 2, n - 1, n, n + 1}):
        dying = open_store(url, mode="r+", storage_options=options)
        _kill_after(dying, k)
        try:
            new.save(dying, "default", overwrite=True, splits=())
        except Killed:
            pass
        back = SignatureAnalysis.load(open_store(url, storage_options=options), "default")
        results.add(back.n_clusters)
        assert back.n_clusters in (3, 4), k
    assert results == {3, 4}, "the sweep must kill both before and after the switch"
    assert open_store(url, storage_options=options).verify().ok
    # The copies the killed saves left (new ones, and old ones half deleted), written by this
    # process (alive): kept by default, removed when every writer is taken to be gone.
    store = open_store(url, mode="r+", storage_options=options)
    left = store.verify().leftovers
    assert left and all(p.startswith("analysis/.new-") for p in left)
    assert store.clean() == []
    assert store.clean(older_than=0) == left
    copies = {k.split("/")[1] for k in _keys(url, options) if k.startswith("analysis/.new-")}
    assert store.verify().leftovers == [] and len(copies) == 2  # those the pointers lead to
    assert SignatureAnalysis.load(store, "default").n_clusters in (3, 4)


_KILLED_SAVE = """
import json, os, signal, sys
from nnsig_core import open_store
from nnsig_core.analysis import SignatureAnalysis
store = open_store(sys.argv[1], mode="r+", storage_options=json.loads(sys.argv[2]) or None)
analysis = SignatureAnalysis(n_clusters=4, progress=False).fit(store, "train")
raw = store.root.store_path.store
while hasattr(raw, "_store"):
    raw = raw._store
real, writes = raw.set, [0]
async def dying_set(key, value):
    writes[0] += 1
    if writes[0] == 6:
        os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of the save
    return await real(key, value)
object.__setattr__(raw, "set", dying_set)
analysis.save(store, "default", overwrite=True)
"""


@pytest.mark.slow
def test_copies_of_killed_saves_are_removed_by_the_next_save_never_a_live_one(where) -> None:
    """A save in a process killed with SIGKILL leaves its copy; the next save removes it (its
    writer's process has ended), never the copy a pointer leads to nor one a live writer holds
    (one this process is writing); store.clean() removes the latter once taken to be gone."""
    import json

    url, options = where
    _capture(url, options)
    store = open_store(url, mode="r+", storage_options=options or None)
    analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    analysis.save(store, "default")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, url, json.dumps(options)],
                          env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    store = open_store(url, mode="r+", storage_options=options or None)
    [killed] = store.verify().leftovers
    assert killed.startswith("analysis/.new-default-")
    live = "analysis/.new-other-0123abcd"
    store.group(live, create=True).create_array("x", shape=(3,), dtype="int8")  # being written
    assert store.verify().leftovers == sorted([killed, live])
    analysis.save(store, "default", overwrite=True)  # the next save: its siblings collected
    keys = _keys(url, options)
    assert not any(k.startswith(killed + "/") for k in keys)
    assert f"{live}/x/zarr.json" in keys and store.verify().leftovers == [live]
    assert store.clean() == [] and store.clean(older_than=0) == [live]
    assert store.verify().ok and store.verify().leftovers == []
    assert SignatureAnalysis.load(store, "default").n_clusters == 3


def _record_ops(store) -> list[tuple[str, str]]:
    """From now on, ``(operation, key)`` of every request ``store`` makes, in order."""
    raw, ops = _raw(store), []

    def wrap(name):
        real = getattr(raw, name)

        async def op(*args, **kwargs):
            ops.append((name, str(args[0]) if args else ""))
            return await real(*args, **kwargs)

        async def listing(*args, **kwargs):
            ops.append((name, str(args[0]) if args else ""))
            async for key in real(*args, **kwargs):
                yield key
        return listing if name.startswith("list") else op

    for name in ("set", "delete", "delete_dir", "set_if_not_exists", "get", "exists",
                 "list", "list_dir", "list_prefix", "get_partial_values"):
        object.__setattr__(raw, name, wrap(name))
    return ops


@pytest.mark.parametrize("where", [pytest.param("s3", marks=pytest.mark.slow), "disk"])
def test_a_save_writes_each_object_once_in_one_batch(s3, tmp_path, where) -> None:
    """A saved analysis, scorer or score set is filled in memory and written in one concurrent
    batch: each object once (the copy's group twice: its writer's record first, its final
    attributes last), without the per-object existence checks (an analysis with its
    signatures saved to S3 made 555 requests, now 100), and it loads as saved."""
    url, options = s3 if where == "s3" else (str(tmp_path / "s.zarr"), {})
    _capture(url, options)
    store = open_store(url, mode="r+", storage_options=options or None)
    analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    ops = _record_ops(store)
    analysis.save(store, "a", splits=())
    sets = [k for op, k in ops if op == "set"]
    copy = next(k.rpartition("/")[0] for k in sets if k.endswith("zarr.json") and
                re.fullmatch(r"analysis/\.new-a-[0-9a-f]+/zarr\.json", k))
    inside = [k for k in sets if k.startswith(copy + "/")]
    assert inside[0] == inside[-1] == f"{copy}/zarr.json"
    assert sorted(inside[1:-1]) == sorted(set(inside[1:-1])), "an object written twice"
    assert len(inside) == 2 + 3 * 7 + 2  # layers and signatures groups, 3 x (group, 3 arrays)
    # The rest: the checks before (names, the old scorer), the pointer, the consolidated
    # metadata (34 on this first save into the store).
    assert len(ops) - len(inside) <= 40, ops
    back = SignatureAnalysis.load(open_store(url, storage_options=options or None), "a")
    np.testing.assert_array_equal(back.transform(store, "train").cluster_ids,
                                  analysis.transform(store, "train").cluster_ids)
    assert store.verify().ok


# ---------------------------------------------------------------------------- 2. every array guarded
@pytest.mark.slow
def test_a_deleted_object_of_a_saved_analysis_is_an_error_naming_it_and_the_fix_works(
        where) -> None:
    url, options = where
    _capture(url, options)
    store = open_store(url, mode="r+", storage_options=options)
    analysis = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    analysis.save(store, "default")
    centers = next(k for k in _keys(url, options) if re.search(r"/layers/layer1/centers/c/", k))
    _delete(url, options, centers)
    with pytest.raises(MissingChunkError, match=r"analysis/default/layers/layer1/centers.*"
                                                r"missing.*save\(store, 'default', overwrite"):
        SignatureAnalysis.load(open_store(url, storage_options=options), "default")
    ids = next(k for k in _keys(url, options) if "/signatures/train/cluster_ids/c/" in k)
    _delete(url, options, ids)
    with pytest.raises(MissingChunkError, match="signatures/train/cluster_ids.*overwrite=True"):
        open_store(url, storage_options=options).root["analysis/default/signatures/train/"
                                                      "cluster_ids"][:]
    assert not open_store(url, storage_options=options).verify().ok
    # The fix each error names: fit and save again.
    store = open_store(url, mode="r+", storage_options=options)
    SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train").save(
        store, "default", overwrite=True)
    back = SignatureAnalysis.load(open_store(url, storage_options=options), "default")
    assert np.all(back.clusterers_["layer1"].cluster_centers_ != 0)
    assert open_store(url, storage_options=options).verify().ok


# ---------------------------------------------------------------------------- 3. repairs that run
@pytest.mark.slow
def test_resume_repairs_a_deleted_and_a_flipped_chunk_to_the_same_bytes(
        where, tmp_path, caplog) -> None:
    url, options = where
    clean = str(tmp_path / "clean.zarr")
    _capture(clean, {}, n=230)
    _capture(url, options, n=230)
    _delete(url, options, "train/layer0/c/1/0")  # rows 40-79
    flipped = bytearray(_keys(url, options)["train/labels/c/5"])  # rows 200-229
    flipped[3] ^= 0x01
    _put(url, options, "train/labels/c/5", bytes(flipped))
    before = open_store(url, storage_options=options)
    fingerprint = before.fingerprint("train")
    assert before.verify().rows_to_recapture() == {"train": [(40, 79), (200, 229)]}
    with caplog.at_level(logging.INFO, logger="nnsig"):
        _capture(url, options, n=230, resume=True)
    assert "re-captured rows 40-79, 200-229 (70 rows" in caplog.text
    after = open_store(url, storage_options=options)
    assert after.verify().ok and after.fingerprint("train") == fingerprint
    chunks = {k: v for k, v in _keys(url, options).items() if "/c/" in k}
    assert chunks == {k: v for k, v in _keys(clean, {}).items() if "/c/" in k}


# ---------------------------------------------------------------------------- 4. damaged metadata
@pytest.mark.slow
def test_damaged_split_metadata_spares_the_other_splits_and_overwrite_fixes_it(where) -> None:
    url, options = where
    _capture(url, options, "train")
    _capture(url, options, "test")
    _put(url, options, "test/zarr.json", b'{"zarr_format": 3, "node_type": "gr')
    store = open_store(url, storage_options=options)
    assert store.labels("train").shape == (120,) and store.splits == ["train"]
    with pytest.raises(DamagedMetadataError, match=r"test/zarr.json.*overwrite=True"):
        store.labels("test")
    _capture(url, options, "val")  # a new split
    with pytest.raises(DamagedMetadataError):
        _capture(url, options, "test", resume=True)
    _capture(url, options, "test", overwrite=True)  # the fix the error names
    store = open_store(url, storage_options=options)
    assert store.splits == ["test", "train", "val"] and store.verify().ok


# ---------------------------------------------------------------------------- 5. claims
@pytest.mark.slow
def test_a_claim_left_by_a_killed_capture_on_s3_is_taken_over_at_once(s3) -> None:
    url, options = s3
    _capture(url, options, "train")
    code = ("import os, sys\nfrom nnsig_core import open_store\n"
            "s = open_store(sys.argv[1], mode='r+', storage_options=dict(endpoint_url="
            "sys.argv[2], key='testing', secret='testing'))\n"
            "s.claim('test')\nos._exit(0)  # dies holding the claim\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", code, url, options["endpoint_url"]], check=True,
                   env=env, timeout=120)
    _capture(url, options, "test")  # no wait of 120 s: the holder's pid is dead on this host
    assert open_store(url, storage_options=options).is_complete("test")


def test_a_claim_error_says_how_old_the_heartbeat_is_and_when_resume_may_break_it(s3) -> None:
    url, options = s3
    store = open_store(url, mode="a", storage_options=options)
    with store.claim("test"), pytest.raises(
            ClaimError, match=r"last heartbeat was \d+ s ago.*resume=True may break its claim "
                              r"in \d+ s"):
        open_store(url, mode="r+", storage_options=options).claim("test")


def test_a_broken_claim_stops_its_writer_at_the_next_heartbeat(s3, monkeypatch) -> None:
    from nnsig_core.store import claims

    url, options = s3
    first = open_store(url, mode="a", storage_options=options).claim("test")
    monkeypatch.setattr(claims, "STALE_AFTER_S", 0.0)
    second = open_store(url, mode="r+", storage_options=options).claim("test", break_stale=True)
    with pytest.raises(ClaimError, match="taken by another writer"):
        first.check()
    second.check()
    second.release()


# ---------------------------------------------------------------------------- 5b. server stopped
@pytest.mark.slow
def test_a_server_stopped_mid_capture_is_a_store_error_and_resume_after_restart_is_identical(
        tmp_path, monkeypatch) -> None:
    """The S3 server stops in the middle of a capture: a StoreError saying the store does not
    answer and that resume=True continues. Restarted (the same ThreadedMotoServer: moto keeps
    its objects in this process; a new process would start empty), resume=True completes
    the split byte for byte as an uninterrupted capture."""
    import s3fs
    from moto.server import ThreadedMotoServer

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    import importlib

    session = importlib.import_module("nnsig_core.capture.session")
    monkeypatch.setattr(session, "RECORD_EVERY_S", 0.0)  # n_written recorded at every chunk
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing",
               "secret": "testing", "config_kwargs": {"connect_timeout": 1,
                                                      "retries": {"max_attempts": 1}}}
    s3fs.S3FileSystem(**options).mkdir("nnsig-restart")
    url = "s3://nnsig-restart/run.zarr"
    b = _blobs("train", 400)
    adapter = ArrayAdapter(b["activations"], b["outputs"])

    def batches(stop_at: int | None = None):
        for i, lo in enumerate(range(0, 400, 40)):
            if i == stop_at:
                server.stop()
            yield np.arange(lo, lo + 40), b["labels"][lo : lo + 40]

    try:
        with pytest.raises(StoreError, match=r"did not answer.*down or unreachable.*"
                                             r"resume=True\) continues"):
            capture(adapter, batches(stop_at=5), url, chunk_bytes=8 * 4 * 40, progress=False,
                    storage_options=options)
        server.start()
        store = open_store(url, storage_options=options)
        assert not store.is_complete("train") and 0 < store.split_attrs("train")["n_written"]
        capture(adapter, batches(), url, chunk_bytes=8 * 4 * 40, progress=False,
                storage_options=options, resume=True)
        local = str(tmp_path / "s.zarr")
        capture(adapter, batches(), local, chunk_bytes=8 * 4 * 40, progress=False)
        remote, here = _keys(url, options), _keys(local, {})
        split = sorted(k for k in here if k.startswith("train/") and k != "train/zarr.json")
        assert split == sorted(k for k in remote if k.startswith("train/")
                               and k != "train/zarr.json")
        assert [k for k in split if remote[k] != here[k]] == []
        assert open_store(url, storage_options=options).verify().ok
    finally:
        server.stop()


# ---------------------------------------------------------------------------- 6. bare errors
@pytest.mark.slow
def test_writes_denied_by_a_policy_are_a_store_error_naming_store_key_and_fix(
        s3, monkeypatch) -> None:
    import boto3
    import moto.settings

    url, options = s3
    _capture(url, options, "train")
    writer = open_store(url, mode="r+", storage_options=options)  # analysis/ exists: a save
    SignatureAnalysis(n_clusters=3, progress=False).fit(writer, "train").save(writer, "first")
    iam = boto3.client("iam", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    user = f"reader-{os.getpid()}-{id(url)}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read-only", PolicyDocument=(
        '{"Version": "2012-10-17", "Statement": ['
        '{"Effect": "Allow", "Action": "s3:*", "Resource": "*"},'
        '{"Effect": "Deny", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": "*"}]}'))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    reader = {"endpoint_url": options["endpoint_url"], "key": key["AccessKeyId"],
              "secret": key["SecretAccessKey"]}
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    assert open_store(url, storage_options=reader).n_samples("train") == 120  # reads work
    with pytest.raises(StoreError, match=rf"{url}.*refused to write {url}/.*s3:PutObject"):
        _capture(url, reader, "test")
    from nnsig_core.cli import main as cli_main

    so = [f"--storage-option=endpoint_url={options['endpoint_url']}",
          f"--storage-option=key={key['AccessKeyId']}",
          f"--storage-option=secret={key['SecretAccessKey']}"]
    store = open_store(url, mode="r+", storage_options=reader)
    with pytest.raises(StoreError, match=rf"refused to write {url}/analysis/\.new-a-.*PutObject"):
        SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train").save(store, "a")
    assert cli_main([*so, "analyze", url, "--clusters", "3"]) == 1


def test_an_unreachable_endpoint_is_a_store_error(tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s",
               "config_kwargs": {"connect_timeout": 1,
                                               "retries": {"max_attempts": 1}}}
    with pytest.raises(StoreError, match=r"Cannot reach the store .s3://b/run.zarr.*endpoint "
                       r"\(open_store\(url, storage_options="):
        open_store("s3://b/run.zarr", storage_options=options)


# ---------------------------------------------------------------------------- 8. and 9. on disk
@pytest.mark.parametrize("fault", ["label", "class_names"])
def test_a_capture_refused_on_its_first_batch_leaves_no_trace(tmp_path, fault) -> None:
    y = np.arange(30) % 3
    kw = {}
    if fault == "label":
        y[17] = -5
    else:
        kw["class_names"] = ["a", "b"]
    new = tmp_path / "new.zarr"
    with pytest.raises(CaptureError):
        capture_arrays({"h": np.ones((30, 2))}, np.eye(3)[np.arange(30) % 3], y, new,
                       progress=False, **kw)
    assert open_store(new).splits == []
    old = tmp_path / "old.zarr"
    capture_arrays({"h": np.ones((30, 2))}, np.eye(3)[np.arange(30) % 3], np.arange(30) % 3,
                   old, progress=False)
    with pytest.raises(CaptureError):
        capture_arrays({"h": np.ones((30, 2))}, np.eye(3)[np.arange(30) % 3], y, old,
                       split="test", progress=False, **kw)
    assert not (old / "test").exists() and open_store(old).splits == ["train"]


def test_resuming_with_other_layer_widths_says_which_layer_changed(tmp_path, monkeypatch) -> None:
    from nnsig_core.capture import session

    class Weighted(ArrayAdapter):
        def __init__(self, width: int) -> None:
            acts = np.ones((120, width), dtype=np.float32)
            super().__init__({"1": acts}, np.eye(3, dtype=np.float32)[np.arange(120) % 3])
            self.width = width

        def model_fingerprint(self) -> str:
            return f"test:{self.width}"

    monkeypatch.setattr(session, "RECORD_EVERY_S", 0.0)
    path = tmp_path / "s.zarr"

    def data(stop: int):
        for lo in range(0, 120, 10):
            if lo >= stop:
                raise KeyboardInterrupt
            yield np.arange(lo, lo + 10), np.arange(lo, lo + 10) % 3

    with pytest.raises(KeyboardInterrupt):
        capture(Weighted(16), data(50), path, chunk_bytes=8 * 4 * 10, progress=False)
    with pytest.raises(CaptureError, match="layer '1' had 16 units, now 24"):
        capture(Weighted(24), data(10**9), path, resume=True, chunk_bytes=8 * 4 * 10,
                progress=False)
    assert not open_store(path).is_complete("train")
