"""Axis layouts of captured tensors, and the ``pool=`` / ``layout=`` specs every adapter shares.

A layout has one letter per axis (``NC``, ``NCHW``, ``NLC``, ...); the layouts and the
pooling modes are described in ``docs/design.md`` ("Layouts and pooling").
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from nnsig_core.protocol.select import LayerSelectionError, close_matches

#: The named pooling modes.
POOL_MODES = ("auto", "mean", "max", "cls", "last", "tokens", "flatten")
_SAMPLE_MODES = ("auto", "mean", "max", "cls", "last", "flatten")

#: One pooling mode: a name of :data:`POOL_MODES`, ``None``, a callable, or a
#: tuple ``(sample-level mode, "tokens")``.
Pool = Union[str, Callable[[Any], Any], None, tuple]  # noqa: UP007
#: ``pool=``: one mode for every layer, or ``{name_or_glob: mode}``.
PoolSpec = Union[Pool, Mapping[str, Pool]]  # noqa: UP007
#: ``layout=``: one layout string for every layer, or ``{name_or_glob: layout}``.
LayoutSpec = Union[str, Mapping[str, str], None]  # noqa: UP007

_POSITION_LETTERS = {1: "L", 2: "HW", 3: "DHW"}
#: Layout strings accepted by ``layout=`` besides ``channels_first`` / ``channels_last``.
LAYOUT_NAMES = ("NC", "NCL", "NLC", "NCHW", "NHWC", "NCDHW", "NDHWC")


class AmbiguousLayoutError(ValueError):
    """The layout of a captured tensor is unknown and the pooling mode needs it."""


@dataclass(frozen=True)
class Layout:
    """Where the channels are in a batch-first tensor (``"first"``: axis 1, or ``"last"``), and
    how many position axes it has (0 for a vector per sample)."""

    channels: str
    positions: int

    @property
    def code(self) -> str:
        """``"NCHW"``, ``"NLC"``...; ``"channels_first:4"`` beyond three position axes."""
        if self.positions == 0:
            return "NC"
        letters = _POSITION_LETTERS.get(self.positions)
        if letters is None:
            return f"channels_{self.channels}:{self.positions}"
        return f"NC{letters}" if self.channels == "first" else f"N{letters}C"

    @property
    def is_sequence(self) -> bool:
        """One position axis: tokens (``NLC``) or a 1-D signal (``NCL``)."""
        return self.positions == 1

    @property
    def ndim(self) -> int:
        """Axes of a batch of this layout (batch axis included)."""
        return 2 + self.positions

    def position_axes(self) -> tuple[int, ...]:
        """The position axes of a batch-first tensor of this layout."""
        if self.channels == "first":
            return tuple(range(2, 2 + self.positions))
        return tuple(range(1, 1 + self.positions))

    @property
    def channel_axis(self) -> int:
        return 1 if self.channels == "first" or self.positions == 0 else 1 + self.positions

    def __str__(self) -> str:
        return self.code


def parse_layout(spec: str, ndim: int | None = None) -> Layout:
    """The :class:`Layout` of a ``layout=`` string for a batch of ``ndim`` axes (batch included).

    ``spec``: one of :data:`LAYOUT_NAMES` (``T`` for ``L`` and lower case accepted),
    ``"channels_first"`` or ``"channels_last"`` (these need ``ndim``).
    """
    if not isinstance(spec, str):
        raise TypeError(f"A layout must be a string such as 'NCHW' or 'NLC', got {spec!r}.")
    s = spec.strip()
    if s.lower() in ("channels_first", "channels_last"):
        if ndim is None:
            raise ValueError(f"layout {spec!r} needs the tensor's number of axes.")
        return Layout("first" if s.lower() == "channels_first" else "last", max(0, ndim - 2))
    up = s.upper().replace("T", "L")
    if up in LAYOUT_NAMES:
        positions = len(up) - 2
        layout = Layout("first" if up[1] == "C" or positions == 0 else "last", positions)
        if ndim is not None and max(ndim, 2) != layout.ndim:
            raise ValueError(f"layout {spec!r} describes {layout.ndim}-axis tensors (batch "
                             f"included), but this one has {ndim} axes.")
        return layout
    raise ValueError(
        f"Unknown layout {spec!r}: use one of {', '.join(LAYOUT_NAMES)} (N = batch, C = "
        "channels, L = tokens or 1-D positions, H/W/D = spatial), 'channels_first' or "
        "'channels_last'.")


def _check_mode(mode: Any, where: str) -> None:
    if mode is None or callable(mode) or (isinstance(mode, str) and mode in POOL_MODES):
        return
    if isinstance(mode, (tuple, list)):
        names = list(mode)
        if len(names) == 2 and names.count("tokens") == 1 and all(
                m == "tokens" or m is None or callable(m) or m in _SAMPLE_MODES for m in names):
            return
        raise ValueError(f"Invalid pool {mode!r}{where}: a pair must be one sample-level mode "
                         "and 'tokens', e.g. ('cls', 'tokens').")
    raise ValueError(f"Invalid pool {mode!r}{where}: use None, {', '.join(map(repr, POOL_MODES))}, "
                     "a callable, or a pair such as ('cls', 'tokens').")


def check_pool(pool: Any) -> Any:
    """Validate ``pool`` (a mode or a ``{name_or_glob: mode}`` mapping) and return it."""
    if isinstance(pool, Mapping):
        for key, mode in pool.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"pool keys must be layer names or glob patterns, got {key!r}.")
            _check_mode(mode, f" for {key!r}")
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in pool.items()}
    _check_mode(pool, "")
    return tuple(pool) if isinstance(pool, list) else pool


def check_layout_spec(layout: Any) -> Any:
    """Validate ``layout=`` (a layout string or a ``{name_or_glob: layout}`` mapping)."""
    if layout is None:
        return None
    items = layout.items() if isinstance(layout, Mapping) else [("", layout)]
    for key, value in items:
        if isinstance(layout, Mapping) and (not isinstance(key, str) or not key):
            raise TypeError(f"layout keys must be layer names or glob patterns, got {key!r}.")
        if not isinstance(value, str):
            raise TypeError(f"A layout must be a string such as 'NCHW', got {value!r}.")
        if value.lower() not in ("channels_first", "channels_last"):
            parse_layout(value)  # raises for an unknown string
    return dict(layout) if isinstance(layout, Mapping) else layout


def _lookup(spec: Any, names: Sequence[str]) -> tuple[Any, str | None, bool]:
    """(value, key, found) of a per-layer spec for a capture's ``names`` (most specific first):
    an exact key wins, then the first glob key matching any of them."""
    if not isinstance(spec, Mapping):
        return spec, None, spec is not None
    for name in names:
        if name in spec:
            return spec[name], name, True
    for key, value in spec.items():
        if any(fnmatch.fnmatchcase(n, key) for n in names):
            return value, key, True
    return None, None, False


def pool_for(pool: Any, names: Sequence[str], default: Any = "auto") -> tuple[Any, str | None]:
    """The pooling mode of one capture (``names``, most specific first), and the key that chose
    it; ``default`` for captures a mapping does not match."""
    if not isinstance(pool, Mapping):
        return pool, None
    value, key, found = _lookup(pool, names)
    return (value if found else default), key


def layout_for(layout: Any, names: Sequence[str]) -> tuple[str | None, str | None]:
    """The ``layout=`` string given for one capture (``None`` when none), and its key."""
    value, key, _ = _lookup(layout, names)  # None when not found
    return value, key


class SpecMatches:
    """The ``pool`` mode and the given ``layout`` of each capture of a first batch, and the
    check that every key of a mapping spec matched a captured layer (both adapters' rule)."""

    def __init__(self, pool: Any, layout: Any) -> None:
        self.specs = {"pool": pool, "layout": layout}
        self.used: dict[str, set[str]] = {"pool": set(), "layout": set()}

    def of(self, keys: Sequence[str], ndim: int) -> tuple[Any, Layout | None]:
        """The pooling mode and the parsed given layout (None: not given) of the capture
        known by ``keys`` (its name first), ``ndim`` dimensions with the batch axis."""
        mode, pkey = pool_for(self.specs["pool"], keys)
        given, lkey = layout_for(self.specs["layout"], keys)
        for what, key in (("pool", pkey), ("layout", lkey)):
            if key is not None:
                self.used[what].add(key)
        if given is None:
            return mode, None
        try:
            return mode, parse_layout(given, ndim)
        except ValueError as exc:
            raise ValueError(f"layout of layer {keys[0]!r}: {exc}") from None

    def check_all_used(self, names: Sequence[str]) -> None:
        """Raise :class:`LayerSelectionError` for a mapping key that matched no capture."""
        for what, spec in self.specs.items():
            unused = [k for k in spec if k not in self.used[what]] \
                if isinstance(spec, Mapping) else []
            if unused:
                hint = close_matches(unused[0], names)
                raise LayerSelectionError(
                    f"{what} key(s) {', '.join(map(repr, unused))} match no captured layer"
                    + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "."))


def split_modes(mode: Any) -> tuple[Any, bool, bool]:
    """``(sample-level mode, has a sample-level row, has token rows)`` of one capture's mode."""
    if isinstance(mode, tuple):
        return next(m for m in mode if m != "tokens"), True, True
    if mode == "tokens":
        return None, False, True
    return mode, True, False
