"""What a user sees in the browser: Debian's chromium, driven by Playwright, against the real ComfyUI server.

Every test runs in four set-ups: the frontend the ComfyUI tree serves (``comfyui-frontend-package`` 1.32.9, from the
test extra) and the newest one the tests know (:data:`comfy_runtime.NEWEST_FRONTEND`, served with
``--front-end-root``), each with Nodes 2.0 (``Comfy.VueNodes.Enabled``, set through the settings API) off and on.
One server per frontend, one browser page per set-up. The tests load the shipped workflows, queue them with the tiny
models and check:

* the depth preview on Estimate Depth: its colour-map box before any run, the picture and its colour maps against the
  library, the value probe against the raw depth the graph saved;
* that the preview stays: after a cached run, a page reload and a workflow-tab switch (``image_to_depth_map.json``,
  whose Estimate Depth node is the one a newcomer meets first);
* the 3D viewer on Any-View Geometry and on Geometry to Point Cloud (the cloud it saved): drawn, redrawn when the node
  is resized by its corner, back after a reload and a tab switch, and no second three.js on the page;
* the viewer on the GLB files anydepth writes (mesh + cameras, points + cameras) and on Save Mesh's GLB
  (``photos_to_mesh.json``): the triangles, points and camera lines it parsed and drew, and the shaded pixels.

Screenshots land in ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright  # the test extra's; its own browser download is never used

from anydepth.normalize import COLORMAPS, apply_colormap

import comfy_runtime
from comfy_harness import METRIC_OPTION, PACK_FOLDER_NAME, REPO, install_tiny_models, start_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
WORKFLOWS = REPO / "workflows"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EXTENSION_URL = f"/extensions/{urllib.parse.quote(PACK_FOLDER_NAME)}/"
TREE_FRONTEND = "1.32.9"
"""The ``comfyui-frontend-package`` of the test extra, which the ComfyUI tree serves by default."""

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")


@dataclass(frozen=True)
class Setup:
    frontend: str
    nodes2: bool

    @property
    def id(self) -> str:
        return f"{self.frontend}-{'nodes2' if self.nodes2 else 'classic'}"


SETUPS = [Setup(fe, vue) for fe in (TREE_FRONTEND, comfy_runtime.NEWEST_FRONTEND) for vue in (False, True)]


# --------------------------------------------------------------------------------------------- fixtures


def _prepare_inputs(server) -> None:
    """The tiny models and the pictures the workflows load (idempotent: one server serves two set-ups)."""
    install_tiny_models(server.base / "models")
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, 96, dtype=np.float64)[None, :, None] * np.ones((64, 1, 3))
    Image.fromarray(np.clip(ramp + rng.normal(0, 20, ramp.shape), 0, 255).astype(np.uint8)).save(server.base / "input" / "example.png")
    picture = Image.fromarray((rng.random((3, 4, 3)) * 255).astype(np.uint8)).resize((84, 56), Image.BICUBIC)
    for i in range(3):  # photos_to_point_cloud: three views of one scene
        picture.rotate(5 * i).save(server.base / "input" / f"photo_{i + 1}.png")
    da3 = server.base / "models" / "depthanything3" / "DA3-SMALL"
    if not (da3 / "model.safetensors").is_file():
        from tiny_da3 import TINY_FILE, official_tiny, save_official

        save_official(official_tiny(TINY_FILE, seed=3), da3)


@pytest.fixture(scope="module", params=SETUPS, ids=[s.id for s in SETUPS])
def setup(request) -> Setup:
    return request.param


@pytest.fixture(scope="module")
def server(setup):
    root = None if setup.frontend == TREE_FRONTEND else comfy_runtime.ensure_frontend(setup.frontend)
    server = start_server(root)
    _prepare_inputs(server)
    return server


def _set(server, key: str, value) -> None:
    request = urllib.request.Request(f"{server.url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()


@pytest.fixture(scope="module")
def page(server, setup):
    # a first visit opens the templates dialog over the canvas: the user has seen it already
    _set(server, "Comfy.TutorialCompleted", True)
    _set(server, "Comfy.VueNodes.Enabled", setup.nodes2)
    profile = tempfile.mkdtemp(prefix="anydepth-chromium-")
    messages: list[tuple[str, str, str]] = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                        headless=True, viewport={"width": 1400, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: messages.append((m.type, m.text, (m.location or {}).get("url", ""))))
            page.on("pageerror", lambda e: messages.append(("pageerror", f"{e}\n{e.stack or ''}", "")))
            page.messages = messages
            page.scripts = []
            page.on("response", lambda r: page.scripts.append((r.url, r.status)) if EXTENSION_URL in r.url else None)
            page.set_default_timeout(30_000)
            page.goto(server.url + "/", wait_until="domcontentloaded")
            _wait_for_app(page)
            assert page.evaluate("() => window.app.extensionManager.setting.get('Comfy.VueNodes.Enabled')") is setup.nodes2
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def _wait_for_app(page) -> None:
    page.wait_for_function("() => window.app?.graph && ['anydepth.DepthPreview', 'anydepth.PointCloudViewer']"
                           ".every(name => window.app.extensions?.some(e => e.name === name))", timeout=90_000)


def _ours(messages) -> list:
    """Errors raised by or logged from our extension: its script URL or its ``anydepth.`` namespace.

    Not the frontend's own lookups that merely name our node types (e.g. the comfy.org registry request for
    ``AnyDepthLoadModel``, blocked by the CSP of ``--disable-api-nodes``).
    """
    return [m for m in messages if m[0] in ("error", "pageerror")
            and (EXTENSION_URL in m[1] + m[2] or "anydepth." in m[1] or "anydepth_" in m[1] + m[2])]


# --------------------------------------------------------------------------------------------- helpers


def _load(page, name: str, edits: dict[str, dict[str, object]], centre: str, at: tuple[int, int] = (450, 200)
          ) -> dict[str, int]:
    """Open ``workflows/<name>.json`` as a user would (a new tab), set widget values ``{node type: {widget: value}}``
    and bring the ``centre`` node's top left to ``at`` in the window; returns ``{node type: node id}``."""
    workflow = json.loads((WORKFLOWS / f"{name}.json").read_text())
    return page.evaluate("""async ([wf, edits, centre, at]) => {
        const app = window.app;
        await app.loadGraphData(wf);
        const ids = {};
        for (const node of app.graph.nodes) {
            ids[node.type] = node.id;
            for (const [widget, value] of Object.entries(edits[node.type] ?? {})) node.widgets.find(w => w.name === widget).value = value;
        }
        const node = app.graph.nodes.find(n => n.type === centre);
        const ds = app.canvas.ds; ds.scale = 1;
        ds.offset[0] = at[0] - node.pos[0]; ds.offset[1] = at[1] - node.pos[1];
        app.canvas.setDirty(true, true);
        return ids;
    }""", [workflow, edits, centre, list(at)])


