// Build and train: a registered model or a layer stack (shapes and parameters from the real API), the
// options, the equivalent `cnnkit train` command, lr-find, and the live job (curves, ETA, filters).
import { $, api, el, guarded, state as shared } from "./studio.js";

const STACK = "__stack__";
const train = { blocks: {}, stack: [], job: null, timer: null, filtersEpoch: -1 };

function stackInputShape() {
  const size = Number($("image-size").value) || 28;
  return [size, size, Number($("channels").value)];
}

function defaultStack() {
  const classes = Math.max(2, shared.classes.length);
  return [
    { class_name: "Conv2D", config: { filters: 16, kernel_size: 3, activation: "relu" } },
    { class_name: "MaxPooling2D", config: { pool_size: 2 } },
    { class_name: "Flatten", config: {} },
    { class_name: "Dense", config: { units: classes, activation: "softmax" } },
  ];
}

function parseValue(text) {
  if (text === "") return undefined;
  if (!Number.isNaN(Number(text))) return Number(text);
  if (text === "true" || text === "false") return text === "true";
  return text;
}

async function drawStack() {
  const table = await api("/api/layers", { json: { layers: train.stack, input_shape: stackInputShape() } });
  const body = $("stack").tBodies[0];
  body.replaceChildren(...train.stack.map((layer, i) => {
    const row = table.rows[i];
    const fields = el("div", { className: "row" }, ...Object.entries(layer.config).map(([key, value]) => {
      const input = el("input", { value: String(value), title: key });
      input.setAttribute("aria-label", `${layer.class_name} ${key}`);
      input.addEventListener("change", guarded(async () => {
        const parsed = parseValue(input.value.trim());
        if (parsed === undefined) delete layer.config[key]; else layer.config[key] = parsed;
        await drawStack();
      }));
      return el("label", { className: "small" }, key + " ", input);
    }));
    const remove = el("button", { type: "button", textContent: "×", title: "remove this layer" });
    remove.addEventListener("click", guarded(async () => { train.stack.splice(i, 1); await drawStack(); }));
    const tr = el("tr", {}, el("td", { textContent: String(i + 1) }), el("td", { textContent: layer.class_name }),
      el("td", {}, fields), el("td", { textContent: row ? "(" + row.output_shape.map((d) => d ?? "None").join(", ") + ")" : "" }),
      el("td", { textContent: row ? row.params.toLocaleString() : "" }), el("td", {}, remove));
    if (table.error && table.error.index === i) tr.className = "bad";
    return tr;
  }));
  $("stack-error").hidden = !table.error;
  $("stack-error").textContent = table.error ? table.error.message : ""; // names the layer: layers[N], N from 1
  $("model-note").textContent = `${table.params.toLocaleString()} parameters in the layers so far`;
  await drawCommand();
}

async function options() {
  const model = $("model").value;
  const out = {
    epochs: Number($("epochs").value) || undefined,
    lr: Number($("lr").value) || undefined,
    batch_size: Number($("batch-size").value) || undefined,
    augment: $("augment").value.trim() || undefined,
    image_size: Number($("image-size").value) || undefined,
  };
  if (model === STACK) {
    const saved = await api("/api/architecture", { json: { layers: train.stack, input_shape: stackInputShape() } });
    out.model = saved.model;
    delete out.image_size; // the stack's input shape says it
  } else {
    out.model = model;
  }
  return out;
}

async function drawCommand() {
  try {
    const answer = await api("/api/command", { json: { options: await options() } });
    $("command").textContent = answer.command;
  } catch (e) {
    $("command").textContent = "(" + e.message + ")";
  }
}

async function loadModels() {
  const { models, blocks, defaults } = await api("/api/models");
  train.blocks = blocks;
  const select = $("model");
  select.replaceChildren(...models.map((m) => {
    const params = m.params === null ? "" : `, ${(m.params / 1e6).toFixed(m.params < 1e6 ? 3 : 1)}M params`;
    const option = new Option(`${m.name} (${m.input_size}x${m.input_size}x${m.in_channels}${params})`, m.name);
    option.title = m.description;
    return option;
  }), new Option("my own layer stack (Sequential)", STACK));
  select.value = defaults.model;
  $("block").replaceChildren(...Object.keys(blocks).map((b) => new Option(b, b)));
  describeModel(models);
  select.addEventListener("change", guarded(async () => { describeModel(models); await drawCommand(); }));
}

