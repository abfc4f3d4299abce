(function () {
  "use strict";
  if (window.LayerscopeExplorer) { window.LayerscopeExplorer.initAll(); return; }

  function b64bytes(s) {
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  // The package's one resize convention: half-pixel centres, edges clamped.
  function axis(nIn, nOut) {
    var i0 = new Int32Array(nOut), i1 = new Int32Array(nOut), f = new Float32Array(nOut);
    for (var i = 0; i < nOut; i++) {
      var s = Math.min(Math.max((i + 0.5) * nIn / nOut - 0.5, 0), nIn - 1);
      var a = Math.floor(s);
      i0[i] = a; i1[i] = Math.min(a + 1, nIn - 1); f[i] = s - a;
    }
    return { i0: i0, i1: i1, f: f };
  }
  function fmt(v) {
    if (v === null || v === undefined) return "n/a";
    if (v === 0) return "0";
    var a = Math.abs(v);
    return (a >= 1e-3 && a < 1e4) ? String(Number(v.toPrecision(3))) : v.toExponential(2);
  }

  function Explorer(root, data) {
    this.root = root; this.d = data;
    this.q = function (sel) { return root.querySelector(sel); };
    this.state = {
      method: data.methods[0].key, cls: data.classes[0].key, layer: 0,
      alpha: data.alpha, scale: data.scale, original: false, playing: false
    };
    this.cache = {}; this.axes = {};
    this.lut = b64bytes(data.colormap.lut);
    this.canvas = this.q("canvas.ls-view");
    this.W = data.image.width; this.H = data.image.height;
    this.canvas.width = this.W; this.canvas.height = this.H;
    this.ctx = this.canvas.getContext("2d");
    var self = this, img = new Image();
    img.onload = function () {
      var c = document.createElement("canvas");
      c.width = self.W; c.height = self.H;
      var g = c.getContext("2d");
      g.drawImage(img, 0, 0, self.W, self.H);
      self.base = g.getImageData(0, 0, self.W, self.H).data;
      self.img = img;
      root.setAttribute("data-ready", "1");
      self.render();
    };
    img.src = data.image.src;
    // the script runs: the static picture (for viewers that strip scripts) gives way
    var still = this.q("img.ls-static"), stage = this.q(".ls-stage");
    if (still) still.style.display = "none";
    if (stage) stage.removeAttribute("hidden");
    this.bind();
    this.drawLegendBar();
    this.syncControls();
  }

  Explorer.prototype.view = function () {
    var d = this.d, s = this.state, k = s.method + "|" + s.cls;
    if (d.views[k]) return d.views[k];
    for (var key in d.views) if (d.views[key].method === s.method && d.views[key].agnostic) return d.views[key];
    for (key in d.views) if (d.views[key].method === s.method) return d.views[key];
    return d.views[Object.keys(d.views)[0]];
  };
  Explorer.prototype.layerData = function (v, L) {
    var key = v.key + "#" + L.name;
    if (!this.cache[key]) this.cache[key] = b64bytes(L.data);
    return this.cache[key];
  };
  Explorer.prototype.axis = function (nIn, nOut) {
    var key = nIn + ">" + nOut;
    if (!this.axes[key]) this.axes[key] = axis(nIn, nOut);
    return this.axes[key];
  };
  Explorer.prototype.range = function (v, L) {
    if (this.state.scale === "shared" && !L.fused) return [v.shared[0], v.shared[1]];  // a fused map: its own
    return [L.lo, L.hi];
  };
  // The raw map value at display pixel (x, y), bilinearly interpolated (as the renderer).
  Explorer.prototype.valueAt = function (v, L, x, y) {
    var q = this.layerData(v, L), ax = this.axis(L.w, this.W), ay = this.axis(L.h, this.H);
    var a = ax.i0[x], b = ax.i1[x], fx = ax.f[x], c = ay.i0[y], e = ay.i1[y], fy = ay.f[y];
    var top = q[c * L.w + a] * (1 - fx) + q[c * L.w + b] * fx;
    var bot = q[e * L.w + a] * (1 - fx) + q[e * L.w + b] * fx;
    return L.lo + (top * (1 - fy) + bot * fy) / 255 * (L.hi - L.lo);
  };

  // a detector's boxes (fractions of the picture): the explained one thick and white, the others thin
  Explorer.prototype.drawBoxes = function (v) {
    var g = this.ctx, W = this.W, H = this.H, boxes = v.boxes || [];
    var wide = Math.max(3, Math.round(Math.min(W, H) / 80));
    for (var i = 0; i < boxes.length; i++) {
      var b = boxes[i], x = b.box[0] * W, y = b.box[1] * H, w = (b.box[2] - b.box[0]) * W, h = (b.box[3] - b.box[1]) * H;
      if (b.thick) {
        g.lineWidth = wide + 2; g.strokeStyle = "#000"; g.strokeRect(x, y, w, h);
        g.lineWidth = wide; g.strokeStyle = "#fff"; g.strokeRect(x, y, w, h);
        if (b.text) {
          g.font = Math.max(10, Math.round(Math.min(W, H) / 24)) + "px sans-serif";
          var tw = g.measureText(b.text).width, th = Math.max(10, Math.round(Math.min(W, H) / 24));
          var ty = y - wide > th ? y - wide : y + h + wide + th;
          g.fillStyle = "#000"; g.fillRect(x - 2, ty - th - 2, tw + 4, th + 4);
          g.fillStyle = "#fff"; g.fillText(b.text, x, ty - 2);
        }
      } else {
        g.lineWidth = Math.max(1, Math.round(wide / 3)); g.strokeStyle = "#f0f"; g.strokeRect(x, y, w, h);
      }
    }
  };

  Explorer.prototype.render = function () {
    if (!this.base) return;
    var v = this.view(), n = v.layers.length;
    if (this.state.layer >= n) this.state.layer = n - 1;
    var L = v.layers[this.state.layer], W = this.W, H = this.H;
    var out = this.ctx.createImageData(W, H), o = out.data, base = this.base;
    if (this.state.original) {
      o.set(base);
    } else {
      var q = this.layerData(v, L), ax = this.axis(L.w, W), ay = this.axis(L.h, H);
      var r = this.range(v, L), span = r[1] - r[0], lut = this.lut, al = this.state.alpha, keep = 1 - al;
      var flat = !(span > 0) || L.hi <= L.lo;
      // q/255 on the layer's own [lo, hi] → the shown range [r0, r1].
      var k = flat ? 0 : (L.hi - L.lo) / span / 255, off = flat ? 0 : (L.lo - r[0]) / span;
      var row = new Float32Array(W * 2);
      for (var y = 0; y < H; y++) {
        var c = ay.i0[y] * L.w, e = ay.i1[y] * L.w, fy = ay.f[y];
        for (var x = 0; x < W; x++) {
          var a = ax.i0[x], b = ax.i1[x], fx = ax.f[x];
          var t = (q[c + a] * (1 - fx) + q[c + b] * fx) * (1 - fy) + (q[e + a] * (1 - fx) + q[e + b] * fx) * fy;
          var nv = flat ? 0 : Math.min(1, Math.max(0, t * k + off));
          var idx = Math.round(nv * 255) * 3, p = (y * W + x) * 4;
          o[p] = Math.round(keep * base[p] + al * lut[idx]);
          o[p + 1] = Math.round(keep * base[p + 1] + al * lut[idx + 1]);
          o[p + 2] = Math.round(keep * base[p + 2] + al * lut[idx + 2]);
          o[p + 3] = 255;
        }
      }
    }
    this.ctx.putImageData(out, 0, 0);
    this.drawBoxes(v);
    this.caption(v, L);
    this.legend(v, L);
    this.chart(v);
    this.q(".ls-slider").value = String(this.state.layer);
  };

  Explorer.prototype.caption = function (v, L) {
    var n = v.layers.length, i = this.state.layer;
    this.q(".ls-counter").textContent = (i + 1) + "/" + n;
    this.q(".ls-layer").textContent = L.fused ? L.fused : "Layer: " + L.name;
    this.q(".ls-shape").textContent = (L.fused ? " · map " + L.h + "×" + L.w : " · output " + L.shape + (L.tokens ? " · " + L.h + "×" + L.w + " token grid" : " · map " + L.h + "×" + L.w)) + (L.flat ? " · flat map" : "") + (L.best ? " · ★ best" + (v.best_by ? " by " + v.best_by : "") : "");
    this.q(".ls-class").textContent = v.agnostic
      ? v.title + " · class-agnostic · top-1: " + v.label + " (p = " + v.p.toFixed(2) + ")"
      : v.caption + " · " + v.title;
    this.q(".ls-note").textContent = v.note || "";
  };
  Explorer.prototype.drawLegendBar = function () {
    var c = this.q(".ls-legend canvas"), g = c.getContext("2d"), lut = this.lut;
    c.width = 256; c.height = 1;
    var im = g.createImageData(256, 1);
    for (var i = 0; i < 256; i++) {
      im.data[i * 4] = lut[i * 3]; im.data[i * 4 + 1] = lut[i * 3 + 1]; im.data[i * 4 + 2] = lut[i * 3 + 2]; im.data[i * 4 + 3] = 255;
    }
    g.putImageData(im, 0, 0);
  };
  Explorer.prototype.legend = function (v, L) {
    var r = this.range(v, L);
    this.q(".ls-lo").textContent = fmt(r[0]);
    this.q(".ls-hi").textContent = fmt(r[1]);
    this.q(".ls-meaning").textContent = this.state.scale === "shared"
      ? "shared scale: one range for all " + v.layers.filter(function (M) { return !M.fused; }).length + " layers (weak layers look weak)" + (L.fused ? "; the fused map on its own" : "")
      : "per-layer scale: each layer from its own min to its own max";
  };
  Explorer.prototype.chart = function (v) {
    var svg = this.q("svg.ls-chart"), series = v.series || [], n = v.layers.length;
    var Wc = 480, Hc = 110, l = 28, r = 8, t = 8, b = 22, ns = "http://www.w3.org/2000/svg";
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("viewBox", "0 0 " + Wc + " " + Hc);
    function el(name, attrs, text) {
      var e = document.createElementNS(ns, name);
      for (var a in attrs) e.setAttribute(a, attrs[a]);
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e); return e;
    }
    function X(i) { return l + (n > 1 ? i * (Wc - l - r) / (n - 1) : (Wc - l - r) / 2); }
    function Y(u) { return t + (1 - u) * (Hc - t - b); }
    el("line", { x1: l, y1: Y(0), x2: Wc - r, y2: Y(0), stroke: "#555" });
    el("text", { x: 2, y: Y(1) + 4, "class": "ls-axis" }, "1");
    el("text", { x: 2, y: Y(0) + 4, "class": "ls-axis" }, "0");
    var cur = X(this.state.layer);
    el("line", { x1: cur, y1: t, x2: cur, y2: Y(0), stroke: "#fff", "stroke-dasharray": "3 2", "class": "ls-current" });
    v.layers.forEach(function (L, i) {  // the best layer (a ranking's) starred above its column
      if (L.best) el("text", { x: X(i), y: t + 4, "text-anchor": "middle", "class": "ls-star" }, "★");
    });
    var self = this, keys = this.q(".ls-series");
    // each series' colour comes with the data (distinct for any number of series); its name
    // goes in an HTML legend that wraps, so every label is shown whatever the count
    if (keys) while (keys.firstChild) keys.removeChild(keys.firstChild);
    series.forEach(function (s, k) {
      var colour = s.colour || "#4fc3f7";
      var pts = s.values.map(function (u, i) { return X(i) + "," + Y(u); }).join(" ");
      el("polyline", { points: pts, fill: "none", stroke: colour, "stroke-width": 1.5 });
      s.values.forEach(function (u, i) {
        var dot = el("circle", { cx: X(i), cy: Y(u), r: i === self.state.layer ? 3.5 : 2, fill: colour });
        var tt = document.createElementNS(ns, "title");
        tt.textContent = v.layers[i].name + ": " + s.name + " " + fmt(s.raw ? s.raw[i] : u);
        dot.appendChild(tt);
      });
      if (keys) {
        var key = document.createElement("span"), swatch = document.createElement("i");
        key.className = "ls-key"; key.style.color = colour; swatch.style.background = colour;
        key.appendChild(swatch); key.appendChild(document.createTextNode(s.name));
        keys.appendChild(key);
      }
    });
    var hit = el("rect", { x: l, y: t, width: Wc - l - r, height: Hc - t - b, fill: "transparent", "class": "ls-hit" });
    hit.addEventListener("click", function (ev) {
      var box = svg.getBoundingClientRect(), px = (ev.clientX - box.left) * Wc / box.width;
      var i = n > 1 ? Math.round((px - l) / ((Wc - l - r) / (n - 1))) : 0;
      self.setLayer(i);
    });
  };

  Explorer.prototype.setLayer = function (i) {
    var n = this.view().layers.length;
    this.state.layer = ((i % n) + n) % n;
    this.render();
  };
  Explorer.prototype.play = function (on) {
    var self = this;
    this.state.playing = on;
    clearInterval(this.timer);
    if (on) this.timer = setInterval(function () { self.setLayer(self.state.layer + 1); }, this.d.duration);
    this.q(".ls-play").textContent = on ? "❚❚ pause" : "▶ play";
  };
  Explorer.prototype.syncControls = function () {
    var v = this.view();
    var slider = this.q(".ls-slider");
    slider.max = String(v.layers.length - 1);
    this.q(".ls-alpha").value = String(this.state.alpha);
    this.q(".ls-shared").checked = this.state.scale === "shared";
  };
  Explorer.prototype.bind = function () {
    var self = this, root = this.root;
    root.addEventListener("pointerdown", function () { window.LayerscopeExplorer.active = self; });
    root.addEventListener("focusin", function () { window.LayerscopeExplorer.active = self; });
    this.q(".ls-slider").addEventListener("input", function (e) { self.setLayer(parseInt(e.target.value, 10)); });
    this.q(".ls-alpha").addEventListener("input", function (e) { self.state.alpha = parseFloat(e.target.value); self.render(); });
    this.q(".ls-shared").addEventListener("change", function (e) { self.state.scale = e.target.checked ? "shared" : "layer"; self.render(); });
    this.q(".ls-show-original").addEventListener("change", function (e) { self.state.original = e.target.checked; self.render(); });
    this.q(".ls-play").addEventListener("click", function () { self.play(!self.state.playing); });
    var ms = this.q(".ls-method"), cs = this.q(".ls-class-select");
    if (ms) ms.addEventListener("change", function (e) { self.state.method = e.target.value; self.syncControls(); self.render(); });
    if (cs) cs.addEventListener("change", function (e) { self.state.cls = e.target.value; self.syncControls(); self.render(); });
    root.addEventListener("keydown", function (e) { self.key(e); });
    this.canvas.addEventListener("mousemove", function (e) {
      var box = self.canvas.getBoundingClientRect();
      var x = Math.floor((e.clientX - box.left) * self.W / box.width), y = Math.floor((e.clientY - box.top) * self.H / box.height);
      if (x < 0 || y < 0 || x >= self.W || y >= self.H) return;
      var v = self.view(), L = v.layers[self.state.layer], val = self.valueAt(v, L, x, y);
      var frac = L.hi > 0 ? " (" + Math.round(100 * val / L.hi) + "% of this layer's max)" : "";
      self.q(".ls-readout").textContent = "value at (" + x + ", " + y + "): " + fmt(val) + frac;
    });
    this.canvas.addEventListener("mouseleave", function () { self.q(".ls-readout").textContent = ""; });
  };
  Explorer.prototype.key = function (e) {
    if (e.target && e.target.tagName === "SELECT") return;
    if (e.key === "ArrowRight") { this.setLayer(this.state.layer + 1); e.preventDefault(); }
    else if (e.key === "ArrowLeft") { this.setLayer(this.state.layer - 1); e.preventDefault(); }
    else if (e.key === " ") { this.play(!this.state.playing); e.preventDefault(); }
  };

  var api = {
    active: null,
    globalKeys: false,
    instances: [],
    init: function (root) {
      if (root.__ls) return root.__ls;
      var data = JSON.parse(root.querySelector("script.ls-data").textContent);
      var ex = new Explorer(root, data);
      root.__ls = ex;
      api.instances.push(ex);
      if (!api.active) api.active = ex;
      return ex;
    },
    initAll: function () {
      var roots = document.querySelectorAll(".ls-explorer");
      for (var i = 0; i < roots.length; i++) api.init(roots[i]);
    }
  };
  window.LayerscopeExplorer = api;
  // On a page of its own (not a notebook, where the arrows belong to the notebook), ←/→
  // anywhere drive the explorer last used (the first one until then).
  document.addEventListener("keydown", function (e) {
    var ex = api.active;
    if (!api.globalKeys || !ex || ex.root.contains(e.target)) return;
    var tag = e.target && e.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (e.target && e.target.isContentEditable)) return;
    ex.key(e);
  });
  api.initAll();
})();
