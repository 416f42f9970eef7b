// anydepth: 3D viewer for point clouds and cameras (the PLY files of anydepth.geometry.write_ply).
//
// The viewer (PointCloudViewer) shows a PLY served by ComfyUI's /view (e.g. ?filename=...&type=output):
// coloured points, the camera frusta written as PLY edges, orbit (drag), zoom (wheel) and a point-size slider.
// three.js r170 is vendored (js/vendor/three, MIT) and imported only when a viewer first loads a file.
//
// The extension attaches the viewer to the node types in NODE_TYPES and reads output[UI_KEY][0] =
// {filename, subfolder, type} from their UI output (Any-View Geometry sends its point cloud there).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EXTENSION = "anydepth.PointCloudViewer";
const NODE_TYPES = new Set(["AnyDepthAnyViewGeometry"]);
const UI_KEY = "anydepth_geometry";
const THREE_URL = new URL("./vendor/three/three.module.min.mjs", import.meta.url).href;

let threePromise = null;
function loadThree() {
  threePromise ??= import(THREE_URL);
  return threePromise;
}

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

/** A three.js view of one PLY: orbit with the left button, zoom with the wheel, point size with the slider. */
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
    bar.append(this.sizeInput, this.status);
    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "flex:1 1 auto;min-height:0;width:100%;cursor:grab;touch-action:none";
    this.root.append(bar, this.canvas);
    this.orbit = { theta: 0, phi: Math.PI / 2, radius: 1, target: [0, 0, 0] };
  }

  /** Fetch and show a PLY, e.g. api.apiURL("/view?filename=cloud.ply&type=output"). */
  async load(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    const data = parsePLY(await response.arrayBuffer());
    this.data = data;
    this.root.dataset.points = String(data.points);
    this.root.dataset.cameras = String(data.cameras);
    this.status.textContent = `${data.points.toLocaleString()} points · ${data.cameras} cameras`;
    await this.build(data);
    return data;
  }

  async build(data) {
    const THREE = await loadThree();
    this.THREE = THREE;
    try {
      this.renderer ??= new THREE.WebGLRenderer({ canvas: this.canvas, antialias: true, preserveDrawingBuffer: true });
    } catch (e) {
      this.root.dataset.webgl = "unavailable";
      this.status.textContent += " · WebGL unavailable: no 3D view";
      return;
    }
    this.root.dataset.webgl = "ok";
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0x202020);
    // anydepth's world frame is OpenCV's (x right, y down, z forward): flip y and z for three.js (y up)
    const world = new THREE.Group();
    world.scale.set(1, -1, -1);
    this.scene.add(world);
    const n = data.points;
    const cloud = new THREE.BufferGeometry();
    cloud.setAttribute("position", new THREE.BufferAttribute(data.positions.subarray(0, 3 * n), 3));
    cloud.setAttribute("color", new THREE.BufferAttribute(data.colors.subarray(0, 3 * n), 3));
    this.material = new THREE.PointsMaterial({ size: Number(this.sizeInput.value), sizeAttenuation: false, vertexColors: true });
    world.add(new THREE.Points(cloud, this.material));
    if (data.edgePositions.length) {
      const lines = new THREE.BufferGeometry();
      lines.setAttribute("position", new THREE.BufferAttribute(data.edgePositions, 3));
      lines.setAttribute("color", new THREE.BufferAttribute(data.edgeColors, 3));
      world.add(new THREE.LineSegments(lines, new THREE.LineBasicMaterial({ vertexColors: true })));
    }
    cloud.computeBoundingSphere();
    const sphere = cloud.boundingSphere.clone().applyMatrix4(world.matrix.compose(world.position, world.quaternion, world.scale));
    this.orbit = { theta: 0, phi: Math.PI / 2, radius: Math.max(sphere.radius * 2.5, 1e-3), target: sphere.center.toArray() };
    this.camera = new THREE.PerspectiveCamera(50, 1, this.orbit.radius / 1000, this.orbit.radius * 100);
    this.attachControls();
    this.render();
  }

  attachControls() {
    if (this.controlsAttached) return;
    this.controlsAttached = true;
    let drag = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      drag = [e.clientX, e.clientY];
      this.canvas.setPointerCapture(e.pointerId);
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
    if (this.material) this.material.size = size;
    this.root.dataset.pointSize = String(size);
    this.render();
  }

  render() {
    if (!this.renderer || !this.camera) return;
    const { theta, phi, radius, target } = this.orbit;
    const w = Math.max(1, this.canvas.clientWidth);
    const h = Math.max(1, this.canvas.clientHeight);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.position.set(target[0] + radius * Math.sin(phi) * Math.sin(theta), target[1] + radius * Math.cos(phi),
      target[2] + radius * Math.sin(phi) * Math.cos(theta));
    this.camera.lookAt(target[0], target[1], target[2]);
    this.camera.updateProjectionMatrix();
    this.renderer.render(this.scene, this.camera);
  }
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
      const file = output?.[UI_KEY]?.[0];
      if (file && this.anydepthViewer) {
        const query = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder ?? "", type: file.type ?? "output" });
        this.anydepthViewer.load(api.apiURL(`/view?${query}`)).catch((e) => console.error(`[${EXTENSION}] loading failed`, e));
      }
      return result;
    };
  },
});
