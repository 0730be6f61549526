// Unit tests of the timeline's pure data logic (viewer/timelinemodel.js), run by
// `node --test tests/js/` (make test, CI). No npm dependency.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const T = require("../../viewer/timelinemodel.js");

function u16(values) {
  const b = Buffer.alloc(values.length * 2);
  values.forEach(function (v, i) { b.writeUInt16LE(v, 2 * i); });
  return b.toString("base64");
}

/** Two layers, 2 classes, 4 probe samples, 3 checkpoints. */
function makeTimeline() {
  const rows0 = [
    { input: 0, path: [0, 0], output: 1, count: 2 },   // samples 0, 1: wrong at first
    { input: 1, path: [1, 1], output: 1, count: 2 },   // samples 2, 3
  ];
  const rows1 = [
    { input: 0, path: [0, 0], output: 0, count: 1 },   // sample 0: fixed, same path
    { input: 0, path: [0, 2], output: 1, count: 1 },   // sample 1: still wrong, path changed at layer 1
    { input: 1, path: [1, 1], output: 1, count: 1 },   // sample 2
    { input: 1, path: [1, 1], output: 0, count: 1 },   // sample 3: broken
  ];
  const rows2 = [
    { input: 0, path: [0, 2], output: 0, count: 2 },
    { input: 1, path: [3, 1], output: 1, count: 2 },
  ];
  return {
    layers: ["fc1", "fc2"],
    n_tracks: [4, 3],
    n_samples: 4,
    sample_index: u16([10, 11, 12, 13]),
    separable_purity: 0.9,
    shown: 2,
    checkpoints: [
      { label: "epoch 0", step: 0, accuracy: 0.5, rows: rows0, row_of: u16([0, 0, 1, 1]),
        separable: [-1, 1], events: [[], []], scores: { quantiles: { correct: [0.1, 0.2, 0.3], misclassified: null } } },
      { label: "epoch 1", step: 10, accuracy: 0.5, rows: rows1, row_of: [0, 1, 2, 3],
        separable: [-1, 0], events: [[{ kind: "continued", count: 2 }],
                                     [{ kind: "split", from: [0], to: [0, 2] }, { kind: "continued", count: 2 }]] },
      { label: "epoch 2", step: 20, accuracy: 1.0, rows: rows2, row_of: u16([0, 0, 1, 1]),
        separable: [1, 0], events: [[{ kind: "new", from: [], to: [3] }, { kind: "end", from: [1], to: [] }],
                                    [{ kind: "merge", from: [0, 2], to: [2] }]] },
    ],
  };
}

test("decodeInts reads base64 uint16 and plain arrays", function () {
  assert.deepEqual(Array.from(T.decodeInts(u16([0, 1, 65535]))), [0, 1, 65535]);
  assert.deepEqual(Array.from(T.decodeInts([70000, 2])), [70000, 2]);
  assert.equal(T.decodeInts(null).length, 0);
});

test("prepare decodes every checkpoint's rows and refuses what is not a timeline", function () {
  const P = T.prepare(makeTimeline());
  assert.equal(P.n, 4);
  assert.equal(P.nLayers, 2);
  assert.deepEqual(Array.from(P.checkpoints[1].rowOf), [0, 1, 2, 3]);
  assert.deepEqual(Array.from(P.sampleIndex), [10, 11, 12, 13]);
  assert.equal(T.prepare(null), null);
  assert.equal(T.prepare({ checkpoints: [] }), null);
  assert.equal(T.isTimeline({ checkpoints: [{}], layers: [] }), true);
});

test("changes between two checkpoints: outcome first, then path only", function () {
  const P = T.prepare(makeTimeline());
  const ch = T.changes(P, 0, 1);
  assert.equal(ch.fixed, 1);
  assert.equal(ch.broken, 1);
  assert.equal(ch.otherOutput, 0);
  assert.equal(ch.path, 1);
  assert.equal(ch.pathOnly, 1);
  assert.deepEqual(ch.samples.map(function (s) { return [s.sample, s.kind]; }), [[3, "broken"], [0, "fixed"], [1, "path"]]);
  const s1 = ch.samples[2];
  assert.equal(s1.index, 11);
  assert.equal(s1.firstLayer, 1);
  assert.deepEqual(s1.paths, [[0, 0], [0, 2]]);
  // in the other direction, fixed and broken swap
  const back = T.changes(P, 1, 0);
  assert.equal(back.fixed, 1);
  assert.equal(back.broken, 1);
  // a checkpoint against itself changes nothing
  assert.equal(T.changes(P, 1, 1).samples.length, 0);
  // first to last: samples 2 and 3 moved at layer 0 (track 1 -> 3), sample 1 at layer 1
  const far = T.changes(P, 0, 2);
  assert.equal(far.fixed, 2);
  assert.equal(far.path, 4);
  assert.deepEqual(far.samples.map(function (s) { return s.firstLayer; }), [1, 1, 0, 0]);
});

test("series: accuracy, score quantiles, separability and the first separable checkpoint", function () {
  const P = T.prepare(makeTimeline());
  assert.deepEqual(T.accuracySeries(P), [0.5, 0.5, 1.0]);
  assert.deepEqual(T.scoreSeries(P, "correct"), [[0.1, 0.2, 0.3], null, null]);
  assert.deepEqual(T.scoreSeries(P, "misclassified"), [null, null, null]);
  assert.deepEqual(T.separability(P, 3), [[-1, -1, 1], [1, 0, 0], [null, null, null]]);
  assert.deepEqual(T.firstSeparable(P, 0), { checkpoint: 2, layer: 1 });
  assert.deepEqual(T.firstSeparable(P, 1), { checkpoint: 0, layer: 1 });
  assert.equal(T.firstSeparable(P, 2), null);
});

test("cluster events in words, per layer", function () {
  const P = T.prepare(makeTimeline());
  assert.deepEqual(T.eventLines(P, 0), { lines: [], continued: 0 });
  const e1 = T.eventLines(P, 1);
  assert.equal(e1.continued, 4);
  assert.deepEqual(e1.lines, [{ layer: 1, kind: "split", text: "c0 split into c0 + c2" }]);
  const e2 = T.eventLines(P, 2);
  assert.deepEqual(e2.lines.map(function (l) { return l.text; }), ["c3 appeared", "c1 ended", "c0 + c2 merged into c2"]);
});

test("track colours are stable and differ from one track to the next", function () {
  assert.equal(T.trackColor(3), T.trackColor(3));
  const seen = new Set();
  for (let k = 0; k < 12; k++) seen.add(T.trackColor(k));
  assert.equal(seen.size, 12);
});
