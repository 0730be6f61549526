"""Reading a split of the store, its metadata cached per opened store (:meth:`refresh`
forgets it); :class:`SplitReading` is the base of every mixin of ``ActivationStore``."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.core.sync import sync

from nnsig_core.store.consolidated import consolidate
from nnsig_core.store.errors import IncompleteStoreError, StoreError
from nnsig_core.store.format import ANALYSIS_GROUP, SPLIT_ATTR, finish_advice
from nnsig_core.store.pointers import unwrap

_Store = TypeVar("_Store", bound="SplitReading")


class SplitReading:
    """The shared state of an activation store and the reading of its splits.

    Parameters
    ----------
    group : zarr.Group
        The root group of the hierarchy.
    path : pathlib.Path or None
        Where it lives on disk, when it is a local directory.
    location : str or None
        How messages name the store (a path or URL); by default its path.
    """

    def __init__(self, group: zarr.Group, path: Path | None = None,
                 location: str | None = None) -> None:
        self.root = group
        self.path = path
        self._location = location
        self._splits: list[str] | None = None
        self._groups: dict[str, zarr.Group] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._damaged: dict[str, StoreError] = {}

    def refresh(self: _Store) -> _Store:
        """Forget the cached split metadata (after another process wrote to the store)."""
        self._splits = None
        self._groups.clear()
        self._meta.clear()
        self._damaged.clear()
        forget = getattr(self.root.store_path.store, "forget", None)
        if callable(forget):
            forget()
        # An fsspec filesystem caches directory listings (s3fs, gcsfs): new groups would stay
        # unseen.
        zstore = self.root.store_path.store
        fs = getattr(unwrap(zstore, "fs"), "fs", None)
        if fs is not None and callable(getattr(fs, "invalidate_cache", None)):
            fs.invalidate_cache()
        return self

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

    def require_writable(self, what: str) -> None:
        """Raise :class:`StoreError` when the store is open read-only (``what`` needs to write)."""
        if self.read_only:
            raise StoreError(f"The store {self.location!r} is open read-only, so {what} cannot be "
                             "written. Open it with open_store(path, mode='r+').")

    def consolidate_metadata(self) -> None:
        """Write the metadata of every split, array and saved result into the root's
        ``zarr.json`` (zarr's consolidated metadata, which xarray reads in one go). Every
        operation of nnsig that changes the hierarchy does it when done
        (:mod:`~nnsig_core.store.consolidated`)."""
        self.require_writable("the consolidated metadata")
        consolidate(self.root)

    @property
    def splits(self) -> list[str]:
        """Names of the splits in the store, complete or not, in sorted order."""
        if self._splits is None:
            names = []
            self._damaged.clear()
            for name in sorted(self._children()):
                if name == ANALYSIS_GROUP or name.startswith("."):
                    continue
                try:
                    node = self.root[name]
                except KeyError:
                    continue
                except StoreError as exc:  # its metadata is damaged: the others stay readable
                    self._damaged[name] = exc
                    continue
                if isinstance(node, zarr.Group) and SPLIT_ATTR in node.attrs:
                    names.append(name)
                    self._groups[name] = node
            self._splits = names
        return list(self._splits)

    def _children(self) -> list[str]:
        async def listed() -> list[str]:
            return [k async for k in self.root.store_path.store.list_dir("")]
        return [k for k in sync(listed()) if k != "zarr.json"]

    @property
    def damaged_splits(self) -> dict[str, StoreError]:
        """Groups of the store whose metadata is damaged (name -> the error naming the fix);
        :attr:`splits` leaves them out."""
        self.splits  # noqa: B018 (lists them)
        return dict(self._damaged)

    def _group(self, split: str) -> zarr.Group:
        if split not in self.splits and split in self._damaged:
            raise self._damaged[split]
        if split not in self.splits:
            self._splits = None  # another handle (or process) may have written it since
        if split not in self.splits:
            raise StoreError(f"Split {split!r} is not in the store {self.location!r}; "
                             f"available splits: {', '.join(self.splits) or '(none)'}.")
        if split not in self._groups:
            self._groups[split] = self.root[split]  # type: ignore[assignment]
        return self._groups[split]

    def _info(self, split: str) -> dict[str, Any]:
        if split not in self._meta:
            self._meta[split] = dict(self._group(split).attrs[SPLIT_ATTR])  # type: ignore[arg-type]
        return self._meta[split]

    def split_attrs(self, split: str) -> dict[str, Any]:
        """Everything recorded about a split: model summary, layers, capture settings..."""
        return dict(self._info(split))

    def is_complete(self, split: str) -> bool:
        """Whether the split's capture finished (every sample's chunks written and closed, not
        fsync'd)."""
        return bool(self._info(split).get("complete", False))

    def require_complete(self, split: str) -> None:
        """Raise :class:`IncompleteStoreError` unless ``split`` is complete."""
        info = self._info(split)
        if not info.get("complete", False):  # read again: another handle may have finished it
            self._meta.pop(split, None)
            self._groups.pop(split, None)
            info = self._info(split)
        if not info.get("complete", False):
            raise IncompleteStoreError(
                f"Split {split!r} of {self.location!r} is incomplete "
                f"({info.get('n_written', 0)} of {info.get('n_expected') or '?'} samples written): "
                f"the capture was interrupted: {finish_advice(split, info)}."
            )

    def n_samples(self, split: str) -> int:
        """Number of samples written to the split."""
        info = self._info(split)
        return int(info.get("n_samples", info.get("n_written", 0)))

    def fingerprint(self, split: str) -> dict[str, Any]:
        """What identifies the split's capture: sample count, a random capture id, start and
        end times. Read from the storage (not the cache), so results computed from an earlier
        capture of the split are told apart from results of this one; when the split was
        captured again since this handle cached it, the cache is forgotten."""
        cached = self._info(split)  # as this handle has it (or the error naming the splits)
        info = self._stored_info(split)
        cap = info.get("capture") or {}
        if (cached.get("capture") or {}).get("capture_id") != cap.get("capture_id"):
            self.refresh()  # captured again (overwrite=True) through another handle
        return {
            "n_samples": int(info.get("n_samples", info.get("n_written", 0))),
            "capture_id": cap.get("capture_id"), "started": cap.get("started"),
            "finished": cap.get("finished"),
        }

    def _stored_info(self, split: str) -> dict[str, Any]:
        """The split's record as the storage holds it now (its ``zarr.json``, not zarr's
        group object, which keeps the attributes it was opened with)."""
        buf = sync((self.root.store_path / split / "zarr.json").get())
        if buf is None:
            raise StoreError(f"Split {split!r} is not in the store {self.location!r} any "
                             "more (deleted by another process?).")
        try:
            attrs = json.loads(buf.to_bytes()).get("attributes") or {}
        except (ValueError, AttributeError) as exc:
            raise StoreError(f"The metadata of split {split!r} of {self.location!r} "
                             f"({split}/zarr.json) is not valid JSON ({exc}); run nnsig verify "
                             "on the store, and capture the split again with "
                             "overwrite=True.") from exc
        return dict(attrs.get(SPLIT_ATTR) or {})

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
        """Of a token row space: rows ``start:stop``'s ``sample_row`` (in the parent split),
        ``position`` and ``token`` id (-1 when unknown); StoreError for another split."""
        if self.level(split) != "tokens":
            raise StoreError(f"Split {split!r} has one row per sample, not per token; its token "
                             "rows, if any, are in split "
                             f"{self.token_split(split) or split + '.tokens'!r}.")
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
        raise StoreError(f"Layer {layer!r} is not in split {split!r}.{hint} "
                         f"Captured layers: {', '.join(names)}.")

    def activations(self, split: str, layer: str) -> zarr.Array:
        """The activations of ``layer`` on ``split``: a zarr array (sample, *unit shape); a slice
        reads only its chunks. On an incomplete split, rows from :meth:`n_samples` on are empty."""
        return self._group(split)[self._layer_key(split, layer)]  # type: ignore[return-value]

    def _array(self, split: str, name: str) -> zarr.Array:
        try:  # one read of its document (`in`, then [], read it twice)
            return self._group(split)[name]  # type: ignore[return-value]
        except KeyError:
            raise StoreError(f"Split {split!r} has no {name!r} array.") from None

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
