"""Progress bars on a terminal only, with log lines written above them, not through them."""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from typing import Any

from tqdm import tqdm

_lock = threading.Lock()
_open = 0
_redirect: AbstractContextManager[Any] | None = None


def _enter() -> None:
    global _open, _redirect
    with _lock:
        if _open == 0:
            # Imported here: tqdm.contrib imports tqdm.auto, which warns in a notebook (where
            # no bar is shown, stderr not being a terminal).
            from tqdm.contrib.logging import logging_redirect_tqdm

            # The console handlers of the root logger (logging.basicConfig's) and of nnsig's
            # write through tqdm while any bar is open; bars of two threads (a read ahead)
            # overlap, so the redirection is counted, not nested.
            _redirect = logging_redirect_tqdm(loggers=[logging.root, logging.getLogger("nnsig")])
            _redirect.__enter__()
        _open += 1


def _exit() -> None:
    global _open, _redirect
    with _lock:
        _open -= 1
        if _open == 0 and _redirect is not None:
            _redirect.__exit__(None, None, None)
            _redirect = None


class ProgressBar(tqdm):
    """A tqdm bar shown on a terminal only (``disable=None`` unless ``progress`` is False)
    that keeps log lines off it while it is open."""

    def __init__(self, *args: Any, progress: bool = True, **kwargs: Any) -> None:
        self._redirecting = False
        super().__init__(*args, disable=None if progress else True, **kwargs)
        if not self.disable:
            _enter()
            self._redirecting = True

    def close(self) -> None:
        if getattr(self, "_redirecting", False):
            self._redirecting = False
            _exit()
        super().close()
