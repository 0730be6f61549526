"""Choosing layers by name, glob pattern or type: the part every framework adapter shares.

An adapter enumerates its *candidates* (each selectable name to its module or layer,
in model order) and hands the user's ``layers=`` to :func:`resolve_selection`.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: One entry of ``layers``: a name, a glob pattern or a class.
LayerSpec = str | type


class LayerSelectionError(ValueError):
    """A layer selection that selects nothing, or a selected layer that cannot be captured."""


class UnknownLayerError(LayerSelectionError, KeyError):
    """A layer name that is not a layer of the model (the message lists close matches)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def close_matches(name: str, candidates: Sequence[str], n: int = 5) -> list[str]:
    """At most ``n`` names among ``candidates`` that look like ``name``, best first.

    First the names ending with ``"/" + name`` (nested models), then difflib's
    close matches, then names that contain ``name``.
    """
    found = [c for c in candidates if c.endswith("/" + name)][:n]
    for c in difflib.get_close_matches(name, candidates, n=n, cutoff=0.5):
        if c not in found and len(found) < n:
            found.append(c)
    for c in candidates:
        if len(found) >= n:
            break
        if name and name in c and c not in found:
            found.append(c)
    return found


def is_glob(spec: str) -> bool:
    """Whether ``spec`` is a glob pattern (holds ``*``, ``?`` or ``[``)."""
    return any(c in "*?[" for c in spec)


@dataclass(frozen=True)
class SelectionWording:
    """How the messages of :func:`resolve_selection` name things.

    Parameters
    ----------
    model, item : str
        The model, as in "in {model}"; what a candidate is (``"module"``, ``"layer"``).
    kind, kinds : str
        What a class is called, singular and plural.
    entries : str
        What an entry of ``layers`` may be, for the ``TypeError``.
    listing : str
        Appended to the unknown-name message: where to find the valid names.
    """

    model: str
    item: str = "layer"
    kind: str = "type"
    kinds: str = "types"
    entries: str = "a layer name, a glob pattern or a layer class"
    listing: str = ""


@dataclass(frozen=True)
class Selection:
    """What a ``layers=`` spec selects: the candidates ``matched`` (in candidate order), those
    ``named`` exactly, and the ``extra`` names selected."""

    matched: list[str]
    named: set[str]
    extra: set[str]


def resolve_selection(layers: LayerSpec | Sequence[LayerSpec], candidates: Mapping[str, Any],
                      wording: SelectionWording, *, extra: Collection[str] = (),
                      base: type | tuple[type, ...] | None = None,
                      rename: Callable[[str], str] | None = None) -> Selection:
    """Resolve a ``layers=`` spec against the candidate names of a model.

    Each entry is, by precedence: a class (its instances), a candidate's name,
    an extra name, or a glob pattern over the candidates and extra names.

    Parameters
    ----------
    layers : str, type or sequence of them
        The user's selection.
    candidates : mapping of str to object
        Every selectable name to its module or layer, in model order.
    wording : SelectionWording
        How the error messages name things.
    extra : collection of str
        Other names that may be selected without being candidates.
    base : type or tuple of types, optional
        The class every class entry must derive from (else ``TypeError``).
    rename : callable, optional
        Maps a name that is not a candidate to the candidate it stands for.

    Returns
    -------
    Selection

    Raises
    ------
    UnknownLayerError
        A name that is neither a candidate nor an extra name.
    LayerSelectionError
        A pattern or class that matches nothing, or an empty selection.
    """
    if isinstance(layers, (str, type)):
        layers = [layers]
    names = list(candidates)
    extras = [e for e in extra if e not in candidates]
    extra_set = set(extras)
    chosen: set[str] = set()
    named: set[str] = set()
    picked: set[str] = set()
    for spec in layers:
        if isinstance(spec, type) and (base is None or issubclass(spec, base)):
            hit = {n for n, obj in candidates.items() if isinstance(obj, spec)}
            if not hit:
                raise LayerSelectionError(_no_instance(spec, candidates, wording))
            chosen |= hit
        elif not isinstance(spec, str):
            raise TypeError(f"Each entry of `layers` must be {wording.entries}; got {spec!r}.")
        elif (name := _candidate(spec, candidates, rename)) is not None:
            chosen.add(name)
            named.add(name)
        elif spec in extra_set:
            picked.add(spec)
        elif is_glob(spec):
            hit = {n for n in names if fnmatch.fnmatchcase(n, spec)}
            hit_extra = {e for e in extras if fnmatch.fnmatchcase(e, spec)}
            if not hit and not hit_extra:
                raise LayerSelectionError(_no_match(spec, names, wording))
            chosen |= hit
            picked |= hit_extra
        else:
            raise _unknown(spec, names + extras, wording)
    if not chosen and not picked:
        raise LayerSelectionError("`layers` is empty: select at least one layer.")
    return Selection([n for n in names if n in chosen], named, picked)


