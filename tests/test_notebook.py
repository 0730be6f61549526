"""The report inside a notebook: ``show`` / ``NotebookReport`` (the viewer inlined in an
iframe, a summary), in Chromium, and ``examples/notebook.ipynb`` executed on a real kernel
(nbclient), exported with nbconvert and opened in Chromium."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest

from nnsig_core import SignatureAnalysis, show
from nnsig_core.analysis.synthetic import make_blob_store
from nnsig_core.report import NotebookReport, write_report
from nnsig_core.report.browser import find_chromium, launch_chromium
from nnsig_core.report.notebook import read_report_data, standalone_html

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "</script><script>alert(1)</script>"


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    store = make_blob_store(tmp_path_factory.mktemp("nb") / "blob.zarr", n_samples=300,
                            inputs=True)
    analysis = SignatureAnalysis(n_clusters=4, progress=False).fit(store, "train")
    return analysis, store


def test_show_inlines_the_whole_viewer_in_one_iframe(blob):
    report = show(*blob, map_points=50, title=HOSTILE)
    assert isinstance(report, NotebookReport)
    page = report.html()
    # nothing is loaded from a file or the network: every script and style is inline
    assert not re.search(r'<script[^>]* src=', page) and 'rel="stylesheet"' not in page
    assert "window.NNSIG_REPORT = " in page and "window.NNSIG_RUNS = null;" in page
    # the data, the run list and the viewer's modules: three scripts, none closed early
    assert page.lower().count("</script") == 3 and "<!--" not in page
    assert HOSTILE not in page
    out = report._repr_html_()
    assert out.count("<iframe") == 1 and 'sandbox="allow-scripts' in out
    srcdoc = re.search(r'srcdoc="([^"]*)"', out).group(1)
    assert html.unescape(srcdoc) == page
    assert "<script>alert" not in out.split("<iframe")[0]  # the summary escapes the title


def test_the_summary(blob):
    report = show(*blob, map_points=200)
    s = report.summary()
    run = s["runs"][0]
    assert run["split"] == "test" and run["accuracy"] == {"train": 1.0, "test": 1.0}
    assert run["layers"] == ["layer0", "layer1", "layer2"] and len(run["purity"]) == 3
    assert run["separable"] == {f"c{c}": "layer0" for c in range(4)}
    text = repr(report)
    assert text.splitlines()[1].startswith("  accuracy train 1.000, test 1.000")
    assert "c0@layer0" in text
    assert "separable from layer" in report._repr_html_()


def test_a_written_report_is_shown_and_saved_as_one_file(tmp_path, blob):
    index = write_report(*blob, tmp_path / "rep", map_points=0)
    report = show(tmp_path / "rep")
    assert report.data == read_report_data(index)
    page = report.save(tmp_path / "one.html")
    assert page.read_text() == standalone_html(report.data)
    assert report.write(tmp_path / "again").name == "index.html"
    with pytest.raises(ValueError, match="not an nnsig report"):
        read_report_data(tmp_path)


# --------------------------------------------------------------------------- in Chromium


def _browser_or_skip(p):
    chromium = find_chromium()
    if not Path(chromium).exists():
        if os.environ.get("CI"):
            pytest.fail(f"chromium not found at {chromium}")
        pytest.skip(f"chromium not found at {chromium}")
    return launch_chromium(p, executable_path=chromium)


def _open_frames(page_file: Path, n_frames: int) -> tuple[list[list], list[str]]:
    """Open ``page_file`` and wait for the report in each of its iframes; return, per
    frame, [Sankey links, map points drawn, timeline nodes], and what went wrong."""
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = _browser_or_skip(p)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.on("console", lambda m: m.type in ("error", "warning") and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.on("request", lambda r: r.url.startswith(("http:", "https:")) and
                    errors.append(f"network request: {r.url}"))
            page.goto(page_file.as_uri())
            frames = [f for f in page.frames if f != page.main_frame]
            assert len(frames) == n_frames
            found = []
            for f in frames:
                f.wait_for_function("window.NNSIG_READY === true", timeout=60000)
                found.append(f.evaluate(
                    "[document.querySelectorAll('#sankey-svg path.link').length,"
                    " Number(document.querySelector('#map-canvas').getAttribute('data-points')),"
                    " document.querySelectorAll('#tl-sankey-svg .node').length]"))
        finally:
            browser.close()
    return found, errors


@pytest.mark.browser
def test_the_iframe_draws_in_chromium(tmp_path, blob):
    report = show(*blob, map_points=200)
    page = tmp_path / "notebook-like.html"
    page.write_text("<!doctype html><html><body><h1>cell output</h1>" + report._repr_html_()
                    + "</body></html>", encoding="utf-8")
    (found,), errors = _open_frames(page, 1)
    assert found[0] > 0 and found[1] == 200 and found[2] == 0
    assert errors == []


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.mnist
def test_the_example_notebook_runs_and_its_html_draws(tmp_path, mnist_root, monkeypatch):
    """examples/notebook.ipynb on a real kernel (nbclient), exported with nbconvert (its
    template's require.js and MathJax pointed at empty data: URLs, so the page needs no
    network), then opened in Chromium: the report and the timeline draw, nothing fails."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nbconvert = pytest.importorskip("nbconvert")
    pytest.importorskip("ipykernel")
    pytest.importorskip("torchvision")
    monkeypatch.setenv("NNSIG_DATA", str(mnist_root))
    monkeypatch.setenv("NNSIG_NOTEBOOK_OUT", str(tmp_path / "runs"))
    paths = [str(REPO), str(REPO / "adapters"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    nb = nbformat.read(REPO / "examples" / "notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # Importing nnsig prints nothing (tqdm.auto warned "IProgress not found" without widgets).
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "IProgress" not in stderr and "Warning" not in stderr, stderr
    reports = [o for o in outputs if "text/html" in o.get("data", {})
               and "nnsig-report" in o["data"]["text/html"]]
    assert len(reports) == 2
    assert "timeline accuracy: epoch 0" in reports[1]["data"]["text/plain"]
    exporter = nbconvert.HTMLExporter(require_js_url="data:text/javascript,",
                                      mathjax_url="data:text/javascript,")
    body, _ = exporter.from_notebook_node(nb)
    page = tmp_path / "notebook.html"
    page.write_text(body, encoding="utf-8")
    (main, timeline), errors = _open_frames(page, 2)
    assert main[0] > 0 and main[1] > 0  # the Sankey's links and the map's points
    assert timeline[0] > 0 and timeline[1] > 0 and timeline[2] > 0  # and the timeline's flows
    assert errors == []
