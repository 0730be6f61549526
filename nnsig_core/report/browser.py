"""Launch the headless Chromium that drives the viewer in tests, benchmarks and screenshots.

The caller imports Playwright (nnsig_core does not depend on it); the browser is the system's
Chromium, never a downloaded one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any

#: Where Debian's ``chromium`` package installs the browser.
DEFAULT_CHROMIUM = "/usr/bin/chromium"

#: Flags for a headless Chromium that runs as any user (containers, CI) and
#: makes no network request of its own: no sandbox (it needs privileges that
#: containers lack), no GPU, no background updates, sync or first-run pages.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def find_chromium() -> str:
    """The Chromium executable: ``$NNSIG_CHROMIUM``, else ``chromium`` on the ``PATH``, else
    :data:`DEFAULT_CHROMIUM` (which may not exist)."""
    return os.environ.get("NNSIG_CHROMIUM") or shutil.which("chromium") or DEFAULT_CHROMIUM


def launch_chromium(playwright: Any, executable_path: str | os.PathLike[str] | None = None,
                    args: Sequence[str] = (), **kwargs: Any) -> Any:
    """Launch headless Chromium through Playwright (``sync_playwright()``'s object) with
    :data:`CHROMIUM_ARGS` then ``args``; ``kwargs`` go to ``playwright.chromium.launch``."""
    path = os.fspath(executable_path) if executable_path is not None else find_chromium()
    return playwright.chromium.launch(executable_path=path, args=[*CHROMIUM_ARGS, *args],
                                      **kwargs)
