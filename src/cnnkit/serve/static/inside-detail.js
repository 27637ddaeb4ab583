// One feature map enlarged: the map, the filter that made it (GET /v1/inside/kernel) and, for the
// first convolution, the filter stepping over the input with the actual multiply-and-sum.
// Uses $, state and Draw from inside.js and inside-draw.js.
"use strict";

const Detail = (() => {
  let current = null;  // {layer, map, slide: {fc, f, pos} | null}
  let timer = null;    // the Play animation
  const kernels = new Map();  // "layer/channel" -> Promise of the kernel answer

  // The activations a Keras Conv2D can end in, as cnnkit.activations computes them.
  const erf = (x) => {  // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7
    const t = 1 / (1 + 0.3275911 * Math.abs(x));
    const y = 1 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) *
      Math.exp(-x * x);
    return x >= 0 ? y : -y;
  };
  const ACTIVATIONS = {
    linear: (z) => z,
    relu: (z) => Math.max(0, z),
    relu6: (z) => Math.min(6, Math.max(0, z)),
    leaky_relu: (z) => (z >= 0 ? z : 0.2 * z),
    elu: (z) => (z > 0 ? z : Math.expm1(z)),
    selu: (z) => 1.0507009873554805 * (z > 0 ? z : 1.6732632423543772 * Math.expm1(z)),
    gelu: (z) => 0.5 * z * (1 + erf(z / Math.SQRT2)),
    silu: (z) => z / (1 + Math.exp(-z)),
    swish: (z) => z / (1 + Math.exp(-z)),
    softplus: (z) => Math.log1p(Math.exp(z)),
    sigmoid: (z) => 1 / (1 + Math.exp(-z)),
    tanh: (z) => Math.tanh(z),
  };

  function setUp() {
    $("detail-close").addEventListener("click", () => $("detail").close());
    $("detail").addEventListener("close", stop);
    $("detail").addEventListener("keydown", (e) => {
      if (!current || !current.slide) return;
      if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
      if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
    });
    $("slide-prev").addEventListener("click", () => { stop(); step(-1); });
    $("slide-next").addEventListener("click", () => { stop(); step(1); });
    $("slide-play").addEventListener("click", () => (timer ? stop() : play()));
    $("big-map").addEventListener("mousemove", hover);
    $("big-map").addEventListener("click", jump);
  }

  function open(layer, index) {
    stop();
    const map = state.maps.get(layer.name)[index];
    current = { layer, map, slide: null };
    $("detail-title").textContent = layer.name + " \u00b7 channel " + map.channel;
    $("detail-text").textContent = describe(layer, map);
    const [h, w] = layer.maps.size;
    const big = $("big-map");
    big.width = 224;
    big.height = Math.max(16, Math.round((224 * h) / w));
    $("big-caption").textContent = "values " + Draw.fmt(map.low) + " to " + Draw.fmt(map.high) +
      " \u00b7 point at a pixel to read it";
    showKernel(layer, map.channel);
    setUpSlide(layer, map);
    drawBig();
    if (!$("detail").open) $("detail").showModal();
  }

  function describe(layer, map) {
    const [fh, fw] = layer.maps.full_size;
    const size = fh + "\u00d7" + fw;
    const shrunk = layer.maps.size[0] !== fh ? " (shown averaged down to " + layer.maps.size.join("\u00d7") + ")" : "";
    const texts = {
      conv: "Filter " + map.channel + " of " + layer.name + " (" + layer.detail + ") slid over the layer's input and " +
        "gave this " + size + " map" + shrunk + ": bright where the input looks like the filter.",
      activation: (layer.detail || layer.kind) + " applied to channel " + map.channel + " of the layer before: " +
        (/^relu/i.test(layer.detail || layer.kind) ? "negative responses become 0." : "each value is transformed on its own."),
      pool: "Pooling (" + layer.detail + ") of channel " + map.channel + ": each pixel summarizes a window of " +
        "the map before, so the map shrinks to " + size + shrunk + " and small shifts matter less.",
    };
    return (texts[layer.role] || layer.kind + " output, channel " + map.channel + ", " + size + shrunk) +
      " Mean |activation| " + Draw.fmt(map.activity) + ".";
  }

  // -- the map, large ---------------------------------------------------------------------------
  function drawBig() {
    const { layer, map } = current;
    const [h, w] = layer.maps.size;
    const small = Draw.paint(document.createElement("canvas"), map.values, h, w, map.low, map.high);
    const ctx = Draw.enlarge($("big-map"), small);
    const at = slideOutput();
    if (at) {  // the output pixel being computed (a fraction of a pixel if the map was averaged down)
      const [fh, fw] = layer.maps.full_size;
      const sx = $("big-map").width / fw;
      const sy = $("big-map").height / fh;
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#00e5ff";
      ctx.strokeRect(at[1] * sx, at[0] * sy, Math.max(3, sx), Math.max(3, sy));
    }
  }

  const sameSize = (layer) => layer.maps.size[0] === layer.maps.full_size[0] && layer.maps.size[1] === layer.maps.full_size[1];

  function pixelAt(e) {
    const canvas = $("big-map");
    const box = canvas.getBoundingClientRect();
    const [h, w] = current.layer.maps.size;
    const x = Math.floor(((e.clientX - box.left) / box.width) * w);
    const y = Math.floor(((e.clientY - box.top) / box.height) * h);
    return x >= 0 && y >= 0 && x < w && y < h ? [y, x] : null;
  }

  function hover(e) {
    const at = current && pixelAt(e);
    if (!at) return;
    const w = current.layer.maps.size[1];
    $("big-caption").textContent = "row " + at[0] + ", column " + at[1] + ": " + Draw.fmt(current.map.values[at[0] * w + at[1]]);
  }

  function jump(e) {
    const at = current && current.slide && sameSize(current.layer) && pixelAt(e);
    if (!at) return;
    const { fc } = current.slide;
    const r = at[0] - fc.origin[0];
    const c = at[1] - fc.origin[1];
    if (r < 0 || c < 0 || r >= fc.positions[0] || c >= fc.positions[1]) return;
    stop();
    current.slide.pos = r * fc.positions[1] + c;
    drawSlide();
  }

  // -- the filter ---------------------------------------------------------------------------------
  function fetchKernel(layer, channel) {
    const key = layer + "/" + channel;
    if (!kernels.has(key)) {
      const query = "?layer=" + encodeURIComponent(layer) + "&channel=" + channel;
      kernels.set(key, api("/v1/inside/kernel" + query).catch((e) => { kernels.delete(key); throw e; }));
    }
    return kernels.get(key);
  }

  async function showKernel(layer, channel) {
    const box = $("kernel");
    box.replaceChildren();
    box.dataset.loaded = "false";
    const caption = $("kernel-caption");
    if (!layer.source) {
      caption.textContent = "No single filter made this channel (it mixes several layers' outputs).";
      return;
    }
    caption.textContent = "loading the filter\u2026";
    let kernel;
    try {
      kernel = await fetchKernel(layer.source, channel);
    } catch (e) {
      caption.textContent = e.message;
      return;
    }
    if (!current || current.layer !== layer || current.map.channel !== channel) return;  // another map since
    const { shape, data } = Draw.f32(kernel.weights);
    const [shown, kh, kw] = shape;
    const bound = Math.max(...data.map(Math.abs)) || 1;
    const numbers = shown <= 3 && kh * kw <= 25;
    for (let i = 0; i < shown; i++) {
      const values = data.subarray(i * kh * kw, (i + 1) * kh * kw);
      box.append(numbers ? numberGrid(values, kh, kw, "w") : Draw.paint(el("canvas", "tap pixelated"), values, kh, kw, -bound, bound));
    }
    box.classList.toggle("numbers", numbers);
    const made = layer.source === layer.name ? "" : "made by ";
    caption.textContent = made + "filter " + channel + " of " + layer.source + ": " + kernel.inputs + " input channel" +
      (kernel.inputs === 1 ? "" : "s") + " \u00d7 " + kh + "\u00d7" + kw + " weights" +
      (kernel.bias === null ? "" : ", bias " + Draw.fmt(kernel.bias)) +
      (kernel.notes.length ? " (" + kernel.notes.join("; ") + ")" : "") + (numbers ? "" : "; blue negative, red positive");
    box.dataset.loaded = "true";
  }

  function numberGrid(values, h, w, kind) {
    const table = el("table", "nums " + kind);
    for (let y = 0; y < h; y++) {
      const row = el("tr");
      for (let x = 0; x < w; x++) {
        const v = values[y * w + x];
        const text = Draw.fmt(v);
        row.append(el("td", text.startsWith("-") ? "neg" : "", text));
      }
      table.append(row);
    }
    return table;
  }

  // -- the first convolution at work ----------------------------------------------------------------
  function setUpSlide(layer, map) {
    const fc = state.answer.first_conv;
    const f = fc && layer.name === fc.layer ? fc.filters.indexOf(map.channel) : -1;
    $("slide").hidden = f < 0;
    if (f < 0) return;
    if (!fc.decoded) fc.decoded = { kernels: Draw.f32(fc.kernels), bias: Draw.f32(fc.bias), patch: Draw.f32(fc.patch) };
    current.slide = { fc, f, pos: strongest(layer, map, fc) };
    const [rows, cols] = fc.positions;
    const [oh, ow] = fc.output_size;
    $("slide-text").textContent = "At each position the filter's weights multiply the input values under it, " +
      "the products are added up with the bias" + (fc.activation === "linear" ? "" : ", then " + fc.activation +
      " is applied") + ": one pixel of the map. " + (fc.normalized ? "The input values are the pixels after the " +
      "model's normalization, " : "The input values are the pixels (0 black to 1 white), ") +
      "with the layer's padding. " + (rows < oh || cols < ow ? "Shown: the centre " + rows + "\u00d7" + cols +
      " positions of " + oh + "\u00d7" + ow + "." : "");
    drawSlide();
  }

  // Start where the filter responds most: the clearest example of what it looks for.
  function strongest(layer, map, fc) {
    const [rows, cols] = fc.positions;
    const [h, w] = layer.maps.size;
    const [fh, fw] = layer.maps.full_size;
    const at = (p) => {  // the map's value at window position p (its averaged pixel if the map was shrunk)
      const y = Math.floor(((fc.origin[0] + Math.floor(p / cols)) * h) / fh);
      const x = Math.floor(((fc.origin[1] + (p % cols)) * w) / fw);
      return map.values[y * w + x];
    };
    let best = 0;
    for (let pos = 1; pos < rows * cols; pos++) if (at(pos) > at(best)) best = pos;
    return best;
  }

  function slideOutput() {
    if (!current || !current.slide) return null;
    const { fc, pos } = current.slide;
    const cols = fc.positions[1];
    return [fc.origin[0] + Math.floor(pos / cols), fc.origin[1] + (pos % cols)];
  }

  function step(delta) {
    if (!current || !current.slide) return;
    const { fc } = current.slide;
    const count = fc.positions[0] * fc.positions[1];
    current.slide.pos = (current.slide.pos + delta + count) % count;
    drawSlide();
  }

  function play() {
    $("slide-play").textContent = "Pause";
    timer = setInterval(() => step(1), 350);
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    $("slide-play").textContent = "Play";
  }

  // The multiply-and-sum at the current position, in double precision.
  function compute() {
    const { fc, f, pos } = current.slide;
    const { kernels: k, bias, patch } = fc.decoded;
    const [, perGroup, kh, kw] = k.shape;
    const [, ph, pw] = patch.shape;
    const group = Math.floor(current.map.channel / (current.layer.maps.total / fc.groups));
    const top = Math.floor(pos / fc.positions[1]) * fc.stride[0];
    const left = (pos % fc.positions[1]) * fc.stride[1];
    const channels = [];
    let sum = 0;
    for (let ci = 0; ci < perGroup; ci++) {
      const inputs = new Float64Array(kh * kw);
      const weights = k.data.subarray(((f * perGroup + ci) * kh) * kw, ((f * perGroup + ci + 1) * kh) * kw);
      const products = new Float64Array(kh * kw);
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const y = top + i * fc.dilation[0];
          const x = left + j * fc.dilation[1];
          inputs[i * kw + j] = patch.data[(group * perGroup + ci) * ph * pw + y * pw + x];
          products[i * kw + j] = inputs[i * kw + j] * weights[i * kw + j];
          sum += products[i * kw + j];
        }
      }
      channels.push({ inputs, weights, products, sum: products.reduce((a, b) => a + b, 0) });
    }
    const z = sum + bias.data[f];
    const activate = ACTIVATIONS[fc.activation];
    return { channels, sum, bias: bias.data[f], z, y: activate ? activate(z) : null, kh, kw, top, left };
  }

  function drawSlide() {
    const { fc } = current.slide;
    const result = compute();
    drawInput(result);
    drawBig();
    const [row, col] = slideOutput();
    $("slide-pos").textContent = "position " + (current.slide.pos + 1) + " of " + fc.positions[0] * fc.positions[1] +
      " (map row " + row + ", column " + col + ")";
    const math = $("slide-math");
    math.replaceChildren();
    const { kh, kw } = result;
    // Every number for a small window (3x3, or 3x3 over 3 channels); the products alone otherwise,
    // each cell saying which input and weight it multiplies.
    const full = result.channels.length * kh * kw <= 27;
    math.classList.toggle("compact", !full);
    result.channels.slice(0, 4).forEach((ch, i) => {
      const group = el("div", "grid-group");
      if (result.channels.length > 1) group.append(el("p", "small muted", "input channel " + i + ": \u03a3 " + Draw.fmt(ch.sum)));
      if (full) {
        group.append(labelled("input", numberGrid(ch.inputs, kh, kw, "x")), el("span", "op", "\u00d7"),
          labelled("weights", numberGrid(ch.weights, kh, kw, "w")), el("span", "op", "="),
          labelled("products", numberGrid(ch.products, kh, kw, "p")));
      } else {
        const table = numberGrid(ch.products, kh, kw, "p");
        [...table.querySelectorAll("td")].forEach((td, k) => {
          td.title = "input " + Draw.fmt(ch.inputs[k]) + " \u00d7 weight " + Draw.fmt(ch.weights[k]);
        });
        group.append(labelled("input \u00d7 weight (point at a cell)", table));
      }
      math.append(group);
    });
    if (result.channels.length > 4) math.append(el("p", "small muted", "\u2026 and " + (result.channels.length - 4) + " more input channels"));
    showSum(result, row, col);
  }

  function labelled(text, table) {
    const box = el("div", "labelled");
    box.append(el("span", "small muted", text), table);
    return box;
  }

  function showSum(result, row, col) {
    const { fc } = current.slide;
    const terms = result.channels.length * result.kh * result.kw;
    let text = "sum of " + terms + " products " + Draw.fmt(result.sum) + " + bias " + Draw.fmt(result.bias) +
      " = " + Draw.fmt(result.z);
    if (fc.activation !== "linear") text += result.y === null ? "" : " \u2192 " + fc.activation + " \u2192 " + Draw.fmt(result.y);
    const out = $("slide-sum");
    const value = result.y === null ? result.z : result.y;
    if (sameSize(current.layer)) {
      const shown = current.map.values[row * current.layer.maps.size[1] + col];
      const tolerance = current.map.step / 2 + 1e-5 * (1 + Math.abs(value));
      const match = result.y !== null && Math.abs(shown - value) <= tolerance;
      text += "; the map holds " + Draw.fmt(shown) + (match ? " \u2713" : "") + " (sent as 8 bits, \u00b1" +
        Draw.fmt(current.map.step / 2) + ")";
      out.dataset.match = String(match);
    }
    out.textContent = text;
    out.dataset.value = String(value);
  }

  // The input patch, the window under the filter outlined.
  function drawInput(result) {
    const { patch } = current.slide.fc.decoded;
    const [c, ph, pw] = patch.shape;
    const small = document.createElement("canvas");
    small.width = pw;
    small.height = ph;
    const ctx = small.getContext("2d");
    const image = ctx.createImageData(pw, ph);
    const planes = c >= 3 ? [0, 1, 2] : [0, 0, 0];
    const ranges = planes.map((p) => {
      const plane = patch.data.subarray(p * ph * pw, (p + 1) * ph * pw);
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of plane) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      return [lo, hi - lo || 1];
    });
    for (let i = 0; i < ph * pw; i++) {
      planes.forEach((p, k) => { image.data[4 * i + k] = (255 * (patch.data[p * ph * pw + i] - ranges[k][0])) / ranges[k][1]; });
      image.data[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    const canvas = $("slide-input");
    canvas.width = 200;
    canvas.height = Math.max(16, Math.round((200 * ph) / pw));
    const big = Draw.enlarge(canvas, small);
    const sx = canvas.width / pw;
    const sy = canvas.height / ph;
    const { fc } = current.slide;
    const spanY = (result.kh - 1) * fc.dilation[0] + 1;
    const spanX = (result.kw - 1) * fc.dilation[1] + 1;
    big.lineWidth = 2;
    big.strokeStyle = "#00e5ff";
    big.strokeRect(result.left * sx + 1, result.top * sy + 1, spanX * sx - 2, spanY * sy - 2);
    $("slide-input-caption").textContent = "the input as " + fc.layer + " sees it (" + ph + "\u00d7" + pw +
      (c > 1 ? "\u00d7" + c : "") + "), the filter's window outlined";
  }

  return { setUp, open };
})();