def _record_events(page) -> None:
    """Keep the server's 'executed' and 'execution_cached' messages in the page (window.anydepthEvents)."""
    page.evaluate("""() => { const events = window.anydepthEvents = [];
        if (window.anydepthRecording) return;
        window.anydepthRecording = true;
        for (const type of ['executed', 'execution_cached'])
            window.app.api.addEventListener(type, e => window.anydepthEvents.push([type, e.detail])); }""")


def _queue(page) -> None:
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")


def _preview(node_id: int) -> str:
    return f"[data-anydepth-preview][data-anydepth-node='{node_id}']"


def _shown_image(page, node_id: int, timeout: float = 30_000) -> str:
    """The preview file drawn on the Estimate Depth node ``node_id``, once one is drawn."""
    page.wait_for_selector(f"{_preview(node_id)}[data-anydepth-ready='1']", state="attached", timeout=timeout)
    return page.locator(_preview(node_id)).get_attribute("data-anydepth-image")


def _wait_for_image(page, node_id: int, name: str, what: str, server) -> None:
    try:
        page.wait_for_selector(f"{_preview(node_id)}[data-anydepth-image='{name}']", state="attached", timeout=30_000)
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "depth_preview_lost.png"))
        raise AssertionError(f"the depth preview did not come back after {what}; console: {page.messages[-15:]}\n"
                             f"server log:\n{server.log[-2000:]}") from None


def _switch_tab_and_back(page) -> None:
    """Open a new workflow tab, then go back to the previous one (the commands of Ctrl+Tab and the tab bar)."""
    page.evaluate("""async () => { const cmd = window.app.extensionManager.command;
        await cmd.execute('Comfy.NewBlankWorkflow');
        if (window.app.graph.nodes.length) throw new Error('the new tab is not blank');
        await cmd.execute('Workspace.PreviousOpenedWorkflow'); }""")
    page.wait_for_function("() => window.app.graph.nodes.length > 0")


def _reload(page) -> None:
    page.reload(wait_until="domcontentloaded")
    _wait_for_app(page)
    page.wait_for_function("() => window.app.graph.nodes.length > 0")


