"""The pack in ComfyUI's server: ``main.py --cpu --listen 127.0.0.1`` with the pack in ``custom_nodes/``."""

from __future__ import annotations

import json
import re
import time
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
    "AnyDepthEstimate": (["depth_model", "image", "input_size", "batch_size"], ["tile_size", "tta", "max_tokens"],
                         ["DEPTH", "IMAGE"]),
    "AnyDepthToImage": (["depth", "mode", "scope", "low_percentile", "high_percentile", "near", "far", "invert", "gamma"],
                        ["sky_mask"], ["IMAGE"]),
    "AnyDepthColormap": (["image", "colormap"], [], ["IMAGE"]),
    "AnyDepthAnything": (["image", "model", "input_size", "mode", "scope"], ["max_tokens"], ["IMAGE"]),
    "AnyDepthApplyControlNet": (["positive", "negative", "control_net", "latent", "strength", "start_percent", "end_percent",
                                 "fit"], ["image", "depth", "vae"], ["CONDITIONING", "CONDITIONING"]),
    "AnyDepthSave": (["depth", "filename_prefix", "format", "mode", "scope", "near", "far", "invert"], [], []),
    "AnyDepthAlign": (["depth", "reference", "space", "robust"], ["mask", "max_depth"], ["DEPTH", "STRING"]),
    "AnyDepthVideoDepth": (["depth_model", "input_size", "batch_size", "chunk_size", "overlap", "mode", "robust",
                            "momentum", "static_threshold"],
                           ["image", "video", "tile_size", "tta", "target_fps", "max_frames", "streaming", "max_tokens"],
                           ["DEPTH", "IMAGE"]),
    "AnyDepthStabilize": (["depth", "mode", "robust", "momentum"], ["frames", "static_threshold"], ["DEPTH", "STRING"]),
    "AnyDepthLoadDepth": (["file", "kind"], [], ["DEPTH"]),
    "AnyDepthAnyViewGeometry": (["depth_model", "image", "ref_view_strategy", "process_res"],
                                ["cameras", "max_tokens", "pose_method"],
                                ["DEPTH", "IMAGE", "STRING", "GEOMETRY", "MASK", "MASK", "FLOAT", "FLOAT"]),
    "AnyDepthGeometryToPointCloud": (["geometry", "format", "conf_percentile", "max_points", "filename_prefix"], [], []),
    "AnyDepthDepthToMesh": (["view", "fov_degrees", "focal_length", "stride", "discontinuity", "conf_percentile", "near",
                             "far"], ["depth", "geometry", "image"], ["MESH"]),
    "AnyDepthSaveMesh": (["mesh", "format", "filename_prefix"], [], ["STRING"]),
    "AnyDepthSequenceGeometry": (["depth_model", "chunk_size", "overlap", "loop_closure", "fps", "process_res"],
                                 ["video", "image"], ["DEPTH", "STRING", "GEOMETRY"]),
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
    if node is None:
        assert status == 400 and body["error"]["type"] == error
    else:
        # Save Depth (node 4) failing leaves Estimate Depth, an output node with its preview, to run: ComfyUI queues it
        assert (status, body.get("error", {}).get("type")) == ((200, None) if node == "4" else
                                                               (400, "prompt_outputs_failed_validation")), body
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


# --------------------------------------------------------------------------------------------- queue-time validation


def _errors(server, prompt: dict) -> list[tuple[str, str, str, str]]:
    """POST /prompt: every error as (node, type, input, details). ComfyUI refuses the prompt (400), or queues the
    outputs that validated (200: e.g. Estimate Depth, an output node, when only Save Depth is wrong)."""
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status in (200, 400) and body["node_errors"], body
    if status == 200:
        server.wait(body["prompt_id"])
    return [(node, e["type"], e["extra_info"].get("input_name"), e["details"]) for node, info in body["node_errors"].items()
            for e in info["errors"]]


def test_a_wrong_model_name_is_one_error_on_model_saying_where_it_goes(server):
    prompt = valid_prompt()
    prompt["2"]["inputs"]["model"] = "depth_anything_v2_vitl.pth"
    ((node, kind, name, details),) = _errors(server, prompt)  # not also on dtype and memory
    assert (node, kind, name) == ("2", "custom_validation_failed", "model")
    assert str(server.base / "models" / "depthanything") in details and "models/depthanything3" in details
    assert "pick the catalogue entry 'v2-large (CC-BY-NC-4.0)', which downloads this file" in details
    prompt["2"]["inputs"]["model"] = "my_depth.pth"
    ((_, _, name, details),) = _errors(server, prompt)
    assert name == "model" and "e.g. 'v1-small (Apache-2.0)', 'v2-small (Apache-2.0)'" in details


def test_a_bad_tile_size_is_one_error_on_tile_size(server):
    prompt = valid_prompt()
    prompt["3"]["inputs"].update(tile_size=10, tta="flip")
    ((node, kind, name, details),) = _errors(server, prompt)  # not also on tta
    assert (node, kind, name) == ("3", "custom_validation_failed", "tile_size")
    assert "tile_size must be 0 (no tiling) or a number of pixels >= 28" in details and "got 10" in details


