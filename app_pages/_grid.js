// headprune's click-safe head grid (Streamlit components v2). The protocol is described in app_pages/_grid.py:
// every interaction appends {seq, heads, keep} to a list of unacknowledged events and sends the whole list as
// the state value "log"; data.acked[client] says which of them the server has applied.

const MOUNTS = new WeakMap(); // the component's parent element -> its Grid; one per mount, kept across reruns
const MAX_CELL = 40, MIN_CELL = 12, LEFT = 48, GRID_H = 720, GRID_W = 640;

export default function (component) {
  const { parentElement, data, setStateValue } = component;
  let grid = MOUNTS.get(parentElement);
  if (!grid) {
    grid = new Grid(parentElement);
    MOUNTS.set(parentElement, grid);
  }
  grid.send = setStateValue;
  grid.update(data);
  return () => grid.root.isConnected || grid.destroy(); // Streamlit may call this while the mount lives on
}

function el(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

class Grid {
  constructor(parent) {
    this.client = Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
    this.seq = 0;
    this.pending = []; // [{seq, heads, keep}] sent, not yet acknowledged
    this.data = null;
    this.focus = [0, 0];
    this.geometry = "";
    this.root = el("div", "hp-root", parent);
    this.root.dataset.testid = "hp-head-grid";
    this.root.dataset.client = this.client;
    this.plot = el("div", "hp-plot", this.root);
    this.plot.setAttribute("role", "grid");
    this.side = el("div", "hp-side", this.root);
    this.legend = el("div", "hp-legend", this.side);
    this.status = el("div", "hp-status", this.side);
    this.status.setAttribute("aria-live", "polite");
    this.tip = el("div", "hp-tip");
    this.box = el("div", "hp-box");
    this.listen();
    this.resize = new ResizeObserver(() => this.data && this.layout());
    this.resize.observe(this.root);
  }

  destroy() {
    this.resize.disconnect();
  }

  // ------------------------------------------------------------------------------------------- state
  update(data) {
    if (this.data && (this.data.layers !== data.layers || this.data.heads !== data.heads)) this.pending = []; // another model
    this.data = data;
    const done = (data.acked || {})[this.client] || 0;
    this.pending = this.pending.filter((e) => e.seq > done);
    this.drawLegend();
    this.layout();
  }

  // One interaction on `heads` (all inside the grid), as headprune.session.toggle_selection decides on what the
  // user sees: a click flips a head; a block is removed if any head in it is kept, else restored.
  push(heads) {
    if (!heads.length) return;
    const { state } = this.shown();
    this.seq += 1;
    this.pending.push({ seq: this.seq, heads, keep: !heads.some(([l, h]) => state[l * this.data.heads + h]) });
    this.send("log", { client: this.client, events: this.pending });
    this.paint();
  }

  // What the user sees: the server's mask with every pending event applied in order; `touched` = pending cells.
  shown() {
    const state = Array.from(this.data.keep, (c) => c === "1");
    const touched = new Set();
    for (const event of this.pending) {
      for (const [l, h] of event.heads) {
        state[l * this.data.heads + h] = event.keep;
        touched.add(l * this.data.heads + h);
      }
    }
    return { state, touched };
  }

  // ------------------------------------------------------------------------------------------- drawing
  layout() {
    const { layers, heads, group } = this.data;
    const width = this.root.getBoundingClientRect().width || 800;
    const groups = heads / group;
    const fit = Math.floor(Math.min(GRID_H / layers, GRID_W / heads, (width - LEFT - 8) / (heads * 1.1)));
    const cell = Math.max(MIN_CELL, Math.min(MAX_CELL, fit));
    const gap = group > 1 ? Math.max(4, Math.round(cell * 0.35)) : 0;
    const top = 36 + (group > 1 ? 16 : 0);
    const key = [layers, heads, group, cell].join(",");
    Object.assign(this, { cell, gap, top });
    if (key !== this.geometry) {
      this.geometry = key;
      this.build();
    }
    this.paint();
  }

  x(h) {
    return LEFT + h * this.cell + Math.floor(h / this.data.group) * this.gap;
  }

  y(l) {
    return this.top + l * this.cell;
  }

  build() {
    const { layers, heads, group } = this.data;
    const { cell, gap, top } = this;
    const plot = this.plot;
    plot.replaceChildren();
    const width = this.x(heads - 1) + cell + 4, height = top + layers * cell + 4;
    Object.assign(plot.style, { width: `${width}px`, height: `${height}px` });
    plot.setAttribute("aria-label", `${layers} layers by ${heads} heads; arrow keys move, Space or Enter toggles a head`);
    const label = (text, cls, left, topPx, extra = {}) => {
      const node = el("div", `hp-label ${cls}`, plot);
      node.textContent = text;
      Object.assign(node.style, { left: `${left}px`, top: `${topPx}px`, ...extra });
      return node;
    };
    label(group > 1 ? "query head (grouped by KV head) →" : "head →", "hp-axis", LEFT, 0);
    label("layer ↓", "hp-axis", 0, 0);
    const headStep = Math.max(1, Math.ceil((String(heads - 1).length * 8 + 4) / cell));
    for (let h = 0; h < heads; h += headStep) label(String(h), "hp-tick", this.x(h), top - 18, { width: `${cell}px` });
    const layerStep = Math.max(1, Math.ceil(14 / cell));
    for (let l = 0; l < layers; l += layerStep) {
      label(String(l), "hp-tick hp-row", 0, this.y(l), { width: `${LEFT - 8}px`, lineHeight: `${cell}px` });
    }
    if (group > 1) {
      const labelStep = Math.max(1, Math.ceil(40 / (cell * group)));
      for (let g = 0; g < heads / group; g += 1) {
        const band = el("div", "hp-band", plot);
        Object.assign(band.style, { left: `${this.x(g * group) - 2}px`, top: `${top - 2}px`,
                                    width: `${group * cell + 4}px`, height: `${layers * cell + 4}px` });
        if (g % labelStep === 0) label(`KV ${g}`, "hp-tick hp-kv", this.x(g * group), top - 34, { width: `${group * cell}px` });
      }
    }
    const inset = Math.max(1, Math.round(cell * 0.07));
    this.cells = [];
    for (let l = 0; l < layers; l += 1) {
      for (let h = 0; h < heads; h += 1) {
        const node = el("div", "hp-cell", plot);
        node.dataset.layer = l;
        node.dataset.head = h;
        node.setAttribute("role", "gridcell");
        Object.assign(node.style, { left: `${this.x(h) + inset}px`, top: `${this.y(l) + inset}px`,
                                    width: `${cell - 2 * inset}px`, height: `${cell - 2 * inset}px` });
        this.cells.push(node);
      }
    }
    plot.append(this.box, this.tip);
    this.focus = [Math.min(this.focus[0], layers - 1), Math.min(this.focus[1], heads - 1)];
  }

  paint() {
    const { heads, colors, tips } = this.data;
    const { state, touched } = this.shown();
    this.cells.forEach((node, i) => {
      const kept = state[i], pending = touched.has(i);
      node.dataset.state = (pending ? "pending-" : "") + (kept ? "kept" : "removed");
      node.style.setProperty("--c", colors[i]);
      node.tabIndex = i === this.focus[0] * heads + this.focus[1] ? 0 : -1;
      node.setAttribute("aria-label", `${tips[i].replace("\n", ", ")}, ${kept ? "kept" : "removed"}${pending ? " (not applied yet)" : ""}`);
      node.setAttribute("aria-selected", String(!kept));
    });
    const n = this.pending.length;
    this.root.dataset.pending = n;
    this.root.dataset.seq = this.seq;
    this.status.textContent = n ? `${n} change${n > 1 ? "s" : ""} on the way to the server…` : "";
    if (this.tipFor !== undefined) this.showTip(this.tipFor);
  }

  drawLegend() {
    const { legend, grey } = this.data;
    const html = [];
    if (legend) {
      html.push(`<div class="hp-legend-title"></div>`,
                `<div class="hp-ramp" style="background: linear-gradient(to right, ${legend.stops.join(", ")})"></div>`,
                `<div class="hp-ramp-ends"><span class="hp-lo"></span><span class="hp-hi"></span></div>`);
    } else {
      html.push(`<div class="hp-legend-title">no importance scores yet</div>`);
    }
    if (grey || !legend) html.push(`<div class="hp-key"><span class="hp-swatch" data-kind="grey"></span>no score</div>`);
    html.push(`<div class="hp-key"><span class="hp-swatch" data-kind="removed"></span>removed</div>`,
              `<div class="hp-key"><span class="hp-swatch" data-kind="pending"></span>clicked, not applied yet</div>`);
    this.legend.innerHTML = html.join("");
    if (legend) { // text from Python goes in as text, never as markup
      this.legend.querySelector(".hp-legend-title").textContent = legend.label;
      this.legend.querySelector(".hp-lo").textContent = legend.lo;
      this.legend.querySelector(".hp-hi").textContent = legend.hi;
    }
  }

  showTip(i) {
    this.tipFor = i;
    const node = this.cells[i];
    if (!node) return this.hideTip();
    const kept = node.dataset.state.endsWith("kept");
    const pending = node.dataset.state.startsWith("pending");
    this.tip.textContent = `${this.data.tips[i]}\n${kept ? "kept: click to remove" : "removed: click to restore"}`
      + (pending ? "\n(clicked; the server has not applied it yet)" : "");
    const left = node.offsetLeft + node.offsetWidth + 8;
    Object.assign(this.tip.style, { display: "block", top: `${node.offsetTop}px`, left: `${left}px`, right: "auto" });
    if (left + this.tip.offsetWidth > this.root.getBoundingClientRect().width) {
      Object.assign(this.tip.style, { left: "auto", right: `${this.plot.offsetWidth - node.offsetLeft + 8}px` });
    }
  }

  hideTip() {
    this.tipFor = undefined;
    this.tip.style.display = "none";
  }

  // ------------------------------------------------------------------------------------------- input
  local(event) {
    const r = this.plot.getBoundingClientRect();
    return { x: event.clientX - r.left, y: event.clientY - r.top };
  }

  cellAt({ x, y }) {
    const { layers, heads } = this.data;
    const l = Math.floor((y - this.top) / this.cell);
    if (l < 0 || l >= layers) return null;
    for (let h = 0; h < heads; h += 1) if (x >= this.x(h) && x < this.x(h) + this.cell) return [l, h];
    return null;
  }

  cellsIn(a, b) {
    const [x0, x1, y0, y1] = [Math.min(a.x, b.x), Math.max(a.x, b.x), Math.min(a.y, b.y), Math.max(a.y, b.y)];
    const out = [];
    for (let l = 0; l < this.data.layers; l += 1) {
      if (this.y(l) + this.cell <= y0 || this.y(l) >= y1) continue;
      for (let h = 0; h < this.data.heads; h += 1) {
        if (this.x(h) + this.cell > x0 && this.x(h) < x1) out.push([l, h]);
      }
    }
    return out;
  }

  moveFocus(l, h) {
    const { layers, heads } = this.data;
    this.focus = [Math.max(0, Math.min(layers - 1, l)), Math.max(0, Math.min(heads - 1, h))];
    this.cells.forEach((node, i) => { node.tabIndex = i === this.focus[0] * heads + this.focus[1] ? 0 : -1; });
    this.cells[this.focus[0] * heads + this.focus[1]].focus({ preventScroll: false });
  }

  listen() {
    const plot = this.plot;
    plot.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || !this.data) return;
      e.preventDefault();
      const p = this.local(e);
      this.drag = { from: p, start: this.cellAt(p), moved: false };
      plot.setPointerCapture(e.pointerId);
    });
    plot.addEventListener("pointermove", (e) => {
      const d = this.drag;
      if (!d) return;
      const p = this.local(e);
      if (!d.moved && Math.hypot(p.x - d.from.x, p.y - d.from.y) < 6) return;
      d.moved = true;
      this.hideTip();
      Object.assign(this.box.style, { display: "block", left: `${Math.min(p.x, d.from.x)}px`, top: `${Math.min(p.y, d.from.y)}px`,
                                      width: `${Math.abs(p.x - d.from.x)}px`, height: `${Math.abs(p.y - d.from.y)}px` });
      const inside = new Set(this.cellsIn(d.from, p).map(([l, h]) => l * this.data.heads + h));
      this.cells.forEach((node, i) => node.classList.toggle("hp-in-box", inside.has(i)));
    });
    const finish = (e, cancelled) => {
      const d = this.drag;
      if (!d) return;
      this.drag = null;
      this.box.style.display = "none";
      this.cells.forEach((node) => node.classList.remove("hp-in-box"));
      if (cancelled) return;
      if (d.moved) {
        this.push(this.cellsIn(d.from, this.local(e)));
      } else if (d.start) {
        this.moveFocus(...d.start);
        this.push([d.start]);
      }
    };
    plot.addEventListener("pointerup", (e) => finish(e, false));
    plot.addEventListener("pointercancel", (e) => finish(e, true));
    plot.addEventListener("pointerover", (e) => {
      const node = e.target.closest(".hp-cell");
      if (node && !this.drag) this.showTip(this.cells.indexOf(node));
    });
    plot.addEventListener("pointerleave", () => this.hideTip());
    plot.addEventListener("focusin", (e) => {
      const node = e.target.closest(".hp-cell");
      if (!node) return;
      this.focus = [Number(node.dataset.layer), Number(node.dataset.head)];
      this.showTip(this.cells.indexOf(node));
    });
    plot.addEventListener("focusout", () => this.hideTip());
    plot.addEventListener("keydown", (e) => {
      const node = e.target.closest(".hp-cell");
      if (!node) return;
      const [l, h] = [Number(node.dataset.layer), Number(node.dataset.head)];
      const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
      if (moves[e.key]) {
        this.moveFocus(l + moves[e.key][0], h + moves[e.key][1]);
      } else if (e.key === "Home" || e.key === "End") {
        this.moveFocus(l, e.key === "Home" ? 0 : this.data.heads - 1);
      } else if (e.key === " " || e.key === "Enter") {
        this.push([[l, h]]);
      } else {
        return;
      }
      e.preventDefault();
    });
  }
}