def _history_outputs(server, node_id: int) -> dict:
    """The UI output of ``node_id`` in the last run, once the server is idle."""
    deadline = time.monotonic() + 60
    while (queue := server.get("/queue"))["queue_running"] or queue["queue_pending"]:
        assert time.monotonic() < deadline, "the server is still busy after 60 s"
        time.sleep(0.1)
    (entry,) = server.get("/history?max_items=1").values()
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry["outputs"][str(node_id)]


# --------------------------------------------------------------------------------------------- tests


def _grid_value(raw: np.ndarray, x: int, y: int, grid_w: int, grid_h: int) -> float:
    """The probe's expected value: the area mean of the raw map over the grid cell holding pixel (x, y)."""
    from importlib import util

    spec = util.spec_from_file_location("anydepth_preview_grid", REPO / "nodes" / "preview.py")
    assert spec is not None
    # nodes/preview.py imports only the library, torch and PIL: safe outside ComfyUI
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    grid = module.downsample_depth(torch.from_numpy(raw))
    assert tuple(grid.shape) == (grid_h, grid_w)
    h, w = raw.shape
    return float(grid[min(y * grid_h // h, grid_h - 1), min(x * grid_w // w, grid_w - 1)])


def test_preview_probe_and_colormap_after_running_a_workflow(server, page, setup):
    start = time.monotonic()
    assert [status for url, status in page.scripts if url.endswith("/anydepth_depth_preview.js")] == [200]
    ids = _load(page, "metric_depth_to_png16", {"AnyDepthEstimate": {"input_size": 56},
                                                "AnyDepthLoadModel": {"model": METRIC_OPTION}}, "AnyDepthEstimate")
    assert sorted(t for t in ids if t.startswith("AnyDepth")) == ["AnyDepthColormap", "AnyDepthEstimate", "AnyDepthLoadModel",
                                                                  "AnyDepthSave", "AnyDepthToImage"]
    estimate = ids["AnyDepthEstimate"]
    # before any run: the preview widget is there and its colour-map box lists the library's maps, inferno chosen
    assert page.evaluate(f"""() => window.app.graph.getNodeById({estimate}).widgets
        .filter(w => w.name === 'anydepth_depth_preview').length""") == 1
    select = page.locator(f"{_preview(estimate)} select[data-anydepth-colormap]")
    assert select.evaluate("s => Array.from(s.options).map(o => o.value)") == list(COLORMAPS)
    assert select.input_value() == "inferno"
    _queue(page)
    try:
        _shown_image(page, estimate, timeout=60_000)
    except PlaywrightTimeout:
        raise AssertionError(f"no preview; console: {page.messages[-20:]}\nserver log:\n{server.log[-3000:]}") from None
    canvas = page.locator(f"{_preview(estimate)} [data-anydepth-canvas]")
    assert canvas.evaluate("c => [c.width, c.height]") == [96, 64]
    assert canvas.get_attribute("data-anydepth-colormap") == "inferno"
    box = canvas.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 30, box

    # the probe: hover a point of the preview, read the value, compare it with the raw depth the graph saved
    probe = page.locator(f"{_preview(estimate)} [data-anydepth-probe]")
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    try:
        probe.evaluate("p => new Promise((ok, no) => { const t = Date.now(); (function poll() { "
                       "if (p.dataset.value !== undefined) ok(); else if (Date.now() - t > 10000) no(); "
                       "else setTimeout(poll, 50); })(); })")
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"depth_preview_failed_{setup.id}.png"))
        hit = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y); return e && e.outerHTML.slice(0, 300); }",
                            [box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5])
        raise AssertionError(f"the probe did not answer the hover; box {box}, element there: {hit}") from None
    value = float(probe.get_attribute("data-value"))
    x, y = int(probe.get_attribute("data-x")), int(probe.get_attribute("data-y"))
    text = probe.text_content()
    assert text.endswith(" m") and f"({x}, {y})" in text, text
    assert float(text.split(": ")[1][:-2]) == pytest.approx(value, abs=5e-4)
    (saved,) = _history_outputs(server, ids["AnyDepthSave"])["depth_files"]  # this run's raw map
    raw = np.load(server.base / "output" / saved["subfolder"] / saved["filename"])
    assert raw.shape == (64, 96)
    assert 0 <= x < 96 and 0 <= y < 64
    payload = page.evaluate(f"() => window.app.graph.getNodeById({estimate}).anydepthPreview.payload")
    assert (payload["grid_width"], payload["grid_height"]) == (96, 64)  # below 128 px: the grid is the raw map itself
    assert value == pytest.approx(raw[y, x], rel=1e-5, abs=1e-6)
    assert value == pytest.approx(_grid_value(raw, x, y, 96, 64), rel=1e-5, abs=1e-6)
    assert 0.0 < value <= 20.0  # metres within the tiny metric model's range

    # the colour map is the library's (within one 8-bit level); the switch recolours the preview
    def pixels() -> np.ndarray:
        flat = canvas.evaluate("c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
        return np.asarray(flat, dtype=np.int64).reshape(64, 96, 4)

    grey = np.asarray(Image.open(server.base / "temp" / payload["image"]["filename"]))
    assert grey.shape == (64, 96) and grey.dtype == np.uint8
    metres = raw[np.isfinite(raw)]
    expected_grey = np.round(255 * (metres.max() - raw) / (metres.max() - metres.min()))  # metric_linear, near = white
    assert np.abs(grey.astype(int) - expected_grey).max() <= 1
    inferno = pixels()
    expected = np.round(255 * apply_colormap(torch.from_numpy(grey / 255.0)[None].float(), "inferno")[0].numpy())
    assert np.abs(inferno[..., :3] - expected).max() <= 1 and (inferno[..., 3] == 255).all()
    select.select_option("gray")
    assert canvas.get_attribute("data-anydepth-colormap") == "gray"
    assert (pixels()[..., :3] == grey[..., None]).all()
    assert page.evaluate(f"() => window.app.graph.getNodeById({estimate}).properties.anydepth_colormap") == "gray"
    select.select_option("inferno")
    assert np.array_equal(pixels(), inferno)
    assert page.locator(f"{_preview(estimate)} [data-anydepth-range]").text_content() == (
        f"96×64 · far {metres.max():.3f} m … near {metres.min():.3f} m")

    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.screenshot(path=str(ARTIFACTS / f"depth_preview_{setup.id}.png"))
    assert not _ours(page.messages), _ours(page.messages)
    assert time.monotonic() - start < 90


def test_preview_stays_after_a_cached_run_a_reload_and_a_tab_switch(server, page, setup):
    """image_to_depth_map.json (Estimate Depth + Depth to Image) shows the preview; it stays like core's previews."""
    ids = _load(page, "image_to_depth_map", {"AnyDepthEstimate": {"input_size": 56}}, "AnyDepthEstimate")
    estimate = ids["AnyDepthEstimate"]
    assert "AnyDepthAnything" not in ids and "AnyDepthToImage" in ids
    _record_events(page)
    _queue(page)
    name = _shown_image(page, estimate, timeout=60_000)
    assert name == _history_outputs(server, estimate)["anydepth_depth"][0]["image"]["filename"]

    # a cached run: ComfyUI executes nothing but re-sends the output node's preview, which is drawn again
    _record_events(page)
    page.evaluate(f"""() => {{ const p = window.app.graph.getNodeById({estimate}).anydepthPreview;  // as if it were gone
        p.payload = null; delete p.root.dataset.anydepthImage; }}""")
    _queue(page)
    _wait_for_image(page, estimate, name, "a cached run", server)
    events = page.evaluate("() => window.anydepthEvents")
    cached = [set(detail["nodes"]) for kind, detail in events if kind == "execution_cached"]
    assert cached and str(estimate) in cached[-1]  # nothing was computed
    assert any(kind == "executed" and detail["node"] == str(estimate) and "anydepth_depth" in detail["output"]
               for kind, detail in events)

    _reload(page)
    _wait_for_image(page, estimate, name, "a page reload", server)
    _switch_tab_and_back(page)
    _wait_for_image(page, estimate, name, "a workflow-tab switch", server)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"depth_preview_after_tab_switch_{setup.id}.png"))
    assert not _ours(page.messages), _ours(page.messages)


