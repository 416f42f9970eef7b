// anydepth: 3D viewer for point clouds and cameras (the PLY files of anydepth.geometry.write_ply).
//
// The viewer (PointCloudViewer) shows a PLY served by ComfyUI's /view (e.g. ?filename=...&type=output):
// coloured points, the camera frusta written as PLY edges, orbit (drag), zoom (wheel) and a point-size slider.
// It draws with plain WebGL (two small shaders): the frontend bundles its own three.js, and a second copy would
// be a second instance of it on the page ("Multiple instances of Three.js being imported").
//
// The extension attaches the viewer to the node types in NODE_TYPES and reads output[UI_KEY][0] =
// {filename, subfolder, type} from their UI output: Any-View Geometry sends a preview of its cloud, Geometry to
// Point Cloud the cloud it saved. The viewer follows the node's size (a ResizeObserver redraws it) and comes back
// with the node's outputs: after a run (cached or not), a workflow-tab switch (the frontend restores the outputs:
// onNodeOutputsUpdated) and a page reload (the server's /history of this workflow: see anydepth_outputs.js).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { restoreOnConfigure, watchNodeOutputs } from "./anydepth_outputs.js";

const EXTENSION = "anydepth.PointCloudViewer";
const NODE_TYPES = new Set(["AnyDepthAnyViewGeometry", "AnyDepthGeometryToPointCloud"]);
const UI_KEY = "anydepth_geometry";
const BACKGROUND = [0x20 / 255, 0x20 / 255, 0x20 / 255];
const FOV = (50 * Math.PI) / 180;

const TYPES = {
  char: ["getInt8", 1], int8: ["getInt8", 1], uchar: ["getUint8", 1], uint8: ["getUint8", 1],
  short: ["getInt16", 2], int16: ["getInt16", 2], ushort: ["getUint16", 2], uint16: ["getUint16", 2],
  int: ["getInt32", 4], int32: ["getInt32", 4], uint: ["getUint32", 4], uint32: ["getUint32", 4],
  float: ["getFloat32", 4], float32: ["getFloat32", 4], double: ["getFloat64", 8], float64: ["getFloat64", 8],
};

/**
 * Parse a binary little-endian PLY with a `vertex` element (x, y, z, optional red/green/blue) and an optional
 * `edge` element (vertex1, vertex2, optional colour). The `comment anydepth points M cameras K` line of
 * anydepth's writer tells the points (first M vertices) from the camera vertices.
 * Returns {points, cameras, positions, colors, edgePositions, edgeColors}: Float32Arrays, colours in 0..1.
 */
