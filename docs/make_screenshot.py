"""Regenerate docs/screenshot.png, the README's picture of a report.

Takes a screenshot of the report written by the project's own MNIST example
(``examples/mnist_torch.py``, run first if its report is missing), in headless
Chromium driven by Playwright:

    python docs/make_screenshot.py                       # runs/mnist_torch/report
    python docs/make_screenshot.py --report DIR --out docs/screenshot.png
    python docs/make_screenshot.py --report runs/vit_mnist/report/tokens --split test.tokens \
        --out docs/screenshot-vit-tokens.png --full-page --click '#table tbody tr'

Needs Chromium at /usr/bin/chromium (Debian's ``chromium`` package) or
``--chromium PATH``; never downloads a browser.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from nnsig_core.report.browser import DEFAULT_CHROMIUM, launch_chromium

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", type=Path, default=ROOT / "runs" / "mnist_torch" / "report")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    p.add_argument("--chromium", default=DEFAULT_CHROMIUM)
    p.add_argument("--split", default="test", help="split shown (default: test)")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--full-page", action="store_true", help="the whole page, not the viewport")
    p.add_argument("--click", default=None, metavar="SELECTOR",
                   help="click this element first (e.g. a table row: '#table tbody tr')")
    args = p.parse_args(argv)

    index = args.report / "index.html"
    if not index.is_file():
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "mnist_torch.py"), "--quiet",
             "--out", str(args.report.parent)],
            check=True,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw, executable_path=args.chromium)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(index.resolve().as_uri())
        page.wait_for_function("window.NNSIG_READY === true", timeout=30_000)
        split_button = page.locator(f"[data-split='{args.split}']")
        if split_button.count():
            split_button.first.click()
            page.wait_for_timeout(300)
        if args.click:
            page.locator(args.click).first.click()
            page.wait_for_timeout(300)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=args.full_page)
        browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
