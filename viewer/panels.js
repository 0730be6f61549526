/* nnsig report viewer: the Details, Model and Errors panes of the active run (NNSIG.views.panels).
 *
 * Details: the selected signature (its path, where a misclassified path leaves
 * its class's typical clusters, exemplars), else the focused node (cluster
 * composition and exemplars, or a class's confusions), else how to read the
 * page with per-layer and per-class figures. Model: the model, the analysis
 * and the classes. Errors: where misclassified paths leave their typical
 * clusters, and the most frequent confusions (labelled samples only).
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG;
  const M = NNSIG.model, F = NNSIG.figures, U = NNSIG.ui;
  const el = U.el, $ = U.$, fmt = U.fmt, pct = U.pct, num = U.num;

  function thumbs(R) { return R.data.thumbnails || null; }

  function exemplars(R, cluster, title) {
    const T = thumbs(R);
    if (!T || !cluster || !Array.isArray(cluster.exemplars) || !cluster.exemplars.length) return null;
    const box = el("div", { class: "thumbs" });
    for (const k of cluster.exemplars.slice(0, 12)) {
      const cv = U.exemplarCanvas(T, String(k));
      if (cv) box.append(cv);
    }
    return box.childNodes.length ? el("div", null, U.section(title || "Exemplars"),
                                      el("p", { class: "small muted", text: "nearest to the cluster centre first" }), box) : null;
  }

  function typicalOf(R, l, id) {
    if (!R.typical || !R.typical[l]) return [];
    const out = [];
    R.typical[l].forEach(function (set, c) { if (set.has(id)) out.push(c); });
    return out;
  }

  function byClassTotal(a) { return a.reduce(function (s, v) { return s + (v || 0); }, 0) || 1; }

  function clusterDetails(ctx, i, l, id, pane) {
    const R = ctx.runs[i], P = ctx.cur[i].P;
    const c = P.clusters[l].get(id);
    const graph = NNSIG.views.sankey.graph(i);
    const n = graph && graph.nodes.get((l + 1) + ":" + id);
    const m = R.layerMeta[l] || {};
    pane.append(el("h3", { class: "pane-title" }, el("span", { class: "muted", text: "Cluster " }), String(id),
                   el("span", { class: "muted", text: " of " }), R.layers[l]));
    pane.append(U.kv([
      ["Layer", (m.type ? String(m.type) + " \u00b7 " : "") + (m.units != null ? fmt(m.units) + " units" : "")],
      ["Samples in split", c ? fmt(c.count) : "\u2014"],
      ["Shown now", n ? fmt(n.value) : "0"],
      ["Purity", c ? num(c.purity, 3) : "\u2014"],
    ]));
    if (c && Array.isArray(c.by_class) && P.hasLabels) {
      const total = byClassTotal(c.by_class);
      pane.append(U.section("Class composition (labelled samples of the split)"), U.compBar(R, c.by_class, total), U.compList(R, c.by_class, total, 8));
    } else if (n) {
      pane.append(U.section(P.hasLabels ? "Class composition (shown)" : "Predicted classes (shown)"),
                  U.compBar(R, n.byClass, n.value), U.compList(R, n.byClass, n.value, 8));
    }
    if (R.typical) pane.append(U.section("Typical cluster of"), U.chips(R, typicalOf(R, l, id)));
    const ex = exemplars(R, c);
    if (ex) pane.append(ex);
  }

  function classNodeDetails(ctx, i, col, id, pane) {
    const R = ctx.runs[i], k = ctx.cur[i];
    const graph = NNSIG.views.sankey.graph(i);
    const n = graph && graph.nodes.get(col + ":" + id);
    const isIn = col === 0;
    pane.append(el("h3", { class: "pane-title" }, el("span", { class: "muted", text: isIn ? "Input class " : "Output class " }),
                   U.classChip(R, id)));
    if (!n) { pane.append(el("p", { class: "muted", text: "No sample shown." })); return; }
    const other = new Array(R.nClasses + 1).fill(0);
    let correct = 0, labelled = 0;
    for (const r of k.rows) {
      if ((isIn ? r.input : r.output) !== id) continue;
      const o = isIn ? r.output : r.input;
      other[o < 0 ? R.nClasses : o] += r.count;
      if (r.labelled) { labelled += r.count; if (!r.mis) correct += r.count; }
    }
    pane.append(U.kv([["Samples shown", fmt(n.value)],
                      [isIn ? "Recall" : "Precision", labelled ? pct(correct / labelled) : "\u2014 (no labels)"],
                      ["Seen in training", R.trainSet && id >= 0 ? (M.isUnseen(R, id) ? "no" : "yes") : null]]));
    pane.append(U.section(isIn ? "Predicted as" : "True classes"), U.compBar(R, other, n.value), U.compList(R, other, n.value, 8));
  }

  function signatureDetails(ctx, i, g, pane) {
    const R = ctx.runs[i], k = ctx.cur[i], P = k.P;
    pane.append(el("h3", { class: "pane-title" }, el("span", { class: "muted", text: "Signature " }), NNSIG.views.table.sigCell(R, g)));
    pane.append(U.kv([
      [g.inputs ? "Input classes" : "Input class", g.inputs ? U.classesCell(R, g.inputs) : U.classChip(R, g.input)],
      [g.outputs ? "Output classes" : "Output class", g.outputs ? U.classesCell(R, g.outputs) : U.classChip(R, g.output)],
      ["Occurrences", fmt(g.count) + " (" + pct(g.count / (k.total || 1)) + " of shown)"],
      ["Correct", g.acc == null ? "\u2014 (no labels)" : pct(g.acc)],
      ["Mean score", g.score != null ? num(g.score, 3) : null],
    ]));
    const misRows = g.rows.filter(function (r) { return r.mis; });
    if (misRows.length) {
      const r = misRows.reduce(function (a, b) { return b.count > a.count ? b : a; });
      let msg = null;
      if (r.unseen) msg = "Class " + M.className(R, r.input) + " was not seen when the clusters were fitted: it has no typical clusters.";
      else if (r.div != null && r.div < 0) msg = "Misclassified as " + M.className(R, r.output) + " although every cluster on the path is typical of class " + M.className(R, r.input) + ".";
      else if (r.div != null) msg = "Misclassified as " + M.className(R, r.output) + ": the path leaves the clusters typical of class " + M.className(R, r.input) +
        " at " + R.layers[r.div] + " (cluster " + r.path[r.div] + ").";
      if (msg) pane.append(el("p", { class: "callout bad", text: msg }));
    }
    pane.append(U.section("Path"));
    const ol = el("ol", { class: "path-list" });
    g.path.forEach(function (id, l) {
      const c = P.clusters[l].get(id);
      const isDiv = g.div != null && g.div === l;
      const typ = typicalOf(R, l, id);
      const b = el("button", { type: "button", class: "link-btn", title: "Keep only the flows through this cluster",
                               text: R.layers[l] + " \u00b7 c" + id });
      b.addEventListener("click", function () { ctx.toggleFocus(i, (l + 1) + ":" + id); });
      const li = el("li", { class: isDiv ? "div" : null }, b);
      if (c && Array.isArray(c.by_class) && P.hasLabels) {
        li.append(U.compBar(R, c.by_class, byClassTotal(c.by_class)));
        li.append(el("div", { class: "small muted", text: "purity " + num(c.purity, 2) +
                     (R.typical ? " \u00b7 typical of " + (typ.length ? typ.map(function (t) { return M.className(R, t); }).join(", ") : "no class") : "") }));
      }
      if (isDiv) li.append(el("div", { class: "small bad-text", text: "\u26a0 first cluster not typical of the true class" }));
      ol.append(li);
    });
    pane.append(ol);
    const l = g.div != null && g.div >= 0 ? g.div : R.nLayers - 1;
    const ex = exemplars(R, P.clusters[l] && P.clusters[l].get(g.path[l]), "Exemplars of " + R.layers[l] + " \u00b7 c" + g.path[l]);
    if (ex) pane.append(ex);
  }

  /** Per class: the first layer where it becomes separable (per-class purity >= the report's threshold). */
  function separabilityTable(ctx, i) {
    const R = ctx.runs[i], P = ctx.cur[i].P;
    const cp = P.sp.class_purity;
    if (!Array.isArray(cp) || !P.hasLabels) return null;
    const t = el("table", { class: "mini sep" }, el("thead", null, el("tr", null, el("th", { text: "Class" }),
      el("th", { text: "Separable at" }), el("th", { class: "num", text: "Purity there" }))));
    const tb = el("tbody");
    for (const c of Array.from(P.present).filter(function (x) { return x >= 0; }).sort(function (a, b) { return a - b; })) {
      const l = F.separableLayer(cp, c, R.separable);
      const last = cp[cp.length - 1] ? cp[cp.length - 1][c] : null;
      tb.append(el("tr", null, el("td", null, U.classChip(R, c)),
                   el("td", { class: l == null || l < 0 ? "muted" : null, text: l == null ? "\u2014" : l < 0 ? "never" : R.layers[l] }),
                   el("td", { class: "num", text: num(l != null && l >= 0 ? cp[l][c] : last, 2) })));
    }
    t.append(tb);
    return el("div", null, U.section("Where each class becomes separable"),
              el("p", { class: "small muted", text: "First layer where the class's samples sit in clusters holding on average at least " +
                pct(R.separable, 0) + " of their own class (per-class purity, labelled samples of this split)." }), t);
  }

  function renderDetails(ctx) {
    const pane = U.clear($("pane-details"));
    const i = ctx.state.active, R = ctx.runs[i], P = ctx.cur[i].P;
    const g = ctx.selectedGroup(i);
    if (g) { signatureDetails(ctx, i, g, pane); return; }
    const f = M.parseFocus(ctx.state.focus[i]);
    if (f && f.col >= 1 && f.col <= R.nLayers) { clusterDetails(ctx, i, f.col - 1, f.id, pane); return; }
    if (f) { classNodeDetails(ctx, i, f.col, f.id, pane); return; }
    pane.append(el("h3", { class: "pane-title", text: "Reading the diagram" }));
    pane.append(el("p", { text: P.hasLabels
      ? "Each band is a group of samples of one input class (its colour) following their cluster in each analysed layer, " +
        "from the true class on the left to the predicted class on the right. Nodes are coloured by the classes they hold."
      : "This split has no labels: each band is a group of samples with one predicted class (its colour) following their " +
        "cluster in each analysed layer, to the predicted class on the right." }));
    pane.append(el("ul", { class: "help" },
                   el("li", { text: "Hover a node or band for counts and class composition." }),
                   el("li", { text: "Click a node to keep only the flows through it; click it again, press Esc or Reset to clear." }),
                   el("li", { text: "Click a table row (or focus it and press Enter) to highlight that signature's path." }),
                   el("li", { text: "The layer map places a sample of the split's inputs by their activations in one layer; hover a point for its input and signature, click it to select its row." }),
                   P.hasLabels ? el("li", { text: "Red-marked cluster ids: where a misclassified path leaves the clusters typical of its true class." }) : null));
    const sp = P.sp;
    if (Array.isArray(sp.purity) && P.hasLabels) {
      pane.append(U.section("Per layer, this split"));
      const t = el("table", { class: "mini" }, el("thead", null, el("tr", null, el("th", { text: "Layer" }),
        el("th", { class: "num", text: "Purity" }), el("th", { class: "num", text: "Entropy (bits)" }))));
      const tb = el("tbody");
      R.layers.forEach(function (name, l) {
        tb.append(el("tr", null, el("td", { text: name }), el("td", { class: "num", text: num(sp.purity[l], 3) }),
                     el("td", { class: "num", text: num(Array.isArray(sp.entropy) ? sp.entropy[l] : null, 3) })));
      });
      t.append(tb);
      pane.append(t);
    }
    const sep = separabilityTable(ctx, i);
    if (sep) pane.append(sep);
  }

  function renderModel(ctx) {
    const pane = U.clear($("pane-model"));
    const i = ctx.state.active, R = ctx.runs[i], P = ctx.cur[i].P;
    const m = R.data.model || {}, a = R.analysis;
    pane.append(el("h3", { class: "pane-title", text: m.model_class ? String(m.model_class) : "Model" }));
    pane.append(U.kv([
      ["Run", ctx.compare ? R.label : null],
      ["Framework", m.framework != null ? String(m.framework) : null],
      ["Parameters", m.parameters != null ? fmt(m.parameters) : null],
      ["Store", R.data.store != null ? String(R.data.store) : null],
      ["Analysis", a.name != null ? String(a.name) : null],
      ["Clusters fitted on", a.fit_split != null ? String(a.fit_split) + (a.fit_samples != null ? " \u00b7 " + fmt(a.fit_samples) +
        (/\.tokens$/.test(String(a.fit_split)) ? " tokens" : " samples") : "") +
        (a.only_correct ? " \u00b7 correctly classified only" : "") : null],
      ["Discretizer", a.discretizer != null ? String(a.discretizer) : null],
      ["Reduction", a.reduce != null ? "PCA to " + String(a.reduce) + " dims" : null],
      ["Random state", a.random_state != null ? String(a.random_state) : null],
      ["Layer map", R.data.map ? String(R.data.map.method).toUpperCase() + " fitted on " + String(R.data.map.fitted_on) +
        " \u00b7 up to " + fmt(R.data.map.max_points) + " points per split" : null],
    ]));
    pane.append(U.section("Analysed layers"));
    const sp = P.sp;
    const t = el("table", { class: "mini" });
    t.append(el("thead", null, el("tr", null, el("th", { text: "Layer" }), el("th", { text: "Type" }),
      el("th", { class: "num", text: "Units" }), el("th", { class: "num", text: "Params" }),
      el("th", { class: "num", text: "k" }), el("th", { class: "num", text: "Purity" }))));
    const tb = el("tbody");
    R.layers.forEach(function (name, l) {
      const lm = R.layerMeta[l] || {};
      const shape = Array.isArray(lm.shape) ? "(" + lm.shape.join("\u00d7") + ")" : "";
      tb.append(el("tr", null,
        el("td", { text: name, title: name }),
        el("td", { text: lm.type != null ? String(lm.type) : "" }),
        el("td", { class: "num", text: lm.units != null ? fmt(lm.units) : shape, title: shape }),
        el("td", { class: "num", text: lm.parameters != null ? fmt(lm.parameters) : "" }),
        el("td", { class: "num", text: R.nClusters[l] != null ? String(R.nClusters[l]) : String(P.clusters[l].size) }),
        el("td", { class: "num", text: Array.isArray(sp.purity) ? num(sp.purity[l], 2) : "" })));
    });
    t.append(tb);
    pane.append(t);
    pane.append(U.section("Classes"));
    const all = [];
    for (let c = 0; c < R.nClasses; c++) all.push(c);
    pane.append(el("p", { class: "small muted", text: R.nClasses + " classes" + (R.trainSet ? "; clusters fitted on " + R.trainSet.size : "") }));
    if (R.trainSet) pane.append(el("div", { class: "small", text: "Fitted (trained) on:" }), U.chips(R, all.filter(function (c) { return R.trainSet.has(c); })));
    for (const s of ctx.splitNames) {
      const Ps = M.prepareSplit(R, s);
      const present = Array.from(Ps.present).sort(function (x, y) { return x - y; });
      pane.append(el("div", { class: "small", text: "Present in " + s + (Ps.hasLabels ? "" : " (no labels)") + ":" }), U.chips(R, present));
    }
    if (R.trainSet) {
      const unseen = all.filter(function (c) { return M.isUnseen(R, c); });
      if (unseen.length) pane.append(el("div", { class: "small", text: "Unseen during training:" }), U.chips(R, unseen));
    }
  }

  function renderErrors(ctx) {
    const pane = U.clear($("pane-errors"));
    const i = ctx.state.active, R = ctx.runs[i], P = ctx.cur[i].P;
    pane.append(el("h3", { class: "pane-title", text: "Misclassifications" }));
    if (!P.hasLabels) {
      pane.append(el("p", { class: "muted", text: "The " + ctx.state.split + " split has no labels: which predictions are wrong is unknown, " +
        "so there are no misclassifications or confusions to show." }));
      return;
    }
    let mis = 0, unseenMis = 0, never = 0;
    const byDiv = new Array(R.nLayers).fill(0);
    const conf = new Map();
    for (const r of P.rows) {
      if (!r.mis) continue;
      mis += r.count;
      if (r.unseen) unseenMis += r.count;
      else if (r.div != null) { if (r.div < 0) never += r.count; else byDiv[r.div] += r.count; }
      const k = r.input + ">" + r.output;
      conf.set(k, (conf.get(k) || 0) + r.count);
    }
    pane.append(el("p", { text: fmt(mis) + (P.hasTokens ? " tokens of misclassified inputs in " : " misclassified samples in ") +
                          ctx.state.split + " (" + pct(mis / (P.nLabelled || 1)) +
                          (P.nUnlabelled ? " of the " + fmt(P.nLabelled) + " labelled ones" : "") + ")." }));
    if (R.typical && mis) {
      pane.append(U.section("Where misclassified paths leave the true class's typical clusters"));
      const box = el("div", { class: "bars" });
      const max = Math.max.apply(null, byDiv.concat([never, unseenMis, 1]));
      function bar(label, v, value) {
        const active = ctx.state.f.outcome === value;
        const b = el("button", { type: "button", class: "bar-row" + (active ? " on" : ""), disabled: value == null ? true : null,
                                 title: value ? "Show only these samples" : null, "aria-pressed": value ? String(active) : null },
                     el("span", { class: "bar-label", text: label }),
                     el("span", { class: "bar-track" }, el("span", { class: "bar-fill", style: { width: (100 * v / max).toFixed(2) + "%" } })),
                     el("span", { class: "bar-val", text: fmt(v) }));
        if (value) b.addEventListener("click", function () { ctx.setFilter("outcome", active ? "all" : value); });
        box.append(b);
      }
      R.layers.forEach(function (name, l) { bar(name, byDiv[l], "div:" + l); });
      bar("never (typical all along)", never, "div:-1");
      if (unseenMis) bar("unseen classes", unseenMis, null);
      pane.append(box);
    }
    const top = Array.from(conf.entries()).sort(function (a, b) { return b[1] - a[1]; }).slice(0, 10);
    if (top.length) {
      pane.append(U.section("Most frequent confusions"));
      const ul = el("ul", { class: "conf" });
      for (const [k, v] of top) {
        const [a, b] = k.split(">").map(Number);
        const btn = el("button", { type: "button", class: "conf-btn", title: "Filter on this confusion" },
                       U.classChip(R, a), el("span", { class: "arr", text: "\u2192" }), U.classChip(R, b), el("span", { class: "cv", text: fmt(v) }));
        btn.addEventListener("click", function () {
          ctx.set({ f: Object.assign({}, ctx.state.f, { input: a, output: b }), limit: ctx.PAGE });
        });
        ul.append(el("li", null, btn));
      }
      pane.append(ul);
    }
  }

  // A pane is drawn when it is shown; a change while it is hidden only marks it stale.
  const stale = { details: true, model: true, errors: true };
  const DRAW = { details: renderDetails, model: renderModel, errors: renderErrors };

  function render(ctx, changed) {
    const any = function (keys) { return keys.some(function (k) { return changed.has(k); }); };
    if (any(["derived", "selected", "active", "all"])) stale.details = true;
    if (any(["split", "active", "all"])) stale.model = true;
    if (any(["derived", "active", "all"])) stale.errors = true;
    const tab = ctx.state.tab;
    if (stale[tab]) { DRAW[tab](ctx); stale[tab] = false; }
  }

  NNSIG.views = NNSIG.views || {};
  NNSIG.views.panels = { render: render };
})(window);
