// impasto studio: the page. Every action is a call to the studio's JSON API (see the README);
// the option controls are built from GET /api/options, so the page holds no defaults.
import { LossChart } from "/static/chart.js";
import { Painter, PALETTE } from "/static/paint.js";
import { Gallery, el, show, stopText } from "/static/gallery.js";

const $ = id => document.getElementById(id);
const sleep = ms => new Promise(r => setTimeout(r, ms));
const state = {
  schema: null, defaults: {}, known: new Map(), content: null, styles: [], regionChoice: {},
  watch: null, es: null, previewUrl: null, previews: 0,
};
const controls = {};
let chart, painter, gallery;

// ---------------------------------------------------------------- talking to the server
async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store", ...opts });
  const json = (r.headers.get("content-type") || "").includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((json && json.error) || `${r.status} ${r.statusText}`);
  return json;
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
  document.querySelectorAll(".field.bad").forEach(f => f.classList.remove("bad"));
  for (const m of message.matchAll(/option --([a-z0-9-]+)/g)) {
    const f = document.querySelector(`.field[data-name="${m[1].replaceAll("-", "_")}"]`);
    if (f) f.classList.add("bad");
  }
}
function clearError() {
  $("error").hidden = true;
  document.querySelectorAll(".field.bad").forEach(f => f.classList.remove("bad"));
}

async function upload(blob, name) {
  const type = blob.type || "application/octet-stream";
  const im = await api("/api/uploads?name=" + encodeURIComponent(name || "image"),
    { method: "POST", headers: { "content-type": type }, body: blob });
  state.known.set(im.id, im);
  return im;
}

// ---------------------------------------------------------------- option controls
const text = v => (v === null || v === undefined ? "" : Array.isArray(v) ? v.join(", ") : String(v));

function buildControls(schema) {
  for (const f of schema.fields) {
    const id = "opt-" + f.name;
    let input;
    if (f.choices) {
      input = el("select", { id, name: f.name }, f.choices.map(c => el("option", { value: c }, c)));
      input.value = f.default;
    } else if (f.type === "bool") {
      input = el("input", { id, name: f.name, type: "checkbox" });
      input.checked = !!f.default;
    } else {
      input = el("input", { id, name: f.name, type: "text", spellcheck: "false",
        inputmode: f.type === "int" || f.type === "float" ? "decimal" : null,
        placeholder: f.default === null ? (f.default_text || "none") : "" });
      input.value = text(f.default);
    }
    input.addEventListener("input", () => markChanged(f.name));
    input.addEventListener("change", () => markChanged(f.name));
    const dflt = f.default === null ? (f.default_text || "none") : text(f.default);
    const field = el("div", { class: "field", "data-name": f.name },
      el("label", { for: id }, f.name.replaceAll("_", " "), el("span", { class: "default" }, "default " + dflt)),
      input, el("small", {}, f.help));
    controls[f.name] = { f, input };
    $(f.group === "main" ? "main-options" : "advanced-options").append(field);
  }
}

function parseValue(f, raw) {
  const num = t => (/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(t) ? Number(t) : t);
  if (f.type === "bool") return raw;
  const t = raw.trim();
  if (t === "") return f.optional ? null : "";
  if (f.type === "int") return /^[+-]?\d+$/.test(t) && Math.abs(Number(t)) <= Number.MAX_SAFE_INTEGER ? Number(t) : t;
  if (f.type === "float") return num(t);
  if (f.type === "list[str]") return t.split(/[\s,]+/).filter(Boolean);
  if (f.type === "list[float]") return t.split(/[\s,]+/).filter(Boolean).map(num);
  return t;
}

function value(name) {
  const { f, input } = controls[name];
  return parseValue(f, f.type === "bool" ? input.checked : input.value);
}

function markChanged(name) {
  const { f, input } = controls[name];
  input.classList.toggle("changed", JSON.stringify(value(name)) !== JSON.stringify(f.default));
}

