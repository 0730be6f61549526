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
        stats = page.locator("#stats").inner_text()
        assert "test.tokens" in stats  # the split's own name, not capitalised
        assert "model, on this split's tokens" in stats  # a rate over tokens, said so
        page.locator('#sankey-svg .node[data-node="1:0"] .hit').hover()
        assert "tokens shown" in page.locator("#tooltip").text_content()
        browser.close()


# --------------------------------------------------------------------------- the token map


def test_token_map_points_say_which_token_of_which_input(token_store):
    """Each map point of a token row space: its input's row and index, its position, its
    token id (-1: the inputs had no ids), and its name when the report has a token_label."""
    store, analysis = token_store
    data = build_report_data(analysis, store, splits=("test.tokens",), token_label=label)
    m = data["splits"]["test.tokens"]["map"]
    tok = m["tokens"]
    rows = store.token_rows("test.tokens")
    pos = np.asarray(m["positions"])
    assert tok["sample_row"] == rows["sample_row"][pos].tolist()
    assert tok["position"] == rows["position"][pos].tolist()
    assert tok["token"] == [-1] * pos.size  # images: no token ids
    assert tok["label"] == [label(p, -1) for p in tok["position"]]
    assert m["sample_index"] == store.sample_index("test")[tok["sample_row"]].tolist()
    unnamed = build_report_data(analysis, store, splits=("test.tokens",))
    assert "label" not in unnamed["splits"]["test.tokens"]["map"]["tokens"]


def test_token_rows_at_reads_only_the_blocks_it_needs(token_store, monkeypatch):
    from nnsig_core.report import token_report

    store, _ = token_store
    every = store.token_rows("train.tokens")
    monkeypatch.setattr(token_report, "READ_ROWS", 64)
    read = []
    real = store.token_rows
    monkeypatch.setattr(store, "token_rows", lambda s, a=0, b=None: read.append((a, b)) or
                        real(s, a, b))
    rows = np.array([400, 3, 70, 5, 401])
    got = token_report.token_rows_at(store, "train.tokens", rows)
    for k in ("sample_row", "position", "token"):
        np.testing.assert_array_equal(got[k], every[k][rows])
    assert sorted(read) == [(0, 64), (64, 128), (384, 448)]


VOCAB = [f"w{i}" for i in range(30)]


class TextNet(nn.Module):
    """Embedding, one encoder layer, mean over the real tokens, head: input_ids, attention_mask."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        h = self.block(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        w = attention_mask.unsqueeze(-1).float()
        return self.head((h * w).sum(1) / w.sum(1))


@pytest.fixture(scope="module")
def text_store(tmp_path_factory):
    """A text model's token row space, with the token ids of its inputs."""
    torch.manual_seed(0)
    ids = torch.randint(1, 30, (60, 6))
    mask = torch.ones(60, 6, dtype=torch.long)
    mask[::4, 4:] = 0
    labels = torch.arange(60) % 3

    def batches():
        for lo in range(0, 60, 16):
            yield {"input_ids": ids[lo:lo + 16], "attention_mask": mask[lo:lo + 16],
                   "labels": labels[lo:lo + 16]}

    adapter = TorchAdapter(TextNet().eval(), layers="block", pool=("mean", "tokens"))
    store = capture(adapter, batches(), tmp_path_factory.mktemp("text") / "t.zarr",
                    progress=False)
    analysis = SignatureAnalysis(n_clusters=3, only_correct=False, random_state=0,
                                 progress=False).fit(store, split="train.tokens")
    return store, analysis, ids.numpy()


def test_token_map_of_a_text_model_keeps_the_token_ids(text_store):
    store, analysis, ids = text_store
    data = build_report_data(analysis, store, splits=("train.tokens",))
    tok = data["splits"]["train.tokens"]["map"]["tokens"]
    assert tok["token"] == ids[tok["sample_row"], tok["position"]].tolist()
    assert min(tok["token"]) >= 1


@pytest.mark.browser
def test_token_map_tooltip_names_the_token_its_position_and_input(text_store, tmp_path: Path):
    from nnsig_core.report.browser import find_chromium, launch_chromium

    try:
        from test_viewer import canvas_point, clear_point, read_data
    except ImportError:
        from tests.test_viewer import canvas_point, clear_point, read_data
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
    store, analysis, _ = text_store
    named = write_report(analysis, store, tmp_path / "named", splits=("train.tokens",),
                         token_label=lambda p, t: VOCAB[t]).parent
    unnamed = write_report(analysis, store, tmp_path / "unnamed", splits=("train.tokens",)).parent
    with sync_playwright() as p:
        browser = launch_chromium(p, executable_path=chromium)
        for report in (named, unnamed):
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.goto((report / "index.html").resolve().as_uri())
            page.wait_for_function("window.NNSIG_READY === true", timeout=30_000)
            m = read_data(report)["splits"]["train.tokens"]["map"]
            pt = clear_point(page, lambda q: not q["edge"])
            page.mouse.move(*canvas_point(page, pt))
            text = page.locator("#tooltip").text_content()
            k = m["positions"].index(pt["pos"])
            t = m["tokens"]
            tok, position, row = t["token"][k], t["position"][k], t["sample_row"][k]
            where = f"position {position} of input #{m['sample_index'][k]}"
            if report == named:
                assert f"Token \u201c{VOCAB[tok]}\u201d (id {tok}) \u00b7 {where}" in text
                assert "not in the report" not in text
            else:
                assert f"Token id {tok} \u00b7 {where}" in text
                assert "the token's text is not in the report" in text
            assert f"is row {row} of split train" in text
            assert f"train.tokens row {pt['pos']}" in text
            assert errors == []
            page.close()
        browser.close()


