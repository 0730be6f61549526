/* nnsig report viewer: the pure data module (no DOM, no network).
 *
 * Reads the report data (docs/report-data.md) into prepared runs and splits
 * (an unlabelled row, input -1, is never misclassified), and holds the filters
 * and the registry of table views: a view is one registerView({id, label,
 * columns, key(row), finish(group)}) call, and grouping, sorting and the
 * columns shown all follow from it. Its companion figures.js computes score
 * thresholds, separability, the layer map's coordinates and the comparison of
 * runs. Loaded by a <script> tag in the page (window.NNSIG.model) and by
 * `node --test` (module.exports), which unit-tests it (tests/js/model.test.js).
 */
(function (root, factory) {
  "use strict";
  const M = factory();
  if (typeof module === "object" && module.exports) module.exports = M;
  else { root.NNSIG = root.NNSIG || {}; root.NNSIG.model = M; }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const SUPPORTED_FORMAT = 2;
  /** The class index of an unknown label (an unlabelled sample). */
  const UNLABELLED = -1;
  const SEPARABLE_PURITY = 0.9;

  // ------------------------------------------------------------------ data & runs

  /** {fatal} when the data cannot be shown, {warning} when it is newer than this viewer, else {}. */
  function checkData(D) {
    if (!D || typeof D !== "object") return { fatal: "No report data: data.js is missing or empty. Write the report again with `nnsig report`." };
    const runs = Array.isArray(D.runs) ? D.runs : [D];
    if (!runs.length || !runs.every(function (r) { return r && typeof r === "object" && r.splits && typeof r.splits === "object"; })) {
      return { fatal: "No report data: data.js is missing or empty. Write the report again with `nnsig report`." };
    }
    const named = splitNamesOf(runs[0]);
    if (!named.length) return { fatal: "The report data has no split with rows." };
    if (D.format_version != null && D.format_version > SUPPORTED_FORMAT) {
      return { warning: "This report uses data format " + D.format_version + ", newer than this viewer (" +
        SUPPORTED_FORMAT + "): some parts may not show." };
    }
    return {};
  }

  function splitNamesOf(run) {
    return Object.keys(run.splits || {}).filter(function (k) { return run.splits[k] && Array.isArray(run.splits[k].rows); });
  }

  /** The runs of a report: D.runs for a comparison, else [D]. */
  function runsOf(D) { return Array.isArray(D.runs) ? D.runs : [D]; }

  /** A run ready for the page: names, layers, fitted classes, typical clusters as sets. */
  function prepareRun(run, index, D) {
    const classes = Array.isArray(D.classes) ? D.classes : Array.isArray(run.classes) ? run.classes : [];
    const splits = splitNamesOf(run);
    let nClasses = classes.length, maxPath = 0;
    for (const s of splits) {
      for (const r of run.splits[s].rows) {
        nClasses = Math.max(nClasses, r.input + 1, r.output + 1);
        if (Array.isArray(r.path)) maxPath = Math.max(maxPath, r.path.length);
      }
    }
    const layers = (Array.isArray(run.layers) && run.layers.length ? run.layers : new Array(maxPath).fill(null))
      .map(function (n, i) { return n == null ? "layer " + (i + 1) : String(n); });
    const modelLayers = run.model && Array.isArray(run.model.layers) ? run.model.layers : [];
    const a = run.analysis || {};
    return {
      index: index,
      label: run.label != null ? String(run.label) : a.name != null ? String(a.name) : "run " + (index + 1),
      data: run,
      classes: classes,
      nClasses: nClasses,
      layers: layers,
      nLayers: layers.length,
      layerMeta: layers.map(function (name, i) {
        return modelLayers.find(function (l) { return l && String(l.name) === name; }) || modelLayers[i] || {};
      }),
      analysis: a,
      nClusters: Array.isArray(a.n_clusters) ? a.n_clusters : [],
      trainSet: Array.isArray(run.train_classes) ? new Set(run.train_classes) : null,
      typical: Array.isArray(run.typical) ? run.typical.map(function (perClass) {
        return Array.isArray(perClass) ? perClass.map(function (ids) { return new Set(ids || []); }) : [];
      }) : null,
      threshold: run.threshold && isFinite(run.threshold.value) ? run.threshold : null,
      separable: isFinite(run.separable_purity) ? Number(run.separable_purity) : SEPARABLE_PURITY,
      splitNames: splits,
      prepared: {},
    };
  }

  function className(R, c) {
    if (c === UNLABELLED) return "unlabelled";
    const n = c >= 0 && c < R.classes.length ? R.classes[c] : null;
    return n == null ? String(c) : String(n);
  }

  function isUnseen(R, c) { return c >= 0 && R.trainSet ? !R.trainSet.has(c) : false; }

  /**
   * The rows of a split with what the page needs: labelled (input >= 0), mis
   * (labelled and input != output: an unlabelled row is never misclassified),
   * unseen (labelled, class not fitted), div (for a misclassified row of a
   * fitted class: the first layer whose cluster is not typical of its class,
   * -1 if none).
   */
  function prepareSplit(R, name) {
    if (R.prepared[name]) return R.prepared[name];
    const sp = R.data.splits[name];
    let total = 0, hasScore = false, labelled = 0, unlabelledCount = 0;
    const rows = sp.rows.map(function (r, i) {
      const path = Array.isArray(r.path) ? r.path : [];
      const lab = r.input >= 0;
      const mis = lab && r.input !== r.output;
      const unseen = lab && isUnseen(R, r.input);
      let div = null;
      if (mis && !unseen && R.typical) {
        div = -1;
        for (let l = 0; l < R.nLayers; l++) {
          const t = R.typical[l] && R.typical[l][r.input];
          if (t && t.size && !t.has(path[l])) { div = l; break; }
        }
      }
      const score = r.score == null || !isFinite(r.score) ? null : Number(r.score);
      if (score != null) hasScore = true;
      const count = Number(r.count) || 0;
      total += count;
      if (lab) labelled += count; else unlabelledCount += count;
      return { i: i, input: lab ? r.input : UNLABELLED, output: r.output, path: path,
               sig: path.join("\u2009\u2192\u2009"), count: count, score: score,
               labelled: lab, mis: mis, unseen: unseen, div: div,
               tokens: Array.isArray(r.tokens) ? r.tokens : null };  // token row spaces only
    });
    const clusters = [];
    for (let l = 0; l < R.nLayers; l++) {
      const m = new Map();
      const list = sp.clusters && Array.isArray(sp.clusters[l]) ? sp.clusters[l] : [];
      list.forEach(function (c, idx) { if (c) m.set(c.id == null ? idx : c.id, c); });
      clusters.push(m);
    }
    const present = new Set();
    for (const r of rows) present.add(r.input);
    const hasLabels = sp.has_labels != null ? !!sp.has_labels && labelled > 0 : labelled > 0;
    R.prepared[name] = {
      name: name, sp: sp, rows: rows, total: total, clusters: clusters, present: present,
      hasScore: hasScore, hasLabels: hasLabels, nLabelled: labelled, nUnlabelled: unlabelledCount,
      hasTokens: sp.level === "tokens",
      map: sp.map && Array.isArray(sp.map.layers) && Array.isArray(sp.map.rows) ? sp.map : null,
      mapCache: {},
    };
    return R.prepared[name];
  }

  /** The class a flow is coloured by: its input class, or its prediction on a split without labels;
   * an unlabelled row of a partly labelled split gets colour slot nClasses (grey). */
  function colourClass(R, P, r) {
    if (!P.hasLabels) return r.output;
    return r.input >= 0 ? r.input : R.nClasses;
  }

  // ------------------------------------------------------------------ filters & focus

  function defaultFilters() { return { input: null, output: null, outcome: "all", seen: "all" }; }

  /** Whether a prepared row passes the filters (input/output: null = all, -1 = unlabelled). */
  function passes(r, f) {
    if (f.input != null && r.input !== f.input) return false;
    if (f.output != null && r.output !== f.output) return false;
    if (f.outcome === "correct" && !(r.labelled && !r.mis)) return false;
    if (f.outcome === "misclassified" && !r.mis) return false;
    if (typeof f.outcome === "string" && f.outcome.slice(0, 4) === "div:" && !(r.mis && r.div === +f.outcome.slice(4))) return false;
    if (f.seen === "seen" && !(r.labelled && !r.unseen)) return false;
    if (f.seen === "unseen" && !r.unseen) return false;
    return true;
  }

  function parseFocus(key) {
    if (!key) return null;
    const k = String(key).split(":");
    return { col: +k[0], id: +k[1] };
  }

  function rowValueAt(r, col, nLayers) {
    return col === 0 ? r.input : col === nLayers + 1 ? r.output : r.path[col - 1];
  }

  /** Rows passing the filters and the node focus; pass[i] = 1 for row i of the split. */
  function filterRows(P, f, focusKey, nLayers) {
    const fo = parseFocus(focusKey);
    const rows = [];
    const pass = new Uint8Array(P.rows.length);
    let total = 0;
    for (const r of P.rows) {
      if (!passes(r, f)) continue;
      if (fo && rowValueAt(r, fo.col, nLayers) !== fo.id) continue;
      rows.push(r);
      pass[r.i] = 1;
      total += r.count;
    }
    return { rows: rows, total: total, pass: pass };
  }

  // ------------------------------------------------------------------ views (the registry)

  /** Table columns: label, sort key, and whether they need labels or scores. */
  const COLUMNS = {
    input: { label: "Input class", sort: "input", needsLabels: true },
    inputs: { label: "Input classes", sort: "input", needsLabels: true },
    sig: { label: "Signature", sort: "sig", title: "Cluster id per layer: " },
    output: { label: "Output class", sort: "output" },
    outputs: { label: "Output classes", sort: "output" },
    count: { label: "Occurrences", sort: "count", num: true },
    share: { label: "Share", num: true },
    acc: { label: "Correct", sort: "acc", num: true, needsLabels: true },
    score: { label: "Score", sort: "score", num: true, needsScores: true },
    tokens: { label: "Tokens", title: "Token row space: the most frequent tokens (positions or token ids) on these rows" },
    div: { label: "Leaves typical at", sort: "div", needsLabels: true,
           title: "Misclassified rows: first layer whose cluster is not typical of the true class" },
  };

  const VIEWS = [];

  /**
   * Add a table view. `view`: {id, label (the selector's text), short (the stats line),
   * columns (ids of COLUMNS), key(row) -> group key, finish(group) (optional: adjust a
   * finished group), needsLabels (optional)}.
   */
  function registerView(view) {
    for (const k of ["id", "label", "columns", "key"]) {
      if (view[k] == null) throw new Error("a view needs " + k);
    }
    for (const c of view.columns) if (!COLUMNS[c]) throw new Error("unknown column " + c + " in view " + view.id);
    if (VIEWS.some(function (v) { return v.id === view.id; })) throw new Error("view " + view.id + " exists");
    VIEWS.push(Object.freeze(Object.assign({ short: view.label, finish: null, needsLabels: false }, view)));
    return view;
  }

  function viewById(id) { return VIEWS.find(function (v) { return v.id === id; }) || VIEWS[0]; }

  function pathKey(r) { return r.path.join(","); }

  registerView({
    id: "overview", label: "Overview: every (input, signature, output)", short: "input \u00d7 signature \u00d7 output",
    columns: ["input", "sig", "output", "count", "share", "score", "div"],
    key: function (r) { return "r" + r.i; },
    finish: function (g) { g.input = g.rows[0].input; g.output = g.rows[0].output; g.inputs = null; g.outputs = null; },
  });
  registerView({
    id: "input", label: "Grouped by input class and signature", short: "by input class & signature", needsLabels: true,
    columns: ["input", "sig", "outputs", "count", "share", "acc", "score", "div"],
    key: function (r) { return "i" + r.input + "|" + pathKey(r); },
    finish: function (g) { g.inputs = null; },
  });
  registerView({
    id: "output", label: "Grouped by output class and signature", short: "by output class & signature",
    columns: ["inputs", "sig", "output", "count", "share", "acc", "score"],
    key: function (r) { return "o" + pathKey(r) + "|" + r.output; },
    finish: function (g) { g.outputs = null; g.div = null; },
  });
  registerView({
    id: "signature", label: "Grouped by signature", short: "by signature",
    columns: ["inputs", "sig", "outputs", "count", "share", "acc", "score"],
    key: function (r) { return "s" + pathKey(r); },
    finish: function (g) { g.div = null; },
  });

  /** Whether a view can show a split (views grouping by true class need labels). */
  function viewAllowed(view, P) { return !view.needsLabels || P.hasLabels; }

  /** The view to use on P: `id` when allowed there, else the first allowed view. */
  function allowedView(id, P) {
    const v = viewById(id);
    return viewAllowed(v, P) ? v : VIEWS.find(function (x) { return viewAllowed(x, P); });
  }

  /** The columns of a view that make sense on P (no label columns without labels, no score column without scores). */
  function viewColumns(view, P) {
    const cols = view.columns.filter(function (c) {
      const d = COLUMNS[c];
      return !(d.needsLabels && !P.hasLabels) && !(d.needsScores && !P.hasScore);
    });
    if (P.hasTokens) cols.splice(cols.indexOf("sig") + 1, 0, "tokens");
    return cols;
  }

  /** Token row spaces: the tokens on a group's rows (label -> count, summed over the rows). */
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
    let best = null, bv = -1;
    for (const [k, v] of m) if (v > bv || (v === bv && k < best)) { bv = v; best = k; }
    return best;
  }

  /**
   * Rows -> table groups: rows sharing view.key(row) are summed (count, correct and
   * labelled counts, per input/output class counts, count-weighted mean score; div of
   * the largest misclassified row), then view.finish(group) adjusts the group.
   */
  function groupRows(rows, view) {
    const m = new Map();
    for (const r of rows) {
      const key = view.key(r);
      let g = m.get(key);
      if (!g) {
        g = { key: key, rows: [], input: null, output: null, inputs: new Map(), outputs: new Map(),
              path: r.path, sig: r.sig, count: 0, correct: 0, labelled: 0, sw: 0, sc: 0,
              div: null, divCount: 0, unseen: false, mis: false };
        m.set(key, g);
      }
      g.rows.push(r);
      g.count += r.count;
      if (r.labelled) g.labelled += r.count;
      if (r.labelled && !r.mis) g.correct += r.count;
      g.inputs.set(r.input, (g.inputs.get(r.input) || 0) + r.count);
      g.outputs.set(r.output, (g.outputs.get(r.output) || 0) + r.count);
      if (r.score != null) { g.sw += r.count; g.sc += r.score * r.count; }
      if (r.mis && r.div != null && r.count > g.divCount) { g.div = r.div; g.divCount = r.count; }
      if (r.unseen) g.unseen = true;
    }
    const out = Array.from(m.values());
    for (const g of out) {
      g.score = g.sw ? g.sc / g.sw : null;
      g.tokens = tokenCounts(g.rows);
      g.input = argmax(g.inputs);
      g.output = argmax(g.outputs);
      g.mis = g.labelled > 0 && g.correct === 0;
      g.acc = g.labelled > 0 ? g.correct / g.labelled : null;
      if (view.finish) view.finish(g);
    }
    return out;
  }

  function cmpPath(a, b) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
    return a.length - b.length;
  }

  function defaultSort() { return { key: "count", dir: -1 }; }

  /** `sort` when one of the view's columns on P sorts by it, else the default sort. */
  function validSort(view, P, sort) {
    const ok = viewColumns(view, P).some(function (c) { return COLUMNS[c].sort === sort.key; });
    return ok ? sort : defaultSort();
  }

  function sortGroups(groups, sort, nLayers) {
    const k = sort.key, dir = sort.dir;
    function val(g) {
      switch (k) {
        case "input": return g.input;
        case "output": return g.output;
        case "acc": return g.acc;
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

  // ------------------------------------------------------------------ rows and groups

  /** The group key, under `view`, of row `rowIndex` of split P. */
  function groupKeyOfRow(P, rowIndex, view) {
    const r = P.rows[rowIndex];
    return r ? view.key(r) : null;
  }

  return {
    SUPPORTED_FORMAT: SUPPORTED_FORMAT, UNLABELLED: UNLABELLED, SEPARABLE_PURITY: SEPARABLE_PURITY,
    COLUMNS: COLUMNS, VIEWS: VIEWS, tokenCounts: tokenCounts,
    checkData: checkData, runsOf: runsOf, splitNamesOf: splitNamesOf, prepareRun: prepareRun,
    prepareSplit: prepareSplit, className: className, isUnseen: isUnseen, colourClass: colourClass,
    defaultFilters: defaultFilters, passes: passes, parseFocus: parseFocus, rowValueAt: rowValueAt,
    filterRows: filterRows, registerView: registerView, viewById: viewById, viewAllowed: viewAllowed,
    allowedView: allowedView, viewColumns: viewColumns, groupRows: groupRows, cmpPath: cmpPath,
    defaultSort: defaultSort, validSort: validSort, sortGroups: sortGroups, groupKeyOfRow: groupKeyOfRow,
  };
});
