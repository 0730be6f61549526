"""The activation store: one Zarr v3 hierarchy per experiment, one group per split.

Layout (see ``docs/design.md`` for the full format)::

    store.zarr/                      root attrs: {"nnsig": {"format_version": 1}}
      train/                         split attrs: {"nnsig_split": {...}}
        <layer key>                  float32 or float16, (sample, *unit shape)
        labels                       int64 (sample,)
        predictions                  int64 (sample,)
        outputs                      float32 (sample, output)
        sample_index                 int64 (sample,)  position in the source data set
        inputs                       uint8 (sample, h, w[, 3])  optional thumbnails
      test/ ...
      analysis/<name>/ ...           fitted analyses (written by nnsig_core.analysis)

Every array carries ``dimension_names`` so ``xarray.open_zarr(path, group=split)``
reads a split as a Dataset.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import BloscCodec, ZstdCodec

__all__ = [
    "ActivationStore",
    "FORMAT_VERSION",
    "IncompleteStoreError",
    "StoreError",
    "open_store",
]

log = logging.getLogger("nnsig")

FORMAT_VERSION = 1
SPLIT_ATTR = "nnsig_split"
ROOT_ATTR = "nnsig"
ANALYSIS_GROUP = "analysis"
META_ARRAYS = ("labels", "predictions", "outputs", "sample_index", "inputs")
RESERVED_NAMES = frozenset(META_ARRAYS) | {ANALYSIS_GROUP}


class StoreError(ValueError):
    """A store, split or layer is missing, malformed or incompatible."""


class IncompleteStoreError(StoreError):
    """The split's capture was interrupted; resume it before analysing it."""


def resolve_compressor(compressor: Any) -> Any:
    """The zarr codec for ``capture(..., compressor=...)``.

    ``None`` (the default) stores raw bytes; ``"lz4"`` is Blosc LZ4 at level 1
    after bit shuffle, the fastest codec measured; ``"zstd"`` is zstd at its
    default level, the smallest; anything else is taken as a zarr codec.

    Raw is the default by measurement (``benchmarks/bench_capture.py``,
    figures in docs/design.md): ReLU activations of a trained MLP have random
    mantissas, so even the fastest codec shrinks them by only ~12% while
    adding about 40% to the capture time on a 2-core machine; zstd halves
    them at three times the capture time.
    """
    if compressor is None or compressor == "none":
        return None
    if compressor == "lz4":
        return BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
    if compressor == "zstd":
        return ZstdCodec()
    if isinstance(compressor, str):
        raise ValueError(
            f"Unknown compressor {compressor!r}: use None, 'lz4', 'zstd' or a zarr codec."
        )
    return compressor


def layer_key(name: str) -> str:
    """The array key a layer name is stored under (``/`` and ``%`` are escaped)."""
    key = urllib.parse.quote(name, safe="._-:~+=,;@!()[]{}")
    if key in RESERVED_NAMES or key.startswith("__") or key in (".", ".."):
        key = "layer_" + key
    return key


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


