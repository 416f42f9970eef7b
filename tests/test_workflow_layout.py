"""The shipped workflows open in ComfyUI's frontend with no node covering another, and are what the tool builds.

A node's rectangle is the one the frontend (comfyui-frontend-package 1.32.9, LiteGraph) draws: the title bar of
NODE_TITLE_HEIGHT above ``pos``, and a body at least as tall as ``computeSize()`` makes it when the graph is
opened — a row of NODE_SLOT_HEIGHT per socket row, NODE_WIDGET_HEIGHT + 4 per widget, 8 below the widgets — plus
the picture a node shows (image and video previews, the pack's depth preview and 3D viewer). The sizes are worked
out here from the JSON itself, not taken from ``tools/workflows.py``, so a layout that trusts too small a size fails.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))

TITLE_H, SLOT_H, WIDGET_H, WIDGETS_PAD = 30.0, 20.0, 24.0, 8.0
PICTURE_H = {
    # the frontend's image / video preview widget: minimum height 220 (+ 4 spacing); shown by loaders at once and
    # by output nodes after a run (Save Depth shows the PNGs it wrote)
    "LoadImage": 224.0, "PreviewImage": 224.0, "SaveImage": 224.0, "AnyDepthSave": 224.0,
    "LoadVideo": 224.0, "SaveVideo": 224.0,
    "AnyDepthEstimate": 224.0,  # js/anydepth_depth_preview.js: getMinHeight 220
    "AnyDepthAnyViewGeometry": 304.0,  # js/anydepth_pointcloud.js: getMinHeight 300
    "AnyDepthGeometryToPointCloud": 304.0,  # the same viewer shows the cloud it saved
    "AnyDepthSaveMesh": 304.0,  # and the mesh it saved
}
MIN_WIDTH = {"AnyDepthEstimate": 340.0}  # js/anydepth_depth_preview.js widens the node to 340 when it is created

Rect = tuple[float, float, float, float]


def drawn_rect(node: dict) -> Rect:
    """(left, top, right, bottom) of a node as the frontend draws it, title bar included."""
    x, y = node["pos"]
    rows = max(len([i for i in node.get("inputs", []) if "widget" not in i]), len(node.get("outputs", [])), 1)
    widgets = 0 if node["type"] == "Note" else len(node.get("widgets_values", []))
    least = SLOT_H * rows + (WIDGET_H * widgets + WIDGETS_PAD if widgets else 0) + PICTURE_H.get(node["type"], 0.0)
    width = max(node["size"][0], MIN_WIDTH.get(node["type"], 0.0))
    return x, y - TITLE_H, x + width, y + max(node["size"][1], least)


def covered(workflow: dict) -> list[tuple[str, str]]:
    """Pairs of nodes whose rectangles overlap, named by id and type."""
    rects = [(f"{n['id']} {n.get('title') or n['type']}", drawn_rect(n)) for n in workflow["nodes"]]
    pairs = []
    for i, (name_a, a) in enumerate(rects):
        for name_b, b in rects[i + 1:]:
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                pairs.append((name_a, name_b))
    return pairs


def node(id_: int, type_: str, pos: tuple[float, float], size: tuple[float, float], outputs: int, widgets: int) -> dict:
    return {"id": id_, "type": type_, "pos": list(pos), "size": list(size), "inputs": [],
            "outputs": [{"name": f"o{k}"} for k in range(outputs)], "widgets_values": [0] * widgets}


def test_the_check_sees_what_the_frontend_draws():
    # The old shipped layout: Load Image saved 118 px tall, Load Depth Model 50 px below it. Opened, Load Image
    # shows its picture (2 rows + 2 widgets + preview = 320 px) and covers the model loader's title.
    old = {"nodes": [node(1, "LoadImage", (40, 60), (300, 118), outputs=2, widgets=2),
                     node(2, "AnyDepthLoadModel", (40, 228), (300, 142), outputs=1, widgets=3)]}
    assert drawn_rect(old["nodes"][0]) == (40, 30, 340, 380)
    assert covered(old) == [("1 LoadImage", "2 AnyDepthLoadModel")]
    old["nodes"][1]["pos"] = [40, 380 + TITLE_H]  # its title bar starts where the picture ends: nothing covered
    assert covered(old) == []
    # A plain node keeps its saved size when that is larger than what the frontend needs; a title bar counts.
    plain = {"nodes": [node(1, "VAELoader", (40, 60), (300, 200), outputs=1, widgets=1),
                       node(2, "VAELoader", (40, 280), (300, 50), outputs=1, widgets=1)]}
    assert drawn_rect(plain["nodes"][1])[3] == 280 + SLOT_H + WIDGET_H + WIDGETS_PAD
    assert covered(plain) == [("1 VAELoader", "2 VAELoader")]  # the first ends at y 260, the second's title starts at 250


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_no_node_covers_another(path):
    workflow = json.loads(path.read_text())
    assert covered(workflow) == []
    for n in workflow["nodes"]:
        left, top, right, bottom = drawn_rect(n)
        assert top >= 0 and left >= 0, f"{path.name}: node {n['id']} starts off the canvas's first quadrant"
        # the saved size already holds what the frontend will show, so opening the file moves nothing
        assert (right - left, bottom - n["pos"][1]) == tuple(n["size"]), f"{path.name}: node {n['id']} {n['type']}"


def _tool():
    spec = importlib.util.spec_from_file_location("anydepth_workflow_tool", REPO / "tools" / "workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_shipped_workflows_are_what_the_tool_builds():
    # The layout is fixed in tools/workflows.py; a hand edit of a JSON file would be lost on the next run.
    tool = _tool()
    built = {g.name: g.to_json() for g in (make() for make in tool.GRAPHS)}
    assert sorted(built) == [p.stem for p in WORKFLOWS]
    for path in WORKFLOWS:
        assert json.loads(path.read_text()) == built[path.stem], f"run `python tools/workflows.py` ({path.name})"
