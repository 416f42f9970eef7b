// anydepth: 3D viewer for point clouds, meshes and cameras (the PLY and GLB files anydepth writes).
//
// The viewer (PointCloudViewer) shows a PLY or GLB served by ComfyUI's /view (e.g. ?filename=...&type=output):
// coloured points, triangle meshes (vertex colours, shaded by a light at the eye), the camera frusta (PLY edges,
// GLB lines), orbit (drag), zoom (wheel) and a point-size slider. It reads the files itself (parsePLY, parseGLB:
// a small binary glTF reader for what anydepth.geometry.write_glb_scene and core's SaveGLB write) and draws with
// plain WebGL (two small shaders): the frontend bundles its own three.js, and a second copy would be a second
// instance of it on the page ("Multiple instances of Three.js being imported").
//
// The extension attaches the viewer to the node types in NODE_TYPES and reads output[UI_KEY][0] =
// {filename, subfolder, type} from their UI output: Any-View Geometry sends a preview of its cloud, Geometry to
// Point Cloud the cloud it saved, Save Mesh the mesh it saved (GLB or PLY). The viewer follows the node's size (a
// ResizeObserver redraws it) and comes back with the node's outputs: after a run (cached or not), a workflow-tab
// switch (the frontend restores the outputs: onNodeOutputsUpdated) and a page reload (the server's /history of this
// workflow: see anydepth_outputs.js).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { restoreOnConfigure, watchNodeOutputs } from "./anydepth_outputs.js";

const EXTENSION = "anydepth.PointCloudViewer";
const NODE_TYPES = new Set(["AnyDepthAnyViewGeometry", "AnyDepthGeometryToPointCloud", "AnyDepthSaveMesh"]);
const UI_KEY = "anydepth_geometry";
const BACKGROUND = [0x20 / 255, 0x20 / 255, 0x20 / 255];
const FOV = (50 * Math.PI) / 180;

const TYPES = {
  char: ["getInt8", 1], int8: ["getInt8", 1], uchar: ["getUint8", 1], uint8: ["getUint8", 1],
  short: ["getInt16", 2], int16: ["getInt16", 2], ushort: ["getUint16", 2], uint16: ["getUint16", 2],
  int: ["getInt32", 4], int32: ["getInt32", 4], uint: ["getUint32", 4], uint32: ["getUint32", 4],
  float: ["getFloat32", 4], float32: ["getFloat32", 4], double: ["getFloat64", 8], float64: ["getFloat64", 8],
};

/** Read one PLY element's rows from `offset`: {count, columns: {name: Float64Array}, lists: {name: [Int32Array]}, end}. */
function readPLYElement(view, offset, el) {
  const columns = {}, lists = {};
  for (const p of el.props) {
    if (p.list) lists[p.name] = new Array(el.count);
    else columns[p.name] = new Float64Array(el.count);
  }
  let o = offset;
  for (let r = 0; r < el.count; r++) {
    for (const p of el.props) {
      if (p.list) { // a face's vertex indices: [n, i1 .. in]
        const n = view[p.list.getter](o, true);
        o += p.list.size;
        const items = new Int32Array(n);
        for (let k = 0; k < n; k++, o += p.size) items[k] = view[p.getter](o, true);
        lists[p.name][r] = items;
      } else {
        columns[p.name][r] = view[p.getter](o, true);
        o += p.size;
      }
    }
  }
  return { count: el.count, columns, lists, end: o };
}

/** Triangles of a PLY `face` element (polygons as fans) as flat indices. */
function plyTriangles(face) {
  const rings = face ? face.lists.vertex_indices ?? face.lists.vertex_index ?? [] : [];
  const out = [];
  for (const ring of rings) for (let k = 2; k < ring.length; k++) out.push(ring[0], ring[k - 1], ring[k]);
  return Uint32Array.from(out);
}

