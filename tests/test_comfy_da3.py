"""Depth Anything 3 nodes inside a real ComfyUI (in process): a tiny DA3 file in models/depthanything3, 3 views.

The library (:class:`anydepth.anyview.AnyViewEstimator` on the same file and images) is the reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_harness import RELATIVE_OPTION, comfy, install_tiny_models  # noqa: F401
from tiny_da3 import TINY_FILE, official_tiny, save_official

from anydepth import scene
from anydepth.anyview import AnyViewEstimator
from anydepth.normalize import normalize_depth, to_image
from anydepth.weights import load_model

DA3_OPTION = "tiny-da3/model.safetensors"
H, W, PROCESS_RES = 56, 84, 84  # the network sees 56×84


@pytest.fixture(scope="module")
def da3_file(comfy):
    install_tiny_models(comfy.models_dir)
    folder = save_official(official_tiny(TINY_FILE, seed=3), comfy.models_dir / "depthanything3" / "tiny-da3")
    return folder


def views(n: int = 3, seed: int = 5) -> torch.Tensor:
    """``n`` smooth random colour views ``[n, H, W, 3]`` (a ComfyUI IMAGE batch)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 6, generator=g)
    return torch.nn.functional.interpolate(small, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1).movedim(1, -1)


@pytest.fixture(scope="module")
def images(comfy, da3_file):
    """The views as PNGs in the input folder, read back as LoadImage gives them (8-bit)."""
    from PIL import Image

    x = views()
    out = []
    for i, im in enumerate(x):
        Image.fromarray((im.numpy() * 255).round().astype(np.uint8)).save(comfy.input_dir / f"da3_view{i}.png")
        out.append(torch.from_numpy(np.asarray(Image.open(comfy.input_dir / f"da3_view{i}.png")).astype(np.float32) / 255))
    return torch.stack(out)


def graph(model: str = DA3_OPTION, fmt: str = "ply", conf_percentile: float = 40.0, max_points: int = 1_000_000) -> dict:
    return {
        **{f"1{i}": {"class_type": "LoadImage", "inputs": {"image": f"da3_view{i}.png"}} for i in range(3)},
        "2": {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["11", 0]}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["12", 0]}},
        "4": {"class_type": "AnyDepthLoadModel", "inputs": {"model": model, "dtype": "fp32", "memory": "managed"}},
        "5": {"class_type": "AnyDepthAnyViewGeometry",
              "inputs": {"depth_model": ["4", 0], "image": ["3", 0], "ref_view_strategy": "saddle_balanced",
                         "process_res": PROCESS_RES}},
        "6": {"class_type": "AnyDepthGeometryToPointCloud",
              "inputs": {"geometry": ["5", 3], "format": fmt, "conf_percentile": conf_percentile, "max_points": max_points,
                         "filename_prefix": "da3/cloud"}},
        "7": {"class_type": "AnyDepthToImage",
              "inputs": {"depth": ["5", 0], "mode": "v2_style", "scope": "image", "low_percentile": 1.0,
                         "high_percentile": 99.0, "near": 0.0, "far": 0.0, "invert": False, "gamma": 1.0}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }


def read_ply(path) -> tuple[np.ndarray, int, int]:
    """Vertices ``[V, 3]`` of a binary PLY, and the point / camera counts from its ``comment anydepth`` line."""
    from plyfile import PlyData

    ply = PlyData.read(str(path))
    comment = next(c for c in ply.comments if c.startswith("anydepth"))
    _, _, m, _, k = comment.split()
    v = ply["vertex"]
    return np.stack([v["x"], v["y"], v["z"]], -1), int(m), int(k)


