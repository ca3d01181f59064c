// The history: every finished run, read by the server from its run record. Cards with a
// thumbnail; open one for its image, downloads, options and timings; pick two to compare;
// load one's images and options back into the controls.

const $ = id => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;     // CSSOM: allowed by the page's CSP
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}
export { el };

export const secs = s => (typeof s !== "number" ? "—" : s < 60 ? `${s.toFixed(1)} s`
  : `${Math.floor(Math.round(s) / 60)} min ${Math.round(s) % 60} s`);
export const show = v => {
  if (v === null || v === undefined) return "—";
  if (Array.isArray(v)) return v.join(", ");
  if (typeof v === "number") return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : String(+v.toPrecision(5));
  return String(v);
};

// why a run ended (the run record's stop_reason), in words
const STOPS = { budget: "step budget used", converged: "converged", "no-improvement": "no improvement",
  "non-finite": "the loss became non-finite", interrupted: "stopped", time: "time budget reached" };
export const stopText = r => (r ? STOPS[r] || r : "—");

// the badge of a finished run: stopped by hand, or ended by its time budget
function badge(e) {
  const reason = (e.result || {}).stop_reason;
  if (e.state === "stopped") return el("span", { class: "badge stopped" }, "stopped");
  if (reason === "time") return el("span", { class: "badge time", title: stopText(reason) }, "time");
  return null;
}

function title(e) {
  const i = e.inputs || {};
  const content = i.content ? i.content.name : e.task;
  if (i.mask) return `${content} × regions (${(i.region_styles || []).length})`;
  const styles = (i.styles || []).map(s => s.name).join(" + ");
  return styles ? `${content} × ${styles}` : content;
}

function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

export class Gallery {
  // isDefault(name, value, options): true or false, or null for an option the page does not show
  constructor({ api, isDefault, onLoad, onError }) {
    this.api = api; this.isDefault = isDefault; this.onLoad = onLoad; this.onError = onError;
    this.entries = []; this.picked = [];
    $("compare").addEventListener("click", () => this.compare());
  }

  async refresh() {
    try {
      this.entries = (await this.api("/api/history")).runs.filter(e => e.state !== "unreadable");
    } catch (err) { this.onError(err.message); return; }
    this.picked = this.picked.filter(id => this.entries.some(e => e.id === id));
    this.render();
  }

  render() {
    const g = $("gallery");
    g.replaceChildren();
    if (!this.entries.length) g.append(el("p", { class: "empty" }, "Finished runs appear here."));
    for (const e of this.entries) {
      const o = e.options || {}, r = e.result || {}, t = e.timings || {};
      const pick = el("input", { type: "checkbox", class: "pick", title: "compare", "aria-label": "pick to compare" });
      pick.checked = this.picked.includes(e.id);
      pick.addEventListener("change", () => this.pick(e.id, pick.checked));
      const card = el("div", { class: "card" + (pick.checked ? " picked" : ""), "data-id": e.id },
        el("img", { src: e.urls.thumb + "?v=" + e.finished, alt: title(e), loading: "lazy", onclick: () => this.open(e) }),
        pick,
        el("div", { class: "title", title: title(e) }, title(e)),
        el("div", {}, `${o.size}px · ${r.steps} steps · ${secs(t.total_s)}${o.time ? " of " + o.time : ""}`),
        el("div", {}, `sw ${show(o.style_weight)} · cw ${show(o.content_weight)}${o.preserve_color !== "none" ? " · " + o.preserve_color : ""}`),
        el("div", {}, `loss ${show(r.loss)} `, badge(e),
          " ", el("span", { class: "muted" }, new Date(e.finished * 1000).toLocaleTimeString())));
      g.append(card);
    }
    $("compare").disabled = this.picked.length !== 2;
  }

  pick(id, on) {
    this.picked = this.picked.filter(x => x !== id);
    if (on) this.picked.push(id);
    while (this.picked.length > 2) this.picked.shift();
    this.render();
  }

