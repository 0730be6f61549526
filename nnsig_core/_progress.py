"""Progress bars on a terminal only, with log lines written above them, not through them."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from tqdm import tqdm

_lock = threading.RLock()
_open = 0
#: (logger, the console handler taken out, the one put in its place) while a bar is open.
_swapped: list[tuple[logging.Logger, logging.Handler, logging.Handler]] = []


class _AboveBars(logging.StreamHandler):
    """A console handler's stand-in: its level, formatter and filters, written with
    ``tqdm.write`` (which clears the bars, writes the line, and draws them again)."""

    def __init__(self, handler: logging.StreamHandler) -> None:
        super().__init__(handler.stream)
        self.setLevel(handler.level)
        self.setFormatter(handler.formatter)
        self.filters = list(handler.filters)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


def _enter() -> None:
    global _open
    with _lock:
        if _open == 0:
            # The console handlers of the root logger (logging.basicConfig's) and of nnsig's
            # are swapped in place, keeping their settings; none is added. Bars of two
            # threads (a read ahead) overlap, so the swap is counted, not nested.
            for logger in (logging.root, logging.getLogger("nnsig")):
                for i, h in enumerate(list(logger.handlers)):
                    # a plain console StreamHandler (not a file's, not tqdm's own)
                    if isinstance(h, logging.StreamHandler) and type(h) is logging.StreamHandler \
                            and h.stream in (sys.stdout, sys.stderr):
                        stand_in = _AboveBars(h)
                        logger.handlers[i] = stand_in
                        _swapped.append((logger, h, stand_in))
        _open += 1


def _exit() -> None:
    global _open
    with _lock:
        _open -= 1
        if _open == 0:
            for logger, handler, stand_in in _swapped:
                if stand_in in logger.handlers:  # handlers added meanwhile stay
                    logger.handlers[logger.handlers.index(stand_in)] = handler
            _swapped.clear()


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
