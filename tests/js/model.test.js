// Unit tests of the viewer's pure data modules (viewer/model.js, viewer/figures.js), run by
// `node --test tests/js/` (make test, CI). No npm dependency: node's own test runner and assert.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const M = require("../../viewer/model.js");
const F = require("../../viewer/figures.js");

/** A small run: 3 classes, 2 layers; split "train" labelled, "wild" without labels, "mixed" partly. */
function makeRun(extra) {
  const rows = [
    { input: 0, path: [0, 1], output: 0, count: 50, score: 0.1 },
    { input: 0, path: [0, 2], output: 1, count: 5, score: 0.8 },   // misclassified, leaves typical at layer 1
    { input: 1, path: [1, 1], output: 1, count: 40, score: 0.2 },
    { input: 1, path: [2, 2], output: 0, count: 4, score: 0.9 },   // misclassified at layer 0
    { input: 2, path: [2, 2], output: 2, count: 30, score: null }, // class 2 unseen in training
    { input: 2, path: [2, 2], output: 1, count: 6, score: 0.7 },
  ];
  return Object.assign({
    format_version: 2,
    label: "run a",
    classes: ["zero", "one", "two"],
    train_classes: [0, 1],
    layers: ["fc1", "fc2"],
    typical: [[[0], [1], []], [[1], [1], []]],
    separable_purity: 0.9,
    threshold: { value: 0.75, split: "train", rate: 0.05 },
    splits: {
      train: { n_samples: 135, has_labels: true, rows: rows, clusters: [], class_purity: [[0.5, 0.95, null], [0.92, 0.97, null]] },
      wild: {
        n_samples: 20, has_labels: false,
        rows: [{ input: -1, path: [0, 1], output: 0, count: 12 }, { input: -1, path: [1, 1], output: 1, count: 8 }],
        clusters: [],
      },
      mixed: {
        n_samples: 30, has_labels: true,
        rows: [{ input: -1, path: [0, 1], output: 0, count: 10 }, { input: 0, path: [0, 1], output: 0, count: 15 },
               { input: 0, path: [0, 1], output: 1, count: 5 }],
        clusters: [],
      },
    },
  }, extra || {});
}

function prep(split, extra) {
  const D = makeRun(extra);
  const R = M.prepareRun(D, 0, D);
  return { D: D, R: R, P: M.prepareSplit(R, split) };
}

function all(P) { return M.filterRows(P, M.defaultFilters(), null, 2); }

test("checkData: missing data is fatal, a newer format warns, runs are read", () => {
  assert.ok(M.checkData(null).fatal.includes("No report data"));
  assert.ok(M.checkData({ splits: {} }).fatal.includes("no split with rows"));
  assert.deepEqual(M.checkData(makeRun()), {});
  assert.ok(M.checkData(makeRun({ format_version: 3 })).warning.includes("newer than this viewer (2)"));
  const cmp = { format_version: 2, classes: ["a"], runs: [makeRun(), makeRun({ label: "b" })] };
  assert.deepEqual(M.checkData(cmp), {});
  assert.equal(M.runsOf(cmp).length, 2);
  assert.equal(M.runsOf(makeRun()).length, 1);
  assert.ok(M.checkData({ runs: [makeRun(), null] }).fatal);
});

test("prepareSplit: an unlabelled row is neither misclassified nor unseen", () => {
  const { P, R } = prep("wild");
  assert.equal(P.hasLabels, false);
  assert.equal(P.nUnlabelled, 20);
  for (const r of P.rows) {
    assert.equal(r.input, M.UNLABELLED);
    assert.equal(r.labelled, false);
    assert.equal(r.mis, false);
    assert.equal(r.unseen, false);
    assert.equal(r.div, null);
  }
  assert.equal(M.className(R, -1), "unlabelled");
  const mixed = prep("mixed").P;
  assert.equal(mixed.hasLabels, true);
  assert.deepEqual([mixed.nLabelled, mixed.nUnlabelled], [20, 10]);
  assert.deepEqual(mixed.rows.map((r) => r.mis), [false, false, true]);
});

test("prepareSplit: misclassification focus (div) and unseen classes", () => {
  const { P } = prep("train");
  assert.deepEqual(P.rows.map((r) => r.div), [null, 1, null, 0, null, null]);
  assert.deepEqual(P.rows.map((r) => r.unseen), [false, false, false, false, true, true]);
  assert.equal(P.total, 135);
});

