// The demo page: plain JavaScript, no build step, no library, nothing loaded from elsewhere.
// Every prediction, code, image, energy and density shown here is an answer of the server's API;
// the page only builds inputs (pixels, V(x) on the grid) and draws what comes back.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const GRID = Array.from({ length: 64 }, (_, i) => -15 + (30 * i) / 63);
const fmt = (x, digits = 4) => (typeof x === "number" ? Number(x.toPrecision(digits)).toString() : String(x));

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  let body = options.body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { method: options.method || (body ? "POST" : "GET"), headers, body });
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch { data = null; }
  if (!response.ok) {
    const message = data && data.error ? data.error : `${response.status} ${text.slice(0, 200)}`;
    throw new ApiError(`${path}: ${response.status}: ${message}`);
  }
  return data;
}

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clearSvg(svg) {
  for (const child of [...svg.childNodes]) if (child.nodeName !== "title") svg.removeChild(child);
}

function facts(dl, rows) {
  dl.replaceChildren();
  for (const [name, value, cls] of rows) {
    dl.append(el("dt", {}, name));
    const dd = el("dd", cls ? { class: cls } : {}, value);
    dl.append(dd);
  }
}

// Extra per-item outputs of newer model versions (is_digit, ood_score, energy_std, in_domain,
// domain_score, mode, ...): whatever the response has beyond the fields this page knows.
function extras(item, known) {
  return Object.entries(item).filter(([k]) => !known.includes(k));
}

function describeExtra(name, value) {
  if (typeof value === "boolean") {
    // Names may carry a prefix ("E[n] in_domain"): the flag is the last word.
    const flag = name.split(" ").pop();
    const good = flag === "is_digit" || flag === "in_domain";
    const ok = good ? value : !value;
    return [name, value ? "yes" : "no", ok ? "flag-ok" : "flag-bad"];
  }
  return [name, Array.isArray(value) ? value.map((v) => fmt(v)).join(", ") : fmt(value)];
}

// ---------------------------------------------------------------------------------------------
// Drawing pad: strokes go to an off-screen white canvas; the visible one adds the guide box.

const pad = $("pad");
const strokes = document.createElement("canvas");
strokes.width = strokes.height = 280;
const ink = strokes.getContext("2d");
let drawing = null;
let drawn = false;

function resetStrokes() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, 280, 280);
  drawn = false;
  renderPad();
}

