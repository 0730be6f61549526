/* nnsig report viewer: the layer map of each run (NNSIG.views.map).
 *
 * A canvas with the 2-D projection (computed when the report was written) of a
 * bounded sample of the split's samples in one layer, coloured by true class,
 * predicted class or cluster, with the cluster centres marked. Linked both ways
 * with the page: samples filtered out by the filters or the Sankey's node focus
 * are dimmed; the selected table row's samples are ringed; points beyond the map's
 * extent (outliers) are drawn on its border with an arrow pointing outwards, and
 * counted in the legend; hovering a point shows its thumbnail and signature (for a
 * token: which token, at which position of which input) and marks the same sample
 * on the other runs' maps; clicking it selects its row; clicking a centre focuses
 * its cluster.
 * One canvas, not an SVG node per point: 2,000 points draw in a few ms.
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG;
  const M = NNSIG.model, F = NNSIG.figures, U = NNSIG.ui;
  const el = U.el;

  const inst = []; // per run: {canvas, box, note, legend, layerSel, colorSel, empty, pts, cents, w, h}
  const PAD = 16, HIT = 8;

  function mapOf(ctx, i) { const P = ctx.cur[i].P; return P && P.map ? P.map : null; }

  function spriteOf(ctx, i) {
    const m = mapOf(ctx, i);
    if (!m || !m.thumbnails) return null;
    if (m.thumbnails.run != null) {
      const j = +m.thumbnails.run;
      const o = ctx.cur[j] && ctx.cur[j].P && ctx.cur[j].P.map;
      return o && U.isSprite(o.thumbnails) ? o.thumbnails : null;
    }
    return U.isSprite(m.thumbnails) ? m.thumbnails : null;
  }

  function indexOfPos(P) {
    if (!P.map) return null;
    if (!P.mapPosIndex) {
      P.mapPosIndex = new Map();
      (P.map.positions || []).forEach(function (p, k) { P.mapPosIndex.set(p, k); });
    }
    return P.mapPosIndex;
  }

  function colourMode(ctx, i) {
    const mode = ctx.state.mapColor;
    return mode === "class" && !ctx.cur[i].P.hasLabels ? "prediction" : mode;
  }

  function colourOf(ctx, i, r, layer) {
    const mode = colourMode(ctx, i);
    if (mode === "cluster") return U.classColor(r.path[layer]);
    if (mode === "prediction") return U.classColor(r.output);
    return U.classColor(r.labelled ? r.input : M.UNLABELLED);
  }

  function note(ctx, i) {
    const m = mapOf(ctx, i), P = ctx.cur[i].P, R = ctx.runs[i];
    const k = m.kinds || {};
    const bits = [];
    function part(v, what) {
      if (!v || !v[0]) return;
      bits.push((v[1] === v[0] ? "all " + U.fmt(v[1]) : U.fmt(v[1]) + " of " + U.fmt(v[0])) + " " + what);
    }
    const scope = m.kinds_in ? " in " + m.kinds_in : "";  // a comparison's shared points
    part(k.misclassified, "misclassified" + scope);
    part(k.flagged, "flagged" + scope);
    part(k.changed, "changed between runs");
    if (k.other) bits.push(U.fmt(k.other[1]) + " others (stratified by class)");
    const L = F.mapLayer(P, ctx.state.mapLayer[i]);
    const ex = L && Array.isArray(L.explained) ? " (" + L.explained.map(function (v) { return U.pct(v, 0); }).join(" + ") + " of the variance)" : "";
    const meth = R.data.map && R.data.map.method ? String(R.data.map.method).toUpperCase() : "Projection";
    return U.fmt(m.n_points) + " of " + U.fmt(P.sp.n_samples) + " samples: " + bits.join(", ") + " \u00b7 " + meth + " of " +
      R.layers[ctx.state.mapLayer[i]] + ex;
  }

  function draw(ctx, i) {
    const I = inst[i], R = ctx.runs[i], c = ctx.cur[i], P = c.P, m = mapOf(ctx, i);
    const cv = I.canvas;
    I.layerSel.value = String(ctx.state.mapLayer[i]);
    I.colorSel.value = colourMode(ctx, i);
    I.colorSel.querySelector('option[value="class"]').disabled = !P.hasLabels;
    if (!m) {
      cv.hidden = true;
      I.empty.hidden = false;
      I.note.textContent = "";
      U.clear(I.legend);
      I.pts = [];
      I.cents = [];
      return;
    }
    cv.hidden = false;
    I.empty.hidden = true;
    const layer = ctx.state.mapLayer[i];
    const L = F.mapLayer(P, layer);
    const w = Math.max(240, ctx.widths[i].map);
    const h = Math.round(U.clamp(w * 0.62, 260, 460));
    const dpr = window.devicePixelRatio || 1;
    if (I.w !== w || I.h !== h || I.dpr !== dpr) {
      cv.width = Math.round(w * dpr);
      cv.height = Math.round(h * dpr);
      cv.style.width = w + "px";
      cv.style.height = h + "px";
      I.w = w; I.h = h; I.dpr = dpr;
    }
    const g = cv.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const box = F.fitBox(L.bounds, w, h, PAD);
    const thr = ctx.threshold(i);
    const sel = ctx.selectedGroup(i);
    const selRows = sel ? new Set(sel.rows.map(function (r) { return r.i; })) : null;
    const pts = [];
    let dimmed = 0;
    for (let k = 0; k < L.n; k++) {
      const row = m.rows[k];
      const r = P.rows[row];
      if (!r) continue;
      const dim = !c.pass[row];
      if (dim) dimmed++;
      pts.push({ k: k, x: box.x(L.x[k]), y: box.y(L.y[k]), row: row, pos: m.positions ? m.positions[k] : k, dim: dim, edge: !!L.edge[k],
                 side: L.side[k], kind: F.pointKind(P, k, thr), r: r, on: selRows ? selRows.has(row) : false });
    }
    I.pts = pts;
    const nEdge = pts.filter(function (p) { return p.edge; }).length;
    if (nEdge) { // the extent, whose border the points beyond are drawn on
      g.save();
      g.setLineDash([3, 3]);
      g.lineWidth = 1;
      g.strokeStyle = "rgba(95, 107, 122, .45)";
      const x0 = box.x(L.bounds[0]), x1 = box.x(L.bounds[1]), y0 = box.y(L.bounds[2]), y1 = box.y(L.bounds[3]);
      g.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
      g.restore();
    }
    // Dimmed points first, then the rest, misclassified and flagged on top. Each mark is
    // a small pre-drawn stamp copied with drawImage: rasterising 2,000 anti-aliased
    // circles one by one costs tens of ms in a software-rendered canvas, copying
    // stamps a few.
    const put = function (st, p) {
      g.drawImage(st.cv, Math.round((p.x - st.half) * dpr) / dpr, Math.round((p.y - st.half) * dpr) / dpr,
                  st.size, st.size);
    };
    const dimStamp = stamp("dim", "#c3c9d2", dpr);
    for (const p of pts) if (p.dim) put(dimStamp, p);
    for (const p of pts) {
      if (p.dim) continue;
      p.colour = colourOf(ctx, i, p.r, layer);
      if (p.kind !== "mis") put(stamp("dot", p.colour, dpr), p);
    }
    // Beyond the extent: an arrowhead just outside the point, pointing to where it lies.
    for (const p of pts) {
      if (!p.edge) continue;
      const d = F.edgeDirection(p.side);
      put(stamp("edge" + p.side, p.dim ? "#c3c9d2" : p.colour, dpr), { x: p.x + 7.5 * d[0], y: p.y + 7.5 * d[1] });
    }
    const flagStamp = stamp("flag", "#1d2430", dpr);
    for (const p of pts) if (!p.dim && p.kind === "flagged") put(flagStamp, p);
    for (const p of pts) if (!p.dim && p.kind === "mis") put(stamp("cross", p.colour, dpr), p);
    // cluster centres
    const fo = M.parseFocus(ctx.state.focus[i]);
    const cents = [];
    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    for (const ce of L.centroids) {
      const x = box.x(ce.x), y = box.y(ce.y);
      const focused = fo && fo.col === layer + 1 && fo.id === ce.id;
      cents.push({ id: ce.id, x: x, y: y });
      g.beginPath(); g.arc(x, y, focused ? 8 : 6, 0, 2 * Math.PI);
      g.fillStyle = colourMode(ctx, i) === "cluster" ? U.classColor(ce.id) : "#ffffff";
      g.fill();
      g.lineWidth = focused ? 3 : 1.6;
      g.strokeStyle = focused ? "#0b62a4" : "#1d2430";
      g.stroke();
      g.lineWidth = 3;
      g.strokeStyle = "rgba(255,255,255,.85)";
      g.strokeText("c" + ce.id, x + 9, y);
      g.fillStyle = "#1d2430";
      g.fillText("c" + ce.id, x + 9, y);
    }
    I.cents = cents;
    // the selected row's samples, the picked and hovered samples
    g.lineWidth = 2;
    g.strokeStyle = "#111827";
    for (const p of pts) if (p.on) { g.beginPath(); g.arc(p.x, p.y, 5.5, 0, 2 * Math.PI); g.stroke(); }
    const st = ctx.state;
    const idx = indexOfPos(P);
    function ring(pos, colour, rad) {
      const k = idx ? idx.get(pos) : undefined;
      const p = k == null ? null : pts.find(function (q) { return q.k === k; });
      if (!p) return;
      g.lineWidth = 2.5;
      g.strokeStyle = colour;
      g.beginPath(); g.arc(p.x, p.y, rad, 0, 2 * Math.PI); g.stroke();
    }
    if (st.sample != null) ring(st.sample, "#D55E00", 9);
    if (st.hover && (st.hover.run !== i)) ring(st.hover.pos, "#0b62a4", 10);
    cv.setAttribute("data-points", String(pts.length));
    cv.setAttribute("data-dimmed", String(dimmed));
    cv.setAttribute("data-edge", String(nEdge));
    cv.setAttribute("data-selected", String(pts.filter(function (p) { return p.on; }).length));
    cv.setAttribute("data-layer", String(layer));
    cv.setAttribute("data-color", colourMode(ctx, i));
    cv.setAttribute("aria-label", "Layer map of " + R.layers[layer] + ": " + pts.length + " samples, " + dimmed + " dimmed by the filters");
    I.note.textContent = note(ctx, i);
    legend(ctx, i, layer, nEdge);
  }

  /** A mark drawn once per (kind, colour, pixel ratio) into a small canvas. */
  const stamps = new Map();
  function stamp(kind, colour, dpr) {
    const key = kind + "|" + colour + "|" + dpr;
    let st = stamps.get(key);
    if (st) return st;
    const size = kind === "flag" || kind === "cross" || kind.slice(0, 4) === "edge" ? 11 : 7;
    const cv = document.createElement("canvas");
    cv.width = cv.height = Math.ceil(size * dpr);
    const g = cv.getContext("2d");
    g.scale(dpr, dpr);
    const c = size / 2;
    g.beginPath();
    if (kind === "dim") {
      g.globalAlpha = 0.45; g.fillStyle = colour; g.arc(c, c, 1.8, 0, 2 * Math.PI); g.fill();
    } else if (kind === "dot") {
      g.globalAlpha = 0.8; g.fillStyle = colour; g.arc(c, c, 2.6, 0, 2 * Math.PI); g.fill();
    } else if (kind.slice(0, 4) === "edge") { // an arrowhead pointing outwards, dark rimmed
      const d = F.edgeDirection(+kind.slice(4)) || [1, 0];
      const ox = -d[1], oy = d[0];
      g.moveTo(c + 3.8 * d[0], c + 3.8 * d[1]);
      g.lineTo(c - 2.6 * d[0] + 3.2 * ox, c - 2.6 * d[1] + 3.2 * oy);
      g.lineTo(c - 2.6 * d[0] - 3.2 * ox, c - 2.6 * d[1] - 3.2 * oy);
      g.closePath();
      g.fillStyle = colour; g.fill();
      g.lineWidth = 0.9; g.strokeStyle = "rgba(29, 36, 48, .75)"; g.stroke();
    } else if (kind === "flag") {
      g.lineWidth = 1; g.strokeStyle = "rgba(29, 36, 48, .7)"; g.arc(c, c, 4.4, 0, 2 * Math.PI); g.stroke();
    } else { // cross: a dark halo, then the colour
      const s = 3.6;
      for (const [w, col] of [[3.4, "#1d2430"], [1.7, colour]]) {
        g.beginPath();
        g.lineWidth = w; g.strokeStyle = col;
        g.moveTo(c - s, c - s); g.lineTo(c + s, c + s); g.moveTo(c - s, c + s); g.lineTo(c + s, c - s);
        g.stroke();
      }
    }
    st = { cv: cv, size: size, half: size / 2 };
    stamps.set(key, st);
    return st;
  }

  function legend(ctx, i, layer, nEdge) {
    const box = U.clear(inst[i].legend);
    const mode = colourMode(ctx, i);
    // Element.append writes null as the text "null": the optional item is filtered out.
    box.append(...[el("span", { class: "ml-item" }, el("i", { class: "ml-dot" }), "correct"),
               el("span", { class: "ml-item" }, el("i", { class: "ml-cross", text: "\u2715" }), "misclassified"),
               el("span", { class: "ml-item" }, el("i", { class: "ml-ring" }), "flagged (score \u2265 threshold)"),
               el("span", { class: "ml-item" }, el("i", { class: "ml-centre" }), "cluster centre"),
               el("span", { class: "ml-item" }, el("i", { class: "ml-dim" }), "filtered out"),
               nEdge ? el("span", { class: "ml-item ml-edge-item", "data-count": String(nEdge),
                                    title: "Outliers of this layer's projection: drawn on the border of the dashed extent, the arrow pointing to where they lie" },
                          el("i", { class: "ml-edge" }), U.fmt(nEdge) + " beyond the extent, drawn on its border") : null,
               el("span", { class: "ml-item muted", text: mode === "cluster" ? "colour: cluster of " + ctx.runs[i].layers[layer]
                 : mode === "prediction" ? "colour: predicted class" : "colour: true class" })]
      .filter(Boolean));
  }

  function pointTip(ctx, i, p) {
    const R = ctx.runs[i], m = mapOf(ctx, i), P = ctx.cur[i].P;
    const r = p.r;
    const box = el("div", { class: "map-tip" });
    const tok = F.tokenOf(P, p.k);
    const cv = U.spriteCanvas(spriteOf(ctx, i), p.k, (tok ? "input " : "sample ") + (m.sample_index ? m.sample_index[p.k] : p.pos), "tip-thumb");
    const text = el("div");
    const sidx = Array.isArray(m.sample_index) ? m.sample_index[p.k] : null;
    if (tok) { // one token of one input
      const w = F.tokenWords(tok, P.sp.parent);
      text.append(el("div", { class: "tt-title tt-token", text: w.title }),
                  el("div", { class: "tt-line", text: w.input + " \u00b7 " + ctx.state.split + " row " + p.pos }));
      if (w.note) text.append(el("div", { class: "tt-line muted", text: w.note }));
    } else {
      text.append(el("div", { class: "tt-title", text: "Sample " + (sidx != null ? "#" + sidx : "") + " \u00b7 " + ctx.state.split + " row " + p.pos }));
    }
    text.append(el("div", { class: "tt-line" }, r.labelled ? "true " + M.className(R, r.input) + " \u2192 predicted " : "no label \u00b7 predicted ",
                   M.className(R, r.output), r.mis ? el("b", { class: "tt-bad", text: "  misclassified" }) : null));
    text.append(el("div", { class: "tt-line" }, "signature ", el("code", { text: r.path.join(" \u2192 ") })));
    const s = Array.isArray(m.scores) ? m.scores[p.k] : null;
    if (s != null) text.append(el("div", { class: "tt-line", text: "score " + U.num(s, 3) + (p.kind === "flagged" || (r.mis && ctx.threshold(i) != null && s >= ctx.threshold(i)) ? " (flagged)" : "") }));
    if (p.edge) text.append(el("div", { class: "tt-line muted", text: "beyond the map's extent (an outlier of this projection): drawn on its border, the arrow points to where it lies" }));
    text.append(el("div", { class: "tt-line muted", text: p.dim ? "hidden by the filters" : "click to select its row" }));
    if (cv) box.append(cv);
    box.append(text);
    return box;
  }

  function centreTip(ctx, i, ce) {
    const R = ctx.runs[i], P = ctx.cur[i].P, l = ctx.state.mapLayer[i];
    const c = P.clusters[l] && P.clusters[l].get(ce.id);
    return el("div", null, el("div", { class: "tt-title", text: R.layers[l] + " \u00b7 cluster " + ce.id + " (centre)" }),
              c ? el("div", { class: "tt-line", text: U.fmt(c.count) + " samples in the split \u00b7 purity " + U.num(c.purity, 2) }) : null,
              el("div", { class: "tt-line muted", text: "click to keep only its flows" }));
  }

  function hit(I, e) {
    const rect = I.canvas.getBoundingClientRect();
    const x = e.clientX - rect.left, y = e.clientY - rect.top;
    let ce = null, bd = 64;
    for (const c of I.cents) { const d = (c.x - x) * (c.x - x) + (c.y - y) * (c.y - y); if (d <= bd) { bd = d; ce = c; } }
    if (ce) return { centre: ce };
    const xs = I.pts.map(function (p) { return p.x; }), ys = I.pts.map(function (p) { return p.y; });
    let k = F.nearestPoint(xs, ys, x, y, HIT, function (j) { return !I.pts[j].dim; });
    if (k < 0) k = F.nearestPoint(xs, ys, x, y, HIT);
    return k < 0 ? null : { point: I.pts[k] };
  }

  function mount(ctx) {
    ctx.cols.forEach(function (col, i) {
      const I = { canvas: col.querySelector(".map-canvas"), box: col.querySelector(".map-box"), note: col.querySelector(".map-note"),
                  legend: col.querySelector(".map-legend"), layerSel: col.querySelector(".map-layer"),
                  colorSel: col.querySelector(".map-color"), empty: col.querySelector(".map-empty"), pts: [], cents: [] };
      inst[i] = I;
      const R = ctx.runs[i];
      R.layers.forEach(function (name, l) { I.layerSel.append(el("option", { value: String(l), text: name })); });
      I.layerSel.addEventListener("change", function () { ctx.setRun(i, "mapLayer", +I.layerSel.value, { active: i }); });
      I.colorSel.addEventListener("change", function () { ctx.set({ mapColor: I.colorSel.value }); });
      const cv = I.canvas;
      cv.addEventListener("mousemove", function (e) {
        const h = hit(I, e);
        if (!h) { U.hideTip(); cv.style.cursor = ""; if (ctx.state.hover) ctx.set({ hover: null }); return; }
        if (h.centre) { U.showTip(e, centreTip(ctx, i, h.centre)); cv.style.cursor = "pointer"; return; }
        U.showTip(e, pointTip(ctx, i, h.point));
        cv.style.cursor = h.point.dim ? "default" : "pointer";
        const hv = ctx.state.hover;
        if (ctx.compare && (!hv || hv.run !== i || hv.pos !== h.point.pos)) ctx.set({ hover: { run: i, pos: h.point.pos } });
      });
      cv.addEventListener("mouseleave", function () { U.hideTip(); if (ctx.state.hover) ctx.set({ hover: null }); });
      cv.addEventListener("click", function (e) {
        const h = hit(I, e);
        if (!h) return;
        if (h.centre) { ctx.toggleFocus(i, (ctx.state.mapLayer[i] + 1) + ":" + h.centre.id); return; }
        const p = h.point;
        if (p.dim) return;
        const key = M.groupKeyOfRow(ctx.cur[i].P, p.row, ctx.cur[i].view);
        if (ctx.state.selected[i] === key && ctx.state.sample === p.pos) {
          ctx.setRun(i, "selected", null, { sample: null, active: i });
          return;
        }
        ctx.selectRow(i, p.row, { active: i, sample: p.pos, tab: "details" });
      });
      if (window.ResizeObserver) {
        let pending = false;
        new ResizeObserver(function () {
          if (pending) return;
          pending = true;
          requestAnimationFrame(function () {
            pending = false;
            if (ctx.cur[i].P && Math.abs(Math.max(240, Math.floor(I.box.clientWidth)) - (I.w || 0)) >= 2) ctx.resized();
          });
        }).observe(I.box);
      }
    });
  }

  const KEYS = ["derived", "selected", "mapLayer", "mapColor", "threshold", "sample", "hover", "all", "resize"];

  function render(ctx, changed) {
    if (!KEYS.some(function (k) { return changed.has(k); })) return;
    for (let i = 0; i < ctx.runs.length; i++) draw(ctx, i);
  }

  /** The drawn points of run i's map, in CSS pixels from the canvas's top left (for tests). */
  function points(i) {
    return (inst[i] ? inst[i].pts : []).map(function (p) {
      return { x: p.x, y: p.y, row: p.row, pos: p.pos, dim: p.dim, kind: p.kind, on: p.on, edge: p.edge, side: p.side };
    });
  }
  function centres(i) { return (inst[i] ? inst[i].cents : []).map(function (c) { return { id: c.id, x: c.x, y: c.y }; }); }

  NNSIG.views = NNSIG.views || {};
  NNSIG.views.map = { mount: mount, render: render, points: points, centres: centres };
})(window);
