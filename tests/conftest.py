"""Shared fixtures: where MNIST is, and whether its absence is a skip or a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("NNSIG_REQUIRE_MNIST"))


def find_mnist_root() -> Path | None:
    """The directory holding ``MNIST/raw`` (torchvision's layout), if any."""
    candidates = [os.environ.get("NNSIG_DATA"), str(REPO.parent / "shared" / "data")]
    for c in candidates:
        if c and (Path(c) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """MNIST's root directory; skips when absent, fails in CI."""
    root = find_mnist_root()
    if root is None:
        msg = "MNIST not found: set NNSIG_DATA to the directory holding MNIST/raw"
        if _required():
            pytest.fail(msg + " (required in CI)")
        pytest.skip(msg)
    return root