def test_cli_analyze_summarises_the_splits_of_its_row_level(token_store, capsys,
                                                            tmp_path_factory):
    """`nnsig analyze` on a store with token splits: a sample-level and a token-level fit
    each summarise the splits at their own level (it summarised every split and failed)."""
    import json

    from nnsig_core.analysis import format_summary
    from nnsig_core.cli.main import main

    store, _ = token_store
    for fit_split, expected in (("train", ["test", "train"]),
                                ("train.tokens", ["test.tokens", "train.tokens"])):
        name = "cli-" + fit_split.replace(".", "-")
        status = main(["analyze", str(store.location), "--fit-split", fit_split, "--clusters",
                       "3", "--all-samples", "--name", name, "--json"])
        assert status == 0
        summaries = json.loads(capsys.readouterr().out)
        assert sorted(summaries) == expected
        text = format_summary(summaries[expected[0]])
        if fit_split == "train.tokens":  # rows and the accuracy over them are said to be tokens
            assert "model accuracy over token rows" in text and " token rows of classes" in text
        else:
            assert " samples, model accuracy " in text
        if fit_split == "train.tokens":  # its export says which token of which input
            out = tmp_path_factory.mktemp("export")
            assert main(["export", str(store.location), "--analysis", name, "--out", str(out),
                         "--split", "test.tokens"]) == 0
            with open(out / "signatures_test.tokens.csv", encoding="utf-8") as f:
                head = f.readline().strip().split(",")
                first = f.readline().strip().split(",")
            assert head[:5] == ["row", "sample_index", "sample_row", "position", "token"]
            rows = store.token_rows("test.tokens")
            assert [int(v) for v in first[2:5]] == [int(rows[k][0]) for k in
                                                    ("sample_row", "position", "token")]
        open_store(store.location, mode="r+").delete(f"analysis/{name}")


def test_a_token_calibration_holds_out_whole_inputs(token_store, tmp_path: Path):
    """The conformal threshold of token rows is calibrated on whole held-out inputs: no token
    of a held-out input tunes the combination (tokens of one input are not independent), and
    the report's promise speaks of token rows."""
    from nnsig_core.diagnostics import SignatureScorer

    store, analysis = token_store
    scorer = SignatureScorer(random_state=0).fit(analysis, store).calibrate(store, "test.tokens")
    inputs = store.token_rows("test.tokens")["sample_row"]
    correct = store.labels("test.tokens") == store.predictions("test.tokens")
    ok, held, tuned = scorer._conformal_rows(correct, inputs)
    combined = scorer.score(store, "test.tokens")["combined"]
    np.testing.assert_allclose(scorer.conformal_scores_, np.sort(combined[held]))  # those rows
    assert not set(inputs[held]) & set(inputs[tuned])
    assert not (held & ok).any() and ((held | ok) == correct).all()
    assert set(inputs[held]) | set(inputs[ok]) == set(inputs[correct])
    from nnsig_core.report.run_scores import conformal_report_threshold

    promise = conformal_report_threshold({"split": "test.tokens", "scores": np.arange(40.0)},
                                         level=analysis.row_level(store))["promise"]
    assert "correctly classified token rows" in promise and "whole inputs held out" in promise


def test_a_token_grid_that_does_not_fit_the_tokens_is_refused(token_store):
    """A grid of another number of tokens than the inputs have would highlight no patch (or
    the wrong one) without a word: refused, naming the grid that fits; and refused for a
    sample-level analysis, which has no tokens."""
    store, analysis = token_store
    with pytest.raises(ValueError, match=r"token_grid=\(3, 3, 1\) describes 10 tokens.*have 5 "
                       r"\(positions 0 to 4\).*e\.g\. token_grid=\(2, 2, 1\)"):
        build_report_data(analysis, store, map_points=0, token_grid=(3, 3, 1))
    data = build_report_data(analysis, store, map_points=0, token_grid=(2, 2, 1))
    title = data["title"]  # not the sample report's title
    assert title.startswith("PatchNet (s.zarr") and title.endswith(", tokens)")
    samples = SignatureAnalysis(n_clusters=3, only_correct=False, progress=False).fit(store)
    with pytest.raises(ValueError, match="one row per sample: leave token_grid out"):
        build_report_data(samples, store, map_points=0, token_grid=(2, 2, 1))


def test_a_comparison_of_a_sample_and_a_token_analysis_says_so(token_store):
    """A comparison of analyses of two row levels names the levels (it failed with the single
    analysis's message about splits of the other level)."""
    store, analysis = token_store
    samples = SignatureAnalysis(n_clusters=3, only_correct=False, progress=False).fit(store)
    with pytest.raises(ValueError, match=r"compares runs of one row level.*fitted on tokens "
                       r"and .* on samples: write one report for each level"):
        build_report_data([samples, analysis], store, map_points=0)