/**
 * Parse a binary little-endian PLY with a `vertex` element (x, y, z, optional red/green/blue), an optional
 * `edge` element (vertex1, vertex2, optional colour) and an optional `face` element (a mesh, e.g. Save Mesh's PLY).
 * The `comment anydepth points M cameras K` line of anydepth's writer tells the points (first M vertices) from the
 * camera vertices; with faces, the vertices belong to the mesh.
 * Returns {format, frame: "opencv", points, cameras, positions, colors, edgePositions, edgeColors, meshPositions,
 * meshColors, meshIndices}: Float32Arrays (indices Uint32Array), colours in 0..1.
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
  const typeOf = (name) => {
    const type = TYPES[name];
    if (!type) throw new Error(`unknown PLY property type ${name}`);
    return { getter: type[0], size: type[1] };
  };
  for (const line of lines) {
    const parts = line.split(/\s+/);
    if (parts[0] === "element") elements.push({ name: parts[1], count: Number(parts[2]), props: [] });
    else if (parts[0] === "property" && parts[1] === "list") {
      elements.at(-1).props.push({ name: parts[4], ...typeOf(parts[3]), list: typeOf(parts[2]) });
    } else if (parts[0] === "property") elements.at(-1).props.push({ name: parts[2], ...typeOf(parts[1]) });
    else if (parts[0] === "comment" && parts[1] === "anydepth" && parts[2] === "points") {
      points = Number(parts[3]);
      cameras = Number(parts[5]);
    }
  }
  const view = new DataView(buffer);
  let offset = end;
  const out = {};
  for (const el of elements) {
    out[el.name] = readPLYElement(view, offset, el);
    offset = out[el.name].end;
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
  const meshIndices = plyTriangles(out.face);
  const mesh = meshIndices.length > 0;
  return {
    format: "ply", frame: "opencv", points: points ?? (mesh ? 0 : n), cameras, positions, colors, edgePositions, edgeColors,
    meshPositions: mesh ? positions : new Float32Array(0), meshColors: mesh ? colors : new Float32Array(0), meshIndices,
  };
}

// -- binary glTF (GLB) -------------------------------------------------------------------------------------------

const GLB_MAGIC = 0x46546c67; // "glTF"
const GLB_JSON = 0x4e4f534a; // "JSON"
const GLB_BIN = 0x004e4942; // "BIN\0"
const GL_COMPONENTS = { // componentType -> [DataView getter, bytes, maximum of a normalised integer]
  5120: ["getInt8", 1, 127], 5121: ["getUint8", 1, 255], 5122: ["getInt16", 2, 32767],
  5123: ["getUint16", 2, 65535], 5125: ["getUint32", 4, 4294967295], 5126: ["getFloat32", 4, 1],
};
const GL_WIDTH = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4, MAT4: 16 };
const MODE_POINTS = 0, MODE_LINES = 1, MODE_TRIANGLES = 4;

/** The JSON and BIN chunks of a GLB: {json, bin} (bin a DataView, or null when the file has none). */
export function readGLBChunks(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 20 || view.getUint32(0, true) !== GLB_MAGIC) throw new Error("not a GLB file: no 'glTF' magic");
  if (view.getUint32(4, true) !== 2) throw new Error(`only glTF 2 GLB files are supported, got version ${view.getUint32(4, true)}`);
  const length = Math.min(view.getUint32(8, true), buffer.byteLength);
  let json = null, bin = null;
  for (let at = 12; at + 8 <= length;) { // chunks: [byteLength, type, data padded to 4 bytes]
    const size = view.getUint32(at, true), type = view.getUint32(at + 4, true);
    if (at + 8 + size > length) throw new Error("truncated GLB file: a chunk runs past the end");
    if (type === GLB_JSON) json = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, at + 8, size)));
    else if (type === GLB_BIN && !bin) bin = new DataView(buffer, at + 8, size);
    at += 8 + size;
  }
  if (!json) throw new Error("GLB file without a JSON chunk");
  return { json, bin };
}

