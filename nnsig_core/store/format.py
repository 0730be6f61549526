"""The store format: every name, key, attribute and array layout of an nnsig store.

The layout is drawn and explained in ``docs/store-format.md``; readers and writers take
every name from here, :class:`~nnsig_core.store.ActivationStore` implements the operations.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

#: The store format this nnsig writes and reads: 1 (nnsig 0.1 and 0.2), 2 (consolidated
#: metadata, coordinates; ``nnsig migrate`` upgrades 1 to 2).
FORMAT_VERSION = 2
ROOT_ATTR = "nnsig"
SPLIT_ATTR = "nnsig_split"
ANALYSIS_GROUP = "analysis"
ANALYSIS_ATTR = "nnsig_analysis"
SIGNATURES_GROUP = "signatures"
SCORES_GROUP = "scores"
SCORER_GROUP = "scorer"
SCORES_ATTR = "nnsig_scores"
#: The attribute of a pointer group: the sibling holding the current copy (store/pointers.py).
POINTER_ATTR = "nnsig_pointer"
META_ARRAYS = ("labels", "predictions", "outputs", "sample_index", "inputs")
#: The arrays a token row space adds: each row's sample, position and token id.
TOKEN_ARRAYS = ("sample_row", "position", "token")
#: The token row space of split ``s`` is the split ``s + TOKENS_SUFFIX``.
TOKENS_SUFFIX = ".tokens"
#: Coordinate arrays of a split's other axes: ``output`` holds the class of each column of
#: ``outputs`` (its dimension), so xarray indexes ``outputs`` by class.
CLASS_COORDINATE = "output"
COORDINATE_ARRAYS = (CLASS_COORDINATE,)
#: The coordinates of the sample axis, named by every other array (``coordinates`` attribute).
SAMPLE_COORDINATES = ("labels", "predictions", "sample_index")
RESERVED_NAMES = (frozenset(META_ARRAYS) | frozenset(TOKEN_ARRAYS) | frozenset(COORDINATE_ARRAYS)
                  | {ANALYSIS_GROUP})
MAX_CHUNK_ROWS = 65536


def layer_key(name: str) -> str:
    """The array key a layer name is stored under: ``/``, ``%`` and other unsafe characters
    percent-escaped; a name that clashes with the metadata arrays or with a name zarr or the
    file system reserves (``zarr.json``, ``__*``, ``.``-names, empty) gets a ``layer_`` prefix."""
    key = urllib.parse.quote(name, safe="._-:~+=,;@!()[]{}")
    if (key in RESERVED_NAMES or key.startswith(("__", ".")) or not key
            or key.lower() == "zarr.json"):
        key = "layer_" + key
    return key


def token_split_name(split: str) -> str:
    """The name of the token row space of ``split`` (a split of its own: ``"train.tokens"``)."""
    return split + TOKENS_SUFFIX


def analysis_path(name: str) -> str:
    """Path of a saved analysis's group, from the store's root."""
    return f"{ANALYSIS_GROUP}/{name}"


def signatures_path(name: str, split: str | None = None) -> str:
    """Path of an analysis's saved signatures (of one split, or the group of all)."""
    base = f"{analysis_path(name)}/{SIGNATURES_GROUP}"
    return base if split is None else f"{base}/{split}"


def scorer_path(name: str) -> str:
    """Path of the scorer saved with the analysis ``name``."""
    return f"{analysis_path(name)}/{SCORER_GROUP}"


def scores_path(name: str, split: str | None = None) -> str:
    """Path of an analysis's saved scores (of one split, or the group of all)."""
    base = f"{analysis_path(name)}/{SCORES_GROUP}"
    return base if split is None else f"{base}/{split}"


def resolve_compressor(compressor: Any) -> Any:
    """The zarr codec for ``capture(..., compressor=...)``: None raw bytes, ``"lz4"`` Blosc LZ4
    (fastest), ``"zstd"`` zstd (smallest), or a zarr codec; ValueError for another name."""
    if compressor is None or compressor == "none":
        return None
    if compressor == "lz4":
        return BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
    if compressor == "zstd":
        return ZstdCodec()
    if isinstance(compressor, str):
        raise ValueError(f"Unknown compressor {compressor!r}: use None, 'lz4', 'zstd' or a zarr "
                         "codec.")
    return compressor


def array_options(compressor: Any = "zstd") -> dict[str, Any]:
    """``create_array`` options every nnsig array gets: the compressor (None, a name of
    :func:`resolve_compressor` or a codec) followed by a ``crc32c`` checksum, so a damaged
    chunk is detected on read; and every chunk written even when it holds only the fill
    value, so a missing chunk always means a lost one."""
    codec = resolve_compressor(compressor)
    return {"compressors": [*([codec] if codec is not None else []), Crc32cCodec()],
            "config": {"write_empty_chunks": True}}


