"""Store format versions: stores of format 1 (nnsig 0.1 and 0.2) refused with `nnsig migrate`
as the fix, the migration (atomic, dry run, what it cannot do), and format 2's conventions:
consolidated metadata kept current, coordinates and dimension names read by xarray."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec
from zarr.storage import LocalStore, WrapperStore

from nnsig_core import (
    SignatureAnalysis,
    StoreError,
    capture_arrays,
    migrate_store,
    open_store,
)
from nnsig_core.cli import main
from nnsig_core.store import FORMAT_VERSION, MigrationError

N, CLASSES = 60, 3


def _rows(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(N) % CLASSES
    hidden = (rng.normal(size=(N, 4)) + y[:, None]).astype(np.float32)
    outputs = np.eye(CLASSES, dtype=np.float32)[y] + rng.normal(0, 0.1, (N, CLASSES)).astype(
        np.float32)
    return hidden, outputs, y


def write_format1_store(path: Path, *, checksums: bool = False, layer: str = "hidden",
                        split: str = "train") -> dict[str, np.ndarray]:
    """A store as nnsig 0.1 wrote it (``checksums=True``: as 0.2 did), from the format's
    description (docs/design.md at 0.1.0, CHANGELOG): root attribute ``{"nnsig":
    {"format_version": 1}}``; per split a group with ``nnsig_split`` attributes and the arrays
    of each layer (attribute ``layer``), ``outputs``, ``labels``, ``predictions`` and
    ``sample_index`` with dimension names; raw chunks (0.2 adds a crc32c checksum)."""
    hidden, outputs, y = _rows()
    root = zarr.open_group(LocalStore(path), mode="a", zarr_format=3)
    root.attrs["nnsig"] = {"format_version": 1}
    group = root.create_group(split)
    compressors = [Crc32cCodec()] if checksums else None
    rows = 16
    values = {layer: hidden, "outputs": outputs, "labels": y.astype(np.int64),
              "predictions": outputs.argmax(1).astype(np.int64),
              "sample_index": np.arange(N, dtype=np.int64)}
    dims = {layer: ("sample", f"{layer}_unit"), "outputs": ("sample", "output")}
    for key, value in values.items():
        arr = group.create_array(key, shape=value.shape, chunks=(rows, *value.shape[1:]),
                                 dtype=value.dtype, fill_value=-1 if value.dtype.kind == "i" else 0,
                                 dimension_names=dims.get(key, ("sample",)),
                                 compressors=compressors,
                                 attributes={"layer": layer} if key == layer else None)
        arr[...] = value
    capture = {"batch_size": 20, "dtype": "float32", "codec": None, "chunk_rows": rows,
               "versions": {"nnsig": "0.1.0"}, "started": "2026-11-26T10:00:00+00:00",
               "finished": "2026-11-26T10:00:01+00:00"}
    if checksums:
        capture["capture_id"] = "0123456789abcdef"
    group.attrs["nnsig_split"] = {
        "complete": True, "n_written": N, "n_samples": N, "n_expected": N,
        "framework": "numpy-test", "model": {"model_class": "Tiny", "parameters": 0, "layers": []},
        "layers": [{"name": layer, "key": layer, "type": "ReLU", "shape": [4],
                    "dtype": "float32", "parameters": 0, "config": {}}],
        "class_names": ["a", "b", "c"], "has_labels": True, "capture": capture,
    }
    return values


def _files(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*"))
            if f.is_file()}


def test_format1_store_refused_with_migrate_as_the_fix_which_works(tmp_path: Path,
                                                                   capsys) -> None:
    path = tmp_path / "old.zarr"
    values = write_format1_store(path)
    with pytest.raises(StoreError, match=r"format 1 .*nnsig migrate"):
        open_store(path)
    assert main(["migrate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "upgraded to format 2" in out and "no checksums" in out
    store = open_store(path)
    assert store.attrs["nnsig"]["format_version"] == FORMAT_VERSION == 2
    np.testing.assert_array_equal(store.activations("train", "hidden")[:], values["hidden"])
    np.testing.assert_array_equal(store.labels("train"), values["labels"])
    assert store.verify().ok
    analysis = SignatureAnalysis(n_clusters=3, random_state=0, progress=False).fit(store, "train")
    assert analysis.transform(store, "train").cluster_ids.shape[0] > 0
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(path, group="train", consolidated=True)
    np.testing.assert_array_equal(ds["output"].values, np.arange(CLASSES))
    np.testing.assert_array_equal(ds["labels"].values, values["labels"])
    assert main(["migrate", str(path)]) == 0  # a second run has nothing to do
    assert "already format 2" in capsys.readouterr().out


def test_format1_store_refused_for_capture_too(tmp_path: Path) -> None:
    path = tmp_path / "old.zarr"
    write_format1_store(path, checksums=True)
    hidden, outputs, y = _rows()
    with pytest.raises(StoreError, match="nnsig migrate"):
        capture_arrays({"hidden": hidden}, outputs, y, path, split="test", progress=False)


def test_dry_run_changes_nothing_and_says_what_would(tmp_path: Path) -> None:
    path = tmp_path / "old.zarr"
    write_format1_store(path, checksums=True)
    before = _files(path)
    report = migrate_store(path, dry_run=True)
    assert _files(path) == before
    assert not report.migrated and report.from_version == 1
    assert any("coordinate 'output'" in c for c in report.changes)
    assert not any("no checksums" in n for n in report.notes)  # 0.2's chunks have them


def test_migration_refuses_what_it_cannot_upgrade_and_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "old.zarr"
    write_format1_store(path, layer="output")
    before = _files(path)
    with pytest.raises(MigrationError, match="drop-split train") as info:
        migrate_store(path)
    assert "layer 'output'" in str(info.value)
    assert _files(path) == before
    assert main(["migrate", str(path)]) == 1
    report = migrate_store(path, drop_splits=["train"])  # the fix the message names
    assert report.migrated and open_store(path).splits == []


def test_newer_format_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.zarr"
    write_format1_store(path)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["nnsig"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="format 99"):
        open_store(path)
    with pytest.raises(MigrationError, match="format 99"):
        migrate_store(path)


class _StopAfter(WrapperStore[LocalStore]):
    """A store whose process 'dies' (raises) at its k-th write or delete."""

    def __init__(self, store: LocalStore, k: int) -> None:
        super().__init__(store)
        self.k, self.n = k, 0

    def _with_store(self, store: LocalStore) -> _StopAfter:
        return type(self)(store, self.k)

    def _tick(self) -> None:
        self.n += 1
        if self.n > self.k:
            raise RuntimeError("killed")

    async def set(self, key, value) -> None:
        self._tick()
        await self._store.set(key, value)

    async def delete(self, key) -> None:
        self._tick()
        await self._store.delete(key)


def test_a_migration_killed_at_any_write_leaves_a_store_that_migrates(tmp_path: Path) -> None:
    base = tmp_path / "base.zarr"
    values = write_format1_store(base, checksums=True)
    counting = _StopAfter(LocalStore(tmp_path / "count.zarr"), 10**6)
    shutil.copytree(base, tmp_path / "count.zarr")
    migrate_store(counting)
    # the documents of 'hidden' and 'outputs', the coordinate's document and chunk, the root
    assert counting.n == 5
    for k in range(counting.n):
        path = tmp_path / f"k{k}.zarr"
        shutil.copytree(base, path)
        with pytest.raises(RuntimeError, match="killed"):
            migrate_store(_StopAfter(LocalStore(path), k))
        with pytest.raises(StoreError, match="nnsig migrate"):  # still format 1, whole
            open_store(path)
        assert zarr.open_group(LocalStore(path), mode="r").attrs["nnsig"]["format_version"] == 1
        assert migrate_store(path).migrated
        store = open_store(path)
        assert store.verify().ok
        np.testing.assert_array_equal(store.activations("train", "hidden")[:], values["hidden"])


# ------------------------------------------------------------------ format 2: xarray, consolidated
def _capture(path: Path, split: str = "train", seed: int = 0):
    hidden, outputs, y = _rows(seed)
    return capture_arrays({"hidden": hidden, "out": outputs}, outputs, y, path, split=split,
                          class_names=["a", "b", "c"], progress=False), hidden, outputs, y


def test_xarray_reads_each_split_with_coordinates_and_selects_by_label(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    path = tmp_path / "s.zarr"
    _capture(path, "train")
    store, hidden, outputs, y = _capture(path, "test", seed=1)
    for split in ("train", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "Failed to open with consolidated metadata"
            ds = xr.open_zarr(path, group=split)
        assert set(ds.coords) == {"labels", "predictions", "sample_index", "output"}
        assert ds["hidden"].dims == ("sample", "hidden_unit")
        assert ds["outputs"].dims == ("sample", "output")
    third = ds.where((ds.labels == 2).compute(), drop=True)  # coordinates load lazily
    np.testing.assert_array_equal(third["hidden"].values, hidden[y == 2])
    np.testing.assert_array_equal(third["sample_index"].values, np.flatnonzero(y == 2))
    picked = ds.set_xindex("sample_index").sel(sample_index=[3, 7])
    np.testing.assert_array_equal(picked["hidden"].values,
                                  store.activations("test", "hidden")[[3, 7]])
    np.testing.assert_array_equal(ds["outputs"].sel(output=1).values, outputs[:, 1])
    np.testing.assert_array_equal(ds["predictions"].values, store.predictions("test"))


class _Reads(WrapperStore[LocalStore]):
    def __init__(self, store: LocalStore) -> None:
        super().__init__(store)
        self.keys: list[str] = []

    def _with_store(self, store: LocalStore) -> _Reads:
        return type(self)(store)

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)


def test_xarray_opens_a_split_with_one_metadata_read(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    _capture(tmp_path / "s.zarr")
    reads = _Reads(LocalStore(tmp_path / "s.zarr", read_only=True))
    xr.open_zarr(reads, group="train")
    assert [k for k in reads.keys if k.endswith("zarr.json")] == ["zarr.json"]


def _consolidated(path: Path) -> set[str]:
    meta = zarr.open_consolidated(LocalStore(path, read_only=True), mode="r").metadata
    return set(meta.consolidated_metadata.flattened_metadata)


def test_consolidated_metadata_follows_every_change(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, *_ = _capture(path)
    assert {"train", "train/hidden", "train/output"} <= _consolidated(path)
    store = open_store(path, mode="r+")
    analysis = SignatureAnalysis(n_clusters=2, random_state=0, progress=False).fit(store, "train")
    analysis.save(store, name="a")
    assert "analysis/a" in _consolidated(path)
    _capture(path, "test", seed=2)
    assert "test/hidden" in _consolidated(path)
    store.remove_split("test")
    assert not any(k.startswith("test") for k in _consolidated(path))
    store.delete("analysis/a")
    assert not any(k.startswith("analysis/a") for k in _consolidated(path))
    assert not any(k.startswith(".") for k in _consolidated(path))