function describeModel(models) {
  const name = $("model").value;
  const stack = name === STACK;
  $("stack-editor").hidden = !stack;
  if (stack) {
    if (!train.stack.length) train.stack = defaultStack();
    drawStack().catch((e) => { $("stack-error").hidden = false; $("stack-error").textContent = e.message; });
    return;
  }
  const m = models.find((x) => x.name === name);
  $("model-note").textContent = m ? `${m.description} — input ${m.input_size}x${m.input_size}, ` +
    `${m.params === null ? "?" : m.params.toLocaleString()} parameters for ${shared.classes.length || 2} classes.` : "";
}

// Loss and accuracy per epoch on one canvas: losses on the left scale, accuracies (0-1) on the right.
function drawCurves(history) {
  const canvas = $("curves");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 34;
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui";
  g.strokeStyle = "#dde1e8";
  g.strokeRect(pad, 8, w - 2 * pad, h - pad - 8);
  if (!history.length) return;
  const n = Math.max(2, history.length);
  const maxLoss = Math.max(...history.flatMap((r) => [r.loss, r.val_loss].filter((v) => v !== undefined))) || 1;
  const x = (i) => pad + (i / (n - 1)) * (w - 2 * pad);
  const series = [["loss", "#2f6fde", maxLoss], ["val_loss", "#9bb8ef", maxLoss],
    ["accuracy", "#d9480f", 1], ["val_accuracy", "#f5a97f", 1]];
  series.forEach(([key, color, top], k) => {
    const points = history.map((r, i) => [i, r[key]]).filter(([, v]) => v !== undefined);
    if (!points.length) return;
    g.strokeStyle = color; g.fillStyle = color; g.lineWidth = 2;
    g.beginPath();
    points.forEach(([i, v], j) => {
      const y = 8 + (1 - v / top) * (h - pad - 8);
      if (j === 0) g.moveTo(x(i), y); else g.lineTo(x(i), y);
    });
    g.stroke();
    points.forEach(([i, v]) => { g.beginPath(); g.arc(x(i), 8 + (1 - v / top) * (h - pad - 8), 3, 0, 7); g.fill(); });
    g.fillText(key, pad + 6 + k * 90, h - 8);
  });
  g.fillStyle = "#5c6475";
  g.fillText(maxLoss.toFixed(2), 2, 16);
  g.fillText("1.0", w - pad + 4, 16);
  g.fillText(`epoch ${history.length}`, w / 2 - 20, h - pad + 12);
}

function describeJob(job) {
  const done = job.history.length;
  const last = job.history[done - 1];
  const numbers = last ? ` — epoch ${done}/${job.epochs}: loss ${last.loss.toFixed(3)}, accuracy ` +
    `${(100 * last.accuracy).toFixed(1)}%` + (last.val_accuracy !== undefined ?
      `, val accuracy ${(100 * last.val_accuracy).toFixed(1)}%` : "") : "";
  return `${job.status}${job.status === "running" && !done ? " (preparing the data)" : ""}${numbers}` +
    (job.error ? ` — ${job.error}` : "");
}

function showJob(job) {
  train.job = job;
  $("job-status").textContent = `${job.run}: ${describeJob(job)}`;
  $("job-status").dataset.status = job.status;
  drawCurves(job.history);
  $("eta").textContent = job.eta_s !== null ? `about ${Math.ceil(job.eta_s)} s left for the whole run` : "";
  $("stop").disabled = !["running", "queued"].includes(job.status);
  const resumable = ["stopped", "interrupted"].includes(job.status) && job.history.length;
  $("resume").disabled = !(resumable || job.status === "done");
  $("resume").textContent = job.status === "done" ? "Train more epochs" : "Resume";
  if (job.history.length && job.history.length !== train.filtersEpoch) {
    train.filtersEpoch = job.history.length;
    const img = $("filters");
    img.src = `/api/jobs/${job.id}/filters.png?epoch=${job.history.length}`;
    img.hidden = false;
    img.dataset.epoch = String(job.history.length);
  }
  document.dispatchEvent(new CustomEvent("studio-job", { detail: job }));
}