@pytest.mark.parametrize("node, name, value", [("2", "dtype", "int8"), ("3", "tta", "mirror"), ("4", "mode", "v3")])
def test_a_bad_dropdown_value_is_one_error_on_its_input(server, node, name, value):
    prompt = valid_prompt()
    prompt[node]["inputs"][name] = value
    ((where, kind, got, details),) = _errors(server, prompt)
    assert (where, kind, got) == (node, "value_not_in_list", name) and f"'{value}' not in [" in details


def test_input_size_takes_the_widget_step_and_other_bounds_are_one_error(server):
    """An API input_size off the widget's step of 14 is rounded as the widget rounds it (500 -> 504), logged once; out
    of range is ComfyUI's own error, on input_size only. (A second check in validate_inputs would also flag tile_size.)"""
    prompt = valid_prompt()
    prompt["3"]["inputs"]["input_size"] = 0
    ((node, kind, name, _),) = _errors(server, prompt)
    assert (node, kind, name) == ("3", "value_smaller_than_min", "input_size")
    prompt = valid_prompt()
    prompt["3"]["inputs"]["input_size"] = 500
    prompt["4"]["inputs"]["filename_prefix"] = "snap/depth"
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert "Estimate Depth: input_size 500 is not a multiple of 14; using 504 (the widget's step)" in server.log


def test_the_one_step_dropdown_offers_only_models_it_runs(server, object_info):
    one_step = object_info["AnyDepthAnything"]["input"]["required"]["model"][1]["options"]
    loader = object_info["AnyDepthLoadModel"]["input"]["required"]["model"][1]["options"]
    assert "da3-small (Apache-2.0)" in loader and not any(o.startswith("da3") for o in one_step)
    assert RELATIVE_OPTION in one_step and set(one_step) < set(loader)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "srv.png"}},
              "2": {"class_type": "AnyDepthAnything", "inputs": {"image": ["1", 0], "model": "da3-small (Apache-2.0)",
                                                                 "input_size": 56, "mode": "v2_style", "scope": "image"}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    ((node, _, name, details),) = _errors(server, prompt)
    assert (node, name) == ("2", "model") and "is a Depth Anything 3 model" in details and "Any-View Geometry" in details


# --------------------------------------------------------------------------------------------- bounded work


def _write(server, name: str, h: int, w: int, seed: int = 0) -> None:
    Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)).save(server.base / "input" / name)


def test_a_thin_strip_finishes_and_the_server_answers_the_next_prompt(server):
    """A 2×3000 px strip: under the reference rule a 518×777000 network input (the host's memory and minutes); under the
    default token budget a 14×21000 one, its depth resized back to 2×3000, with one warning in the log."""
    _write(server, "strip.png", 2, 3000)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "strip.png"}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": RELATIVE_OPTION, "dtype": "auto", "memory": "managed"}},
        "3": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "input_size": 518,
                                                           "batch_size": 4, "max_tokens": -1}},
        "4": {"class_type": "AnyDepthSave", "inputs": {"depth": ["3", 0], "filename_prefix": "strip/depth", "format": "npy",
                                                       "mode": "v2_style", "scope": "image", "near": 0.0, "far": 0.0,
                                                       "invert": False}},
    }
    start = time.monotonic()
    entry = server.run(prompt, timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert time.monotonic() - start < 60
    (saved,) = entry["outputs"]["4"]["depth_files"]
    depth = np.load(server.base / "output" / saved["subfolder"] / saved["filename"])
    assert depth.shape == (2, 3000) and np.isfinite(depth).all()
    assert "3000×2 px at 21000×14 instead of 777000×518" in server.log
    assert entry["outputs"]["3"]["anydepth_depth"][0]["width"] == 3000  # the preview too
    assert server.get("/system_stats")["system"]["comfyui_version"]
    prompt = valid_prompt()
    prompt["4"]["inputs"]["filename_prefix"] = "after_strip/depth"
    assert server.run(prompt)["status"]["status_str"] == "success"


def test_interrupt_stops_a_long_tiled_run_within_seconds(server):
    """Interrupt (the frontend's Cancel: POST /interrupt) lands between tiles: a run of about a minute stops at once."""
    _write(server, "large.png", 768, 768, seed=3)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "large.png"}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": RELATIVE_OPTION, "dtype": "fp32", "memory": "managed"}},
        "3": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "input_size": 28,
                                                           "batch_size": 1, "tile_size": 28}},  # ~750 tiles of 28 px
    }
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "anydepth-tests"})
    assert status == 200, body
    deadline = time.monotonic() + 60
    while not server.get("/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the prompt never started"
        time.sleep(0.1)
    time.sleep(3.0)  # well into the tiles
    assert not server.get(f"/history/{body['prompt_id']}"), "the run finished before the interrupt: make it longer"
    asked = time.monotonic()
    server.post("/interrupt", {})
    entry = server.wait(body["prompt_id"], timeout=60)
    stopped = time.monotonic() - asked
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in [event for event, _ in entry["status"]["messages"]]
    assert stopped < 5.0, f"stopped {stopped:.1f} s after the interrupt"
    prompt = valid_prompt()
    prompt["4"]["inputs"]["filename_prefix"] = "after_interrupt/depth"
    assert server.run(prompt)["status"]["status_str"] == "success"  # and the server goes on
