"""nnsig's warning category and how it is raised.

What a user must act on, or should know about their result, is raised with :func:`warn`
as an :class:`NnsigWarning` (filter it as any warning); progress and information go to
the ``nnsig`` logger.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import warnings


class NnsigWarning(UserWarning):
    """Something about the user's data or result that they should know or act on."""


def _package_dirs() -> tuple[str, ...]:
    """The folders of nnsig_core and of the adapters that are installed (none imported)."""
    dirs = []
    for name in ("nnsig_core", "nnsig_torch", "nnsig_keras"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        for d in (spec.submodule_search_locations or []) if spec is not None else []:
            dirs.append(os.path.abspath(d) + os.sep)
    return tuple(dirs)


_DIRS: tuple[str, ...] | None = None


def warn(message: str) -> None:
    """Raise ``message`` as an :class:`NnsigWarning` at the user's call (the first frame outside
    nnsig's packages)."""
    global _DIRS
    if _DIRS is None:
        _DIRS = _package_dirs()
    frame = inspect.currentframe()
    level = 0  # the nnsig frames from this one up
    try:
        while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_DIRS):
            frame = frame.f_back
            level += 1
    finally:
        del frame
    warnings.warn(message, NnsigWarning, stacklevel=max(level, 1) + 1)
