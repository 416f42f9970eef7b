"""The pack in ComfyUI's server: ``main.py --cpu --listen 127.0.0.1`` with the pack in ``custom_nodes/``."""

from __future__ import annotations

import json
import re
import urllib.parse

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import normalize_depth, to_uint16
from comfy_harness import (ANYDEPTH_NODES, PACK_FOLDER_NAME, REPO, RELATIVE_OPTION, comfy_server,  # noqa: F401
                           install_tiny_models)

# Every node with its inputs (required, optional) and output types, as a user sees them in /object_info.
EXPECTED = {
    "AnyDepthLoadModel": (["model", "dtype", "memory"], [], ["DEPTH_MODEL"]),
    "AnyDepthEstimate": (["depth_model", "image", "input_size", "batch_size"], ["tile_size", "tta"], ["DEPTH", "IMAGE"]),
    "AnyDepthToImage": (["depth", "mode", "scope", "low_percentile", "high_percentile", "near", "far", "invert", "gamma"], [],
                        ["IMAGE"]),
    "AnyDepthColormap": (["image", "colormap"], [], ["IMAGE"]),
    "AnyDepthAnything": (["image", "model", "input_size", "mode", "scope"], [], ["IMAGE"]),
    "AnyDepthApplyControlNet": (["positive", "negative", "control_net", "latent", "strength", "start_percent", "end_percent",
                                 "fit"], ["image", "depth", "vae"], ["CONDITIONING", "CONDITIONING"]),
    "AnyDepthSave": (["depth", "filename_prefix", "format", "mode", "scope", "near", "far", "invert"], [], []),
    "AnyDepthAlign": (["depth", "reference", "space", "robust"], ["mask", "max_depth"], ["DEPTH", "STRING"]),
    "AnyDepthVideoDepth": (["depth_model", "image", "input_size", "batch_size", "chunk_size", "overlap", "mode", "robust",
                            "momentum", "static_threshold"], ["tile_size", "tta"], ["DEPTH", "IMAGE"]),
    "AnyDepthStabilize": (["depth", "mode", "robust", "momentum"], ["frames", "static_threshold"], ["DEPTH", "STRING"]),
    "AnyDepthLoadDepth": (["file", "kind"], [], ["DEPTH"]),
    "AnyDepthAnyViewGeometry": (["depth_model", "image", "ref_view_strategy", "process_res"], ["cameras"],
                                ["DEPTH", "IMAGE", "STRING", "GEOMETRY"]),
    "AnyDepthGeometryToPointCloud": (["geometry", "format", "conf_percentile", "max_points", "filename_prefix"], [], []),
}


@pytest.fixture(scope="module")
def server(comfy_server):
    install_tiny_models(comfy_server.base / "models")
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_pack_imports_from_a_custom_nodes_folder(server, object_info):
    log = server.log
    assert "the installed anydepth is hidden" in log  # the pack had to use its bundled library
    timing = [line for line in log.splitlines() if line.strip().endswith(str(server.pack_dir))]
    assert timing and "IMPORT FAILED" not in timing[0], f"pack import line: {timing}"
    assert not re.search(rf"Cannot import .*{re.escape(PACK_FOLDER_NAME)}", log)
    assert "Unable to parse pyproject.toml" not in log  # ComfyUI reads the pack's [tool.comfy] too
    for node_id in ANYDEPTH_NODES:
        assert object_info[node_id]["python_module"] == f"custom_nodes.{PACK_FOLDER_NAME}"


def test_object_info_lists_every_node_with_its_inputs(object_info):
    assert sorted(k for k in object_info if k.startswith("AnyDepth")) == sorted(EXPECTED)
    for node_id, (required, optional, outputs) in EXPECTED.items():
        info = object_info[node_id]
        assert info["input_order"].get("required", []) == required, node_id
        assert info["input_order"].get("optional", []) == optional, node_id
        assert info["output"] == outputs, node_id
        assert info["category"].startswith("anydepth") and info["display_name"] and info["description"]
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    model_options = object_info["AnyDepthLoadModel"]["input"]["required"]["model"][1]["options"]
    assert "depth_anything_v2_vits.pth" in model_options and RELATIVE_OPTION in model_options
    assert object_info["AnyDepthApplyControlNet"]["input"]["required"]["fit"][1]["options"] == ["pad", "resize", "crop"]


