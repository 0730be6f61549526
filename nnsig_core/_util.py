"""Small helpers used across nnsig_core: names, time stamps, versions, JSON, sizes, counts."""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

#: Split and analysis names: letters, digits, ``_ . -``, not starting with a symbol.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_name(name: Any, what: str, reserved: frozenset[str] = frozenset()) -> str:
    """Return ``name`` if it is a valid ``what`` (``"split"``, ``"analysis"``) name and not
    one of the ``reserved`` names the store format takes, else raise ``ValueError``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in reserved:
        taken = f", and not one of {sorted(reserved)}" if reserved else ""
        raise ValueError(f"Invalid {what} name {name!r}: use letters, digits, '_', '.', '-' "
                         f"(starting with a letter or digit){taken}.")
    return name


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (what the store records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_version() -> str:
    """The installed nnsig version, or ``"unknown"`` when run from an uninstalled tree."""
    try:
        from importlib.metadata import version

        return version("nnsig")
    except Exception:  # pragma: no cover - not installed
        return "unknown"


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy scalars and arrays, sets, and anything else as text."""
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)


def to_json_safe(obj: Any) -> Any:
    """Round-trip through JSON so attributes never hold NumPy scalars or tuples."""
    return json.loads(json.dumps(obj, default=json_default))


_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
    "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(value: int | float | str) -> int:
    """A memory size in bytes (>= 0, else ``ValueError``): a number of bytes, or a string
    such as ``"2GiB"``, ``"500MB"`` (``B``, ``kB``, ``MB``, ``GB``, ``TB`` in powers of
    1000, ``KiB``, ``MiB``, ``GiB``, ``TiB`` in powers of 1024; case-insensitive)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating, str)):
        raise ValueError(f"memory_limit must be a number of bytes or a size string, got {value!r}.")
    if not isinstance(value, str):
        n = int(value)
    else:
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise ValueError(f"Cannot parse the memory size {value!r}: give bytes (e.g. "
                             "500000000) or a number with a unit such as '512MiB', '2GiB', '4GB'.")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n < 0:
        raise ValueError(f"memory_limit must be >= 0 bytes, got {value!r}.")
    return n


def format_bytes(n: float | None) -> str:
    """Human-readable size in powers of 1024 (``"1.5 GiB"``); ``"?"`` for None."""
    if n is None:
        return "?"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(x) < 1024:
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TiB"


def l2_normalise(X: Any, dtype: Any = np.float64, copy: bool = True) -> np.ndarray:
    """Rows of ``X`` divided by their Euclidean norm (a zero row stays zero), as ``dtype``;
    without ``copy``, in place when ``X`` already has that dtype."""
    X = np.array(X, dtype=dtype, copy=True) if copy else np.asarray(X, dtype=dtype)
    X /= np.maximum(np.sqrt(np.einsum("ij,ij->i", X, X))[:, None], 1e-12)
    return X


def count_matrix(clusters: Any, classes: Any, n_clusters: int, n_classes: int) -> np.ndarray:
    """``(n_clusters, n_classes)`` counts of the samples' (cluster, class) pairs; samples of
    class < 0 (unknown) skipped."""
    k = np.asarray(clusters, dtype=np.int64).reshape(-1)
    c = np.asarray(classes, dtype=np.int64).reshape(-1)
    keep = c >= 0
    if k.size and (k.min(initial=0) < 0 or k.max(initial=0) >= n_clusters
                   or c.max(initial=-1) >= n_classes):
        raise ValueError(f"cluster ids must lie in [0, {n_clusters}) and classes below "
                         f"{n_classes}.")
    flat = np.bincount(k[keep] * n_classes + c[keep], minlength=n_clusters * n_classes)
    return flat[: n_clusters * n_classes].reshape(n_clusters, n_classes).astype(np.int64)


def fsync_dir(directory: str | os.PathLike[str] | Path) -> None:
    """Make a directory's entries (new or renamed files) durable; a no-op where directories
    cannot be opened for that."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A package's PEP 562 ``__getattr__``: ``name`` imported from ``modules[name]`` on first
    use (so importing the package imports none of them), then set on the package."""

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def import_framework(module: str, adapter: str, what: str, install: str) -> Any:
    """Import ``module`` for the adapter package ``adapter``; when it is not installed, an
    ImportError naming ``install`` (the bare "No module named 'torch'" names no fix)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ImportError(f"{adapter} needs {what}, which is not installed: {install}.") from exc