test("filters: 'all classes' is null, -1 selects the unlabelled rows, outcomes need labels", () => {
  const P = prep("mixed").P;
  const f = M.defaultFilters();
  assert.equal(f.input, null);
  assert.equal(P.rows.filter((r) => M.passes(r, f)).length, 3);
  assert.deepEqual(P.rows.filter((r) => M.passes(r, Object.assign({}, f, { input: -1 }))).map((r) => r.i), [0]);
  assert.deepEqual(P.rows.filter((r) => M.passes(r, Object.assign({}, f, { input: 0 }))).map((r) => r.i), [1, 2]);
  assert.deepEqual(P.rows.filter((r) => M.passes(r, Object.assign({}, f, { outcome: "correct" }))).map((r) => r.i), [1]);
  assert.deepEqual(P.rows.filter((r) => M.passes(r, Object.assign({}, f, { outcome: "misclassified" }))).map((r) => r.i), [2]);
  assert.deepEqual(P.rows.filter((r) => M.passes(r, Object.assign({}, f, { seen: "seen" }))).map((r) => r.i), [1, 2]);
  const T = prep("train").P;
  assert.deepEqual(T.rows.filter((r) => M.passes(r, Object.assign({}, f, { outcome: "div:1" }))).map((r) => r.i), [1]);
  assert.deepEqual(T.rows.filter((r) => M.passes(r, Object.assign({}, f, { seen: "unseen" }))).map((r) => r.i), [4, 5]);
});

test("filterRows: node focus and the pass mask", () => {
  const P = prep("train").P;
  const fr = M.filterRows(P, M.defaultFilters(), "2:2", 2); // layer fc2, cluster 2
  assert.deepEqual(fr.rows.map((r) => r.i), [1, 3, 4, 5]);
  assert.equal(fr.total, 45);
  assert.deepEqual(Array.from(fr.pass), [0, 1, 0, 1, 1, 1]);
  const out = M.filterRows(P, M.defaultFilters(), "3:1", 2); // output class 1
  assert.deepEqual(out.rows.map((r) => r.i), [1, 2, 5]);
});

test("registry: the four views, each one entry with columns, key and finish", () => {
  assert.deepEqual(M.VIEWS.map((v) => v.id), ["overview", "input", "output", "signature"]);
  for (const v of M.VIEWS) {
    assert.equal(typeof v.key, "function");
    assert.ok(v.label && v.short);
    for (const c of v.columns) assert.ok(M.COLUMNS[c], c);
  }
  assert.equal(M.viewById("nope").id, "overview");
  assert.throws(() => M.registerView({ id: "x", label: "X", columns: ["count"] }), /needs key/);
  assert.throws(() => M.registerView({ id: "x", label: "X", columns: ["nope"], key: () => "" }), /unknown column/);
  assert.throws(() => M.registerView({ id: "overview", label: "X", columns: ["count"], key: () => "" }), /exists/);
});

test("registry: a new view is one registerView call", () => {
  const v = M.registerView({
    id: "test-by-first-cluster", label: "Grouped by the first layer's cluster", columns: ["sig", "count", "acc"],
    key: (r) => "c" + r.path[0], finish: (g) => { g.path = g.path.slice(0, 1); },
  });
  assert.equal(M.viewById("test-by-first-cluster").label, v.label);
  const P = prep("train").P;
  const groups = M.groupRows(all(P).rows, M.viewById("test-by-first-cluster"));
  assert.deepEqual(groups.map((g) => [g.key, g.count, g.path.length]), [["c0", 55, 1], ["c1", 40, 1], ["c2", 40, 1]]);
  M.VIEWS.splice(M.VIEWS.findIndex((x) => x.id === v.id), 1);
});

test("groupRows: sums, correct and labelled counts, classes, scores, div", () => {
  const P = prep("train").P;
  const rows = all(P).rows;
  for (const v of M.VIEWS) {
    const groups = M.groupRows(rows, v);
    assert.equal(groups.reduce((s, g) => s + g.count, 0), 135, v.id);
    assert.equal(new Set(groups.map((g) => g.key)).size, groups.length, v.id);
  }
  assert.equal(M.groupRows(rows, M.viewById("overview")).length, 6);
  const sig = M.groupRows(rows, M.viewById("signature"));
  const g22 = sig.find((g) => g.key === "s2,2");
  assert.deepEqual([g22.count, g22.correct, g22.labelled], [40, 30, 40]);
  assert.equal(g22.input, 2);           // the most frequent input class
  assert.equal(g22.div, null);          // finish: no div in the signature view
  assert.ok(Math.abs(g22.score - (4 * 0.9 + 6 * 0.7) / 10) < 1e-12); // rows without a score do not count
  assert.deepEqual(Array.from(g22.inputs.entries()).sort(), [[1, 4], [2, 36]]);
  const byInput = M.groupRows(rows, M.viewById("input"));
  const g = byInput.find((x) => x.key === "i0|0,2");
  assert.equal(g.mis, true);
  assert.equal(g.div, 1);
  assert.equal(g.inputs, null);
  assert.equal(g.acc, 0);
});