/** An accessor's values as a flat Float64Array (normalised integers scaled to 0..1 / -1..1), and its width. */
export function readAccessor(gltf, bin, index) {
  const acc = gltf.accessors?.[index];
  if (!acc) throw new Error(`GLB accessor ${index} does not exist`);
  if (acc.sparse) throw new Error("sparse GLB accessors are not supported");
  const [getter, bytes, max] = GL_COMPONENTS[acc.componentType] ?? [];
  const width = GL_WIDTH[acc.type];
  if (!getter || !width) throw new Error(`unsupported GLB accessor: componentType ${acc.componentType}, type ${acc.type}`);
  const out = new Float64Array(acc.count * width);
  if (acc.bufferView === undefined) return { values: out, width }; // all zeros by the glTF spec
  const bv = gltf.bufferViews[acc.bufferView];
  if ((bv.buffer ?? 0) !== 0 || !bin) throw new Error("only GLB files with their data in the BIN chunk are supported");
  const stride = bv.byteStride || width * bytes;
  const base = (bv.byteOffset ?? 0) + (acc.byteOffset ?? 0);
  if (acc.count && base + (acc.count - 1) * stride + width * bytes > bin.byteLength) {
    throw new Error(`GLB accessor ${index} runs past the end of the BIN chunk`);
  }
  const scale = acc.normalized && acc.componentType !== 5126 ? 1 / max : 1;
  for (let i = 0; i < acc.count; i++) {
    for (let c = 0; c < width; c++) {
      const v = bin[getter](base + i * stride + c * bytes, true) * scale;
      out[i * width + c] = scale === 1 ? v : Math.max(v, -1); // signed normalised: -128 -> -1 as the spec says
    }
  }
  return { values: out, width };
}

/** A node's local matrix (column-major): `matrix`, or translation · rotation · scale. */
function nodeMatrix(node) {
  if (node.matrix) return Float64Array.from(node.matrix);
  const [x, y, z, w] = node.rotation ?? [0, 0, 0, 1];
  const [sx, sy, sz] = node.scale ?? [1, 1, 1];
  const [tx, ty, tz] = node.translation ?? [0, 0, 0];
  return new Float64Array([
    (1 - 2 * (y * y + z * z)) * sx, 2 * (x * y + z * w) * sx, 2 * (x * z - y * w) * sx, 0,
    2 * (x * y - z * w) * sy, (1 - 2 * (x * x + z * z)) * sy, 2 * (y * z + x * w) * sy, 0,
    2 * (x * z + y * w) * sz, 2 * (y * z - x * w) * sz, (1 - 2 * (x * x + y * y)) * sz, 0, tx, ty, tz, 1]);
}

/** Every mesh instance of the default scene with its world matrix: [{mesh, matrix}]. */
function meshInstances(gltf) {
  const out = [];
  const visit = (index, parent) => {
    const node = gltf.nodes?.[index];
    if (!node) return;
    const matrix = multiply(parent, nodeMatrix(node));
    if (node.mesh !== undefined) out.push({ mesh: gltf.meshes[node.mesh], matrix });
    for (const child of node.children ?? []) visit(child, matrix);
  };
  const scene = gltf.scenes?.[gltf.scene ?? 0];
  const identity = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  if (scene) for (const index of scene.nodes ?? []) visit(index, identity);
  else (gltf.meshes ?? []).forEach((mesh) => out.push({ mesh, matrix: identity })); // no scene: every mesh as it is
  return out;
}

/** A growing flat array (positions, colours, indices) joined once at the end. */
class Parts {
  constructor() { this.parts = []; this.length = 0; }
  push(array) { this.parts.push(array); this.length += array.length; }
  join(Type = Float32Array) {
    const out = new Type(this.length);
    let at = 0;
    for (const p of this.parts) { out.set(p, at); at += p.length; }
    return out;
  }
}

