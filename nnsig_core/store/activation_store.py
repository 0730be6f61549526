"""The activation store: one Zarr v3 hierarchy per experiment, one group per split.

:class:`ActivationStore` is the only code that reads or writes the layout of
:mod:`nnsig_core.store.layout`: capture creates a split's arrays and records
its progress through it, the analysis and the diagnostics ask it where their
groups live. A split's metadata is read once per opened store and cached;
what this object writes updates the cache, :meth:`ActivationStore.refresh`
forgets it (another process wrote to the store), and
:meth:`ActivationStore.fingerprint` always reads the storage itself.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.errors
from zarr.abc.store import Store

from nnsig_core._util import to_json_safe
from nnsig_core.store.claims import SplitClaim
from nnsig_core.store.create import create_arrays
from nnsig_core.store.describe import describe, nbytes_stored
from nnsig_core.store.errors import IncompleteStoreError, StoreError
from nnsig_core.store.keys import chunk_indices, move_group, sync_metadata
from nnsig_core.store.layout import (
    ANALYSIS_GROUP,
    SPLIT_ATTR,
    layer_differences,
)
from nnsig_core.store.opening import MODES, open_root
from nnsig_core.store.verify import VerifyReport, verify_store

__all__ = ["MODES", "ActivationStore", "IncompleteStoreError", "StoreError", "open_store"]

log = logging.getLogger("nnsig")


class ActivationStore:
    """A Zarr v3 store of captured activations, labels, predictions and outputs.

    Open one with :func:`open_store`; :func:`nnsig_core.capture` creates and
    fills them.

    Parameters
    ----------
    group : zarr.Group
        The root group of the hierarchy.
    path : pathlib.Path or None
        Where it lives on disk, when it is a local directory.
    """

    def __init__(self, group: zarr.Group, path: Path | None = None,
                 location: str | None = None) -> None:
        self.root = group
        self.path = path
        self._location = location
        self._splits: list[str] | None = None
        self._groups: dict[str, zarr.Group] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, where: str | os.PathLike[str] | Store, mode: str = "r",
             storage_options: dict[str, Any] | None = None) -> ActivationStore:
        """Open the store at ``where``.

        Parameters
        ----------
        where : str, path-like or zarr Store
            A local directory (``*.zarr`` by convention; also as a ``file://``
            URL), an fsspec URL (``s3://bucket/run.zarr``, ``gs://...``,
            ``memory://...``), or a zarr ``Store`` object.
        mode : {"r", "r+", "a", "w"}
            ``"r"`` read-only (the store must exist), ``"r+"`` read-write
            (must exist), ``"a"`` read-write, created if missing, ``"w"``
            created, replacing anything there.
        storage_options : dict, optional
            Options of the URL's fsspec filesystem (credentials, endpoint...).

        Raises
        ------
        ValueError
            For another ``mode``, or ``storage_options`` with a local path.
        StoreError
            If the store does not exist (``"r"``, ``"r+"``), is not an nnsig
            store, cannot be reached, or its root metadata is damaged.
        """
        opened = open_root(where, mode, storage_options)
        return cls(opened.group, opened.path, opened.location)

    def refresh(self) -> ActivationStore:
        """Forget the cached split metadata (after another process wrote to the store)."""
        self._splits = None
        self._groups.clear()
        self._meta.clear()
        forget = getattr(self.root.store_path.store, "forget", None)
        if callable(forget):
            forget()
        # An fsspec filesystem caches directory listings (s3fs, gcsfs): new groups would stay
        # unseen.
        zstore = self.root.store_path.store
        fs = getattr(getattr(zstore, "_store", zstore), "fs", None)
        if fs is not None and callable(getattr(fs, "invalidate_cache", None)):
            fs.invalidate_cache()
        return self

    # ------------------------------------------------------------------ splits
    @property
    def location(self) -> str:
        """Where the store lives, for messages."""
        if self._location is not None:
            return self._location
        return str(self.path) if self.path is not None else "(in memory)"

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
        if self._splits is None:
            names = []
            for name, node in self.root.groups():
                if name != ANALYSIS_GROUP and SPLIT_ATTR in node.attrs:
                    names.append(name)
                    self._groups[name] = node
            self._splits = sorted(names)
        return list(self._splits)

    @property
    def analyses(self) -> list[str]:
        """Names of the analyses saved in the store."""
        if ANALYSIS_GROUP not in self.root:
            return []
        groups = self.root[ANALYSIS_GROUP].groups()  # type: ignore[union-attr]
        return sorted(name for name, _ in groups if not name.startswith("."))

    def _group(self, split: str) -> zarr.Group:
        if split not in self.splits:
            raise StoreError(
                f"Split {split!r} is not in the store {self.location!r}; "
                f"available splits: {', '.join(self.splits) or '(none)'}."
            )
        if split not in self._groups:
            self._groups[split] = self.root[split]  # type: ignore[assignment]
        return self._groups[split]

    def _info(self, split: str) -> dict[str, Any]:
        if split not in self._meta:
            self._meta[split] = dict(self._group(split).attrs[SPLIT_ATTR])
        return self._meta[split]

    def split_attrs(self, split: str) -> dict[str, Any]:
        """Everything recorded about a split: model summary, layers, capture settings..."""
        return dict(self._info(split))

    def is_complete(self, split: str) -> bool:
        """Whether the split's capture finished (every sample written to the store's files).

        Written means the chunk files were written and closed, not fsync'd: a
        complete split survives the process being killed, not a power cut.
        """
        return bool(self._info(split).get("complete", False))

    def require_complete(self, split: str) -> None:
        """Raise :class:`IncompleteStoreError` unless ``split`` is complete."""
        info = self._info(split)
        if not info.get("complete", False):
            raise IncompleteStoreError(
                f"Split {split!r} of {self.location!r} is incomplete "
                f"({info.get('n_written', 0)} of {info.get('n_expected') or '?'} samples written): "
                f"the capture was interrupted. Run capture(..., split={split!r}, resume=True) "
                "to finish it, or overwrite=True to start again."
            )

    def n_samples(self, split: str) -> int:
        """Number of samples written to the split."""
        info = self._info(split)
        return int(info.get("n_samples", info.get("n_written", 0)))

    def fingerprint(self, split: str) -> dict[str, Any]:
        """What identifies the split's capture: sample count, a random capture id, start and
        end times. Read from the storage (not the cache), so results computed from an earlier
        capture of the split are told apart from results of this one."""
        info = dict(self._group(split).attrs[SPLIT_ATTR])
        cap = info.get("capture") or {}
        return {
            "n_samples": int(info.get("n_samples", info.get("n_written", 0))),
            "capture_id": cap.get("capture_id"),
            "started": cap.get("started"),
            "finished": cap.get("finished"),
        }

    def level(self, split: str) -> str:
        """``"samples"`` (one row per sample) or ``"tokens"`` (a token row space)."""
        return str(self._info(split).get("level", "samples"))

    def token_split(self, split: str) -> str | None:
        """The token row space of a sample-level split, when its capture made one."""
        name = self._info(split).get("token_split")
        return str(name) if name and name in self.splits else None

    def token_rows(
        self, split: str, start: int = 0, stop: int | None = None
    ) -> dict[str, np.ndarray]:
        """Of a token row space: each row's ``sample_row`` (in the parent split),
        ``position`` and ``token`` id (-1 when unknown), rows ``start:stop``.

        Raises
        ------
        StoreError
            When ``split`` is not a token row space.
        """
        if self.level(split) != "tokens":
            raise StoreError(
                f"Split {split!r} has one row per sample, not per token; its token rows, if "
                f"any, are in split {self.token_split(split) or split + '.tokens'!r}."
            )
        return {k: self._read(split, k, start, stop) for k in ("sample_row", "position", "token")}

    def n_classes(self, split: str) -> int:
        """Number of classes of the split: output width (2 for one logit), the largest label
        and prediction, and the number of class names, whichever is largest."""
        width = int(self.outputs(split).shape[1])
        n = 2 if width == 1 else width
        n = max(n, int(self.labels(split).max(initial=-1)) + 1,
                int(self.predictions(split).max(initial=-1)) + 1)
        names = self.class_names(split)
        return max(n, len(names)) if names else n

    # ------------------------------------------------------------------ layers
    def layer_info(self, split: str) -> list[dict[str, Any]]:
        """Per captured layer: name, key, type, shape, dtype, parameters."""
        return [dict(d) for d in self._info(split)["layers"]]

    def layers(self, split: str) -> list[str]:
        """Captured layer names of ``split``, in model order."""
        return [d["name"] for d in self._info(split)["layers"]]

    def _layer_key(self, split: str, layer: str) -> str:
        for d in self._info(split)["layers"]:
            if d["name"] == layer:
                return str(d["key"])
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
        return self._group(split)[self._layer_key(split, layer)]  # type: ignore[return-value]

    # ------------------------------------------------------------------ metadata arrays
    def _array(self, split: str, name: str) -> zarr.Array:
        g = self._group(split)
        if name not in g:
            raise StoreError(f"Split {split!r} has no {name!r} array.")
        return g[name]  # type: ignore[return-value]

    def _read(self, split: str, name: str, start: int, stop: int | None) -> np.ndarray:
        n = self.n_samples(split)
        stop = n if stop is None else min(int(stop), n)
        return np.asarray(self._array(split, name)[int(start) : stop])

    def labels(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """True labels (int64, -1 where unknown) of rows ``start:stop`` (default all)."""
        return self._read(split, "labels", start, stop)

    def predictions(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The model's predicted class per sample (int64) of rows ``start:stop``."""
        return self._read(split, "predictions", start, stop)

    def sample_index(self, split: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Each sample's position in the source data set (int64)."""
        return self._read(split, "sample_index", start, stop)

    def has_labels(self, split: str) -> bool:
        return bool(self._info(split).get("has_labels", True))

    def outputs(self, split: str) -> zarr.Array:
        """Model outputs (logits or scores), a zarr array (sample, output)."""
        return self._array(split, "outputs")

    def inputs(self, split: str) -> zarr.Array | None:
        """uint8 input thumbnails (sample, h, w[, 3]), or None if not kept."""
        g = self._group(split)
        return g["inputs"] if "inputs" in g else None  # type: ignore[return-value]

    def class_names(self, split: str | None = None) -> list[str] | None:
        """Class names given at capture time (the first split's that has them, by default)."""
        for s in [split] if split else self.splits:
            names = self._info(s).get("class_names")
            if names:
                return list(names)
        return None

    # ------------------------------------------------------------------ writing splits
    def require_writable(self, what: str) -> None:
        """Raise :class:`StoreError` when the store is open read-only (``what`` needs to write)."""
        if self.read_only:
            raise StoreError(
                f"The store {self.location!r} is open read-only, so {what} cannot be written. "
                "Open it with open_store(path, mode='r+')."
            )

    def create_split(
        self, split: str, info: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, zarr.Array]:
        """Create ``split``'s group and arrays (``layout.split_array_specs``) and its metadata.

        An existing group of that name (``overwrite=True`` of capture) is
        replaced. If creating an array fails, the half-made group is removed,
        so the store never holds a group without split metadata.
        """
        self.require_writable(f"split {split!r}")
        if split in self.root:
            del self.root[split]
        self._forget(split)
        group = self.root.create_group(split)
        try:
            arrays = create_arrays(group, specs)
            group.attrs[SPLIT_ATTR] = to_json_safe(dict(info))
        except BaseException:
            del self.root[split]
            raise
        self._groups[split] = group
        self._meta[split] = to_json_safe(dict(info))
        self._splits = None
        return arrays

    def split_arrays(self, split: str) -> dict[str, zarr.Array]:
        """Every array of ``split`` by key (to continue or complete a capture)."""
        return {k: a for k, a in self._group(split).arrays()}  # type: ignore[misc]

    def chunk_indices(self, split: str, key: str) -> set[int]:
        """Indices (along samples) of the chunks of array ``key`` of ``split`` present in the
        store (one listing, no chunk read)."""
        return chunk_indices(self.root.store_path.store, f"{split}/{key}")

    def write_split_attrs(self, split: str, info: Mapping[str, Any]) -> None:
        """Replace the split's metadata (capture progress, completion)."""
        safe = to_json_safe(dict(info))
        self._group(split).attrs[SPLIT_ATTR] = safe
        self._meta[split] = safe

    def sync_split(self, split: str) -> None:
        """fsync the split's metadata files and directories (local stores; a no-op elsewhere,
        where a completed write is durable), so what they record survives a power cut."""
        if self.path is not None:
            sync_metadata(self.path, split)

    def _forget(self, split: str) -> None:
        self._groups.pop(split, None)
        self._meta.pop(split, None)
        self._splits = None
        forget = getattr(self.root.store_path.store, "forget", None)
        if callable(forget):
            forget()

    def check_compatible(self, split: str, layers: Sequence[Mapping[str, Any]],
                         include_self: bool = False, level: str = "samples") -> None:
        """Raise :class:`StoreError` unless ``layers`` (name, shape) match every other split's.

        ``include_self`` also compares with ``split`` itself (a resumed capture).
        Only splits of the same ``level`` are compared: sample-level splits with
        each other, token row spaces (``level="tokens"``) with each other.
        """
        for other in self.splits:
            if other == split and not include_self:
                continue
            if self.level(other) != level:
                continue
            problems = layer_differences(layers, self.layer_info(other), other)
            if problems:
                raise StoreError(
                    f"This model does not match split {other!r} of the store "
                    f"({'; '.join(problems)}). Capture the same layers of the same model, "
                    "or use a new store."
                )

    def claim(self, split: str, break_stale: bool = False) -> SplitClaim:
        """Take the exclusive claim of one writer on ``split`` (see :mod:`~nnsig_core.store.claims`),
        then forget cached metadata, which another writer may have changed before.

        Raises
        ------
        ClaimError
            Another capture holds the split; the message names it.
        """
        self.require_writable(f"split {split!r}")
        claim = SplitClaim(self.root, split, self.path, self.location).acquire(break_stale)
        self.refresh()
        return claim

    # ------------------------------------------------------------------ other groups
    def group(self, path: str, create: bool = False) -> zarr.Group | None:
        """The group at ``path`` (``layout.analysis_path(name)``...), created when asked, else
        None when absent."""
        if create:
            self.require_writable(f"group {path!r}")
            return self.root.require_group(path)
        try:
            node = self.root[path]
        except KeyError:
            return None
        return node if isinstance(node, zarr.Group) else None

    def delete(self, path: str) -> None:
        """Remove the group or array at ``path`` (nothing when absent)."""
        self.require_writable(f"the deletion of {path!r}")
        if path in self.root:
            del self.root[path]

    def replace_group(self, new_path: str, path: str) -> None:
        """Move the group at ``new_path`` to ``path``, replacing what was there only once the
        new one is whole (see :func:`~nnsig_core.store.keys.move_group`)."""
        self.require_writable(f"group {path!r}")
        move_group(self.root.store_path.store, new_path, path)

    # ------------------------------------------------------------------ description
    def nbytes_stored(self, split: str, name: str | None = None) -> int:
        """Bytes on disk of a split (or of one layer or array of it)."""
        return nbytes_stored(self, split, name)

    def verify(self, progress: bool = False) -> VerifyReport:
        """Read every chunk of the store: checksums, completeness, metadata (``nnsig verify``).

        Returns
        -------
        VerifyReport
            ``ok`` when nothing is missing or damaged; ``format()`` and
            ``rows_to_recapture()`` say what is and which rows to capture again.
        """
        return verify_store(self, progress=progress)

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description used by ``nnsig info``."""
        return describe(self)

    def __repr__(self) -> str:
        parts = []
        for s in self.splits:
            state = "" if self.is_complete(s) else ", incomplete"
            parts.append(f"{s}: {self.n_samples(s)} samples{state}")
        return f"ActivationStore({self.location!r}; {'; '.join(parts) or 'no splits'})"


def open_store(store: ActivationStore | str | os.PathLike[str] | Store, mode: str = "r",
               storage_options: dict[str, Any] | None = None) -> ActivationStore:
    """Open an activation store (read-only by default); a store already open is returned as is.

    Parameters
    ----------
    store : ActivationStore, str, path-like or zarr Store
        The store :func:`nnsig_core.capture` wrote: a local directory, an
        fsspec URL (``s3://bucket/run.zarr``, ``gs://...``, ``memory://...``,
        ``file://...``), a zarr ``Store``, or an :class:`ActivationStore`
        (returned unchanged, whatever ``mode``).
    mode : {"r", "r+", "a"}
        ``"r"`` read-only, ``"r+"`` read-write (the store must exist),
        ``"a"`` read-write, created if missing.
    storage_options : dict, optional
        Options of the URL's fsspec filesystem (``{"endpoint_url": ...}``,
        credentials); credentials also come from the environment as usual.

    Returns
    -------
    ActivationStore

    Raises
    ------
    StoreError
        When there is no nnsig store at the path.
    TypeError
        When ``store`` is neither a store nor a path.
    """
    if mode not in ("r", "r+", "a"):
        raise ValueError(
            f"mode must be 'r' (read-only), 'r+' (read-write, the store must exist) or 'a' "
            f"(read-write, created if missing); got {mode!r}."
        )
    if isinstance(store, ActivationStore):
        return store
    if not isinstance(store, (str, os.PathLike, Store)):
        raise TypeError(f"Expected an ActivationStore, a path, a URL or a zarr Store, got "
                        f"{type(store).__name__}.")
    return ActivationStore.open(store, mode=mode, storage_options=storage_options)
