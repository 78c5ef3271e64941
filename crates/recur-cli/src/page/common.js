"use strict";
// Shared by recur's pages: SVG elements, and a line chart on a logarithmic y axis.
const NS = "http://www.w3.org/2000/svg";
function el(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

// The palette of the curves (colour-blind safe, Okabe and Ito), and their dash patterns.
const PALETTE = ["#d55e00", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7f7f7f", "#f0e442"];
const DASHES = ["", "6 4", "2 3", "10 3 2 3"];

// Draws curves[i].values (value at x = index, all > 0) into the <svg> `svg` on a log10 y axis
// and lists them in the element `legend` (each with a checkbox that shows or hides its line).
// A curve: {label, values, color?, dash?, width?, attrs?: extra attributes of its <path>}.
// opt: {xlabel, ylabel, floor: the lowest decade shown (smaller values sit on it), height}.
// Returns {X, Y, svg, paths}: x and value to SVG coordinates, and the curves' <path>s.
// The chart is as wide in SVG units as it is on the screen (400 to 880), so that its text stays
// legible on a phone; call it again when the window's width changes (what was hidden stays so).
function logChart(svg, legend, curves, opt) {
  const hidden = legend ? [...legend.querySelectorAll("input")].map(b => !b.checked) : [];
  const w = Math.round(Math.max(400, Math.min(880, svg.clientWidth || 880))), h = opt.height || 360;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.innerHTML = "";
  const x0 = 64, x1 = w - 12, y1 = 12, y0 = h - 36;
  const floor = opt.floor === undefined ? -300 : opt.floor;
  let lo = Infinity, hi = -Infinity, n = 1;
  for (const c of curves) {
    n = Math.max(n, c.values.length - 1);
    for (const v of c.values) {
      if (v > 0 && isFinite(v)) { lo = Math.min(lo, Math.log10(v)); hi = Math.max(hi, Math.log10(v)); }
    }
  }
  lo = Math.max(floor, Math.floor(lo)); hi = Math.ceil(hi);
  if (!(hi > lo)) { lo = Math.min(lo, 0) - 1; hi = lo + 2; }
  const X = k => x0 + (x1 - x0) * k / n;
  const Y = v => {
    const l = Math.min(hi, Math.max(lo, Math.log10(Math.max(v, 1e-300))));
    return y1 + (y0 - y1) * (hi - l) / (hi - lo);
  };
  const span = hi - lo, every = span > 30 ? 6 : span > 15 ? 3 : span > 6 ? 2 : 1;
  for (let e = hi; e >= lo; e--) {
    if (e % every) continue;
    const y = Y(Math.pow(10, e));
    el("path", {d: `M${x0},${y} L${x1},${y}`, class: "grid"}, svg);
    el("text", {x: x0 - 6, y: y + 4, class: "lbl", "text-anchor": "end"}, svg, e === 0 ? "1" : "1e" + e);
  }
  for (let j = 0; j <= 4; j++) {
    const k = Math.round(n * j / 4);
    el("text", {x: X(k), y: y0 + 16, class: "lbl", "text-anchor": "middle"}, svg, String(k));
  }
  el("path", {d: `M${x0},${y1} L${x0},${y0} L${x1},${y0}`, class: "axis", fill: "none"}, svg);
  if (opt.xlabel) el("text", {x: (x0 + x1) / 2, y: y0 + 32, class: "lbl", "text-anchor": "middle"}, svg, opt.xlabel);
  if (opt.ylabel) el("text", {x: x0 + 6, y: y1 + 12, class: "lbl"}, svg, opt.ylabel);
  if (legend) legend.innerHTML = "";
  const paths = curves.map((c, i) => {
    const color = c.color || PALETTE[i % PALETTE.length];
    const dash = c.dash !== undefined ? c.dash : DASHES[Math.floor(i / PALETTE.length) % DASHES.length];
    const width = c.width || 2;
    const d = c.values.map((v, k) => (k ? "L" : "M") + X(k).toFixed(1) + "," + Y(v).toFixed(1)).join(" ");
    // through style, where var(--...) colours work too
    const p = el("path", Object.assign({d, fill: "none", "stroke-width": width, "stroke-dasharray": dash}, c.attrs || {}), svg);
    p.style.stroke = color;
    if (hidden[i]) p.style.display = "none";
    if (legend) {
      const item = document.createElement("label");
      item.className = "key";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = !hidden[i];
      box.addEventListener("change", () => { p.style.display = box.checked ? "" : "none"; });
      const sw = document.createElementNS(NS, "svg");
      sw.setAttribute("viewBox", "0 0 30 10");
      sw.setAttribute("class", "swatch");
      el("path", {d: "M0,5 L30,5", "stroke-width": Math.max(width, 2), "stroke-dasharray": dash}, sw).style.stroke = color;
      item.append(box, sw, document.createTextNode(" " + c.label));
      legend.appendChild(item);
    }
    return p;
  });
  return {X, Y, svg, paths, x0, x1, y0, y1};
}