// whether a run's option is the default (a model's own layers count as the default); null for
// an option the page does not show (another task's, or one the studio sets itself)
function isDefault(name, v, options) {
  if (!(name in state.defaults)) return name === "style_blend" ? v === null : null;
  const layers = state.schema.model_layers[options.model || state.defaults.model] || {};
  if (name in layers && JSON.stringify(v) === JSON.stringify(layers[name])) return true;
  return JSON.stringify(v) === JSON.stringify(state.defaults[name]);
}

// only the options that differ from the defaults are sent, as the command line does
function readOptions() {
  const out = {};
  for (const f of state.schema.fields) {
    const v = value(f.name);
    if (JSON.stringify(v) !== JSON.stringify(f.default)) out[f.name] = v;
  }
  return out;
}

function setControls(options) {
  const layers = state.schema.model_layers[options.model || state.defaults.model] || {};
  for (const f of state.schema.fields) {
    let v = f.name in options ? options[f.name] : f.default;
    if (f.name in layers && JSON.stringify(v) === JSON.stringify(layers[f.name])) v = null;  // the model's own
    const { input } = controls[f.name];
    if (f.type === "bool") input.checked = !!v; else input.value = text(v);
    markChanged(f.name);
  }
}

// ---------------------------------------------------------------- images
function setContent(src) {
  state.content = src;
  $("content-img").src = src.url;
  $("content-view").hidden = false;
  $("content-name").textContent = `${src.name} · ${src.width}×${src.height}`;
  painter.setSize(src.width, src.height);
}

function addStyle(src, weight = 1) {
  if (!state.styles.some(s => s.id === src.id)) state.styles.push({ ...src, weight });
  for (const p of PALETTE.slice(1)) if (!(p.hex in state.regionChoice)) state.regionChoice[p.hex] = src.id;
  renderStyles();
}

function renderStyles() {
  const list = $("styles-list");
  list.replaceChildren(...state.styles.map((s, k) => {
    const range = el("input", { type: "range", min: "0", max: "1", step: "0.05", "aria-label": "blend weight of " + s.name });
    range.value = s.weight;
    const label = el("span", { class: "muted" }, "weight " + s.weight);
    range.addEventListener("input", () => { s.weight = Number(range.value); label.textContent = "weight " + s.weight; });
    return el("div", { class: "style-item" }, el("img", { src: s.url, alt: s.name }),
      el("div", {}, el("div", { class: "name", title: s.name }, s.name), state.styles.length > 1 && !regionsOn() ? [range, label] : null),
      el("button", { type: "button", title: "remove", "aria-label": "remove " + s.name, onclick: () => { state.styles.splice(k, 1); renderStyles(); } }, "×"));
  }));
  renderRegions();
}

async function takeFiles(files, role) {
  clearError();
  for (const file of files) {
    try {
      const im = await upload(file, file.name);
      if (role === "content") { setContent(im); break; }
      addStyle(im);
    } catch (err) { showError(err.message); }
  }
}

