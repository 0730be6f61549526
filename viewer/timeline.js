/* nnsig report viewer: the training timeline panel (drawn when the data has `timeline`).
 *
 * Above the report of one checkpoint: a slider and a play button over the
 * checkpoints; the flows at the chosen checkpoint in track ids (a cluster keeps
 * its id and its colour, the mark beside its node, while it persists); accuracy
 * and the score's quantiles over time; per class, the layer where it becomes
 * separable at each checkpoint; the clusters' splits and merges since the
 * checkpoint before; and the probe samples that change outcome or path between
 * two checkpoints, with their thumbnails. The data logic is timelinemodel.js.
 * Its own state (checkpoint, compared checkpoint, playing) stays here: nothing
 * else on the page depends on it.
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG = global.NNSIG || {};
  const U = NNSIG.ui, S = NNSIG.sankey, TM = NNSIG.timelineModel, M = NNSIG.model;
  const el = U.el;
  const LIST = 60;

  const st = { t: 0, from: null, playing: null, limit: LIST };
  let P = null, R = null, root = null, parts = {};

  function cpLabel(t) { return P.checkpoints[t].label || ("step " + P.checkpoints[t].step); }

  function setT(t) {
    st.t = Math.max(0, Math.min(P.checkpoints.length - 1, t));
    st.limit = LIST;
    st.from = null; // compared with the checkpoint before, until another is chosen
    draw();
  }

  function stop() {
    if (st.playing) { clearInterval(st.playing); st.playing = null; }
    parts.play.textContent = "\u25B6 Play";
    parts.play.setAttribute("aria-pressed", "false");
  }

  function play() {
    if (st.playing) { stop(); return; }
    if (st.t >= P.checkpoints.length - 1) setT(0);
    parts.play.textContent = "\u275A\u275A Pause";
    parts.play.setAttribute("aria-pressed", "true");
    st.playing = setInterval(function () {
      if (st.t >= P.checkpoints.length - 1) { stop(); return; }
      setT(st.t + 1);
    }, 900);
  }

  function mount(ctx) {
    const tl = ctx.D.timeline;
    if (!TM || !TM.isTimeline(tl)) return;
    P = TM.prepare(tl);
    R = ctx.runs[0];
    st.t = tl.shown != null && tl.shown >= 0 && tl.shown < P.checkpoints.length ? tl.shown : P.checkpoints.length - 1;
    const last = P.checkpoints.length - 1;
    parts.play = el("button", { type: "button", class: "btn", id: "tl-play", "aria-pressed": "false", text: "\u25B6 Play", onclick: play });
    parts.slider = el("input", { type: "range", id: "tl-slider", min: 0, max: last, step: 1, value: st.t,
                                 "aria-label": "Checkpoint" });
    parts.slider.addEventListener("input", function () { stop(); setT(Number(parts.slider.value)); });
    parts.label = el("span", { id: "tl-label", class: "tl-label" });
    parts.sankey = S.svgEl("svg", { id: "tl-sankey-svg", class: "sankey-svg", role: "img" });
    parts.acc = S.svgEl("svg", { id: "tl-accuracy", class: "tl-chart", role: "img", "aria-label": "Accuracy over time" });
    parts.score = S.svgEl("svg", { id: "tl-scores", class: "tl-chart", role: "img", "aria-label": "Score over time" });
    parts.sep = el("table", { id: "tl-separable", class: "tl-sep" });
    parts.sepNote = el("p", { class: "hint tl-sep-note" });
    parts.events = el("div", { id: "tl-events", class: "tl-events" });
    parts.fromWord = el("span", { id: "tl-from-word", text: "Samples that changed since " });
    parts.fromSel = el("select", { id: "tl-from", "aria-label": "Compare with checkpoint" });
    parts.fromSel.addEventListener("change", function () { st.from = Number(parts.fromSel.value); st.limit = LIST; drawChanges(); });
    parts.changes = el("div", { id: "tl-changes", class: "tl-changes" });
    const scoreName = tl.score && tl.score.name ? tl.score.name : null;
    root = el("section", { id: "timeline", class: "panel timeline-panel", "aria-labelledby": "tl-h" },
      el("div", { class: "panel-head" },
         el("h2", { id: "tl-h", text: "Training timeline" }),
         el("p", { class: "hint", text: P.checkpoints.length + " checkpoints of " + U.fmt(P.n) +
                   " probe samples; clusters keep their id and colour while they persist" })),
      el("div", { class: "tl-controls" }, parts.play, parts.slider, parts.label),
      el("div", { class: "tl-body" },
         el("div", { class: "tl-flows" }, el("h3", { class: "pane-h", text: "Flows at this checkpoint" }), parts.sankey),
         el("div", { class: "tl-side" },
            el("h3", { class: "pane-h", text: "Accuracy on the probe set" }), parts.acc,
            scoreName ? el("h3", { class: "pane-h", text: "Score (" + scoreName + "): 10th, 50th, 90th percentiles" }) : null,
            scoreName ? parts.score : null,
            scoreName ? el("div", { class: "hist-legend", id: "tl-score-legend" },
              el("span", null, el("i", { class: "sw", style: { background: "#009E73" } }), "correct"),
              el("span", null, el("i", { class: "sw", style: { background: "#D55E00" } }), "misclassified"),
              el("span", { class: "muted", text: "line: median; band: 10th to 90th" })) : null,
            el("h3", { class: "pane-h", text: "Where each class becomes separable (layer)" }), parts.sep,
            parts.sepNote)),
      el("div", { class: "tl-lower" },
         el("div", null, el("h3", { class: "pane-h", text: "Clusters since the checkpoint before" }), parts.events),
         el("div", null,
            el("h3", { class: "pane-h" }, parts.fromWord, parts.fromSel),
            parts.changes)),
      el("p", { class: "hint tl-below", id: "tl-below" }));
    const stats = document.getElementById("stats");
    stats.parentNode.insertBefore(root, stats);
    document.body.classList.add("has-timeline");
  }

  // ------------------------------------------------------------------ drawing

  function drawSankey(width) {
    const cp = P.checkpoints[st.t];
    const L = P.nLayers, nC = R.nClasses;
    const g = S.build(cp.rows, L, nC + 1, { classOf: function (r) { return r.input >= 0 && r.input < nC ? r.input : nC; } });
    const svg = parts.sankey;
    if (!g.total) { U.clear(svg); return; }
    let maxN = 1;
    for (const col of g.columns) maxN = Math.max(maxN, col.length);
    const headerH = 40, plotH = Math.round(U.clamp(maxN * 22, 240, 520));
    S.layout(g, { x0: 70, x1: width - 90, y0: headerH + 4, y1: headerH + 4 + plotH,
                  nodeWidth: U.clamp(Math.round(width / 80), 8, 14), nodePad: 6, minNodeHeight: 2 });
    const headers = [{ title: "Input class" }].concat(P.tl.layers.map(function (l) { return { title: l }; }), [{ title: "Output class" }]);
    S.draw(svg, g, {
      width: width, height: headerH + plotH + 10, colorOf: function (k) { return k >= nC ? U.GREY : U.classColor(k); },
      headers: headers, headerY: 14,
      label: function (nd) { return nd.col === 0 || nd.col === L + 1 ? M.className(R, nd.id) : "c" + nd.id; },
    });
    for (const col of g.columns) {
      for (const nd of col) {
        const grp = svg.querySelector('[data-node="' + nd.key + '"]');
        if (!grp) continue;
        if (nd.col >= 1 && nd.col <= L) {
          grp.setAttribute("data-track", String(nd.id));
          S.svgEl("rect", { x: nd.x0 - 4, y: nd.y0, width: 3, height: Math.max(nd.y1 - nd.y0, 2), fill: TM.trackColor(nd.id), class: "track-mark" }, grp);
          const lbl = grp.querySelector(".nlabel");
          if (lbl) lbl.setAttribute("fill", TM.trackColor(nd.id));
          S.svgEl("title", null, grp).textContent = P.tl.layers[nd.col - 1] + ", cluster c" + nd.id + ": " + U.fmt(nd.value) + " samples";
        } else {
          S.svgEl("title", null, grp).textContent = M.className(R, nd.id) + ": " + U.fmt(nd.value) + " samples";
        }
      }
    }
    svg.setAttribute("aria-label", "Flows at " + cpLabel(st.t) + ": " + L + " layers of clusters");
  }

  /** A small line chart over the checkpoints: series [{values, color, band}], y in [lo, hi]. */
  function chart(svg, width, series, lo, hi, fmtY) {
    U.clear(svg);
    const h = 120, left = 38, right = 8, top = 8, bottom = 20;
    svg.setAttribute("width", width);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + width + " " + h);
    const n = P.checkpoints.length;
    const x = function (t) { return left + (n > 1 ? t * (width - left - right) / (n - 1) : (width - left - right) / 2); };
    const y = function (v) { return top + (1 - (v - lo) / ((hi - lo) || 1)) * (h - top - bottom); };
    const axis = S.svgEl("g", { class: "tl-axis" }, svg);
    for (const v of [lo, (lo + hi) / 2, hi]) {
      S.svgEl("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }, axis);
      S.svgText(axis, { x: left - 4, y: y(v), "text-anchor": "end", dy: "0.35em" }, fmtY(v));
    }
    S.svgText(axis, { x: x(0), y: h - 5, "text-anchor": "start" }, cpLabel(0));
    if (n > 1) S.svgText(axis, { x: x(n - 1), y: h - 5, "text-anchor": "end" }, cpLabel(n - 1));
    S.svgEl("line", { x1: x(st.t), x2: x(st.t), y1: top, y2: h - bottom, class: "tl-now" }, svg);
    for (const s of series) {
      if (s.band) {
        let d = "", back = "";
        s.band.forEach(function (b, t) {
          if (!b) return;
          d += (d ? "L" : "M") + x(t).toFixed(1) + "," + y(b[0]).toFixed(1);
          back = "L" + x(t).toFixed(1) + "," + y(b[2]).toFixed(1) + back;
        });
        if (d) S.svgEl("path", { d: d + back + "Z", fill: s.color, opacity: 0.15 }, svg);
      }
      let d = "";
      s.values.forEach(function (v, t) { if (v != null) d += (d ? "L" : "M") + x(t).toFixed(1) + "," + y(v).toFixed(1); });
      if (d) S.svgEl("path", { d: d, fill: "none", stroke: s.color, "stroke-width": 2, class: "tl-line" }, svg);
      s.values.forEach(function (v, t) {
        if (v == null) return;
        const c = S.svgEl("circle", { cx: x(t), cy: y(v), r: t === st.t ? 4 : 2.5, fill: s.color, class: "tl-point", "data-t": t }, svg);
        S.svgEl("title", null, c).textContent = s.name + " at " + cpLabel(t) + ": " + fmtY(v);
      });
    }
    svg.onclick = function (e) {
      const box = svg.getBoundingClientRect();
      const fx = (e.clientX - box.left - left) / Math.max(1, width - left - right);
      stop();
      setT(Math.round(fx * (n - 1)));
    };
  }

  function drawCharts(width) {
    const acc = TM.accuracySeries(P);
    chart(parts.acc, width, [{ name: "accuracy", values: acc, color: "#0b62a4" }], 0, 1, function (v) { return U.pct(v, 0); });
    if (!P.tl.score) return;
    const bins = P.tl.score.bins || [0, 1];
    const right = TM.scoreSeries(P, "correct"), wrong = TM.scoreSeries(P, "misclassified");
    chart(parts.score, width, [
      { name: "correct, median", values: right.map(function (q) { return q ? q[1] : null; }), band: right, color: "#009E73" },
      { name: "misclassified, median", values: wrong.map(function (q) { return q ? q[1] : null; }), band: wrong, color: "#D55E00" },
    ], bins[0], bins[bins.length - 1], function (v) { return U.num(v, 2); });
  }

  function drawSeparability() {
    const t = parts.sep;
    U.clear(t);
    const nC = R.nClasses, L = P.nLayers;
    const sep = TM.separability(P, nC);
    const head = el("tr", null, el("th", { text: "class" }));
    P.checkpoints.forEach(function (cp, i) {
      head.append(el("th", { class: i === st.t ? "now" : null, title: cp.label, text: String(i + 1) }));
    });
    t.append(el("thead", null, head));
    const body = el("tbody");
    for (let c = 0; c < nC; c++) {
      const tr = el("tr", null, el("th", null, U.classChip(R, c)));
      sep[c].forEach(function (s, i) {
        const layer = s != null && s >= 0 ? P.tl.layers[s] : null;
        const shade = s == null ? null : s < 0 ? "#eceff3" : "rgba(11,98,164," + (0.9 - 0.7 * s / Math.max(1, L - 1)).toFixed(2) + ")";
        tr.append(el("td", { class: (i === st.t ? "now " : "") + (s != null && s >= 0 && s < L / 2 ? "dark" : ""),
                              style: shade ? { background: shade } : null,
                              title: M.className(R, c) + " at " + P.checkpoints[i].label + ": " +
                                (s == null ? "absent" : layer ? "separable from " + layer : "not separable"),
                              text: s == null ? "" : s >= 0 ? String(s + 1) : "\u2013" }));
      });
      body.append(tr);
    }
    t.append(body);
    const legend = P.tl.layers.map(function (l, j) { return (j + 1) + " = " + l; }).join(", ");
    parts.sepNote.textContent = legend + "; \u2013 = in no layer (class purity below " +
      (P.tl.separable_purity || 0.9) + "). Columns: checkpoints.";
  }

  function drawEvents() {
    const box = U.clear(parts.events);
    if (st.t === 0) { box.append(el("p", { class: "hint", text: "The first checkpoint: every cluster starts its track." })); return; }
    const ev = TM.eventLines(P, st.t);
    box.append(el("p", { class: "hint", text: ev.continued + " clusters continued from " + cpLabel(st.t - 1) + "." }));
    if (!ev.lines.length) { box.append(el("p", { class: "hint", text: "No cluster split, merged, appeared or ended." })); return; }
    const ul = el("ul", { class: "tl-event-list" });
    for (const e of ev.lines) ul.append(el("li", { class: "ev-" + e.kind }, el("b", { text: P.tl.layers[e.layer] + ": " }), e.text));
    box.append(ul);
  }

  function pathText(p) { return "[" + p.map(function (k) { return "c" + k; }).join(" ") + "]"; }

  function drawChanges() {
    const box = U.clear(parts.changes);
    const n = P.checkpoints.length;
    if (n < 2) { box.append(el("p", { class: "hint", text: "One checkpoint: nothing to compare." })); return; }
    if (st.from == null || st.from === st.t || st.from >= n) st.from = st.t > 0 ? st.t - 1 : 1;
    U.clear(parts.fromSel);
    P.checkpoints.forEach(function (cp, i) {
      if (i !== st.t) parts.fromSel.append(el("option", { value: i, selected: i === st.from, text: cp.label }));
    });
    // In training order, whichever checkpoint is shown: fixed is wrong then right.
    const ch = TM.changes(P, Math.min(st.from, st.t), Math.max(st.from, st.t));
    parts.fromWord.textContent = st.from < st.t ? "Samples that changed since " : "Samples that changed by ";
    box.append(el("p", { class: "tl-counts", id: "tl-counts",
      text: ch.fixed + " fixed, " + ch.broken + " broken, " + ch.otherOutput + " other predictions; " +
            ch.path + " changed path (" + ch.pathOnly + " with the same outcome)" }));
    const ul = el("ul", { class: "tl-change-list" });
    const thumbs = P.tl.thumbnails;
    for (const s of ch.samples.slice(0, st.limit)) {
      const cv = thumbs ? U.spriteCanvas(thumbs, s.sample, "sample " + s.index, "thumb tl-thumb") : null;
      const what = s.kind === "path" ? "same outcome" : s.kind;
      ul.append(el("li", { class: "tl-change ch-" + s.kind, "data-sample": s.sample }, cv,
        el("span", null,
           el("b", { text: "#" + s.index + " " }), U.classChip(R, s.label),
           " " + M.className(R, s.outputs[0]) + " \u2192 " + M.className(R, s.outputs[1]) + " (" + what + ")",
           el("br"),
           el("span", { class: "tl-path", text: pathText(s.paths[0]) + " \u2192 " + pathText(s.paths[1]) +
                        (s.firstLayer >= 0 ? "  (from " + P.tl.layers[s.firstLayer] + ")" : "") }))));
    }
    box.append(ul);
    if (ch.samples.length > st.limit) {
      box.append(el("button", { type: "button", class: "btn more", text: "Show more (" + (ch.samples.length - st.limit) + " left)",
                                onclick: function () { st.limit += LIST * 2; drawChanges(); } }));
    }
  }

  function draw() {
    const cp = P.checkpoints[st.t];
    parts.slider.value = String(st.t);
    parts.label.textContent = cpLabel(st.t) + " \u00B7 step " + U.fmt(cp.step) + " \u00B7 accuracy " + U.pct(cp.accuracy) +
      " \u00B7 " + (st.t + 1) + " of " + P.checkpoints.length;
    const w = Math.max(360, Math.floor(parts.sankey.parentNode.clientWidth || 700));
    const side = Math.max(240, Math.floor(parts.acc.parentNode.clientWidth || 320));
    drawSankey(w);
    drawCharts(side);
    drawSeparability();
    drawEvents();
    drawChanges();
    const shown = P.tl.shown != null ? P.tl.shown : P.checkpoints.length - 1;
    document.getElementById("tl-below").textContent = "Below: the full report of " + cpLabel(shown) +
      " (its own cluster ids, not the tracks).";
    root.setAttribute("data-t", String(st.t));
  }

  function render(ctx, changed) {
    if (!P) return;
    if (changed.has("all") || changed.has("resize")) draw();
  }

  NNSIG.views = NNSIG.views || {};
  NNSIG.views.timeline = { mount: mount, render: render,
                           /** For tests and the console: show checkpoint t. */
                           show: function (t) { if (P) { stop(); setT(t); } },
                           state: st };
})(window);
