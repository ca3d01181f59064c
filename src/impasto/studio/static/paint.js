// Region painting: a colour mask drawn with a brush over the content image. The mask lives
// in an offscreen canvas with exact colours (unpainted = black, the "rest" region); the canvas
// over the photo shows it half transparent. On export every pixel is snapped to the nearest
// palette colour, so the brush's soft edges never make colours the server does not know.

export const PALETTE = [
  { hex: "000000", name: "rest (unpainted)" },
  { hex: "ff0000", name: "red" },
  { hex: "0000ff", name: "blue" },
  { hex: "00ff00", name: "green" },
  { hex: "ffff00", name: "yellow" },
];
const MASK_SIDE = 512;
const rgb = hex => [0, 2, 4].map(i => parseInt(hex.slice(i, i + 2), 16));

export class Painter {
  constructor(overlay, onChange) {
    this.overlay = overlay;
    this.onChange = onChange || (() => {});
    this.mask = document.createElement("canvas");
    this.mask.getContext("2d", { willReadFrequently: true });   // read back on every stroke
    this.colour = PALETTE[1].hex;
    this.size = 40;
    this.painted = false;
    this.last = null;
    overlay.addEventListener("pointerdown", e => this.down(e));
    overlay.addEventListener("pointermove", e => this.move(e));
    for (const t of ["pointerup", "pointerleave", "pointercancel"]) overlay.addEventListener(t, () => this.up());
  }

  // a fresh black mask at the content's aspect ratio
  setSize(width, height) {
    const s = MASK_SIDE / Math.max(width, height);
    this.mask.width = this.overlay.width = Math.max(1, Math.round(width * s));
    this.mask.height = this.overlay.height = Math.max(1, Math.round(height * s));
    this.clear();
  }

  clear() {
    const g = this.mask.getContext("2d");
    g.fillStyle = "#000"; g.fillRect(0, 0, this.mask.width, this.mask.height);
    this.painted = false;
    this.render();
    this.onChange();
  }

  // an existing mask image (a run from the history), drawn to fit
  async load(url) {
    const img = new Image();
    img.src = url;
    await img.decode();
    const g = this.mask.getContext("2d");
    g.drawImage(img, 0, 0, this.mask.width, this.mask.height);
    this.painted = true;
    this.snap();
    this.render();
    this.onChange();
  }

  point(e) {
    const r = this.overlay.getBoundingClientRect();
    return [(e.clientX - r.left) * this.mask.width / r.width, (e.clientY - r.top) * this.mask.height / r.height];
  }

  down(e) { this.overlay.setPointerCapture(e.pointerId); this.last = this.point(e); this.stroke(this.last); }
  move(e) { if (this.last) { const p = this.point(e); this.stroke(p); this.last = p; } }
  up() { if (this.last) { this.last = null; this.onChange(); } }

  stroke(p) {
    const g = this.mask.getContext("2d");
    const k = this.mask.width / (this.overlay.getBoundingClientRect().width || this.mask.width);
    g.strokeStyle = g.fillStyle = "#" + this.colour;
    g.lineCap = g.lineJoin = "round";
    g.lineWidth = this.size * k;
    g.beginPath(); g.moveTo(...this.last); g.lineTo(...p); g.stroke();
    g.beginPath(); g.arc(p[0], p[1], this.size * k / 2, 0, 2 * Math.PI); g.fill();
    this.painted = true;
    this.render();
  }

  // snap every pixel of the mask to its nearest palette colour; the colours present
  snap() {
    const g = this.mask.getContext("2d");
    const data = g.getImageData(0, 0, this.mask.width, this.mask.height);
    const pal = PALETTE.map(p => rgb(p.hex)), d = data.data, present = new Set();
    for (let i = 0; i < d.length; i += 4) {
      let best = 0, bestD = Infinity;
      for (let k = 0; k < pal.length; k++) {
        const dr = d[i] - pal[k][0], dg = d[i + 1] - pal[k][1], db = d[i + 2] - pal[k][2];
        const dist = dr * dr + dg * dg + db * db;
        if (dist < bestD) { bestD = dist; best = k; }
      }
      d[i] = pal[best][0]; d[i + 1] = pal[best][1]; d[i + 2] = pal[best][2]; d[i + 3] = 255;
      present.add(PALETTE[best].hex);
    }
    g.putImageData(data, 0, 0);
    return PALETTE.map(p => p.hex).filter(h => present.has(h));
  }

  // the overlay: painted colours half transparent, the rest clear
  render() {
    const src = this.mask.getContext("2d").getImageData(0, 0, this.mask.width, this.mask.height);
    const d = src.data;
    for (let i = 0; i < d.length; i += 4) d[i + 3] = d[i] + d[i + 1] + d[i + 2] < 60 ? 0 : 150;
    this.overlay.getContext("2d").putImageData(src, 0, 0);
  }

  colours() { return this.snap(); }

  // the snapped mask as a PNG blob, and the colours in it
  async export() {
    const colours = this.snap();
    this.render();
    const blob = await new Promise(res => this.mask.toBlob(res, "image/png"));
    return { blob, colours };
  }
}