test("groupRows: a group of unlabelled samples is not misclassified and has no accuracy", () => {
  const P = prep("mixed").P;
  const groups = M.groupRows(all(P).rows, M.viewById("signature"));
  assert.equal(groups.length, 1);
  assert.deepEqual([groups[0].count, groups[0].labelled, groups[0].correct], [30, 20, 15]);
  assert.equal(groups[0].acc, 0.75);
  const wild = prep("wild").P;
  for (const g of M.groupRows(all(wild).rows, M.viewById("overview"))) {
    assert.equal(g.mis, false);
    assert.equal(g.acc, null);
    assert.equal(g.input, -1);
  }
});

test("views and columns on a split without labels or scores", () => {
  const wild = prep("wild").P;
  assert.equal(M.viewAllowed(M.viewById("input"), wild), false);
  assert.equal(M.allowedView("input", wild).id, "overview");
  assert.equal(M.allowedView("signature", wild).id, "signature");
  assert.deepEqual(M.viewColumns(M.viewById("overview"), wild), ["sig", "output", "count", "share"]);
  const train = prep("train").P;
  assert.deepEqual(M.viewColumns(M.viewById("overview"), train), ["input", "sig", "output", "count", "share", "score", "div"]);
});

test("sorting: by a column, nulls last, and the fallback when a view lacks the column", () => {
  const P = prep("train").P;
  const groups = M.groupRows(all(P).rows, M.viewById("overview"));
  M.sortGroups(groups, { key: "score", dir: -1 }, 2);
  assert.deepEqual(groups.map((g) => (g.score == null ? null : +g.score.toFixed(9))), [0.9, 0.8, 0.7, 0.2, 0.1, null]);
  M.sortGroups(groups, { key: "count", dir: 1 }, 2);
  assert.deepEqual(groups.map((g) => g.count), [4, 5, 6, 30, 40, 50]);
  M.sortGroups(groups, { key: "sig", dir: 1 }, 2);
  assert.deepEqual(groups.map((g) => g.path.join("")), ["01", "02", "11", "22", "22", "22"]);
  assert.deepEqual(M.validSort(M.viewById("signature"), P, { key: "div", dir: 1 }), M.defaultSort());
  assert.deepEqual(M.validSort(M.viewById("input"), P, { key: "div", dir: 1 }), { key: "div", dir: 1 });
  assert.deepEqual(M.validSort(M.viewById("overview"), prep("wild").P, { key: "score", dir: -1 }), M.defaultSort());
});

test("thresholds: the report's default, else 5% of this split's correct samples; exact rates", () => {
  const sc = {
    bins: [0, 0.25, 0.5, 0.75, 1],
    counts: { correct: [60, 30, 6, 4], misclassified: [1, 2, 3, 4], unlabelled: [5, 0, 0, 5] },
    at_threshold: { flagged: { correct: 5, misclassified: 6, unlabelled: 5 }, total: { correct: 100, misclassified: 10, unlabelled: 10 } },
  };
  assert.equal(F.initialThreshold(sc, 0.7), 0.7);
  assert.equal(F.initialThreshold(sc, null), 0.75); // 4% of the correct samples at or above 0.75
  assert.deepEqual(F.thresholdCandidates(sc, 0.7), [0, 0.25, 0.5, 0.7, 0.75, 1]);
  assert.deepEqual(F.thresholdCandidates(sc, 0.5), [0, 0.25, 0.5, 0.75, 1]);
  const atDefault = F.flaggedAt(sc, 0.7, 0.7);
  assert.deepEqual(atDefault.correct, { flagged: 5, total: 100 });
  assert.deepEqual(atDefault.unlabelled, { flagged: 5, total: 10 });
  const atEdge = F.flaggedAt(sc, 0.5, 0.7);
  assert.deepEqual(atEdge.correct, { flagged: 10, total: 100 });
  assert.deepEqual(atEdge.misclassified, { flagged: 7, total: 10 });
  assert.equal(atEdge.unseen, undefined);
});

test("separableLayer: first layer reaching the purity, -1 never, null unknown", () => {
  const cp = [[0.5, 0.95, null], [0.92, 0.97, null]];
  assert.equal(F.separableLayer(cp, 0, 0.9), 1);
  assert.equal(F.separableLayer(cp, 1, 0.9), 0);
  assert.equal(F.separableLayer(cp, 0, 0.95), -1);
  assert.equal(F.separableLayer(cp, 2, 0.9), null);
  assert.equal(F.separableLayer(undefined, 0, 0.9), null);
});

function u16b64(values) {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeUInt16LE(v, 2 * i));
  return b.toString("base64");
}

