/* nnsig report viewer: the Scores pane of the active run (NNSIG.views.scores).
 *
 * A histogram of the diagnostic score per group of samples (correct,
 * misclassified, unseen class, unlabelled), the report's default threshold
 * marked on it (the scorer's split-conformal threshold, with what it promises;
 * reports of nnsig 0.2: 5% of a split's correct samples), and a slider over the
 * bin edges and that default;
 * the rates at the chosen threshold are exact (bin edges, and the default
 * from the report's exact counts). Flagged rows and map points follow.
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG;
  const M = NNSIG.model, F = NNSIG.figures, U = NNSIG.ui, S = NNSIG.sankey;
  const el = U.el, $ = U.$, fmt = U.fmt, pct = U.pct, num = U.num;

  const GROUPS = { correct: ["Correct", "#4477AA"], misclassified: ["Misclassified", "#EE6677"],
                   unseen: ["Unseen class", "#CCBB44"], unlabelled: ["Unlabelled", "#8C96A3"] };

  let built = null; // {key, slider, cands, refresh}

  let stale = true;

  function render(ctx, changed) {
    const any = function (keys) { return keys.some(function (k) { return changed.has(k); }); };
    if (any(["split", "active", "all"])) stale = true;
    if (ctx.state.tab !== "scores") return; // drawn when shown
    const key = ctx.thresholdKey(ctx.state.active);
    if (stale || !built || built.key !== key) { build(ctx); stale = false; }
    else if (changed.has("threshold")) built.refresh();
  }

  function build(ctx) {
    const pane = U.clear($("pane-scores"));
    built = null;
    const i = ctx.state.active, R = ctx.runs[i], P = ctx.cur[i].P;
    const sc = P.sp.scores;
    if (!sc || !Array.isArray(sc.bins) || sc.bins.length < 2 || !sc.counts) {
      pane.append(el("p", { class: "muted", text: "No diagnostic scores for the " + ctx.state.split + " split" + (ctx.compare ? " of " + R.label : "") + "." }));
      return;
    }
    const bins = sc.bins, nb = bins.length - 1;
    const lo = bins[0], hi = bins[nb];
    const def = R.threshold ? Number(R.threshold.value) : null;
    const groups = F.SCORE_GROUPS.filter(function (g) { return Array.isArray(sc.counts[g]) && F.sum(sc.counts[g]) > 0; });
    pane.append(el("h3", { class: "pane-title", text: "Diagnostic score" + (sc.name ? ": " + String(sc.name) : "") }));
    pane.append(el("p", { class: "small muted", text: "Share of each group of samples per score bin. Samples scoring at or above the threshold are flagged." }));
    const W = 320, H = 150, ml = 6, mr = 6, mt = 8, mb = 22;
    const hist = S.svgEl("svg", { viewBox: "0 0 " + W + " " + H, class: "hist", role: "img", "aria-label": "Score histogram" });
    let maxF = 0;
    const fr = groups.map(function (g) {
      const c = sc.counts[g], t = F.sum(c);
      const f = c.map(function (v) { return (v || 0) / t; });
      for (const v of f) maxF = Math.max(maxF, v);
      return f;
    });
    const pw = W - ml - mr, ph = H - mt - mb, bw = pw / nb;
    function xOf(v) { return ml + (hi > lo ? (v - lo) / (hi - lo) : 0) * pw; }
    const shade = S.svgEl("rect", { class: "flag-zone", y: mt, height: ph }, hist);
    groups.forEach(function (g, gi) {
      const w = bw / groups.length;
      for (let b = 0; b < nb; b++) {
        const h = maxF ? (fr[gi][b] / maxF) * ph : 0;
        if (h <= 0) continue;
        const r = S.svgEl("rect", { x: (ml + b * bw + gi * w).toFixed(2), y: (mt + ph - h).toFixed(2), width: Math.max(0.5, w - 0.4).toFixed(2),
                                    height: h.toFixed(2), fill: GROUPS[g][1] }, hist);
        S.svgEl("title", null, r).textContent = GROUPS[g][0] + " [" + num(bins[b], 2) + ", " + num(bins[b + 1], 2) + "): " +
          fmt(sc.counts[g][b]) + " (" + pct(fr[gi][b]) + ")";
      }
    });
    S.svgEl("line", { x1: ml, x2: W - mr, y1: mt + ph, y2: mt + ph, class: "axis" }, hist);
    S.svgText(hist, { x: ml, y: H - 6, class: "tick" }, num(lo, 2));
    S.svgText(hist, { x: W - mr, y: H - 6, class: "tick", "text-anchor": "end" }, num(hi, 2));
    if (def != null && def >= lo && def <= hi) {
      const dx = xOf(def).toFixed(2);
      const d = S.svgEl("line", { x1: dx, x2: dx, y1: mt - 6, y2: mt + ph, class: "thr-default" }, hist);
      S.svgEl("title", null, d).textContent = "Default threshold " + num(def, 3);
      S.svgText(hist, { x: dx, y: H - 6, class: "tick default", "text-anchor": "middle" }, "default");
    }
    const tline = S.svgEl("line", { y1: mt - 4, y2: mt + ph, class: "thr" }, hist);
    pane.append(hist);
    const legend = el("div", { class: "hist-legend" });
    for (const g of groups) legend.append(el("span", null, el("i", { class: "sw", style: { background: GROUPS[g][1] } }), GROUPS[g][0]));
    pane.append(legend);
    if (R.threshold && R.threshold.promise) {
      pane.append(el("p", { class: "small default-note", text: "Default threshold " + num(def, 3) + ": " + String(R.threshold.promise) + "." }));
      if (R.threshold.split === ctx.state.split) {
        pane.append(el("p", { class: "small muted", id: "calibration-note", text: "This split tuned the scorer and calibrated its threshold: " +
          "its rates below are not a held-out measure; another split's are." }));
      }
    } else if (R.threshold) {
      const t = R.threshold;
      pane.append(el("p", { class: "small default-note", text: "Default threshold " + num(def, 3) + ": flags " + pct(t.rate, 0) +
        " of the correct samples of the " + String(t.split) + " split" + (t.split === ctx.state.split ? " (this split)." : ", chosen there and applied here.") }));
    } else {
      pane.append(el("p", { class: "small muted", text: "No default threshold in the report (the scores come from a scorer without a validation split: " +
        "nnsig evaluate STORE --validation VAL gives one with a stated guarantee): starting at the bin edge flagging at most 5% of this split's correct samples." }));
    }

    const cands = F.thresholdCandidates(sc, def);
    const start = ctx.threshold(i);
    const slider = el("input", { type: "range", min: "0", max: String(cands.length - 1), step: "1", id: "threshold",
                                 value: String(Math.max(0, cands.indexOf(start))), "aria-label": "Score threshold" });
    const tval = el("output", { for: "threshold", class: "thr-val" });
    const reset = el("button", { type: "button", class: "link-btn thr-default-btn", text: "Default", title: "Back to the default threshold", hidden: def == null });
    pane.append(el("label", { class: "thr-label" }, "Threshold ", slider, tval), reset);
    const rates = el("div", { class: "rates" });
    pane.append(rates);
    if (P.hasScore) {
      const sortBtn = el("button", { type: "button", class: "btn", text: "Sort the table by score" });
      sortBtn.addEventListener("click", function () { ctx.set({ sort: { key: "score", dir: -1 } }); });
      pane.append(sortBtn);
    }

    function refresh() {
      const t = ctx.threshold(i);
      slider.value = String(Math.max(0, cands.indexOf(t)));
      const x = xOf(t);
      tline.setAttribute("x1", x.toFixed(2));
      tline.setAttribute("x2", x.toFixed(2));
      shade.setAttribute("x", x.toFixed(2));
      shade.setAttribute("width", Math.max(0, W - mr - x).toFixed(2));
      tval.textContent = "\u2265 " + num(t, 3) + (def != null && t === def ? " (default)" : "");
      slider.setAttribute("aria-valuetext", "score at least " + num(t, 3));
      U.clear(rates);
      const fl = F.flaggedAt(sc, t, def);
      function rate(label, g, what) {
        if (!fl[g] || !fl[g].total) return;
        rates.append(el("div", { class: "rate", "data-group": g }, el("span", { class: "rate-label", text: label }),
                        el("span", { class: "rate-val", text: pct(fl[g].flagged / fl[g].total) }),
                        el("span", { class: "rate-sub", text: what + " \u00b7 " + fmt(fl[g].flagged) + " / " + fmt(fl[g].total) })));
      }
      rate("Correct flagged", "correct", "false-positive rate");
      rate("Misclassified flagged", "misclassified", "true-positive rate");
      rate("Unseen flagged", "unseen", "true-positive rate");
      rate("Unlabelled flagged", "unlabelled", "share of the samples without a label");
      const tot = function (g) { return fl[g] ? fl[g].total : 0; };
      const flg = function (g) { return fl[g] ? fl[g].flagged : 0; };
      const pos = tot("misclassified") + tot("unseen");
      if (pos && tot("correct")) {
        rates.append(el("div", { class: "rate strong" }, el("span", { class: "rate-label", text: "All errors flagged" }),
                        el("span", { class: "rate-val", text: pct((flg("misclassified") + flg("unseen")) / pos) }),
                        el("span", { class: "rate-sub", text: "TPR at FPR " + pct(flg("correct") / tot("correct")) })));
      }
    }
    function setThreshold(v) {
      const th = Object.assign({}, ctx.state.threshold);
      th[ctx.thresholdKey(i)] = v;
      ctx.set({ threshold: th });
    }
    slider.addEventListener("input", function () { setThreshold(cands[+slider.value]); });
    reset.addEventListener("click", function () { setThreshold(def); });
    built = { key: ctx.thresholdKey(i), refresh: refresh };
    refresh();
  }

  NNSIG.views = NNSIG.views || {};
  NNSIG.views.scores = { render: render };
})(window);
