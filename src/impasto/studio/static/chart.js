// The live loss curve: the total and each term against the step, on a log scale, with the
// coarse-to-fine scale changes marked. Drawn on a canvas, at most once per animation frame.

const COLOURS = { loss: "#222", content: "#1f5fa8", style: "#c0392b", tv: "#7d8f2a", temporal: "#8e44ad" };

export class LossChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.reset();
  }

  reset() {
    this.points = [];      // {step, loss, terms, scale}
    this.total = 0;
    this.pending = false;
    this.draw();
  }

  add(ev) {
    this.points.push({ step: ev.step, loss: ev.loss, terms: ev.terms || {}, scale: ev.scale });
    this.total = ev.total_steps;
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || c.width, h = c.clientHeight || c.height;
    if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = "11px system-ui, sans-serif";
    const pts = this.points;
    if (!pts.length) {
      g.fillStyle = "#999";
      g.fillText("the loss curve appears here once the run takes its first step", 12, h / 2);
      return;
    }
    const names = ["loss", ...Object.keys(pts[pts.length - 1].terms)];
    const value = (p, n) => (n === "loss" ? p.loss : p.terms[n]);
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) for (const n of names) {
      const v = value(p, n);
      if (v > 0 && isFinite(v)) { lo = Math.min(lo, Math.log10(v)); hi = Math.max(hi, Math.log10(v)); }
    }
    if (!isFinite(lo)) { lo = -1; hi = 1; }
    if (hi - lo < 0.5) { lo -= 0.25; hi += 0.25; }
    const L = 44, R = 10, T = 24, B = 20;
    const xmax = Math.max(this.total, pts[pts.length - 1].step, 2);
    const X = s => L + (w - L - R) * (s - 1) / (xmax - 1);
    const Y = v => T + (h - T - B) * (1 - (Math.log10(v) - lo) / (hi - lo));
    // axes and decades
    g.strokeStyle = "#ddd"; g.fillStyle = "#888"; g.lineWidth = 1;
    for (let d = Math.ceil(lo); d <= Math.floor(hi); d++) {
      const y = Y(10 ** d);
      g.beginPath(); g.moveTo(L, y); g.lineTo(w - R, y); g.stroke();
      g.fillText(`1e${d}`, 4, y + 4);
    }
    g.fillText("step", (L + w - R) / 2 - 10, h - 5);
    g.fillText("1", L - 3, h - 5);
    g.textAlign = "right"; g.fillText(String(xmax), w - R, h - 5); g.textAlign = "left";
    // scale changes
    g.setLineDash([4, 3]); g.strokeStyle = "#b9892b";
    for (let i = 1; i < pts.length; i++) {
      if (pts[i].scale !== pts[i - 1].scale) {
        const x = X(pts[i].step);
        g.beginPath(); g.moveTo(x, T); g.lineTo(x, h - B); g.stroke();
      }
    }
    g.setLineDash([]);
    // curves
    names.forEach((n, k) => {
      g.strokeStyle = COLOURS[n] || "#555"; g.lineWidth = n === "loss" ? 2 : 1.2;
      g.beginPath();
      let started = false;
      for (const p of pts) {
        const v = value(p, n);
        if (!(v > 0 && isFinite(v))) { started = false; continue; }
        if (started) g.lineTo(X(p.step), Y(v)); else { g.moveTo(X(p.step), Y(v)); started = true; }
      }
      g.stroke();
      g.fillStyle = COLOURS[n] || "#555";            // the legend, above the plot
      g.fillRect(L + k * 80, 8, 12, 3);
      g.fillText(n, L + k * 80 + 16, 13);
    });
  }
}
