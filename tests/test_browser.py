"""The frontend extension in a real browser: Debian's chromium, driven by Playwright, against the real ComfyUI server.

ComfyUI 0.3.75 serves the real ``comfyui-frontend-package`` 1.32.9 and this pack's ``js/``; the test loads a
workflow from ``workflows/``, queues it with the tiny metric model, then checks the depth preview drawn on the
Estimate Depth node, its colour-map switch and its value probe against the raw depth the graph saved.
A screenshot lands in ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright  # the test extra's; its own browser download is never used

from anydepth.normalize import apply_colormap

from comfy_harness import METRIC_OPTION, PACK_FOLDER_NAME, REPO, comfy_server, install_tiny_models  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
WORKFLOW = REPO / "workflows" / "metric_depth_to_png16.json"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")


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


@pytest.fixture(scope="module")
def server(comfy_server):
    install_tiny_models(comfy_server.base / "models")
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, 96, dtype=np.float64)[None, :, None] * np.ones((64, 1, 3))
    image = np.clip(ramp + rng.normal(0, 20, ramp.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(comfy_server.base / "input" / "example.png")
    return comfy_server


@pytest.fixture(scope="module")
def page(server):
    # a first visit opens the templates dialog over the canvas: the user has seen it already
    request = urllib.request.Request(server.url + "/settings/Comfy.TutorialCompleted", data=b"true", method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).close()
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
            page.wait_for_function("() => window.app?.graph && window.app.extensions?.some(e => e.name === 'anydepth.DepthPreview')",
                                   timeout=60_000)
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


EXTENSION_URL = f"/extensions/{urllib.parse.quote(PACK_FOLDER_NAME)}/"


def _ours(messages) -> list:
    """Errors raised by or logged from our extension: its script URL or its ``anydepth.`` namespace.

    Not the frontend's own lookups that merely name our node types (e.g. the comfy.org registry request for
    ``AnyDepthLoadModel``, blocked by the CSP of ``--disable-api-nodes``).
    """
    return [m for m in messages if m[0] in ("error", "pageerror")
            and (EXTENSION_URL in m[1] + m[2] or "anydepth." in m[1] or "anydepth_depth_preview.js" in m[1] + m[2])]


def test_preview_probe_and_colormap_after_running_a_workflow(server, page):
    start = time.monotonic()
    assert [status for url, status in page.scripts if url.endswith("/anydepth_depth_preview.js")] == [200]
    workflow = json.loads(WORKFLOW.read_text())
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    types = page.evaluate("() => window.app.graph.nodes.map(n => n.type)")
    assert sorted(t for t in types if t.startswith("AnyDepth")) == ["AnyDepthColormap", "AnyDepthEstimate", "AnyDepthLoadModel",
                                                                    "AnyDepthSave", "AnyDepthToImage"]
    # the Estimate Depth node carries the preview widget before any run
    widget = page.evaluate("""() => { const n = window.app.graph.nodes.find(n => n.type === 'AnyDepthEstimate');
        return n.widgets.filter(w => w.name === 'anydepth_depth_preview').length; }""")
    assert widget == 1
    assert page.locator("[data-anydepth-probe]").count() == 1
    # small input for the tiny model, then queue; centre the Estimate Depth node in view
    page.evaluate("""async (model) => {
        const app = window.app;
        const est = app.graph.nodes.find(n => n.type === 'AnyDepthEstimate');
        est.widgets.find(w => w.name === 'input_size').value = 56;
        app.graph.nodes.find(n => n.type === 'AnyDepthLoadModel').widgets.find(w => w.name === 'model').value = model;
        const ds = app.canvas.ds; ds.scale = 1;
        ds.offset[0] = 450 - est.pos[0]; ds.offset[1] = 250 - est.pos[1];
        app.canvas.setDirty(true, true);
        await app.queuePrompt(0, 1);
    }""", METRIC_OPTION)
    try:
        page.wait_for_selector("[data-anydepth-preview][data-anydepth-ready='1']", state="attached", timeout=60_000)
    except PlaywrightTimeout:
        raise AssertionError(f"no preview; console: {page.messages[-20:]}\nserver log:\n{server.log[-3000:]}") from None
    canvas = page.locator("[data-anydepth-canvas]")
    assert page.evaluate("() => { const c = document.querySelector('[data-anydepth-canvas]'); return [c.width, c.height]; }") == [96, 64]
    assert canvas.get_attribute("data-anydepth-colormap") == "inferno"
    box = canvas.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50, box

    # the probe: hover a point of the preview, read the value, compare it with the raw depth the graph saved
    probe = page.locator("[data-anydepth-probe]")
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    try:
        page.wait_for_function("() => document.querySelector('[data-anydepth-probe]').dataset.value !== undefined",
                               timeout=10_000)
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "depth_preview_failed.png"))
        hit = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y); return e && e.outerHTML.slice(0, 300); }",
                            [box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5])
        raise AssertionError(f"the probe did not answer the hover; box {box}, element there: {hit}") from None
    value = float(probe.get_attribute("data-value"))
    x, y = int(probe.get_attribute("data-x")), int(probe.get_attribute("data-y"))
    text = probe.text_content()
    assert text.endswith(" m") and f"({x}, {y})" in text, text
    assert float(text.split(": ")[1][:-2]) == pytest.approx(value, abs=5e-4)
    (entry,) = server.get("/history?max_items=1").values()  # this run: Save Depth (node 4) wrote the raw map
    (saved,) = entry["outputs"]["4"]["depth_files"]
    raw = np.load(server.base / "output" / saved["subfolder"] / saved["filename"])
    assert raw.shape == (64, 96)
    assert 0 <= x < 96 and 0 <= y < 64
    grid_w, grid_h = page.evaluate("""() => { const n = window.app.graph.nodes.find(n => n.type === 'AnyDepthEstimate');
        return [n.anydepthPreview.payload.grid_width, n.anydepthPreview.payload.grid_height]; }""")
    assert (grid_w, grid_h) == (96, 64)  # below 128 px: the grid is the raw map itself
    assert value == pytest.approx(raw[y, x], rel=1e-5, abs=1e-6)
    assert value == pytest.approx(_grid_value(raw, x, y, grid_w, grid_h), rel=1e-5, abs=1e-6)
    assert 0.0 < value <= 20.0  # metres within the tiny metric model's range

    # the colour map is the library's (within one 8-bit level); the switch recolours the preview
    def pixels() -> np.ndarray:
        flat = page.evaluate("""() => { const c = document.querySelector('[data-anydepth-canvas]');
            return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
        return np.asarray(flat, dtype=np.int64).reshape(64, 96, 4)

    name = page.evaluate("() => window.app.graph.nodes.find(n => n.type === 'AnyDepthEstimate').anydepthPreview.payload.image.filename")
    grey = np.asarray(Image.open(server.base / "temp" / name))
    assert grey.shape == (64, 96) and grey.dtype == np.uint8
    metres = raw[np.isfinite(raw)]
    expected_grey = np.round(255 * (metres.max() - raw) / (metres.max() - metres.min()))  # metric_linear, near = white
    assert np.abs(grey.astype(int) - expected_grey).max() <= 1
    inferno = pixels()
    expected = np.round(255 * apply_colormap(torch.from_numpy(grey / 255.0)[None].float(), "inferno")[0].numpy())
    assert np.abs(inferno[..., :3] - expected).max() <= 1 and (inferno[..., 3] == 255).all()
    page.locator("[data-anydepth-colormap]").first.select_option("gray")
    assert canvas.get_attribute("data-anydepth-colormap") == "gray"
    gray = pixels()
    assert (gray[..., :3] == grey[..., None]).all()
    assert page.evaluate("() => window.app.graph.nodes.find(n => n.type === 'AnyDepthEstimate').properties.anydepth_colormap") == "gray"
    page.locator("[data-anydepth-colormap]").first.select_option("inferno")
    assert np.array_equal(pixels(), inferno)
    assert page.locator("[data-anydepth-range]").text_content() == f"96×64 · far {metres.max():.3f} m … near {metres.min():.3f} m"

    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    page.screenshot(path=str(ARTIFACTS / "depth_preview.png"))
    assert (ARTIFACTS / "depth_preview.png").stat().st_size > 10_000
    assert not _ours(page.messages), _ours(page.messages)
    assert time.monotonic() - start < 90


def test_point_cloud_viewer_shows_a_ply_from_the_output_folder(server, page):
    """The viewer component on a PLY of anydepth.geometry.write_ply, served by /view?type=output.

    No node sends it a file yet (the Any-View Geometry node is not there), so the test builds the viewer
    from the extension's module in the page, as a node would.
    """
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

    module = f"{EXTENSION_URL}anydepth_pointcloud.js"
    got = page.evaluate("""async (module) => {
        const m = await import(module);
        const viewer = new m.PointCloudViewer();
        viewer.root.style.cssText += ';position:fixed;left:0;top:0;width:400px;height:300px;z-index:10000';
        document.body.appendChild(viewer.root);
        window.anydepthTestViewer = viewer;
        const d = await viewer.load('/view?filename=cloud.ply&subfolder=viewer&type=output');
        const input = viewer.root.querySelector('[data-anydepth-point-size]');
        input.value = '4'; input.dispatchEvent(new Event('input'));
        return {points: d.points, cameras: d.cameras, positions: Array.from(d.positions.slice(0, 1500)),
                colors: Array.from(d.colors.slice(0, 1500)), edges: d.edgePositions.length / 6,
                webgl: viewer.root.dataset.webgl, size: viewer.root.dataset.pointSize,
                material: viewer.material ? viewer.material.size : null};
    }""", module)
    assert (got["points"], got["cameras"], got["edges"]) == (500, 2, 16)
    np.testing.assert_array_equal(np.asarray(got["positions"], dtype=np.float32).reshape(500, 3), points.numpy())
    np.testing.assert_allclose(np.asarray(got["colors"]).reshape(500, 3) * 255, colors.numpy(), atol=1e-3)
    assert got["size"] == "4"
    assert got["webgl"] in ("ok", "unavailable")  # headless chromium with --disable-gpu may have no WebGL
    if got["webgl"] == "ok":
        assert got["material"] == 4
        # drawn: many pixels differ from the background; a drag orbits, the wheel zooms by exp(deltaY / 1000)
        view = page.evaluate("""() => {
            const v = window.anydepthTestViewer, c = v.canvas;
            const probe = document.createElement('canvas'); probe.width = c.width; probe.height = c.height;
            const ctx = probe.getContext('2d'); ctx.drawImage(c, 0, 0);
            const px = ctx.getImageData(0, 0, c.width, c.height).data;
            let lit = 0; for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 3 * 0x30) lit++;
            const before = {...v.orbit};
            const at = (type, x, y, extra = {}) => c.dispatchEvent(new PointerEvent(type, {clientX: x, clientY: y, pointerId: 1, bubbles: true, ...extra}));
            at('pointerdown', 100, 100); at('pointermove', 150, 120); at('pointerup', 150, 120);
            c.dispatchEvent(new WheelEvent('wheel', {deltaY: 100, bubbles: true, cancelable: true}));
            return {lit, theta: [before.theta, v.orbit.theta], phi: [before.phi, v.orbit.phi], radius: [before.radius, v.orbit.radius]};
        }""")
        assert view["lit"] > 200, view
        assert view["theta"][1] == pytest.approx(view["theta"][0] - 0.5)
        assert view["phi"][1] == pytest.approx(view["phi"][0] - 0.2)
        assert view["radius"][1] == pytest.approx(view["radius"][0] * np.exp(0.1))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "point_cloud_viewer.png"), clip={"x": 0, "y": 0, "width": 400, "height": 300})
    page.evaluate("() => window.anydepthTestViewer.root.remove()")
    assert not _ours(page.messages), _ours(page.messages)