/**
 * Parse a GLB: POINTS primitives become points, LINES primitives line segments (the camera frusta of anydepth's
 * writers), TRIANGLES primitives one indexed triangle mesh. Positions are moved by their node's transform; COLOR_0
 * (RGB or RGBA, float or normalised integers) gives the colours, white points / lines and a light grey mesh without it.
 * The counts of anydepth's writers (scene extras anydepth_points / anydepth_cameras) are used when present.
 * Returns the fields of parsePLY, in glTF's frame (y up): frame "gltf".
 */
export function parseGLB(buffer) {
  const { json: gltf, bin } = readGLBChunks(buffer);
  const points = { positions: new Parts(), colors: new Parts() };
  const lines = { positions: new Parts(), colors: new Parts() };
  const mesh = { positions: new Parts(), colors: new Parts(), indices: new Parts(), vertices: 0 };
  for (const { mesh: m, matrix } of meshInstances(gltf)) {
    for (const prim of m?.primitives ?? []) {
      const mode = prim.mode ?? MODE_TRIANGLES;
      if (![MODE_POINTS, MODE_LINES, MODE_TRIANGLES].includes(mode)) {
        throw new Error(`GLB primitive mode ${mode} is not supported (points 0, lines 1 and triangles 4 are)`);
      }
      if (prim.attributes?.POSITION === undefined) continue;
      const pos = readAccessor(gltf, bin, prim.attributes.POSITION).values;
      const n = pos.length / 3;
      const xyz = new Float32Array(3 * n);
      for (let i = 0; i < n; i++) {
        for (let r = 0; r < 3; r++) {
          xyz[3 * i + r] = matrix[r] * pos[3 * i] + matrix[4 + r] * pos[3 * i + 1] + matrix[8 + r] * pos[3 * i + 2] + matrix[12 + r];
        }
      }
      const rgb = new Float32Array(3 * n).fill(mode === MODE_TRIANGLES ? 0.8 : 1);
      if (prim.attributes.COLOR_0 !== undefined) {
        const { values, width } = readAccessor(gltf, bin, prim.attributes.COLOR_0);
        for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) rgb[3 * i + c] = values[width * i + c];
      }
      const indices = prim.indices === undefined ? null : readAccessor(gltf, bin, prim.indices).values;
      if (mode === MODE_TRIANGLES) {
        const faces = indices ? Uint32Array.from(indices) : Uint32Array.from({ length: n - (n % 3) }, (_, i) => i);
        for (let i = 0; i < faces.length; i++) faces[i] += mesh.vertices;
        mesh.positions.push(xyz);
        mesh.colors.push(rgb);
        mesh.indices.push(faces);
        mesh.vertices += n;
      } else if (indices) { // indexed points / lines: one vertex per index
        const target = mode === MODE_POINTS ? points : lines;
        const xyzOut = new Float32Array(3 * indices.length), rgbOut = new Float32Array(3 * indices.length);
        indices.forEach((v, i) => { xyzOut.set(xyz.subarray(3 * v, 3 * v + 3), 3 * i); rgbOut.set(rgb.subarray(3 * v, 3 * v + 3), 3 * i); });
        target.positions.push(xyzOut);
        target.colors.push(rgbOut);
      } else {
        const target = mode === MODE_POINTS ? points : lines;
        target.positions.push(mode === MODE_LINES ? xyz.subarray(0, 3 * (n - (n % 2))) : xyz);
        target.colors.push(mode === MODE_LINES ? rgb.subarray(0, 3 * (n - (n % 2))) : rgb);
      }
    }
  }
  const extras = gltf.scenes?.[gltf.scene ?? 0]?.extras ?? {};
  const edgePositions = lines.positions.join();
  return {
    format: "glb", frame: "gltf", points: points.positions.length / 3,
    // anydepth writes 8 segments (16 vertices) per camera
    cameras: Number.isInteger(extras.anydepth_cameras) ? extras.anydepth_cameras : Math.floor(edgePositions.length / 48),
    positions: points.positions.join(), colors: points.colors.join(), edgePositions, edgeColors: lines.colors.join(),
    meshPositions: mesh.positions.join(), meshColors: mesh.colors.join(), meshIndices: mesh.indices.join(Uint32Array),
  };
}

