// The inside view's drawing helpers: decoding the API's arrays, colour scales, maps on canvases.
// Shared by inside.js (the network) and inside-detail.js (one map enlarged); no build step.
"use strict";

const Draw = (() => {
  // -- the API's arrays ------------------------------------------------------------------
  function bytes(base64) {
    const text = atob(base64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  // {"shape": [...], "f32": base64 little-endian float32} -> {shape, data: Float32Array}
  function f32(array) {
    const raw = bytes(array.f32);
    const view = new DataView(raw.buffer);
    const data = new Float32Array(raw.length / 4);
    for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(4 * i, true);
    return { shape: array.shape, data };
  }

  // A layer's maps: one 8-bit grey PNG strip (map i in columns i*w .. i*w+w-1), each map on its
  // own scale [low, high]. -> [{channel, activity, values: Float32Array(h*w), low, high}], in order.
  async function decodeMaps(maps) {
    const blob = new Blob([bytes(maps.png)], { type: "image/png" });
    // No colour management and no premultiplying: the pixels must come back exactly as sent.
    const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const [h, w] = maps.size;
    return maps.channels.map((channel, i) => {
      const low = maps.low[i];
      const step = (maps.high[i] - low) / 255;
      const values = new Float32Array(h * w);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) values[y * w + x] = low + step * rgba[4 * (y * bitmap.width + i * w + x)];
      }
      return { channel, activity: maps.activity[i], values, low, high: maps.high[i], step };
    });
  }

  // -- colour scales ------------------------------------------------------------------------
  // Sequential (inferno-like, dark = low) for non-negative maps; diverging (blue - white - red,
  // white = 0) when a scale holds negative values, so the sign stays visible.
  const SEQUENTIAL = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
    [245, 125, 21], [250, 193, 39], [252, 255, 164]];
  const DIVERGING = [[49, 54, 149], [116, 173, 209], [245, 245, 245], [244, 109, 67], [165, 0, 38]];

  function ramp(stops, t) {
    const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(x));
    const f = x - i;
    return stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
  }

  // The colour of a value on the scale [low, high].
  function colorer(low, high) {
    if (low < 0) {
      const bound = Math.max(Math.abs(low), Math.abs(high)) || 1;
      return (v) => ramp(DIVERGING, 0.5 + v / (2 * bound));
    }
    const span = high - low || 1;
    return (v) => ramp(SEQUENTIAL, (v - low) / span);
  }

  // Paint values (row-major h x w) onto a canvas of that size.
  function paint(canvas, values, h, w, low, high) {
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    const color = colorer(low, high);
    for (let i = 0; i < h * w; i++) {
      const [r, g, b] = color(values[i]);
      image.data.set([r, g, b, 255], 4 * i);
    }
    ctx.putImageData(image, 0, 0);
    return canvas;
  }

  // Draw a small canvas enlarged (crisp pixels) onto a bigger one.
  function enlarge(target, source) {
    const ctx = target.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, target.width, target.height);
    ctx.drawImage(source, 0, 0, target.width, target.height);
    return ctx;
  }

  // A number for a person: 3 decimals, fewer for big values, tiny ones as 2.4e-3, never "-0.000".
  function fmt(v) {
    if (!Number.isFinite(v)) return String(v);
    const size = Math.abs(v);
    if (size === 0) return "0";
    if (size < 0.0005) return v.toExponential(1);
    return size >= 100 ? v.toFixed(0) : size >= 10 ? v.toFixed(1) : v.toFixed(3);
  }

  return { bytes, f32, decodeMaps, colorer, paint, enlarge, fmt };
})();
