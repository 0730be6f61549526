/* nnsig report viewer: page logic (vanilla JS, no dependencies, no network).
 *
 * Reads window.NNSIG_REPORT (data.js, docs/report-data.md) and window.NNSIG_RUNS
 * (runs.js), draws the Sankey (sankey.js), the signature table and the panels.
 * Security: every string from the data reaches the DOM through textContent,
 * setAttribute or a Text node; this file never assigns HTML markup.
 * When the diagram is first drawn: performance.mark("nnsig-sankey-drawn") and
 * window.NNSIG_READY = true.
 */
(function () {
  "use strict";

  const S = window.NNSIGSankey;
  const D = window.NNSIG_REPORT;
  const RUNS = window.NNSIG_RUNS || null;
  const $ = function (id) { return document.getElementById(id); };
  const PAGE = 250;

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const k in attrs) {
        const v = attrs[k];
        if (v == null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = String(v);
        else if (k === "style") Object.assign(e.style, v);
        else if (k.slice(0, 2) === "on" && typeof v === "function") e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c == null || c === false) continue;
      if (Array.isArray(c)) { for (const x of c) if (x != null && x !== false) e.append(x); }
      else e.append(c); // strings become Text nodes
    }
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  const nf = new Intl.NumberFormat("en-US");
  function fmt(n) { return n == null || !isFinite(n) ? "\u2014" : nf.format(Math.round(n)); }
  function pct(x, d) { return x == null || !isFinite(x) ? "\u2014" : (100 * x).toFixed(d == null ? 1 : d) + "%"; }
  function num(x, d) { return x == null || !isFinite(x) ? "\u2014" : Number(x).toFixed(d == null ? 3 : d); }
  function clamp(v, a, b) { return Math.max(a, Math.min(b, v)); }

  function fatal(msg) {
    const f = $("fatal");
    f.textContent = msg;
    f.hidden = false;
    window.NNSIG_READY = "error";
  }

  if (!S) { fatal("The viewer is incomplete: sankey.js did not load."); return; }
  if (!D || typeof D !== "object" || !D.splits || typeof D.splits !== "object") {
    fatal("No report data: data.js is missing or empty. Write the report again with `nnsig report`.");
    return;
  }

  // ------------------------------------------------------------------ data

  const splitNames = Object.keys(D.splits).filter(function (k) {
    return D.splits[k] && Array.isArray(D.splits[k].rows);
  });
  if (!splitNames.length) { fatal("The report data has no split with rows."); return; }

  const classes = Array.isArray(D.classes) ? D.classes : [];
  let nClasses = classes.length;
  let maxPath = 0;
  for (const s of splitNames) {
    for (const r of D.splits[s].rows) {
      nClasses = Math.max(nClasses, r.input + 1, r.output + 1);
      if (r.path) maxPath = Math.max(maxPath, r.path.length);
    }
  }
  const layers = (Array.isArray(D.layers) && D.layers.length ? D.layers : new Array(maxPath).fill(null))
    .map(function (n, i) { return n == null ? "layer " + (i + 1) : String(n); });
  const nLayers = layers.length;
  const modelLayers = D.model && Array.isArray(D.model.layers) ? D.model.layers : [];
  const layerMeta = layers.map(function (name, i) {
    return modelLayers.find(function (l) { return l && String(l.name) === name; }) || modelLayers[i] || {};
  });
  const analysis = D.analysis || {};
  const nClusters = Array.isArray(analysis.n_clusters) ? analysis.n_clusters : [];
  const trainSet = Array.isArray(D.train_classes) ? new Set(D.train_classes) : null;
  const typical = Array.isArray(D.typical)
    ? D.typical.map(function (perClass) {
      return Array.isArray(perClass) ? perClass.map(function (ids) { return new Set(ids || []); }) : [];
    })
    : null;
  const thumbs = D.thumbnails && D.thumbnails.images && Array.isArray(D.thumbnails.shape) ? D.thumbnails : null;

  function className(i) {
    const n = i >= 0 && i < classes.length ? classes[i] : null;
    return n == null ? String(i) : String(n);
  }
  function isUnseen(c) { return trainSet ? !trainSet.has(c) : false; }
  const colorOf = S.classColor;
  function colLabel(col) {
    return col === 0 ? "Input class" : col === nLayers + 1 ? "Output class" : layers[col - 1];
  }

  const prepared = {};
  function prep(name) {
    if (prepared[name]) return prepared[name];
    const sp = D.splits[name];
    let total = 0, hasScore = false;
    const rows = sp.rows.map(function (r, i) {
      const path = Array.isArray(r.path) ? r.path : [];
      const mis = r.input !== r.output;
      const unseen = isUnseen(r.input);
      let div = null;
      if (mis && !unseen && typical) {
        div = -1;
        for (let l = 0; l < nLayers; l++) {
          const t = typical[l] && typical[l][r.input];
          if (t && t.size && !t.has(path[l])) { div = l; break; }
        }
      }
      const score = r.score == null || !isFinite(r.score) ? null : Number(r.score);
      if (score != null) hasScore = true;
      const count = Number(r.count) || 0;
      total += count;
      const tokens = Array.isArray(r.tokens) ? r.tokens : null;  // token row spaces only
      return { i: i, input: r.input, output: r.output, path: path, sig: path.join("\u2009\u2192\u2009"),
               count: count, score: score, mis: mis, unseen: unseen, div: div, tokens: tokens };
    });
    const clusters = [];
    for (let l = 0; l < nLayers; l++) {
      const m = new Map();
      const list = sp.clusters && Array.isArray(sp.clusters[l]) ? sp.clusters[l] : [];
      list.forEach(function (c, idx) { if (c) m.set(c.id == null ? idx : c.id, c); });
      clusters.push(m);
    }
    const present = new Set();
    for (const r of rows) present.add(r.input);
    prepared[name] = { name: name, sp: sp, rows: rows, total: total, clusters: clusters,
                       present: present, hasScore: hasScore, hasTokens: sp.level === "tokens" };
    return prepared[name];
  }

  // ------------------------------------------------------------------ state

  const state = {
    split: splitNames[0],
    view: "overview",
    f: { input: -1, output: -1, outcome: "all", seen: "all" },
    focus: null,        // node key "col:id"
    selected: null,     // table group key
    sort: { key: "count", dir: -1 },
    limit: PAGE,
    threshold: {},      // split -> bin index
    tab: "details",
  };
  let cur = { P: null, rows: [], groups: [], byKey: new Map(), graph: null, parts: null, total: 0 };
  let ready = false;

  function focusParts() {
    if (!state.focus) return null;
    const k = state.focus.split(":");
    return { col: +k[0], id: +k[1] };
  }

  function rowValueAt(r, col) {
    return col === 0 ? r.input : col === nLayers + 1 ? r.output : r.path[col - 1];
  }

  function passes(r) {
    const f = state.f;
    if (f.input >= 0 && r.input !== f.input) return false;
    if (f.output >= 0 && r.output !== f.output) return false;
    if (f.outcome === "correct" && r.mis) return false;
    if (f.outcome === "misclassified" && !r.mis) return false;
    if (f.outcome.slice(0, 4) === "div:" && !(r.mis && r.div === +f.outcome.slice(4))) return false;
    if (f.seen === "seen" && r.unseen) return false;
    if (f.seen === "unseen" && !r.unseen) return false;
    return true;
  }

  // ------------------------------------------------------------------ grouping & sorting

  function groupRows(rows, view) {
    if (view === "overview") {
      return rows.map(function (r) {
        return { key: "r" + r.i, rows: [r], input: r.input, output: r.output, inputs: null, outputs: null,
                 path: r.path, sig: r.sig, count: r.count, correct: r.mis ? 0 : r.count, score: r.score,
                 div: r.mis ? r.div : null, unseen: r.unseen, mis: r.mis, tokens: tokenCounts([r]) };
      });
    }
    const m = new Map();
    for (const r of rows) {
      const key = view === "input" ? "i" + r.input + "|" + r.path.join(",")
        : view === "output" ? "o" + r.path.join(",") + "|" + r.output : "s" + r.path.join(",");
      let g = m.get(key);
      if (!g) {
        g = { key: key, rows: [], input: -1, output: -1, inputs: new Map(), outputs: new Map(),
              path: r.path, sig: r.sig, count: 0, correct: 0, sw: 0, sc: 0, div: null, unseen: false };
        m.set(key, g);
      }
      g.rows.push(r);
      g.count += r.count;
      if (!r.mis) g.correct += r.count;
      g.inputs.set(r.input, (g.inputs.get(r.input) || 0) + r.count);
      g.outputs.set(r.output, (g.outputs.get(r.output) || 0) + r.count);
      if (r.score != null) { g.sw += r.count; g.sc += r.score * r.count; }
      if (view === "input" && r.mis && r.div != null) g.div = r.div;
      if (r.unseen) g.unseen = true;
    }
    const out = Array.from(m.values());
    for (const g of out) {
      g.tokens = tokenCounts(g.rows);
      g.score = g.sw ? g.sc / g.sw : null;
      g.input = argmax(g.inputs);
      g.output = argmax(g.outputs);
      if (view === "input") g.inputs = null;
      if (view === "output") g.outputs = null;
      g.mis = g.correct === 0;
    }
    return out;
  }

  // Token row spaces: the tokens on a group's rows (label -> count), most frequent kept per row.
  function tokenCounts(rows) {
    const m = new Map();
    for (const r of rows) {
      if (!r.tokens) continue;
      for (const t of r.tokens) {
        if (Array.isArray(t) && t.length === 2) m.set(String(t[0]), (m.get(String(t[0])) || 0) + (Number(t[1]) || 0));
      }
    }
    return m;
  }

  function argmax(m) {
    let best = -1, bv = -1;
    for (const [k, v] of m) if (v > bv || (v === bv && k < best)) { bv = v; best = k; }
    return best;
  }

  function cmpPath(a, b) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
    return a.length - b.length;
  }

  function sortGroups(groups) {
    const k = state.sort.key, dir = state.sort.dir;
    function val(g) {
      switch (k) {
        case "input": return g.input;
        case "output": return g.output;
        case "acc": return g.count ? g.correct / g.count : 0;
        case "score": return g.score;
        case "div": return g.div == null ? null : g.div < 0 ? nLayers : g.div;
        default: return g.count;
      }
    }
    groups.sort(function (a, b) {
      let c = 0;
      if (k === "sig") c = cmpPath(a.path, b.path) * dir;
      else {
        const va = val(a), vb = val(b);
        if (va == null || vb == null) { if (va != null) return -1; if (vb != null) return 1; }
        else c = (va - vb) * dir;
      }
      return c || b.count - a.count || cmpPath(a.path, b.path) || a.input - b.input || a.output - b.output;
    });
    return groups;
  }

  // ------------------------------------------------------------------ header, runs, splits

  function setupHeader() {
    const title = D.title ? String(D.title) : "nnsig report";
    $("title").textContent = title;
    document.title = title + " \u2014 nnsig";
    const m = D.model || {};
    const bits = [];
    if (m.model_class) bits.push(String(m.model_class));
    if (m.framework) bits.push(String(m.framework));
    if (m.parameters != null) bits.push(fmt(m.parameters) + " parameters");
    bits.push(nLayers + (nLayers === 1 ? " layer" : " layers") + " analysed");
    if (D.store) bits.push(String(D.store));
    $("subtitle").textContent = bits.join(" \u00b7 ");
    const made = [];
    if (D.created) made.push("created " + String(D.created));
    if (analysis.name) made.push("analysis \u201c" + String(analysis.name) + "\u201d");
    $("created").textContent = made.join(" \u00b7 ");
    if (D.format_version != null && D.format_version > 1) {
      const w = $("warning");
      w.textContent = "This report uses data format " + D.format_version +
        ", newer than this viewer (1): some parts may not show.";
      w.hidden = false;
    }

    if (RUNS && Array.isArray(RUNS.runs) && RUNS.runs.length) {
      const sel = $("run-select");
      for (const r of RUNS.runs) {
        const label = String(r.title || r.dir) + (r.created ? " \u00b7 " + String(r.created).slice(0, 16).replace("T", " ") : "");
        const o = el("option", { value: String(r.dir), text: label });
        if (r.dir === RUNS.current) o.selected = true;
        sel.append(o);
      }
      sel.addEventListener("change", function () {
        window.location.href = "../" + encodeURIComponent(sel.value) + "/index.html";
      });
      $("runs").hidden = false;
    }
  }

  function setupSplits() {
    const box = $("split-switch");
    clear(box);
    for (const s of splitNames) {
      const sp = D.splits[s];
      const b = el("button", { type: "button", role: "radio", "data-split": s, class: "seg-btn",
                               "aria-checked": String(s === state.split), tabindex: s === state.split ? "0" : "-1" },
                   el("span", { class: "seg-name", text: s }),
                   el("span", { class: "seg-sub", text: fmt(sp.n_samples) }));
      b.addEventListener("click", function () { setSplit(s); });
      box.append(b);
    }
    box.addEventListener("keydown", function (e) {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const i = splitNames.indexOf(state.split);
      const j = (i + (e.key === "ArrowRight" ? 1 : -1) + splitNames.length) % splitNames.length;
      setSplit(splitNames[j]);
      box.querySelector('[data-split="' + CSS.escape(splitNames[j]) + '"]').focus();
      e.preventDefault();
    });
  }

  function setSplit(s) {
    if (s === state.split) return;
    state.split = s;
    state.selected = null;
    state.focus = null;
    state.limit = PAGE;
    for (const b of $("split-switch").children) {
      const on = b.getAttribute("data-split") === s;
      b.setAttribute("aria-checked", String(on));
      b.tabIndex = on ? 0 : -1;
    }
    onSplitChanged();
  }

  // ------------------------------------------------------------------ filters

  function setupFilters() {
    for (const id of ["f-input", "f-output"]) {
      const sel = $(id);
      sel.append(el("option", { value: "-1", text: "All classes" }));
      for (let c = 0; c < nClasses; c++) {
        sel.append(el("option", { value: String(c), text: className(c) + (isUnseen(c) ? " (unseen)" : "") }));
      }
    }
    const oc = $("f-outcome");
    oc.append(el("option", { value: "all", text: "All samples" }));
    oc.append(el("option", { value: "correct", text: "Correctly classified" }));
    oc.append(el("option", { value: "misclassified", text: "Misclassified" }));
    if (typical) {
      layers.forEach(function (name, l) {
        oc.append(el("option", { value: "div:" + l, text: "Misclassified, leaving typical clusters at " + name }));
      });
      oc.append(el("option", { value: "div:-1", text: "Misclassified along typical clusters" }));
    }
    if (!trainSet) $("f-seen").disabled = true;

    $("view").addEventListener("change", function (e) {
      state.view = e.target.value;
      state.selected = null;
      state.limit = PAGE;
      if (state.sort.key === "div" && state.view !== "overview" && state.view !== "input") state.sort = { key: "count", dir: -1 };
      update();
    });
    $("f-input").addEventListener("change", function (e) { setFilter("input", +e.target.value); });
    $("f-output").addEventListener("change", function (e) { setFilter("output", +e.target.value); });
    $("f-outcome").addEventListener("change", function (e) { setFilter("outcome", e.target.value); });
    $("f-seen").addEventListener("change", function (e) { setFilter("seen", e.target.value); });
    $("reset").addEventListener("click", resetAll);
  }

  function setFilter(k, v) {
    state.f[k] = v;
    state.limit = PAGE;
    syncFilterControls();
    update();
  }

  function syncFilterControls() {
    $("f-input").value = String(state.f.input);
    $("f-output").value = String(state.f.output);
    $("f-outcome").value = state.f.outcome;
    $("f-seen").value = state.f.seen;
    $("view").value = state.view;
  }

  function resetAll() {
    state.f = { input: -1, output: -1, outcome: "all", seen: "all" };
    state.focus = null;
    state.selected = null;
    state.limit = PAGE;
    syncFilterControls();
    update();
  }

  // ------------------------------------------------------------------ legend & stats

  function renderLegend() {
    const box = clear($("legend"));
    const P = cur.P;
    const present = new Set(P.present);
    for (const r of P.rows) present.add(r.output);
    Array.from(present).sort(function (a, b) { return a - b; }).forEach(function (c) {
      const on = state.f.input === c;
      const b = el("button", { type: "button", class: "legend-item" + (on ? " on" : ""), "aria-pressed": String(on),
                               title: "Show only input class " + className(c) },
                   el("i", { class: "sw", style: { background: colorOf(c) } }),
                   el("span", { class: "legend-name", text: className(c) }),
                   isUnseen(c) ? el("span", { class: "tag", text: "unseen" }) : null);
      b.addEventListener("click", function () { setFilter("input", state.f.input === c ? -1 : c); });
      box.append(b);
    });
  }

  function stat(label, value, sub, cls) {
    return el("div", { class: "stat" + (cls ? " " + cls : "") },
              el("div", { class: "stat-label", text: label }),
              el("div", { class: "stat-value", text: value }),
              sub ? el("div", { class: "stat-sub", text: sub }) : null);
  }

  function renderStats() {
    const box = clear($("stats"));
    const sp = cur.P.sp;
    let mis = 0;
    for (const r of cur.rows) if (r.mis) mis += r.count;
    box.append(
      stat("Split", state.split, fmt(sp.n_samples != null ? sp.n_samples : cur.P.total) +
           (cur.P.hasTokens ? " tokens" : " samples")),
      stat("Accuracy", pct(sp.accuracy), "model, on this split"),
      stat("Signatures", fmt(sp.n_signatures), "distinct cluster paths"),
      stat("Shown", fmt(cur.total), cur.P.total ? pct(cur.total / cur.P.total) + " of the split" : ""),
      stat("Misclassified shown", fmt(mis), cur.total ? pct(mis / cur.total) + " of shown" : "", mis ? "bad" : ""),
      stat("Table rows", fmt(cur.groups.length), viewName(state.view)),
    );
  }

  function viewName(v) {
    return { overview: "input \u00d7 signature \u00d7 output", input: "by input class & signature",
             output: "by output class & signature", signature: "by signature" }[v];
  }

  // ------------------------------------------------------------------ Sankey

  const svg = $("sankey-svg");

  function headers() {
    const hs = [{ title: "Input class", sub: "true label" }];
    layers.forEach(function (name, l) {
      const m = layerMeta[l] || {};
      const bits = [];
      if (m.type) bits.push(String(m.type));
      if (m.units != null) bits.push(fmt(m.units) + " units");
      const k = nClusters[l] != null ? nClusters[l] : cur.P.clusters[l] ? cur.P.clusters[l].size : 0;
      hs.push({ title: name, sub: bits.join(" \u00b7 "), sub2: k + " clusters" });
    });
    hs.push({ title: "Output class", sub: "prediction" });
    return hs;
  }

  function nodeLabel(n) {
    if (n.col === 0 || n.col === nLayers + 1) return className(n.id);
    return "c" + n.id;
  }

  function markReady() {
    window.NNSIG_DRAWS = (window.NNSIG_DRAWS || 0) + 1;
    if (ready) return;
    ready = true;
    try { performance.mark("nnsig-sankey-drawn"); } catch (e) { /* old browsers */ }
    window.NNSIG_READY = true;
    document.documentElement.setAttribute("data-ready", "1");
  }

  let lastWidth = 0;
  function drawSankey() {
    const box = $("sankey");
    const width = Math.max(360, Math.floor(box.clientWidth));
    lastWidth = width;
    const g = S.build(cur.rows, nLayers, nClasses);
    cur.graph = g;
    if (!g.total) {
      clear(svg);
      svg.setAttribute("width", "0");
      svg.setAttribute("height", "0");
      $("empty").hidden = false;
      cur.parts = null;
      markReady();
      return;
    }
    $("empty").hidden = true;
    let maxN = 1;
    for (const c of g.columns) maxN = Math.max(maxN, c.length);
    const headerH = 52;
    const plotH = Math.round(clamp(Math.max(maxN * 26, width * 0.42), 340, 760));
    const height = headerH + plotH + 14;
    function labelW(nodes) {
      let m = 0;
      for (const n of nodes) m = Math.max(m, Math.min(24, className(n.id).length));
      return clamp(m * 6.8 + 12, 34, 176);
    }
    const left = Math.max(labelW(g.columns[0]), 72);
    const right = Math.max(labelW(g.columns[g.nCols - 1]), 92);
    S.layout(g, { x0: left, x1: width - right, y0: headerH + 6, y1: headerH + 6 + plotH,
                  nodeWidth: clamp(Math.round(width / 80), 10, 16), nodePad: 8, minNodeHeight: 2 });
    cur.parts = S.draw(svg, g, { width: width, height: height, colorOf: colorOf, headers: headers(),
                                 headerY: 14, label: nodeLabel, focusKey: state.focus });
    svg.setAttribute("aria-label", "Sankey diagram of " + fmt(g.total) + " samples: input class, " +
                     nLayers + " layers of clusters, output class");
    applyHighlight();
    markReady();
  }

  function selectedGroup() {
    return state.selected ? cur.byKey.get(state.selected) || null : null;
  }

  function applyHighlight() {
    if (!cur.parts) return;
    const g = selectedGroup();
    const rows = g ? g.rows : [];
    const divergeKeys = [];
    for (const r of rows) if (r.mis && r.div != null && r.div >= 0) divergeKeys.push((r.div + 1) + ":" + r.path[r.div]);
    S.highlight(svg, cur.parts, cur.graph, rows, { colorOf: colorOf, divergeKeys: divergeKeys });
  }

  // tooltip
  const tip = $("tooltip");
  function showTip(e, content) {
    clear(tip);
    tip.append(content);
    tip.hidden = false;
    const pad = 14;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = e.clientX + pad, y = e.clientY + pad;
    if (x + w > window.innerWidth - 4) x = Math.max(4, e.clientX - w - pad);
    if (y + h > window.innerHeight - 4) y = Math.max(4, e.clientY - h - pad);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() { tip.hidden = true; }

  function compList(byClass, total, limit) {
    const entries = [];
    byClass.forEach(function (v, k) { if (v > 0) entries.push([k, v]); });
    entries.sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
    const ul = el("ul", { class: "comp-list" });
    const shown = entries.slice(0, limit || 6);
    for (const [k, v] of shown) {
      ul.append(el("li", null,
                   el("i", { class: "sw", style: { background: colorOf(k) } }),
                   el("span", { class: "cn", text: className(k) }),
                   el("span", { class: "cbar" }, el("span", { style: { width: pct(v / total, 2), background: colorOf(k) } })),
                   el("span", { class: "cv", text: fmt(v) }),
                   el("span", { class: "cp", text: pct(v / total) })));
    }
    if (entries.length > shown.length) {
      let rest = 0;
      for (const [, v] of entries.slice(shown.length)) rest += v;
      ul.append(el("li", { class: "more-classes" },
                   el("span", { text: (entries.length - shown.length) + " more classes: " + fmt(rest) + " (" + pct(rest / total) + ")" })));
    }
    return ul;
  }

  function nodeTitle(n) {
    if (n.col === 0) return "Input class " + className(n.id);
    if (n.col === nLayers + 1) return "Output class " + className(n.id);
    return layers[n.col - 1] + " \u00b7 cluster " + n.id;
  }

  function nodeTip(n) {
    const box = el("div");
    box.append(el("div", { class: "tt-title", text: nodeTitle(n) }));
    box.append(el("div", { class: "tt-line", text: fmt(n.value) + " samples shown (" + pct(n.value / cur.graph.total) + ")" }));
    if (n.col > 0 && n.col <= nLayers) {
      const c = cur.P.clusters[n.col - 1].get(n.id);
      if (c) box.append(el("div", { class: "tt-line muted", text: fmt(c.count) + " in the split \u00b7 purity " + num(c.purity, 2) }));
    }
    box.append(el("div", { class: "tt-sub", text: n.col === nLayers + 1 ? "True classes" : "Class composition" }));
    box.append(compList(n.byClass, n.value, 6));
    return box;
  }

  function linkTip(l) {
    return el("div", null,
              el("div", { class: "tt-title" }, el("i", { class: "sw", style: { background: colorOf(l.cls) } }),
                 "Class " + className(l.cls)),
              el("div", { class: "tt-line", text: shortNode(l.source) + "  \u2192  " + shortNode(l.target) }),
              el("div", { class: "tt-line", text: fmt(l.value) + " samples (" + pct(l.value / l.source.value) +
                          " of " + shortNode(l.source) + ")" }));
  }

  function shortNode(n) {
    if (n.col === 0) return "input " + className(n.id);
    if (n.col === nLayers + 1) return "output " + className(n.id);
    return layers[n.col - 1] + " c" + n.id;
  }

  function setupSankeyEvents() {
    svg.addEventListener("mousemove", function (e) {
      if (!cur.graph) return;
      const t = e.target;
      const ne = t.closest && t.closest("[data-node]");
      if (ne) { const n = cur.graph.nodes.get(ne.getAttribute("data-node")); if (n) { showTip(e, nodeTip(n)); return; } }
      const le = t.closest && t.closest("[data-link]");
      if (le) { const l = cur.graph.links.get(le.getAttribute("data-link")); if (l) { showTip(e, linkTip(l)); return; } }
      hideTip();
    });
    svg.addEventListener("mouseleave", hideTip);
    window.addEventListener("scroll", hideTip, { passive: true });
    svg.addEventListener("click", function (e) {
      const ne = e.target.closest && e.target.closest("[data-node]");
      if (!ne) return;
      toggleFocus(ne.getAttribute("data-node"));
    });
    if (window.ResizeObserver) {
      let pending = false;
      new ResizeObserver(function () {
        if (pending) return;
        pending = true;
        requestAnimationFrame(function () {
          pending = false;
          if (cur.P && Math.abs(Math.floor($("sankey").clientWidth) - lastWidth) >= 2) drawSankey();
        });
      }).observe($("sankey"));
    } else {
      window.addEventListener("resize", function () { if (cur.P) drawSankey(); });
    }
  }

  function toggleFocus(key) {
    state.focus = state.focus === key ? null : key;
    state.limit = PAGE;
    hideTip();
    update();
    if (state.focus) showTab("details");
  }

  // ------------------------------------------------------------------ table

  const COLS = {
    overview: ["input", "sig", "output", "count", "share", "score", "div"],
    input: ["input", "sig", "outputs", "count", "share", "acc", "score", "div"],
    output: ["inputs", "sig", "output", "count", "share", "acc", "score"],
    signature: ["inputs", "sig", "outputs", "count", "share", "acc", "score"],
  };
  const COLDEF = {
    input: { label: "Input class", sort: "input" },
    inputs: { label: "Input classes", sort: "input" },
    sig: { label: "Signature", sort: "sig", title: "Cluster id per layer: " },
    output: { label: "Output class", sort: "output" },
    outputs: { label: "Output classes", sort: "output" },
    count: { label: "Occurrences", sort: "count", num: true },
    share: { label: "Share", num: true },
    acc: { label: "Correct", sort: "acc", num: true },
    score: { label: "Score", sort: "score", num: true },
    tokens: { label: "Tokens", title: "Token row space: the most frequent tokens (positions or token ids) on these rows" },
    div: { label: "Leaves typical at", sort: "div",
           title: "Misclassified rows: first layer whose cluster is not typical of the true class" },
  };

  function tableCols() {
    const cols = COLS[state.view].filter(function (c) { return c !== "score" || cur.P.hasScore; });
    if (cur.P.hasTokens) cols.splice(cols.indexOf("sig") + 1, 0, "tokens");
    return cols;
  }

  function renderTableHead() {
    const thead = clear($("table").tHead);
    const tr = el("tr");
    for (const c of tableCols()) {
      const def = COLDEF[c];
      const th = el("th", { scope: "col", class: def.num ? "num" : null,
                            title: def.title ? def.title + (c === "sig" ? layers.join(" \u2192 ") : "") : null });
      if (def.sort) {
        const active = state.sort.key === def.sort;
        if (active) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
        th.append(el("button", { type: "button", class: "sort" + (active ? " active" : ""), "data-sort": def.sort },
                     def.label, el("span", { class: "arrow", "aria-hidden": "true",
                                             text: active ? (state.sort.dir > 0 ? "\u25b2" : "\u25bc") : "\u25b4\u25be" })));
      } else {
        th.textContent = def.label;
      }
      tr.append(th);
    }
    thead.append(tr);
  }

  function classChip(c) {
    return el("span", { class: "cls" },
              el("i", { class: "sw", style: { background: colorOf(c) } }),
              el("span", { class: "cls-name", text: className(c) }),
              isUnseen(c) ? el("span", { class: "tag", text: "unseen" }) : null);
  }

  function classesCell(m) {
    const entries = Array.from(m.entries()).sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
    const box = el("span", { class: "multi" });
    for (const [k, v] of entries.slice(0, 3)) {
      box.append(el("span", { class: "cls" },
                    el("i", { class: "sw", style: { background: colorOf(k) } }),
                    el("span", { class: "cls-name", text: className(k) }),
                    el("span", { class: "times", text: "\u00d7" + fmt(v) })));
    }
    if (entries.length > 3) box.append(el("span", { class: "muted", text: "+" + (entries.length - 3) }));
    return box;
  }

  function tokensCell(m) {
    const entries = Array.from(m.entries()).sort(function (a, b) { return b[1] - a[1] || (a[0] < b[0] ? -1 : 1); });
    const box = el("span", { class: "multi" });
    for (const [k, v] of entries.slice(0, 3)) {
      box.append(el("span", { class: "cls" }, el("code", { class: "tok", text: k }),
                    el("span", { class: "times", text: "\u00d7" + fmt(v) })));
    }
    if (entries.length > 3) box.append(el("span", { class: "muted", text: "+" + (entries.length - 3) }));
    return box;
  }

  function sigCell(g) {
    const code = el("code", { class: "sig" });
    g.path.forEach(function (id, l) {
      if (l) code.append(el("span", { class: "arr", "aria-hidden": "true", text: "\u2192" }));
      const isDiv = g.div != null && g.div === l;
      code.append(el("span", { class: "cid" + (isDiv ? " div" : ""), title: layers[l] + (isDiv ? ": leaves the typical clusters here" : ""),
                               text: String(id) }));
    });
    return code;
  }

  function thresholdValue() {
    const sc = cur.P.sp.scores;
    if (!sc || !Array.isArray(sc.bins)) return null;
    const t = state.threshold[state.split];
    return t == null ? null : sc.bins[t];
  }

  function isFlagged(g, thr) { return thr != null && g.score != null && g.score >= thr; }

  function renderTableBody() {
    const tbody = clear($("table").tBodies[0]);
    const cols = tableCols();
    const thr = thresholdValue();
    const total = cur.total || 1;
    const shown = cur.groups.slice(0, state.limit);
    const frag = document.createDocumentFragment();
    let first = true;
    for (const g of shown) {
      const sel = g.key === state.selected;
      const cls = [g.mis ? "mis" : g.correct < g.count ? "mixed" : "", isFlagged(g, thr) ? "flagged" : "", sel ? "selected" : ""]
        .filter(Boolean).join(" ");
      const tr = el("tr", { "data-key": g.key, class: cls || null, "aria-selected": String(sel),
                            tabindex: (sel || (first && !state.selected)) ? "0" : "-1" });
      first = false;
      for (const c of cols) {
        let td;
        switch (c) {
          case "input": td = el("td", null, classChip(g.input)); break;
          case "output": td = el("td", null, classChip(g.output)); break;
          case "inputs": td = el("td", null, classesCell(g.inputs)); break;
          case "outputs": td = el("td", null, classesCell(g.outputs)); break;
          case "sig": td = el("td", null, sigCell(g)); break;
          case "tokens": td = el("td", null, tokensCell(g.tokens || new Map())); break;
          case "count": td = el("td", { class: "num", text: fmt(g.count) }); break;
          case "share": td = el("td", { class: "num muted", text: pct(g.count / total) }); break;
          case "acc": td = el("td", { class: "num", text: pct(g.correct / g.count, 0) }); break;
          case "score":
            td = el("td", { class: "num" }, num(g.score, 3),
                    isFlagged(g, thr) ? el("span", { class: "flag", title: "score above the threshold", text: "flagged" }) : null);
            break;
          case "div":
            td = el("td", { class: "div-cell", text: g.div == null ? (g.unseen && g.mis ? "unseen class" : "")
              : g.div < 0 ? "typical path" : layers[g.div] });
            break;
        }
        tr.append(td);
      }
      frag.append(tr);
    }
    tbody.append(frag);
    if (state.selected && !tbody.querySelector('tr[tabindex="0"]') && tbody.firstElementChild) tbody.firstElementChild.tabIndex = 0;
    const more = $("more");
    const left = cur.groups.length - shown.length;
    more.hidden = left <= 0;
    more.textContent = "Show " + fmt(Math.min(left, PAGE)) + " more (" + fmt(left) + " left)";
    let flaggedSamples = 0;
    if (thr != null) for (const g of cur.groups) if (isFlagged(g, thr)) flaggedSamples += g.count;
    const unit = cur.P.hasTokens ? " tokens \u00b7 " : " samples \u00b7 ";
    $("table-note").textContent = fmt(cur.groups.length) + " rows \u00b7 " + fmt(cur.total) + unit +
      "click a row or press Enter to highlight its path" +
      (thr != null ? " \u00b7 " + fmt(flaggedSamples) + " samples flagged at score \u2265 " + num(thr, 3) : "");
  }

  function renderTable() { renderTableHead(); renderTableBody(); }

  function rowEls() { return Array.from($("table").tBodies[0].rows); }

  function focusRow(tr) {
    for (const r of rowEls()) if (r !== tr && r.tabIndex === 0) r.tabIndex = -1;
    tr.tabIndex = 0;
    tr.focus();
  }

  function select(key) {
    state.selected = state.selected === key ? null : key;
    for (const r of rowEls()) {
      const on = r.getAttribute("data-key") === state.selected;
      r.classList.toggle("selected", on);
      r.setAttribute("aria-selected", String(on));
    }
    applyHighlight();
    renderDetails();
    if (state.selected) showTab("details");
  }

  function setupTableEvents() {
    const table = $("table");
    table.tHead.addEventListener("click", function (e) {
      const b = e.target.closest("button[data-sort]");
      if (!b) return;
      const k = b.getAttribute("data-sort");
      if (state.sort.key === k) state.sort.dir = -state.sort.dir;
      else state.sort = { key: k, dir: k === "count" || k === "score" || k === "acc" ? -1 : 1 };
      sortGroups(cur.groups);
      renderTable();
      const nb = table.tHead.querySelector('button[data-sort="' + k + '"]');
      if (nb) nb.focus();
    });
    const tbody = table.tBodies[0];
    tbody.addEventListener("click", function (e) {
      const tr = e.target.closest("tr[data-key]");
      if (!tr) return;
      focusRow(tr);
      select(tr.getAttribute("data-key"));
    });
    tbody.addEventListener("keydown", function (e) {
      const tr = e.target.closest("tr[data-key]");
      if (!tr) return;
      const rows = rowEls();
      const i = rows.indexOf(tr);
      let j = null;
      switch (e.key) {
        case "ArrowDown":
          if (i === rows.length - 1 && !$("more").hidden) {
            e.preventDefault();
            showMore();
            focusRow(rowEls()[i + 1]);
            return;
          }
          j = Math.min(rows.length - 1, i + 1);
          break;
        case "ArrowUp": j = Math.max(0, i - 1); break;
        case "PageDown": j = Math.min(rows.length - 1, i + 10); break;
        case "PageUp": j = Math.max(0, i - 10); break;
        case "Home": j = 0; break;
        case "End": j = rows.length - 1; break;
        case "Enter": case " ":
          e.preventDefault();
          select(tr.getAttribute("data-key"));
          return;
        default: return;
      }
      e.preventDefault();
      focusRow(rows[j]);
    });
    $("more").addEventListener("click", showMore);
  }

  function showMore() {
    state.limit += PAGE;
    renderTableBody();
  }

  // ------------------------------------------------------------------ side panels

  const TABS = ["details", "model", "errors", "scores"];
  function showTab(name) {
    state.tab = name;
    for (const t of TABS) {
      const b = $("tab-" + t), p = $("pane-" + t);
      const on = t === name;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
      p.hidden = !on;
    }
  }

  function setupTabs() {
    for (const t of TABS) $("tab-" + t).addEventListener("click", function () { showTab(t); });
    $("tab-details").parentNode.addEventListener("keydown", function (e) {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const vis = TABS.filter(function (t) { return !$("tab-" + t).hidden; });
      const i = vis.indexOf(state.tab);
      const n = vis[(i + (e.key === "ArrowRight" ? 1 : -1) + vis.length) % vis.length];
      showTab(n);
      $("tab-" + n).focus();
      e.preventDefault();
    });
  }

  function section(title) {
    return el("h3", { class: "pane-h", text: title });
  }

  function compBar(byClass, total) {
    const bar = el("div", { class: "comp-bar", role: "img" });
    const parts = [];
    byClass.forEach(function (v, k) {
      if (!(v > 0)) return;
      parts.push(className(k) + " " + pct(v / total));
      bar.append(el("span", { title: className(k) + ": " + fmt(v) + " (" + pct(v / total) + ")",
                              style: { width: (100 * v / total).toFixed(3) + "%", background: colorOf(k) } }));
    });
    bar.setAttribute("aria-label", "Class composition: " + parts.join(", "));
    return bar;
  }

  function kv(pairs) {
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of pairs) {
      if (v == null || v === "") continue;
      dl.append(el("dt", { text: k }), el("dd", null, v));
    }
    return dl;
  }

  function thumbCanvas(key) {
    if (!thumbs) return null;
    const b64 = thumbs.images[key];
    if (typeof b64 !== "string") return null;
    const h = thumbs.shape[0] | 0, w = thumbs.shape[1] | 0, ch = (thumbs.shape[2] | 0) || 1;
    if (!(h > 0 && w > 0)) return null;
    let bin;
    try { bin = atob(b64); } catch (e) { return null; }
    if (bin.length < h * w * ch) return null;
    const cv = el("canvas", { width: w, height: h, class: "thumb", title: key, role: "img", "aria-label": "exemplar " + key });
    const ctx = cv.getContext("2d");
    if (!ctx) return null;
    const img = ctx.createImageData(w, h);
    const px = img.data;
    for (let p = 0; p < h * w; p++) {
      const o = p * 4, s = p * ch;
      if (ch >= 3) { px[o] = bin.charCodeAt(s); px[o + 1] = bin.charCodeAt(s + 1); px[o + 2] = bin.charCodeAt(s + 2); }
      else { const v = bin.charCodeAt(s); px[o] = v; px[o + 1] = v; px[o + 2] = v; }
      px[o + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return cv;
  }

  function exemplars(cluster, title) {
    if (!thumbs || !cluster || !Array.isArray(cluster.exemplars) || !cluster.exemplars.length) return null;
    const box = el("div", { class: "thumbs" });
    for (const k of cluster.exemplars.slice(0, 12)) {
      const cv = thumbCanvas(String(k));
      if (cv) box.append(cv);
    }
    return box.childNodes.length ? el("div", null, section(title || "Exemplars"), el("p", { class: "small muted", text: "nearest to the cluster centre first" }), box) : null;
  }

  function typicalOf(l, id) {
    if (!typical || !typical[l]) return [];
    const out = [];
    typical[l].forEach(function (set, c) { if (set.has(id)) out.push(c); });
    return out;
  }

  function chips(list) {
    const box = el("div", { class: "chips" });
    if (!list.length) box.append(el("span", { class: "muted", text: "none" }));
    for (const c of list) box.append(classChip(c));
    return box;
  }

  function clusterDetails(l, id, pane) {
    const c = cur.P.clusters[l].get(id);
    const n = cur.graph && cur.graph.nodes.get((l + 1) + ":" + id);
    const m = layerMeta[l] || {};
    pane.append(el("h3", { class: "pane-title" }, el("span", { class: "muted", text: "Cluster " }), String(id),
                   el("span", { class: "muted", text: " of " }), layers[l]));
    pane.append(kv([
      ["Layer", (m.type ? String(m.type) + " \u00b7 " : "") + (m.units != null ? fmt(m.units) + " units" : "")],
      ["Samples in split", c ? fmt(c.count) : "\u2014"],
      ["Shown now", n ? fmt(n.value) : "0"],
      ["Purity", c ? num(c.purity, 3) : "\u2014"],
    ]));
    if (c && Array.isArray(c.by_class)) {
      const total = c.by_class.reduce(function (a, b) { return a + (b || 0); }, 0) || 1;
      pane.append(section("Class composition (whole split)"), compBar(c.by_class, total), compList(c.by_class, total, 8));
    } else if (n) {
      pane.append(section("Class composition (shown)"), compBar(n.byClass, n.value), compList(n.byClass, n.value, 8));
    }
    if (typical) pane.append(section("Typical cluster of"), chips(typicalOf(l, id)));
    const ex = exemplars(c);
    if (ex) pane.append(ex);
  }

  function classNodeDetails(col, id, pane) {
    const n = cur.graph && cur.graph.nodes.get(col + ":" + id);
    const isIn = col === 0;
    pane.append(el("h3", { class: "pane-title" }, el("span", { class: "muted", text: isIn ? "Input class " : "Output class " }),
                   classChip(id)));
    if (!n) { pane.append(el("p", { class: "muted", text: "No sample shown." })); return; }
    const other = new Map();
    let correct = 0;
    for (const r of cur.rows) {
      if ((isIn ? r.input : r.output) !== id) continue;
      const k = isIn ? r.output : r.input;
      other.set(k, (other.get(k) || 0) + r.count);
      if (!r.mis) correct += r.count;
    }
    pane.append(kv([["Samples shown", fmt(n.value)], [isIn ? "Recall" : "Precision", pct(correct / n.value)],
                    ["Seen in training", trainSet ? (isUnseen(id) ? "no" : "yes") : null]]));
    const arr = new Array(nClasses).fill(0);
    other.forEach(function (v, k) { arr[k] = v; });
    pane.append(section(isIn ? "Predicted as" : "True classes"), compBar(arr, n.value), compList(arr, n.value, 8));
  }

  function signatureDetails(g, pane) {
    pane.append(el("h3", { class: "pane-title" }, el("span", { class: "muted", text: "Signature " }), sigCell(g)));
    pane.append(kv([
      [g.inputs ? "Input classes" : "Input class", g.inputs ? classesCell(g.inputs) : classChip(g.input)],
      [g.outputs ? "Output classes" : "Output class", g.outputs ? classesCell(g.outputs) : classChip(g.output)],
      ["Occurrences", fmt(g.count) + " (" + pct(g.count / (cur.total || 1)) + " of shown)"],
      ["Correct", pct(g.correct / g.count)],
      ["Mean score", g.score != null ? num(g.score, 3) : null],
    ]));
    // Misclassification focus.
    const misRows = g.rows.filter(function (r) { return r.mis; });
    if (misRows.length) {
      const r = misRows.reduce(function (a, b) { return b.count > a.count ? b : a; });
      let msg;
      if (r.unseen) msg = "Class " + className(r.input) + " was not seen when the clusters were fitted: it has no typical clusters.";
      else if (r.div == null) msg = null;
      else if (r.div < 0) msg = "Misclassified as " + className(r.output) + " although every cluster on the path is typical of class " + className(r.input) + ".";
      else msg = "Misclassified as " + className(r.output) + ": the path leaves the clusters typical of class " + className(r.input) +
        " at " + layers[r.div] + " (cluster " + r.path[r.div] + ").";
      if (msg) pane.append(el("p", { class: "callout bad", text: msg }));
    }
    pane.append(section("Path"));
    const ol = el("ol", { class: "path-list" });
    g.path.forEach(function (id, l) {
      const c = cur.P.clusters[l].get(id);
      const isDiv = g.div != null && g.div === l;
      const typ = typicalOf(l, id);
      const b = el("button", { type: "button", class: "link-btn", title: "Keep only the flows through this cluster",
                               text: layers[l] + " \u00b7 c" + id });
      b.addEventListener("click", function () { toggleFocus((l + 1) + ":" + id); });
      const li = el("li", { class: isDiv ? "div" : null }, b);
      if (c && Array.isArray(c.by_class)) {
        const total = c.by_class.reduce(function (a, v) { return a + (v || 0); }, 0) || 1;
        li.append(compBar(c.by_class, total));
        li.append(el("div", { class: "small muted", text: "purity " + num(c.purity, 2) +
                     (typical ? " \u00b7 typical of " + (typ.length ? typ.map(className).join(", ") : "no class") : "") }));
      }
      if (isDiv) li.append(el("div", { class: "small bad-text", text: "\u26a0 first cluster not typical of the true class" }));
      ol.append(li);
    });
    pane.append(ol);
    const l = g.div != null && g.div >= 0 ? g.div : nLayers - 1;
    const ex = exemplars(cur.P.clusters[l] && cur.P.clusters[l].get(g.path[l]),
                         "Exemplars of " + layers[l] + " \u00b7 c" + g.path[l]);
    if (ex) pane.append(ex);
  }

  function renderDetails() {
    const pane = clear($("pane-details"));
    const g = selectedGroup();
    if (g) { signatureDetails(g, pane); return; }
    const f = focusParts();
    if (f && f.col >= 1 && f.col <= nLayers) { clusterDetails(f.col - 1, f.id, pane); return; }
    if (f) { classNodeDetails(f.col, f.id, pane); return; }
    pane.append(el("h3", { class: "pane-title", text: "Reading the diagram" }));
    pane.append(el("p", { text: "Each band is a group of samples of one input class (its colour) following their cluster " +
      "in each analysed layer, from the true class on the left to the predicted class on the right. " +
      "Nodes are coloured by the classes they hold." }));
    pane.append(el("ul", { class: "help" },
                   el("li", { text: "Hover a node or band for counts and class composition." }),
                   el("li", { text: "Click a node to keep only the flows through it; click it again, press Esc or Reset to clear." }),
                   el("li", { text: "Click a table row (or focus it and press Enter) to highlight that signature's path." }),
                   el("li", { text: "Red-marked cluster ids: where a misclassified path leaves the clusters typical of its true class." })));
    const sp = cur.P.sp;
    if (Array.isArray(sp.purity)) {
      pane.append(section("Per layer, this split"));
      const t = el("table", { class: "mini" }, el("thead", null, el("tr", null, el("th", { text: "Layer" }),
        el("th", { class: "num", text: "Purity" }), el("th", { class: "num", text: "Entropy (bits)" }))));
      const tb = el("tbody");
      layers.forEach(function (name, l) {
        tb.append(el("tr", null, el("td", { text: name }), el("td", { class: "num", text: num(sp.purity[l], 3) }),
                     el("td", { class: "num", text: num(Array.isArray(sp.entropy) ? sp.entropy[l] : null, 3) })));
      });
      t.append(tb);
      pane.append(t);
    }
  }

  function renderModel() {
    const pane = clear($("pane-model"));
    const m = D.model || {};
    pane.append(el("h3", { class: "pane-title", text: m.model_class ? String(m.model_class) : "Model" }));
    pane.append(kv([
      ["Framework", m.framework != null ? String(m.framework) : null],
      ["Parameters", m.parameters != null ? fmt(m.parameters) : null],
      ["Store", D.store != null ? String(D.store) : null],
      ["Analysis", analysis.name != null ? String(analysis.name) : null],
      ["Clusters fitted on", analysis.fit_split != null ? String(analysis.fit_split) + (analysis.fit_samples != null ? " \u00b7 " + fmt(analysis.fit_samples) + " samples" : "") +
        (analysis.only_correct ? " \u00b7 correctly classified only" : "") : null],
      ["Discretizer", analysis.discretizer != null ? String(analysis.discretizer) : null],
      ["Reduction", analysis.reduce != null ? "PCA to " + String(analysis.reduce) + " dims" : null],
      ["Random state", analysis.random_state != null ? String(analysis.random_state) : null],
    ]));
    pane.append(section("Analysed layers"));
    const sp = cur.P.sp;
    const t = el("table", { class: "mini" });
    t.append(el("thead", null, el("tr", null, el("th", { text: "Layer" }), el("th", { text: "Type" }),
      el("th", { class: "num", text: "Units" }), el("th", { class: "num", text: "Params" }),
      el("th", { class: "num", text: "k" }), el("th", { class: "num", text: "Purity" }))));
    const tb = el("tbody");
    layers.forEach(function (name, l) {
      const lm = layerMeta[l] || {};
      const shape = Array.isArray(lm.shape) ? "(" + lm.shape.join("\u00d7") + ")" : "";
      tb.append(el("tr", null,
        el("td", { text: name, title: name }),
        el("td", { text: lm.type != null ? String(lm.type) : "" }),
        el("td", { class: "num", text: lm.units != null ? fmt(lm.units) : shape, title: shape }),
        el("td", { class: "num", text: lm.parameters != null ? fmt(lm.parameters) : "" }),
        el("td", { class: "num", text: nClusters[l] != null ? String(nClusters[l]) : String(cur.P.clusters[l].size) }),
        el("td", { class: "num", text: Array.isArray(sp.purity) ? num(sp.purity[l], 2) : "" })));
    });
    t.append(tb);
    pane.append(t);
    pane.append(section("Classes"));
    const all = [];
    for (let c = 0; c < nClasses; c++) all.push(c);
    pane.append(el("p", { class: "small muted", text: nClasses + " classes" + (trainSet ? "; clusters fitted on " + trainSet.size : "") }));
    if (trainSet) pane.append(el("div", { class: "small", text: "Fitted (trained) on:" }), chips(all.filter(function (c) { return trainSet.has(c); })));
    for (const s of splitNames) {
      const present = Array.from(prep(s).present).sort(function (a, b) { return a - b; });
      pane.append(el("div", { class: "small", text: "Present in " + s + ":" }), chips(present));
    }
    if (trainSet) {
      const unseen = all.filter(isUnseen);
      if (unseen.length) pane.append(el("div", { class: "small", text: "Unseen during training:" }), chips(unseen));
    }
  }

  function renderErrors() {
    const pane = clear($("pane-errors"));
    const P = cur.P;
    let mis = 0, unseenMis = 0;
    const byDiv = new Array(nLayers).fill(0);
    let never = 0;
    const conf = new Map();
    for (const r of P.rows) {
      if (!r.mis) continue;
      mis += r.count;
      if (r.unseen) unseenMis += r.count;
      else if (r.div != null) { if (r.div < 0) never += r.count; else byDiv[r.div] += r.count; }
      const k = r.input + ">" + r.output;
      conf.set(k, (conf.get(k) || 0) + r.count);
    }
    pane.append(el("h3", { class: "pane-title", text: "Misclassifications" }));
    pane.append(el("p", { text: fmt(mis) + " misclassified samples in " + state.split + " (" + pct(mis / (P.total || 1)) + ")." }));
    if (typical && mis) {
      pane.append(section("Where misclassified paths leave the true class's typical clusters"));
      const box = el("div", { class: "bars" });
      const max = Math.max.apply(null, byDiv.concat([never, unseenMis, 1]));
      function bar(label, v, value) {
        const active = state.f.outcome === value;
        const b = el("button", { type: "button", class: "bar-row" + (active ? " on" : ""), disabled: value == null ? true : null,
                                 title: value ? "Show only these samples" : null, "aria-pressed": value ? String(active) : null },
                     el("span", { class: "bar-label", text: label }),
                     el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: { width: (100 * v / max).toFixed(2) + "%" } })),
                     el("span", { class: "bar-val", text: fmt(v) }));
        if (value) b.addEventListener("click", function () { setFilter("outcome", active ? "all" : value); });
        box.append(b);
      }
      layers.forEach(function (name, l) { bar(name, byDiv[l], "div:" + l); });
      bar("never (typical all along)", never, "div:-1");
      if (unseenMis) bar("unseen classes", unseenMis, null);
      pane.append(box);
    }
    const top = Array.from(conf.entries()).sort(function (a, b) { return b[1] - a[1]; }).slice(0, 10);
    if (top.length) {
      pane.append(section("Most frequent confusions"));
      const ul = el("ul", { class: "conf" });
      for (const [k, v] of top) {
        const [a, b] = k.split(">").map(Number);
        const btn = el("button", { type: "button", class: "conf-btn", title: "Filter on this confusion" },
                       classChip(a), el("span", { class: "arr", text: "\u2192" }), classChip(b), el("span", { class: "cv", text: fmt(v) }));
        btn.addEventListener("click", function () {
          state.f.input = a; state.f.output = b; state.limit = PAGE; syncFilterControls(); update();
        });
        ul.append(el("li", null, btn));
      }
      pane.append(ul);
    }
  }

  // ------------------------------------------------------------------ scores

  const GROUPS = [["correct", "Correct", "#4477AA"], ["misclassified", "Misclassified", "#EE6677"], ["unseen", "Unseen class", "#CCBB44"]];

  function anyScores() {
    return splitNames.some(function (s) { return D.splits[s].scores && Array.isArray(D.splits[s].scores.bins); });
  }

  function sum(a, from) { let s = 0; for (let i = from || 0; i < a.length; i++) s += a[i] || 0; return s; }

  /** Default threshold: the lowest bin edge flagging at most 5% of the correct samples. */
  function initThreshold() {
    const sc = D.splits[state.split].scores;
    if (state.threshold[state.split] != null || !sc || !Array.isArray(sc.bins) || !sc.counts) return;
    const nb = sc.bins.length - 1;
    let t = Math.floor(nb / 2);
    const corr = sc.counts.correct;
    if (Array.isArray(corr) && sum(corr) > 0) {
      const tot = sum(corr);
      for (t = 0; t < nb && sum(corr, t) / tot > 0.05; t++);
    }
    state.threshold[state.split] = t;
  }

  function renderScores() {
    const pane = clear($("pane-scores"));
    const sc = cur.P.sp.scores;
    if (!sc || !Array.isArray(sc.bins) || sc.bins.length < 2 || !sc.counts) {
      pane.append(el("p", { class: "muted", text: "No diagnostic scores for the " + state.split + " split." }));
      return;
    }
    const bins = sc.bins, nb = bins.length - 1;
    const groups = GROUPS.filter(function (g) { return Array.isArray(sc.counts[g[0]]) && sum(sc.counts[g[0]]) > 0; });
    initThreshold();
    pane.append(el("h3", { class: "pane-title", text: "Diagnostic score" + (sc.name ? ": " + String(sc.name) : "") }));
    pane.append(el("p", { class: "small muted", text: "Share of each group of samples per score bin. Samples scoring at or above the threshold are flagged." }));
    const W = 320, H = 150, ml = 6, mr = 6, mt = 8, mb = 22;
    const hist = S.svgEl("svg", { viewBox: "0 0 " + W + " " + H, class: "hist", role: "img",
                                  "aria-label": "Score histogram" });
    let maxF = 0;
    const fr = groups.map(function (g) {
      const c = sc.counts[g[0]], t = sum(c);
      const f = c.map(function (v) { return (v || 0) / t; });
      for (const v of f) maxF = Math.max(maxF, v);
      return f;
    });
    const pw = W - ml - mr, ph = H - mt - mb, bw = pw / nb;
    const shade = S.svgEl("rect", { class: "flag-zone", y: mt, height: ph }, hist);
    groups.forEach(function (g, gi) {
      const w = bw / groups.length;
      for (let i = 0; i < nb; i++) {
        const h = maxF ? (fr[gi][i] / maxF) * ph : 0;
        if (h <= 0) continue;
        const r = S.svgEl("rect", { x: (ml + i * bw + gi * w).toFixed(2), y: (mt + ph - h).toFixed(2), width: Math.max(0.5, w - 0.4).toFixed(2),
                                    height: h.toFixed(2), fill: g[2] }, hist);
        S.svgEl("title", null, r).textContent = g[1] + " [" + num(bins[i], 2) + ", " + num(bins[i + 1], 2) + "): " +
          fmt(sc.counts[g[0]][i]) + " (" + pct(fr[gi][i]) + ")";
      }
    });
    S.svgEl("line", { x1: ml, x2: W - mr, y1: mt + ph, y2: mt + ph, class: "axis" }, hist);
    S.svgText(hist, { x: ml, y: H - 6, class: "tick" }, num(bins[0], 2));
    S.svgText(hist, { x: W - mr, y: H - 6, class: "tick", "text-anchor": "end" }, num(bins[nb], 2));
    const tline = S.svgEl("line", { y1: mt - 4, y2: mt + ph, class: "thr" }, hist);
    pane.append(hist);
    const legend = el("div", { class: "hist-legend" });
    for (const g of groups) legend.append(el("span", null, el("i", { class: "sw", style: { background: g[2] } }), g[1]));
    pane.append(legend);

    const slider = el("input", { type: "range", min: "0", max: String(nb), step: "1", id: "threshold",
                                 value: String(state.threshold[state.split]), "aria-label": "Score threshold" });
    const tval = el("output", { for: "threshold", class: "thr-val" });
    pane.append(el("label", { class: "thr-label" }, "Threshold ", slider, tval));
    const rates = el("div", { class: "rates" });
    pane.append(rates);
    const sortBtn = el("button", { type: "button", class: "btn", text: "Sort the table by score" });
    sortBtn.addEventListener("click", function () { state.sort = { key: "score", dir: -1 }; sortGroups(cur.groups); renderTable(); });
    if (cur.P.hasScore) pane.append(sortBtn);

    function refreshRates(redrawTable) {
      const t = +slider.value;
      state.threshold[state.split] = t;
      const x = ml + t * bw;
      tline.setAttribute("x1", x.toFixed(2));
      tline.setAttribute("x2", x.toFixed(2));
      shade.setAttribute("x", x.toFixed(2));
      shade.setAttribute("width", Math.max(0, W - mr - x).toFixed(2));
      tval.textContent = "\u2265 " + num(bins[t], 3);
      slider.setAttribute("aria-valuetext", "score at least " + num(bins[t], 3));
      clear(rates);
      const flagged = {}, totals = {};
      for (const g of GROUPS) {
        const c = sc.counts[g[0]];
        totals[g[0]] = Array.isArray(c) ? sum(c) : 0;
        flagged[g[0]] = Array.isArray(c) ? sum(c, t) : 0;
      }
      function rate(label, k, what) {
        if (!totals[k]) return;
        rates.append(el("div", { class: "rate" }, el("span", { class: "rate-label", text: label }),
                        el("span", { class: "rate-val", text: pct(flagged[k] / totals[k]) }),
                        el("span", { class: "rate-sub", text: what + " \u00b7 " + fmt(flagged[k]) + " / " + fmt(totals[k]) })));
      }
      rate("Correct flagged", "correct", "false-positive rate");
      rate("Misclassified flagged", "misclassified", "true-positive rate");
      rate("Unseen flagged", "unseen", "true-positive rate");
      const pos = totals.misclassified + totals.unseen;
      if (pos && totals.correct) {
        rates.append(el("div", { class: "rate strong" }, el("span", { class: "rate-label", text: "All errors flagged" }),
                        el("span", { class: "rate-val", text: pct((flagged.misclassified + flagged.unseen) / pos) }),
                        el("span", { class: "rate-sub", text: "TPR at FPR " + pct(flagged.correct / totals.correct) })));
      }
      if (redrawTable) renderTableBody();
    }
    slider.addEventListener("input", function () { refreshRates(true); });
    refreshRates(false);
  }

  // ------------------------------------------------------------------ focus chip

  function renderFocusChip() {
    const chip = clear($("focus-chip"));
    const f = focusParts();
    if (!f) { chip.hidden = true; return; }
    const label = f.col === 0 ? "input class " + className(f.id) : f.col === nLayers + 1 ? "output class " + className(f.id)
      : layers[f.col - 1] + " \u00b7 cluster " + f.id;
    const b = el("button", { type: "button", class: "chip-x", "aria-label": "Clear the node filter", text: "\u00d7" });
    b.addEventListener("click", function () { toggleFocus(state.focus); });
    chip.append(el("span", { text: "Only flows through " + label }), b);
    chip.hidden = false;
  }

  // ------------------------------------------------------------------ update

  function update() {
    const P = prep(state.split);
    const f = focusParts();
    const rows = [];
    let total = 0;
    for (const r of P.rows) {
      if (!passes(r)) continue;
      if (f && rowValueAt(r, f.col) !== f.id) continue;
      rows.push(r);
      total += r.count;
    }
    cur.P = P;
    cur.rows = rows;
    cur.total = total;
    cur.groups = sortGroups(groupRows(rows, state.view));
    cur.byKey = new Map(cur.groups.map(function (g) { return [g.key, g]; }));
    if (state.selected && !cur.byKey.has(state.selected)) state.selected = null;
    renderLegend();
    renderStats();
    renderFocusChip();
    drawSankey();
    renderTable();
    renderDetails();
    renderErrors();
  }

  function onSplitChanged() {
    const P = prep(state.split);
    cur.P = P;
    if (state.sort.key === "score" && !P.hasScore) state.sort = { key: "count", dir: -1 };
    initThreshold();
    update();
    renderModel();
    renderScores();
  }

  function setupKeys() {
    document.addEventListener("keydown", function (e) {
      if (e.key !== "Escape") return;
      const tag = e.target && e.target.tagName;
      if (tag === "SELECT" || tag === "INPUT") return;
      hideTip();
      if (state.selected) { select(state.selected); }
      else if (state.focus) { toggleFocus(state.focus); }
    });
  }

  // ------------------------------------------------------------------ start

  try {
    setupHeader();
    setupSplits();
    setupFilters();
    setupTabs();
    setupSankeyEvents();
    setupTableEvents();
    setupKeys();
    $("tab-scores").hidden = !anyScores();
    onSplitChanged();
  } catch (err) {
    fatal("The report could not be displayed: " + (err && err.message ? err.message : String(err)));
    throw err;
  }
})();