export function parsePLY(buffer) {
  const bytes = new Uint8Array(buffer);
  const marker = "end_header\n";
  let end = -1;
  for (let i = 0; i + marker.length <= Math.min(bytes.length, 65536); i++) {
    if (bytes[i] === 0x65 && new TextDecoder().decode(bytes.subarray(i, i + marker.length)) === marker) {
      end = i + marker.length;
      break;
    }
  }
  if (end < 0) throw new Error("not a PLY file: no end_header line");
  const lines = new TextDecoder().decode(bytes.subarray(0, end)).split("\n").map((l) => l.trim());
  if (lines[0] !== "ply") throw new Error("not a PLY file: it does not start with 'ply'");
  if (!lines.includes("format binary_little_endian 1.0")) throw new Error("only binary_little_endian PLY files are supported");
  const elements = [];
  let points = null;
  let cameras = 0;
  for (const line of lines) {
    const parts = line.split(/\s+/);
    if (parts[0] === "element") elements.push({ name: parts[1], count: Number(parts[2]), props: [] });
    else if (parts[0] === "property") {
      if (parts[1] === "list") throw new Error("PLY list properties (faces) are not supported");
      const type = TYPES[parts[1]];
      if (!type) throw new Error(`unknown PLY property type ${parts[1]}`);
      elements.at(-1).props.push({ name: parts[2], getter: type[0], size: type[1] });
    } else if (parts[0] === "comment" && parts[1] === "anydepth") {
      points = Number(parts[3]);
      cameras = Number(parts[5]);
    }
  }
  const view = new DataView(buffer);
  let offset = end;
  const out = {};
  for (const el of elements) {
    const stride = el.props.reduce((s, p) => s + p.size, 0);
    const columns = {};
    for (const p of el.props) columns[p.name] = new Float64Array(el.count);
    for (let r = 0; r < el.count; r++) {
      let o = offset + r * stride;
      for (const p of el.props) {
        columns[p.name][r] = view[p.getter](o, true);
        o += p.size;
      }
    }
    offset += el.count * stride;
    out[el.name] = { count: el.count, columns };
  }
  const vertex = out.vertex;
  if (!vertex || !vertex.columns.x) throw new Error("the PLY file has no vertex element with x, y, z");
  const n = vertex.count;
  const positions = new Float32Array(n * 3);
  const colors = new Float32Array(n * 3).fill(1);
  const { x, y, z, red, green, blue } = vertex.columns;
  for (let i = 0; i < n; i++) {
    positions[3 * i] = x[i];
    positions[3 * i + 1] = y[i];
    positions[3 * i + 2] = z[i];
    if (red) {
      colors[3 * i] = red[i] / 255;
      colors[3 * i + 1] = green[i] / 255;
      colors[3 * i + 2] = blue[i] / 255;
    }
  }
  const edge = out.edge;
  const m = edge ? edge.count : 0;
  const edgePositions = new Float32Array(m * 6);
  const edgeColors = new Float32Array(m * 6).fill(1);
  for (let e = 0; e < m; e++) {
    const ends = [edge.columns.vertex1[e], edge.columns.vertex2[e]];
    ends.forEach((v, j) => {
      for (let c = 0; c < 3; c++) {
        edgePositions[6 * e + 3 * j + c] = positions[3 * v + c];
        if (edge.columns.red) edgeColors[6 * e + 3 * j + c] = [edge.columns.red, edge.columns.green, edge.columns.blue][c][e] / 255;
      }
    });
  }
  return { points: points ?? n, cameras, positions, colors, edgePositions, edgeColors };
}

// -- 4×4 matrices, column-major (WebGL's layout) ------------------------------------------------------------------

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2);
  const nf = 1 / (near - far);
  return new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0]);
}

function lookAt(eye, target, up) {
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const norm = (v) => { const l = Math.hypot(...v) || 1; return [v[0] / l, v[1] / l, v[2] / l]; };
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const z = norm(sub(eye, target));
  const x = norm(cross(up, z));
  const y = cross(z, x);
  return new Float32Array([x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0, -dot(x, eye), -dot(y, eye), -dot(z, eye), 1]);
}

function multiply(a, b) {
  const out = new Float32Array(16);
  for (let c = 0; c < 4; c++) {
    for (let r = 0; r < 4; r++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
      out[c * 4 + r] = s;
    }
  }
  return out;
}

/** Centre and radius of the box around `positions` (flat xyz): what the orbit camera frames. */
export function boundingSphere(positions, count = positions.length / 3) {
  const lo = [Infinity, Infinity, Infinity];
  const hi = [-Infinity, -Infinity, -Infinity];
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < 3; c++) {
      const v = positions[3 * i + c];
      if (v < lo[c]) lo[c] = v;
      if (v > hi[c]) hi[c] = v;
    }
  }
  if (!count) return { center: [0, 0, 0], radius: 1 };
  const center = [0, 1, 2].map((c) => (lo[c] + hi[c]) / 2);
  let r2 = 0;
  for (let i = 0; i < count; i++) {
    const d = [0, 1, 2].map((c) => positions[3 * i + c] - center[c]);
    r2 = Math.max(r2, d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
  }
  return { center, radius: Math.sqrt(r2) };
}

