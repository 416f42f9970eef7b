// anydepth: depth preview with a colour-map switch and a value probe on the Estimate Depth node.
//
// The node's UI output (nodes/preview.py, key "anydepth_depth") carries a grey preview PNG in the temp folder
// (near = white), a raw-value grid of at most 128 x 128 floats with the depth kind and units, and the library's
// colour maps as control points. This extension draws the preview in a DOM widget, recolours it locally when the
// colour map changes, and under the mouse shows the raw value of the pixel (metres for metric models).
//
// The preview comes back with the node's outputs: after a run (cached or not: Estimate Depth is an output node), a
// workflow-tab switch and a page reload (anydepth_outputs.js). Before the first run the colour-map box already lists
// the maps (the options of the Depth Colormap node, which come from the same library table).
//
// Only the documented extension API is used: app.registerExtension, beforeRegisterNodeDef (chaining the node
// type's own onNodeCreated / onExecuted / onConfigure), onNodeOutputsUpdated and node.addDOMWidget. Every DOM
// element and CSS class is prefixed.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { restoreOnConfigure, watchNodeOutputs } from "./anydepth_outputs.js";

const EXTENSION = "anydepth.DepthPreview";
const NODE_TYPES = new Set(["AnyDepthEstimate"]);
const UI_KEY = "anydepth_depth";
const PROPERTY = "anydepth_colormap";
const DEFAULT_COLORMAP = "inferno";
const STYLE_ID = "anydepth-depth-preview-style";
const COLORMAP_NODE = "AnyDepthColormap";

/** Colour-map names known before any run: the Depth Colormap node's options (filled in beforeRegisterNodeDef). */
let colormapNames = [DEFAULT_COLORMAP];

/** The options of a dropdown input spec, in either form the frontend hands over: [[...options], {...}] or
 * ["COMBO", {options: [...]}]. */
function comboOptions(spec) {
  if (Array.isArray(spec?.[0])) return spec[0];
  return Array.isArray(spec?.[1]?.options) ? spec[1].options : null;
}

const CSS = `
.anydepth-preview { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%;
  box-sizing: border-box; font: 11px sans-serif; color: var(--input-text, #ddd); }
.anydepth-preview-bar { display: flex; align-items: center; gap: 6px; min-height: 20px; }
.anydepth-preview-bar select { font: inherit; background: var(--comfy-input-bg, #222); color: inherit;
  border: 1px solid var(--border-color, #555); border-radius: 4px; }
.anydepth-preview-range { opacity: 0.8; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.anydepth-preview-canvas { flex: 1 1 auto; min-height: 0; width: 100%; object-fit: contain; cursor: crosshair;
  image-rendering: auto; }
.anydepth-preview-colorbar { flex: 0 0 60px; height: 8px; border-radius: 2px; border: 1px solid var(--border-color, #555); }
.anydepth-preview-probe { min-height: 14px; font-variant-numeric: tabular-nums; white-space: nowrap; }
.anydepth-preview-empty { opacity: 0.6; }
`;

function injectStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  document.head.appendChild(style);
}

/** Format a raw value with its units: metres with 3 decimals, relative values with 4 significant digits. */
export function formatDepth(value, kind, units) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "no value";
  if (units === "metres") return `${value.toFixed(3)} m`;
  return `${value.toPrecision(4)} (${kind}, ${units})`;
}

/** Map grey levels 0..255 through `lut` (flattened RGB control points) into `rgba`, linearly interpolated. */
export function applyLut(grey, lut, rgba) {
  const n = lut.length / 3;
  const table = new Uint8ClampedArray(256 * 3);
  for (let g = 0; g < 256; g++) {
    const t = (g / 255) * (n - 1);
    const k = Math.min(Math.floor(t), n - 2);
    const f = t - k;
    for (let c = 0; c < 3; c++) {
      table[g * 3 + c] = Math.round(lut[k * 3 + c] * (1 - f) + lut[(k + 1) * 3 + c] * f);
    }
  }
  for (let i = 0, p = 0; i < grey.length; i++, p += 4) {
    const g = grey[i] * 3;
    rgba[p] = table[g];
    rgba[p + 1] = table[g + 1];
    rgba[p + 2] = table[g + 2];
    rgba[p + 3] = 255;
  }
}