def _viewers(page) -> dict[str, dict]:
    """The dataset of every 3D viewer on the page, keyed by its node id."""
    return page.evaluate("""() => Object.fromEntries(window.app.graph.nodes.filter(n => n.anydepthViewer)
        .map(n => [String(n.id), {...n.anydepthViewer.root.dataset, width: n.anydepthViewer.canvas.width,
                                  css: n.anydepthViewer.canvas.clientWidth * (window.devicePixelRatio || 1)}]))""")


def _wait_for_viewers(page, urls: dict[str, str], what: str) -> dict[str, dict]:
    try:
        page.wait_for_function("""(urls) => Object.entries(urls).every(([id, url]) => {
            const n = window.app.graph.getNodeById(id); return n?.anydepthViewer?.root.dataset.url === url
                && n.anydepthViewer.root.dataset.frames; })""", arg=urls, timeout=30_000)
    except PlaywrightTimeout:
        raise AssertionError(f"the 3D viewers did not show {urls} after {what}: {_viewers(page)}; "
                             f"console: {page.messages[-10:]}") from None
    return _viewers(page)


def _resize_by_corner(page, node_id: int, nodes2: bool, dx: float, dy: float) -> None:
    """Drag the node's bottom-right corner as a user does (Nodes 2.0: its resize handle; classic: the canvas corner)."""
    if nodes2:
        box = page.locator(f"[data-node-id='{node_id}'] .cursor-se-resize").first.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    else:
        x, y = page.evaluate("""(id) => { const app = window.app, n = app.graph.getNodeById(id);
            const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
            const r = app.canvas.canvas.getBoundingClientRect(); return [r.left + cx - 4, r.top + cy - 4]; }""", node_id)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=6)
    page.mouse.move(x + dx, y + dy, steps=6)
    page.mouse.up()


