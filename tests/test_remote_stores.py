"""Stores anywhere zarr can write: an S3 server on loopback (moto, as s3fs's own tests use),
fsspec's memory filesystem, and zarr Store objects."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from nnsig_core import ArrayAdapter, CaptureError, capture, capture_arrays, open_store
from nnsig_core.analysis import SignatureAnalysis
from nnsig_core.analysis.synthetic import make_blob_activations
from nnsig_core.cli import main as cli_main
from nnsig_core.store import ClaimError, DamagedChunkError, MissingChunkError, StoreError

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def _blobs(split: str, n: int = 120) -> dict:
    return make_blob_activations(n_samples=n, seed=0, sample_seed=1 if split == "train" else 2)


def _capture(url: str, options: dict, split: str, n: int = 120, **kw) -> None:
    b = _blobs(split, n)
    capture_arrays(b["activations"], b["outputs"], b["labels"], url, split=split,
                   batch_size=40, chunk_bytes=8 * 4 * 40, progress=False,
                   storage_options=options, **kw)


@pytest.mark.filterwarnings("ignore:The fit split .* has no misclassified sample")
@pytest.mark.slow
def test_capture_analysis_and_report_from_s3(s3, tmp_path: Path) -> None:
    url, options = s3
    for split in ("train", "test"):
        _capture(url, options, split)
    store = open_store(url, mode="r+", storage_options=options)
    assert store.path is None and store.location == url
    assert store.splits == ["test", "train"] and store.is_complete("test")
    local = tmp_path / "local.zarr"
    for split in ("train", "test"):
        _capture(str(local), {}, split) if False else capture_arrays(
            _blobs(split)["activations"], _blobs(split)["outputs"], _blobs(split)["labels"],
            local, split=split, batch_size=40, chunk_bytes=8 * 4 * 40, progress=False)
    np.testing.assert_array_equal(store.activations("test", "layer1")[:],
                                  open_store(local).activations("test", "layer1")[:])
    a = SignatureAnalysis(n_clusters=3, progress=False).fit(store, "train")
    a.save(store, "s3")
    back = SignatureAnalysis.load(open_store(url, storage_options=options), "s3")
    np.testing.assert_array_equal(back.transform(store, "test").cluster_ids,
                                  a.transform(store, "test").cluster_ids)
    from nnsig_core.diagnostics import signature_scores
    from nnsig_core.report import write_report

    scores = signature_scores(a, store, "test", save=True)
    index = write_report(a, store, tmp_path / "report", splits=("train", "test"),
                         scores={"test": scores["combined"]})
    assert index.is_file()
    data = (tmp_path / "report" / "data.js").read_text(encoding="utf-8")
    assert url in data
    assert store.verify().ok


@pytest.mark.slow
def test_cli_reads_s3_stores(s3, capsys) -> None:
    url, options = s3
    _capture(url, options, "train")
    so = [f"--storage-option=endpoint_url={options['endpoint_url']}",
          "--storage-option=key=testing", "--storage-option=secret=testing"]
    assert cli_main([*so, "info", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == url
    assert cli_main([*so, "verify", url]) == 0
    assert "OK" in capsys.readouterr().out
    # The command it prints next reaches the store too: it repeats the storage options.
    assert cli_main([*so, "analyze", url, "--all-samples", "--clusters", "3"]) == 0
    hint = capsys.readouterr().out.rpartition("write the report with: ")[2].split()
    assert hint[: 1 + 2 * len(so)] == ["nnsig"] + [w for o in so for w in o.split("=", 1)]


@pytest.mark.slow
def test_an_interrupted_capture_to_s3_resumes(s3, monkeypatch) -> None:
    from nnsig_core.capture import session

    monkeypatch.setattr(session, "RECORD_EVERY_S", 0.0)
    url, options = s3
    b = _blobs("train", 200)
    adapter = ArrayAdapter(b["activations"], b["outputs"])

    def data(stop: int):
        for lo in range(0, 200, 20):
            if lo >= stop:
                raise KeyboardInterrupt
            yield np.arange(lo, lo + 20), b["labels"][lo : lo + 20]

    kw = {"chunk_bytes": 8 * 4 * 20, "progress": False, "storage_options": options}
    with pytest.raises(KeyboardInterrupt):
        capture(adapter, data(110), url, **kw)
    store = open_store(url, storage_options=options)
    assert not store.is_complete("train") and 0 < store.split_attrs("train")["n_written"] < 200
    capture(adapter, data(10**9), url, resume=True, **kw)
    store = open_store(url, storage_options=options)
    assert store.is_complete("train")
    for name, arr in b["activations"].items():
        np.testing.assert_array_equal(store.activations("train", name)[:], arr)
    np.testing.assert_array_equal(store.labels("train"), b["labels"])


@pytest.mark.slow
def test_one_writer_per_split_on_s3(s3) -> None:
    url, options = s3
    _capture(url, options, "train")
    store = open_store(url, mode="r+", storage_options=options)
    with store.claim("test"), pytest.raises(ClaimError, match="being written by another"):
        _capture(url, options, "test")
    _capture(url, options, "test")  # the claim was released
    assert "test" in open_store(url, storage_options=options).splits


@pytest.mark.slow
def test_a_stale_s3_claim_is_broken_only_by_resume(s3, monkeypatch) -> None:
    from nnsig_core.store import claims

    url, options = s3
    _capture(url, options, "train")
    store = open_store(url, mode="r+", storage_options=options)
    dead = store.claim("test")
    dead._held = False  # the writer died without releasing its claim
    monkeypatch.setattr(claims, "STALE_AFTER_S", 0.0)
    with pytest.raises(ClaimError, match="no sign of life.*resume=True"):
        _capture(url, options, "test")
    _capture(url, options, "test", resume=True)
    assert open_store(url, storage_options=options).is_complete("test")


@pytest.mark.slow
def test_damage_on_s3_is_detected(s3) -> None:
    import s3fs

    url, options = s3
    _capture(url, options, "train")
    fs = s3fs.S3FileSystem(**options)
    root = url[len("s3://"):]
    fs.rm(f"{root}/train/layer0/c/1/0")
    blob = fs.cat(f"{root}/train/layer1/c/2/0")
    fs.pipe(f"{root}/train/layer1/c/2/0", blob[:-1] + bytes([blob[-1] ^ 1]))
    store = open_store(url, storage_options=options)
    with pytest.raises(MissingChunkError, match=f"rows 40-79.*{url}/train/layer0/c/1/0"):
        store.activations("train", "layer0")[:]
    with pytest.raises(DamagedChunkError, match="layer 'layer1' of split 'train' \\(rows 80-119"):
        store.activations("train", "layer1")[:]
    assert open_store(url, storage_options=options).verify().rows_to_recapture() == {
        "train": [(40, 119)]}


def test_memory_urls_and_store_objects(tmp_path: Path) -> None:
    import zarr

    url = f"memory://nnsig-{uuid.uuid4().hex[:8]}/run.zarr"
    _capture(url, {}, "train")
    assert open_store(url).n_samples("train") == 120
    mem = zarr.storage.MemoryStore()
    b = _blobs("train")
    capture_arrays(b["activations"], b["outputs"], b["labels"], mem, progress=False)
    store = open_store(mem)
    assert store.splits == ["train"] and store.verify().ok
    assert SignatureAnalysis(n_clusters=3, progress=False).fit(store).n_fit_samples_ > 0
    with pytest.raises(ValueError, match="storage_options apply to URLs"):
        open_store(tmp_path / "x.zarr", mode="a", storage_options={"anon": True})


def test_missing_remote_store_and_unknown_protocol(s3) -> None:
    url, options = s3
    with pytest.raises(StoreError, match="No store at"):
        open_store(url, storage_options=options)
    with pytest.raises((StoreError, ValueError), match="nosuchproto"):
        open_store("nosuchproto://x/y.zarr")
    with pytest.raises(CaptureError):
        capture_arrays({"h": np.ones((3, 2))}, np.eye(3), [0, 1, 2], url, split="bad name",
                       storage_options=options, progress=False)


@pytest.mark.slow
def test_xarray_opens_an_s3_split_with_one_metadata_read_and_a_migrated_store(
        s3, tmp_path: Path) -> None:
    """Format 2 on S3: xarray reads one zarr.json (the root's consolidated metadata) to open a
    split; a format 1 store uploaded to S3 is refused naming nnsig migrate, which upgrades it."""
    import s3fs
    from zarr.storage import FsspecStore, WrapperStore

    from nnsig_core import migrate_store
    from tests.test_store_formats import write_format1_store

    xr = pytest.importorskip("xarray")
    url, options = s3
    _capture(url, options, "train")
    reads: list[str] = []

    class Reads(WrapperStore):
        def _with_store(self, store):
            return type(self)(store)

        async def get(self, key, prototype, byte_range=None):
            reads.append(key)
            return await self._store.get(key, prototype, byte_range)

    inner = FsspecStore.from_url(url, storage_options=options, read_only=True)
    ds = xr.open_zarr(Reads(inner), group="train")
    assert [k for k in reads if k.endswith("zarr.json")] == ["zarr.json"]
    np.testing.assert_array_equal(ds["labels"].values, _blobs("train")["labels"])

    old = url.replace("run.zarr", "old.zarr")
    values = write_format1_store(tmp_path / "old.zarr")
    s3fs.S3FileSystem(**options).put(str(tmp_path / "old.zarr"), old[len("s3://"):],
                                     recursive=True)
    with pytest.raises(StoreError, match="nnsig migrate"):
        open_store(old, storage_options=options)
    assert migrate_store(old, storage_options=options).migrated
    store = open_store(old, storage_options=options)
    np.testing.assert_array_equal(store.labels("train"), values["labels"])
    assert store.verify().ok


@pytest.mark.slow
def test_s3_objects_are_read_in_one_request_unless_told_otherwise(s3) -> None:
    """s3fs asks an object's size (a HEAD) before every whole read when it may split reads over
    several connections (max_concurrency > 1, its default 10): a store opens its S3 filesystem
    with max_concurrency=1 (one GET a chunk), unless the storage options say otherwise."""
    from nnsig_core.store.pointers import raw_store

    url, options = s3
    _capture(url, options, "train")
    for given, expected in ((options, 1), ({**options, "max_concurrency": 4}, 4)):
        store = open_store(url, storage_options=given)
        assert raw_store(store.root.store_path.store).fs.max_concurrency == expected
    assert "max_concurrency" not in options  # the caller's dict is left alone


def test_a_missing_bucket_is_named_when_reading_and_writing(s3) -> None:
    """Reading from a bucket that does not exist says so (it said "create one with capture",
    which then failed on the same missing bucket); so does a capture's first write (it said
    "cannot reach the store", naming the endpoint and the credentials first)."""
    url, options = s3
    missing = "s3://nnsig-no-such-bucket/run.zarr"
    with pytest.raises(StoreError, match="the bucket 'nnsig-no-such-bucket' does not exist"):
        open_store(missing, storage_options=options)
    with pytest.raises(StoreError, match=r"Cannot create a store at .*: the bucket "
                       r"'nnsig-no-such-bucket' does not exist"):
        open_store(missing, mode="a", storage_options=options)
    with pytest.raises(StoreError, match=r"no zarr.json there\). Create one"):
        open_store(url, storage_options=options)  # the bucket exists, the store does not


def test_a_storage_option_the_filesystem_does_not_take_is_named(s3) -> None:
    url, options = s3
    bad = {k: v for k, v in options.items() if k != "endpoint_url"}
    bad["endpoint"] = options["endpoint_url"]  # a typo of endpoint_url
    with pytest.raises(StoreError, match="a storage option is not one its filesystem takes.*"
                                         "'endpoint'.*endpoint_url"):
        open_store(url, storage_options=bad)
