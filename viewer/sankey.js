/* nnsig report viewer: class palette, strictly layered Sankey layout and SVG drawing.
 *
 * Vanilla JS, no dependencies, no network. Exposes window.NNSIGSankey.
 *
 * Graph: column 0 = input (true) class, columns 1..L = the clusters of each
 * analysed layer, column L+1 = output (predicted) class. Every table row
 * {input, path, output, count} adds `count` to one node per column and to one
 * link per pair of adjacent columns *per colour class* (the input class; the
 * predicted class on a split without labels, which has no input column), so a
 * link's colour is its class. Strings never reach the DOM except through textContent.
 */
(function (global) {
  "use strict";

  const SVGNS = "http://www.w3.org/2000/svg";

  // Colour-blind-safe categorical palette, in this order:
  //  1-7  Okabe & Ito (2008), "Color Universal Design", without black;
  //  8-16 Paul Tol's "muted" scheme (Tol 2021, "Colour Schemes"), without its pale grey.
  // Classes beyond 16 get golden-angle hues, which are NOT colour-blind safe;
  // every class is also named in labels, tooltips and tables.
  const PALETTE = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
    "#332288", "#882255", "#999933", "#44AA99", "#CC6677", "#DDCC77", "#88CCEE",
    "#117733", "#AA4499",
  ];

  function classColor(i) {
    if (i >= 0 && i < PALETTE.length) return PALETTE[i];
    const hue = (i * 137.508) % 360;
    const light = 38 + (i % 3) * 12;
    return "hsl(" + hue.toFixed(1) + ",55%," + light + "%)";
  }

  /**
   * Aggregate rows into columns of nodes and per-colour links.
   * Logical columns: 0 = input class, 1..L = layers, L+1 = output class; with
   * opts.noInput (a split without labels) column 0 is left out. opts.classOf(row)
   * gives the colour slot of a row's flow (default: its input class), in [0, nColours).
   */
  function build(rows, nLayers, nColours, opts) {
    opts = opts || {};
    const classOf = opts.classOf || function (r) { return r.input; };
    const nCols = nLayers + 2;
    const first = opts.noInput ? 1 : 0;
    const cols = [];
    for (let c = 0; c < nCols; c++) cols.push(new Map());
    const links = new Map();
    const ids = new Array(nCols);
    let total = 0;
    for (const r of rows) {
      const cnt = r.count;
      if (!(cnt > 0)) continue;
      total += cnt;
      const cls = classOf(r);
      ids[0] = r.input;
      for (let l = 0; l < nLayers; l++) ids[l + 1] = r.path[l];
      ids[nCols - 1] = r.output;
      let prev = null;
      for (let c = first; c < nCols; c++) {
        let node = cols[c].get(ids[c]);
        if (!node) {
          node = { col: c, id: ids[c], key: c + ":" + ids[c], value: 0,
                   byClass: new Float64Array(nColours), ins: [], outs: [] };
          cols[c].set(ids[c], node);
        }
        node.value += cnt;
        node.byClass[cls] += cnt;
        if (prev) {
          const key = prev.col + ":" + prev.id + ":" + node.id + ":" + cls;
          let link = links.get(key);
          if (!link) {
            link = { key: key, col: prev.col, source: prev, target: node, cls: cls, value: 0 };
            links.set(key, link);
            prev.outs.push(link);
            node.ins.push(link);
          }
          link.value += cnt;
        }
        prev = node;
      }
    }
    const nodes = new Map();
    const columns = [];
    const logical = [];
    cols.forEach(function (m, c) {
      if (c < first) return;
      const arr = Array.from(m.values());
      arr.forEach(function (n) { n.pos = columns.length; nodes.set(n.key, n); });
      columns.push(arr);
      logical.push(c);
    });
    return { nCols: columns.length, nLayers: nLayers, first: first, logical: logical, columns: columns,
             nodes: nodes, links: links, total: total, classOf: classOf };
  }

  function dominant(node) {
    let best = -1, bv = -1;
    for (let k = 0; k < node.byClass.length; k++) if (node.byClass[k] > bv) { bv = node.byClass[k]; best = k; }
    return best;
  }

  /**
   * Position nodes and links.
   * opts: {x0, x1, y0, y1, nodeWidth, nodePad, minNodeHeight}
   * The first and last columns are in class order; the cluster columns are
   * ordered by the barycentre of their neighbours' positions (weighted by the
   * flow), alternating forward and backward sweeps to reduce crossings.
   */
  function layout(g, opts) {
    const nw = opts.nodeWidth, minH = opts.minNodeHeight || 1.5;
    const H = opts.y1 - opts.y0;
    const cols = g.columns;
    const nCols = cols.length;
    const step = nCols > 1 ? (opts.x1 - opts.x0 - nw) / (nCols - 1) : 0;
    cols.forEach(function (nodes, c) {
      for (const n of nodes) { n.x0 = opts.x0 + c * step; n.x1 = n.x0 + nw; }
    });
    const byId = function (a, b) { return a.id - b.id; };
    const lo = g.first ? 0 : 1; // the first cluster column (0 when there is no input column)
    if (!g.first) cols[0].sort(byId);
    cols[nCols - 1].sort(byId);
    for (let c = lo; c < nCols - 1; c++) {
      for (const n of cols[c]) n.dom = dominant(n);
      cols[c].sort(function (a, b) { return a.dom - b.dom || b.value - a.value || a.id - b.id; });
    }
    let maxN = 1;
    for (const nodes of cols) maxN = Math.max(maxN, nodes.length);
    const pad = Math.min(opts.nodePad, (H * 0.4) / Math.max(1, maxN - 1));
    const total = g.total || 1;
    const ky = Math.max(0, (H - pad * (maxN - 1)) / total);

    function place(nodes) {
      let used = 0;
      for (const n of nodes) { n.h = Math.max(n.value * ky, minH); used += n.h; }
      const gap = nodes.length > 1 ? Math.min(pad * 3, Math.max(0, (H - used) / (nodes.length - 1))) : 0;
      let y = opts.y0 + Math.max(0, (H - used - gap * (nodes.length - 1)) / 2);
      for (const n of nodes) { n.y0 = y; n.y1 = y + n.h; y = n.y1 + gap; }
    }
    cols.forEach(place);

    function centre(n) { return (n.y0 + n.y1) / 2; }
    function sweep(c, useIns) {
      const nodes = cols[c];
      for (const n of nodes) {
        let s = 0, w = 0;
        for (const l of (useIns ? n.ins : n.outs)) {
          s += l.value * centre(useIns ? l.source : l.target);
          w += l.value;
        }
        n.bary = w > 0 ? s / w : centre(n);
      }
      nodes.sort(function (a, b) { return a.bary - b.bary || a.id - b.id; });
      place(nodes);
    }
    for (let it = 0; it < 4; it++) {
      for (let c = Math.max(lo, 1); c < nCols - 1; c++) sweep(c, true);
      for (let c = nCols - 2; c >= lo; c--) sweep(c, false);
    }
    for (let c = Math.max(lo, 1); c < nCols - 1; c++) sweep(c, true);

    for (const nodes of cols) {
      for (const n of nodes) {
        n.outs.sort(function (a, b) { return a.target.y0 - b.target.y0 || a.cls - b.cls; });
        n.ins.sort(function (a, b) { return a.source.y0 - b.source.y0 || a.cls - b.cls; });
        let y = n.y0;
        for (const l of n.outs) { l.width = l.value * ky; l.sy0 = y; y += l.width; }
        y = n.y0;
        for (const l of n.ins) { l.ty0 = y; y += l.value * ky; }
      }
    }
    g.ky = ky;
    g.x0 = opts.x0;
    g.nodeWidth = nw;
    g.step = step;
    g.maxN = maxN;
    return g;
  }

  function r2(v) { return Math.round(v * 100) / 100; }

  function ribbon(x0, y0, x1, y1, w) {
    const xm = r2((x0 + x1) / 2);
    x0 = r2(x0); x1 = r2(x1);
    const a0 = r2(y0), a1 = r2(y1), b0 = r2(y0 + w), b1 = r2(y1 + w);
    return "M" + x0 + "," + a0 + "C" + xm + "," + a0 + " " + xm + "," + a1 + " " + x1 + "," + a1 +
      "L" + x1 + "," + b1 + "C" + xm + "," + b1 + " " + xm + "," + b0 + " " + x0 + "," + b0 + "Z";
  }

  function svgEl(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k in attrs) if (attrs[k] != null) e.setAttribute(k, String(attrs[k]));
    if (parent) parent.appendChild(e);
    return e;
  }

  function svgText(parent, attrs, text) {
    const t = svgEl("text", attrs, parent);
    t.textContent = text;
    return t;
  }

  function truncate(s, maxChars) {
    s = String(s);
    return s.length > maxChars ? s.slice(0, Math.max(1, maxChars - 1)) + "\u2026" : s;
  }

  /**
   * Draw a laid-out graph into `svg` (cleared first).
   * opts: {width, height, colorOf(cls), headers:[{title, sub}], headerY,
   *        label(node) -> string|null, focusKey}
   */
  function draw(svg, g, opts) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("width", opts.width);
    svg.setAttribute("height", opts.height);
    svg.setAttribute("viewBox", "0 0 " + opts.width + " " + opts.height);
    const nCols = g.nCols, nw = g.nodeWidth;
    const last = nCols - 1;

    // Column headers.
    const hg = svgEl("g", { class: "headers" }, svg);
    const colChars = Math.max(4, Math.floor((g.step || 120) / 7.4));
    const subChars = Math.max(4, Math.floor((g.step || 120) / 6.2));
    for (let c = 0; c < nCols; c++) {
      const hd = opts.headers[c] || { title: "" };
      const x = g.x0 + c * g.step;
      // The input column's header ends at its nodes; a first cluster column (no input
      // column) starts at its nodes; the output column's starts at its nodes.
      const anchor = c === 0 ? (g.first ? "start" : "end") : c === last ? "start" : "middle";
      const hx = c === 0 ? (g.first ? x : x + nw) : c === last ? x : x + nw / 2;
      const cg = svgEl("g", { class: "col-head", "data-col": c }, hg);
      svgEl("title", null, cg).textContent = [hd.title, hd.sub, hd.sub2].filter(Boolean).join("\n");
      svgText(cg, { x: r2(hx), y: opts.headerY, "text-anchor": anchor, class: "col-title" },
              truncate(hd.title, c === 0 || c === last ? 24 : colChars));
      if (hd.sub) {
        svgText(cg, { x: r2(hx), y: opts.headerY + 14, "text-anchor": anchor, class: "col-sub" },
                truncate(hd.sub, c === 0 || c === last ? 24 : subChars));
      }
      if (hd.sub2) {
        svgText(cg, { x: r2(hx), y: opts.headerY + 27, "text-anchor": anchor, class: "col-sub" },
                truncate(hd.sub2, c === 0 || c === last ? 24 : subChars));
      }
    }

    // Links, drawn as filled ribbons (a tiny flow stays visible at 0.8 px).
    const lg = svgEl("g", { class: "links" }, svg);
    for (const l of g.links.values()) {
      svgEl("path", {
        d: ribbon(l.source.x1, l.sy0, l.target.x0, l.ty0, Math.max(l.width, 0.8)),
        fill: opts.colorOf(l.cls), class: "link", "data-link": l.key,
      }, lg);
    }
    const hl = svgEl("g", { class: "highlight" }, svg);

    // Nodes: stacked segments by class composition, then an outline.
    const ng = svgEl("g", { class: "nodes" }, svg);
    const nodeEls = new Map();
    for (const nodes of g.columns) {
      for (const n of nodes) {
        const grp = svgEl("g", { class: "node" + (n.key === opts.focusKey ? " focused" : ""),
                                 "data-node": n.key }, ng);
        nodeEls.set(n.key, grp);
        let y = n.y0;
        const h = n.y1 - n.y0;
        for (let k = 0; k < n.byClass.length; k++) {
          const v = n.byClass[k];
          if (!(v > 0)) continue;
          const sh = (v / n.value) * h;
          svgEl("rect", { x: r2(n.x0), y: r2(y), width: nw, height: r2(Math.max(sh, 0.3)),
                          fill: opts.colorOf(k), class: "seg" }, grp);
          y += sh;
        }
        svgEl("rect", { x: r2(n.x0) - 0.5, y: r2(n.y0) - 0.5, width: nw + 1, height: r2(h) + 1,
                        class: "outline" }, grp);
        const hh = Math.max(h, 6);
        svgEl("rect", { x: r2(n.x0) - 2, y: r2(n.y0 + h / 2 - hh / 2) - 2, width: nw + 4, height: r2(hh) + 4,
                        class: "hit" }, grp);
        const label = opts.label(n);
        if (label != null && h >= 9) {
          if (n.pos === 0 && n.col === 0) {
            svgText(grp, { x: r2(n.x0 - 6), y: r2(n.y0 + h / 2), "text-anchor": "end",
                           class: "nlabel cls", dy: "0.35em" }, truncate(label, 24));
          } else if (n.pos === last) {
            svgText(grp, { x: r2(n.x1 + 6), y: r2(n.y0 + h / 2), "text-anchor": "start",
                           class: "nlabel cls", dy: "0.35em" }, truncate(label, 24));
          } else if (h >= 12) {
            svgText(grp, { x: r2(n.x1 + 3), y: r2(n.y0 + h / 2), "text-anchor": "start",
                           class: "nlabel", dy: "0.35em" }, label);
          }
        }
      }
    }
    return { highlight: hl, nodes: ng, links: lg, nodeEls: nodeEls };
  }

  /**
   * Highlight the flows of `rows` (a subset of the drawn rows) inside their
   * ribbons, and mark the nodes they pass through. Returns the node keys.
   */
  function highlight(svg, parts, g, rows, opts) {
    const hl = parts.highlight;
    while (hl.firstChild) hl.removeChild(hl.firstChild);
    for (const e of parts.nodeEls.values()) e.classList.remove("on-path", "diverge");
    if (!rows || !rows.length) { svg.classList.remove("has-highlight"); return []; }
    const nCols = g.nLayers + 2;
    const sub = new Map();
    const onPath = new Set();
    const ids = new Array(nCols);
    for (const r of rows) {
      const cls = g.classOf(r);
      ids[0] = r.input;
      for (let l = 0; l < g.nLayers; l++) ids[l + 1] = r.path[l];
      ids[nCols - 1] = r.output;
      for (let c = g.first; c < nCols; c++) onPath.add(c + ":" + ids[c]);
      for (let c = g.first; c < nCols - 1; c++) {
        const key = c + ":" + ids[c] + ":" + ids[c + 1] + ":" + cls;
        sub.set(key, (sub.get(key) || 0) + r.count);
      }
    }
    for (const [key, v] of sub) {
      const l = g.links.get(key);
      if (!l) continue;
      svgEl("path", {
        d: ribbon(l.source.x1, l.sy0, l.target.x0, l.ty0, Math.max(v * g.ky, 1.6)),
        fill: opts.colorOf(l.cls), class: "hl-link", "data-link": l.key,
      }, hl);
    }
    for (const key of onPath) {
      const e = parts.nodeEls.get(key);
      if (e) e.classList.add("on-path");
    }
    for (const key of (opts.divergeKeys || [])) {
      const e = parts.nodeEls.get(key);
      if (e) e.classList.add("diverge");
    }
    svg.classList.add("has-highlight");
    return Array.from(onPath);
  }

  const api = {
    PALETTE: PALETTE, classColor: classColor, build: build, layout: layout,
    draw: draw, highlight: highlight, svgEl: svgEl, svgText: svgText, truncate: truncate,
  };
  global.NNSIGSankey = api;
  global.NNSIG = global.NNSIG || {};
  global.NNSIG.sankey = api;
})(window);
