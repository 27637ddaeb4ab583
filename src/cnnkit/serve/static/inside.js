// The inside view: send an image to POST /v1/inside and draw the network's layers with their
// feature maps, the class probabilities and a heat map (POST /v1/explain; Grad-CAM unless another is chosen).
// Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const state = {
  card: null,       // GET /v1/model
  answer: null,     // the last POST /v1/inside answer
  maps: new Map(),  // layer name -> decoded maps (Draw.decodeMaps)
  image: null,      // {blob, name}: the image shown, re-sent for the heat map
  target: null,     // the class the heat map is for (null: the top class)
  expanded: new Set(),  // layers whose every map is shown
  request: 0,       // answers to superseded requests are dropped
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const shapeText = (shape) => shape.join("\u00d7");
const percent = (p) => (100 * p).toFixed(1) + "%";

// -- sending an image -----------------------------------------------------------------------
async function look(blob, name) {
  state.image = { blob, name };
  state.target = null;
  const id = ++state.request;
  const form = new FormData();
  form.append("file", blob, name);
  document.body.classList.add("busy");
  document.body.dataset.state = "loading";
  const started = performance.now();
  try {
    const answer = await api("/v1/inside", { method: "POST", body: form });
    const decoded = await Promise.all(answer.layers.map((l) => (l.maps ? Draw.decodeMaps(l.maps) : null)));
    if (id !== state.request) return;
    state.answer = answer;
    state.maps = new Map(answer.layers.map((l, i) => [l.name, decoded[i]]));
    showError("");
    render();
    const t = answer.timing_ms;
    const elapsed = performance.now() - started;  // upload, server, decoding and drawing
    $("timing").textContent = "server " + t.total.toFixed(0) + " ms (layers " + t.inside.toFixed(0) +
      " ms), on screen in " + elapsed.toFixed(0) + " ms";
    document.body.dataset.ms = elapsed.toFixed(1);  // for benchmarks/inside_bench.py
    document.body.dataset.state = "ready";
    explain();
  } catch (e) {
    if (id === state.request) {
      showError(e.message);
      document.body.dataset.state = "error";
    }
  } finally {
    if (id === state.request) document.body.classList.remove("busy");
  }
}

// -- the network ------------------------------------------------------------------------------
function render() {
  const answer = state.answer;
  $("placeholder").hidden = true;
  $("input-figure").hidden = false;
  $("input-view").src = "data:image/png;base64," + answer.input.png;
  $("input-caption").textContent = "as the model sees it: " + shapeText(answer.input.shape);
  const list = $("layers");
  list.replaceChildren(inputRow(answer), ...answer.layers.map((layer, i) => layerRow(layer, i)));
  $("notes").textContent = answer.notes.join(" ");
  renderBars();
}

function inputRow(answer) {
  const li = el("li", "layer role-input");
  const meta = el("div", "meta");
  meta.append(el("span", "lname", "input"), el("span", "shape", shapeText(answer.input.shape)));
  li.append(meta);
  return li;
}

function layerRow(layer, index) {
  const li = el("li", "layer role-" + layer.role);
  li.dataset.name = layer.name;
  const meta = el("div", "meta");
  meta.append(
    el("span", "lname", layer.name),
    el("span", "kind", layer.kind),
    el("span", "shape", shapeText(layer.output_shape)),
    el("span", "params", layer.params.toLocaleString("en") + " params"),
  );
  if (layer.detail) meta.append(el("span", "detail", layer.detail));
  li.append(meta);
  const maps = state.maps.get(layer.name);
  if (maps) li.append(mapStrip(layer, maps));
  else if (layer.values) li.append(valueStrip(layer));
  const notes = [...layer.notes];
  if (notes.length) li.append(el("p", "note", notes.join("; ")));
  return li;
}

// Which of a layer's maps to draw, in what order: the most active first, or all by channel.
function shownMaps(layer, maps) {
  const choice = $("per-layer").value;
  if (choice === "all" || state.expanded.has(layer.name)) {
    return maps.map((m, i) => i).sort((a, b) => maps[a].channel - maps[b].channel);
  }
  return maps.slice(0, Number(choice)).map((m, i) => i);
}

function layerScale(maps) {
  return [Math.min(...maps.map((m) => m.low)), Math.max(...maps.map((m) => m.high))];
}

