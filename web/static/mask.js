// The mask editor: a brush and an eraser over an image. The canvas has the image's natural
// pixels (the stylesheet scales it over the image), so the mask it gives has the image's size,
// which the service requires. What is painted is kept in the canvas's alpha channel; the mask
// sent is an opaque black-and-white PNG, white = repaint (the service's second convention).

const PAINT = "rgb(255, 40, 90)";  // shown at the canvas's CSS opacity over the image

export class MaskEditor {
  constructor(canvas, image, onChange = () => {}) {
    this.canvas = canvas;
    this.image = image;
    this.onChange = onChange;
    this.context = canvas.getContext("2d", { willReadFrequently: true });
    this.tool = "brush";
    this.size = 32;  // in displayed (CSS) pixels, so the brush feels the same at any image size
    this.last = null;
    this.source = null;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) canvas.addEventListener(type, () => this.up());
  }

  /** Shows an image (an object URL) and starts an empty mask of its natural size. */
  load(url) {
    if (url === this.source) return Promise.resolve();
    this.source = url;
    return new Promise((resolve) => {
      this.image.onload = () => {
        if (this.source !== url) return resolve();
        this.canvas.width = this.image.naturalWidth;
        this.canvas.height = this.image.naturalHeight;
        this.onChange();
        resolve();
      };
      this.image.onerror = () => resolve();
      this.image.src = url;
    });
  }

  point(event) {
    const box = this.canvas.getBoundingClientRect();
    return { x: (event.clientX - box.left) * (this.canvas.width / box.width),
      y: (event.clientY - box.top) * (this.canvas.height / box.height) };
  }

  brush() {
    const box = this.canvas.getBoundingClientRect();
    const ctx = this.context;
    ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = PAINT;
    ctx.lineWidth = this.size * (this.canvas.width / Math.max(box.width, 1));
    ctx.lineCap = ctx.lineJoin = "round";
    return ctx;
  }

  down(event) {
    if (event.button !== 0) return;
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    this.last = this.point(event);
    const ctx = this.brush();
    ctx.beginPath();
    ctx.arc(this.last.x, this.last.y, ctx.lineWidth / 2, 0, Math.PI * 2);
    ctx.fill();
  }

  move(event) {
    if (!this.last) return;
    const next = this.point(event);
    const ctx = this.brush();
    ctx.beginPath();
    ctx.moveTo(this.last.x, this.last.y);
    ctx.lineTo(next.x, next.y);
    ctx.stroke();
    this.last = next;
  }

  up() {
    if (!this.last) return;
    this.last = null;
    this.onChange();
  }

  clear() {
    this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.onChange();
  }

  invert() {
    const { width, height } = this.canvas;
    const pixels = this.context.getImageData(0, 0, width, height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      data[i] = 255; data[i + 1] = 40; data[i + 2] = 90;
      data[i + 3] = 255 - data[i + 3];
    }
    this.context.putImageData(pixels, 0, 0);
    this.onChange();
  }

  painted(alpha) { return alpha >= 128; }

  /** True when no pixel is painted (then no mask is sent). */
  isEmpty() {
    const data = this.context.getImageData(0, 0, this.canvas.width, this.canvas.height).data;
    for (let i = 3; i < data.length; i += 4) if (this.painted(data[i])) return false;
    return true;
  }

  /** The mask as an opaque black-and-white PNG of the image's size (white = repaint), or null when empty. */
  toBlob() {
    const { width, height } = this.canvas;
    const source = this.context.getImageData(0, 0, width, height).data;
    const out = document.createElement("canvas");
    out.width = width;
    out.height = height;
    const context = out.getContext("2d");
    const pixels = context.createImageData(width, height);
    let any = false;
    for (let i = 0; i < source.length; i += 4) {
      const value = this.painted(source[i + 3]) ? 255 : 0;
      any = any || value === 255;
      pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = value;
      pixels.data[i + 3] = 255;
    }
    if (!any) return Promise.resolve(null);
    context.putImageData(pixels, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }
}
