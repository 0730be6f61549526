// The layer map's pure logic (viewer/figures.js): points beyond the map's extent (which
// sides, the outward direction, how many) and what a token map point's tooltip says.
// Run by `node --test tests/js/`; no npm dependency.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const F = require("../../viewer/figures.js");

function u16b64(values) {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeUInt16LE(v, 2 * i));
  return b.toString("base64");
}

function mapOf(xy, extra) {
  const n = xy.length / 2;
  return {
    map: Object.assign({
      rows: new Array(n).fill(0), positions: Array.from({ length: n }, (_, i) => i),
      layers: [{ xy: u16b64(xy), bounds: [0, 1, 0, 1], centroids: [] }],
    }, extra || {}),
    mapCache: [],
  };
}

test("points beyond the extent: the sides they are beyond, counted, and which way is out", () => {
  const P = mapOf([0, 30000, 65535, 30000, 30000, 0, 30000, 65535, 65535, 0, 20000, 20000]);
  const L = F.mapLayer(P, 0);
  assert.deepEqual(Array.from(L.side), [F.EDGE_LEFT, F.EDGE_RIGHT, F.EDGE_BOTTOM, F.EDGE_TOP,
    F.EDGE_RIGHT | F.EDGE_BOTTOM, 0]);
  assert.deepEqual(Array.from(L.edge), [1, 1, 1, 1, 1, 0]);
  assert.equal(L.nEdge, 5);
  // On the screen y grows downwards: beyond the bottom of the data is further down.
  assert.deepEqual(F.edgeDirection(F.EDGE_LEFT), [-1, 0]);
  assert.deepEqual(F.edgeDirection(F.EDGE_RIGHT), [1, 0]);
  assert.deepEqual(F.edgeDirection(F.EDGE_BOTTOM), [0, 1]);
  assert.deepEqual(F.edgeDirection(F.EDGE_TOP), [0, -1]);
  const d = F.edgeDirection(F.EDGE_RIGHT | F.EDGE_BOTTOM);
  assert.ok(Math.abs(d[0] - Math.SQRT1_2) < 1e-12 && Math.abs(d[1] - Math.SQRT1_2) < 1e-12);
  assert.equal(F.edgeDirection(0), null);
  assert.equal(F.mapLayer(mapOf([1, 2, 65534, 3]), 0).nEdge, 0);
});

test("a token map point: its token, position and input; what the report does not know", () => {
  const tokens = { sample_row: [4, 4, 9], position: [0, 3, 2], token: [101, 1996, -1] };
  const P = mapOf([1, 1, 2, 2, 3, 3], { sample_index: [40, 40, 90], tokens: tokens });
  assert.equal(F.tokenOf(mapOf([1, 1]), 0), null); // a map of samples
  const t = F.tokenOf(P, 1);
  assert.deepEqual(t, { position: 3, sampleRow: 4, sampleIndex: 40, token: 1996, label: null });
  let w = F.tokenWords(t, "test");
  assert.equal(w.title, "Token id 1996 \u00b7 position 3 of input #40");
  assert.equal(w.input, "input #40 is row 4 of split test");
  assert.match(w.note, /text is not in the report.*token ids.*token_label/);
  // no token id stored (inputs without input_ids): only the position
  w = F.tokenWords(F.tokenOf(P, 2), "test");
  assert.equal(w.title, "Token \u00b7 position 2 of input #90");
  assert.match(w.note, /no token id stored/);
  // named by the report's token_label
  P.map.tokens.label = ["[CLS]", "the", "<b>x</b>"];
  w = F.tokenWords(F.tokenOf(P, 1), "test");
  assert.equal(w.title, "Token \u201cthe\u201d (id 1996) \u00b7 position 3 of input #40");
  assert.equal(w.note, "");
  assert.equal(F.tokenWords(F.tokenOf(P, 2), "test").title, "Token \u201c<b>x</b>\u201d \u00b7 position 2 of input #90");
});