const VERTEX_SHADER = `
attribute vec3 position;
attribute vec3 color;
uniform mat4 mvp;
uniform float pointSize;
varying vec3 vColor;
void main() {
  vColor = color;
  gl_PointSize = pointSize;
  gl_Position = mvp * vec4(position, 1.0);
}`;
const FRAGMENT_SHADER = `
precision mediump float;
varying vec3 vColor;
void main() { gl_FragColor = vec4(vColor, 1.0); }`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader) || "shader error");
  return shader;
}

/** A WebGL view of one PLY: orbit with the left button, zoom with the wheel, point size with the slider. */
export class PointCloudViewer {
  constructor() {
    this.root = document.createElement("div");
    this.root.dataset.anydepthViewer = "";
    this.root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;font:11px sans-serif;" +
      "color:var(--input-text,#ddd)";
    const bar = document.createElement("label");
    bar.style.cssText = "display:flex;align-items:center;gap:6px";
    bar.textContent = "point size";
    this.sizeInput = Object.assign(document.createElement("input"), { type: "range", min: "1", max: "10", step: "0.5", value: "2" });
    this.sizeInput.dataset.anydepthPointSize = "";
    this.sizeInput.addEventListener("input", () => this.setPointSize(Number(this.sizeInput.value)));
    this.status = document.createElement("span");
    this.status.dataset.anydepthViewerStatus = "";
    this.status.textContent = "Run the graph to see the point cloud.";
    bar.append(this.sizeInput, this.status);
    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "flex:1 1 auto;min-height:0;width:100%;cursor:grab;touch-action:none";
    this.root.append(bar, this.canvas);
    this.orbit = { theta: 0, phi: Math.PI / 2, radius: 1, target: [0, 0, 0] };
    this.pointSize = Number(this.sizeInput.value);
    this.frames = 0;
    this.url = null;
    // the node's size decides the canvas' size: redraw at the new resolution whenever it changes
    this.resizeObserver = new ResizeObserver(() => this.render());
    this.resizeObserver.observe(this.canvas);
  }

  /** Fetch and show a PLY, e.g. api.apiURL("/view?filename=cloud.ply&type=output"); the same URL again is a no-op. */
  async load(url) {
    if (url === this.url && this.data) return this.data;
    this.url = url;
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    const data = parsePLY(await response.arrayBuffer());
    if (url !== this.url) return data; // a newer file was asked for meanwhile
    this.data = data;
    this.root.dataset.points = String(data.points);
    this.root.dataset.cameras = String(data.cameras);
    this.root.dataset.url = url;
    this.status.textContent = `${data.points.toLocaleString()} points · ${data.cameras} cameras`;
    this.build(data);
    return data;
  }

