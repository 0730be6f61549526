/* nnsig report viewer: the header, the split switch, the filters, the legend and the
 * summary figures (NNSIG.views.controls).
 *
 * The filters are shared by every run of a comparison: a class filter means the
 * same class in each run (the classes, and so their colours, are the same).
 * "All classes" is null, not a class number; the unlabelled samples (class -1)
 * have their own option where a split holds some. Every control changes the
 * page through ctx.set; render() keeps the controls in step with the state.
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG;
  const M = NNSIG.model, U = NNSIG.ui;
  const el = U.el, $ = U.$;
  const RUNS = global.NNSIG_RUNS || null;
  let ctx, runs, compare, n, state, cur, D, checked, splitNames, set, PAGE;

  function fill(v) { return new Array(n).fill(v); }

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
        row.append(stat("Split", state.split, U.fmt(sp.n_samples != null ? sp.n_samples : P.total) +
                                     (P.hasTokens ? " tokens" : " samples")));
        row.append(P.hasLabels ? stat("Accuracy", U.pct(sp.accuracy), "model, on " +
                                      (P.nUnlabelled ? U.fmt(P.nLabelled) + (P.hasTokens ? " labelled tokens" : " labelled samples")
                                                     : (P.hasTokens ? "this split's tokens (each input weighs its tokens)" : "this split")))
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

  function mount(c) {
    ctx = c; runs = c.runs; compare = c.compare; n = c.runs.length; state = c.state; cur = c.cur;
    D = c.D; checked = c.checked; splitNames = c.splitNames; set = c.set; PAGE = c.PAGE;
    setupHeader();
    setupSplits();
    setupFilters();
  }

  const parts = [controls, splitSwitch, focusChips, legend, stats];

  NNSIG.views = NNSIG.views || {};
  NNSIG.views.controls = {
    mount: mount,
    render: function (c, changed) { for (const p of parts) p.render(c, changed); },
  };
})(window);