class DepthPreview {
  constructor(node) {
    this.node = node;
    this.payload = null;
    this.grey = null; // Uint8Array of the preview's grey levels
    this.root = document.createElement("div");
    this.root.className = "anydepth-preview";
    this.root.dataset.anydepthPreview = "";
    this.root.dataset.anydepthNode = String(node.id);

    const bar = document.createElement("div");
    bar.className = "anydepth-preview-bar";
    this.select = document.createElement("select");
    this.select.dataset.anydepthColormap = "";
    this.select.title = "Colour map of the preview (display only; the node's outputs are unchanged)";
    this.select.addEventListener("change", () => {
      this.node.properties[PROPERTY] = this.select.value;
      this.render();
    });
    this.range = document.createElement("span");
    this.range.className = "anydepth-preview-range";
    this.range.dataset.anydepthRange = "";
    this.colorbar = document.createElement("span");
    this.colorbar.className = "anydepth-preview-colorbar";
    this.colorbar.dataset.anydepthColorbar = "";
    this.colorbar.title = "far (left) to near (right)";
    bar.append(this.select, this.colorbar, this.range);
    this.setOptions(colormapNames);

    this.canvas = document.createElement("canvas");
    this.canvas.className = "anydepth-preview-canvas";
    this.canvas.dataset.anydepthCanvas = "";
    this.canvas.width = 1;
    this.canvas.height = 1;
    this.canvas.addEventListener("pointermove", (e) => this.probe(e));
    this.canvas.addEventListener("pointerleave", () => this.setProbe(null));

    this.probeEl = document.createElement("div");
    this.probeEl.className = "anydepth-preview-probe anydepth-preview-empty";
    this.probeEl.dataset.anydepthProbe = "";
    this.probeEl.textContent = "Run the graph to preview the depth.";

    this.root.append(bar, this.canvas, this.probeEl);
  }

  colormap() {
    return this.node.properties?.[PROPERTY] || DEFAULT_COLORMAP;
  }

  /** Fill the colour-map box with `maps`, keeping the node's choice selected when it is among them. */
  setOptions(maps) {
    const current = maps.includes(this.colormap()) ? this.colormap() : (maps[0] ?? DEFAULT_COLORMAP);
    this.select.replaceChildren(...maps.map((name) => new Option(name, name, false, name === current)));
    this.select.value = current;
  }

  /** Show a new UI payload: load its preview image, then draw it (the same payload again is a no-op). */
  async show(payload) {
    if (this.payload && this.payload.image?.filename === payload.image?.filename) return;
    this.payload = payload;
    this.setOptions(Object.keys(payload.colormaps || {}));
    const lo = formatDepth(payload.min, payload.kind, payload.units);
    const hi = formatDepth(payload.max, payload.kind, payload.units);
    // the colour bar runs from far (grey 0) to near (grey 255); disparity grows towards the camera, depth away
    const nearFar = payload.kind === "disparity" ? `far ${lo} … near ${hi}` : `far ${hi} … near ${lo}`;
    const batch = payload.batch > 1 ? ` · image 1 of ${payload.batch}` : "";
    this.range.textContent = `${payload.width}×${payload.height} · ${nearFar}${batch}`;
    this.setProbe(null);

    const { filename, subfolder, type } = payload.image;
    const query = new URLSearchParams({ filename, subfolder: subfolder ?? "", type: type ?? "temp" });
    const img = new Image();
    img.src = api.apiURL(`/view?${query}`);
    await img.decode();
    const work = document.createElement("canvas");
    work.width = img.naturalWidth;
    work.height = img.naturalHeight;
    const ctx = work.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    const rgba = ctx.getImageData(0, 0, work.width, work.height).data;
    this.grey = new Uint8Array(work.width * work.height);
    for (let i = 0; i < this.grey.length; i++) this.grey[i] = rgba[i * 4];
    this.canvas.width = work.width;
    this.canvas.height = work.height;
    this.render();
    this.root.dataset.anydepthReady = "1";
    this.root.dataset.anydepthImage = filename; // which run's preview is drawn
    app.graph?.setDirtyCanvas(true, true);
  }