def test_prompt_completes_and_history_shows_the_outputs(server):
    Image.fromarray((np.random.default_rng(1).random((50, 70, 3)) * 255).astype(np.uint8)).save(server.base / "input" / "srv.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "srv.png"}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": RELATIVE_OPTION, "dtype": "auto", "memory": "managed"}},
        "3": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "input_size": 56, "batch_size": 4}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "srv/control"}},
        "5": {"class_type": "AnyDepthSave", "inputs": {"depth": ["3", 0], "filename_prefix": "srv/depth", "format": "control_png16+npy",
                                                       "mode": "v2_style", "scope": "image", "near": 0.0, "far": 0.0, "invert": False}},
    }
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    outputs = entry["outputs"]
    assert outputs["4"]["images"] == [{"filename": "control_00001_.png", "subfolder": "srv", "type": "output"}]
    assert [i["filename"] for i in outputs["5"]["images"]] == ["depth_00001_.png"]
    assert [i["filename"] for i in outputs["5"]["depth_files"]] == ["depth_00001_.npy"]
    out = server.base / "output" / "srv"
    control = np.asarray(Image.open(out / "control_00001_.png"))
    png16 = np.asarray(Image.open(out / "depth_00001_.png"))
    raw = np.load(out / "depth_00001_.npy")
    assert control.shape == (50, 70, 3) and png16.shape == raw.shape == (50, 70)
    expected = to_uint16(normalize_depth(torch.from_numpy(raw)[None], "disparity", "v2_style"))[0]
    assert np.abs(png16.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(control[..., 0].astype(int) - (expected.astype(int) >> 8)).max() <= 1  # the same depth, 8-bit
    # the image can be fetched back through the server's /view, as the frontend does
    assert server.get("/view?" + urllib.parse.urlencode({"filename": "control_00001_.png", "subfolder": "srv", "type": "output"}))[:4] == b"\x89PNG"


def valid_prompt() -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "srv.png"}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": RELATIVE_OPTION, "dtype": "auto", "memory": "managed"}},
        "3": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "input_size": 56, "batch_size": 4}},
        "4": {"class_type": "AnyDepthSave", "inputs": {"depth": ["3", 0], "filename_prefix": "bad/x", "format": "npy",
                                                       "mode": "v2_style", "scope": "image", "near": 0.0, "far": 0.0, "invert": False}},
    }


def _set(node: str, name: str, value):
    def change(prompt: dict) -> None:
        if value is None:
            del prompt[node]["inputs"][name]
        else:
            prompt[node]["inputs"][name] = value
    return change


def _class(node: str, class_type):
    def change(prompt: dict) -> None:
        if class_type is None:
            del prompt[node]["class_type"]
        else:
            prompt[node]["class_type"] = class_type
    return change


@pytest.mark.parametrize("change, node, error", [
    (_class("3", "AnyDepthNoSuchNode"), None, "invalid_prompt"),
    (_class("3", None), None, "invalid_prompt"),
    (_set("2", "model", "not_a_model.pth"), "2", "custom_validation_failed"),
    (_set("3", "image", None), "3", "required_input_missing"),
    (_set("3", "input_size", 0), "3", "value_smaller_than_min"),
    (_set("3", "image", ["2", 0]), "3", "return_type_mismatch"),  # a DEPTH_MODEL into an IMAGE input
    (_set("4", "format", "tiff"), "4", "custom_validation_failed"),
], ids=["unknown-node", "no-class-type", "unknown-model", "missing-input", "below-min", "wrong-link-type", "bad-format"])
def test_malformed_prompt_gets_a_validation_error(server, change, node, error):
    prompt = valid_prompt()
    change(prompt)
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400, body
    if node is None:
        assert body["error"]["type"] == error
    else:
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        errors = body["node_errors"][node]["errors"]
        assert error in [e["type"] for e in errors], body["node_errors"]
        if error == "custom_validation_failed":  # the pack's message names the input and the bad value
            assert re.search(r"(model 'not_a_model.pth' is not in any depth model folder|unknown format 'tiff'; expected one "
                             r"of control_png16)", errors[0]["details"]), errors
    assert server.get("/system_stats")["system"]["comfyui_version"]  # still serving
    assert server.process.poll() is None


def test_workflows_are_served_as_templates_with_thumbnails(server):
    names = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert names and sorted(server.get("/workflow_templates")[PACK_FOLDER_NAME]) == names
    base = "/api/workflow_templates/" + urllib.parse.quote(PACK_FOLDER_NAME)
    for name in names:
        workflow = server.get(f"{base}/{urllib.parse.quote(name)}.json")
        workflow = json.loads(workflow) if isinstance(workflow, bytes) else workflow
        assert workflow["nodes"] and workflow["links"]
        assert server.get(f"{base}/{urllib.parse.quote(name)}.jpg")[:3] == b"\xff\xd8\xff"  # a JPEG thumbnail