def test_da3_graph_matches_the_library(comfy, da3_file, images, monkeypatch):
    seen = {}
    real = comfy.pack.nodes.geometry_nodes.AnyViewGeometry.execute.__func__

    def spy(cls, *args, **kwargs):
        out = real(cls, *args, **kwargs)
        seen["depth"], seen["confidence"], seen["poses"], seen["geometry"] = out.args[:4]  # then masks and numbers
        return out

    monkeypatch.setattr(comfy.pack.nodes.geometry_nodes.AnyViewGeometry, "execute", classmethod(spy))
    history = comfy.run(graph(max_points=1500))
    outputs = history["outputs"]

    ref_net = load_model(da3_file, device="cpu", dtype=torch.float32)
    ref = AnyViewEstimator(ref_net, dtype="fp32", device="cpu").estimate(images, process_res=PROCESS_RES)
    depth, geometry = seen["depth"], seen["geometry"]
    assert depth.kind == "depth" and tuple(depth.depth.shape) == (3, H, W)
    torch.testing.assert_close(depth.depth, ref.depth, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(geometry.extrinsics, ref.extrinsics, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(geometry.intrinsics, ref.intrinsics, rtol=1e-5, atol=1e-5)
    conf = seen["confidence"]
    expected_conf = (ref.confidence - ref.confidence.min()) / (ref.confidence.max() - ref.confidence.min())
    torch.testing.assert_close(conf[..., 0], expected_conf, rtol=1e-5, atol=1e-6)
    assert conf.shape == (3, H, W, 3)
    poses = json.loads(seen["poses"])
    assert len(poses) == 3 and all((v["height"], v["width"]) == (H, W) for v in poses)
    np.testing.assert_allclose([v["extrinsics"] for v in poses], ref.extrinsics[:, :3].double().numpy(), atol=1e-6)
    assert ref.depth.std() > 1e-3  # not a flat map

    # the saved PLY holds the cloud the library fuses: same count, same points
    (saved,) = outputs["6"]["point_clouds"]
    assert saved["type"] == "output" and saved["filename"].endswith(".ply") and saved["subfolder"] == "da3"
    pts, m, k = read_ply(comfy.output_dir / saved["subfolder"] / saved["filename"])
    cloud = ref.point_cloud(max_points=1500)
    assert 0 < len(cloud) <= 1500 and (m, k) == (len(cloud), 3) and outputs["6"]["points"] == [len(cloud)]
    assert pts.shape == (len(cloud) + 5 * 3, 3)
    np.testing.assert_allclose(pts[:m], cloud.points.numpy(), rtol=1e-5, atol=1e-5)

    # the viewer's PLY in the temp folder (UI key the js extension reads)
    (preview,) = outputs["5"]["anydepth_geometry"]
    assert preview["type"] == "temp"
    _, m_prev, k_prev = read_ply(comfy.folder_paths.get_temp_directory() + "/" + preview["subfolder"] + "/" + preview["filename"])
    assert (m_prev, k_prev) == (len(ref.point_cloud(max_points=200_000)), 3)

    # DA3 depth through Depth to Image: what the library normalisation gives
    (img,) = outputs["8"]["images"][:1]
    from PIL import Image

    png = np.asarray(Image.open(comfy.folder_paths.get_temp_directory() + "/" + img["subfolder"] + "/" + img["filename"]))
    expected = np.clip(255 * to_image(normalize_depth(ref.depth, "depth", "v2_style"))[0].numpy(), 0, 255).astype(np.uint8)
    assert png.shape == (H, W, 3) and np.abs(png.astype(int) - expected.astype(int)).max() <= 1 and png.std() > 5


def test_point_cloud_formats_and_counts(comfy, da3_file, images):
    import pygltflib

    outputs = comfy.run(graph(fmt="ply+glb", conf_percentile=0.0, max_points=100_000))["outputs"]
    ply, glb = outputs["6"]["point_clouds"]
    assert ply["filename"].endswith(".ply") and glb["filename"].endswith(".glb") and ply["filename"][:-4] == glb["filename"][:-4]
    _, m, k = read_ply(comfy.output_dir / ply["subfolder"] / ply["filename"])
    g = pygltflib.GLTF2().load(str(comfy.output_dir / glb["subfolder"] / glb["filename"]))
    counts = sorted(g.accessors[p.attributes.POSITION].count for mesh in g.meshes for p in mesh.primitives)
    # conf_percentile 0: every pixel at or above the 1.05 confidence floor
    assert m == outputs["6"]["points"][0] and k == 3 and m in counts and m > 0.5 * 3 * H * W


def test_wrong_model_types_are_clear_errors(comfy, da3_file, images):
    prompt = graph(model=RELATIVE_OPTION)
    err = comfy.execution_error(prompt)
    assert err["node_type"] == "AnyDepthAnyViewGeometry"
    assert "Depth Anything V1/V2 model" in err["exception_message"] and "needs a Depth Anything 3" in err["exception_message"]

    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "da3_view0.png"}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": DA3_OPTION, "dtype": "fp32", "memory": "managed"}},
        "3": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "input_size": 70,
                                                          "batch_size": 1}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }
    err = comfy.execution_error(prompt)
    assert err["node_type"] == "AnyDepthEstimate"
    assert "is a Depth Anything 3 model" in err["exception_message"] and "Any-View Geometry" in err["exception_message"]


