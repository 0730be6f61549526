"""Distributed capture and analysis on an object store: an S3 server on loopback (moto, as in
``test_remote_stores.py``), the workers opening the store the driver was given."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import cloudpickle  # noqa: E402

from nnsig_core import capture, open_store  # noqa: E402
from nnsig_core.analysis import SignatureAnalysis  # noqa: E402
from nnsig_core.distributed import capture_distributed  # noqa: E402

cloudpickle.register_pickle_by_value(__import__(__name__))

def _centres(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=4.0, size=(3, 8)).astype(np.float32)


class Linear:
    """A one-layer numpy model implementing the adapter protocol."""

    framework = "numpy-test"

    def __init__(self, seed: int = 0) -> None:
        self.w = np.random.default_rng(seed + 1).normal(size=(8, 3)).astype(np.float32)

    def run(self, inputs):
        h = np.maximum(np.asarray(inputs, dtype=np.float32) @ np.eye(8, dtype=np.float32), 0)
        out = h @ self.w
        return out, {"hidden": h}

    def model_summary(self):
        return {"model_class": "Linear", "parameters": int(self.w.size),
                "layers": [{"name": "hidden", "type": "ReLU"}]}

    def to_numpy(self, x):
        return np.asarray(x)


def make_adapter(seed: int = 0) -> Linear:
    return Linear(seed)


def _data(n: int = 900) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=n)
    X = (_centres()[y] + rng.normal(size=(n, 8))).astype(np.float32)
    return X, y


def _s3_files(url: str, options: dict) -> dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    root = url.removeprefix("s3://")
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)
            if "/.nnsig-claims" not in p}


def _local_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*")
            if p.is_file() and ".nnsig-claims" not in p.parts}


@pytest.mark.slow
def test_capture_and_fit_on_s3_as_on_a_local_disk(s3, client, tmp_path) -> None:
    url, options = s3
    X, y = _data()
    kw = dict(batch_size=50, chunk_bytes=50 * 8 * 4, progress=False)
    capture_distributed(functools.partial(make_adapter, 0), (X, y), url, shard_rows=200,
                        client=client, storage_options=options, **kw)
    capture(make_adapter(0), (X, y), tmp_path / "s.zarr", **kw)
    remote, local = _s3_files(url, options), _local_files(tmp_path / "s.zarr")
    chunks = [k for k in local if "/c/" in k]
    assert len(chunks) >= 18  # 900 rows in chunks of 50, several arrays
    for key in chunks:  # every chunk, byte for byte; the metadata differs in dates only
        assert remote[key] == local[key], key
    assert sorted(k for k in remote if "/c/" in k) == sorted(chunks)

    store = open_store(url, mode="r+", storage_options=options)
    assert store.is_complete("train") and store.path is None
    here = SignatureAnalysis(n_clusters=3, progress=False).fit(tmp_path / "s.zarr", client=False)
    there = SignatureAnalysis(n_clusters=3, progress=False).fit(store, client=client)
    np.testing.assert_allclose(there.clusterers_["hidden"].cluster_centers_,
                               here.clusterers_["hidden"].cluster_centers_, rtol=1e-4, atol=1e-4)
    sig_here = here.transform(tmp_path / "s.zarr", "train", client=False)
    sig_there = there.transform(store, "train", client=client)
    np.testing.assert_array_equal(sig_there.compute().cluster_ids, sig_here.cluster_ids)
    assert list(sig_there.table()) == list(sig_here.table())
    assert list(sig_there.by_signature()) == list(sig_here.by_signature())