def test_point_cloud_viewers_show_resize_and_stay(server, page, setup):
    """Any-View Geometry shows its cloud, Geometry to Point Cloud the cloud it saved; both follow a resize of their
    node and come back after a reload and a tab switch; the frontend's three.js stays the only one on the page."""
    ids = _load(page, "photos_to_point_cloud", {"AnyDepthAnyViewGeometry": {"process_res": 56}}, "AnyDepthAnyViewGeometry",
                at=(120, 40))  # room below and to the right for the resize
    geometry, cloud = ids["AnyDepthAnyViewGeometry"], ids["AnyDepthGeometryToPointCloud"]
    _queue(page)
    page.wait_for_function(f"""() => [{geometry}, {cloud}].every(id =>
        window.app.graph.getNodeById(id).anydepthViewer?.root.dataset.frames)""", timeout=60_000)
    shown = _history_outputs(server, geometry)["anydepth_geometry"][0]
    saved = _history_outputs(server, cloud)["point_clouds"]
    assert [f["filename"][-4:] for f in saved] == [".ply", ".glb"]
    url = lambda f: f"/api/view?{urllib.parse.urlencode({'filename': f['filename'], 'subfolder': f['subfolder'], 'type': f['type']})}"  # noqa: E731
    urls = {str(geometry): url(shown), str(cloud): url(saved[0])}  # Geometry to Point Cloud: the PLY in output/
    viewers = _wait_for_viewers(page, urls, "the run")
    for view in viewers.values():
        assert int(view["points"]) > 100 and view["cameras"] == "3"
        assert view["webgl"] == "ok", view  # chromium's software WebGL
    before = viewers[str(geometry)]
    assert before["width"] == round(before["css"])

    _resize_by_corner(page, geometry, setup.nodes2, 200, 120)
    try:
        page.wait_for_function("""([id, size, frames]) => { const v = window.app.graph.getNodeById(id).anydepthViewer;
            return v.root.dataset.size !== size && Number(v.root.dataset.frames) > frames; }""",
                               arg=[geometry, before["size"], int(before["frames"])], timeout=10_000)
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"point_cloud_resize_failed_{setup.id}.png"))
        raise AssertionError(f"the viewer was not redrawn at the new size: {_viewers(page)}") from None
    after = _viewers(page)[str(geometry)]
    assert after["width"] == round(after["css"]) and after["width"] >= before["width"] + 150  # drawn at the new size
    lit = page.evaluate("""(id) => { const c = window.app.graph.getNodeById(id).anydepthViewer.canvas;
        const gl = c.getContext('webgl'); const px = new Uint8Array(c.width * c.height * 4);
        gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
        let lit = 0; for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 3 * 0x30) lit++; return lit; }""",
                        geometry)
    assert lit > 200  # points drawn, not the empty background
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"point_cloud_viewer_{setup.id}.png"))

    _reload(page)
    _wait_for_viewers(page, urls, "a page reload")
    _switch_tab_and_back(page)
    _wait_for_viewers(page, urls, "a workflow-tab switch")
    assert not [m for m in page.messages if "Multiple instances of Three.js" in m[1]]
    assert not _ours(page.messages), _ours(page.messages)


_NEW_VIEWER = """
        const m = await import(module);
        const viewer = new m.PointCloudViewer();
        viewer.root.style.cssText += ';position:fixed;left:0;top:0;width:400px;height:300px;z-index:10000';
        document.body.appendChild(viewer.root);
        window.anydepthTestViewer = viewer;"""
"""Page script: a 400×300 viewer of the module at ``module`` on top of the page (window.anydepthTestViewer)."""