  optionRows(options) {
    const rows = Object.entries(options).filter(([k, v]) => this.isDefault(k, v, options) !== null)
      .map(([k, v]) => ({ k, v, changed: !this.isDefault(k, v, options) }));
    rows.sort((a, b) => b.changed - a.changed);
    return el("table", { class: "opts" }, rows.map(r => el("tr", { class: r.changed ? "changed" : "" }, el("td", {}, r.k), el("td", {}, show(r.v)))));
  }

  open(e) {
    const r = e.result || {}, t = e.timings || {}, i = e.inputs || {};
    const inputs = [["content", i.content && i.content.name], ...(i.styles || []).map((s, k) => [`style ${k + 1}`, s.name]),
      ...(i.region_styles || []).map(([c, s]) => [`region #${c}`, s ? s.name : "none"])];
    const body = el("div", { class: "detail" },
      el("div", {}, el("img", { src: e.urls.image + "?v=" + e.finished, alt: title(e) })),
      el("div", {},
        el("h2", {}, title(e), badge(e)),
        el("div", { class: "links" },
          el("a", { href: e.urls.image + "?download=1", download: "" }, "Download PNG"),
          el("a", { href: e.urls.record + "?download=1", download: "" }, "Download record"),
          el("a", { href: e.urls.record, target: "_blank" }, "Open record")),
        el("button", { type: "button", class: "primary", id: "load-run", onclick: () => { $("detail").close(); this.onLoad(e); } }, "Load into controls"),
        el("h3", {}, "Result"),
        el("table", { class: "opts" },
          el("tr", {}, el("td", {}, "loss"), el("td", {}, show(r.loss))),
          ...Object.entries(r.terms || {}).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, show(v)))),
          el("tr", {}, el("td", {}, "steps"), el("td", {}, show(r.steps))),
          el("tr", {}, el("td", {}, "stop"), el("td", { "data-stop": r.stop_reason || "" }, stopText(r.stop_reason))),
          el("tr", {}, el("td", {}, "time"), el("td", {}, `${secs(t.total_s)} (setup ${secs(t.setup_s)}, optimise ${secs(t.optimise_s)})`)),
          el("tr", {}, el("td", {}, "on"), el("td", {}, `${e.precision} on ${e.device}`)),
          el("tr", {}, el("td", {}, "scales"), el("td", {}, (e.schedule || []).map(([s, n]) => `${s}px ×${n}`).join(" → ")))),
        el("h3", {}, "Inputs"),
        el("table", { class: "opts" }, inputs.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, show(v))))),
        el("h3", {}, "Options (changed first)"), this.optionRows(e.options || {})));
    $("detail-body").replaceChildren(body);
    $("detail").showModal();
  }

  compare() {
    const [a, b] = this.picked.map(id => this.entries.find(e => e.id === id));
    if (!a || !b) return;
    const keys = [...new Set([...Object.keys(a.options), ...Object.keys(b.options)])]
      .filter(k => !same(a.options[k], b.options[k]) && this.isDefault(k, a.options[k], a.options) !== null);
    const row = (k, x, y) => el("tr", { class: "changed" }, el("td", {}, k), el("td", {}, show(x)), el("td", {}, show(y)));
    const body = el("div", {},
      el("div", { class: "compare" },
        ...[a, b].map(e => el("figure", {}, el("img", { src: e.urls.image + "?v=" + e.finished, alt: title(e) }),
          el("figcaption", { class: "muted" }, `${title(e)} · loss ${show(e.result.loss)} · ${secs(e.timings.total_s)}`)))),
      el("h3", {}, keys.length ? "What differs" : "Same options"),
      el("table", { class: "opts" },
        el("tr", {}, el("td", {}, ""), el("td", {}, "left"), el("td", {}, "right")),
        keys.map(k => row(k, a.options[k], b.options[k])),
        row("inputs", title(a), title(b)),
        row("final loss", a.result.loss, b.result.loss), row("steps taken", a.result.steps, b.result.steps),
        row("time", secs(a.timings.total_s), secs(b.timings.total_s))));
    $("compare-body").replaceChildren(body);
    $("compare-dialog").showModal();
  }
}