  /** Upload the points and camera edges, frame them, draw. */
  build(data) {
    const gl = this.gl ?? this.canvas.getContext("webgl", { antialias: true, preserveDrawingBuffer: true });
    if (!gl) {
      this.root.dataset.webgl = "unavailable";
      this.status.textContent += " · WebGL unavailable: no 3D view";
      return;
    }
    if (!this.gl) {
      this.gl = gl;
      const program = gl.createProgram();
      gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
      gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
      gl.linkProgram(program);
      if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program) || "link error");
      this.program = program;
      this.attachControls();
    }
    this.root.dataset.webgl = "ok";
    // anydepth's world frame is OpenCV's (x right, y down, z forward): flip y and z for a y-up view
    const flip = (xyz) => { const out = Float32Array.from(xyz); for (let i = 1; i < out.length; i += 3) { out[i] = -out[i]; out[i + 1] = -out[i + 1]; } return out; };
    const points = flip(data.positions.subarray(0, 3 * data.points));
    this.buffers = {
      points: this.upload(points, data.colors.subarray(0, 3 * data.points)),
      edges: this.upload(flip(data.edgePositions), data.edgeColors),
    };
    const sphere = boundingSphere(points);
    this.orbit = { theta: 0, phi: Math.PI / 2, radius: Math.max(sphere.radius * 2.5, 1e-3), target: sphere.center };
    this.render();
  }

  upload(positions, colors) {
    const gl = this.gl;
    const make = (values) => { const b = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, b); gl.bufferData(gl.ARRAY_BUFFER, values, gl.STATIC_DRAW); return b; };
    return { position: make(positions), color: make(colors), count: positions.length / 3 };
  }

  attachControls() {
    let drag = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      drag = [e.clientX, e.clientY];
      this.canvas.setPointerCapture?.(e.pointerId);
      e.stopPropagation(); // orbit the cloud, do not drag the node
    });
    this.canvas.addEventListener("pointerup", () => (drag = null));
    this.canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      this.orbit.theta -= (e.clientX - drag[0]) * 0.01;
      this.orbit.phi = Math.min(Math.PI - 0.01, Math.max(0.01, this.orbit.phi - (e.clientY - drag[1]) * 0.01));
      drag = [e.clientX, e.clientY];
      this.render();
    });
    this.canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      e.stopPropagation(); // zoom the cloud, not the graph
      this.orbit.radius *= Math.exp(e.deltaY * 0.001);
      this.render();
    }, { passive: false });
  }

  setPointSize(size) {
    this.pointSize = size;
    this.root.dataset.pointSize = String(size);
    this.render();
  }

  /** Draw at the canvas' current CSS size (called on every change, and by the ResizeObserver). */
  render() {
    const gl = this.gl;
    if (!gl || !this.buffers) return;
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * ratio));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    const { theta, phi, radius, target } = this.orbit;
    const eye = [target[0] + radius * Math.sin(phi) * Math.sin(theta), target[1] + radius * Math.cos(phi),
      target[2] + radius * Math.sin(phi) * Math.cos(theta)];
    const mvp = multiply(perspective(FOV, w / h, radius / 1000, radius * 100), lookAt(eye, target, [0, 1, 0]));
    gl.viewport(0, 0, w, h);
    gl.clearColor(...BACKGROUND, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.useProgram(this.program);
    gl.uniformMatrix4fv(gl.getUniformLocation(this.program, "mvp"), false, mvp);
    gl.uniform1f(gl.getUniformLocation(this.program, "pointSize"), this.pointSize * ratio);
    for (const [buffers, mode] of [[this.buffers.points, gl.POINTS], [this.buffers.edges, gl.LINES]]) {
      if (!buffers.count) continue;
      for (const [name, buffer] of [["position", buffers.position], ["color", buffers.color]]) {
        const loc = gl.getAttribLocation(this.program, name);
        gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, 3, gl.FLOAT, false, 0, 0);
      }
      gl.drawArrays(mode, 0, buffers.count);
    }
    this.frames += 1;
    this.root.dataset.frames = String(this.frames);
    this.root.dataset.size = `${w}x${h}`;
  }
}

function showOutput(node, output) {
  const file = output?.[UI_KEY]?.[0];
  if (!file || !node.anydepthViewer) return false;
  const query = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder ?? "", type: file.type ?? "output" });
  node.anydepthShown = true;
  node.anydepthViewer.load(api.apiURL(`/view?${query}`)).catch((e) => console.error(`[${EXTENSION}] loading failed`, e));
  return true;
}

app.registerExtension({
  name: EXTENSION,

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODE_TYPES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.anydepthViewer = new PointCloudViewer();
      this.addDOMWidget("anydepth_pointcloud", "anydepth.pointcloud", this.anydepthViewer.root, {
        serialize: false,
        getMinHeight: () => 300,
      });
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      showOutput(this, output);
      return result;
    };
    restoreOnConfigure(nodeType, UI_KEY, showOutput);
  },

  onNodeOutputsUpdated(nodeOutputs) {
    watchNodeOutputs(nodeOutputs, NODE_TYPES, showOutput);
  },
});
