"""The report of a token row space: each row's tokens, token exemplars, the viewer's Tokens column."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from nnsig_torch import TorchAdapter  # noqa: E402

from nnsig_core import SignatureAnalysis, capture, open_store  # noqa: E402
from nnsig_core.analysis import paths_by_token, token_table, tokens_by_path  # noqa: E402
from nnsig_core.report import write_report  # noqa: E402
from nnsig_core.report.data import build_report_data  # noqa: E402
from nnsig_core.report.token_report import highlight_patch  # noqa: E402

try:
    from test_report_data import decode_png, sprite_cell
except ImportError:  # run from the repository root as a package
    from tests.test_report_data import decode_png, sprite_cell


class PatchNet(nn.Module):
    """A tiny patch transformer on 8 x 8 images: 4 patches of 4 x 4 and a class token."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(1, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        h = self.encoder(torch.cat([self.cls.expand(len(x), -1, -1), t], 1))
        return self.head(h[:, 0])


def label(position: int, token: int) -> str:
    return "CLS" if position == 0 else f"patch {position - 1}"


@pytest.fixture(scope="module")
def token_store(tmp_path_factory):
    torch.manual_seed(0)
    model = PatchNet().eval()
    x, y = torch.randn(90, 1, 8, 8), torch.arange(90) % 3
    path = tmp_path_factory.mktemp("tok") / "s.zarr"
    adapter = TorchAdapter(model, pool=("cls", "tokens"))
    capture(adapter, (x, y), path, batch_size=32, keep_inputs=True, progress=False)
    capture(adapter, (x[:30], y[:30]), path, split="test", batch_size=32, keep_inputs=True,
            progress=False)
    store = open_store(path)
    analysis = SignatureAnalysis(n_clusters=3, only_correct=False, random_state=0,
                                 progress=False).fit(store, split="train.tokens")
    return store, analysis


def test_token_tables(token_store):
    store, analysis = token_store
    sigs = analysis.signatures(store, "test.tokens")
    assert sigs.n_samples == 30 * 5
    table = token_table(sigs, store, label=label)
    assert len(table) == 150 and table.columns[:5] == ["sample_index", "sample_row", "position",
                                                       "token", "label"]
    assert table.column("label")[:5] == ["CLS", "patch 0", "patch 1", "patch 2", "patch 3"]
    by_path = tokens_by_path(sigs, store, label=label)
    assert sum(by_path.column("count")) == 150
    assert all(1 <= n <= 30 for n in by_path.column("inputs"))
    by_token = paths_by_token(sigs, store, label=label)
    assert sorted(by_token.column("label")) == ["CLS"] + [f"patch {i}" for i in range(4)]
    assert set(by_token.column("count")) == {30}
    from nnsig_core.store import StoreError

    per_image = SignatureAnalysis(n_clusters=3, only_correct=False, progress=False).fit(
        store, "train").signatures(store, "test")  # the CLS rows: one per image
    with pytest.raises(StoreError, match="one row per sample.*'test.tokens'"):
        token_table(per_image, store)


def test_report_rows_list_their_tokens_and_exemplars_show_the_patch(token_store):
    store, analysis = token_store
    data = build_report_data(analysis, store, splits=("train.tokens", "test.tokens"),
                             token_label=label, token_grid=(2, 2, 1))
    entry = data["splits"]["test.tokens"]
    assert entry["level"] == "tokens" and entry["parent"] == "test"
    counted = {}
    for row in entry["rows"]:
        assert 1 <= len(row["tokens"]) <= 5
        assert sum(c for _, c in row["tokens"]) <= row["count"]
        for name, c in row["tokens"]:
            counted[name] = counted.get(name, 0) + c
    assert set(counted) <= {"CLS", "patch 0", "patch 1", "patch 2", "patch 3"}
    thumbs = data["thumbnails"]
    keys = [k for k in thumbs["keys"] if k.startswith("test.tokens/")]
    assert keys and thumbs["shape"] == [8, 8]
    # a token exemplar is its input's thumbnail with the token's patch lit
    rows = store.token_rows("test.tokens")
    parent = np.asarray(store.inputs("test")[:])
    sheet = decode_png(thumbs["png"])
    for i, key in enumerate(thumbs["keys"]):
        if not key.startswith("test.tokens/"):
            continue
        r = int(key.split("/")[1])
        expected = highlight_patch(parent[rows["sample_row"][r]], int(rows["position"][r]),
                                   (2, 2, 1))
        np.testing.assert_array_equal(sprite_cell(sheet, thumbs, i), expected)

def test_a_token_analysis_applies_to_token_splits_only(token_store):
    from nnsig_core.store import StoreError

    store, analysis = token_store
    with pytest.raises(StoreError, match="fitted on tokens.*Use split 'test.tokens'"):
        analysis.transform(store, "test")
    # Saved and reported by default: the token row spaces only, never the sentence-level splits.
    data = build_report_data(analysis, store, map_points=0)
    assert list(data["splits"]) == ["train.tokens", "test.tokens"]
    rw = open_store(store.location, mode="r+")
    analysis.save(rw, "tokens-only")
    saved = sorted(k for k, _ in rw.group("analysis/tokens-only/signatures").groups())
    assert saved == ["test.tokens", "train.tokens"]
    rw.delete("analysis/tokens-only")


def test_highlight_patch():
    img = np.full((4, 6), 200, dtype=np.uint8)
    lit = highlight_patch(img, 2, (2, 3, 1))  # patch 1: row 0, column 1
    assert (lit[:2, 2:4] == 200).all() and (lit[2:, :] == 60).all() and (lit[:, :2] == 60).all()
    assert (highlight_patch(img, 0, (2, 3, 1)) == 140).all()  # the class token: all dimmed


@pytest.mark.browser
def test_viewer_shows_the_tokens_column(token_store, tmp_path: Path):
    from nnsig_core.report.browser import find_chromium, launch_chromium

    chromium = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed")
        pytest.skip("playwright is not installed")
    if not Path(chromium).exists():
        if os.environ.get("CI"):
            pytest.fail(f"chromium not found at {chromium}")
        pytest.skip(f"chromium not found at {chromium}")
    store, analysis = token_store
    index = write_report(analysis, store, tmp_path / "tok", splits=("test.tokens",),
                         token_label=lambda p, t: "<b>CLS</b>" if p == 0 else f"patch {p - 1}")
    with sync_playwright() as p:
        browser = launch_chromium(p, executable_path=chromium)
        page = browser.new_page()
        page.goto(index.resolve().as_uri())
        page.wait_for_function("window.NNSIG_READY === true", timeout=30_000)
        headers = page.locator("#table thead th").all_inner_texts()
        assert any(h.strip().startswith("Tokens") for h in headers)
        cells = page.locator("#table tbody tr td code.tok").all_inner_texts()
        assert "<b>CLS</b>" in cells  # user data shown as text, never as HTML
        assert page.locator("#table tbody b").count() == 0
        assert "tokens" in page.locator("#table-note").inner_text()
        browser.close()
