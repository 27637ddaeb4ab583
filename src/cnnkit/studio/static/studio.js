// The studio page: tabs, the API helper, and the Gather step (classes, uploads, thumbnails, the data check,
// the change log). The other steps live in train.js and fix.js. Plain modules, no build step.
import { initTrain } from "./train.js";
import { initFix } from "./fix.js";
import { initShip } from "./ship.js";

export const $ = (id) => document.getElementById(id);
const PAGE = 60; // thumbnails per page

// fetch + JSON; the API's own message ("detail") on failure. The token travels in the cookie.
export async function api(path, options = {}) {
  const init = { ...options };
  if (init.json !== undefined) {
    init.body = JSON.stringify(init.json);
    init.headers = { "content-type": "application/json" };
    init.method = init.method || "POST";
    delete init.json;
  }
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(detail + " (HTTP " + response.status + ")");
  }
  return body;
}

export function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// Run an async action; any error is shown on the page's error line.
export function guarded(fn) {
  return async (...args) => {
    try { showError(""); await fn(...args); } catch (e) { showError(e.message); }
  };
}

export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export const thumbUrl = (path) => "/api/thumb?path=" + encodeURIComponent(path);

export const state = { classes: [], listeners: [] };

// Everyone who shows the class list (selects in other tabs) hears of a change.
export function onClasses(fn) { state.listeners.push(fn); }

export async function refreshClasses() {
  const info = await api("/api/project");
  state.classes = info.classes;
  $("project-name").textContent = info.name;
  $("project-root").textContent = info.splits.length
    ? `${info.root}: classes in ${info.splits.map((s) => s + "/").join(", ")} (new images go to ${info.splits[0]}/)`
    : info.root;
  drawClasses();
  state.listeners.forEach((fn) => fn(state.classes));
  await drawChanges();
}

export function fillClassSelect(select, classes, keep = true) {
  const current = select.value;
  select.replaceChildren(...classes.map((c) => new Option(c.name, c.name)));
  if (keep && classes.some((c) => c.name === current)) select.value = current;
}

async function upload(name, files) {
  const form = new FormData();
  let n = 0;
  for (const file of files) {
    if (file.type && !file.type.startsWith("image/")) continue;
    form.append("files", file, file.name || "image.png");
    n += 1;
    if (n === 16) { await send(name, form); form.delete("files"); n = 0; } // the server's images per request
  }
  if (n) await send(name, form);
  await refreshClasses();
}

async function send(name, form) {
  const answer = await api("/api/classes/" + encodeURIComponent(name) + "/images", { method: "POST", body: form });
  if (answer.refused.length) showError(answer.refused.map((r) => r.error).join("; "));
}
export { upload };

// "12 images", or in a project with splits "12 images (train 8, valid 2, test 2)".
function countText(c) {
  const total = `${c.count} image${c.count === 1 ? "" : "s"}`;
  if (!c.splits) return total;
  return `${total} (${Object.entries(c.splits).map(([s, n]) => `${s} ${n}`).join(", ")})`;
}

function classCard(c) {
  const grid = el("div", { className: "grid" });
  const more = el("button", { type: "button", textContent: "more", hidden: true });
  let offset = 0;
  const page = guarded(async () => {
    const answer = await api(`/api/classes/${encodeURIComponent(c.name)}/images?offset=${offset}&limit=${PAGE}`);
    grid.append(...answer.images.map((p) => el("img", { src: thumbUrl(p), alt: p, title: p, loading: "lazy" })));
    offset += answer.images.length;
    more.hidden = offset >= answer.total;
  });
  more.addEventListener("click", page);
  const files = el("input", { type: "file", multiple: true, accept: "image/*", className: "small" });
  files.setAttribute("aria-label", "add images to " + c.name);
  files.dataset.class = c.name;
  files.addEventListener("change", guarded(() => upload(c.name, files.files)));
  const folder = el("input", { type: "file", multiple: true, className: "small" });
  folder.webkitdirectory = true;
  folder.setAttribute("aria-label", "add a folder to " + c.name);
  folder.addEventListener("change", guarded(() => upload(c.name, folder.files)));
  const rename = el("button", { type: "button", textContent: "Rename" });
  rename.addEventListener("click", guarded(async () => {
    const name = prompt("New name for " + c.name, c.name);
    if (name && name !== c.name) {
      await api("/api/classes/" + encodeURIComponent(c.name), { method: "PATCH", json: { name } });
      await refreshClasses();
    }
  }));
  const remove = el("button", { type: "button", textContent: "Remove" });
  remove.title = "an empty class is removed; a class with images has them moved to the excluded folder (undoable)";
  remove.addEventListener("click", guarded(async () => {
    await api("/api/classes/" + encodeURIComponent(c.name), { method: "DELETE" });
    await refreshClasses();
  }));
  const card = el("div", { className: "class drop" },
    el("div", { className: "class-head" }, el("h3", { textContent: c.name }),
      el("span", { className: "count muted", textContent: countText(c) }),
      files, el("span", { className: "small muted", textContent: "folder:" }), folder, rename, remove),
    grid, more);
  card.dataset.class = c.name;
  card.addEventListener("dragover", (e) => { e.preventDefault(); card.classList.add("over"); });
  card.addEventListener("dragleave", () => card.classList.remove("over"));
  card.addEventListener("drop", guarded(async (e) => {
    e.preventDefault();
    card.classList.remove("over");
    await upload(c.name, e.dataTransfer.files);
  }));
  card.addEventListener("click", () => { state.pasteInto = c.name; });
  page();
  return card;
}

