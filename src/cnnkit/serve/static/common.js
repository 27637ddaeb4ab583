// What both pages (/ and /inside) share: calling the API, the error line, and the ways in for an
// image (choose, drop, paste, draw). Loaded before each page's own script; no build step.
"use strict";

const $ = (id) => document.getElementById(id);

// fetch + JSON, with the API's own error message (its "detail") on failure.
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("cannot reach the server (" + e.message + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(detail + " (HTTP " + response.status + ")");
  }
  return body;
}

// The #method selector: the heat-map methods the server lists (GET /v1/model), its default chosen.
function fillMethods(select, card) {
  select.replaceChildren(...(card.explain_methods || []).map((m) => {
    const option = new Option(m.title, m.name, false, m.name === card.explain_default);
    option.title = m.description;
    return option;
  }));
  select.disabled = !card.explain || select.options.length === 0;
}

// A method's title for captions ("Grad-CAM"), from the card's list.
function methodTitle(card, name) {
  const method = (card.explain_methods || []).find((m) => m.name === name);
  return method ? method.title : name;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// The #file chooser, the #drop zone (also Enter/Space on it) and pasting anywhere: each hands
// the image to take(blob, name).
function setUpImageInputs(take) {
  const drop = $("drop");
  const give = (file) => { if (file) take(file, file.name || "pasted.png"); };
  $("file").addEventListener("change", (e) => { give(e.target.files[0]); e.target.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    give(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) { e.preventDefault(); give(item.getAsFile()); }
  });
}

// The #pad drawing canvas: white strokes on black, like the built-in digits; each finished
// stroke hands the whole drawing to take(blob, "drawing.png"). #clear blanks it.
function setUpDrawingPad(take) {
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); };
  clear();
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 26;  // about 2.6 of the model's 28 pixels: as thick as the training digits
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  let drawing = false;
  const point = (e) => {
    const box = pad.getBoundingClientRect();
    return [(e.clientX - box.left) * pad.width / box.width, (e.clientY - box.top) * pad.height / box.height];
  };
  pad.addEventListener("pointerdown", (e) => {
    drawing = true;
    pad.setPointerCapture(e.pointerId);
    const [x, y] = point(e);
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(x + 0.01, y);
    ctx.stroke();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    const [x, y] = point(e);
    ctx.lineTo(x, y);
    ctx.stroke();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    pad.toBlob((blob) => take(blob, "drawing.png"), "image/png");
  };
  pad.addEventListener("pointerup", finish);
  pad.addEventListener("pointercancel", finish);
  $("clear").addEventListener("click", clear);
}
