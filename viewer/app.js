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

  try { performance.mark("nnsig-start"); } catch (e) { /* old browsers */ }
  const NNSIG = window.NNSIG || {};
  const M = NNSIG.model, F = NNSIG.figures, U = NNSIG.ui, V = NNSIG.views || {};
  const D = window.NNSIG_REPORT;
  const PAGE = 250;

  function fatal(msg) {
    const f = document.getElementById("fatal");
    f.textContent = msg;
    f.hidden = false;
    window.NNSIG_READY = "error";
  }

  if (!M || !F || !U || !NNSIG.sankey || !V.controls || !V.sankey || !V.map || !V.table || !V.panels || !V.scores || !V.compare) {
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

  /** Each run's starting threshold on each split with scores: the report's default. */
  function initialThresholds() {
    const out = {};
    runs.forEach(function (R, i) {
      for (const s of splitNames) {
        const sc = R.data.splits[s].scores;
        if (!sc || !Array.isArray(sc.bins) || sc.bins.length < 2 || !sc.counts) continue;
        out[i + "|" + s] = F.initialThreshold(sc, R.threshold ? R.threshold.value : null);
      }
    });
    return out;
  }

  const state = {
    // The report's opening split (the first that is not the fit split), when it is shown.
    split: splitNames.indexOf(D.open_split) >= 0 ? D.open_split : splitNames[0],
    view: "overview",
    f: M.defaultFilters(),
    focus: fill(null),          // per run: node key "col:id"
    selected: fill(null),       // per run: table group key
    mapLayer: runs.map(function (R) { return Math.max(0, R.nLayers - 1); }),
    mapColor: "class",
    active: 0,                  // the run whose table and panels are shown
    sort: M.defaultSort(),
    limit: PAGE,
    threshold: initialThresholds(), // "run|split" -> score threshold
    tab: "details",
    sample: null,               // split position of the sample picked on a map or in the changes
    hover: null,                // {run, pos}: the sample under the mouse on a map
    changesLimit: 60,           // changed samples listed (comparisons)
    changesWho: "all",          // which of them: "all", or run i: those right in run i
  };

  /** Derived data per run: the prepared split, filtered rows, table groups. */
  const cur = runs.map(function () { return { P: null, rows: [], total: 0, pass: null, groups: [], byKey: new Map(), view: null }; });

  function derive() {
    state.changesLimit = 60;
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

  /** The widths of the run columns' Sankey and map boxes, read once before anything is
   * redrawn (reading them between redraws would force a layout of the page each time). */
  function measure() {
    ctx.widths = ctx.cols.map(function (col) {
      return { sankey: Math.floor(col.querySelector(".sankey").clientWidth),
               map: Math.floor(col.querySelector(".map-box").clientWidth) };
    });
  }

  function update(changed) {
    if (DERIVING.some(function (k) { return changed.has(k); })) { derive(); changed.add("derived"); }
    else if (changed.has("sort")) {
      for (let i = 0; i < n; i++) M.sortGroups(cur[i].groups, M.validSort(cur[i].view, cur[i].P, state.sort), runs[i].nLayers);
    }
    if (changed.has("derived") || changed.has("resize") || !ctx.widths) measure();
    for (const p of parts) p.render(ctx, changed);
  }

  const ctx = {
    D: D, runs: runs, cur: cur, state: state, compare: compare, splitNames: splitNames, PAGE: PAGE, checked: checked,
    set: set, replaceAt: replaceAt,
    run: function () { return runs[state.active]; },
    now: function () { return cur[state.active]; },
    /** The page was resized: redraw what depends on the widths (not a state change). */
    resized: function () { update(new Set(["resize"])); },
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
      const t = state.threshold[i + "|" + state.split];
      return t == null ? null : t;
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
    if (compare) { // one legend for every run, above the columns
      const lg = $("legend");
      lg.classList.add("shared");
      document.querySelector(".controls").after(lg);
    }
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
    setupColumns();
    setupTabs();
    setupKeys();
    parts.push(V.controls, tabs, V.sankey, V.map, V.table, V.panels, V.scores, V.compare);
    if (V.timeline) parts.push(V.timeline); // drawn only when the data has a training timeline
    for (const p of parts) if (p.mount) p.mount(ctx);
    update(new Set(["all"]));
    markReady();
    NNSIG.page = ctx; // for the browser tests and the console
  } catch (err) {
    fatal("The report could not be displayed: " + (err && err.message ? err.message : String(err)));
    throw err;
  }
})();