function drawClasses() {
  const list = $("classes");
  list.replaceChildren(...state.classes.map(classCard));
  if (!state.classes.length) list.append(el("p", { className: "muted", textContent: "No classes yet: add one." }));
}

async function drawChanges() {
  const { changes } = await api("/api/changes");
  $("changes").replaceChildren(...changes.slice(0, 30).map((c) => {
    const what = c.kind === "undo" ? `undid a ${c.what}` : `${c.kind} ${c.class || ""}`;
    const moved = c.moves && c.moves.length ? ` (${c.moves.length} file${c.moves.length === 1 ? "" : "s"})` : "";
    return el("li", { textContent: what + moved, title: (c.moves || []).map((m) => `${m.src} -> ${m.dst}`).join("\n") });
  }));
  const { images } = await api("/api/excluded");
  $("excluded").replaceChildren(...images.slice(0, 60).map((p) => {
    const img = el("img", { src: thumbUrl(p), alt: p, title: "click to restore " + p });
    img.addEventListener("click", guarded(async () => {
      await api("/api/images/restore", { json: { paths: [p] } });
      await refreshClasses();
    }));
    return img;
  }));
}

function excludeButton(path) {
  const b = el("button", { type: "button", textContent: "exclude" });
  b.addEventListener("click", guarded(async () => {
    await api("/api/images/move", { json: { paths: [path], to: null } });
    b.disabled = true;
    await refreshClasses();
  }));
  return b;
}

async function check() {
  const box = $("check-result");
  box.textContent = "checking...";
  const r = await api("/api/check");
  const lines = [
    `${r.readable} of ${r.files} files readable, ${r.classes.length} classes`,
    `imbalance (largest / smallest class): ${r.imbalance_ratio === null ? "n/a" : r.imbalance_ratio.toFixed(2) + "x"}`,
    `exact duplicate groups: ${r.exact_duplicates.length}; near duplicates: ${r.near_duplicates.length}`,
    `same picture in two classes: ${r.label_conflicts.length}; leakage between splits: ${r.leakage.length}`,
  ];
  box.replaceChildren(...lines.map((t) => el("p", { textContent: t })));
  const problems = [
    ...r.bad_files.map((b) => ({ text: `${b.path}: ${b.kind} (${b.error})`, paths: [b.path] })),
    ...r.label_conflicts.map((g) => ({ text: "different classes: " + g.files.map((f) => f.path).join(", "),
      paths: g.files.map((f) => f.path) })),
    ...r.exact_duplicates.map((g) => ({ text: "duplicates: " + g.map((f) => f.path).join(", "),
      paths: g.slice(1).map((f) => f.path) })),
  ];
  const list = el("ul", {}, ...problems.slice(0, 40).map((p) => el("li", {}, p.text + " ",
    ...p.paths.map((path) => excludeButton(path)))));
  box.append(list);
}

function initGather() {
  $("class-form").addEventListener("submit", guarded(async (e) => {
    e.preventDefault();
    await api("/api/classes", { json: { name: $("new-class").value.trim() } });
    $("new-class").value = "";
    await refreshClasses();
  }));
  $("check").addEventListener("click", guarded(check));
  $("undo").addEventListener("click", guarded(async () => { await api("/api/undo", { method: "POST" }); await refreshClasses(); }));
  // Paste an image: it goes to the class last clicked (or the first).
  document.addEventListener("paste", guarded(async (e) => {
    if ($("tab-gather").hidden) return;
    const files = [...e.clipboardData.files].filter((f) => f.type.startsWith("image/"));
    const name = state.pasteInto || (state.classes[0] && state.classes[0].name);
    if (files.length && name) await upload(name, files);
  }));
  onClasses((classes) => fillClassSelect($("cam-class"), classes));
  initWebcam();
}

// The webcam: hold the button to capture a frame every 150 ms into the chosen class (as Teachable Machine does).
export async function startCamera(video) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: true });
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
}

export function frameBlob(video, size = 224) {
  const canvas = el("canvas", { width: size, height: size });
  const side = Math.min(video.videoWidth, video.videoHeight);
  canvas.getContext("2d").drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - side) / 2, side, side,
    0, 0, size, size);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function initWebcam() {
  const video = $("cam");
  $("cam-start").addEventListener("click", guarded(async () => {
    await startCamera(video);
    $("cam-hold").disabled = false;
  }));
  let timer = null;
  const frames = [];
  const stop = guarded(async () => {
    if (timer === null) return;
    clearInterval(timer);
    timer = null;
    const name = $("cam-class").value;
    const files = frames.splice(0).map((b, i) => new File([b], `webcam-${Date.now()}-${i}.png`, { type: "image/png" }));
    $("cam-note").textContent = `${files.length} frames added to ${name}`;
    if (files.length && name) await upload(name, files);
  });
  $("cam-hold").addEventListener("pointerdown", () => {
    timer = setInterval(async () => frames.push(await frameBlob(video)), 150);
  });
  $("cam-hold").addEventListener("pointerup", stop);
  $("cam-hold").addEventListener("pointerleave", stop);
}

function initTabs() {
  const buttons = [...document.querySelectorAll("#tabs button")];
  const show = (name) => {
    buttons.forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
    document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== "tab-" + name; });
    document.dispatchEvent(new CustomEvent("studio-tab", { detail: name }));
  };
  buttons.forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
}

initTabs();
initGather();
initTrain();
initFix();
initShip();
guarded(refreshClasses)();
