/* nnsig report viewer: start-up, the page state and the one function that changes it.
 *
 * Reads window.NNSIG_REPORT (data.js, docs/report-data.md: one run, or several
 * runs side by side) and window.NNSIG_RUNS (runs.js). The page state lives in
 * one object; every change goes through set(patch), which recomputes what
 * depends on it (the filtered rows and table groups of every run) and asks each
 * view (NNSIG.views.*: Sankey, layer map, table, side panels, scores,
 * comparison) to redraw what the change touches.
 * When the page is first drawn: performance marks "nnsig-sankey-drawn" and
 * "nnsig-drawn", and window.NNSIG_READY = true ("error" when it cannot be shown).
 */
(function () {
  "use strict";

  const NNSIG = window.NNSIG || {};
  const M = NNSIG.model, U = NNSIG.ui, V = NNSIG.views || {};
  const D = window.NNSIG_REPORT;
  const RUNS = window.NNSIG_RUNS || null;
  const PAGE = 250;

  function fatal(msg) {
    const f = document.getElementById("fatal");
    f.textContent = msg;
    f.hidden = false;
    window.NNSIG_READY = "error";
  }

  if (!M || !U || !NNSIG.sankey || !V.sankey || !V.map || !V.table || !V.panels || !V.scores || !V.compare) {
    fatal("The viewer is incomplete: one of its scripts did not load.");
    return;
  }
  const checked = M.checkData(D);
  if (checked.fatal) { fatal(checked.fatal); return; }
  const $ = U.$, el = U.el;

  // ------------------------------------------------------------------ runs and state

  const runs = M.runsOf(D).map(function (run, i) { return M.prepareRun(run, i, D); });
  const compare = runs.length > 1;
  const splitNames = runs[0].splitNames.filter(function (s) {
    return runs.every(function (R) { return R.splitNames.indexOf(s) >= 0; });
  });
  const n = runs.length;
  function fill(v) { return new Array(n).fill(v); }

  const state = {
    split: splitNames[0],
    view: "overview",
    f: M.defaultFilters(),
    focus: fill(null),          // per run: node key "col:id"
    selected: fill(null),       // per run: table group key
    mapLayer: runs.map(function (R) { return Math.max(0, R.nLayers - 1); }),
    mapColor: "class",
    active: 0,                  // the run whose table and panels are shown
    sort: M.defaultSort(),
    limit: PAGE,
    threshold: {},              // "run|split" -> score threshold
    tab: "details",
    sample: null,               // split position of the sample picked on a map or in the changes
    hover: null,                // {run, pos}: the sample under the mouse on a map
    resized: 0,
  };

  /** Derived data per run: the prepared split, filtered rows, table groups. */
  const cur = runs.map(function () { return { P: null, rows: [], total: 0, pass: null, groups: [], byKey: new Map(), view: null }; });

  function derive() {
    for (let i = 0; i < n; i++) {
      const R = runs[i], c = cur[i];
      c.P = M.prepareSplit(R, state.split);
      c.view = M.allowedView(state.view, c.P);
      const fr = M.filterRows(c.P, state.f, state.focus[i], R.nLayers);
      c.rows = fr.rows;
      c.total = fr.total;
      c.pass = fr.pass;
      c.groups = M.sortGroups(M.groupRows(fr.rows, c.view), M.validSort(c.view, c.P, state.sort), R.nLayers);
      c.byKey = new Map(c.groups.map(function (g) { return [g.key, g]; }));
      if (state.selected[i] && !c.byKey.has(state.selected[i])) state.selected = replaceAt(state.selected, i, null);
    }
    if (state.sample != null && state.selected.every(function (k) { return k == null; })) state.sample = null;
  }

  function replaceAt(arr, i, v) { const a = arr.slice(); a[i] = v; return a; }

  const DERIVING = ["split", "view", "f", "focus", "all"];
  const parts = [];

  /** The one way to change the page: merge `patch` into the state and redraw what it touches. */
  function set(patch) {
    const changed = new Set();
    for (const k in patch) {
      if (state[k] !== patch[k]) { state[k] = patch[k]; changed.add(k); }
    }
    if (changed.size) update(changed);
  }

  function update(changed) {
    if (DERIVING.some(function (k) { return changed.has(k); })) { derive(); changed.add("derived"); }
    else if (changed.has("sort")) {
      for (let i = 0; i < n; i++) M.sortGroups(cur[i].groups, M.validSort(cur[i].view, cur[i].P, state.sort), runs[i].nLayers);
    }
    for (const p of parts) p.render(ctx, changed);
  }

  const ctx = {
    D: D, runs: runs, cur: cur, state: state, compare: compare, splitNames: splitNames, PAGE: PAGE,
    set: set, replaceAt: replaceAt,
    run: function () { return runs[state.active]; },
    now: function () { return cur[state.active]; },
    setRun: function (i, key, value, extra) {
      const patch = Object.assign({}, extra || {});
      patch[key] = replaceAt(state[key], i, value);
      set(patch);
    },
    /** Colour of a flow's colour slot in run R: its class, grey for the unlabelled slot. */
    colorOf: function (R) { return function (k) { return k >= R.nClasses ? U.GREY : U.classColor(k); }; },
    selectedGroup: function (i) { return state.selected[i] ? cur[i].byKey.get(state.selected[i]) || null : null; },
    thresholdKey: function (i) { return i + "|" + state.split; },
    /** The score threshold of run i on the current split (null without scores). */
    threshold: function (i) {
      const sc = cur[i].P && cur[i].P.sp.scores;
      if (!sc || !Array.isArray(sc.bins) || sc.bins.length < 2 || !sc.counts) return null;
      const key = i + "|" + state.split;
      if (state.threshold[key] == null) {
        state.threshold[key] = M.initialThreshold(sc, runs[i].threshold ? runs[i].threshold.value : null);
      }
      return state.threshold[key];
    },
    comparison: function () {
      return D.comparison && D.comparison.splits ? D.comparison.splits[state.split] || null : null;
    },
    /** Select, in run i, the table group holding row `rowIndex` (extending the table's page). */
    selectRow: function (i, rowIndex, extra) {
      const c = cur[i];
      const key = M.groupKeyOfRow(c.P, rowIndex, c.view);
      const patch = Object.assign({ selected: replaceAt(state.selected, i, c.byKey.has(key) ? key : null) }, extra || {});
      if (i === (patch.active != null ? patch.active : state.active) && c.byKey.has(key)) {
        const at = c.groups.findIndex(function (g) { return g.key === key; });
        if (at >= state.limit) patch.limit = Math.ceil((at + 1) / PAGE) * PAGE;
      }
      set(patch);
      return c.byKey.has(key);
    },
    toggleFocus: function (i, key) {
      const on = state.focus[i] === key ? null : key;
      const patch = { focus: replaceAt(state.focus, i, on), limit: PAGE, active: i };
      const fo = M.parseFocus(on);
      if (fo && fo.col >= 1 && fo.col <= runs[i].nLayers) patch.mapLayer = replaceAt(state.mapLayer, i, fo.col - 1);
      if (on) patch.tab = "details";
      U.hideTip();
      set(patch);
    },
    setFilter: function (k, v) {
      const f = Object.assign({}, state.f);
      f[k] = v;
      set({ f: f, limit: PAGE });
    },
    colLabel: function (R, col) {
      return col === 0 ? "Input class" : col === R.nLayers + 1 ? "Output class" : R.layers[col - 1];
    },
  };

  // ------------------------------------------------------------------ header, runs, splits

  function setupHeader() {
    const R0 = runs[0];
    const title = D.title ? String(D.title) : "nnsig report";
    $("title").textContent = title;
    document.title = title + " \u2014 nnsig";
    const bits = [];
    if (compare) {
      bits.push("comparing " + n + " runs: " + runs.map(function (R) { return R.label; }).join(" \u00b7 "));
    } else {
      const m = R0.data.model || {};
      if (m.model_class) bits.push(String(m.model_class));
      if (m.framework) bits.push(String(m.framework));
      if (m.parameters != null) bits.push(U.fmt(m.parameters) + " parameters");
      bits.push(R0.nLayers + (R0.nLayers === 1 ? " layer" : " layers") + " analysed");
      if (R0.data.store) bits.push(String(R0.data.store));
    }
    $("subtitle").textContent = bits.join(" \u00b7 ");
    const made = [];
    if (D.created) made.push("created " + String(D.created));
    if (!compare && R0.analysis.name) made.push("analysis \u201c" + String(R0.analysis.name) + "\u201d");
    $("created").textContent = made.join(" \u00b7 ");
    if (checked.warning) { $("warning").textContent = checked.warning; $("warning").hidden = false; }
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
    const box = U.clear($("split-switch"));
    for (const s of splitNames) {
      const sp = runs[0].data.splits[s];
      const b = el("button", { type: "button", role: "radio", "data-split": s, class: "seg-btn",
                               "aria-checked": String(s === state.split), tabindex: s === state.split ? "0" : "-1" },
                   el("span", { class: "seg-name", text: s }),
                   el("span", { class: "seg-sub", text: U.fmt(sp.n_samples) }));
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
    const Ps = runs.map(function (R) { return M.prepareSplit(R, s); });
    const labelled = Ps.some(function (P) { return P.hasLabels; });
    const f = labelled ? state.f : M.defaultFilters();
    set({ split: s, selected: fill(null), focus: fill(null), limit: PAGE, sample: null, hover: null,
          f: f, view: M.allowedView(state.view, Ps[0]).id });
  }

  const splitSwitch = {
    render: function (c, changed) {
      if (!changed.has("split")) return;
      for (const b of $("split-switch").children) {
        const on = b.getAttribute("data-split") === state.split;
        b.setAttribute("aria-checked", String(on));
        b.tabIndex = on ? 0 : -1;
      }
    },
  };

  // ------------------------------------------------------------------ filters

  function anyLabels() { return cur.some(function (c) { return c.P && c.P.hasLabels; }); }
  function anyUnlabelled() { return cur.some(function (c) { return c.P && c.P.nUnlabelled > 0; }); }

  function setupFilters() {
    const R0 = runs[0];
    const viewSel = U.clear($("view"));
    for (const v of M.VIEWS) viewSel.append(el("option", { value: v.id, text: v.label }));
    const oc = $("f-outcome");
    oc.append(el("option", { value: "all", text: "All samples" }));
    oc.append(el("option", { value: "correct", text: "Correctly classified" }));
    oc.append(el("option", { value: "misclassified", text: "Misclassified" }));
    if (R0.typical) {
      const same = runs.every(function (R) { return R.layers.join("\u0000") === R0.layers.join("\u0000"); });
      const nl = Math.max.apply(null, runs.map(function (R) { return R.nLayers; }));
      for (let l = 0; l < nl; l++) {
        const name = same ? R0.layers[l] : "layer " + (l + 1) + " (" + runs.map(function (R) { return R.layers[l] || "\u2014"; }).join(" / ") + ")";
        oc.append(el("option", { value: "div:" + l, text: "Misclassified, leaving typical clusters at " + name }));
      }
      oc.append(el("option", { value: "div:-1", text: "Misclassified along typical clusters" }));
    }
    $("view").addEventListener("change", function (e) {
      const v = M.allowedView(e.target.value, cur[state.active].P);
      set({ view: v.id, selected: fill(null), limit: PAGE, sort: M.validSort(v, cur[state.active].P, state.sort) });
    });
    function classValue(v) { return v === "all" ? null : v === "unlabelled" ? M.UNLABELLED : +v; }
    $("f-input").addEventListener("change", function (e) { ctx.setFilter("input", classValue(e.target.value)); });
    $("f-output").addEventListener("change", function (e) { ctx.setFilter("output", classValue(e.target.value)); });
    $("f-outcome").addEventListener("change", function (e) { ctx.setFilter("outcome", e.target.value); });
    $("f-seen").addEventListener("change", function (e) { ctx.setFilter("seen", e.target.value); });
    $("reset").addEventListener("click", function () {
      set({ f: M.defaultFilters(), focus: fill(null), selected: fill(null), limit: PAGE, sample: null });
    });
  }

  function classOptions(sel, withUnlabelled) {
    const R0 = runs[0];
    U.clear(sel);
    sel.append(el("option", { value: "all", text: "All classes" }));
    if (withUnlabelled) sel.append(el("option", { value: "unlabelled", text: "Unlabelled (no true class)" }));
    for (let c = 0; c < R0.nClasses; c++) {
      sel.append(el("option", { value: String(c), text: M.className(R0, c) + (M.isUnseen(R0, c) ? " (unseen)" : "") }));
    }
  }

  function filterValue(v) { return v == null ? "all" : v === M.UNLABELLED ? "unlabelled" : String(v); }

  const controls = {
    render: function (c, changed) {
      if (!changed.has("all") && !changed.has("split") && !changed.has("f") && !changed.has("view")) return;
      const labels = anyLabels(), unl = anyUnlabelled();
      if (changed.has("all") || changed.has("split")) {
        classOptions($("f-input"), labels && unl);
        classOptions($("f-output"), false);
        $("f-input").disabled = !labels;
        $("f-outcome").disabled = !labels;
        $("f-seen").disabled = !labels || !runs[0].trainSet;
        for (const o of $("view").options) o.disabled = !M.viewAllowed(M.viewById(o.value), cur[state.active].P);
        const note = $("split-note");
        const P = cur[state.active].P;
        if (!labels) {
          note.textContent = "The " + state.split + " split has no labels: it shows the predictions only. " +
            "Accuracy, misclassifications, the true-class filters and the Errors panel need labels and are hidden.";
        } else if (unl) {
          note.textContent = U.fmt(P.nUnlabelled) + " samples of the " + state.split + " split have no label: " +
            "they count neither as correct nor as misclassified (filter them with Input class \u2192 Unlabelled).";
        }
        note.hidden = labels && !unl;
      }
      $("f-input").value = filterValue(state.f.input);
      $("f-output").value = filterValue(state.f.output);
      $("f-outcome").value = state.f.outcome;
      $("f-seen").value = state.f.seen;
      $("view").value = cur[state.active].view.id;
    },
  };

  const focusChips = {
    render: function (c, changed) {
      if (!changed.has("derived") && !changed.has("all")) return;
      const box = U.clear($("focus-chip"));
      let any = false;
      state.focus.forEach(function (key, i) {
        const fo = M.parseFocus(key);
        if (!fo) return;
        any = true;
        const R = runs[i];
        const label = fo.col === 0 ? "input class " + M.className(R, fo.id) : fo.col === R.nLayers + 1
          ? "output class " + M.className(R, fo.id) : R.layers[fo.col - 1] + " \u00b7 cluster " + fo.id;
        const b = el("button", { type: "button", class: "chip-x", "aria-label": "Clear the node filter", text: "\u00d7" });
        b.addEventListener("click", function () { ctx.toggleFocus(i, key); });
        box.append(el("span", { class: "chip" }, el("span", { text: (compare ? R.label + ": " : "") + "Only flows through " + label }), b));
      });
      box.hidden = !any;
    },
  };

  // ------------------------------------------------------------------ legend & stats

  const legend = {
    render: function (c, changed) {
      if (!changed.has("derived") && !changed.has("all")) return;
      const box = U.clear($("legend"));
      const labels = anyLabels();
      const present = new Set();
      for (const k of cur) {
        for (const r of k.P.rows) { if (labels) present.add(r.input); present.add(r.output); }
      }
      box.append(el("span", { class: "legend-title", text: labels ? "Colour: true class" : "Colour: predicted class (no labels)" }));
      Array.from(present).sort(function (a, b) { return a - b; }).forEach(function (cl) {
        const on = labels ? state.f.input === cl : state.f.output === cl;
        const R0 = runs[0];
        const b = el("button", { type: "button", class: "legend-item" + (on ? " on" : ""), "aria-pressed": String(on),
                                 "data-class": String(cl),
                                 title: labels ? "Show only input class " + M.className(R0, cl) : "Show only predicted class " + M.className(R0, cl) },
                     el("i", { class: "sw", style: { background: U.classColor(cl) } }),
                     el("span", { class: "legend-name", text: M.className(R0, cl) }),
                     M.isUnseen(R0, cl) ? el("span", { class: "tag", text: "unseen" }) : null);
        b.addEventListener("click", function () {
          if (labels) ctx.setFilter("input", state.f.input === cl ? null : cl);
          else ctx.setFilter("output", state.f.output === cl ? null : cl);
        });
        box.append(b);
      });
    },
  };

  function stat(label, value, sub, cls) {
    return el("div", { class: "stat" + (cls ? " " + cls : "") },
              el("div", { class: "stat-label", text: label }),
              el("div", { class: "stat-value", text: value }),
              sub ? el("div", { class: "stat-sub", text: sub }) : null);
  }

  const stats = {
    render: function (c, changed) {
      if (!changed.has("derived") && !changed.has("all")) return;
      const box = U.clear($("stats"));
      box.classList.toggle("per-run", compare);
      cur.forEach(function (k, i) {
        const R = runs[i], sp = k.P.sp, P = k.P;
        let mis = 0;
        for (const r of k.rows) if (r.mis) mis += r.count;
        const row = compare ? el("div", { class: "stats-row", "data-run": String(i) }) : box;
        if (compare) row.append(stat("Run", R.label, R.data.model && R.data.model.model_class ? String(R.data.model.model_class) : ""));
        row.append(stat("Split", state.split, U.fmt(sp.n_samples != null ? sp.n_samples : P.total) + " samples"));
        row.append(P.hasLabels ? stat("Accuracy", U.pct(sp.accuracy), "model, on " +
                                      (P.nUnlabelled ? U.fmt(P.nLabelled) + " labelled samples" : "this split"))
                               : stat("Accuracy", "\u2014", "no labels in this split"));
        row.append(stat("Signatures", U.fmt(sp.n_signatures), "distinct cluster paths"));
        row.append(stat("Shown", U.fmt(k.total), P.total ? U.pct(k.total / P.total) + " of the split" : ""));
        if (P.hasLabels) row.append(stat("Misclassified shown", U.fmt(mis), k.total ? U.pct(mis / k.total) + " of shown" : "", mis ? "bad" : ""));
        else row.append(stat("Labels", "none", "predictions only"));
        row.append(stat("Table rows", U.fmt(k.groups.length), k.view.short));
        if (compare) box.append(row);
      });
    },
  };

  // ------------------------------------------------------------------ tabs & keys

  const TABS = ["details", "changes", "model", "errors", "scores"];
  const tabs = {
    render: function (c, changed) {
      if (!changed.has("tab") && !changed.has("all") && !changed.has("active")) return;
      for (const t of TABS) {
        const b = $("tab-" + t), p = $("pane-" + t);
        const on = t === state.tab;
        b.setAttribute("aria-selected", String(on));
        b.tabIndex = on ? 0 : -1;
        p.hidden = !on;
      }
      const who = $("side-run");
      who.hidden = !compare;
      if (compare) who.textContent = "Run: " + runs[state.active].label;
    },
  };

  function setupTabs() {
    for (const t of TABS) $("tab-" + t).addEventListener("click", function () { set({ tab: t }); });
    $("tab-details").parentNode.addEventListener("keydown", function (e) {
      if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
      const vis = TABS.filter(function (t) { return !$("tab-" + t).hidden; });
      const i = vis.indexOf(state.tab);
      const next = vis[(i + (e.key === "ArrowRight" ? 1 : -1) + vis.length) % vis.length];
      set({ tab: next });
      $("tab-" + next).focus();
      e.preventDefault();
    });
    $("tab-changes").hidden = !compare;
    $("tab-scores").hidden = !runs.some(function (R) {
      return splitNames.some(function (s) { const sc = R.data.splits[s].scores; return sc && Array.isArray(sc.bins); });
    });
  }

  function setupKeys() {
    document.addEventListener("keydown", function (e) {
      if (e.key !== "Escape") return;
      const tag = e.target && e.target.tagName;
      if (tag === "SELECT" || tag === "INPUT") return;
      U.hideTip();
      const i = state.active;
      if (state.selected[i]) ctx.setRun(i, "selected", null, { sample: null });
      else if (state.focus[i]) ctx.toggleFocus(i, state.focus[i]);
      else if (state.sample != null) set({ sample: null });
    });
  }

  // ------------------------------------------------------------------ run columns

  /** One column per run (Sankey and map), cloned from the first for a comparison. */
  function setupColumns() {
    const first = document.querySelector(".run-col");
    ctx.cols = [first];
    for (let i = 1; i < n; i++) {
      const col = first.cloneNode(true);
      col.setAttribute("data-run", String(i));
      for (const e of col.querySelectorAll("[id]")) e.id = e.id + "-" + i;
      for (const e of col.querySelectorAll("[aria-labelledby]")) e.setAttribute("aria-labelledby", e.getAttribute("aria-labelledby") + "-" + i);
      for (const e of col.querySelectorAll("label[for]")) e.setAttribute("for", e.getAttribute("for") + "-" + i);
      first.parentNode.append(col);
      ctx.cols.push(col);
    }
    document.body.classList.toggle("compare", compare);
    if (compare) {
      const lg = $("legend");
      lg.classList.add("shared");
      document.querySelector(".controls").after(lg);
    }
    ctx.cols.forEach(function (col, i) {
      const head = col.querySelector(".run-head");
      head.hidden = !compare;
      if (compare) {
        U.clear(head).append(el("span", { class: "run-badge", text: String.fromCharCode(65 + i) }),
                             el("span", { class: "run-label", text: runs[i].label }));
      }
      col.addEventListener("pointerdown", function () { if (state.active !== i) set({ active: i }); });
    });
  }

  // ------------------------------------------------------------------ start

  function markReady() {
    try { performance.mark("nnsig-sankey-drawn"); performance.mark("nnsig-drawn"); } catch (e) { /* old browsers */ }
    window.NNSIG_READY = true;
    document.documentElement.setAttribute("data-ready", "1");
  }

  try {
    setupHeader();
    setupSplits();
    setupColumns();
    setupFilters();
    setupTabs();
    setupKeys();
    parts.push(controls, splitSwitch, focusChips, legend, stats, tabs, V.sankey, V.map, V.table, V.panels, V.scores, V.compare);
    for (const p of parts) if (p.mount) p.mount(ctx);
    update(new Set(["all"]));
    markReady();
    NNSIG.page = ctx; // for the browser tests and the console
  } catch (err) {
    fatal("The report could not be displayed: " + (err && err.message ? err.message : String(err)));
    throw err;
  }
})();