async function poll() {
  const { jobs } = await api("/api/jobs");
  $("jobs").replaceChildren(...jobs.map((j) => {
    const li = el("li", { textContent: `${j.run} — ${describeJob(j)}` });
    li.title = j.command;
    li.addEventListener("click", () => showJob(j));
    return li;
  }));
  const active = jobs.find((j) => j.status === "running") || jobs.find((j) => j.status === "queued");
  const current = active || (train.job && jobs.find((j) => j.id === train.job.id)) || jobs[0];
  if (current) showJob(current);
  if (current && !train.formFilled) fillForm(current.options || {}); // after a reload: the job's own settings
  train.formFilled = true;
  clearTimeout(train.timer);
  train.timer = setTimeout(guarded(poll), active ? 1000 : 5000);
}

function fillForm(options) {
  const fields = { epochs: "epochs", lr: "lr", batch_size: "batch-size", augment: "augment", image_size: "image-size" };
  for (const [key, id] of Object.entries(fields)) if (options[key] !== undefined) $(id).value = String(options[key]);
  if (options.model && [...$("model").options].some((o) => o.value === options.model)) $("model").value = options.model;
  $("model").dispatchEvent(new Event("change"));
}

async function startTraining() {
  const job = await api("/api/jobs", { json: { options: await options() } });
  train.filtersEpoch = -1;
  showJob(job);
  await poll();
}

async function lrFind() {
  $("lr-note").textContent = "sweeping the learning rate...";
  $("lr-result").hidden = false;
  const found = await api("/api/lr-find", { json: { options: await options() } });
  $("lr-plot").src = "/api/lr-find.png?t=" + Date.now();
  $("lr-note").replaceChildren(`suggested peak learning rate ${found.suggestion.toPrecision(2)} (same as: `,
    el("code", { textContent: found.command }), ") ");
  const use = el("button", { type: "button", textContent: "use it" });
  use.addEventListener("click", guarded(async () => { $("lr").value = found.suggestion.toPrecision(2); await drawCommand(); }));
  $("lr-note").append(use);
}

export function initTrain() {
  train.ready = guarded(loadModels)();
  train.ready.then(guarded(drawCommand));
  $("add-layer").addEventListener("click", guarded(async () => {
    const kind = $("block").value;
    train.stack.splice(Math.max(0, train.stack.length - 1), 0, { class_name: kind, config: { ...train.blocks[kind] } });
    await drawStack();
  }));
  $("channels").addEventListener("change", guarded(drawStack));
  for (const id of ["epochs", "lr", "batch-size", "augment"]) $(id).addEventListener("change", guarded(drawCommand));
  $("image-size").addEventListener("change", guarded(async () => ($("model").value === STACK ? drawStack() : drawCommand())));
  $("train").addEventListener("click", guarded(startTraining));
  $("lr-find").addEventListener("click", guarded(lrFind));
  $("stop").addEventListener("click", guarded(async () => { await api(`/api/jobs/${train.job.id}/stop`, { method: "POST" }); await poll(); }));
  $("resume").addEventListener("click", guarded(async () => {
    const body = { resume: train.job.run };
    if (train.job.status === "done") { // extend the finished run (cnnkit train --resume RUN --epochs N)
      const epochs = Number(prompt("Train this run to how many epochs in all?", String(train.job.epochs * 2)));
      if (!epochs) return;
      body.epochs = epochs;
    }
    showJob(await api("/api/jobs", { json: body }));
    await poll();
  }));
  // A reload finds the running job (the models first, so the form can show its settings).
  train.ready.then(guarded(poll));
}
