"""Regenerate the README's pictures of a report: docs/screenshot.png and docs/screenshot-compare.png.

Both come from the project's own MNIST example (``examples/mnist_torch.py``,
run first when its store is missing):

- ``screenshot.png``: the report of the example's store (its saved analysis and
  scores), test split, a misclassified sample hovered on the layer map;
- ``screenshot-compare.png``: the same model after 1 and after 2 epochs side by
  side (the example run again with ``--epochs 1 --out runs/mnist_e1``), test
  split, the Changes pane open on a sample the second epoch fixed.

The reports are written afresh with ``write_report`` (into ``runs/screenshots``)
and photographed in headless Chromium driven by Playwright::

    python docs/make_screenshot.py
    python docs/make_screenshot.py --store runs/mnist_torch/store.zarr --store2 runs/mnist_e1/store.zarr

``--report DIR --shot FILE`` photographs a report already written instead (the
ViT example's token report in the README)::

    python docs/make_screenshot.py --report runs/vit_mnist/report/tokens --split test.tokens \
        --shot docs/screenshot-vit-tokens.png --full-page --click '#table tbody tr'

Paths are relative to the repository's root. Needs Chromium at
/usr/bin/chromium (Debian's ``chromium`` package) or ``--chromium PATH``; never
downloads a browser.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from nnsig_core.report.browser import find_chromium, launch_chromium

ROOT = Path(__file__).resolve().parents[1]


def ensure_store(store: Path, *example_args: str) -> None:
    """Run the MNIST example when ``store`` does not exist yet."""
    if (store / "zarr.json").is_file():
        return
    subprocess.run([sys.executable, str(ROOT / "examples" / "mnist_torch.py"), "--quiet",
                    "--out", str(store.parent), *example_args], check=True)


def saved_scores(store, name: str):
    from nnsig_core.diagnostics.persist import load_scores, saved_score_splits

    out = {}
    for split in saved_score_splits(store, name):
        scores = load_scores(store, name, split)
        if "combined" in scores:
            out[split] = scores["combined"]
    return out or None


def write_reports(store_path: Path, store2_path: Path, out: Path) -> tuple[Path, Path]:
    from nnsig_core import open_store
    from nnsig_core.analysis import SignatureAnalysis
    from nnsig_core.report import ReportRun, write_report

    store, store2 = open_store(store_path), open_store(store2_path)
    a, a2 = SignatureAnalysis.load(store, "default"), SignatureAnalysis.load(store2, "default")
    one = write_report(a, store, out / "report", scores=saved_scores(store, "default"),
                       title="MNIST MLP (examples/mnist_torch.py)").parent
    two = write_report([ReportRun(a2, store2, saved_scores(store2, "default"), "1 epoch"),
                        ReportRun(a, store, saved_scores(store, "default"), "2 epochs")],
                       None, out / "compare", title="MNIST MLP: 1 epoch vs 2 epochs").parent
    return one, two


def shoot_report(browser, report: Path, shot: Path, width: int, height: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto((report / "index.html").resolve().as_uri())
    page.wait_for_function("window.NNSIG_READY === true", timeout=30_000)
    page.locator("[data-split='test']").click()
    page.select_option("#f-outcome", "misclassified")
    page.locator("#table tbody tr").first.click()
    page.click("#reset")
    # Hover a misclassified sample on the map, away from the centres.
    pts = page.evaluate("NNSIG.views.map.points(0)")
    cents = page.evaluate("NNSIG.views.map.centres(0)")
    box = page.locator("#map-canvas").bounding_box()
    far = [q for q in pts if q["kind"] == "mis" and not q["edge"]
           and min((c["x"] - q["x"]) ** 2 + (c["y"] - q["y"]) ** 2 for c in cents) > 400
           and 0.3 * box["width"] < q["x"] < 0.7 * box["width"]]
    q = far[len(far) // 2]
    page.mouse.move(box["x"] + q["x"], box["y"] + q["y"])
    page.wait_for_function("document.querySelector('#tooltip canvas.tip-thumb')?.dataset.drawn === '1'")
    page.screenshot(path=str(shot), full_page=False)
    page.close()


def shoot_compare(browser, report: Path, shot: Path, width: int, height: int) -> None:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto((report / "index.html").resolve().as_uri())
    page.wait_for_function("window.NNSIG_READY === true", timeout=30_000)
    page.locator("[data-split='test']").click()
    page.click("#tab-changes")
    # The samples the second epoch fixed (right only in B), the first of them picked.
    page.locator('#pane-changes .chg-who [data-who="1"]').click()
    page.locator("#pane-changes .changed-btn").first.click()
    page.wait_for_timeout(300)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=False)
    page.close()


def shoot_given(args: argparse.Namespace) -> None:
    """Photograph the report in ``args.report`` (split, optional click, full page)."""
    from playwright.sync_api import sync_playwright

    index = args.report / "index.html"
    if not index.is_file():
        raise SystemExit(f"no report at {index}: write it first (nnsig report ...)")
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
        args.shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.shot), full_page=args.full_page)
        browser.close()
    shrink_png(args.shot)
    print(args.shot)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=Path("runs/mnist_torch/store.zarr"))
    p.add_argument("--store2", type=Path, default=Path("runs/mnist_e1/store.zarr"),
                   help="the same model after 1 epoch (made by the example when missing)")
    p.add_argument("--out", type=Path, default=Path("runs/screenshots"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--chromium", default=find_chromium())
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=1480)
    p.add_argument("--report", type=Path, default=None,
                   help="photograph this report directory instead (with --shot)")
    p.add_argument("--shot", type=Path, default=Path("docs/screenshot-report.png"))
    p.add_argument("--split", default="test", help="split shown with --report (default: test)")
    p.add_argument("--full-page", action="store_true", help="the whole page, not the viewport")
    p.add_argument("--click", default=None, metavar="SELECTOR",
                   help="with --report: click this element first (e.g. '#table tbody tr')")
    args = p.parse_args(argv)
    os.chdir(ROOT)  # relative paths: the page shows "runs/mnist_torch/store.zarr"
    if args.report is not None:
        shoot_given(args)
        return 0

    ensure_store(args.store)
    ensure_store(args.store2, "--epochs", "1")
    report, compare = write_reports(args.store, args.store2, args.out)
    from playwright.sync_api import sync_playwright

    args.docs.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = launch_chromium(pw, executable_path=args.chromium)
        shoot_report(browser, report, args.docs / "screenshot.png", args.width, args.height)
        shoot_compare(browser, compare, args.docs / "screenshot-compare.png", args.width,
                      args.height)
        browser.close()
    for shot in ("screenshot.png", "screenshot-compare.png"):
        shrink_png(args.docs / shot)
        print(args.docs / shot)
    return 0


def shrink_png(path: Path) -> None:
    """Re-save a screenshot with a 256-colour palette when Pillow is installed (it comes
    with torchvision): about a third of the size, the same look for a page of flat colours."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                           dither=Image.Dither.NONE)
    small.save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