/** Parse a PLY or a GLB (told apart by the GLB magic). */
export function parseModel(buffer) {
  const magic = buffer.byteLength >= 4 ? new DataView(buffer).getUint32(0, true) : 0;
  return magic === GLB_MAGIC ? parseGLB(buffer) : parsePLY(buffer);
}

/** Per-vertex normals of an indexed triangle mesh: the area-weighted sum of its faces' normals, unit length. */
export function vertexNormals(positions, indices) {
  const normals = new Float32Array(positions.length);
  for (let f = 0; f + 2 < indices.length; f += 3) {
    const [a, b, c] = [indices[f], indices[f + 1], indices[f + 2]];
    const e1 = [0, 1, 2].map((k) => positions[3 * b + k] - positions[3 * a + k]);
    const e2 = [0, 1, 2].map((k) => positions[3 * c + k] - positions[3 * a + k]);
    const n = [e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]];
    for (const v of [a, b, c]) for (let k = 0; k < 3; k++) normals[3 * v + k] += n[k];
  }
  for (let v = 0; v < normals.length; v += 3) {
    const l = Math.hypot(normals[v], normals[v + 1], normals[v + 2]) || 1;
    for (let k = 0; k < 3; k++) normals[v + k] /= l;
  }
  return normals;
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

// Points and lines keep their colour (shade 0); triangles are lit by a light at the eye, both faces alike (depth
// meshes face the camera, and a mesh seen from behind should not turn black).
const VERTEX_SHADER = `
attribute vec3 position;
attribute vec3 color;
attribute vec3 normal;
uniform mat4 mvp;
uniform mat4 view;
uniform float pointSize;
uniform float shade;
varying vec3 vColor;
void main() {
  vec3 n = (view * vec4(normal, 0.0)).xyz;
  float light = abs(n.z) / max(length(n), 1e-6);
  vColor = color * mix(1.0, 0.35 + 0.65 * light, shade);
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

  /** Fetch and show a PLY or GLB, e.g. api.apiURL("/view?filename=cloud.ply&type=output"); the same URL again is a
   * no-op. */
  async load(url) {
    if (url === this.url && this.data) return this.data;
    this.url = url;
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    const data = parseModel(await response.arrayBuffer());
    if (url !== this.url) return data; // a newer file was asked for meanwhile
    this.data = data;
    const triangles = data.meshIndices.length / 3;
    Object.assign(this.root.dataset, {
      format: data.format, points: String(data.points), cameras: String(data.cameras), triangles: String(triangles),
      vertices: String(data.meshPositions.length / 3), lines: String(data.edgePositions.length / 6), url,
    });
    const parts = [];
    if (triangles) parts.push(`${triangles.toLocaleString()} triangles`);
    if (data.points || !triangles) parts.push(`${data.points.toLocaleString()} points`);
    parts.push(`${data.cameras} cameras`);
    this.status.textContent = parts.join(" · ");
    this.build(data);
    return data;
  }

  /** Upload the points, mesh and camera edges, frame them, draw. */
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
      this.uintIndices = Boolean(gl.getExtension("OES_element_index_uint"));
      this.attachControls();
    }
    this.root.dataset.webgl = "ok";
    for (const b of Object.values(this.buffers ?? {})) for (const x of [b.position, b.color, b.normal, b.index]) if (x) gl.deleteBuffer(x);
    // PLY holds anydepth's world frame, OpenCV's (x right, y down, z forward): flip y and z for a y-up view.
    // GLB is already in glTF's frame (y up).
    const flip = (xyz) => {
      const out = Float32Array.from(xyz);
      if (data.frame === "opencv") for (let i = 1; i < out.length; i += 3) { out[i] = -out[i]; out[i + 1] = -out[i + 1]; }
      return out;
    };
    const points = flip(data.positions.subarray(0, 3 * data.points));
    const meshPositions = flip(data.meshPositions);
    this.buffers = {
      points: this.upload(points, data.colors.subarray(0, 3 * data.points)),
      edges: this.upload(flip(data.edgePositions), data.edgeColors),
      mesh: this.uploadMesh(meshPositions, data.meshColors, data.meshIndices),
    };
    const framed = new Float32Array(points.length + meshPositions.length);
    framed.set(points);
    framed.set(meshPositions, points.length);
    const sphere = boundingSphere(framed);
    this.orbit = { theta: 0, phi: Math.PI / 2, radius: Math.max(sphere.radius * 2.5, 1e-3), target: sphere.center };
    this.render();
  }

  /** A WebGL array buffer holding `values`. */
  arrayBuffer(values) {
    const gl = this.gl;
    const buffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
    gl.bufferData(gl.ARRAY_BUFFER, values, gl.STATIC_DRAW);
    return buffer;
  }

  upload(positions, colors) {
    return { position: this.arrayBuffer(positions), color: this.arrayBuffer(colors), count: positions.length / 3 };
  }

  /** Indexed triangles with vertex normals; without 32-bit indices (OES_element_index_uint) one vertex per corner. */
  uploadMesh(positions, colors, indices) {
    const gl = this.gl;
    const normals = vertexNormals(positions, indices);
    if (!this.uintIndices) {
      const corners = (src) => {
        const out = new Float32Array(3 * indices.length);
        indices.forEach((v, i) => out.set(src.subarray(3 * v, 3 * v + 3), 3 * i));
        return out;
      };
      return { ...this.upload(corners(positions), corners(colors)), normal: this.arrayBuffer(corners(normals)) };
    }
    const index = gl.createBuffer();
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, index);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, indices, gl.STATIC_DRAW);
    return { ...this.upload(positions, colors), normal: this.arrayBuffer(normals), index, count: indices.length };
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
    const view = lookAt(eye, target, [0, 1, 0]);
    const mvp = multiply(perspective(FOV, w / h, radius / 1000, radius * 100), view);
    gl.viewport(0, 0, w, h);
    gl.clearColor(...BACKGROUND, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.enable(gl.DEPTH_TEST);
    gl.useProgram(this.program);
    const uniform = (name) => gl.getUniformLocation(this.program, name);
    gl.uniformMatrix4fv(uniform("mvp"), false, mvp);
    gl.uniformMatrix4fv(uniform("view"), false, view);
    gl.uniform1f(uniform("pointSize"), this.pointSize * ratio);
    const normalLoc = gl.getAttribLocation(this.program, "normal");
    const drawn = { points: 0, lines: 0, triangles: 0 };
    for (const [key, mode] of [["mesh", gl.TRIANGLES], ["points", gl.POINTS], ["edges", gl.LINES]]) {
      const buffers = this.buffers[key];
      if (!buffers.count) continue;
      for (const [name, buffer] of [["position", buffers.position], ["color", buffers.color], ["normal", buffers.normal]]) {
        const loc = gl.getAttribLocation(this.program, name);
        if (loc < 0) continue;
        if (!buffer) { // points and lines: no normals, no shading
          gl.disableVertexAttribArray(loc);
          gl.vertexAttrib3f(loc, 0, 0, 1);
          continue;
        }
        gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, 3, gl.FLOAT, false, 0, 0);
      }
      gl.uniform1f(uniform("shade"), key === "mesh" ? 1 : 0);
      if (buffers.index) {
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, buffers.index);
        gl.drawElements(mode, buffers.count, gl.UNSIGNED_INT, 0);
      } else gl.drawArrays(mode, 0, buffers.count);
      if (key === "mesh") drawn.triangles = buffers.count / 3;
      else if (key === "points") drawn.points = buffers.count;
      else drawn.lines = buffers.count / 2;
    }
    if (normalLoc >= 0) gl.disableVertexAttribArray(normalLoc);
    // what the last frame drew, for tests and bug reports
    Object.assign(this.root.dataset, { drawnPoints: String(drawn.points), drawnLines: String(drawn.lines),
      drawnTriangles: String(drawn.triangles) });
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
