/* nnsig report viewer: the training timeline's data logic (pure: no DOM, no network).
 *
 * Reads the report's `timeline` entry (docs/report-data.md, "Timeline"): each
 * checkpoint's rows in track ids and each probe sample's row. Gives the series
 * the timeline panel draws (accuracy, score quantiles, per-class separability),
 * the samples that change outcome or path between two checkpoints, the words
 * for the clusters' splits and merges, and a track's colour.
 * window.NNSIG.timelineModel in the page, module.exports under `node --test`
 * (tests/js/timeline.test.js).
 */
(function (root, factory) {
  "use strict";
  const T = factory();
  if (typeof module === "object" && module.exports) module.exports = T;
  else { root.NNSIG = root.NNSIG || {}; root.NNSIG.timelineModel = T; }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  /** Non-negative ints from base64 little-endian uint16, or a plain array as it is. */
  function decodeInts(v) {
    if (Array.isArray(v)) return Int32Array.from(v);
    if (typeof v !== "string") return new Int32Array(0);
    const bin = atob(v);
    const n = bin.length >> 1;
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    return out;
  }

  /** Is this a usable timeline entry? */
  function isTimeline(tl) {
    return !!(tl && Array.isArray(tl.checkpoints) && tl.checkpoints.length && Array.isArray(tl.layers));
  }

  /** The timeline with each checkpoint's per-sample rows decoded (`rowOf`), once. */
  function prepare(tl) {
    if (!isTimeline(tl)) return null;
    const cps = tl.checkpoints.map(function (cp) {
      return Object.assign({}, cp, { rowOf: decodeInts(cp.row_of), rows: Array.isArray(cp.rows) ? cp.rows : [] });
    });
    const n = cps.reduce(function (m, cp) { return Math.min(m, cp.rowOf.length); }, Infinity);
    return { tl: tl, checkpoints: cps, n: isFinite(n) ? n : 0, nLayers: tl.layers.length,
             sampleIndex: tl.sample_index != null ? decodeInts(tl.sample_index) : null };
  }

  /** Colour of cluster track k: golden-angle hues, distinct from one track to the next. */
  function trackColor(k) {
    const hue = (k * 137.508 + 20) % 360;
    const light = 36 + (k % 3) * 9;
    return "hsl(" + hue.toFixed(1) + ",62%," + light + "%)";
  }

  /** Accuracy per checkpoint. */
  function accuracySeries(P) {
    return P.checkpoints.map(function (cp) { return cp.accuracy == null ? null : Number(cp.accuracy); });
  }

  /** Per checkpoint, the score quantiles [p10, p50, p90] of `group` ("correct" or "misclassified"). */
  function scoreSeries(P, group) {
    return P.checkpoints.map(function (cp) {
      const q = cp.scores && cp.scores.quantiles ? cp.scores.quantiles[group] : null;
      return Array.isArray(q) && q.length === 3 ? q : null;
    });
  }

  /** classes x checkpoints: the first layer where the class is separable (-1: none, null: absent). */
  function separability(P, nClasses) {
    const out = [];
    for (let c = 0; c < nClasses; c++) {
      out.push(P.checkpoints.map(function (cp) {
        const s = Array.isArray(cp.separable) ? cp.separable[c] : null;
        return s == null ? null : s;
      }));
    }
    return out;
  }

  /** For class c: the first checkpoint where it is separable at some layer, and that layer
   * (`{checkpoint, layer}`), or null when it never is. */
  function firstSeparable(P, c) {
    for (let t = 0; t < P.checkpoints.length; t++) {
      const s = P.checkpoints[t].separable;
      if (Array.isArray(s) && s[c] != null && s[c] >= 0) return { checkpoint: t, layer: s[c] };
    }
    return null;
  }

  function rowAt(P, t, i) { return P.checkpoints[t].rows[P.checkpoints[t].rowOf[i]]; }

  /**
   * The probe samples that change between checkpoints a and b: outcome (fixed: wrong then
   * right; broken: right then wrong; other: another wrong prediction) and path (another
   * track in some layer). Returns the counts and the changed samples, outcome changes first
   * (broken, fixed, other), then path-only changes by their first changed layer.
   */
  function changes(P, a, b) {
    const out = { fixed: 0, broken: 0, otherOutput: 0, path: 0, pathOnly: 0, samples: [] };
    if (!P || a == null || b == null || a === b) return out;
    const L = P.nLayers;
    const rank = { broken: 0, fixed: 1, other: 2, path: 3 };
    for (let i = 0; i < P.n; i++) {
      const ra = rowAt(P, a, i), rb = rowAt(P, b, i);
      if (!ra || !rb) continue;
      let first = -1;
      for (let l = 0; l < L; l++) if (ra.path[l] !== rb.path[l]) { first = l; break; }
      const label = ra.input;
      const okA = label >= 0 && ra.output === label, okB = label >= 0 && rb.output === label;
      let kind = null;
      if (okA && !okB) { kind = "broken"; out.broken++; }
      else if (!okA && okB) { kind = "fixed"; out.fixed++; }
      else if (ra.output !== rb.output) { kind = "other"; out.otherOutput++; }
      if (first >= 0) { out.path++; if (!kind) { kind = "path"; out.pathOnly++; } }
      if (!kind) continue;
      out.samples.push({ sample: i, index: P.sampleIndex && i < P.sampleIndex.length ? P.sampleIndex[i] : i,
                         label: label, kind: kind, outputs: [ra.output, rb.output],
                         paths: [ra.path, rb.path], firstLayer: first });
    }
    out.samples.sort(function (x, y) {
      return rank[x.kind] - rank[y.kind] || (x.firstLayer < 0 ? L : x.firstLayer) - (y.firstLayer < 0 ? L : y.firstLayer) || x.sample - y.sample;
    });
    return out;
  }

  /** The clusters' splits, merges, new and ended tracks of checkpoint t, in words, per layer
   * (`[{layer, kind, text}]`), and how many continued. */
  function eventLines(P, t) {
    const cp = P.checkpoints[t];
    const out = [];
    let continued = 0;
    if (!cp || !Array.isArray(cp.events)) return { lines: out, continued: 0 };
    const name = function (k) { return "c" + k; };
    cp.events.forEach(function (evs, l) {
      for (const e of (evs || [])) {
        let text = null;
        if (e.kind === "split") text = name(e.from[0]) + " split into " + e.to.map(name).join(" + ");
        else if (e.kind === "merge") text = e.from.map(name).join(" + ") + " merged into " + name(e.to[0]);
        else if (e.kind === "new") text = name(e.to[0]) + " appeared";
        else if (e.kind === "end") text = name(e.from[0]) + " ended";
        else if (e.kind === "continued") continued += e.count || 0;
        if (text) out.push({ layer: l, kind: e.kind, text: text });
      }
    });
    return { lines: out, continued: continued };
  }

  return {
    decodeInts: decodeInts, isTimeline: isTimeline, prepare: prepare, trackColor: trackColor,
    accuracySeries: accuracySeries, scoreSeries: scoreSeries, separability: separability,
    firstSeparable: firstSeparable, changes: changes, eventLines: eventLines,
  };
});
