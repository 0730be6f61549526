/* nnsig report viewer: the signature table of the active run (NNSIG.views.table).
 *
 * Columns come from the current view's entry in the registry (model.js), cells
 * from CELLS below (one function per column id). Sorting, paging, row
 * selection (click, or arrows + Enter) go through ctx.set; the table redraws
 * on the state changes that touch it.
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG;
  const M = NNSIG.model, U = NNSIG.ui;
  const el = U.el, $ = U.$;

  function sigCell(R, g) {
    const code = el("code", { class: "sig" });
    g.path.forEach(function (id, l) {
      if (l) code.append(el("span", { class: "arr", "aria-hidden": "true", text: "\u2192" }));
      const isDiv = g.div != null && g.div === l;
      code.append(el("span", { class: "cid" + (isDiv ? " div" : ""), title: R.layers[l] + (isDiv ? ": leaves the typical clusters here" : ""),
                               text: String(id) }));
    });
    return code;
  }

  function tokensCell(m) {
    const entries = Array.from(m.entries()).sort(function (a, b) { return b[1] - a[1] || (a[0] < b[0] ? -1 : 1); });
    const box = el("span", { class: "multi" });
    for (const [k, v] of entries.slice(0, 3)) {
      box.append(el("span", { class: "cls" }, el("code", { class: "tok", text: k }),
                    el("span", { class: "times", text: "\u00d7" + U.fmt(v) })));
    }
    if (entries.length > 3) box.append(el("span", { class: "muted", text: "+" + (entries.length - 3) }));
    return box;
  }

  function isFlagged(g, thr) { return thr != null && g.score != null && g.score >= thr; }

  /** One function per column id of model.COLUMNS: (R, group, context) -> <td>. */
  const CELLS = {
    input: function (R, g) { return el("td", null, U.classChip(R, g.input)); },
    output: function (R, g) { return el("td", null, U.classChip(R, g.output)); },
    inputs: function (R, g) { return el("td", null, U.classesCell(R, g.inputs)); },
    outputs: function (R, g) { return el("td", null, U.classesCell(R, g.outputs)); },
    sig: function (R, g) { return el("td", null, sigCell(R, g)); },
    tokens: function (R, g) { return el("td", null, tokensCell(g.tokens || new Map())); },
    count: function (R, g) { return el("td", { class: "num", text: U.fmt(g.count) }); },
    share: function (R, g, x) { return el("td", { class: "num muted", text: U.pct(g.count / x.total) }); },
    acc: function (R, g) { return el("td", { class: "num", text: g.acc == null ? "\u2014" : U.pct(g.acc, 0) }); },
    score: function (R, g, x) {
      return el("td", { class: "num" }, U.num(g.score, 3),
                isFlagged(g, x.thr) ? el("span", { class: "flag", title: "score above the threshold", text: "flagged" }) : null);
    },
    div: function (R, g) {
      return el("td", { class: "div-cell", text: g.div == null ? (g.unseen && g.mis ? "unseen class" : "")
        : g.div < 0 ? "typical path" : R.layers[g.div] });
    },
  };

  function columns(ctx) { const c = ctx.now(); return M.viewColumns(c.view, c.P); }

  function renderHead(ctx) {
    const R = ctx.run();
    const thead = U.clear($("table").tHead);
    const tr = el("tr");
    const sort = M.validSort(ctx.now().view, ctx.now().P, ctx.state.sort);
    for (const c of columns(ctx)) {
      const def = M.COLUMNS[c];
      const th = el("th", { scope: "col", class: def.num ? "num" : null,
                            title: def.title ? def.title + (c === "sig" ? R.layers.join(" \u2192 ") : "") : null });
      if (def.sort) {
        const active = sort.key === def.sort;
        if (active) th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
        th.append(el("button", { type: "button", class: "sort" + (active ? " active" : ""), "data-sort": def.sort },
                     def.label, el("span", { class: "arrow", "aria-hidden": "true",
                                             text: active ? (sort.dir > 0 ? "\u25b2" : "\u25bc") : "\u25b4\u25be" })));
      } else {
        th.textContent = def.label;
      }
      tr.append(th);
    }
    thead.append(tr);
  }

  function renderBody(ctx) {
    const i = ctx.state.active, R = ctx.run(), c = ctx.now();
    const tbody = U.clear($("table").tBodies[0]);
    const cols = columns(ctx);
    const x = { thr: ctx.threshold(i), total: c.total || 1 };
    const selected = ctx.state.selected[i];
    const shown = c.groups.slice(0, ctx.state.limit);
    const frag = document.createDocumentFragment();
    let first = true;
    for (const g of shown) {
      const sel = g.key === selected;
      const cls = [g.mis ? "mis" : g.correct < g.labelled ? "mixed" : "", g.labelled === 0 ? "unlabelled" : "",
                   isFlagged(g, x.thr) ? "flagged" : "", sel ? "selected" : ""].filter(Boolean).join(" ");
      const tr = el("tr", { "data-key": g.key, class: cls || null, "aria-selected": String(sel),
                            tabindex: (sel || (first && !selected)) ? "0" : "-1" });
      first = false;
      for (const col of cols) tr.append(CELLS[col](R, g, x));
      frag.append(tr);
    }
    tbody.append(frag);
    if (selected && !tbody.querySelector('tr[tabindex="0"]') && tbody.firstElementChild) tbody.firstElementChild.tabIndex = 0;
    const more = $("more");
    const left = c.groups.length - shown.length;
    more.hidden = left <= 0;
    more.textContent = "Show " + U.fmt(Math.min(left, ctx.PAGE)) + " more (" + U.fmt(left) + " left)";
    let flaggedSamples = 0;
    if (x.thr != null) for (const g of c.groups) if (isFlagged(g, x.thr)) flaggedSamples += g.count;
    $("table-note").textContent = U.fmt(c.groups.length) + " rows \u00b7 " + U.fmt(c.total) + (c.P.hasTokens ? " tokens \u00b7 " : " samples \u00b7 ") +
      "click a row or press Enter to highlight its path" +
      (x.thr != null ? " \u00b7 " + U.fmt(flaggedSamples) + (c.P.hasTokens ? " tokens" : " samples") + " in rows flagged at mean score \u2265 " + U.num(x.thr, 3) +
                         " (a row's mean; the Scores tab counts each one's own score)" : "");
  }

  function rowEls() { return Array.from($("table").tBodies[0].rows); }

  function focusRow(tr) {
    for (const r of rowEls()) if (r !== tr && r.tabIndex === 0) r.tabIndex = -1;
    tr.tabIndex = 0;
    tr.focus();
  }

  function markSelection(ctx) {
    const key = ctx.state.selected[ctx.state.active];
    let found = null;
    for (const r of rowEls()) {
      const on = r.getAttribute("data-key") === key;
      r.classList.toggle("selected", on);
      r.setAttribute("aria-selected", String(on));
      if (on) found = r;
    }
    return found;
  }

  /** Scroll the table (not the page) so that row tr is visible. */
  function reveal(tr) {
    const wrap = tr.closest(".table-wrap");
    if (!wrap) return;
    const top = tr.offsetTop - $("table").tHead.offsetHeight;
    if (top < wrap.scrollTop || tr.offsetTop + tr.offsetHeight > wrap.scrollTop + wrap.clientHeight) {
      wrap.scrollTop = Math.max(0, top - 40);
    }
  }

  function renderRunSwitch(ctx) {
    const box = U.clear($("table-run"));
    box.hidden = !ctx.compare;
    if (!ctx.compare) return;
    ctx.runs.forEach(function (R, i) {
      const on = i === ctx.state.active;
      const b = el("button", { type: "button", role: "radio", class: "seg-btn", "data-run": String(i), "aria-checked": String(on) },
                   el("span", { class: "run-badge", text: String.fromCharCode(65 + i) }), el("span", { class: "seg-name", text: R.label }));
      b.addEventListener("click", function () { ctx.set({ active: i }); });
      box.append(b);
    });
  }

  function toggleSelect(ctx, key) {
    const i = ctx.state.active;
    ctx.setRun(i, "selected", ctx.state.selected[i] === key ? null : key, { sample: null });
  }

  function mount(ctx) {
    const table = $("table");
    table.tHead.addEventListener("click", function (e) {
      const b = e.target.closest("button[data-sort]");
      if (!b) return;
      const k = b.getAttribute("data-sort");
      const sort = M.validSort(ctx.now().view, ctx.now().P, ctx.state.sort);
      ctx.set({ sort: sort.key === k ? { key: k, dir: -sort.dir } : { key: k, dir: k === "count" || k === "score" || k === "acc" ? -1 : 1 } });
      const nb = table.tHead.querySelector('button[data-sort="' + k + '"]');
      if (nb) nb.focus();
    });
    const tbody = table.tBodies[0];
    tbody.addEventListener("click", function (e) {
      const tr = e.target.closest("tr[data-key]");
      if (!tr) return;
      focusRow(tr);
      toggleSelect(ctx, tr.getAttribute("data-key"));
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
            ctx.set({ limit: ctx.state.limit + ctx.PAGE });
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
          toggleSelect(ctx, tr.getAttribute("data-key"));
          return;
        default: return;
      }
      e.preventDefault();
      focusRow(rows[j]);
    });
    $("more").addEventListener("click", function () { ctx.set({ limit: ctx.state.limit + ctx.PAGE }); });
  }

  function render(ctx, changed) {
    const full = ["derived", "active", "sort", "all"].some(function (k) { return changed.has(k); });
    if (changed.has("active") || changed.has("all")) renderRunSwitch(ctx);
    if (full) {
      renderHead(ctx);
      renderBody(ctx);
      if (!changed.has("sample") && !changed.has("all")) {
        // New rows start at the top (after the redraw's layout, not forcing one now).
        const wrap = $("table").closest(".table-wrap");
        requestAnimationFrame(function () { if (wrap.scrollTop) wrap.scrollTop = 0; });
      }
    }
    else if (changed.has("limit") || changed.has("threshold")) renderBody(ctx);
    if (changed.has("selected") || full || changed.has("limit")) {
      const tr = markSelection(ctx);
      if (tr && changed.has("sample")) reveal(tr);
    }
  }

  NNSIG.views = NNSIG.views || {};
  NNSIG.views.table = { mount: mount, render: render, sigCell: sigCell };
})(window);
