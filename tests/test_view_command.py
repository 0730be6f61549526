"""``nnsig view`` in Chromium: the real command's server, on a folder of unrelated reports.

Served alone, a report offers no run menu of the reports beside it (their
links lead outside the served directory: 404s, and "All runs" reloaded the
page itself); it shows its own runs. Served as a folder, the index and every
report's run menu work. Skipped without Chromium or Playwright, except in CI.
"""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nnsig_core.report import write_report_data

try:
    from test_report_synth import make_report_data
    from test_viewer import Page, browser  # noqa: F401 (the module's browser fixture)
except ImportError:  # tests/ is a package
    from tests.test_report_synth import make_report_data
    from tests.test_viewer import Page, browser  # noqa: F401

pytestmark = pytest.mark.browser

@contextmanager
def nnsig_view(nnsig: list[str], directory: Path) -> Iterator[str]:
    """Run ``nnsig view DIR --no-browser`` (``nnsig``: the command line, as from a terminal)
    and yield its URL; stop it with Ctrl-C after."""
    proc = subprocess.Popen([*nnsig, "view", str(directory), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "serving" in line, line + proc.stderr.read()  # type: ignore[union-attr]
        yield line.split(" at ")[1].split()[0]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def comparison_data() -> dict:
    """A report of two runs side by side (synthetic, on different samples)."""
    a = make_report_data(n_layers=3, clusters=[8, 9, 10], seed=11, title="x",
                         samples={"train": 600, "test": 200})
    b = make_report_data(n_layers=3, clusters=[7, 8, 9], seed=12, title="y",
                         samples={"train": 500, "test": 200})
    runs = []
    for run, label in ((a, "epoch 1"), (b, "epoch 2")):
        body = {k: v for k, v in run.items() if k not in ("format_version", "title", "created")}
        runs.append({**body, "label": label})
    why = "the runs were captured on other samples"
    return {"format_version": 2, "title": "Epoch 1 vs epoch 2", "created": a["created"],
            "classes": a["classes"], "runs": runs,
            "comparison": {"runs": ["epoch 1", "epoch 2"],
                           "splits": {s: {"same_samples": False, "reason": why}
                                      for s in ("train", "test")}}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two unrelated reports in one folder (so each one's runs.js lists the other)."""
    root = tmp_path_factory.mktemp("view")
    write_report_data(make_report_data(n_layers=3, clusters=[10, 10, 10], title="Unrelated MLP",
                                       samples={"train": 800, "test": 300}, seed=3), root / "mlp")
    write_report_data(comparison_data(), root / "epochs")
    assert b"Unrelated MLP" in (root / "epochs" / "runs.js").read_bytes()
    return root


def test_view_of_one_report_shows_it_and_its_runs_and_nothing_beside(
        browser, folder, nnsig_from_a_terminal):  # noqa: F811
    page = Page(browser)
    try:
        with nnsig_view(nnsig_from_a_terminal, folder / "epochs") as url:
            p = page.open(url)
            assert p.locator("#title").text_content() == "Epoch 1 vs epoch 2"
            # The runs written into the report, side by side; no menu of the other reports.
            assert [t.strip() for t in p.locator(".run-head .run-label").all_text_contents()] == [
                "epoch 1", "epoch 2"]
            assert "comparing 2 runs: epoch 1 \u00b7 epoch 2" in p.locator("#subtitle").text_content()
            assert not p.locator("#runs").is_visible()
            assert p.locator("#run-select option").count() == 0
            assert p.evaluate("window.NNSIG_RUNS") is None
            status, runs_js = get(url + "runs.js")
            assert status == 200 and b"Unrelated" not in runs_js and b"mlp" not in runs_js
            assert get(url + "index.html")[0] == 200
            # Every link on the page that a user can follow answers.
            hrefs = p.evaluate("""Array.from(document.querySelectorAll('a[href]'))
                .filter(a => a.offsetParent !== null).map(a => a.href)""")
            for h in hrefs:
                if h.startswith("http"):
                    assert get(h.split("#")[0])[0] == 200, h
            page.clean()
    finally:
        page.close()


def test_view_of_the_folder_lists_both_and_every_link_works(
        browser, folder, nnsig_from_a_terminal):  # noqa: F811
    page = Page(browser)
    try:
        with nnsig_view(nnsig_from_a_terminal, folder) as url:
            p = page.page
            p.goto(url)
            p.wait_for_function("window.NNSIG_INDEX_READY === true")
            assert sorted(p.locator("tbody tr a").all_text_contents()) == [
                "Epoch 1 vs epoch 2", "Unrelated MLP"]
            p.locator("tbody tr a", has_text="Unrelated MLP").click()
            p.wait_for_function("window.NNSIG_READY === true")
            assert p.locator("#title").text_content() == "Unrelated MLP"
            assert p.locator("#runs").is_visible()
            p.select_option("#run-select", "epochs")
            p.wait_for_url(re.compile(r".*/epochs/index\.html$"))
            p.wait_for_function("window.NNSIG_READY === true")
            assert p.locator("#title").text_content() == "Epoch 1 vs epoch 2"
            p.click("#runs-index")
            p.wait_for_function("window.NNSIG_INDEX_READY === true")
            assert p.locator("tbody tr").count() == 2
            page.clean()
    finally:
        page.close()
