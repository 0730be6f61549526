/* nnsig report viewer: the Sankey panel of each run (NNSIG.views.sankey).
 *
 * Draws the flows of the run's filtered rows (sankey.js does the layout and the
 * SVG), highlights the selected table row's path, shows node and ribbon
 * tooltips. A click on a node focuses it (keeps only its flows), a click on a
 * layer's column header shows that layer on the map; both through ctx.set.
 * Redraws when the rows change or the panel is resized, only re-highlights
 * when the selection changes.
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG;
  const M = NNSIG.model, U = NNSIG.ui, S = NNSIG.sankey;
  const el = U.el;

  const inst = []; // per run: {svg, box, empty, graph, parts, width}

  function headers(ctx, i) {
    const R = ctx.runs[i], P = ctx.cur[i].P;
    const hs = [{ title: "Input class", sub: "true label" }];
    R.layers.forEach(function (name, l) {
      const m = R.layerMeta[l] || {};
      const bits = [];
      if (m.type) bits.push(String(m.type));
      if (m.units != null) bits.push(U.fmt(m.units) + " units");
      const k = R.nClusters[l] != null ? R.nClusters[l] : P.clusters[l] ? P.clusters[l].size : 0;
      hs.push({ title: name, sub: bits.join(" \u00b7 "), sub2: k + " clusters" });
    });
    hs.push({ title: "Output class", sub: "prediction" });
    return P.hasLabels ? hs : hs.slice(1);
  }

  function nodeTitle(R, n) {
    if (n.col === 0) return "Input class " + M.className(R, n.id);
    if (n.col === R.nLayers + 1) return "Output class " + M.className(R, n.id);
    return R.layers[n.col - 1] + " \u00b7 cluster " + n.id;
  }

  function shortNode(R, n) {
    if (n.col === 0) return "input " + M.className(R, n.id);
    if (n.col === R.nLayers + 1) return "output " + M.className(R, n.id);
    return R.layers[n.col - 1] + " c" + n.id;
  }

  function nodeTip(ctx, i, n) {
    const R = ctx.runs[i], P = ctx.cur[i].P, g = inst[i].graph;
    const box = el("div");
    box.append(el("div", { class: "tt-title", text: nodeTitle(R, n) }));
    box.append(el("div", { class: "tt-line", text: U.fmt(n.value) + (P.hasTokens ? " tokens" : " samples") + " shown (" + U.pct(n.value / g.total) + ")" }));
    if (n.col > 0 && n.col <= R.nLayers) {
      const c = P.clusters[n.col - 1].get(n.id);
      if (c) box.append(el("div", { class: "tt-line muted", text: U.fmt(c.count) + " in the split \u00b7 purity " + U.num(c.purity, 2) }));
    }
    const by = P.hasLabels ? (n.col === R.nLayers + 1 ? "True classes" : "Class composition") : "Predicted classes";
    box.append(el("div", { class: "tt-sub", text: by }));
    box.append(U.compList(R, n.byClass, n.value, 6));
    return box;
  }

  function linkTip(ctx, i, l) {
    const R = ctx.runs[i], P = ctx.cur[i].P;
    const cls = l.cls >= R.nClasses ? M.UNLABELLED : l.cls;
    return el("div", null,
              el("div", { class: "tt-title" }, el("i", { class: "sw", style: { background: U.classColor(cls) } }),
                 (P.hasLabels ? "Class " : "Predicted class ") + M.className(R, cls)),
              el("div", { class: "tt-line", text: shortNode(R, l.source) + "  \u2192  " + shortNode(R, l.target) }),
              el("div", { class: "tt-line", text: U.fmt(l.value) + (P.hasTokens ? " tokens (" : " samples (") + U.pct(l.value / l.source.value) +
                          " of " + shortNode(R, l.source) + ")" }));
  }

  function draw(ctx, i) {
    const I = inst[i], R = ctx.runs[i], c = ctx.cur[i], P = c.P;
    const svg = I.svg;
    const width = Math.max(320, ctx.widths[i].sankey);
    I.width = width;
    window.NNSIG_DRAWS = (window.NNSIG_DRAWS || 0) + 1;
    const g = S.build(c.rows, R.nLayers, R.nClasses + 1, {
      noInput: !P.hasLabels, classOf: function (r) { return M.colourClass(R, P, r); },
    });
    I.graph = g;
    if (!g.total) {
      U.clear(svg);
      svg.setAttribute("width", "0");
      svg.setAttribute("height", "0");
      I.empty.hidden = false;
      I.parts = null;
      return;
    }
    I.empty.hidden = true;
    let maxN = 1;
    for (const col of g.columns) maxN = Math.max(maxN, col.length);
    const headerH = 52;
    const plotH = Math.round(U.clamp(Math.max(maxN * 26, width * 0.42), ctx.compare ? 300 : 340, 760));
    const height = headerH + plotH + 14;
    function labelW(nodes) {
      let m = 0;
      for (const nd of nodes) m = Math.max(m, Math.min(24, M.className(R, nd.id).length));
      return U.clamp(m * 6.8 + 12, 34, 176);
    }
    const left = P.hasLabels ? Math.max(labelW(g.columns[0]), 72) : 24;
    const right = Math.max(labelW(g.columns[g.nCols - 1]), 92);
    S.layout(g, { x0: left, x1: width - right, y0: headerH + 6, y1: headerH + 6 + plotH,
                  nodeWidth: U.clamp(Math.round(width / 80), 10, 16), nodePad: 8, minNodeHeight: 2 });
    I.parts = S.draw(svg, g, {
      width: width, height: height, colorOf: ctx.colorOf(R), headers: headers(ctx, i), headerY: 14,
      label: function (nd) { return nd.col === 0 || nd.col === R.nLayers + 1 ? M.className(R, nd.id) : "c" + nd.id; },
      focusKey: ctx.state.focus[i],
    });
    g.columns.forEach(function (col, pos) {
      const lc = g.logical[pos];
      const hd = svg.querySelector('.col-head[data-col="' + pos + '"]');
      if (hd && lc >= 1 && lc <= R.nLayers) {
        hd.setAttribute("data-layer", String(lc - 1));
        hd.classList.add("clickable");
        hd.classList.toggle("on-map", ctx.state.mapLayer[i] === lc - 1);
      }
    });
    svg.setAttribute("aria-label", "Sankey diagram of " + U.fmt(g.total) + (P.hasTokens ? " tokens: " : " samples: ") +
                     (P.hasLabels ? "input class, " : "") + R.nLayers + " layers of clusters, output class");
    highlight(ctx, i);
  }

  function highlight(ctx, i) {
    const I = inst[i], R = ctx.runs[i];
    if (!I.parts) return;
    const g = ctx.selectedGroup(i);
    const rows = g ? g.rows : [];
    const divergeKeys = [];
    for (const r of rows) if (r.mis && r.div != null && r.div >= 0) divergeKeys.push((r.div + 1) + ":" + r.path[r.div]);
    S.highlight(I.svg, I.parts, I.graph, rows, { colorOf: ctx.colorOf(R), divergeKeys: divergeKeys });
  }

  function mount(ctx) {
    ctx.cols.forEach(function (col, i) {
      const I = { svg: col.querySelector(".sankey-svg"), box: col.querySelector(".sankey"),
                  empty: col.querySelector(".sankey .empty"), graph: null, parts: null, width: 0 };
      inst[i] = I;
      const svg = I.svg;
      svg.addEventListener("mousemove", function (e) {
        if (!I.graph) return;
        const t = e.target;
        const ne = t.closest && t.closest("[data-node]");
        if (ne) { const nd = I.graph.nodes.get(ne.getAttribute("data-node")); if (nd) { U.showTip(e, nodeTip(ctx, i, nd)); return; } }
        const le = t.closest && t.closest("[data-link]");
        if (le) { const l = I.graph.links.get(le.getAttribute("data-link")); if (l) { U.showTip(e, linkTip(ctx, i, l)); return; } }
        const he = t.closest && t.closest(".col-head[data-layer]");
        if (he) { U.showTip(e, el("div", { class: "tt-line", text: "Click to show this layer on the map" })); return; }
        U.hideTip();
      });
      svg.addEventListener("mouseleave", U.hideTip);
      svg.addEventListener("click", function (e) {
        const ne = e.target.closest && e.target.closest("[data-node]");
        if (ne) { ctx.toggleFocus(i, ne.getAttribute("data-node")); return; }
        const he = e.target.closest && e.target.closest(".col-head[data-layer]");
        if (he) ctx.setRun(i, "mapLayer", +he.getAttribute("data-layer"), { active: i });
      });
      if (window.ResizeObserver) {
        let pending = false;
        new ResizeObserver(function () {
          if (pending) return;
          pending = true;
          requestAnimationFrame(function () {
            pending = false;
            if (ctx.cur[i].P && Math.abs(Math.max(320, Math.floor(I.box.clientWidth)) - I.width) >= 2) ctx.resized();
          });
        }).observe(I.box);
      } else {
        window.addEventListener("resize", function () { ctx.resized(); });
      }
    });
    window.addEventListener("scroll", U.hideTip, { passive: true });
  }

  function render(ctx, changed) {
    for (let i = 0; i < ctx.runs.length; i++) {
      if (changed.has("derived") || changed.has("resize")) draw(ctx, i);
      else {
        if (changed.has("selected")) highlight(ctx, i);
        if (changed.has("mapLayer") && inst[i].parts) {
          for (const hd of inst[i].svg.querySelectorAll(".col-head[data-layer]")) {
            hd.classList.toggle("on-map", +hd.getAttribute("data-layer") === ctx.state.mapLayer[i]);
          }
        }
      }
    }
  }

  NNSIG.views = NNSIG.views || {};
  NNSIG.views.sankey = { mount: mount, render: render, graph: function (i) { return inst[i] && inst[i].graph; } };
})(window);