def _unknown(name: str, valid: Sequence[str], wording: SelectionWording) -> UnknownLayerError:
    # A capture name (an output of a layer, or its second call), as available_layers lists
    # them, is not a layer name: say which layer it belongs to.
    owner = max((v for v in valid if name.startswith((v + ".", v + ":"))), key=len, default=None)
    hint = close_matches(name, valid)
    rest = name[len(owner):] if owner is not None else ""
    # ... unless the owner's children are numbered (a ModuleList: 'blocks.3' of three is
    # an index out of range) or another call of it exists (then that one is meant)
    numbered = any(re.fullmatch(re.escape(owner) + r"\.\d+", v) for v in valid) if owner else False
    if owner is not None and (re.fullmatch(r"(:\d+)?(\.\d+)*", rest) or not hint
                              or not _like_a_child(rest, owner, valid)) \
            and not numbered and not any(h.startswith(owner + ":") for h in hint):
        return UnknownLayerError(
            f"{name!r} is a capture name of {wording.item} {owner!r} (one of its outputs or "
            f"calls), not a {wording.item} of {wording.model}: select {owner!r} (its outputs "
            f"are then captured under names like {name!r}; pool= and layout= take those "
            "names).")
    msg = f"Unknown layer {name!r} in {wording.model}."
    msg += f" Did you mean: {', '.join(repr(h) for h in hint)}?" if hint else ""
    msg += f" {wording.listing}" if wording.listing else ""
    return UnknownLayerError(msg)


def _like_a_child(rest: str, owner: str, valid: Sequence[str]) -> bool:
    """Whether ``owner + rest`` looks like a misspelt module below ``owner`` (its first
    segment close to the name of a module at any depth there: ``encoder.attention`` for
    ``encoder.layer.0.attention``) rather than an output's key (``vit.last_hidden_state``)."""
    segment = re.split(r"[.:]", rest.lstrip(".:"))[0]
    below = {part for v in valid if v.startswith(owner + ".")
             for part in re.split(r"[.:]", v[len(owner) + 1:])}
    return bool(difflib.get_close_matches(segment, below, n=1, cutoff=0.6))


def _candidate(spec: str, candidates: Mapping[str, Any],
               rename: Callable[[str], str] | None) -> str | None:
    name = spec if spec in candidates or rename is None else rename(spec)
    return name if name in candidates else None


def _no_instance(spec: type, candidates: Mapping[str, Any], wording: SelectionWording) -> str:
    present = sorted({type(obj).__name__ for obj in candidates.values()})
    return (
        f"No {wording.item} of {wording.kind} {spec.__name__} in {wording.model}; "
        f"{wording.kinds} present: {', '.join(present)}.")


def _no_match(spec: str, names: Sequence[str], wording: SelectionWording) -> str:
    return (
        f"Pattern {spec!r} matches no {wording.item} of {wording.model}; "
        f"{wording.item} names look like: {', '.join(repr(n) for n in names[:8])}"
        f"{', ...' if len(names) > 8 else ''}.")