  /** Draw the preview through the selected colour map. */
  render() {
    if (!this.grey || !this.payload) return;
    const lut = this.payload.colormaps?.[this.select.value];
    const ctx = this.canvas.getContext("2d");
    const image = ctx.createImageData(this.canvas.width, this.canvas.height);
    if (lut) applyLut(this.grey, lut, image.data);
    this.canvas.dataset.anydepthColormap = this.select.value;
    if (lut) {
      const n = lut.length / 3;
      const stops = Array.from({ length: n }, (_, k) => `rgb(${lut[3 * k]},${lut[3 * k + 1]},${lut[3 * k + 2]}) ${(100 * k) / (n - 1)}%`);
      this.colorbar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
    }
    ctx.putImageData(image, 0, 0);
  }

  /** Raw value under the pointer, from the grid (the canvas shows the image with object-fit: contain). */
  probe(event) {
    const p = this.payload;
    if (!p || !this.grey) return;
    const rect = this.canvas.getBoundingClientRect();
    const scale = Math.min(rect.width / this.canvas.width, rect.height / this.canvas.height);
    const shownW = this.canvas.width * scale;
    const shownH = this.canvas.height * scale;
    const u = (event.clientX - rect.left - (rect.width - shownW) / 2) / shownW;
    const v = (event.clientY - rect.top - (rect.height - shownH) / 2) / shownH;
    if (!(u >= 0 && u < 1 && v >= 0 && v < 1)) {
      this.setProbe(null);
      return;
    }
    const gx = Math.min(Math.floor(u * p.grid_width), p.grid_width - 1);
    const gy = Math.min(Math.floor(v * p.grid_height), p.grid_height - 1);
    const value = p.grid[gy * p.grid_width + gx];
    this.setProbe({ value, x: Math.floor(u * p.width), y: Math.floor(v * p.height) });
  }

  setProbe(hit) {
    const el = this.probeEl;
    el.classList.toggle("anydepth-preview-empty", !hit);
    if (!hit) {
      delete el.dataset.value;
      delete el.dataset.x;
      delete el.dataset.y;
      el.textContent = this.payload ? "Hover over the preview to read the depth." : "Run the graph to preview the depth.";
      return;
    }
    el.dataset.value = hit.value === null ? "" : String(hit.value);
    el.dataset.x = String(hit.x);
    el.dataset.y = String(hit.y);
    el.textContent = `(${hit.x}, ${hit.y}): ${formatDepth(hit.value, this.payload.kind, this.payload.units)}`;
  }
}

function showOutput(node, output) {
  const payload = output?.[UI_KEY]?.[0];
  if (!payload || !node.anydepthPreview) return false;
  node.anydepthShown = true;
  node.anydepthPreview.show(payload).catch((e) => console.error(`[${EXTENSION}] preview failed`, e));
  return true;
}

app.registerExtension({
  name: EXTENSION,

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === COLORMAP_NODE) {
      colormapNames = comboOptions(nodeData.input?.required?.colormap) ?? colormapNames;
      return;
    }
    if (!NODE_TYPES.has(nodeData.name)) return;
    injectStyle();

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.properties = this.properties || {};
      this.properties[PROPERTY] = this.properties[PROPERTY] || DEFAULT_COLORMAP;
      const preview = new DepthPreview(this);
      this.anydepthPreview = preview;
      preview.setOptions(colormapNames); // the Depth Colormap node may have been registered after this one
      this.addDOMWidget("anydepth_depth_preview", "anydepth.depth_preview", preview.root, {
        serialize: false,
        hideOnZoom: false,
        getMinHeight: () => 220,
      });
      const [w, h] = this.size;
      this.setSize([Math.max(w, 340), Math.max(h, this.computeSize()[1])]);
      return result;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      showOutput(this, output);
      return result;
    };
    restoreOnConfigure(nodeType, UI_KEY, showOutput);
    // the node's id is known only once it is in a graph (added, or configured from a saved one)
    for (const hook of ["onAdded", "onConfigure"]) {
      const previous = nodeType.prototype[hook];
      nodeType.prototype[hook] = function () {
        const result = previous?.apply(this, arguments);
        if (this.anydepthPreview) this.anydepthPreview.root.dataset.anydepthNode = String(this.id);
        return result;
      };
    }
  },

  onNodeOutputsUpdated(nodeOutputs) {
    watchNodeOutputs(nodeOutputs, NODE_TYPES, showOutput);
  },
});
