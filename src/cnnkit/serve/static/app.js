// The page: send an image (file, drop, paste or drawing) to the API and show what comes back.
// Plain JavaScript, no build step, nothing loaded from elsewhere; common.js has the API call and the inputs.
"use strict";

const TOP_K = 5;
let card = null;      // GET /v1/model
let current = null;   // {blob, name}: the image shown, re-sent when the heat-map toggle changes
let requestId = 0;    // answers to superseded requests are dropped

// -- the model card -------------------------------------------------------------------
function fact(list, name, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  list.append(dt, dd);
}

function percent(x) { return (100 * x).toFixed(1) + "%"; }

function renderCard() {
  const [h, w, c] = card.input_shape;
  $("model-line").textContent =
    card.name + " \u00b7 " + card.num_classes + " classes \u00b7 input " + h + "\u00d7" + w + "\u00d7" + c;
  const list = $("model-card");
  list.replaceChildren();
  fact(list, "name", card.name);
  fact(list, "architecture", card.architecture);
  fact(list, "parameters", card.parameters.toLocaleString("en"));
  fact(list, "input", h + " \u00d7 " + w + " pixels, " + (c === 1 ? "grayscale" : c + " channels"));
  const shown = card.classes.slice(0, 20).join(", ");
  fact(list, "classes", shown + (card.classes.length > 20 ? ", \u2026 (" + card.classes.length + ")" : ""));
  const t = card.training || {};
  fact(list, "trained on", t.data);
  if (t.images) fact(list, "images", Object.entries(t.images).map(([k, v]) => k + " " + v).join(", "));
  fact(list, "epochs", t.epochs);
  if (t.test && typeof t.test.accuracy === "number") {
    fact(list, "test accuracy", percent(t.test.accuracy) + " on " + t.test.n + " images");
    fact(list, "top-" + t.test.top_k + " error", percent(t.test.top_k_error));
  }
  if (typeof t.val_accuracy === "number") fact(list, "validation accuracy", percent(t.val_accuracy));
  fact(list, "created", card.created);
  fact(list, "served by", card.runtime);
  // A drawing pad makes sense for small grayscale inputs, like digits.
  $("draw-panel").hidden = !(c === 1 && h <= 64 && w <= 64);
  const heat = $("heat");
  heat.disabled = !card.explain;
  fillMethods($("method"), card);
  if (!card.explain) {
    $("heat-note").hidden = false;
    $("heat-note").textContent = "Heat maps are not available on this server.";
  }
}

// -- recognizing ------------------------------------------------------------------------
function renderBars(labels, probabilities) {
  const list = $("bars");
  list.replaceChildren();
  labels.forEach((label, i) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    name.title = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = Math.max(0.5, 100 * probabilities[i]).toFixed(1) + "%";
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = percent(probabilities[i]);
    li.append(name, track, pct);
    li.setAttribute("aria-label", label + ": " + percent(probabilities[i]));
    list.append(li);
  });
}

async function recognize(blob, name) {
  current = { blob, name };
  const id = ++requestId;
  const explain = $("heat").checked && card && card.explain;
  const method = $("method").value;
  const path = (explain ? "/v1/explain" : "/v1/predict") + "?top_k=" + TOP_K + "&include_input=true" +
    (explain ? "&method=" + encodeURIComponent(method) : "");
  const form = new FormData();
  form.append("file", blob, name);
  document.body.classList.add("busy");
  try {
    const answer = await api(path, { method: "POST", body: form });
    if (id !== requestId) return;
    const result = answer.results[0];
    showError("");
    $("placeholder").hidden = true;
    $("result").hidden = false;
    const original = $("original");
    if (original.src.startsWith("blob:")) URL.revokeObjectURL(original.src);
    original.src = URL.createObjectURL(blob);
    $("seen").src = "data:image/png;base64," + result.input_png;
    const [h, w] = card.input_shape;
    $("seen-caption").textContent = "as the model sees it (" + h + "\u00d7" + w + ")";
    $("heat-figure").hidden = !result.heatmap_png;
    if (result.heatmap_png) {
      $("heatmap").src = "data:image/png;base64," + result.heatmap_png;
      const title = methodTitle(card, answer.method);
      $("heatmap").alt = title + " heat map: where the model looked";
      $("heat-caption").textContent = "where it looked for \u201c" + result.target + "\u201d (" + title + ")";
    }
    renderBars(result.labels, result.probabilities);
    $("timing").textContent = "answered in " + answer.timing_ms.total.toFixed(1) + " ms (model " +
      answer.timing_ms.model.toFixed(1) + " ms)";
    $("result").dataset.top = result.labels[0];  // for tests and scripts
  } catch (e) {
    if (id === requestId) showError(e.message);
  } finally {
    if (id === requestId) document.body.classList.remove("busy");
  }
}

async function main() {
  setUpImageInputs(recognize);
  setUpDrawingPad(recognize);
  $("heat").addEventListener("change", () => { if (current) recognize(current.blob, current.name); });
  $("method").addEventListener("change", () => {
    if (current && $("heat").checked) recognize(current.blob, current.name);
  });
  try {
    card = await api("/v1/model");
    renderCard();
  } catch (e) {
    $("model-line").textContent = "the model could not be loaded";
    showError(e.message);
  }
}

main();