class ActivationStore:
    """A Zarr v3 store of captured activations, labels, predictions and outputs.

    Open one with :func:`open_store` (read-only) or :meth:`ActivationStore.open`;
    :func:`nnsig_core.capture` creates and fills them.

    Parameters
    ----------
    group : zarr.Group
        The root group of the hierarchy.
    path : pathlib.Path or None
        Where it lives on disk, when it is a local directory.
    """

    def __init__(self, group: zarr.Group, path: Path | None = None) -> None:
        self.root = group
        self.path = path

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls, path: str | os.PathLike[str], mode: Literal["r", "r+", "a", "w"] = "r"
    ) -> ActivationStore:
        """Open the store at ``path``.

        Parameters
        ----------
        path : str or path-like
            A directory (``*.zarr`` by convention).
        mode : {"r", "r+", "a", "w"}
            ``"r"`` read-only (the store must exist), ``"r+"`` read-write
            (must exist), ``"a"`` read-write, created if missing, ``"w"``
            created, replacing anything there.

        Raises
        ------
        StoreError
            If the store does not exist (``"r"``, ``"r+"``) or is not an nnsig store.
        """
        p = Path(path)
        if mode in ("r", "r+"):
            if not p.exists():
                raise StoreError(
                    f"No store at {str(p)!r}: the path does not exist. "
                    "Create one with nnsig_core.capture(...)."
                )
            if not (p / "zarr.json").is_file():
                raise StoreError(
                    f"{str(p)!r} is not a Zarr v3 store (no zarr.json); "
                    "give the directory that capture() wrote."
                )
        if mode == "w" and p.exists():
            shutil.rmtree(p)
        try:
            group = zarr.open_group(str(p), mode=mode, zarr_format=3)
        except (zarr.errors.GroupNotFoundError, FileNotFoundError) as exc:
            raise StoreError(f"Cannot open {str(p)!r} as a Zarr v3 group: {exc}") from exc
        attrs = dict(group.attrs)
        if ROOT_ATTR not in attrs:
            if mode in ("r", "r+"):
                raise StoreError(
                    f"{str(p)!r} is a Zarr group but not an nnsig store "
                    f"(no {ROOT_ATTR!r} attribute)."
                )
            if len(list(group.keys())) > 0:
                raise StoreError(
                    f"{str(p)!r} is a non-empty Zarr group that nnsig did not write; "
                    "choose another path."
                )
            group.attrs[ROOT_ATTR] = {"format_version": FORMAT_VERSION}
        else:
            version = attrs[ROOT_ATTR].get("format_version")
            if version != FORMAT_VERSION:
                raise StoreError(
                    f"{str(p)!r} has nnsig store format {version}; this nnsig reads "
                    f"format {FORMAT_VERSION}. Re-capture with this version."
                )
        return cls(group, p)

    # ------------------------------------------------------------------ splits
    @property
    def attrs(self) -> dict[str, Any]:
        """The root attributes (format version, ...)."""
        return dict(self.root.attrs)

    @property
    def read_only(self) -> bool:
        return bool(self.root.read_only)

    @property
    def splits(self) -> list[str]:
        """Names of the splits in the store, complete or not, in sorted order."""
        names = []
        for name, node in self.root.groups():
            if name == ANALYSIS_GROUP:
                continue
            if SPLIT_ATTR in node.attrs:
                names.append(name)
        return sorted(names)

    def _split_group(self, split: str) -> zarr.Group:
        if split not in self.splits:
            raise StoreError(
                f"Split {split!r} is not in the store {self._where()}; "
                f"available splits: {', '.join(self.splits) or '(none)'}."
            )
        return self.root[split]  # type: ignore[return-value]

    def split_attrs(self, split: str) -> dict[str, Any]:
        """Everything recorded about a split: model summary, layers, capture settings..."""
        return dict(self._split_group(split).attrs[SPLIT_ATTR])

    def is_complete(self, split: str) -> bool:
        """Whether the split's capture finished (every sample written to the store's files).

        Written means the chunk files were written and closed, not fsync'd: a
        complete split survives the process being killed, not a power cut.
        """
        return bool(self.split_attrs(split).get("complete", False))

    def require_complete(self, split: str) -> None:
        """Raise :class:`IncompleteStoreError` unless ``split`` is complete."""
        info = self.split_attrs(split)
        if not info.get("complete", False):
            raise IncompleteStoreError(
                f"Split {split!r} of {self._where()} is incomplete "
                f"({info.get('n_written', 0)} of {info.get('n_expected') or '?'} samples written): "
                f"the capture was interrupted. Run capture(..., split={split!r}, resume=True) "
                "to finish it, or overwrite=True to start again."
            )

    def n_samples(self, split: str) -> int:
        """Number of samples durable in the split."""
        info = self.split_attrs(split)
        return int(info.get("n_samples", info.get("n_written", 0)))

    # ------------------------------------------------------------------ layers
    def layer_info(self, split: str) -> list[dict[str, Any]]:
        """Per captured layer: name, key, type, shape, dtype, parameters."""
        return [dict(d) for d in self.split_attrs(split)["layers"]]

    def layers(self, split: str) -> list[str]:
        """Captured layer names of ``split``, in model order."""
        return [d["name"] for d in self.split_attrs(split)["layers"]]

    def _layer_key(self, split: str, layer: str) -> str:
        for d in self.split_attrs(split)["layers"]:
            if d["name"] == layer:
                return str(d["key"])
        import difflib

        names = self.layers(split)
        close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise StoreError(
            f"Layer {layer!r} is not in split {split!r}.{hint} "
            f"Captured layers: {', '.join(names)}."
        )

    def activations(self, split: str, layer: str) -> zarr.Array:
        """The activations of ``layer`` on ``split``: a zarr array (sample, *unit shape).

        Slicing reads only the chunks needed, e.g. ``store.activations("train",
        "fc1")[:1000]``. On an incomplete split, rows at and after
        :meth:`n_samples` hold no data yet.
        """
        g = self._split_group(split)
        return g[self._layer_key(split, layer)]  # type: ignore[return-value]

    # ------------------------------------------------------------------ metadata arrays
    def _meta(self, split: str, name: str) -> zarr.Array:
        g = self._split_group(split)
        if name not in g:
            raise StoreError(f"Split {split!r} has no {name!r} array.")
        return g[name]  # type: ignore[return-value]

    def labels(self, split: str) -> np.ndarray:
        """True labels (int64, -1 where unknown), read into memory."""
        return np.asarray(self._meta(split, "labels")[: self.n_samples(split)])

    def has_labels(self, split: str) -> bool:
        return bool(self.split_attrs(split).get("has_labels", True))

    def predictions(self, split: str) -> np.ndarray:
        """The model's predicted class per sample (int64), read into memory."""
        return np.asarray(self._meta(split, "predictions")[: self.n_samples(split)])

    def sample_index(self, split: str) -> np.ndarray:
        """Each sample's position in the source data set (int64)."""
        return np.asarray(self._meta(split, "sample_index")[: self.n_samples(split)])

    def outputs(self, split: str) -> zarr.Array:
        """Model outputs (logits or scores), a zarr array (sample, output)."""
        return self._meta(split, "outputs")

    def inputs(self, split: str) -> zarr.Array | None:
        """uint8 input thumbnails (sample, h, w[, 3]), or None if not kept."""
        g = self._split_group(split)
        return g["inputs"] if "inputs" in g else None  # type: ignore[return-value]

    def class_names(self, split: str | None = None) -> list[str] | None:
        """Class names given at capture time (the first split's, by default)."""
        splits = [split] if split else self.splits
        for s in splits:
            names = self.split_attrs(s).get("class_names")
            if names:
                return list(names)
        return None

    # ------------------------------------------------------------------ sizes
    def nbytes_stored(self, split: str, name: str | None = None) -> int:
        """Bytes on disk of a split (or of one array of it)."""
        g = self._split_group(split)
        key = None
        if name is not None:  # layer names first: a layer may be called "labels"
            key = self._layer_key(split, name) if name in self.layers(split) else name
            if key not in g:
                raise StoreError(f"Split {split!r} has no layer or array {name!r}.")
        if self.path is not None:
            return _dir_size(self.path / split if key is None else self.path / split / key)
        if key is None:
            return sum(int(a.nbytes_stored()) for _, a in g.arrays())
        return int(g[key].nbytes_stored())  # type: ignore[union-attr]

    # ------------------------------------------------------------------ helpers
    def _where(self) -> str:
        return repr(str(self.path)) if self.path is not None else "(in memory)"

    def __repr__(self) -> str:
        parts = []
        for s in self.splits:
            state = "" if self.is_complete(s) else ", incomplete"
            parts.append(f"{s}: {self.n_samples(s)} samples{state}")
        return f"ActivationStore({self._where()}; {'; '.join(parts) or 'no splits'})"

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description used by ``nnsig info``."""
        out: dict[str, Any] = {"path": str(self.path) if self.path else None, "splits": {}}
        out["format_version"] = self.attrs.get(ROOT_ATTR, {}).get("format_version")
        for s in self.splits:
            info = self.split_attrs(s)
            g = self._split_group(s)
            layers = []
            for d in info["layers"]:
                arr = g[d["key"]]
                layers.append(
                    {
                        "name": d["name"],
                        "type": d.get("type", "?"),
                        "shape": list(arr.shape),
                        "dtype": str(arr.dtype),
                        "chunks": list(arr.chunks),
                        "bytes_stored": self.nbytes_stored(s, d["name"]),
                        "parameters": d.get("parameters"),
                    }
                )
            out["splits"][s] = {
                "complete": bool(info.get("complete", False)),
                "n_samples": self.n_samples(s),
                "n_expected": info.get("n_expected"),
                "framework": info.get("framework"),
                "model_class": info.get("model", {}).get("model_class"),
                "model_parameters": info.get("model", {}).get("parameters"),
                "class_names": info.get("class_names"),
                "capture": info.get("capture"),
                "bytes_stored": self.nbytes_stored(s),
                "layers": layers,
            }
        analyses = self.analyses
        if analyses:
            out["analyses"] = analyses
        return out

    @property
    def analyses(self) -> list[str]:
        """Names of the analyses saved in the store."""
        if ANALYSIS_GROUP not in self.root:
            return []
        return sorted(name for name, _ in self.root[ANALYSIS_GROUP].groups())  # type: ignore[union-attr]


def open_store(path: str | os.PathLike[str], mode: Literal["r", "r+", "a"] = "r") -> ActivationStore:
    """Open an existing activation store (read-only by default).

    Parameters
    ----------
    path : str or path-like
        The store directory written by :func:`nnsig_core.capture`.
    mode : {"r", "r+", "a"}
        See :meth:`ActivationStore.open`.

    Returns
    -------
    ActivationStore
    """
    return ActivationStore.open(path, mode=mode)


def to_json_safe(obj: Any) -> Any:
    """Round-trip through JSON so attrs never hold NumPy scalars or tuples."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return str(o)
