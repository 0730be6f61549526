"""``nnsig migrate``: upgrade a format 1 store to format 2 in place; the root's ``zarr.json``
is written last, in one write (``docs/design.md``, "Format versions").
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from nnsig_core._util import now_iso
from nnsig_core.store.consolidated import consolidate
from nnsig_core.store.errors import StoreError
from nnsig_core.store.format import (
    ANALYSIS_GROUP,
    CLASS_COORDINATE,
    FORMAT_VERSION,
    ROOT_ATTR,
    SAMPLE_COORDINATES,
    SCORES_ATTR,
    SCORES_GROUP,
    SPLIT_ATTR,
    TOKEN_ARRAYS,
    TOKENS_SUFFIX,
    class_coordinate_spec,
    coordinate_values,
    sample_coordinates,
    unit_dims,
)
from nnsig_core.store.guard import DamagedMetadataError
from nnsig_core.store.opening import open_root

log = logging.getLogger("nnsig")

_META = "zarr.json"


class MigrationError(StoreError):
    """The store cannot be upgraded; ``report`` lists every problem and its fix."""

    def __init__(self, report: MigrationReport) -> None:
        super().__init__(report.format())
        self.report = report


@dataclass
class MigrationReport:
    """What :func:`migrate_store` changed (or, with ``dry_run``, would change).

    Attributes
    ----------
    location : str
    from_version, to_version : int or None
        The store's format version before and after.
    changes, notes, problems : list of str
        Each change; what stays as it was and what that means; what cannot be upgraded, with
        its fix (when any, nothing was changed).
    dry_run : bool
    migrated : bool
        Whether the store is now of format ``to_version``.
    """

    location: str
    from_version: Any
    to_version: int = FORMAT_VERSION
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False
    migrated: bool = False

    def format(self) -> str:
        """The report as text, one line per item."""
        if self.from_version == self.to_version and not self.problems:
            head = f"{self.location}: already format {self.to_version}; nothing to do."
        elif self.problems:
            head = (f"{self.location}: format {self.from_version} cannot be upgraded to format "
                    f"{self.to_version}; nothing was changed:")
        else:
            verb = "would be upgraded" if self.dry_run else "upgraded"
            head = f"{self.location}: format {self.from_version} {verb} to format {self.to_version}:"
        lines = [head, *(f"  problem: {p}" for p in self.problems)]
        lines += [f"  {'would ' if self.dry_run else ''}{c}" for c in self.changes]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "from_version": self.from_version,
                "to_version": self.to_version, "changes": self.changes, "notes": self.notes,
                "problems": self.problems, "dry_run": self.dry_run, "migrated": self.migrated}


def migrate_store(store: str | os.PathLike[str] | Store, *, dry_run: bool = False,
                  drop_splits: Sequence[str] = (),
                  storage_options: dict[str, Any] | None = None) -> MigrationReport:
    """Upgrade the store at ``store`` to this nnsig's format version, in place and atomically.

    Parameters
    ----------
    store : str, path-like or zarr Store
        As for :func:`~nnsig_core.open_store`.
    dry_run : bool
        Only say what would change; write nothing.
    drop_splits : sequence of str
        Splits to delete first (with their token rows), for a split that cannot be upgraded
        (the report names it); capture them again after.
    storage_options : dict, optional
        Options of the URL's fsspec filesystem.

    Returns
    -------
    MigrationReport

    Raises
    ------
    MigrationError
        When the store cannot be upgraded; the message lists every problem and its fix, and
        the store is unchanged.
    """
    if isinstance(drop_splits, str):
        drop_splits = [drop_splits]
    opened = open_root(store, "r" if dry_run else "r+", storage_options, any_version=True)
    root = opened.group
    attrs: dict[str, Any] = dict(root.attrs)  # JSON whose layout is nnsig's
    version = (attrs.get(ROOT_ATTR) or {}).get("format_version")
    report = MigrationReport(opened.location, version, dry_run=dry_run)
    if version == FORMAT_VERSION:
        return report
    if version != 1:
        report.problems.append(f"format {version!r} is not one nnsig wrote before format "
                               f"{FORMAT_VERSION}: use the nnsig version that wrote it")
        raise MigrationError(report)
    plan = _Plan(root, report, set(drop_splits))
    plan.survey()
    if report.problems:
        raise MigrationError(report)
    if dry_run:
        return report
    plan.apply()
    new_attrs = dict(attrs)
    new_attrs[ROOT_ATTR] = {**(attrs.get(ROOT_ATTR) or {}), "format_version": FORMAT_VERSION,
                            "migrated": {"from": version, "at": now_iso()}}
    consolidate(root, attributes=new_attrs)  # the switch: one write of the root's zarr.json
    report.migrated = True
    log.info("%s upgraded from format %s to %s", opened.location, version, FORMAT_VERSION)
    return report


class _Plan:
    """The documents a migration rewrites and the arrays it adds, surveyed before any write."""

    def __init__(self, root: zarr.Group, report: MigrationReport, drop: set[str]) -> None:
        self.root = root
        self.store = root.store_path.store
        self.report = report
        self.drop = drop
        self.docs: dict[str, dict[str, Any]] = {}  # key -> new zarr.json
        self.coords: dict[str, int] = {}  # split -> width of outputs

    def _get(self, key: str, damaged: str) -> dict[str, Any] | None:
        """The document at ``key``; None, with the note ``damaged``, when it is damaged."""
        try:
            buf = sync(self.store.get(key, default_buffer_prototype()))
        except DamagedMetadataError:
            self.report.notes.append(damaged)
            return None
        return None if buf is None else dict(json.loads(buf.to_bytes()))

    def _list(self, prefix: str) -> list[str]:
        async def run() -> list[str]:
            return [k async for k in self.store.list_dir(prefix)]
        return sorted(k.rstrip("/") for k in sync(run()))

    def survey(self) -> None:
        names = [n for n in self._list("") if not n.startswith(".") and n != ANALYSIS_GROUP
                 and n != _META]
        missing = sorted(self.drop - set(names))
        if missing:
            self.report.problems.append(f"drop_splits names {missing}, which the store does not "
                                        f"hold (its groups: {names})")
        unchecked: list[str] = []
        for split in names:
            if split in self.drop or split.removesuffix(TOKENS_SUFFIX) in self.drop:
                self.report.changes.append(f"delete split {split!r} (drop_splits)")
                continue
            doc = self._get(f"{split}/{_META}", f"split {split!r}: its metadata is damaged; left "
                            "as it is (capture it again with overwrite=True after the upgrade)")
            meta = ((doc or {}).get("attributes") or {}).get(SPLIT_ATTR)
            if not isinstance(meta, dict):
                continue  # not a split
            if self._survey_split(split, meta):
                unchecked.append(split)
        if unchecked:
            self.report.notes.append(
                f"splits {unchecked} were written by nnsig 0.1: their chunks have no checksums, "
                "so reads and `nnsig verify` cannot tell a damaged chunk; capture them again "
                "(overwrite=True) for checksums")
        self._survey_scores()
        self.report.changes.append("write the root's zarr.json last, in one write: format_version "
                                   f"{FORMAT_VERSION} and the consolidated metadata of every node")

    def _survey_split(self, split: str, meta: dict[str, Any]) -> bool:
        """Plan the split's documents; True when its arrays have no checksums (nnsig 0.1)."""
        tokens = meta.get("level") == "tokens"
        layers = {d.get("key"): d.get("name") for d in meta.get("layers") or []}
        if CLASS_COORDINATE in layers:
            self.report.problems.append(
                f"split {split!r} stores layer {layers[CLASS_COORDINATE]!r} under the array key "
                f"{CLASS_COORDINATE!r}, which format {FORMAT_VERSION} gives to the outputs' class "
                f"coordinate. Drop the split (`nnsig migrate STORE --drop-split {split}`, or "
                f"migrate_store(..., drop_splits=[{split!r}])) and capture it again after the "
                f"upgrade (the layer is then stored as 'layer_{CLASS_COORDINATE}')")
            return False
        coords = sample_coordinates(tokens)
        own = {*SAMPLE_COORDINATES, *(TOKEN_ARRAYS if tokens else ())}
        changed, unchecked, width = 0, False, None
        for key in self._list(f"{split}/"):
            if key == _META or key == CLASS_COORDINATE:
                continue
            doc = self._get(f"{split}/{key}/{_META}", f"array {key!r} of split {split!r}: its "
                            "metadata is damaged; left as it is (`nnsig verify` lists it; "
                            "capture the split again with overwrite=True)")
            if doc is None or doc.get("node_type") != "array":
                continue
            new = dict(doc)
            shape = list(doc.get("shape") or [])
            new["dimension_names"] = _dimension_names(key, shape, layers, doc)
            attributes = dict(doc.get("attributes") or {})
            if key not in own:
                attributes["coordinates"] = coords
            new["attributes"] = attributes
            codecs = doc.get("codecs") or []
            unchecked |= not (codecs and (codecs[-1] or {}).get("name") == "crc32c")
            if key == "outputs" and len(shape) == 2:
                width = int(shape[1])
            if new != doc:
                self.docs[f"{split}/{key}/{_META}"] = new
                changed += 1
        if changed:
            self.report.changes.append(
                f"split {split!r}: name the coordinates and dimensions of {changed} arrays")
        if width is not None:
            self.coords[split] = width
            self.report.changes.append(f"split {split!r}: add the coordinate {CLASS_COORDINATE!r} "
                                       f"(the class of each of the {width} outputs)")
        return unchecked

    def _survey_scores(self) -> None:
        try:
            analyses = self.root[ANALYSIS_GROUP]
        except KeyError:
            return
        if not isinstance(analyses, zarr.Group):
            return
        for name, group in analyses.groups():
            if name.startswith("."):
                continue
            scores = group.get(SCORES_GROUP) if isinstance(group, zarr.Group) else None
            if not isinstance(scores, zarr.Group):
                continue
            for split, sg in scores.groups():
                saved: Any = sg.attrs.get(SCORES_ATTR) or {}
                if "scores_format" not in saved:
                    self.report.notes.append(
                        f"the scores of split {split!r} saved with analysis {name!r} were saved "
                        "by nnsig 0.1: they stay as they are (read them with "
                        "load_scores(..., legacy=True), or score the split again)")

    def apply(self) -> None:
        proto = default_buffer_prototype()
        for split in sorted(self.drop):
            for name in (split, split + TOKENS_SUFFIX):
                sync(self.store.delete_dir(name))
        for key, doc in self.docs.items():
            sync(self.store.set(key, proto.buffer.from_bytes(json.dumps(doc, indent=2).encode())))
        for split, width in self.coords.items():
            group = self.root[split]
            assert isinstance(group, zarr.Group)
            spec = class_coordinate_spec(width)
            group.create_array(CLASS_COORDINATE, overwrite=True, **spec)[...] = \
                coordinate_values(CLASS_COORDINATE, spec)


def _dimension_names(key: str, shape: list[int], layers: dict[Any, Any],
                     doc: dict[str, Any]) -> list[str]:
    """The dimension names of a split's array in format 2 (those it has, when it has them)."""
    have = doc.get("dimension_names")
    if key == "outputs":
        return ["sample", CLASS_COORDINATE][: len(shape)]
    if have and len(have) == len(shape) and all(have):
        return list(have)
    if key in layers:
        return ["sample", *unit_dims(key, len(shape) - 1)]
    if key == "inputs":
        return ["sample", "input_h", "input_w", "input_rgb"][: len(shape)]
    return ["sample", *(f"{key}_dim{i}" for i in range(len(shape) - 1))]