def codec_description(compressor: Any) -> Any:
    """A JSON description of the codec, recorded in the capture settings."""
    if compressor is None:
        return None
    to_dict = getattr(compressor, "to_dict", None)
    return to_dict() if callable(to_dict) else repr(compressor)


def chunk_rows_for(chunk_bytes: int, row_bytes: int, batch_rows: int | None,
                   n_rows: int | None = None) -> int:
    """Rows per chunk: about ``chunk_bytes`` of the widest array, or exactly one batch when
    within a factor of four (batches are then written without a copy); never more than the
    split's ``n_rows`` when known (an edge chunk is stored whole)."""
    rows = int(max(1, min(MAX_CHUNK_ROWS, chunk_bytes // max(row_bytes, 1))))
    if batch_rows and rows // 4 <= batch_rows <= rows * 4:
        rows = batch_rows
    return max(1, min(rows, n_rows)) if n_rows else rows


def _row_pooling(d: Mapping[str, Any], level: str) -> str | None:
    """What a layer's recorded pooling (``"mean"``, ``"cls+tokens"``, ``"tokens"``) makes of
    the rows of a split of ``level``: a sample's row, or token rows (the same whatever the
    sample's pooling)."""
    pool = d.get("pool")
    source = d.get("source_shape")
    if pool is None or (source is not None and len(source) <= 1):
        return None  # no positions to pool: every mode gives the same row
    if level == "tokens":
        return "tokens" if "tokens" in str(pool) else str(pool)
    return str(pool).removesuffix("+tokens")


def layer_differences(
    mine: Sequence[Mapping[str, Any]], theirs: Sequence[Mapping[str, Any]], other: str,
    level: str = "samples",
) -> list[str]:
    """How two lists of captured layers (name, shape, pooling of the rows of ``level``)
    differ, in words (``other`` names the split of ``theirs``); empty when they match."""
    a = {d["name"]: tuple(d["shape"]) for d in mine}
    b = {d["name"]: tuple(d["shape"]) for d in theirs}
    # Rows pooled another way (a mean here, the last token there) are another representation:
    # clusters of one do not apply to the other.
    pools = {d["name"]: _row_pooling(d, level) for d in theirs}
    pooled = [f"layer {d['name']!r} is pooled {_row_pooling(d, level)!r} here but "
              f"{pools[d['name']]!r} in {other!r}" for d in mine
              if pools.get(d["name"]) is not None and _row_pooling(d, level) is not None
              and _row_pooling(d, level) != pools[d["name"]]]
    if list(a) == list(b) and a == b:
        return pooled
    problems = list(pooled)
    missing = [n for n in b if n not in a]
    extra = [n for n in a if n not in b]
    if missing:
        problems.append(f"layers missing from this model: {missing}")
    if extra:
        problems.append(f"layers not in split {other!r}: {extra}")
    if missing and sorted(map(_unnumbered, missing)) == sorted(map(_unnumbered, extra)):
        problems.append("the names differ only in their numbers, as Keras numbers default "
                        f"layer names per session (dense, dense_1, ...): give the layers the "
                        f"names they have in {other!r} (e.g. name={missing[0]!r} when building "
                        "the layer), or build the model in a new process")
    for n in a:
        if n in b and a[n] != b[n]:
            problems.append(f"layer {n!r} has shape {a[n]} here but {b[n]} in {other!r}")
    return problems or ["the layers come in a different order"]


def _unnumbered(name: str) -> str:
    return re.sub(r"_\d+(?=$|/)", "", name)


def changed_layers(now: Sequence[Mapping[str, Any]], then: Sequence[Mapping[str, Any]]
                   ) -> list[str]:
    """How the captured layers of a model (``now``) differ from those a split was started
    with (``then``), in words ("layer '1' had 16 units, now 24"); empty when they match."""
    a = {d["name"]: tuple(d["shape"]) for d in now}
    b = {d["name"]: tuple(d["shape"]) for d in then}
    out = [f"layer {n!r} is new" for n in a if n not in b]
    out += [f"layer {n!r} is gone" for n in b if n not in a]
    for n in a:
        if n in b and a[n] != b[n]:
            if len(a[n]) == len(b[n]) == 1:
                out.append(f"layer {n!r} had {b[n][0]} units, now {a[n][0]}")
            else:
                out.append(f"layer {n!r} had shape {b[n]}, now {a[n]}")
    if not out and list(a) != list(b):
        out.append("the layers come in another order")
    return out


def unit_dims(key: str, ndim: int) -> tuple[str, ...]:
    """The dimension names of a layer's unit axes."""
    if ndim == 1:
        return (f"{key}_unit",)
    return tuple(f"{key}_dim{i}" for i in range(ndim))


def split_array_specs(
    layers: Sequence[tuple[str, str, Sequence[int]]], n_outputs: int, n_rows: int, chunk_rows: int,
    dtype: Any, compressor: Any, thumbnail_shape: Sequence[int] | None = None,
    token_rows: bool = False,
) -> dict[str, dict[str, Any]]:
    """Keyword arguments of ``zarr.Group.create_array`` for every array of a split, by key.

    ``layers`` are ``(name, key, unit shape)`` in model order, every array ``n_rows`` rows of
    ``chunk_rows`` a chunk; ``thumbnail_shape`` adds ``inputs``, ``token_rows`` the
    :data:`TOKEN_ARRAYS`.
    """
    options = array_options(compressor)
    coords = sample_coordinates(token_rows)

    def spec(shape: tuple[int, ...], dt: Any, fill: int, dims: tuple[str, ...],
             attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {"shape": (n_rows, *shape), "chunks": (chunk_rows, *shape), "dtype": dt,
               "fill_value": fill, "dimension_names": ("sample", *dims), **options}
        out["attributes"] = {**(attributes or {}), "coordinates": coords}
        return out

    specs: dict[str, dict[str, Any]] = {}
    for name, key, shape in layers:
        shape = tuple(int(s) for s in shape)
        specs[key] = spec(shape, np.dtype(dtype), 0, unit_dims(key, len(shape)), {"layer": name})
    specs["outputs"] = spec((int(n_outputs),), np.dtype("float32"), 0, ("output",))
    for key in ("labels", "predictions", "sample_index"):
        specs[key] = spec((), np.dtype("int64"), -1, ())
    if thumbnail_shape is not None:
        tshape = tuple(int(s) for s in thumbnail_shape)
        specs["inputs"] = spec(tshape, np.dtype("uint8"), 0,
                               ("input_h", "input_w", "input_rgb")[: len(tshape)])
    if token_rows:
        for key in TOKEN_ARRAYS:
            specs[key] = spec((), np.dtype("int64"), -1, ())
    for key in (*SAMPLE_COORDINATES, *(TOKEN_ARRAYS if token_rows else ())):
        del specs[key]["attributes"]
    specs[CLASS_COORDINATE] = class_coordinate_spec(int(n_outputs))
    return specs


def sample_coordinates(token_rows: bool = False) -> str:
    """The ``coordinates`` attribute of a split's arrays with a sample axis (xarray's
    convention: the names of the coordinate arrays, separated by spaces)."""
    return " ".join((*SAMPLE_COORDINATES, *(TOKEN_ARRAYS if token_rows else ())))


def class_coordinate_spec(n_outputs: int) -> dict[str, Any]:
    """``create_array`` keyword arguments of the ``output`` coordinate (one chunk)."""
    return {"shape": (n_outputs,), "chunks": (max(n_outputs, 1),), "dtype": np.dtype("int64"),
            "fill_value": -1, "dimension_names": (CLASS_COORDINATE,), **array_options(None)}


def coordinate_values(key: str, spec: Mapping[str, Any]) -> np.ndarray:
    """The values of the coordinate array ``key`` (``output``: the class index of each output
    column)."""
    return np.arange(int(spec["shape"][0]), dtype=np.int64)


def finish_advice(split: str, info: Mapping[str, Any]) -> str:
    """How to finish the interrupted capture of ``split`` (its record ``info``): resume it,
    or, for a capture with token rows (never resumed), capture its sample split again."""
    capture = info.get("capture") or {}
    call = "capture_distributed" if capture.get("distributed") else "capture"
    if info.get("level") == "tokens" or info.get("token_split"):
        parent = info.get("parent") or split
        return (f"capture it again with {call}(..., split={parent!r}, overwrite=True) (a capture "
                "with token rows is not resumed)")
    return (f"resume it with {call}(..., split={split!r}, resume=True), or start again with "
            "overwrite=True")


def recorded_fingerprints(info: Mapping[str, Any]) -> set[str]:
    """Every fingerprint a split's record holds of its model's weights: the current scheme's
    and, where the adapter gave them, earlier schemes' (``legacy_fingerprints``), so that
    splits captured before a scheme changed still match."""
    return {str(v) for v in (info.get("model_fingerprint"),
                             *(info.get("legacy_fingerprints") or ())) if v is not None}