def test_viewer_orbit_zoom_and_point_size_on_a_written_ply(server, page, setup):
    """The viewer component on a PLY of anydepth.geometry.write_ply, served by /view?type=output: the parsed points and
    colours, the point-size slider, a drag that orbits and a wheel that zooms."""
    from anydepth.geometry import PointCloud, camera_frusta, write_ply

    rng = np.random.default_rng(3)
    points = torch.from_numpy(rng.normal(size=(500, 3)).astype(np.float32)) + torch.tensor([0.0, 0.0, 4.0])
    colors = torch.from_numpy(rng.integers(0, 256, size=(500, 3)).astype(np.uint8))
    cloud = PointCloud(points=points, colors=colors, view=torch.zeros(500, dtype=torch.int64))
    intrinsics = torch.tensor([[[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]]).repeat(2, 1, 1)
    extrinsics = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1)[None].repeat(2, 1, 1)
    extrinsics[1, 0, 3] = -0.5
    folder = server.base / "output" / "viewer"
    folder.mkdir(parents=True, exist_ok=True)
    write_ply(folder / "cloud.ply", cloud, camera_frusta(intrinsics, extrinsics, (48, 64), scale=0.3))

    got = page.evaluate("""async (module) => {""" + _NEW_VIEWER + """
        const d = await viewer.load('/view?filename=cloud.ply&subfolder=viewer&type=output');
        const input = viewer.root.querySelector('[data-anydepth-point-size]');
        input.value = '4'; input.dispatchEvent(new Event('input'));
        return {points: d.points, cameras: d.cameras, positions: Array.from(d.positions.slice(0, 1500)),
                colors: Array.from(d.colors.slice(0, 1500)), edges: d.edgePositions.length / 6,
                webgl: viewer.root.dataset.webgl, size: viewer.root.dataset.pointSize, pointSize: viewer.pointSize};
    }""", f"{EXTENSION_URL}anydepth_pointcloud.js")
    assert (got["points"], got["cameras"], got["edges"]) == (500, 2, 16)
    np.testing.assert_array_equal(np.asarray(got["positions"], dtype=np.float32).reshape(500, 3), points.numpy())
    np.testing.assert_allclose(np.asarray(got["colors"]).reshape(500, 3) * 255, colors.numpy(), atol=1e-3)
    assert got["size"] == "4" and got["pointSize"] == 4 and got["webgl"] == "ok"
    view = page.evaluate("""() => {
        const v = window.anydepthTestViewer, c = v.canvas;
        const gl = c.getContext('webgl'); const px = new Uint8Array(c.width * c.height * 4);
        gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
        let lit = 0; for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 3 * 0x30) lit++;
        const before = {...v.orbit};
        const at = (type, x, y) => c.dispatchEvent(new PointerEvent(type, {clientX: x, clientY: y, pointerId: 1, bubbles: true}));
        at('pointerdown', 100, 100); at('pointermove', 150, 120); at('pointerup', 150, 120);
        c.dispatchEvent(new WheelEvent('wheel', {deltaY: 100, bubbles: true, cancelable: true}));
        return {lit, theta: [before.theta, v.orbit.theta], phi: [before.phi, v.orbit.phi], radius: [before.radius, v.orbit.radius]};
    }""")
    assert view["lit"] > 200, view
    assert view["theta"][1] == pytest.approx(view["theta"][0] - 0.5)
    assert view["phi"][1] == pytest.approx(view["phi"][0] - 0.2)
    assert view["radius"][1] == pytest.approx(view["radius"][0] * np.exp(0.1))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"point_cloud_component_{setup.id}.png"), clip={"x": 0, "y": 0, "width": 400, "height": 300})
    page.evaluate("() => window.anydepthTestViewer.root.remove()")
    assert not _ours(page.messages), _ours(page.messages)