test("the layer map: uint16 decoding, data units, points on the border, equal-scale box", () => {
  assert.deepEqual(Array.from(F.decodeU16(u16b64([0, 1, 65535, 258]))), [0, 1, 65535, 258]);
  const { P } = prep("train", {});
  P.map = {
    rows: [0, 1, 3], positions: [4, 9, 17], scores: [0.1, 0.8, null],
    layers: [{ xy: u16b64([0, 32768, 65535, 65535, 13107, 26214]), bounds: [-1, 1, 0, 10], centroids: [[32768, 32768]] }],
  };
  const L = F.mapLayer(P, 0);
  assert.equal(L.n, 3);
  assert.ok(Math.abs(L.x[0] + 1) < 1e-9 && Math.abs(L.y[0] - 5) < 1e-3);
  assert.ok(Math.abs(L.x[2] + 0.6) < 1e-4 && Math.abs(L.y[2] - 4) < 1e-3);
  assert.deepEqual(Array.from(L.edge), [1, 1, 0]);
  assert.equal(L.centroids.length, 1);
  assert.equal(F.mapLayer(P, 0), L); // decoded once
  assert.equal(F.mapLayer(P, 5), null);
  const box = F.fitBox([0, 2, 0, 1], 220, 120, 10); // data 2:1 in a 200x100 area: scale 100
  assert.equal(box.x(0), 10);
  assert.equal(box.x(2), 210);
  assert.equal(box.y(0), 110);
  assert.equal(box.y(1), 10);
  assert.equal(F.pointKind(P, 0, 0.75), "ok");
  assert.equal(F.pointKind(P, 1, 0.75), "mis");
  P.map.rows = [0, 0, 3];
  assert.equal(F.pointKind(P, 1, 0.75), "flagged");
  assert.equal(F.pointKind(P, 1, null), "ok");
});

test("nearestPoint: within a distance, among accepted points", () => {
  const xs = [0, 10, 20], ys = [0, 0, 0];
  assert.equal(F.nearestPoint(xs, ys, 9, 1, 5), 1);
  assert.equal(F.nearestPoint(xs, ys, 15, 9, 5), -1);
  assert.equal(F.nearestPoint(xs, ys, 9, 1, 15, (i) => i !== 1), 0);
});

test("comparison: changed samples pass when their row passes in one run; rows to group keys", () => {
  const cmp = { changed: { samples: [{ position: 3, rows: [1, 2] }, { position: 8, rows: [0, 0] }] } };
  const pass = [new Uint8Array([0, 1, 0]), new Uint8Array([0, 0, 0])];
  assert.deepEqual(F.visibleChanges(cmp, pass).map((s) => s.position), [3]);
  assert.deepEqual(F.visibleChanges({}, pass), []);
  const P = prep("train").P;
  assert.equal(M.groupKeyOfRow(P, 3, M.viewById("overview")), "r3");
  assert.equal(M.groupKeyOfRow(P, 3, M.viewById("input")), "i1|2,2");
  assert.equal(M.groupKeyOfRow(P, 99, M.viewById("input")), null);
});

test("colourClass: input class, grey slot for unlabelled rows, prediction without labels", () => {
  const t = prep("mixed");
  assert.deepEqual(t.P.rows.map((r) => M.colourClass(t.R, t.P, r)), [3, 0, 0]);
  const w = prep("wild");
  assert.deepEqual(w.P.rows.map((r) => M.colourClass(w.R, w.P, r)), [0, 1]);
});

test("token row spaces: a Tokens column after the signature, token counts summed per group", () => {
  const D = makeRun();
  D.splits["train.tokens"] = {
    n_samples: 9, has_labels: true, level: "tokens", parent: "train", clusters: [],
    rows: [
      { input: 0, path: [0, 1], output: 0, count: 5, tokens: [["CLS", 1], ["pos 3", 4]] },
      { input: 1, path: [0, 1], output: 1, count: 4, tokens: [["pos 3", 2], ["pos 7", 2]] },
    ],
  };
  const R = M.prepareRun(D, 0, D);
  const P = M.prepareSplit(R, "train.tokens");
  assert.equal(P.hasTokens, true);
  assert.equal(prep("train").P.hasTokens, false);
  const cols = M.viewColumns(M.viewById("signature"), P);
  assert.equal(cols[cols.indexOf("sig") + 1], "tokens");
  assert.ok(!M.viewColumns(M.viewById("signature"), prep("train").P).includes("tokens"));
  const groups = M.groupRows(all(P).rows, M.viewById("signature"));
  assert.equal(groups.length, 1);
  assert.deepEqual(Array.from(groups[0].tokens.entries()).sort(), [["CLS", 1], ["pos 3", 6], ["pos 7", 2]]);
});
