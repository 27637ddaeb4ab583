// Understand and fix: a run's evaluation (per-class precision and recall, the confusion matrix), a cell's
// images with their heat maps, the worst mistakes, and the fixes: relabel, exclude, keep (all undoable).
import { $, api, el, fillClassSelect, guarded, onClasses, refreshClasses, state, thumbUrl } from "./studio.js";

const fix = { evaluation: null };

export async function fillRuns(select) {
  const { runs } = await api("/api/runs");
  const current = select.value;
  select.replaceChildren(...runs.map((r) => new Option(r.name, r.name)));
  if (runs.some((r) => r.name === current)) select.value = current;
  return runs;
}

const pct = (v) => (100 * v).toFixed(1) + "%";

function drawEvaluation(e) {
  fix.evaluation = e;
  $("eval-note").replaceChildren(`accuracy ${pct(e.accuracy)} on ${e.images} images` +
    (e.skipped ? ` (${e.skipped} moved or unreadable since, skipped)` : "") + ". Same as: ",
  el("code", { textContent: e.command }));
  $("per-class").replaceChildren(
    el("tr", {}, ...["class", "precision", "recall", "images"].map((t) => el("th", { textContent: t }))),
    ...e.per_class.map((c) => el("tr", {}, el("td", { textContent: c.name }), el("td", { textContent: pct(c.precision) }),
      el("td", { textContent: pct(c.recall) }), el("td", { textContent: String(c.support) }))));
  const head = el("tr", {}, el("th", { textContent: "true \\ predicted" }),
    ...e.class_names.map((n) => el("th", { textContent: n })));
  const max = Math.max(1, ...e.confusion.flat());
  const rows = e.confusion.map((row, i) => el("tr", {}, el("th", { textContent: e.class_names[i] }),
    ...row.map((count, j) => {
      const td = el("td", { textContent: String(count), className: i === j ? "diag" : "" });
      td.dataset.true = String(i);
      td.dataset.pred = String(j);
      const shade = count / max;
      td.style.background = i === j ? `rgba(47, 111, 222, ${0.1 + 0.5 * shade})` : `rgba(217, 72, 15, ${count ? 0.15 + 0.6 * shade : 0})`;
      td.addEventListener("click", guarded(() => showCell(i, j, td)));
      return td;
    })));
  $("confusion").replaceChildren(head, ...rows);
}

function itemCard(item, run) {
  const card = el("div", { className: "item" });
  card.dataset.path = item.path;
  const heat = el("img", { src: `/api/runs/${encodeURIComponent(run)}/heatmap?path=${encodeURIComponent(item.path)}`,
    alt: "heat map", title: "where the model looked (heat map)" });
  const relabel = el("select", {});
  relabel.setAttribute("aria-label", "move to class");
  fillClassSelect(relabel, state.classes, false);
  relabel.value = item.predicted;
  const move = el("button", { type: "button", textContent: "relabel", className: "relabel" });
  const done = async (text) => { card.classList.add("done"); card.querySelector(".status").textContent = text; await refreshClasses(); };
  move.addEventListener("click", guarded(async () => {
    const answer = await api("/api/images/move", { json: { paths: [item.path], to: relabel.value } });
    await done("moved to " + answer.change.moves[0].dst);
  }));
  const exclude = el("button", { type: "button", textContent: "exclude" });
  exclude.addEventListener("click", guarded(async () => {
    await api("/api/images/move", { json: { paths: [item.path], to: null } });
    await done("excluded");
  }));
  const keep = el("button", { type: "button", textContent: "keep" });
  keep.title = "the label is right: leave it and hide it from the mistakes";
  keep.addEventListener("click", guarded(async () => { await api("/api/images/keep", { json: { paths: [item.path] } }); await done("kept"); }));
  card.append(
    el("div", { className: "pics" }, el("img", { src: thumbUrl(item.path), alt: item.path, title: item.path }), heat),
    el("div", { textContent: `${item.label} → ${item.predicted} (${pct(item.confidence)})` }),
    el("div", { className: "muted", textContent: item.path.split("/").pop() }),
    el("div", { className: "actions" }, relabel, move, exclude, keep),
    el("div", { className: "status small muted" }));
  return card;
}

async function showCell(i, j, td) {
  document.querySelectorAll("#confusion td.selected").forEach((c) => c.classList.remove("selected"));
  td.classList.add("selected");
  const e = fix.evaluation;
  const run = $("run").value;
  const { images } = await api(`/api/runs/${encodeURIComponent(run)}/cell?true=${i}&predicted=${j}&scope=${e.scope}`);
  $("cell-title").textContent = `${e.class_names[i]} predicted as ${e.class_names[j]}: ${images.length} image(s)`;
  $("cell-images").replaceChildren(...images.slice(0, 60).map((item) => itemCard(item, run)));
}

async function evaluate() {
  const run = $("run").value;
  if (!run) throw new Error("no trained run yet: train one first");
  $("eval-note").textContent = "evaluating...";
  drawEvaluation(await api(`/api/runs/${encodeURIComponent(run)}/evaluation?scope=${$("scope").value}&refresh=true`));
}

async function worst() {
  const run = $("run").value;
  const { images } = await api(`/api/runs/${encodeURIComponent(run)}/worst?n=24&scope=${$("scope").value}`);
  $("worst").replaceChildren(...(images.length ? images.map((item) => itemCard(item, run)) :
    [el("p", { className: "muted", textContent: "no mistakes left to look at" })]));
}

export function initFix() {
  $("evaluate").addEventListener("click", guarded(evaluate));
  $("worst-load").addEventListener("click", guarded(worst));
  document.addEventListener("studio-tab", (e) => { if (e.detail === "fix") guarded(() => fillRuns($("run")))(); });
  document.addEventListener("studio-job", (e) => { if (e.detail.status === "done") guarded(() => fillRuns($("run")))(); });
  onClasses(() => {});
}