def test_validation_of_dropdowns_and_cameras(comfy, da3_file, images):
    nodes = comfy.pack.nodes.geometry_nodes
    assert "multiple of 14" in nodes.AnyViewGeometry.validate_inputs(process_res=100)
    for name, value in (("ref_view_strategy", "best"), ("process_res", 100)):  # each: one error, on its input
        prompt = graph()
        prompt["5"]["inputs"][name] = value
        valid, _, _, node_errors = comfy.validate(prompt)
        (error,) = node_errors["5"]["errors"]
        assert not valid and error["extra_info"]["input_name"] == name and str(value) in error["details"]
    prompt = graph()
    prompt["6"]["inputs"]["format"] = "obj"
    (error,) = comfy.validate(prompt)[3]["6"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == ("value_not_in_list", "format") and "'obj'" in error["details"]
    # the cameras input is read by the library's parser, the one `anydepth geometry --cameras` uses
    assert nodes.parse_cameras is scene.parse_cameras
    prompt = graph()
    prompt["5"]["inputs"]["cameras"] = json.dumps([{"intrinsics": [[50.0, 0, 42], [0, 50.0, 28], [0, 0, 1]]}] * 2)
    err = comfy.execution_error(prompt)
    assert err["node_type"] == "AnyDepthAnyViewGeometry"
    assert "cameras input: expected a list of 3 views (one per image, in order), got a list of 2" in err["exception_message"]


def test_cli_and_node_write_identical_point_cloud_bytes(comfy, da3_file, images, tmp_path):
    """One scene, one set of options: `anydepth geometry` and Geometry to Point Cloud write the same PLY."""
    from anydepth.cli import main

    outputs = comfy.run(graph(conf_percentile=30.0, max_points=1200))["outputs"]
    (saved,) = outputs["6"]["point_clouds"]
    node_ply = (comfy.output_dir / saved["subfolder"] / saved["filename"]).read_bytes()
    views = [str(comfy.input_dir / f"da3_view{i}.png") for i in range(3)]
    rc = main(["geometry", *views, "--model", str(da3_file), "--out", str(tmp_path), "--dtype", "fp32", "--device", "cpu",
               "--process-res", str(PROCESS_RES), "--conf-percentile", "30", "--max-points", "1200", "--no-glb"])
    (cli_ply,) = tmp_path.rglob("*.ply")
    assert rc == 0 and b"comment anydepth points 1200 cameras 3" in node_ply
    assert cli_ply.read_bytes() == node_ply
    assert outputs["6"]["anydepth_geometry"] == [saved]  # the 3D viewer on the node shows the file it saved


def test_geometry_to_point_cloud_shows_its_glb_or_a_ply_preview(comfy, da3_file, images, monkeypatch):
    """GLB only: the viewer shows the saved GLB; more points than the viewer takes: a preview PLY of the same cloud."""
    nodes = comfy.pack.nodes.geometry_nodes
    outputs = comfy.run(graph(fmt="glb", conf_percentile=30.0, max_points=1200))["outputs"]
    assert outputs["6"]["anydepth_geometry"] == outputs["6"]["point_clouds"]
    monkeypatch.setattr(nodes, "PREVIEW_POINTS", 1000)
    outputs = comfy.run(graph(fmt="glb", conf_percentile=30.0, max_points=1100))["outputs"]  # 1100 points > 1000
    (saved,) = outputs["6"]["point_clouds"]
    (shown,) = outputs["6"]["anydepth_geometry"]
    assert saved["filename"].endswith(".glb") and shown["type"] == "temp" and shown["filename"].endswith(".ply")
    _, points, cameras = read_ply(Path(comfy.folder_paths.get_temp_directory()) / shown["subfolder"] / shown["filename"])
    assert outputs["6"]["points"] == [1100] and (points, cameras) == (nodes.PREVIEW_POINTS, 3)  # a subset of the cloud