function dropZone(zone, input, role) {
  input.addEventListener("change", () => { takeFiles([...input.files], role); input.value = ""; });
  zone.addEventListener("dragover", e => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", e => { e.preventDefault(); zone.classList.remove("over"); takeFiles([...e.dataTransfer.files], role); });
}

function renderExamples(examples) {
  $("examples").replaceChildren(...examples.map(x => el("div", { class: "example" },
    el("img", { src: x.url, alt: x.name, title: x.name }), x.name, el("br"),
    el("button", { type: "button", onclick: () => setContent(x) }, "content"),
    el("button", { type: "button", onclick: () => addStyle(x) }, "+ style"))));
}

// ---------------------------------------------------------------- regions
function regionsOn() { return $("regions-on").checked; }

function renderRegions() {
  const present = new Set(painter ? painter.snapColours || [] : []);
  $("region-styles").replaceChildren(...PALETTE.map(p => {
    const select = el("select", { "aria-label": "style of " + p.name, "data-colour": p.hex },
      el("option", { value: "" }, "none (keep the photo)"), state.styles.map(s => el("option", { value: s.id }, s.name)));
    select.value = state.regionChoice[p.hex] || "";
    select.addEventListener("change", () => { state.regionChoice[p.hex] = select.value; });
    return el("div", { class: "region-row" + (present.has(p.hex) ? "" : " muted") },
      el("span", { class: "swatch", style: `background:#${p.hex}` }), el("span", {}, p.name + (present.has(p.hex) ? "" : " (not painted)")), select);
  }));
}

function setupRegions() {
  painter = new Painter($("mask-overlay"), () => { painter.snapColours = painter.colours(); painter.render(); renderRegions(); });
  $("brushes").replaceChildren(...PALETTE.map(p => {
    const b = el("button", { type: "button", class: "brush" + (p.hex === painter.colour ? " on" : ""), title: p.name, "aria-label": "brush " + p.name, "data-colour": p.hex, style: `background:#${p.hex}` });
    b.addEventListener("click", () => { painter.colour = p.hex; document.querySelectorAll(".brush").forEach(x => x.classList.toggle("on", x === b)); });
    return b;
  }));
  $("brush-size").addEventListener("input", e => { painter.size = Number(e.target.value); });
  $("mask-clear").addEventListener("click", () => painter.clear());
  $("regions-on").addEventListener("change", () => {
    $("region-tools").hidden = !regionsOn();
    $("mask-overlay").hidden = !regionsOn();
    if (regionsOn()) $("regions-panel").open = true;
    renderStyles();             // blend weights are for styles over the whole picture
  });
  state.regionChoice["000000"] = "";
}

// ---------------------------------------------------------------- starting and stopping
async function start() {
  clearError();
  if (!state.content) return showError("Choose a content image first: drop a photo, or pick an example's \"content\".");
  const body = { task: "transfer", content: state.content.id, options: readOptions() };
  try {
    if (regionsOn()) {
      const { blob, colours } = await painter.export();
      const mask = await upload(blob, "mask.png");
      body.mask = mask.id;
      body.region_styles = colours.map(h => [h, state.regionChoice[h] || null]);
    } else {
      if (!state.styles.length) return showError("Add a style image: drop a painting, or pick an example's \"+ style\".");
      body.styles = state.styles.map(s => s.id);
      if (state.styles.length > 1) body.options.style_blend = state.styles.map(s => s.weight);
    }
    $("start").disabled = true;
    const run = await api("/api/runs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    follow(run);
  } catch (err) { showError(err.message); }
  finally { $("start").disabled = false; refreshQueue(); }
}

async function stop(id) {
  try { await api(`/api/runs/${id}/cancel`, { method: "POST" }); } catch (err) { showError(err.message); }
  refreshQueue();
}

// the shown run's (or a history run's) images and options back in the controls
async function loadRequest({ content, styles = [], options = {}, mask = null, region_styles = [] }, quiet = false) {
  clearError();
  const find = id => state.known.get(id);
  if (!find(content)) await refreshKnown();
  const c = find(content);
  if (!c) return showError("That run's content image is no longer in the studio's folder.");
  setContent(c);
  state.styles = [];
  for (const id of [...styles, ...region_styles.map(r => r[1]).filter(Boolean)]) if (find(id)) addStyle(find(id));
  const weights = options.style_blend;
  if (weights) state.styles.forEach((s, k) => { s.weight = weights[k] ?? 1; });
  renderStyles();
  $("regions-on").checked = !!mask;
  $("regions-on").dispatchEvent(new Event("change"));
  if (mask && find(mask)) {
    for (const [h, id] of region_styles) state.regionChoice[h.replace("#", "").toLowerCase()] = id || "";
    await painter.load(find(mask).url);
  }
  setControls(options);
  if (quiet) return;
  $("hint").textContent = "Loaded. Change what you like, then Start.";
  $("controls").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function historyRequest(e) {
  const i = e.inputs || {};
  return { content: i.content && i.content.id, styles: (i.styles || []).map(s => s.id), options: e.options,
    mask: i.mask && i.mask.id, region_styles: (i.region_styles || []).map(([c, s]) => [c, s && s.id]) };
}

// ---------------------------------------------------------------- following a run
function setRunState(s, note = "") {
  if (state.watch) state.watch.state = s;
  const b = $("run-state");
  b.className = "badge " + s;
  b.textContent = s + (note ? " · " + note : "");
  const active = s === "running" || s === "queued";
  $("stop").disabled = !active;
  $("repeat").disabled = !state.watch;
}

function follow(run) {
  if (state.es) state.es.close();
  state.watch = { id: run.id, state: run.state, request: run.request };
  chart.reset();
  delete $("run-state").dataset.stop;
  $("stats").replaceChildren();
  $("plan").textContent = "";
  $("progress").value = 0;
  $("preview").removeAttribute("src");
  $("stage-empty").hidden = false;
  $("stage-empty").textContent = "Waiting for the first step…";
  setRunState(run.state);
  const es = new EventSource(run.urls.events);
  es.onmessage = m => onEvent(run.id, JSON.parse(m.data));
  state.es = es;
  if (run.state === "running") previewLoop(run.id);
}

const watching = id => state.watch && state.watch.id === id;

function onEvent(id, ev) {
  if (!watching(id)) return;
  if (ev.kind === "queued") setRunState("queued", `#${ev.position} in line`);
  else if (ev.kind === "started") { setRunState("running"); previewLoop(id); }
  else if (ev.kind === "plan") showPlan(ev);
  else if (ev.kind === "step") { chart.add(ev); showStep(ev); }
  else if (ev.kind === "done") {
    state.es.close();
    setRunState(ev.state, `${ev.steps} steps` + (ev.state === "stopped" ? `, best image kept (${ev.stopped_by || "stop"})` : `, ${stopText(ev.stop_reason)}`));
    $("run-state").dataset.stop = ev.stop_reason;
    const eta = document.querySelector("dd[data-stat='ETA']");
    if (eta) eta.textContent = "—";
    setPreview(ev.image + "?v=" + Date.now(), ev.steps);
    $("progress").value = 1;
    gallery.refresh();
  } else if (ev.kind === "failed") { state.es.close(); setRunState("failed"); showError(ev.error); }
  else if (ev.kind === "cancelled") { state.es.close(); setRunState("cancelled", "nothing was painted"); $("stage-empty").textContent = "Cancelled before the first step."; }
  refreshQueue();
}

const gib = b => (b / 2 ** 30).toFixed(1) + " GiB";
const dur = s => {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const t = Math.round(s);
  return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, "0")}s`;
};

function showPlan(p) {
  const scales = p.schedule.map(([s, n]) => `${s}px ×${n}`).join(" → ");
  $("plan").textContent = `${p.output[0]}×${p.output[1]} output · ${scales} · ${p.precision} on ${p.device} · estimated peak memory ${gib(p.peak_bytes)}` +
    (p.available_bytes ? ` (${gib(p.available_bytes)} free)` : "") + (p.seconds ? ` · about ${dur(p.seconds)}` : "");
  $("plan").dataset.peak = p.peak_bytes;
}

function showStep(ev) {
  $("progress").value = ev.step / ev.total_steps;
  const items = [["step", `${ev.step} / ${ev.total_steps}`], ["scale", `${ev.scale + 1} / ${ev.scales} (${ev.side} px)`],
    ["rate", ev.rate ? `${ev.rate.toFixed(2)} steps/s` : "—"], ["ETA", dur(ev.eta)], ["loss", show(ev.loss)],
    ...Object.entries(ev.terms).map(([k, v]) => [k, show(v)]), ["elapsed", dur(ev.elapsed)]];
  $("stats").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-stat": k }, v)]));
}

function setPreview(url, step) {
  const img = $("preview");
  const old = state.previewUrl;
  state.previewUrl = url.startsWith("blob:") ? url : null;
  img.src = url;
  img.dataset.step = step;
  $("stage-empty").hidden = true;
  if (old) setTimeout(() => URL.revokeObjectURL(old), 2000);
  return img.decode().catch(() => {});
}

// about once a second, and only after the last image arrived and was shown
async function previewLoop(id) {
  if (state.looping === id) return;
  state.looping = id;
  try {
    while (watching(id) && state.watch.state === "running") {
      const t0 = performance.now();
      try {
        const r = await fetch(`/api/runs/${id}/preview`, { cache: "no-store" });
        if (r.status === 200) {
          const blob = await r.blob();
          if (!(watching(id) && state.watch.state === "running")) break;
          await setPreview(URL.createObjectURL(blob), Number(r.headers.get("x-impasto-step")));
          state.previews += 1;
          $("preview").dataset.previews = state.previews;
        }
      } catch (err) { /* the next try will do */ }
      await sleep(Math.max(0, 1000 - (performance.now() - t0)));
    }
  } finally { if (state.looping === id) state.looping = null; }
}

// ---------------------------------------------------------------- queue and status
async function refreshQueue() {
  let runs;
  try { runs = (await api("/api/runs")).runs; } catch (err) { return; }
  const active = runs.filter(r => r.state === "running" || r.state === "queued").sort((a, b) => a.position - b.position);
  const ended = runs.filter(r => !(r.state === "running" || r.state === "queued")).slice(0, 4);
  $("status").textContent = `${active.filter(r => r.state === "running").length ? "computing" : "idle"} · ${active.filter(r => r.state === "queued").length} waiting`;
  const item = r => el("li", { class: watching(r.id) ? "watching" : "", "data-id": r.id, "data-state": r.state },
    el("a", { onclick: () => follow(r) }, `${r.state}${r.position ? " #" + r.position : ""}`),
    ` ${r.request.options.size || state.defaults.size}px`, r.last ? ` · step ${r.last.step}/${r.last.total_steps}` : "",
    r.error ? el("span", { class: "muted" }, " · " + r.error.slice(0, 80)) : "",
    r.state === "running" || r.state === "queued" ? el("button", { type: "button", onclick: () => stop(r.id) }, r.state === "queued" ? "cancel" : "stop") : null);
  $("queue").replaceChildren(...active.map(item), ...ended.map(item));
  if (!active.length && !ended.length) $("queue").append(el("li", { class: "muted none" }, "no runs yet in this session"));
  return runs;
}

async function refreshKnown() {
  const [ex, up] = await Promise.all([api("/api/examples"), api("/api/uploads")]);
  for (const x of [...ex.examples, ...up.uploads]) state.known.set(x.id, x);
  return ex.examples;
}

// ---------------------------------------------------------------- start-up
async function init() {
  $("error-close").addEventListener("click", clearError);
  chart = new LossChart($("loss-chart"));
  setupRegions();
  try {
    state.schema = await api("/api/options?task=transfer");
    for (const f of state.schema.fields) state.defaults[f.name] = f.default;
    buildControls(state.schema);
    renderExamples(await refreshKnown());
  } catch (err) { return showError("The studio did not answer: " + err.message); }
  dropZone($("content-drop"), $("content-file"), "content");
  dropZone($("style-drop"), $("style-file"), "style");
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => state.watch && stop(state.watch.id));
  $("repeat").addEventListener("click", () => state.watch && loadRequest(state.watch.request));
  gallery = new Gallery({ api, isDefault, onError: showError, onLoad: e => loadRequest(historyRequest(e)) });
  renderStyles();
  gallery.refresh();
  const runs = await refreshQueue();     // a run started before the page was opened is shown
  const live = (runs || []).filter(r => r.state === "running" || r.state === "queued").sort((a, b) => a.position - b.position)[0];
  if (live) {                 // the page was closed while it ran: show it, and what it was made of
    follow(live);
    await loadRequest(live.request, true);
  }
  setInterval(refreshQueue, 2000);
  document.body.dataset.ready = "1";
}

init();
