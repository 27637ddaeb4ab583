// Try and ship: predictions on an upload, a drawing or a webcam frame (and one click to add a wrong one to
// its class), exports with the parity check, downloads, and `cnnkit serve` with its inside view.
import { $, api, el, fillClassSelect, frameBlob, guarded, onClasses, startCamera, upload } from "./studio.js";
import { fillRuns } from "./fix.js";

const ship = { last: null, cam: null };

async function predict(blob, name) {
  const run = $("try-run").value;
  if (!run) throw new Error("no trained run yet: train one first");
  const form = new FormData();
  form.append("files", blob, name);
  const answer = await api(`/api/runs/${encodeURIComponent(run)}/predict`, { method: "POST", body: form });
  ship.last = { blob, name };
  $("try-result").replaceChildren(...answer.labels.map((label, i) => {
    const fill = el("div", { className: "fill" });
    fill.style.width = (100 * answer.probabilities[i]).toFixed(1) + "%";
    return el("li", {}, el("span", { className: "label", textContent: label }),
      el("div", { className: "track" }, fill),
      el("span", { className: "pct", textContent: (100 * answer.probabilities[i]).toFixed(1) + "%" }));
  }));
  $("try-result").dataset.top = answer.labels[0];
  $("add-live").hidden = false;
  $("try-command").replaceChildren("Same as: ", el("code", { textContent: answer.command }));
}

function initPad() {
  const pad = $("pad");
  const g = pad.getContext("2d");
  const clear = () => { g.fillStyle = "#000"; g.fillRect(0, 0, pad.width, pad.height); };
  clear();
  let drawing = false;
  const at = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  };
  pad.addEventListener("pointerdown", (e) => { drawing = true; g.beginPath(); g.moveTo(...at(e)); });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    g.strokeStyle = "#fff"; g.lineWidth = 22; g.lineCap = "round";
    g.lineTo(...at(e)); g.stroke();
  });
  const end = guarded(async () => {
    if (!drawing) return;
    drawing = false;
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    await predict(blob, "drawing.png");
  });
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointerleave", end);
  $("pad-clear").addEventListener("click", clear);
}

async function exportModel() {
  const run = $("try-run").value;
  const choice = $("export-format").value;
  const body = choice === "int8" ? { format: "onnx", quantize: "int8" } : { format: choice };
  $("export-result").textContent = "exporting and checking...";
  const answer = await api(`/api/runs/${encodeURIComponent(run)}/export`, { json: body });
  $("export-result").textContent = `${answer.file} (${(answer.size / 1024).toFixed(0)} KiB): ` +
    `${answer.report.join("\n")}\nsame as: ${answer.command}`;
  await drawDownloads();
}

async function drawDownloads() {
  const runs = await fillRuns($("try-run"));
  const run = runs.find((r) => r.name === $("try-run").value);
  if (!run) { $("downloads").textContent = ""; return; }
  const wanted = run.files.filter((f) => /\.(safetensors|onnx|pt|html)$/.test(f) && !f.startsWith("resume"));
  $("downloads").replaceChildren("Download: ", ...wanted.flatMap((f) => [el("a", {
    href: `/api/runs/${encodeURIComponent(run.name)}/download?file=${encodeURIComponent(f)}`, textContent: f }), " "]));
}

export function initShip() {
  initPad();
  $("try-file").addEventListener("change", guarded(async () => {
    const file = $("try-file").files[0];
    if (file) await predict(file, file.name);
  }));
  $("try-cam").addEventListener("click", guarded(async () => {
    if (!ship.cam) { ship.cam = el("video", { autoplay: true, muted: true }); await startCamera(ship.cam); }
    await predict(await frameBlob(ship.cam), `webcam-${Date.now()}.png`);
  }));
  $("add-live-button").addEventListener("click", guarded(async () => {
    const { blob, name } = ship.last;
    await upload($("add-class-live").value, [new File([blob], name, { type: blob.type || "image/png" })]);
    $("try-command").textContent = `added to ${$("add-class-live").value}`;
  }));
  $("export").addEventListener("click", guarded(exportModel));
  $("serve").addEventListener("click", guarded(async () => {
    const answer = await api(`/api/runs/${encodeURIComponent($("try-run").value)}/serve`, { method: "POST" });
    $("serve-result").replaceChildren("Serving at ", el("a", { href: answer.url, textContent: answer.url, target: "_blank" }),
      " — ", el("a", { href: answer.inside, textContent: "look inside the network", target: "_blank" }),
      ". Same as: ", el("code", { textContent: answer.command }));
  }));
  $("try-run").addEventListener("change", guarded(drawDownloads));
  onClasses((classes) => fillClassSelect($("add-class-live"), classes));
  document.addEventListener("studio-tab", (e) => { if (e.detail === "ship") guarded(drawDownloads)(); });
}