function renderPad() {
  const ctx = pad.getContext("2d");
  ctx.drawImage(strokes, 0, 0);
  ctx.save();
  ctx.setLineDash([6, 6]);
  ctx.strokeStyle = "#8a94a3";
  ctx.strokeRect(40, 40, 200, 200); // the 20 x 20 pixel box of an MNIST digit, x10
  ctx.restore();
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * 280) / box.width, ((event.clientY - box.top) * 280) / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = padPoint(event);
  ink.fillStyle = "#000";
  ink.beginPath();
  ink.arc(drawing[0], drawing[1], 10, 0, 2 * Math.PI);
  ink.fill();
  drawn = true;
  renderPad();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const point = padPoint(event);
  ink.strokeStyle = "#000";
  ink.lineWidth = 20;
  ink.lineCap = ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(drawing[0], drawing[1]);
  ink.lineTo(point[0], point[1]);
  ink.stroke();
  drawing = point;
  renderPad();
});
function endStroke() {
  if (!drawing) return;
  drawing = null;
  if (drawn) analyseDrawing();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
$("clear").addEventListener("click", () => {
  ++generation; // answers still on their way are for an input that is gone
  resetStrokes();
  clearDigit("Draw a digit to classify it.");
  clearCompression("Draw a digit first.");
});

// Each panel shows only the answer to the current input: cleared when a new input starts, and
// an error replaces whatever was there.
function clearDigit(status, cls = "") {
  $("digit-status").textContent = status;
  $("digit-status").className = cls;
  $("digit-value").textContent = "";
  $("digit-value").className = "";
  $("digit-flags").replaceChildren();
  clearSvg($("probabilities"));
  $("digit-model").textContent = "";
  delete $("digit-result").dataset.isDigit;
}

function clearCompression(status, cls = "") {
  for (const id of ["input28", "output28"]) {
    const canvas = $(id);
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    canvas.classList.add("empty"); // a blank placeholder, not a black square
  }
  facts($("code-facts"), [["Status", status, cls]]);
  delete $("code-facts").dataset.code;
  delete $("code-facts").dataset.psnr;
}

// The drawing as MNIST-like pixels: white digit on black, 28 x 28, values in [0, 1].
function drawingPixels() {
  const half = document.createElement("canvas");
  half.width = half.height = 56;
  const h = half.getContext("2d");
  h.imageSmoothingQuality = "high";
  h.drawImage(strokes, 0, 0, 56, 56);
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const s = small.getContext("2d");
  s.imageSmoothingQuality = "high";
  s.drawImage(half, 0, 0, 28, 28);
  const rgba = s.getImageData(0, 0, 28, 28).data;
  const rows = [];
  for (let y = 0; y < 28; y++) {
    const row = [];
    for (let x = 0; x < 28; x++) row.push(Math.round(255 - rgba[4 * (28 * y + x)]) / 255);
    rows.push(row);
  }
  return rows;
}

function paintPixels(canvas, rows) {
  canvas.classList.remove("empty");
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(28, 28);
  rows.forEach((row, y) => row.forEach((v, x) => {
    const g = Math.max(0, Math.min(255, Math.round(v * 255)));
    image.data.set([g, g, g, 255], 4 * (28 * y + x));
  }));
  ctx.putImageData(image, 0, 0);
}

let generation = 0;

async function analyseDrawing() {
  const mine = ++generation;
  const png = await new Promise((resolve) => strokes.toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("file", png, "drawing.png");
  const pixels = drawingPixels();
  await Promise.all([classify(form, mine, "your drawing"), compress(pixels, mine)]);
}

$("photo").addEventListener("change", async () => {
  const file = $("photo").files[0];
  if (!file) return;
  const mine = ++generation;
  resetStrokes(); // the upload replaces the drawing
  clearCompression(`Reading ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("debug", "true"); // the answer carries the 28 x 28 input the model saw
  const prediction = await classify(form, mine, file.name);
  if (mine !== generation) return;
  if (!prediction || !prediction.model_input_png) {
    clearCompression(`No 28 × 28 input: ${file.name} was not read as a digit.`, "error");
    return;
  }
  try {
    await compress(await pngPixels(prediction.model_input_png), mine);
  } catch (error) {
    if (mine === generation) clearCompression(error.message, "error");
  }
});

// A base64 8-bit grayscale PNG (28 x 28, light digit on dark) as rows of values in [0, 1].
function pngPixels(base64) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 28;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(image, 0, 0, 28, 28);
      const rgba = ctx.getImageData(0, 0, 28, 28).data;
      const rows = [];
      for (let y = 0; y < 28; y++) {
        const row = [];
        for (let x = 0; x < 28; x++) row.push(rgba[4 * (28 * y + x)] / 255);
        rows.push(row);
      }
      resolve(rows);
    };
    image.onerror = () => reject(new Error("the model's input image could not be read"));
    image.src = `data:image/png;base64,${base64}`;
  });
}

async function classify(form, mine, what) {
  clearDigit(`Classifying ${what}…`);
  try {
    const result = await api("/api/v1/digits/classify/image", { body: form });
    if (mine !== generation) return null;
    const prediction = result.predictions[0];
    const isDigit = prediction.is_digit !== false && !(Array.isArray(prediction.is_digit) && prediction.is_digit[0] === false);
    $("digit-result").dataset.isDigit = String(isDigit);
    if (isDigit) {
      $("digit-status").textContent = `Predicted digit for ${what}:`;
      $("digit-value").textContent = String(prediction.digit);
    } else {
      // Headlined as what it is; the model's best guess is only a footnote.
      $("digit-status").textContent = `Not a digit: ${what} does not look like a digit to the model (its best guess, ${prediction.digit}, is only a guess).`;
      $("digit-value").textContent = "Not a digit";
      $("digit-value").className = "not-digit";
    }
    // Extra outputs per prediction, or as top-level arrays of one value per image.
    const flags = [
      ...extras(prediction, ["digit", "probabilities", "model_input_png"]),
      ...extras(itemOf(result), ["model", "predictions"]),
    ].map(([k, v]) => describeExtra(k, v));
    const box = $("digit-flags");
    box.replaceChildren();
    for (const [name, value, cls] of flags) {
      box.append(el("span", {}, `${name}: `), el("span", cls ? { class: cls } : {}, value), " ");
    }
    bars(prediction.probabilities, prediction.digit);
    $("digit-model").textContent = `Model ${result.model.name} version ${result.model.version}`;
    return prediction;
  } catch (error) {
    if (mine === generation) clearDigit(error.message, "error");
    return null;
  }
}

function bars(probabilities, best) {
  const svg = $("probabilities");
  clearSvg(svg);
  const width = 28, gap = 4, top = 18, height = 120;
  probabilities.forEach((p, digit) => {
    const x = 8 + digit * (width + gap);
    const h = Math.max(1, p * height);
    const bar = el("svg:rect", {
      x, y: top + height - h, width, height: h,
      fill: digit === best ? "#0b57d0" : "#7b8794", "data-digit": digit, "data-p": p,
    });
    bar.append(el("svg:title", {}, `${digit}: ${(100 * p).toFixed(1)}%`));
    svg.append(bar);
    svg.append(el("svg:text", { x: x + width / 2, y: top + height + 14, "text-anchor": "middle" }, String(digit)));
    svg.append(el("svg:text", { x: x + width / 2, y: top + height - h - 4, "text-anchor": "middle" }, `${Math.round(100 * p)}%`));
  });
  svg.setAttribute("aria-label", probabilities.map((p, d) => `${d}: ${(100 * p).toFixed(1)}%`).join(", "));
}

// ---------------------------------------------------------------------------------------------
// Compression round trip.

function b64ToBytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

async function compress(pixels, mine) {
  clearCompression("Compressing…");
  paintPixels($("input28"), pixels);
  try {
    const packed = await api("/api/v1/digits/compress", { json: { images: pixels, scale: "unit" } });
    const code = packed.codes[0];
    const [decoded, png] = await Promise.all([
      api("/api/v1/digits/decompress", { json: { codes: [code], output: "array" } }),
      api("/api/v1/digits/decompress", { json: { codes: [code], output: "png" } }),
    ]);
    if (mine !== generation) return;
    const image = decoded.images[0];
    paintPixels($("output28"), image);
    let squared = 0;
    pixels.forEach((row, y) => row.forEach((v, x) => { squared += (v - image[y][x]) ** 2; }));
    const mse = squared / 784;
    const psnr = 10 * Math.log10(1 / mse);
    const bytes = b64ToBytes(code);
    const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const pngBytes = b64ToBytes(png.png[0]).length;
    facts($("code-facts"), [
      ["Encoder", `${packed.model.name} version ${packed.model.version}`],
      ["Code", `${packed.bytes_per_image} bytes (3 header + ${packed.bytes_per_image - 3} latent)`],
      ["Hex", hex],
      ["Base64", code],
      ["PSNR", `${psnr.toFixed(2)} dB (MSE ${fmt(mse, 3)}, input vs reconstruction)`],
      ["As PNG", `${pngBytes} bytes (the server's 8-bit PNG of the reconstruction)`],
      ["Saved", `${pngBytes - bytes.length} bytes (${(100 * (1 - bytes.length / pngBytes)).toFixed(0)}%) against PNG`],
    ]);
    $("code-facts").dataset.code = code;
    $("code-facts").dataset.psnr = psnr.toFixed(6);
  } catch (error) {
    if (mine === generation) clearCompression(error.message, "error");
  }
}

// ---------------------------------------------------------------------------------------------
// Energy panel.

const PRESETS = {
  notebook: {
    sliders: [["a0", -5, 5, 1.0], ["a1", -5, 5, -2.0], ["a2", -5, 5, 1.5], ["b1", -5, 5, 2.0], ["b2", -5, 5, -1.0]],
    // data/schrodinger.py: V = 1e-11 x^10 + sum_i 0.0795 (a_i cos(i pi x / 15) + b_i sin(i pi x / 15))
    V: (c, x) => 1e-11 * x ** 10 + 0.0795 * (c.a0 + c.a1 * Math.cos((Math.PI * x) / 15) + c.a2 * Math.cos((2 * Math.PI * x) / 15)
      + c.b1 * Math.sin((Math.PI * x) / 15) + c.b2 * Math.sin((2 * Math.PI * x) / 15)),
  },
  harmonic: { sliders: [["k", 0.005, 0.2, 0.05]], V: (c, x) => c.k * x * x },
  double: {
    sliders: [["barrier", 0.05, 2, 0.5], ["minima", 1, 8, 4]],
    V: (c, x) => c.barrier * ((x / c.minima) ** 2 - 1) ** 2,
  },
  box: {
    sliders: [["width", 2, 26, 10], ["wall", 0.1, 5, 2]],
    V: (c, x) => (Math.abs(x) < c.width / 2 ? 0 : c.wall),
  },
};

let potential = GRID.map((x) => PRESETS.notebook.V({ a0: 1, a1: -2, a2: 1.5, b1: 2, b2: -1 }, x));
let energyView = null; // y range kept while a potential is drawn by hand
let energyTimer = null;
let energyGeneration = 0;
let modes = null;

function preset() {
  return document.querySelector('input[name="preset"]:checked').value;
}

function buildSliders() {
  const name = preset();
  const box = $("sliders");
  box.replaceChildren();
  $("coefficients").hidden = name === "drawn";
  if (name === "drawn") return;
  $("coefficients").querySelector("legend").innerHTML = {
    notebook: "V(x) = 10<sup>-11</sup> x<sup>10</sup> + 0.0795 Σ<sub>i</sub> (a<sub>i</sub> cos(iπx/15) + b<sub>i</sub> sin(iπx/15))",
    harmonic: "V(x) = k x<sup>2</sup>",
    double: "V(x) = barrier ((x / minima)<sup>2</sup> − 1)<sup>2</sup>",
    box: "V(x) = 0 for |x| < width / 2, wall outside",
  }[name];
  for (const [key, lo, hi, value] of PRESETS[name].sliders) {
    const id = `slider-${key}`;
    const label = el("label", { for: id });
    const out = el("output", { for: id, id: `${id}-value` }, fmt(value, 3));
    label.append(`${key} = `, out);
    const input = el("input", { type: "range", id, min: lo, max: hi, step: (hi - lo) / 100, value });
    input.dataset.key = key;
    input.addEventListener("input", () => { out.textContent = fmt(Number(input.value), 3); updatePotential(); });
    box.append(label, input);
  }
}

function updatePotential() {
  const name = preset();
  if (name !== "drawn") {
    const c = {};
    for (const input of $("sliders").querySelectorAll("input")) c[input.dataset.key] = Number(input.value);
    potential = GRID.map((x) => PRESETS[name].V(c, x));
  }
  energyView = null;
  plotEnergy(null);
  scheduleEnergy();
}

document.querySelectorAll('input[name="preset"]').forEach((radio) => radio.addEventListener("change", () => {
  buildSliders();
  updatePotential();
}));

function scheduleEnergy() {
  clearTimeout(energyTimer);
  energyTimer = setTimeout(solve, 200);
}

async function solve() {
  const mine = ++energyGeneration;
  const V = potential.slice();
  const request = { potentials: V, include_exact: true };
  if (modes && $("mode").value) request.mode = $("mode").value;
  try {
    const [predicted, exact] = await Promise.all([
      api("/api/v1/energy/from-potential", { json: request }),
      api("/api/v1/energy/exact", { json: { potentials: V } }),
    ]);
    let fromDensity = null;
    try {
      fromDensity = await api("/api/v1/energy/from-density", { json: { densities: exact.densities[0], potentials: V } });
    } catch (error) {
      fromDensity = { error: error.message };
    }
    if (mine !== energyGeneration) return;
    const result = { V, predicted, exact, fromDensity };
    plotEnergy(result);
    energyFacts(result);
  } catch (error) {
    if (mine !== energyGeneration) return;
    facts($("energy-facts"), [["Error", error.message, "error"]]);
  }
}

function itemOf(body, index = 0) {
  const item = {};
  for (const [k, v] of Object.entries(body)) item[k] = Array.isArray(v) ? v[index] : v;
  return item;
}

function energyFacts({ predicted, exact, fromDensity }) {
  const p = itemOf(predicted);
  const rows = [
    ["E exact", `${fmt(exact.energies[0], 6)} Ha (solver)`],
    ["E[V] predicted", `${fmt(p.energies, 6)} Ha (${predicted.model.name} v${predicted.model.version})`],
    ["E[V] error", `${fmt(p.errors * 1000, 3)} mHa`],
  ];
  for (const [k, v] of extras(p, ["model", "grid", "unit", "energies", "exact_energies", "errors"])) rows.push(describeExtra(k, v));
  if (fromDensity.error) {
    rows.push(["E[n]", fromDensity.error, "error"]);
  } else {
    const d = itemOf(fromDensity);
    rows.push(["E[n] from exact n", `${fmt(d.energies, 6)} Ha (${fromDensity.model.name} v${fromDensity.model.version})`]);
    rows.push(["E[n] error", `${fmt(d.errors * 1000, 3)} mHa`]);
    for (const [k, v] of extras(d, ["model", "grid", "unit", "energies", "exact_energies", "errors"])) rows.push(describeExtra(`E[n] ${k}`, v));
  }
  facts($("energy-facts"), rows);
  const dl = $("energy-facts");
  dl.dataset.predicted = String(p.energies);
  dl.dataset.exact = String(exact.energies[0]);
}

const PLOT = { left: 44, right: 336, top: 12, bottom: 228 };

function plotEnergy(result) {
  const svg = $("energy-plot");
  clearSvg(svg);
  const V = result ? result.V : potential;
  const energies = result ? [result.exact.energies[0], result.predicted.energies[0]] : [];
  if (!energyView) {
    let lo = Math.min(...V, ...energies);
    let hi = Math.max(...V, ...energies);
    hi = Math.min(hi, lo + Math.max(1, 3 * (Math.max(...energies, lo + 0.5) - lo)));
    const pad = 0.06 * (hi - lo || 1);
    energyView = { lo: lo - pad, hi: hi + pad };
  }
  const { lo, hi } = energyView;
  const sx = (x) => PLOT.left + ((x + 15) / 30) * (PLOT.right - PLOT.left);
  const sy = (v) => PLOT.bottom - ((v - lo) / (hi - lo)) * (PLOT.bottom - PLOT.top);
  const clip = el("svg:clipPath", { id: "plot-area" });
  clip.append(el("svg:rect", { x: PLOT.left, y: PLOT.top, width: PLOT.right - PLOT.left, height: PLOT.bottom - PLOT.top }));
  svg.append(clip);
  svg.append(el("svg:rect", { x: PLOT.left, y: PLOT.top, width: PLOT.right - PLOT.left, height: PLOT.bottom - PLOT.top, fill: "none", stroke: "#c7ccd3" }));
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    svg.append(el("svg:text", { x: PLOT.left - 4, y: sy(v) + 4, "text-anchor": "end" }, fmt(v, 2)));
  }
  for (const x of [-15, -10, -5, 0, 5, 10, 15]) {
    svg.append(el("svg:text", { x: sx(x), y: PLOT.bottom + 14, "text-anchor": "middle" }, String(x)));
  }
  svg.append(el("svg:text", { x: (PLOT.left + PLOT.right) / 2, y: 256, "text-anchor": "middle" }, "x (bohr)"));
  const line = (values, scale, attrs) => {
    const points = values.map((v, i) => `${sx(GRID[i]).toFixed(1)},${scale(v).toFixed(1)}`).join(" ");
    svg.append(el("svg:polyline", { points, fill: "none", "clip-path": "url(#plot-area)", ...attrs }));
  };
  line(V, sy, { stroke: "#1b1f24", "stroke-width": 2, id: "v-line" });
  if (result) {
    const n = result.exact.densities[0];
    const nMax = Math.max(...n);
    const sn = (v) => PLOT.bottom - (v / nMax) * 0.6 * (PLOT.bottom - PLOT.top);
    line(n, sn, { stroke: "#0b57d0", "stroke-width": 2, id: "n-line" });
    svg.append(el("svg:text", { x: PLOT.right + 4, y: sn(nMax) + 4, fill: "#0b57d0" }, `n ${fmt(nMax, 2)}`));
    const [eExact, ePred] = energies;
    const hline = (e, color, dash, id) => svg.append(el("svg:line", {
      x1: PLOT.left, x2: PLOT.right, y1: sy(e), y2: sy(e), stroke: color, "stroke-width": 2,
      "stroke-dasharray": dash, "clip-path": "url(#plot-area)", id,
    }));
    hline(eExact, "#146c2e", "0", "e-exact");
    hline(ePred, "#b3261e", "6 4", "e-predicted");
    svg.append(el("svg:text", { x: PLOT.right + 4, y: sy(eExact) + 4, fill: "#146c2e" }, `E ${fmt(eExact, 3)}`));
  }
  svg.setAttribute("aria-label", result
    ? `Potential with exact energy ${fmt(energies[0], 5)} and predicted energy ${fmt(energies[1], 5)} hartree`
    : "Potential V(x)");
}

// Drawing V(x) by hand: drag on the plot; each grid point under the pointer takes its height.
const plotSvg = $("energy-plot");
let lastDrawn = null;
function drawPotential(event) {
  const box = plotSvg.getBoundingClientRect();
  const x = ((event.clientX - box.left) / box.width) * 400;
  const y = ((event.clientY - box.top) / box.height) * 260;
  const i = Math.round(((x - PLOT.left) / (PLOT.right - PLOT.left)) * 63);
  if (i < 0 || i > 63) return;
  const { lo, hi } = energyView;
  const v = lo + ((PLOT.bottom - y) / (PLOT.bottom - PLOT.top)) * (hi - lo);
  const from = lastDrawn ?? [i, v];
  const [i0, v0] = from;
  const steps = Math.max(1, Math.abs(i - i0));
  for (let s = 0; s <= steps; s++) {
    const j = Math.round(i0 + ((i - i0) * s) / steps);
    potential[j] = v0 + ((v - v0) * s) / steps;
  }
  lastDrawn = [i, v];
  plotEnergy(null);
}
plotSvg.addEventListener("pointerdown", (event) => {
  if (preset() !== "drawn") {
    document.querySelector('input[name="preset"][value="drawn"]').checked = true;
    buildSliders();
  }
  plotSvg.setPointerCapture(event.pointerId);
  plotSvg.style.touchAction = "none";
  lastDrawn = null;
  drawPotential(event);
});
plotSvg.addEventListener("pointermove", (event) => { if (plotSvg.hasPointerCapture(event.pointerId)) drawPotential(event); });
plotSvg.addEventListener("pointerup", () => { lastDrawn = null; scheduleEnergy(); });

// The energy request's `mode` (model | exact | auto), when this server's API has one.
function findEnum(node) {
  if (!node || typeof node !== "object") return null;
  if (Array.isArray(node.enum)) return node.enum;
  for (const value of Object.values(node)) {
    const found = findEnum(value);
    if (found) return found;
  }
  return null;
}

async function loadModes() {
  try {
    const schema = await api("/openapi.json");
    const request = schema.components.schemas.PotentialEnergyRequest;
    const mode = request && request.properties && request.properties.mode;
    if (!mode) return;
    modes = findEnum(mode.$ref ? schema.components.schemas[mode.$ref.split("/").pop()] : mode);
    if (!modes) return;
    $("mode").replaceChildren(...modes.map((m) => el("option", { value: m }, m)));
    if (mode.default) $("mode").value = mode.default;
    $("mode-box").hidden = false;
    $("mode").addEventListener("change", scheduleEnergy);
  } catch {
    modes = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Models view.

function flatten(prefix, value, rows) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(prefix ? `${prefix}.${k}` : k, v, rows);
  } else {
    rows.push([prefix, Array.isArray(value) ? JSON.stringify(value) : fmt(value, 5)]);
  }
}

async function loadModels() {
  const box = $("model-cards");
  try {
    const listing = await api("/api/v1/models");
    box.replaceChildren();
    for (const model of listing.models) {
      const card = el("details", { class: "card", "data-model": model.name });
      card.append(el("summary", {}, `${model.name}: ${model.state}, versions ${model.versions.join(", ") || "none"}`));
      if (model.error) card.append(el("p", { class: "error" }, model.error));
      box.append(card);
      for (const version of model.versions) {
        const [meta, plots] = await Promise.all([
          api(`/v1/models/${model.name}/versions/${version}/metadata`),
          api(`/api/v1/models/${model.name}/versions/${version}/plots`),
        ]);
        const metrics = meta.model_card.metrics || {};
        card.append(el("h3", {}, `Version ${version}: ${metrics.task || ""}`));
        const rows = [];
        for (const key of ["config", "parameters", "training_seconds", "tensorflow", "created", "git_commit"]) {
          if (key in metrics) rows.push([key, fmt(metrics[key], 6)]);
        }
        flatten("", metrics.metrics || {}, rows);
        const dl = el("dl", { class: "facts" });
        facts(dl, rows);
        card.append(dl);
        const gallery = el("div", { class: "plots" });
        for (const plot of plots.plots) {
          const img = el("img", { alt: `${model.name} v${version}: ${plot.name}`, loading: "lazy" });
          gallery.append(img);
          const key = $("api-key").value;
          if (!key) {
            img.src = plot.url;
          } else { // an <img> cannot send the X-API-Key header: fetch the file, show the blob
            fetch(plot.url, { headers: { "X-API-Key": key } })
              .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`${plot.url}: ${r.status}`))))
              .then((blob) => { img.src = URL.createObjectURL(blob); })
              .catch((error) => { img.alt = error.message; });
          }
        }
        card.append(gallery);
      }
    }
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, error.message));
  }
}

// ---------------------------------------------------------------------------------------------

$("api-key").addEventListener("change", () => { loadModels(); scheduleEnergy(); });

resetStrokes();
buildSliders();
updatePotential();
loadModes();
loadModels();
