/* nnsig report viewer: figures computed from the prepared data (pure: no DOM, no network).
 *
 * Score thresholds and the rates they give, the layer where a class becomes
 * separable, the layer map's coordinates (decoding, fitting them to a box,
 * finding the point under the mouse) and the changed samples of a comparison.
 * window.NNSIG.figures in the page, module.exports under `node --test`
 * (tests/js/model.test.js).
 */
(function (root, factory) {
  "use strict";
  const F = factory();
  if (typeof module === "object" && module.exports) module.exports = F;
  else { root.NNSIG = root.NNSIG || {}; root.NNSIG.figures = F; }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  // ------------------------------------------------------------------ scores & thresholds

  const SCORE_GROUPS = ["correct", "misclassified", "unseen", "unlabelled"];

  function sum(a, from) { let s = 0; for (let i = from || 0; i < a.length; i++) s += a[i] || 0; return s; }

  /** The slider's thresholds: every bin edge, plus the report's default threshold. */
  function thresholdCandidates(sc, defaultValue) {
    const vals = sc.bins.slice();
    if (defaultValue != null && isFinite(defaultValue) && vals.indexOf(defaultValue) < 0) vals.push(Number(defaultValue));
    vals.sort(function (a, b) { return a - b; });
    return vals;
  }

  /**
   * The starting threshold of a split's histogram: the report's default (chosen on the
   * validation or fit split) when it has one, else the lowest bin edge flagging at
   * most 5% of this split's correct samples.
   */
  function initialThreshold(sc, defaultValue) {
    if (defaultValue != null && isFinite(defaultValue)) return Number(defaultValue);
    const nb = sc.bins.length - 1;
    const corr = sc.counts.correct;
    let t = Math.floor(nb / 2);
    if (Array.isArray(corr) && sum(corr) > 0) {
      const tot = sum(corr);
      for (t = 0; t < nb && sum(corr, t) / tot > 0.05; t++);
    }
    return sc.bins[t];
  }

  /** Per group: {flagged, total} at threshold t (exact at a bin edge and at the default). */
  function flaggedAt(sc, t, defaultValue) {
    const out = {};
    const exact = sc.at_threshold && defaultValue != null && t === defaultValue;
    let j = sc.bins.findIndex(function (b) { return b >= t; });
    if (j < 0) j = sc.bins.length - 1;
    for (const g of SCORE_GROUPS) {
      const c = sc.counts[g];
      if (!Array.isArray(c)) continue;
      if (exact && sc.at_threshold.flagged[g] != null) {
        out[g] = { flagged: sc.at_threshold.flagged[g], total: sc.at_threshold.total[g] };
      } else {
        out[g] = { flagged: sum(c, j), total: sum(c) };
      }
    }
    return out;
  }

  // ------------------------------------------------------------------ separability

  /** The first layer where class c's per-class purity reaches `thr`, -1 if none, null if unknown. */
  function separableLayer(classPurity, c, thr) {
    if (!Array.isArray(classPurity)) return null;
    let known = false;
    for (let l = 0; l < classPurity.length; l++) {
      const v = classPurity[l] ? classPurity[l][c] : null;
      if (v == null) continue;
      known = true;
      if (v >= thr) return l;
    }
    return known ? -1 : null;
  }

  // ------------------------------------------------------------------ layer map

  function b64bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  /** Little-endian uint16 values from base64. */
  function decodeU16(b64) {
    const b = b64bytes(b64);
    const n = b.length >> 1;
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) out[i] = b[2 * i] | (b[2 * i + 1] << 8);
    return out;
  }

  /** The sides of the map's extent a point is beyond (stored on the grid's border, 0 or
   * 65535): a sum of EDGE_LEFT, EDGE_RIGHT, EDGE_BOTTOM and EDGE_TOP, 0 when inside. */
  const EDGE_LEFT = 1, EDGE_RIGHT = 2, EDGE_BOTTOM = 4, EDGE_TOP = 8;
  function edgeSide(qx, qy) {
    return (qx === 0 ? EDGE_LEFT : qx === 65535 ? EDGE_RIGHT : 0) |
      (qy === 0 ? EDGE_BOTTOM : qy === 65535 ? EDGE_TOP : 0);
  }

  /** The outward direction of a point beyond the extent on `side`, a unit vector [dx, dy] on
   * the screen (y down), or null inside the extent. */
  function edgeDirection(side) {
    const dx = (side & EDGE_RIGHT ? 1 : 0) - (side & EDGE_LEFT ? 1 : 0);
    const dy = (side & EDGE_BOTTOM ? 1 : 0) - (side & EDGE_TOP ? 1 : 0);
    if (!dx && !dy) return null;
    const n = Math.sqrt(dx * dx + dy * dy);
    return [dx / n, dy / n];
  }

  /**
   * Layer l of a split's map, in data units: {x, y} (Float64Array per point), edge (1 for a
   * point beyond the map's extent, stored on its border), side (edgeSide: which sides it is
   * beyond), nEdge (how many are), centroids [{id, x, y}], bounds [x0, x1, y0, y1],
   * explained. Decoded once per layer.
   */
  function mapLayer(P, l) {
    if (!P.map || !P.map.layers[l]) return null;
    if (P.mapCache[l]) return P.mapCache[l];
    const L = P.map.layers[l];
    const q = decodeU16(L.xy || "");
    const b = Array.isArray(L.bounds) && L.bounds.length === 4 ? L.bounds : [0, 1, 0, 1];
    const n = Math.min(P.map.rows.length, q.length >> 1);
    const x = new Float64Array(n), y = new Float64Array(n), edge = new Uint8Array(n), side = new Uint8Array(n);
    const sx = (b[1] - b[0]) / 65535, sy = (b[3] - b[2]) / 65535;
    let nEdge = 0;
    for (let i = 0; i < n; i++) {
      const qx = q[2 * i], qy = q[2 * i + 1];
      x[i] = b[0] + qx * sx;
      y[i] = b[2] + qy * sy;
      side[i] = edgeSide(qx, qy); // beyond the map, put on its border
      edge[i] = side[i] ? 1 : 0;
      nEdge += edge[i];
    }
    const cents = (Array.isArray(L.centroids) ? L.centroids : []).map(function (c, id) {
      return { id: id, x: b[0] + c[0] * sx, y: b[2] + c[1] * sy };
    });
    P.mapCache[l] = { x: x, y: y, edge: edge, side: side, nEdge: nEdge, n: n, centroids: cents, bounds: b, explained: L.explained || null };
    return P.mapCache[l];
  }

  /** A transform of data units to a w x h box with `pad`, one scale for both axes. */
  function fitBox(bounds, w, h, pad) {
    const bw = Math.max(bounds[1] - bounds[0], 1e-12), bh = Math.max(bounds[3] - bounds[2], 1e-12);
    const s = Math.min((w - 2 * pad) / bw, (h - 2 * pad) / bh);
    const ox = pad + ((w - 2 * pad) - s * bw) / 2, oy = pad + ((h - 2 * pad) - s * bh) / 2;
    return {
      x: function (v) { return ox + (v - bounds[0]) * s; },
      y: function (v) { return h - (oy + (v - bounds[2]) * s); },
    };
  }

  /** The index of the point nearest (px, py) within maxDist among those `ok(i)` accepts, or -1. */
  function nearestPoint(xs, ys, px, py, maxDist, ok) {
    let best = -1, bd = maxDist * maxDist;
    for (let i = 0; i < xs.length; i++) {
      if (ok && !ok(i)) continue;
      const dx = xs[i] - px, dy = ys[i] - py, d = dx * dx + dy * dy;
      if (d <= bd) { bd = d; best = i; }
    }
    return best;
  }

  /** The kind of a map point: "mis", "flagged", "unlabelled" or "ok". */
  function pointKind(P, i, threshold) {
    const r = P.rows[P.map.rows[i]];
    if (r && r.mis) return "mis";
    const s = Array.isArray(P.map.scores) ? P.map.scores[i] : null;
    if (threshold != null && s != null && s >= threshold) return "flagged";
    return r && !r.labelled ? "unlabelled" : "ok";
  }

  // ------------------------------------------------------------------ token maps

  /**
   * Map point i of a token row space (each point is one token of one input): {position,
   * sampleRow (the input's row in the parent split), sampleIndex (its index in the source
   * data set), token (the id, or null when the input had no token ids), label (the name
   * the report's token_label gave, or null)}; null for a map of samples.
   */
  function tokenOf(P, i) {
    const t = P.map && P.map.tokens;
    if (!t || !Array.isArray(t.position) || t.position[i] == null) return null;
    const id = Array.isArray(t.token) ? t.token[i] : null;
    const label = Array.isArray(t.label) ? t.label[i] : null;
    return {
      position: t.position[i],
      sampleRow: Array.isArray(t.sample_row) ? t.sample_row[i] : null,
      sampleIndex: Array.isArray(P.map.sample_index) ? P.map.sample_index[i] : null,
      token: id != null && id >= 0 ? id : null,
      label: label != null ? String(label) : null,
    };
  }

  /**
   * What a token's tooltip says: {title: which token, at which position of which input;
   * input: the input's index and row; note: what is not known, or ""}. `parent` is the
   * split of the inputs.
   */
  function tokenWords(t, parent) {
    const which = t.label != null ? "Token \u201c" + t.label + "\u201d" + (t.token != null ? " (id " + t.token + ")" : "")
      : t.token != null ? "Token id " + t.token : "Token";
    const input = "input " + (t.sampleIndex != null ? "#" + t.sampleIndex : "row " + t.sampleRow);
    const title = which + " \u00b7 position " + t.position + " of " + input;
    const where = input + (t.sampleRow != null && parent ? " is row " + t.sampleRow + " of split " + parent : "");
    const note = t.label != null ? ""
      : t.token != null ? "the token's text is not in the report (it stores token ids; write the report with token_label to name them)"
        : "no token id stored (the inputs had no input_ids): only its position is known";
    return { title: title, input: where, note: note };
  }

  /** The changed samples of a split that pass the filters in at least one run (pass[i][row]). */
  function visibleChanges(cmp, passByRun) {
    if (!cmp || !cmp.changed || !Array.isArray(cmp.changed.samples)) return [];
    return cmp.changed.samples.filter(function (s) {
      return s.rows.some(function (row, i) { return passByRun[i] && passByRun[i][row]; });
    });
  }

  return {
    SCORE_GROUPS: SCORE_GROUPS, sum: sum, thresholdCandidates: thresholdCandidates,
    initialThreshold: initialThreshold, flaggedAt: flaggedAt, separableLayer: separableLayer,
    b64bytes: b64bytes, decodeU16: decodeU16, mapLayer: mapLayer, fitBox: fitBox,
    EDGE_LEFT: EDGE_LEFT, EDGE_RIGHT: EDGE_RIGHT, EDGE_BOTTOM: EDGE_BOTTOM, EDGE_TOP: EDGE_TOP,
    edgeSide: edgeSide, edgeDirection: edgeDirection, tokenOf: tokenOf, tokenWords: tokenWords,
    nearestPoint: nearestPoint, pointKind: pointKind, visibleChanges: visibleChanges,
  };
});