def _glb_extras(path: Path) -> dict:
    """The scene extras of a GLB written by anydepth (its JSON chunk, read here without the viewer's code)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[12:16], "little")
    doc = json.loads(raw[20:20 + size])
    return doc["scenes"][doc.get("scene", 0)].get("extras", {})


def _box(centre: tuple[float, float, float], half: float, rgb: tuple[int, int, int]):
    """A cube with 4 vertices per face (flat normals: each face is shaded on its own): 24 vertices, 12 triangles."""
    from anydepth.mesh import TriangleMesh

    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float32)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    verts = np.concatenate([corners[list(q)] for q in quads]) * half + np.asarray(centre, dtype=np.float32)
    faces = np.array([[4 * f, 4 * f + 1, 4 * f + 2] for f in range(6)] + [[4 * f, 4 * f + 2, 4 * f + 3] for f in range(6)])
    colors = np.tile(np.asarray(rgb, dtype=np.uint8), (24, 1))
    return TriangleMesh(torch.from_numpy(verts), torch.from_numpy(faces), torch.from_numpy(colors))


def test_glb_viewer_reads_meshes_points_and_cameras(server, page, setup):
    """The viewer on the GLB files anydepth writes (a mesh with cameras: anydepth.mesh.write_mesh; points with cameras:
    anydepth.geometry.write_glb; a mesh without colours like core's SaveGLB) and on a mesh PLY: the parsed vertices,
    colours and triangles equal the written ones, every triangle / point / camera line is drawn, and the mesh is
    shaded (one colour, several brightnesses once the view is turned)."""
    from anydepth.geometry import GlbPrimitive, PointCloud, apply_transform, camera_frusta, glb_alignment, write_glb, write_glb_scene
    from anydepth.mesh import write_mesh

    box = _box((0.0, 0.0, 4.0), 0.5, (230, 20, 10))
    intrinsics = torch.tensor([[[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]]).repeat(2, 1, 1)
    extrinsics = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1)[None].repeat(2, 1, 1)
    extrinsics[1, 0, 3] = -0.5
    frusta = camera_frusta(intrinsics, extrinsics, (48, 64), scale=0.3)
    transform = glb_alignment(extrinsics[0], box.vertices)
    rng = np.random.default_rng(4)
    points = torch.from_numpy(rng.normal(size=(300, 3)).astype(np.float32)) + torch.tensor([0.0, 0.0, 4.0])
    colors = torch.from_numpy(rng.integers(0, 256, size=(300, 3)).astype(np.uint8))
    folder = server.base / "output" / "viewer_glb"
    folder.mkdir(parents=True, exist_ok=True)
    write_mesh(folder / "mesh.glb", box, transform=transform, frusta=frusta)
    write_mesh(folder / "mesh.ply", box)
    write_glb(folder / "cloud.glb", PointCloud(points=points, colors=colors, view=torch.zeros(300, dtype=torch.int64)),
              frusta, transform=transform)
    write_glb_scene(folder / "plain.glb", [GlbPrimitive("mesh", box.vertices.numpy(), None, 4, box.faces.numpy())])
    assert _glb_extras(folder / "mesh.glb")["anydepth_faces"] == 12

    got = page.evaluate("""async (module) => {""" + _NEW_VIEWER + """
        const out = {};
        const lit = () => { const c = viewer.canvas, gl = c.getContext('webgl'); const px = new Uint8Array(c.width * c.height * 4);
            gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
            const reds = [];  // red on the grey background: the box's pixels
            for (let i = 0; i < px.length; i += 4) if (px[i] > 0x44 && px[i + 1] < 0x30 && px[i + 2] < 0x30) reds.push(px[i]);
            return reds; };
        for (const name of ['mesh.glb', 'cloud.glb', 'plain.glb', 'mesh.ply']) {
            const d = await viewer.load(`/view?filename=${name}&subfolder=viewer_glb&type=output`);
            const reds = lit();
            out[name] = {...viewer.root.dataset, positions: Array.from(d.positions), colors: Array.from(d.colors),
                meshPositions: Array.from(d.meshPositions), meshColors: Array.from(d.meshColors),
                meshIndices: Array.from(d.meshIndices), edges: d.edgePositions.length / 6, frame: d.frame,
                reds: reds.length, redRange: reds.length ? Math.max(...reds) - Math.min(...reds) : 0};
            if (name === 'mesh.glb') { // turn the view: the front face and a side face at different angles to the light
                viewer.orbit.theta = 0.6; viewer.render();
                const turned = lit();
                out.turned = {reds: turned.length, redRange: Math.max(...turned) - Math.min(...turned)};
            }
        }
        viewer.root.remove();
        return out;
    }""", f"{EXTENSION_URL}anydepth_pointcloud.js")
    expected_mesh = apply_transform(box.vertices, transform)
    mesh = got["mesh.glb"]
    assert (mesh["format"], mesh["frame"], mesh["webgl"]) == ("glb", "gltf", "ok")
    assert (mesh["points"], mesh["cameras"], mesh["triangles"], mesh["vertices"], mesh["lines"]) == ("0", "2", "12", "24", "16")
    assert (mesh["drawnTriangles"], mesh["drawnLines"], mesh["drawnPoints"]) == ("12", "16", "0")
    np.testing.assert_array_equal(np.asarray(mesh["meshPositions"], dtype=np.float32).reshape(-1, 3), expected_mesh)
    np.testing.assert_array_equal(np.asarray(mesh["meshIndices"]).reshape(-1, 3), box.faces.numpy())
    np.testing.assert_allclose(np.asarray(mesh["meshColors"]).reshape(-1, 3) * 255, box.colors.numpy(), atol=1e-3)
    assert mesh["reds"] > 2000  # the red box fills part of the view, head on
    assert got["turned"]["reds"] > 2000 and got["turned"]["redRange"] > 25  # two faces, two brightnesses: shaded

    cloud = got["cloud.glb"]
    assert (cloud["points"], cloud["cameras"], cloud["triangles"], cloud["drawnPoints"], cloud["drawnLines"]) == (
        "300", "2", "0", "300", "16")
    np.testing.assert_array_equal(np.asarray(cloud["positions"], dtype=np.float32).reshape(-1, 3),
                                  apply_transform(points, transform))
    np.testing.assert_allclose(np.asarray(cloud["colors"]).reshape(-1, 3) * 255, colors.numpy(), atol=1e-3)

    plain = got["plain.glb"]  # no COLOR_0: a light grey mesh, no cameras
    assert (plain["triangles"], plain["cameras"], plain["drawnTriangles"], plain["drawnLines"]) == ("12", "0", "12", "0")
    assert set(np.round(plain["meshColors"], 3)) == {0.8}

    ply = got["mesh.ply"]  # Save Mesh's PLY: the world frame (OpenCV axes), turned y up for the view
    assert (ply["format"], ply["frame"], ply["points"], ply["triangles"], ply["drawnTriangles"]) == ("ply", "opencv", "0", "12", "12")
    np.testing.assert_array_equal(np.asarray(ply["meshPositions"], dtype=np.float32).reshape(-1, 3), box.vertices.numpy())
    assert ply["reds"] > 2000
    assert not _ours(page.messages), _ours(page.messages)


def test_glb_viewer_on_save_mesh_shows_the_saved_mesh_and_stays(server, page, setup):
    """photos_to_mesh.json: Save Mesh's viewer shows the GLB it saved (the mesh and the three cameras), drawn, and
    back after a page reload; core's Preview 3D still gets the file's path."""
    ids = _load(page, "photos_to_mesh", {"AnyDepthAnyViewGeometry": {"process_res": 56}}, "AnyDepthSaveMesh", at=(120, 40))
    save = ids["AnyDepthSaveMesh"]
    # room for the viewer (the workflow was laid out before Save Mesh had one)
    page.evaluate("(id) => { const n = window.app.graph.getNodeById(id); n.setSize([420, 420]); n.setDirtyCanvas(true, true); }", save)
    _queue(page)
    try:
        page.wait_for_function(f"() => window.app.graph.getNodeById({save}).anydepthViewer?.root.dataset.frames", timeout=90_000)
    except PlaywrightTimeout:
        raise AssertionError(f"no mesh in the viewer: {_viewers(page)}; console: {page.messages[-10:]}\n"
                             f"server log:\n{server.log[-3000:]}") from None
    outputs = _history_outputs(server, save)
    (saved,) = outputs["3d"]
    assert outputs["anydepth_geometry"] == [saved] and saved["filename"].endswith(".glb")
    extras = _glb_extras(server.base / "output" / saved["subfolder"] / saved["filename"])
    url = f"/api/view?{urllib.parse.urlencode({'filename': saved['filename'], 'subfolder': saved['subfolder'], 'type': 'output'})}"
    view = _wait_for_viewers(page, {str(save): url}, "the run")[str(save)]
    assert (view["format"], view["webgl"], view["points"]) == ("glb", "ok", "0"), view
    assert int(view["triangles"]) == extras["anydepth_faces"] > 100 and int(view["vertices"]) == extras["anydepth_vertices"]
    assert view["cameras"] == "3" and view["lines"] == str(3 * 8)
    assert (view["drawnTriangles"], view["drawnLines"]) == (view["triangles"], view["lines"])
    assert view["width"] > 100, view
    lit = page.evaluate("""(id) => { const c = window.app.graph.getNodeById(id).anydepthViewer.canvas;
        const gl = c.getContext('webgl'); const px = new Uint8Array(c.width * c.height * 4);
        gl.readPixels(0, 0, c.width, c.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
        let lit = 0;  // pixels away from the background colour (0x20 grey)
        for (let i = 0; i < px.length; i += 4) if ([0, 1, 2].reduce((s, c) => s + Math.abs(px[i + c] - 0x20), 0) > 12) lit++;
        return lit; }""", save)
    assert lit > 500  # the mesh is drawn, not only the background
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"mesh_viewer_{setup.id}.png"))
    _reload(page)
    _wait_for_viewers(page, {str(save): url}, "a page reload")
    assert not _ours(page.messages), _ours(page.messages)