function mapStrip(layer, maps) {
  const box = el("div", "maps");
  const [h, w] = layer.maps.size;
  const [layerLow, layerHigh] = layerScale(maps);
  const perLayer = $("scale").value === "layer";
  for (const i of shownMaps(layer, maps)) {
    const m = maps[i];
    const canvas = el("canvas", "map pixelated");
    Draw.paint(canvas, m.values, h, w, perLayer ? layerLow : m.low, perLayer ? layerHigh : m.high);
    canvas.dataset.channel = m.channel;
    canvas.tabIndex = 0;
    canvas.title = "channel " + m.channel + ": mean |activation| " + Draw.fmt(m.activity);
    canvas.setAttribute("role", "button");
    canvas.setAttribute("aria-label", layer.name + " channel " + m.channel);
    const open = () => Detail.open(layer, i);
    canvas.addEventListener("click", open);
    canvas.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
    box.append(canvas);
  }
  const sent = maps.length;
  const shownCount = box.childElementCount;
  if (sent > Number($("per-layer").value) && $("per-layer").value !== "all") {
    const more = el("button", "more", state.expanded.has(layer.name) ? "fewer" : "all " + sent);
    more.type = "button";
    more.addEventListener("click", () => {
      if (state.expanded.has(layer.name)) state.expanded.delete(layer.name);
      else state.expanded.add(layer.name);
      render();
    });
    box.append(more);
  }
  box.dataset.shown = shownCount;
  return box;
}

// A flat layer (Flatten, Dense): its values as a row of cells.
function valueStrip(layer) {
  const canvas = el("canvas", "values pixelated");
  const values = Float32Array.from(layer.values);
  Draw.paint(canvas, values, 1, values.length, Math.min(0, ...values), Math.max(...values));
  canvas.title = layer.values.length + " values, from " + Draw.fmt(Math.min(...values)) + " to " +
    Draw.fmt(Math.max(...values));
  return canvas;
}

// -- the output: probabilities and the heat map -----------------------------------------------
function renderBars() {
  const answer = state.answer;
  const order = answer.classes.map((c, i) => i);
  if (order.length > 20) order.sort((a, b) => answer.probabilities[b] - answer.probabilities[a]);
  const list = $("bars");
  list.replaceChildren();
  const chosen = state.target === null ? answer.predicted : state.target;
  for (const i of order.slice(0, 20)) {
    const label = answer.classes[i];
    const p = answer.probabilities[i];
    const li = el("li");
    li.dataset.class = label;
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    li.setAttribute("aria-pressed", String(label === chosen));
    li.setAttribute("aria-label", label + ": " + percent(p));
    const track = el("span", "track");
    const fill = el("span", "fill");
    fill.style.display = "block";
    fill.style.width = Math.max(0.5, 100 * p).toFixed(1) + "%";
    track.append(fill);
    li.append(el("span", "label", label), track, el("span", "pct", percent(p)));
    if (label === answer.predicted) li.classList.add("top");
    const pick = () => { state.target = label; renderBars(); explain(); };
    li.addEventListener("click", pick);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(); } });
    list.append(li);
  }
  $("bars-hint").hidden = !(state.card && state.card.explain);
}

async function explain() {
  if (!state.card || !state.card.explain || !state.image) return;
  const id = state.request;
  const target = state.target;
  const method = $("method").value;
  const form = new FormData();
  form.append("file", state.image.blob, state.image.name);
  const query = "?top_k=1" + (target === null ? "" : "&target=" + encodeURIComponent(target)) +
    "&method=" + encodeURIComponent(method);
  try {
    const answer = await api("/v1/explain" + query, { method: "POST", body: form });
    if (id !== state.request || target !== state.target || method !== $("method").value) return;
    const result = answer.results[0];
    const title = methodTitle(state.card, answer.method);
    $("cam").src = "data:image/png;base64," + result.heatmap_png;
    $("cam").alt = title + " heat map: where the network looked";
    $("cam-caption").textContent = title + ": where it looked for \u201c" + result.target + "\u201d";
    $("cam-figure").hidden = false;
    $("cam-figure").dataset.target = result.target;
    $("cam-figure").dataset.method = method;
    $("cam-note").hidden = true;
  } catch (e) {
    $("cam-note").hidden = false;
    $("cam-note").textContent = e.message;
  }
}

// -- inputs: choose, drop, paste, draw (common.js), and the view's own controls -----------------
function setUpControls() {
  const redraw = () => { if (state.answer) render(); };
  $("per-layer").addEventListener("change", () => { state.expanded.clear(); redraw(); });
  $("scale").addEventListener("change", redraw);
  $("method").addEventListener("change", explain);
}

async function main() {
  setUpImageInputs(look);
  setUpDrawingPad(look);
  setUpControls();
  Detail.setUp();
  try {
    state.card = await api("/v1/model");
    const [h, w, c] = state.card.input_shape;
    $("model-line").textContent = state.card.name + " \u00b7 " + state.card.parameters.toLocaleString("en") +
      " parameters \u00b7 input " + h + "\u00d7" + w + "\u00d7" + c + " \u00b7 " + state.card.num_classes + " classes";
    $("draw-panel").hidden = !(c === 1 && h <= 64 && w <= 64);
    fillMethods($("method"), state.card);
    if (!state.card.explain) {
      $("cam-note").hidden = false;
      $("cam-note").textContent = "Heat maps are not available for this model.";
    }
    document.body.dataset.state = "idle";
  } catch (e) {
    $("model-line").textContent = "the model could not be loaded";
    showError(e.message);
  }
}

main();
