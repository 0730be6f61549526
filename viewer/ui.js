/* nnsig report viewer: DOM helpers shared by the views (window.NNSIG.ui).
 *
 * Element building (every string from the data goes through textContent,
 * setAttribute or Text nodes, never markup), number formatting, the tooltip,
 * class chips and composition bars, and thumbnails drawn from PNG sprite sheets
 * (decoded by the browser from a data: URL; nothing is fetched).
 */
(function (global) {
  "use strict";
  const NNSIG = global.NNSIG = global.NNSIG || {};
  const M = NNSIG.model;

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const k in attrs) {
        const v = attrs[k];
        if (v == null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = String(v);
        else if (k === "style") Object.assign(e.style, v);
        else if (k.slice(0, 2) === "on" && typeof v === "function") e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c == null || c === false) continue;
      if (Array.isArray(c)) { for (const x of c) if (x != null && x !== false) e.append(x); }
      else e.append(c); // strings become Text nodes
    }
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  /** An integer with thousands separators ("12,345"). Not Intl.NumberFormat: creating one
   * loads ICU data, 40-80 ms of the first draw. */
  function fmt(n) {
    if (n == null || !isFinite(n)) return "\u2014";
    const v = Math.round(n);
    const s = String(Math.abs(v)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return v < 0 ? "-" + s : s;
  }
  function pct(x, d) { return x == null || !isFinite(x) ? "\u2014" : (100 * x).toFixed(d == null ? 1 : d) + "%"; }
  function num(x, d) { return x == null || !isFinite(x) ? "\u2014" : Number(x).toFixed(d == null ? 3 : d); }
  function clamp(v, a, b) { return Math.max(a, Math.min(b, v)); }

  const PALETTE = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
    "#332288", "#882255", "#999933", "#44AA99", "#CC6677", "#DDCC77", "#88CCEE",
    "#117733", "#AA4499",
  ];
  /** Colour of unlabelled samples (and of the slot after the last class). */
  const GREY = "#8C96A3";

  /** Colour of class i (the same in every run); i < 0 (unlabelled) is grey. */
  function classColor(i) {
    if (i < 0) return GREY;
    if (i < PALETTE.length) return PALETTE[i];
    const hue = (i * 137.508) % 360;
    const light = 38 + (i % 3) * 12;
    return "hsl(" + hue.toFixed(1) + ",55%," + light + "%)";
  }

  // ------------------------------------------------------------------ tooltip

  function showTip(e, content) {
    const tip = $("tooltip");
    clear(tip);
    tip.append(content);
    tip.hidden = false;
    const pad = 14;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = e.clientX + pad, y = e.clientY + pad;
    if (x + w > window.innerWidth - 4) x = Math.max(4, e.clientX - w - pad);
    if (y + h > window.innerHeight - 4) y = Math.max(4, e.clientY - h - pad);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() { $("tooltip").hidden = true; }

  // ------------------------------------------------------------------ classes

  function classChip(R, c) {
    return el("span", { class: "cls" + (c < 0 ? " unlabelled" : "") },
              el("i", { class: "sw", style: { background: classColor(c) } }),
              el("span", { class: "cls-name", text: M.className(R, c) }),
              M.isUnseen(R, c) ? el("span", { class: "tag", text: "unseen" }) : null);
  }

  function chips(R, list) {
    const box = el("div", { class: "chips" });
    if (!list.length) box.append(el("span", { class: "muted", text: "none" }));
    for (const c of list) box.append(classChip(R, c));
    return box;
  }

  function classesCell(R, m) {
    const entries = Array.from(m.entries()).sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
    const box = el("span", { class: "multi" });
    for (const [k, v] of entries.slice(0, 3)) {
      box.append(el("span", { class: "cls" },
                    el("i", { class: "sw", style: { background: classColor(k) } }),
                    el("span", { class: "cls-name", text: M.className(R, k) }),
                    el("span", { class: "times", text: "\u00d7" + fmt(v) })));
    }
    if (entries.length > 3) box.append(el("span", { class: "muted", text: "+" + (entries.length - 3) }));
    return box;
  }

  /** byClass: counts indexed by class, slot nClasses = unlabelled. */
  function compEntries(R, byClass) {
    const entries = [];
    for (let k = 0; k < byClass.length; k++) {
      const v = byClass[k];
      if (v > 0) entries.push([k >= R.nClasses ? M.UNLABELLED : k, v]);
    }
    return entries;
  }

  function compList(R, byClass, total, limit) {
    const entries = compEntries(R, byClass);
    entries.sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
    const ul = el("ul", { class: "comp-list" });
    const shown = entries.slice(0, limit || 6);
    for (const [k, v] of shown) {
      ul.append(el("li", null,
                   el("i", { class: "sw", style: { background: classColor(k) } }),
                   el("span", { class: "cn", text: M.className(R, k) }),
                   el("span", { class: "cbar" }, el("span", { style: { width: pct(v / total, 2), background: classColor(k) } })),
                   el("span", { class: "cv", text: fmt(v) }),
                   el("span", { class: "cp", text: pct(v / total) })));
    }
    if (entries.length > shown.length) {
      let rest = 0;
      for (const [, v] of entries.slice(shown.length)) rest += v;
      ul.append(el("li", { class: "more-classes" },
                   el("span", { text: (entries.length - shown.length) + " more classes: " + fmt(rest) + " (" + pct(rest / total) + ")" })));
    }
    return ul;
  }

  function compBar(R, byClass, total) {
    const bar = el("div", { class: "comp-bar", role: "img" });
    const parts = [];
    for (const [k, v] of compEntries(R, byClass)) {
      parts.push(M.className(R, k) + " " + pct(v / total));
      bar.append(el("span", { title: M.className(R, k) + ": " + fmt(v) + " (" + pct(v / total) + ")",
                              style: { width: (100 * v / total).toFixed(3) + "%", background: classColor(k) } }));
    }
    bar.setAttribute("aria-label", "Class composition: " + parts.join(", "));
    return bar;
  }

  function kv(pairs) {
    const dl = el("dl", { class: "kv" });
    for (const [k, v] of pairs) {
      if (v == null || v === "") continue;
      dl.append(el("dt", { text: k }), el("dd", null, v));
    }
    return dl;
  }

  function section(title) { return el("h3", { class: "pane-h", text: title }); }

  // ------------------------------------------------------------------ thumbnails

  const sprites = new WeakMap();

  /** The decoded image of a sprite {png, columns, shape}; decoding starts on the first call. */
  function spriteImage(sprite) {
    let s = sprites.get(sprite);
    if (s) return s;
    s = { img: new Image(), ready: false, failed: false, waiting: [] };
    sprites.set(sprite, s);
    s.img.onload = function () { s.ready = true; for (const f of s.waiting) f(); s.waiting = []; };
    s.img.onerror = function () { s.failed = true; s.waiting = []; };
    if (typeof sprite.png === "string" && /^[A-Za-z0-9+/=]*$/.test(sprite.png)) s.img.src = "data:image/png;base64," + sprite.png;
    else s.failed = true;
    return s;
  }

  function isSprite(x) { return x && typeof x.png === "string" && Array.isArray(x.shape) && x.columns > 0; }

  /** Draw cell i of a sprite into canvas cv (now, or once the sprite is decoded). */
  function drawCell(cv, sprite, i) {
    const s = spriteImage(sprite);
    const h = sprite.shape[0] | 0, w = sprite.shape[1] | 0;
    function go() {
      const ctx = cv.getContext("2d");
      if (!ctx) return;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(s.img, (i % sprite.columns) * w, Math.floor(i / sprite.columns) * h, w, h, 0, 0, w, h);
      cv.setAttribute("data-drawn", "1");
    }
    if (s.ready) go(); else if (!s.failed) s.waiting.push(go);
  }

  function spriteCanvas(sprite, i, label, cls) {
    if (!isSprite(sprite) || !(i >= 0)) return null;
    const h = sprite.shape[0] | 0, w = sprite.shape[1] | 0;
    if (!(h > 0 && w > 0)) return null;
    const cv = el("canvas", { width: w, height: h, class: cls || "thumb", title: label, role: "img", "aria-label": label });
    drawCell(cv, sprite, i);
    return cv;
  }

  /** A thumbnail of the report's exemplars by key ("split/row"): a sprite (format 2) or raw base64 (format 1). */
  function exemplarCanvas(thumbs, key) {
    if (!thumbs) return null;
    if (isSprite(thumbs) && Array.isArray(thumbs.keys)) {
      if (!thumbs.index) {
        const idx = new Map();
        thumbs.keys.forEach(function (k, i) { idx.set(String(k), i); });
        Object.defineProperty(thumbs, "index", { value: idx, enumerable: false });
      }
      const i = thumbs.index.get(key);
      return i == null ? null : spriteCanvas(thumbs, i, "exemplar " + key);
    }
    return rawCanvas(thumbs, key);
  }

  function rawCanvas(thumbs, key) {
    if (!thumbs.images || !Array.isArray(thumbs.shape)) return null;
    const b64 = thumbs.images[key];
    if (typeof b64 !== "string") return null;
    const h = thumbs.shape[0] | 0, w = thumbs.shape[1] | 0, ch = (thumbs.shape[2] | 0) || 1;
    if (!(h > 0 && w > 0)) return null;
    let bin;
    try { bin = atob(b64); } catch (e) { return null; }
    if (bin.length < h * w * ch) return null;
    const cv = el("canvas", { width: w, height: h, class: "thumb", title: key, role: "img", "aria-label": "exemplar " + key });
    const ctx = cv.getContext("2d");
    if (!ctx) return null;
    const img = ctx.createImageData(w, h);
    const px = img.data;
    for (let p = 0; p < h * w; p++) {
      const o = p * 4, s = p * ch;
      if (ch >= 3) { px[o] = bin.charCodeAt(s); px[o + 1] = bin.charCodeAt(s + 1); px[o + 2] = bin.charCodeAt(s + 2); }
      else { const v = bin.charCodeAt(s); px[o] = v; px[o + 1] = v; px[o + 2] = v; }
      px[o + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    cv.setAttribute("data-drawn", "1");
    return cv;
  }

  NNSIG.ui = {
    $: $, el: el, clear: clear, fmt: fmt, pct: pct, num: num, clamp: clamp,
    PALETTE: PALETTE, GREY: GREY, classColor: classColor, showTip: showTip, hideTip: hideTip,
    classChip: classChip, chips: chips, classesCell: classesCell, compList: compList, compBar: compBar,
    kv: kv, section: section, isSprite: isSprite, spriteImage: spriteImage, spriteCanvas: spriteCanvas,
    exemplarCanvas: exemplarCanvas,
  };
})(window);
