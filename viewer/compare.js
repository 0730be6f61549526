/* nnsig report viewer: the Changes pane of a comparison of runs (NNSIG.views.compare).
 *
 * What changed between the runs on the current split: per class, the layer
 * where it becomes separable in each run; and, when the runs hold the same
 * samples, the samples whose outcome differs (right in one run, wrong in
 * another), filtered like the rest of the page. Clicking a changed sample
 * selects its row in every run's table and Sankey and marks it on every map.
 * When the runs do not hold the same samples, the pane says why.
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG;
  const M = NNSIG.model, F = NNSIG.figures, U = NNSIG.ui;
  const el = U.el, $ = U.$, fmt = U.fmt;
  const LIST = 60;

  function badge(i) { return el("span", { class: "run-badge", text: String.fromCharCode(65 + i) }); }

  function separability(ctx) {
    const runs = ctx.runs;
    const present = new Set();
    ctx.cur.forEach(function (c) { for (const x of c.P.present) if (x >= 0) present.add(x); });
    const head = el("tr", null, el("th", { text: "Class" }));
    runs.forEach(function (R, i) { head.append(el("th", null, badge(i), " " + R.label)); });
    const tb = el("tbody");
    let differ = 0;
    for (const c of Array.from(present).sort(function (a, b) { return a - b; })) {
      const cells = runs.map(function (R, i) {
        const P = ctx.cur[i].P;
        const l = P.hasLabels ? F.separableLayer(P.sp.class_purity, c, R.separable) : null;
        return { l: l, text: l == null ? "\u2014" : l < 0 ? "never" : R.layers[l] + " (" + (l + 1) + "/" + R.nLayers + ")" };
      });
      const same = cells.every(function (x) { return x.l === cells[0].l; });
      if (!same) differ++;
      const tr = el("tr", { class: same ? null : "diff", "data-class": String(c) }, el("td", null, U.classChip(runs[0], c)));
      for (const x of cells) tr.append(el("td", { class: x.l == null || x.l < 0 ? "muted" : null, text: x.text }));
      tb.append(tr);
    }
    return el("div", null, U.section("Where each class becomes separable"),
              el("p", { class: "small muted", text: "First layer where the class's per-class purity reaches " +
                U.pct(runs[0].separable, 0) + " in each run (" + differ + " of " + present.size + " classes differ)." }),
              el("table", { class: "mini sep-cmp" }, el("thead", null, head), tb));
  }

  function pick(ctx, s) {
    const st = ctx.state;
    const selected = ctx.cur.map(function (c, i) {
      const key = M.groupKeyOfRow(c.P, s.rows[i], c.view);
      return c.byKey.has(key) ? key : null;
    });
    const same = st.sample === s.position;
    ctx.set({ selected: same ? selected.map(function () { return null; }) : selected, sample: same ? null : s.position });
  }

  function changedList(ctx, cmp, pane) {
    const ch = cmp.changed;
    const runs = ctx.runs;
    const right = ch.right_in || [];
    const head = runs.length === 2
      ? fmt(ch.n_changed) + " samples change outcome: " + fmt(right[1]) + " right only in " + runs[1].label + ", " +
        fmt(right[0]) + " right only in " + runs[0].label + "."
      : fmt(ch.n_changed) + " samples are right in some runs and wrong in others (right in: " +
        runs.map(function (R, i) { return R.label + " " + fmt(right[i]); }).join(", ") + ").";
    pane.append(U.section("Samples whose outcome changes"), el("p", { class: "changed-summary", text: head }));
    const who = ctx.state.changesWho;
    const seg = el("div", { class: "segmented light chg-who", role: "radiogroup", "aria-label": "Which changed samples" });
    const choices = [["all", "All"]].concat(runs.map(function (R, i) {
      return [String(i), (runs.length === 2 ? "Right only in " : "Right in ") + String.fromCharCode(65 + i) + " (" + fmt(right[i]) + ")"];
    }));
    for (const [value, label] of choices) {
      const on = String(who) === value;
      const b = el("button", { type: "button", role: "radio", class: "seg-btn", "aria-checked": String(on), "data-who": value,
                               text: label }); // every choice reachable with Tab
      b.addEventListener("click", function () { ctx.set({ changesWho: value === "all" ? "all" : +value, changesLimit: LIST }); });
      seg.append(b);
    }
    pane.append(seg);
    const visible = F.visibleChanges(cmp, ctx.cur.map(function (c) { return c.pass; })).filter(function (s) {
      return who === "all" || s.outputs[who] === s.label;
    });
    if (ch.truncated) pane.append(el("p", { class: "small muted", text: "The report lists the first " + fmt(ch.samples.length) + " of them." }));
    if (visible.length < ch.samples.length) {
      pane.append(el("p", { class: "small muted", text: fmt(visible.length) + " of the listed samples pass the filters" +
        (who === "all" ? "." : " and this choice.") }));
    }
    const sprite = U.isSprite(ch.thumbnails) ? ch.thumbnails : null;
    const index = new Map(ch.samples.map(function (s, k) { return [s, k]; }));
    const ul = el("ul", { class: "changed" });
    const limit = ctx.state.changesLimit;
    for (const s of visible.slice(0, limit)) {
      const on = ctx.state.sample === s.position;
      const b = el("button", { type: "button", class: "changed-btn" + (on ? " on" : ""), "aria-pressed": String(on),
                               "data-position": String(s.position), title: "Select this sample's rows in every run" });
      const cv = U.spriteCanvas(sprite, index.get(s), "sample " + s.sample_index, "chg-thumb");
      if (cv) b.append(cv);
      const info = el("span", { class: "chg-info" },
                      el("span", { class: "chg-id", text: "#" + s.sample_index }), U.classChip(runs[0], s.label));
      const outs = el("span", { class: "chg-outs" });
      s.outputs.forEach(function (o, i) {
        const ok = o === s.label;
        outs.append(el("span", { class: "chg-out " + (ok ? "ok" : "bad") }, badge(i),
                       el("span", { class: "mark", text: ok ? "\u2713" : "\u2717" }), U.classChip(runs[i], o)));
      });
      b.append(info, outs);
      b.addEventListener("click", function () { pick(ctx, s); });
      ul.append(el("li", null, b));
    }
    pane.append(ul);
    if (visible.length > limit) {
      const more = el("button", { type: "button", class: "btn", text: "Show " + fmt(Math.min(LIST, visible.length - limit)) + " more" });
      more.addEventListener("click", function () { ctx.set({ changesLimit: limit + LIST }); });
      pane.append(more);
    }
  }

  let stale = true;

  function render(ctx, changed) {
    if (!ctx.compare) return;
    if (["derived", "sample", "all", "changesLimit", "changesWho"].some(function (k) { return changed.has(k); })) stale = true;
    if (!stale || ctx.state.tab !== "changes") return; // drawn when shown
    stale = false;
    const pane = U.clear($("pane-changes"));
    const cmp = ctx.comparison();
    pane.append(el("h3", { class: "pane-title", text: "What changed" }));
    pane.append(el("p", { class: "small" }, ctx.runs.map(function (R, i) { return el("span", { class: "run-key" }, badge(i), " " + R.label); })));
    if (!cmp) { pane.append(el("p", { class: "muted", text: "No comparison data for this split." })); return; }
    pane.append(separability(ctx));
    if (!cmp.same_samples) {
      pane.append(U.section("Samples whose outcome changes"),
                  el("p", { class: "callout warn", text: "Not shown: the runs do not hold the same samples in the " + ctx.state.split +
                    " split (" + String(cmp.reason || "unknown reason") + "). Compare runs captured on the same data to see them." }));
      return;
    }
    if (cmp.changed) changedList(ctx, cmp, pane);
  }

  NNSIG.views = NNSIG.views || {};
  NNSIG.views.compare = { render: render };
})(window);
