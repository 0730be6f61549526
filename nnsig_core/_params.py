"""Parameter constraints checked once when ``fit`` starts, in scikit-learn's style.

An estimator declares ``_nnsig_constraints = {"name": [constraint, ...]}`` and calls
:func:`validate_params` at the top of ``fit``; a value is accepted when any constraint
of its list accepts it: ``None``, a type (``bool`` is never an ``int`` here), an
:class:`Interval`, :class:`Options` or :class:`Satisfies`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from nnsig_core._util import parse_bytes


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter has a value the estimator cannot use (the message says which)."""


@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (``numbers.Integral`` or ``numbers.Real``) in ``[low, high]``."""

    kind: type
    low: float | None = None
    high: float | None = None

    def accepts(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, self.kind):
            return False
        x = cast(float, v)
        return (self.low is None or x >= self.low) and (self.high is None or x <= self.high)

    def describe(self) -> str:
        what = "an int" if self.kind is numbers.Integral else "a number"
        if self.low is not None and self.high is not None:
            return f"{what} in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"{what} >= {self.low}"
        if self.high is not None:
            return f"{what} <= {self.high}"
        return what


@dataclass(frozen=True)
class Options:
    """One of a few values (strings, usually)."""

    values: tuple[Any, ...]

    def accepts(self, v: Any) -> bool:
        return any(v == o and type(v) is type(o) for o in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.values)


@dataclass(frozen=True)
class Satisfies:
    """Any value for which ``check(value)`` is true; ``text`` describes it."""

    check: Callable[[Any], bool]
    text: str

    def accepts(self, v: Any) -> bool:
        try:
            return bool(self.check(v))
        except Exception:
            return False

    def describe(self) -> str:
        return self.text


_TYPE_WORDS = {str: "a string", bool: "True or False", Mapping: "a mapping",
               Sequence: "a sequence", numbers.Integral: "an int", numbers.Real: "a number"}


def _accepts(constraint: Any, v: Any) -> bool:
    if constraint is None:
        return v is None
    if isinstance(constraint, type):
        if constraint in (numbers.Integral, int) and isinstance(v, bool):
            return False
        return isinstance(v, constraint)
    return bool(constraint.accepts(v))


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return _TYPE_WORDS.get(constraint, f"a {constraint.__name__}")
    return str(constraint.describe())


def validate_params(estimator: Any, constraints: Mapping[str, Sequence[Any]]) -> None:
    """Check the estimator's parameters against ``constraints`` (InvalidParameterError)."""
    for name, allowed in constraints.items():
        value = getattr(estimator, name)
        if any(_accepts(c, value) for c in allowed):
            continue
        choices = " or ".join(_describe(c) for c in allowed)
        raise InvalidParameterError(f"The {name!r} parameter of {type(estimator).__name__} "
                                    f"must be {choices}; got {value!r}.")


class NnsigParamsMixin:
    """Base of nnsig's estimators, before ``BaseEstimator``: scikit-learn's ``_validate_params``
    runs :func:`validate_params` on ``_nnsig_constraints``."""

    _nnsig_constraints: ClassVar[Mapping[str, Sequence[Any]]] = {}

    def _validate_params(self) -> None:
        validate_params(self, self._nnsig_constraints)


#: A memory budget: bytes, or a size string that :func:`~nnsig_core._util.parse_bytes` reads.
MEMORY_SIZE = Satisfies(lambda v: parse_bytes(v) >= 0,
                        "a number of bytes or a memory size such as '2GiB'")
