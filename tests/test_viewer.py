"""The report viewer in a real browser (Playwright driving Debian's Chromium).

Skipped when Chromium or Playwright is missing, except in CI (env ``CI``),
where that is a failure. One browser is shared by the module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from nnsig_core.report import serve_report, viewer_dir, write_report_data
from nnsig_core.report.browser import find_chromium, launch_chromium

try:
    from test_report_synth import expected_nodes, make_report_data
except ImportError:  # tests/ is a package
    from tests.test_report_synth import expected_nodes, make_report_data

pytestmark = pytest.mark.browser

CHROMIUM = find_chromium()
XSS = "<img src=x onerror=alert(1)>"
XSS_TITLE = "</script><script>alert('title')</script>"


def _missing(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not Path(CHROMIUM).exists():
        _missing(f"chromium not found at {CHROMIUM}")
    with sync_playwright() as p:
        b = launch_chromium(p, executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A parent directory with two reports (so it has an index) and a hostile one apart."""
    root = tmp_path_factory.mktemp("reports")
    main = make_report_data(
        n_layers=4,
        clusters=[12, 16, 14, 10],
        train_classes=list(range(9)),
        title="Synthetic MLP",
        seed=5,
    )
    other = make_report_data(
        n_layers=3,
        clusters=[10, 10, 10],
        scores=False,
        thumbnails=False,
        samples={"train": 1500, "test": 500},
        title="Second run",
        seed=6,
    )
    other["created"] = "2026-10-01T00:00:00+00:00"
    write_report_data(main, root / "mlp")
    write_report_data(other, root / "second")
    names = [XSS, '"><svg onload=alert(2)>', "a & b"] + [f"class {i}" for i in range(3, 10)]
    hostile = make_report_data(
        n_layers=3,
        clusters=[10, 11, 12],
        class_names=names,
        seed=7,
        samples={"train": 600, "test": 200},
        title=XSS_TITLE,
    )
    hostile["layers"] = ["<b>l1</b>", "net.3", "net.5"]
    hostile["model"]["layers"][0]["name"] = "<b>l1</b>"
    hostile["thumbnails"]["png"] = "not base64 !!"  # a broken sprite shows no thumbnail, no error
    hostile["splits"]["train"]["map"]["thumbnails"]["png"] = "AAAA"  # base64, but not a PNG
    xroot = tmp_path_factory.mktemp("hostile")
    write_report_data(hostile, xroot / "x")
    return {"root": root, "main": main, "other": other, "hostile": hostile, "xroot": xroot}


class Page:
    """A page with everything that would count as an error recorded."""

    def __init__(self, browser, width=1400, height=900):
        self.ctx = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.dialogs: list[str] = []
        self.responses: list[tuple[int, str]] = []
        p = self.page
        p.on(
            "console",
            lambda m: m.type in ("error", "warning") and self.errors.append(f"{m.type}: {m.text}"),
        )
        p.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        p.on("requestfailed", lambda r: self.failed.append(r.url))
        p.on("response", lambda r: self.responses.append((r.status, r.url)))
        p.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open(self, url: str):
        self.page.goto(url)
        self.page.wait_for_function("window.NNSIG_READY === true", timeout=15000)
        return self.page

    def clean(self):
        assert self.errors == []
        assert self.failed == []
        assert self.dialogs == []
        assert [r for r in self.responses if r[0] >= 400] == []

    def close(self):
        self.ctx.close()


@pytest.fixture
def page(browser):
    pg = Page(browser)
    yield pg
    pg.close()


def url_of(path: Path) -> str:
    return path.resolve().as_uri()


def n_nodes(p) -> int:
    return p.locator("#sankey-svg .node").count()


def n_rows(p) -> int:
    return p.locator("#table tbody tr").count()


# --------------------------------------------------------------------------- loading


def test_loads_from_file_with_expected_diagram(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    data = reports["main"]
    split = next(iter(data["splits"]))
    total, per_col = expected_nodes(data, split)
    assert p.locator("#sankey-svg .col-title").count() == len(data["layers"]) + 2
    assert [t.strip() for t in p.locator("#sankey-svg .col-title").all_text_contents()] == (
        ["Input class"] + data["layers"] + ["Output class"]
    )
    assert n_nodes(p) == total
    for c, n in enumerate(per_col):
        assert p.locator(f'#sankey-svg .node[data-node^="{c}:"]').count() == n
    assert p.locator("#sankey-svg .link").count() > 50
    assert p.title() == "Synthetic MLP \u2014 nnsig"
    assert n_rows(p) == min(250, len(data["splits"][split]["rows"]))
    assert p.evaluate("performance.getEntriesByName('nnsig-sankey-drawn').length") == 1
    page.clean()


def test_loads_over_http_from_serve_report(page, reports):
    server, url = serve_report(reports["root"], open_browser=False)
    try:
        p = page.open(url + "mlp/index.html")
        total, _ = expected_nodes(reports["main"], "train")
        assert n_nodes(p) == total
        assert {u.rsplit("/", 1)[-1] for s, u in page.responses if s == 200} >= {
            "index.html",
            "data.js",
            "runs.js",
            "viewer.js",
            "style.css",
        }
        page.clean()
        # The index page over http, too.
        page.page.goto(url)
        page.page.wait_for_function("window.NNSIG_INDEX_READY === true")
        assert page.page.locator("tbody tr").count() == 2
        page.clean()
    finally:
        server.close()


# --------------------------------------------------------------------------- interactions


def test_node_click_keeps_only_its_flows_and_escape_clears(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    before_nodes, before_rows = n_nodes(p), p.locator("#table-note").text_content()
    draws = p.evaluate("window.NNSIG_DRAWS")
    key = p.locator('#sankey-svg .node[data-node^="2:"]').first.get_attribute("data-node")
    p.locator(f'#sankey-svg .node[data-node="{key}"] .hit').click()
    assert p.evaluate("window.NNSIG_DRAWS") > draws
    assert p.locator('#sankey-svg .node[data-node^="2:"]').count() == 1
    assert (
        p.locator(f'#sankey-svg .node[data-node="{key}"]').get_attribute("class") == "node focused"
    )
    assert n_nodes(p) < before_nodes
    assert p.locator("#focus-chip").is_visible()
    assert "Cluster" in p.locator("#pane-details").text_content()
    layer, cid = key.split(":")
    for sig in p.locator("#table tbody tr .sig").all_text_contents():
        assert re.split(r"\s*\u2192\s*", sig.strip())[int(layer) - 1] == cid
    p.keyboard.press("Escape")
    assert n_nodes(p) == before_nodes
    assert p.locator("#table-note").text_content() == before_rows
    # Click again on the same node toggles too.
    p.locator(f'#sankey-svg .node[data-node="{key}"] .hit').click()
    p.locator(f'#sankey-svg .node[data-node="{key}"] .hit').click()
    assert n_nodes(p) == before_nodes
    page.clean()


def test_hover_shows_counts_and_composition(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    p.locator('#sankey-svg .node[data-node="1:0"] .hit').hover()
    tip = p.locator("#tooltip")
    assert tip.is_visible()
    assert "cluster 0" in tip.text_content() and "samples shown" in tip.text_content()
    assert tip.locator(".comp-list li").count() >= 1
    link = p.locator("#sankey-svg .link").first
    link.dispatch_event("mousemove", {"clientX": 300, "clientY": 300, "bubbles": True})
    assert tip.text_content().startswith("Class ") and "samples" in tip.text_content()
    p.locator("#sankey-svg").dispatch_event("mouseleave")
    assert not tip.is_visible()
    page.clean()


def test_row_click_highlights_its_signature(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    assert p.locator("#sankey-svg .highlight path").count() == 0
    row = p.locator("#table tbody tr").first
    row.click()
    assert row.get_attribute("aria-selected") == "true"
    assert "has-highlight" in p.locator("#sankey-svg").get_attribute("class")
    n_layers = len(reports["main"]["layers"])
    assert p.locator("#sankey-svg .highlight path").count() == n_layers + 1
    assert p.locator("#sankey-svg .node.on-path").count() == n_layers + 2
    assert "Signature" in p.locator("#pane-details").text_content()
    row.click()  # a second click clears
    assert p.locator("#sankey-svg .highlight path").count() == 0
    assert row.get_attribute("aria-selected") == "false"
    page.clean()


def test_misclassification_focus_marks_where_the_path_leaves(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    p.select_option("#f-outcome", "div:1")
    rows = p.locator("#table tbody tr")
    assert rows.count() > 0
    assert p.locator("#table tbody tr:not(.mis)").count() == 0
    assert set(p.locator("#table tbody .div-cell").all_text_contents()) == {
        reports["main"]["layers"][1]
    }
    rows.first.click()
    assert p.locator("#sankey-svg .node.diverge").count() == 1
    assert p.locator("#sankey-svg .node.diverge").get_attribute("data-node").startswith("2:")
    assert (
        "leaves the clusters typical of class" in p.locator("#pane-details .callout").text_content()
    )
    page.clean()


def test_table_keyboard_navigation(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    rows = p.locator("#table tbody tr")
    assert rows.nth(0).get_attribute("tabindex") == "0"
    assert rows.nth(1).get_attribute("tabindex") == "-1"
    rows.nth(0).focus()
    p.keyboard.press("ArrowDown")
    p.keyboard.press("ArrowDown")
    p.keyboard.press("ArrowUp")
    active = p.evaluate("document.activeElement.getAttribute('data-key')")
    assert active == rows.nth(1).get_attribute("data-key")
    p.keyboard.press("Enter")
    assert rows.nth(1).get_attribute("aria-selected") == "true"
    assert p.locator("#sankey-svg .highlight path").count() > 0
    assert p.evaluate("document.activeElement.getAttribute('data-key')") == active  # focus kept
    p.keyboard.press("End")
    assert p.evaluate(
        "document.activeElement === document.querySelector('#table tbody tr:last-child')"
    )
    p.keyboard.press("Home")
    p.keyboard.press("Escape")
    assert p.locator("#table tbody tr[aria-selected=true]").count() == 0
    assert p.locator("#sankey-svg .highlight path").count() == 0
    # Tab reaches the table through its single focusable row (roving tabindex).
    assert p.locator('#table tbody tr[tabindex="0"]').count() == 1
    page.clean()


def test_split_switch_filters_and_views(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    data = reports["main"]
    p.locator('#split-switch [data-split="test"]').click()
    assert p.locator('#split-switch [data-split="test"]').get_attribute("aria-checked") == "true"
    assert n_nodes(p) == expected_nodes(data, "test")[0]
    assert "800" in p.locator("#stats").text_content()
    p.select_option("#f-input", "3")
    ins = {r["input"] for r in data["splits"]["test"]["rows"]}
    assert p.locator('#sankey-svg .node[data-node^="0:"]').count() == 1 and 3 in ins
    p.select_option("#f-input", "all")  # "all classes" is no longer -1, the unlabelled class
    p.select_option("#f-outcome", "correct")
    assert p.locator("#table tbody tr.mis").count() == 0
    p.select_option("#f-outcome", "all")
    p.select_option("#f-seen", "unseen")  # class 9 was not fitted
    assert p.locator('#sankey-svg .node[data-node^="0:"]').count() == 1
    assert p.locator('#sankey-svg .node[data-node="0:9"]').count() == 1
    p.click("#reset")
    p.select_option("#view", "signature")
    sigs = {tuple(r["path"]) for r in data["splits"]["test"]["rows"]}
    assert "Input classes" in p.locator("#table thead").text_content()
    assert p.locator("#table-note").text_content().startswith(f"{len(sigs):,} rows")
    p.select_option("#view", "input")
    assert "Output classes" in p.locator("#table thead").text_content()
    p.select_option("#view", "output")
    assert "Input classes" in p.locator("#table thead").text_content()
    # Sorting by a column header.
    p.locator('#table thead button[data-sort="count"]').click()
    counts = [
        int(t.replace(",", ""))
        for t in p.locator("#table tbody td:nth-child(4)").all_text_contents()
    ]
    assert counts == sorted(counts)
    page.clean()


def test_the_calibration_split_s_rates_are_marked_as_not_held_out(page, tmp_path):
    """The Scores tab of the split that calibrated a conformal threshold says its rates are
    not a held-out measure; another split's tab does not."""
    data = make_report_data(n_layers=2, clusters=[6, 6], samples={"train": 600, "test": 300},
                            seed=3)
    data["threshold"].update(split="test", promise="at most 5% of correctly classified "
                             "inputs like those of the test split score at or above it")
    write_report_data(data, tmp_path / "r")
    p = page.open(url_of(tmp_path / "r" / "index.html"))
    p.locator('#split-switch [data-split="train"]').click()
    p.click("#tab-scores")
    assert p.locator("#calibration-note").count() == 0
    p.locator('#split-switch [data-split="test"]').click()
    p.click("#tab-scores")
    assert "not a held-out measure" in p.locator("#calibration-note").text_content()
    page.clean()


def test_scores_thumbnails_model_and_errors_panels(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    p.click("#tab-scores")
    assert p.locator("#pane-scores svg.hist rect").count() > 10
    before = p.locator("#pane-scores .rates").text_content()
    p.locator("#threshold").fill("3")
    after = p.locator("#pane-scores .rates").text_content()
    assert before != after and "false-positive rate" in after
    assert p.locator("#table tbody tr.flagged").count() > 0
    p.locator("#pane-scores button.btn").click()
    assert p.locator('#table thead th[aria-sort="descending"]').text_content().startswith("Score")
    p.click("#tab-model")
    model = p.locator("#pane-model").text_content()
    assert "MLP" in model and "torch" in model and "Unseen during training" in model
    assert p.locator("#pane-model table.mini tbody tr").count() == 4
    p.click("#tab-errors")
    assert p.locator("#pane-errors .bar-row").count() >= 5
    p.locator('#sankey-svg .node[data-node="1:0"] .hit').click()
    assert p.locator("#pane-details canvas.thumb").count() >= 1
    assert p.evaluate("""(() => { const c = document.querySelector('#pane-details canvas.thumb');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return d[3] === 255 && new Set(d).size > 3; })()""")
    page.clean()


def test_redraws_on_resize(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    w1 = int(p.locator("#sankey-svg").get_attribute("width"))
    draws = p.evaluate("window.NNSIG_DRAWS")
    p.set_viewport_size({"width": 820, "height": 900})
    p.wait_for_function(f"window.NNSIG_DRAWS > {draws}")
    w2 = int(p.locator("#sankey-svg").get_attribute("width"))
    assert w2 < w1
    assert p.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.clean()


# --------------------------------------------------------------------------- security


def test_hostile_strings_show_as_text_and_run_nothing(page, reports):
    p = page.open(url_of(reports["xroot"] / "x" / "index.html"))
    p.locator('#sankey-svg .node[data-node="0:0"] .hit').hover()
    assert XSS in p.locator("#tooltip").text_content()
    p.locator("#table tbody tr").first.click()
    p.locator('#sankey-svg .node[data-node="1:0"] .hit').click()
    p.click("#tab-model")
    p.click("#tab-errors")
    p.click("#tab-scores")
    assert p.evaluate("document.querySelectorAll('img, script:not([src]), svg svg, b').length") == 0
    assert page.dialogs == []
    assert XSS in p.locator("#legend").text_content()
    assert p.locator("#title").text_content() == XSS_TITLE
    assert p.title().startswith(XSS_TITLE)
    assert XSS in p.locator("#f-input").text_content()
    assert p.locator("#sankey-svg .col-title").nth(1).text_content() == "<b>l1</b>"
    page.clean()


def test_screenshot(page, reports, tmp_path):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    p.select_option("#f-outcome", "misclassified")
    p.locator("#table tbody tr").first.click()
    out = tmp_path / "report.png"
    p.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 20_000
    if os.environ.get("NNSIG_SCREENSHOT_DIR"):
        shutil.copy(out, Path(os.environ["NNSIG_SCREENSHOT_DIR"]) / "report.png")
    page.clean()


# --------------------------------------------------------------------------- several reports


def test_index_page_and_run_selector(page, reports):
    root = reports["root"]
    p = page.page
    p.goto(url_of(root / "index.html"))
    p.wait_for_function("window.NNSIG_INDEX_READY === true")
    links = p.locator("tbody tr a")
    assert links.all_text_contents() == ["Synthetic MLP", "Second run"]  # newest first
    assert "2 reports" in p.locator("#summary").text_content()
    p.fill("#q", "second")
    assert p.locator("tbody tr:visible").count() == 1
    p.fill("#q", "")
    links.nth(1).click()
    p.wait_for_function("window.NNSIG_READY === true")
    assert p.locator("#title").text_content() == "Second run"
    assert p.locator("#runs").is_visible()
    assert p.locator("#run-select option").all_text_contents()[1].startswith("Second run")
    assert p.locator("#run-select").input_value() == "second"
    p.select_option("#run-select", "mlp")
    p.wait_for_url(re.compile(r".*/mlp/index\.html$"))
    p.wait_for_function("window.NNSIG_READY === true")
    assert p.locator("#title").text_content() == "Synthetic MLP"
    p.click("#runs-index")
    p.wait_for_function("window.NNSIG_INDEX_READY === true")
    assert p.locator("tbody tr").count() == 2
    # The report without scores hides the Scores tab.
    page.clean()


def test_single_report_has_no_run_selector_and_no_scores_tab(page, reports, tmp_path):
    write_report_data(reports["other"], tmp_path / "alone")
    p = page.open(url_of(tmp_path / "alone" / "index.html"))
    assert not p.locator("#runs").is_visible()
    assert not p.locator("#tab-scores").is_visible()
    assert p.locator("#pane-details canvas").count() == 0
    page.clean()


def test_missing_data_shows_a_message(page, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(viewer_dir(), d)
    (d / "data.js").write_text("window.NNSIG_REPORT = null;\n")
    (d / "runs.js").write_text("window.NNSIG_RUNS = null;\n")
    page.page.goto(url_of(d / "index.html"))
    page.page.wait_for_function("window.NNSIG_READY === 'error'")
    assert "No report data" in page.page.locator("#fatal").text_content()
    page.clean()


# --------------------------------------------------------------------------- with the real producer


def test_report_of_a_real_analysis(page, tmp_path):
    """End to end: a fitted analysis of a small store, through write_report, in the browser."""
    import numpy as np

    from nnsig_core import open_store
    from nnsig_core.analysis import SignatureAnalysis
    from nnsig_core.analysis.synthetic import make_blob_store
    from nnsig_core.report import write_report

    path = tmp_path / "blobs.zarr"
    make_blob_store(path, n_samples=300, n_classes=5, error_rate=0.1, inputs=True)
    store = open_store(path)
    analysis = SignatureAnalysis(n_clusters=4, progress=False).fit(
        store, "train", classes=[0, 1, 2, 3]
    )
    rng = np.random.default_rng(0)
    scores = {s: rng.random(store.n_samples(s)) for s in ("train", "test")}
    index = write_report(analysis, store, tmp_path / "report", title="Blobs", scores=scores)
    p = page.open(url_of(index))
    data = read_data(index.parent)
    total, _ = expected_nodes(data, "train")
    assert n_nodes(p) == total
    assert p.locator("#sankey-svg .col-title").count() == len(data["layers"]) + 2
    assert p.locator("#title").text_content() == "Blobs"
    p.locator('#sankey-svg .node[data-node="1:0"] .hit').click()
    assert p.locator("#pane-details canvas.thumb").count() >= 1
    p.click("#tab-scores")
    assert p.locator("#pane-scores svg.hist rect").count() > 0
    page.clean()


def read_data(report: Path) -> dict:
    import json

    text = (report / "data.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("=") + 1 : text.rindex(";")])


# --------------------------------------------------------------------------- the layer map


def map_points(p, run: int = 0) -> list[dict]:
    return p.evaluate(f"NNSIG.views.map.points({run})")


def canvas_point(p, pt: dict, canvas: str = "#map-canvas") -> tuple[float, float]:
    p.locator(canvas).scroll_into_view_if_needed()
    box = p.locator(canvas).bounding_box()
    return box["x"] + pt["x"], box["y"] + pt["y"]


def clear_point(p, accept, run: int = 0) -> dict:
    """A map point accepted by ``accept``, away from every centre (which the mouse finds
    first) and not on top of another point."""
    pts, cents = map_points(p, run), p.evaluate(f"NNSIG.views.map.centres({run})")

    def room(q):
        near = [c for c in cents if (c["x"] - q["x"]) ** 2 + (c["y"] - q["y"]) ** 2 < 12**2]
        close = [o for o in pts if o is not q and (o["x"] - q["x"]) ** 2 + (o["y"] - q["y"]) ** 2 < 2]
        return not near and not close

    return next(q for q in pts if accept(q) and room(q))


def drawn_pixels(p, selector: str) -> int:
    """Pixels of a canvas that are not blank."""
    return p.evaluate(f"""(() => {{ const c = document.querySelector({selector!r});
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }})()""")


def test_map_draws_the_points_and_centres_of_the_layer(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    data = reports["main"]
    m = data["splits"]["train"]["map"]
    cv = p.locator("#map-canvas")
    assert int(cv.get_attribute("data-points")) == m["n_points"] == 400
    assert cv.get_attribute("data-dimmed") == "0"
    assert cv.get_attribute("data-layer") == "3"  # the last layer by default
    assert drawn_pixels(p, "#map-canvas") > 2000
    assert len(p.evaluate("NNSIG.views.map.centres(0)")) == data["analysis"]["n_clusters"][3]
    note = p.locator("#map-note").text_content()
    assert "400 of 3,000 samples" in note and "misclassified" in note and "PCA of net.7" in note
    kinds = {pt["kind"] for pt in map_points(p)}
    assert {"ok", "mis", "flagged"} <= kinds
    # Another layer from the selector, or from the Sankey's column header.
    p.select_option("#map-layer", "1")
    assert cv.get_attribute("data-layer") == "1" and "PCA of net.3" in p.locator("#map-note").text_content()
    p.locator('#sankey-svg .col-head[data-layer="0"]').click()
    assert cv.get_attribute("data-layer") == "0"
    assert "on-map" in p.locator('#sankey-svg .col-head[data-layer="0"]').get_attribute("class")
    p.select_option("#map-color", "cluster")
    assert cv.get_attribute("data-color") == "cluster"
    assert "colour: cluster of net.1" in p.locator(".map-legend").text_content()
    # The test split has its own points, in the same plane.
    p.locator('#split-switch [data-split="test"]').click()
    assert int(cv.get_attribute("data-points")) == data["splits"]["test"]["map"]["n_points"]
    page.clean()


def test_map_hover_shows_the_thumbnail_and_signature(page, reports):
    from playwright.sync_api import expect  # waits for what the next frame draws

    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    data = reports["main"]
    m, rows = data["splits"]["train"]["map"], data["splits"]["train"]["rows"]
    pt = clear_point(p, lambda q: q["kind"] == "mis" and not q["edge"])
    p.mouse.move(*canvas_point(p, pt))
    tip = p.locator("#tooltip")
    expect(tip).to_contain_text("Sample #")  # the map answers a move on its next frame
    k = m["positions"].index(pt["pos"])
    row = rows[pt["row"]]
    text = tip.text_content()
    assert f"Sample #{m['sample_index'][k]}" in text and f"train row {pt['pos']}" in text
    assert "signature " + " \u2192 ".join(map(str, row["path"])) in text
    assert "misclassified" in text and f"predicted {data['classes'][row['output']]}" in text
    p.wait_for_function("document.querySelector('#tooltip canvas.tip-thumb')?.dataset.drawn === '1'")
    assert drawn_pixels(p, "#tooltip canvas.tip-thumb") == 64  # 8x8, every pixel drawn
    # Hovering a centre names its cluster.
    c = p.evaluate("NNSIG.views.map.centres(0)")[0]
    p.mouse.move(*canvas_point(p, c))
    expect(tip).to_contain_text(f"cluster {c['id']} (centre)")
    p.mouse.move(5, 5)
    p.locator("#map-canvas").dispatch_event("mouseleave")
    expect(tip).to_be_hidden()
    page.clean()


def test_map_click_selects_the_row_and_its_path(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    rows = reports["main"]["splits"]["train"]["rows"]
    n_layers = len(reports["main"]["layers"])
    pt = clear_point(p, lambda q: q["kind"] == "mis" and not q["edge"])
    p.mouse.click(*canvas_point(p, pt))
    sel = p.locator("#table tbody tr[aria-selected=true]")
    assert sel.count() == 1 and sel.get_attribute("data-key") == f"r{pt['row']}"
    sig = re.split(r"\s*\u2192\s*", sel.locator(".sig").text_content().strip())
    assert sig == [str(x) for x in rows[pt["row"]]["path"]]
    assert p.locator("#sankey-svg .highlight path").count() == n_layers + 1
    assert "Signature" in p.locator("#pane-details").text_content()
    assert int(p.locator("#map-canvas").get_attribute("data-selected")) >= 1
    assert p.evaluate("NNSIG.page.state.sample") == pt["pos"]
    # The selected row is visible in its scrolled table.
    assert p.evaluate("""(() => { const tr = document.querySelector('#table tbody tr.selected');
        const w = tr.closest('.table-wrap'); return tr.offsetTop >= w.scrollTop &&
        tr.offsetTop + tr.offsetHeight <= w.scrollTop + w.clientHeight + 1; })()""")
    # In a grouped view the point selects its group.
    p.select_option("#view", "signature")
    p.mouse.click(*canvas_point(p, pt))
    key = "s" + ",".join(map(str, rows[pt["row"]]["path"]))
    assert p.locator("#table tbody tr[aria-selected=true]").get_attribute("data-key") == key
    p.mouse.click(*canvas_point(p, pt))  # a second click clears
    assert p.locator("#table tbody tr[aria-selected=true]").count() == 0
    # Selecting a table row rings its points on the map.
    p.locator(f'#table tbody tr[data-key="{key}"]').click()
    assert int(p.locator("#map-canvas").get_attribute("data-selected")) >= 1
    page.clean()


def test_filters_and_the_sankey_focus_dim_the_map(page, reports):
    p = page.open(url_of(reports["root"] / "mlp" / "index.html"))
    rows = reports["main"]["splits"]["train"]["rows"]
    cv = p.locator("#map-canvas")
    pts = map_points(p)
    p.select_option("#f-input", "3")
    want = sum(1 for q in pts if rows[q["row"]]["input"] != 3)
    assert int(cv.get_attribute("data-dimmed")) == want > 0
    assert {q["dim"] for q in map_points(p) if rows[q["row"]]["input"] == 3} == {False}
    # A dimmed point cannot be selected.
    dim = clear_point(p, lambda q: q["dim"] and not q["edge"])
    p.mouse.click(*canvas_point(p, dim))
    assert p.locator("#table tbody tr[aria-selected=true]").count() == 0
    p.click("#reset")
    assert cv.get_attribute("data-dimmed") == "0"
    # Focusing a Sankey node dims the samples that do not pass through it.
    key = p.locator('#sankey-svg .node[data-node^="2:"]').first.get_attribute("data-node")
    cid = int(key.split(":")[1])
    p.locator(f'#sankey-svg .node[data-node="{key}"] .hit').click()
    want = sum(1 for q in pts if rows[q["row"]]["path"][1] != cid)
    assert int(cv.get_attribute("data-dimmed")) == want
    assert cv.get_attribute("data-layer") == "1"  # the map follows the focused layer
    # ...and clicking a centre on the map focuses its cluster.
    p.keyboard.press("Escape")
    c = p.evaluate("NNSIG.views.map.centres(0)")[2]
    p.mouse.click(*canvas_point(p, c))
    assert p.evaluate("NNSIG.page.state.focus[0]") == f"2:{c['id']}"
    page.clean()


def pixel_alphas(p, xy: list[tuple[float, float]], selector: str = "#map-canvas") -> list[int]:
    """The alpha of a canvas's pixels at (x, y) CSS pixels from its top left (one readback)."""
    return p.evaluate(f"""(xy => {{ const c = document.querySelector({selector!r});
        const r = c.width / c.getBoundingClientRect().width;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return xy.map(([x, y]) => d[4 * (Math.round(y * r) * c.width + Math.round(x * r)) + 3]);
        }})""", [list(v) for v in xy])


def test_map_points_beyond_the_extent_have_their_own_mark_counted_in_the_legend(page, reports,
                                                                               tmp_path):
    """Outliers pinned to the map's border: an arrowhead just outside each, pointing outwards
    (not the hollow ring that looked like 'flagged'), and their count in the legend."""
    import base64
    import copy

    import numpy as np

    data = copy.deepcopy(reports["main"])
    layer = data["splits"]["train"]["map"]["layers"][-1]
    q = np.frombuffer(base64.b64decode(layer["xy"]), dtype="<u2").reshape(-1, 2).copy()
    left, top = [3, 40, 90, 160, 250], [7, 120]
    q[left, 0] = 0
    q[top, 1] = 65535
    layer["xy"] = base64.b64encode(q.tobytes()).decode("ascii")
    write_report_data(data, tmp_path / "edge")
    p = page.open(url_of(tmp_path / "edge" / "index.html"))
    cv = p.locator("#map-canvas")
    assert cv.get_attribute("data-edge") == "7"
    pos = data["splits"]["train"]["map"]["positions"]
    edge = [pt for pt in map_points(p) if pt["edge"]]
    assert sorted(pt["pos"] for pt in edge) == sorted(pos[k] for k in left + top)
    assert {pt["side"] for pt in edge} == {1, 8}  # left, top
    item = p.locator(".map-legend .ml-edge-item")
    assert item.count() == 1 and item.get_attribute("data-count") == "7"
    assert "7 beyond the extent, drawn on its border" in item.text_content()
    assert p.locator(".map-legend .ml-edge").count() == 1
    # Each one's arrowhead lies just outside the extent, where no other point is drawn.
    others = [pt for pt in map_points(p) if not pt["edge"]]
    tips = [(pt["x"] - 7.5, pt["y"]) if pt["side"] == 1 else (pt["x"], pt["y"] - 7.5)
            for pt in edge]
    tips = [(x, y) for x, y in tips
            if not any((o["x"] - x) ** 2 + (o["y"] - y) ** 2 < 8**2 for o in others)]
    assert len(tips) >= 3
    assert min(pixel_alphas(p, tips)) > 100
    # Its tooltip says so; the other layers have none beyond, and no such legend item.
    pt = next(pt for pt in edge if pt["side"] == 1)
    p.mouse.move(*canvas_point(p, pt))
    assert "beyond the map's extent" in p.locator("#tooltip").text_content()
    p.select_option("#map-layer", "0")
    assert cv.get_attribute("data-edge") == "0"
    assert p.locator(".map-legend .ml-edge-item").count() == 0
    assert "null" not in p.locator(".map-legend").text_content()  # not the missing item's
    page.clean()


# --------------------------------------------------------------------------- unlabelled splits


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabelled")
    data = make_report_data(n_layers=3, clusters=[8, 9, 10], samples={"train": 1200, "wild": 500},
                            unlabelled=("wild",), seed=11, title="Unlabelled")
    # A partly labelled split: some rows of train lose their label (keys stay unique).
    seen, rows = set(), data["splits"]["train"]["rows"]
    for r in rows[::7]:
        key = (tuple(r["path"]), r["output"])
        if key not in seen and r["input"] == r["output"]:
            seen.add(key)
            r["input"] = -1
    write_report_data(data, root / "u")
    return {"root": root, "data": data,
            "n_unlabelled": sum(r["count"] for r in rows if r["input"] == -1)}


def test_a_split_without_labels_shows_predictions_only(page, unlabelled):
    p = page.open(url_of(unlabelled["root"] / "u" / "index.html"))
    data = unlabelled["data"]
    p.locator('#split-switch [data-split="wild"]').click()
    note = p.locator("#split-note")
    assert note.is_visible() and "has no labels: it shows the predictions only" in note.text_content()
    # No input column: the first column is the first layer, flows coloured by prediction.
    titles = [t.strip() for t in p.locator("#sankey-svg .col-title").all_text_contents()]
    assert titles == data["layers"] + ["Output class"]
    assert p.locator('#sankey-svg .node[data-node^="0:"]').count() == 0
    assert "predicted class" in p.locator("#legend").text_content()
    stats = p.locator("#stats").text_content()
    assert "no labels in this split" in stats and "Misclassified" not in stats
    assert p.locator("#f-input").is_disabled() and p.locator("#f-outcome").is_disabled()
    heads = p.locator("#table thead").text_content()
    assert "Input class" not in heads and "Correct" not in heads and "Leaves typical" not in heads
    assert p.locator("#table tbody tr.mis").count() == 0
    assert p.locator("#table tbody tr.unlabelled").count() == p.locator("#table tbody tr").count() > 0
    assert p.locator('#view option[value="input"]').is_disabled()
    assert p.locator("#map-canvas").get_attribute("data-color") == "prediction"
    assert {q["kind"] for q in map_points(p)} <= {"unlabelled", "flagged"}
    p.click("#tab-errors")
    assert "has no labels" in p.locator("#pane-errors").text_content()
    assert p.locator("#pane-errors .conf-btn").count() == 0
    p.click("#tab-scores")
    rates = p.locator("#pane-scores .rates").text_content()
    assert "Unlabelled flagged" in rates and "false-positive" not in rates
    p.locator("#sankey-svg .link").first.dispatch_event("mousemove", {"clientX": 300, "clientY": 300, "bubbles": True})
    assert p.locator("#tooltip").text_content().startswith("Predicted class ")
    # Back to a labelled split: the input column and the filters return.
    p.locator('#split-switch [data-split="train"]').click()
    assert p.locator("#sankey-svg .col-title").first.text_content() == "Input class"
    assert not p.locator("#f-input").is_disabled()
    page.clean()


def test_unlabelled_samples_of_a_labelled_split_are_not_errors(page, unlabelled):
    p = page.open(url_of(unlabelled["root"] / "u" / "index.html"))
    n = unlabelled["n_unlabelled"]
    assert n > 0
    note = p.locator("#split-note").text_content()
    assert f"{n:,} samples of the train split have no label" in note
    # "All classes" keeps them; the Unlabelled option shows only them, none misclassified.
    opts = p.locator("#f-input option").all_inner_texts()
    assert opts[:2] == ["All classes", "Unlabelled (no true class)"]
    p.select_option("#f-input", "unlabelled")
    assert p.locator("#table-note").text_content().split(" \u00b7 ")[1] == f"{n:,} samples"
    assert p.locator("#table tbody tr.mis").count() == 0
    assert set(p.locator("#table tbody td:first-child .cls-name").all_text_contents()) == {"unlabelled"}
    assert p.locator('#sankey-svg .node[data-node="0:-1"]').count() == 1
    p.select_option("#f-outcome", "misclassified")
    assert "No sample matches" in p.locator("#empty").text_content() and p.locator("#empty").is_visible()
    p.click("#reset")
    p.click("#tab-errors")
    assert "\u2192" in p.locator("#pane-errors .conf").text_content()
    assert "unlabelled" not in p.locator("#pane-errors").text_content()
    page.clean()


# --------------------------------------------------------------------------- comparisons


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """Two models' stores on the same samples, a third on others; reports of them."""
    import numpy as np

    from nnsig_core.analysis import SignatureAnalysis
    from nnsig_core.analysis.synthetic import make_blob_activations, make_blob_store
    from nnsig_core.capture import capture_arrays
    from nnsig_core.report import write_report

    root = tmp_path_factory.mktemp("compare")
    stores = []
    for name, rate, seed in (("a", 0.06, 1), ("b", 0.15, 2)):
        store = root / f"{name}.zarr"
        for i, (split, n) in enumerate((("train", 400), ("test", 300))):
            blobs = make_blob_activations(n_samples=n, n_classes=4, seed=0, sample_seed=1 + i)
            rng = np.random.default_rng(seed * 10 + i)
            preds = blobs["labels"].copy()
            wrong = rng.random(n) < rate
            preds[wrong] = (preds[wrong] + 1) % 4
            images = (rng.random((n, 8, 8)) * 255).astype(np.uint8)
            store = capture_arrays(blobs["activations"], outputs=np.eye(4, dtype=np.float32)[preds],
                                   labels=blobs["labels"], store=store, split=split,
                                   progress=False, inputs=images,
                                   class_names=[XSS, "b", "c", "d"])
        stores.append(store)
    fits = [SignatureAnalysis(n_clusters=4, progress=False).fit(s, "train") for s in stores]
    rng = np.random.default_rng(0)
    scores = [{s: rng.random(st.n_samples(s)) for s in ("train", "test")} for st in stores]
    write_report([(f, s, sc) for f, s, sc in zip(fits, stores, scores, strict=True)], None,
                 root / "same", labels=["model A", XSS_TITLE], title="A vs B")
    others = [make_blob_store(root / f"o{k}.zarr", n_samples=[400, n], n_classes=4, seed=5,
                              error_rate=0.1, inputs=True) for k, n in ((1, 300), (2, 250))]
    fo = [SignatureAnalysis(n_clusters=k, progress=False).fit(o, "train")
          for k, o in zip((4, 5), others, strict=True)]
    write_report(list(zip(fo, others, strict=True)), None, root / "other", splits=("test",),
                 map_points=100, labels=["A", "O"])
    return {"root": root, "data": read_data(root / "same"), "other": read_data(root / "other")}


def test_comparison_shows_the_runs_side_by_side_with_shared_filters(page, comparison):
    p = page.open(url_of(comparison["root"] / "same" / "index.html"))
    data = comparison["data"]
    assert p.locator(".run-col").count() == 2
    assert [t.strip() for t in p.locator(".run-head .run-label").all_text_contents()] == ["model A", XSS_TITLE]
    for i, sel in enumerate(("#sankey-svg", "#sankey-svg-1")):
        assert p.locator(f"{sel} .node").count() == expected_nodes(data["runs"][i], "train")[0]
    assert p.locator("#map-canvas").is_visible() and p.locator("#map-canvas-1").is_visible()
    # Every tab of the side panel in view (a comparison's extra tab pushed Scores out of it).
    panel = p.locator(".tabs").first.bounding_box()
    for tab in p.locator(".tabs [role=tab]").all():
        box = tab.bounding_box()
        assert box["x"] + box["width"] <= panel["x"] + panel["width"] + 0.5
    # One set of points for both runs: its kinds are the union, and the notes say so.
    assert all("misclassified in either run" in t for t in p.locator(".map-note").all_text_contents())
    # One legend, the same class colours in both runs.
    assert p.locator("#legend").count() == 1 and p.locator("#legend .legend-item").count() == 4
    colours = p.evaluate("""[0, 1].map(i => Array.from(document.querySelectorAll(
        (i ? '#sankey-svg-1' : '#sankey-svg') + ' .node[data-node="0:2"] .seg')).map(e => e.getAttribute('fill')))""")
    assert colours[0] == colours[1] and len(colours[0]) == 1
    # A filter applies to both runs.
    p.select_option("#f-input", "2")
    for sel in ("#sankey-svg", "#sankey-svg-1"):
        assert p.locator(f'{sel} .node[data-node^="0:"]').count() == 1
    assert p.locator("#map-canvas").get_attribute("data-dimmed") == p.locator("#map-canvas-1").get_attribute("data-dimmed") != "0"
    p.click("#reset")
    # Both runs' stats; the table and panels follow the chosen run.
    assert p.locator("#stats .stats-row").count() == 2
    assert p.locator("#table-run").is_visible()
    p.locator('#table-run [data-run="1"]').click()
    assert p.locator("#side-run").text_content() == "Run: " + XSS_TITLE
    n_rows_b = len(data["runs"][1]["splits"]["train"]["rows"])
    assert p.locator("#table-note").text_content().startswith(f"{n_rows_b:,} rows")
    # Focusing a node in one run leaves the other run's flows as they are.
    before = p.locator("#sankey-svg-1 .node").count()
    p.locator('#sankey-svg .node[data-node^="1:"] .hit').first.click()
    assert p.locator("#sankey-svg-1 .node").count() == before
    assert p.locator("#side-run").text_content() == "Run: model A"
    page.clean()


def test_comparison_lists_the_changed_samples(page, comparison):
    p = page.open(url_of(comparison["root"] / "same" / "index.html"))
    data = comparison["data"]
    p.locator('#split-switch [data-split="test"]').click()
    p.click("#tab-changes")
    ch = data["comparison"]["splits"]["test"]["changed"]
    summary = p.locator("#pane-changes .changed-summary").text_content()
    assert summary.startswith(f"{ch['n_changed']} samples change outcome:")
    assert f"{ch['right_in'][0]} right only in model A" in summary
    items = p.locator("#pane-changes .changed-btn")
    assert items.count() == min(60, ch["n_changed"]) > 5
    first = ch["samples"][0]
    assert items.first.get_attribute("data-position") == str(first["position"])
    assert f"#{first['sample_index']}" in items.first.text_content()
    p.wait_for_function("document.querySelector('#pane-changes canvas.chg-thumb')?.dataset.drawn === '1'")
    assert p.locator("#pane-changes .sep-cmp tbody tr").count() == 4
    # Clicking one selects its row in both runs and marks it on both maps.
    items.first.click()
    state = p.evaluate("NNSIG.page.state")
    assert state["sample"] == first["position"]
    assert state["selected"] == [f"r{first['rows'][0]}", f"r{first['rows'][1]}"]
    for sel in ("#sankey-svg", "#sankey-svg-1"):
        assert p.locator(f"{sel} .highlight path").count() == 4  # 3 layers + output
    assert p.locator("#table tbody tr[aria-selected=true]").get_attribute("data-key") == f"r{first['rows'][0]}"
    # The filters apply to the list: only samples of class 1.
    p.select_option("#f-input", "1")
    p.click("#tab-changes")
    want = sum(1 for s in ch["samples"] if s["label"] == 1)
    assert p.locator("#pane-changes .changed-btn").count() == min(60, want)
    # Hovering a point on one map marks the same sample on the other.
    pt = clear_point(p, lambda q: not q["dim"] and not q["edge"])
    p.mouse.move(*canvas_point(p, pt))
    assert p.evaluate("NNSIG.page.state.hover") == {"run": 0, "pos": pt["pos"]}
    page.clean()


def test_comparison_of_runs_on_other_samples_says_why(page, comparison):
    p = page.open(url_of(comparison["root"] / "other" / "index.html"))
    p.click("#tab-changes")
    text = p.locator("#pane-changes").text_content()
    assert "do not hold the same samples" in text and "250" in text
    assert p.locator("#pane-changes .changed-btn").count() == 0
    assert p.locator("#pane-changes .sep-cmp").count() == 1
    assert int(p.locator("#map-canvas-1").get_attribute("data-points")) == 100
    # The index of the reports' directory names the runs of each comparison.
    p.goto(url_of(comparison["root"] / "index.html"))
    p.wait_for_function("window.NNSIG_INDEX_READY === true")
    text = p.locator("tbody").text_content()
    assert "comparison of 2 runs: A \u00b7 O" in text and XSS_TITLE in text  # as text
    # each run's accuracy on each split, in the runs' order (it showed the first run's only)
    marker = json.loads((comparison["root"] / "other" / "nnsig-report.json").read_text())
    row = next(r for r in p.locator("tbody tr").all() if "comparison of 2 runs: A" in r.text_content())
    split_text = row.locator("td").nth(4).text_content()
    for name in marker["splits"]:
        accs = [f"{100 * run['splits'][name]['accuracy']:.1f}%" for run in marker["runs"]]
        assert " \u00b7 ".join(accs) in split_text, (accs, split_text)
    assert p.evaluate("document.querySelectorAll('img').length") == 0
    page.clean()


# --------------------------------------------------------------------------- formats


def test_format_1_reports_still_render(page, tmp_path):
    old = make_report_data(n_layers=3, clusters=[10, 10, 10], samples={"train": 800, "test": 300},
                           seed=4, version=1)
    write_report_data(old, tmp_path / "v1")
    p = page.open(url_of(tmp_path / "v1" / "index.html"))
    assert n_nodes(p) == expected_nodes(old, "train")[0]
    assert p.locator(".map-empty").is_visible() and "No layer map" in p.locator(".map-empty").text_content()
    p.locator('#sankey-svg .node[data-node="1:0"] .hit').click()
    assert p.locator("#pane-details canvas.thumb").count() >= 1  # raw base64 thumbnails
    p.click("#tab-scores")
    assert "No default threshold" in p.locator("#pane-scores").text_content()
    page.clean()


def test_a_newer_format_shows_a_warning(page, tmp_path):
    d = tmp_path / "newer"
    shutil.copytree(viewer_dir(), d)
    data = make_report_data(n_layers=2, clusters=[5, 5], samples={"train": 300}, seed=2)
    data["format_version"] = 3
    from nnsig_core.report import js_json

    (d / "data.js").write_text("window.NNSIG_REPORT = " + js_json(data) + ";\n")
    (d / "runs.js").write_text("window.NNSIG_RUNS = null;\n")
    p = page.open(url_of(d / "index.html"))
    assert "data format 3, newer than this viewer (2)" in p.locator("#warning").text_content()
    assert n_nodes(p) > 0
    page.clean()
