"""Mesh, mask and number outputs inside a real ComfyUI (in process), against the library on the same inputs.

* Any-View Geometry -> Depth to Mesh -> core's SaveGLB: the GLB core writes re-reads (pygltflib) with the library
  mesh's vertex and index counts and positions; Save Mesh -> core's Preview 3D gets the saved file's path.
* Estimate Depth (a V2 relative model) -> Depth to Mesh with a field of view -> Save Mesh (PLY): the library mesh.
* Any-View Geometry's sky / confidence masks and field of view / focal length; Depth to Image's sky option.
* Sequence Geometry on core's LoadVideo (decoded from the file chunk by chunk): the library's chunked result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_harness import RELATIVE_FILE, RELATIVE_OPTION, comfy, install_tiny_models  # noqa: F401
from PIL import Image
from tiny_da3 import TINY_FILE, official_tiny, save_official

from anydepth.anyview import AnyViewEstimator
from anydepth.estimator import DepthEstimator
from anydepth.mesh import MeshOptions, intrinsics_from_fov, read_mesh_ply, scene_mesh
from anydepth.normalize import clip_sky, normalize_depth, to_image
from anydepth.scene import confidence_map, field_of_view
from anydepth.weights import load_model

DA3_OPTION = "tiny-da3-mesh/model.safetensors"
H, W, PROCESS_RES = 56, 84, 84


def load_core_3d_nodes(comfy) -> None:
    """Core's SaveGLB, Preview3D and LoadVideo (comfy_extras, which the in-process harness does not load by itself)."""
    import asyncio
    import os

    root = os.path.dirname(comfy.nodes.__file__)
    for name, node in (("nodes_hunyuan3d.py", "SaveGLB"), ("nodes_load_3d.py", "Preview3D"), ("nodes_video.py", "LoadVideo")):
        if node not in comfy.nodes.NODE_CLASS_MAPPINGS:
            ok = asyncio.run(comfy.nodes.load_custom_node(os.path.join(root, "comfy_extras", name), module_parent="comfy_extras"))
            assert ok and node in comfy.nodes.NODE_CLASS_MAPPINGS, f"core's {node} did not load"


@pytest.fixture(scope="module")
def setup(comfy):
    load_core_3d_nodes(comfy)
    install_tiny_models(comfy.models_dir)
    folder = save_official(official_tiny(TINY_FILE, seed=3), comfy.models_dir / "depthanything3" / "tiny-da3-mesh")
    g = torch.Generator().manual_seed(11)
    views = torch.nn.functional.interpolate(torch.rand(3, 3, 4, 6, generator=g), size=(H, W), mode="bicubic",
                                            align_corners=False).clamp(0, 1).movedim(1, -1)
    images = []
    for i, im in enumerate(views):
        rgba = np.concatenate([(im.numpy() * 255).round().astype(np.uint8), np.full((H, W, 1), 255, np.uint8)], -1)
        rgba[:12, :, 3] = 0  # transparent top rows: LoadImage's MASK is 1 there (our stand-in for sky)
        Image.fromarray(rgba, "RGBA").save(comfy.input_dir / f"mesh_view{i}.png")
        images.append(torch.from_numpy(rgba[..., :3].astype(np.float32) / 255))
    net = load_model(folder, device="cpu", dtype=torch.float32)
    ref = AnyViewEstimator(net, dtype="fp32", device="cpu").estimate(torch.stack(images), process_res=PROCESS_RES)
    return {"images": torch.stack(images), "ref": ref}


def loads() -> dict:
    return {
        **{f"1{i}": {"class_type": "LoadImage", "inputs": {"image": f"mesh_view{i}.png"}} for i in range(3)},
        "2": {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["11", 0]}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["12", 0]}},
    }


def mesh_inputs(**over) -> dict:
    values = {"view": -1, "fov_degrees": 60.0, "focal_length": 0.0, "stride": 1, "discontinuity": 0.1,
              "conf_percentile": 10.0, "near": 1.0, "far": 10.0}
    values.update(over)
    return values


def geometry_graph() -> dict:
    return {
        **loads(),
        "4": {"class_type": "AnyDepthLoadModel", "inputs": {"model": DA3_OPTION, "dtype": "fp32", "memory": "managed"}},
        "5": {"class_type": "AnyDepthAnyViewGeometry",
              "inputs": {"depth_model": ["4", 0], "image": ["3", 0], "ref_view_strategy": "saddle_balanced",
                         "process_res": PROCESS_RES}},
        "6": {"class_type": "AnyDepthDepthToMesh", "inputs": {"geometry": ["5", 3], **mesh_inputs()}},
        "7": {"class_type": "SaveGLB", "inputs": {"mesh": ["6", 0], "filename_prefix": "mesh/core"}},
        "8": {"class_type": "AnyDepthSaveMesh", "inputs": {"mesh": ["6", 0], "format": "glb",
                                                           "filename_prefix": "mesh/anydepth"}},
        "9": {"class_type": "Preview3D", "inputs": {"model_file": ["8", 0]}},
    }


def glb_arrays(path) -> tuple[list, dict]:
    """Every primitive of a GLB: (mode, positions [V, 3], indices [3F] or None, has colours)."""
    import pygltflib

    g = pygltflib.GLTF2().load(str(path))
    blob = g.binary_blob()

    def read(acc_index: int, dtype: str, width: int) -> np.ndarray:
        acc = g.accessors[acc_index]
        view = g.bufferViews[acc.bufferView]
        return np.frombuffer(blob, dtype, acc.count * width, view.byteOffset + (acc.byteOffset or 0)).reshape(acc.count, width)

    prims = []
    for mesh in g.meshes:
        for p in mesh.primitives:
            idx = None if p.indices is None else read(p.indices, "<u4", 1)[:, 0]
            prims.append((p.mode, read(p.attributes.POSITION, "<f4", 3), idx, p.attributes.COLOR_0 is not None))
    return prims, g


def test_geometry_mesh_through_core_saveglb_and_preview3d(comfy, setup, monkeypatch):
    seen = {}
    nodes = comfy.pack.nodes.geometry_nodes
    real = nodes.AnyViewGeometry.execute.__func__

    def spy(cls, *args, **kwargs):
        out = real(cls, *args, **kwargs)
        seen["outputs"] = out.args
        return out

    monkeypatch.setattr(nodes.AnyViewGeometry, "execute", classmethod(spy))
    outputs = comfy.run(geometry_graph())["outputs"]
    ref = setup["ref"]
    expected = scene_mesh(None, ref, options=MeshOptions())
    mesh, gltf = expected.mesh, expected.gltf
    assert mesh.num_faces > 100 and len(expected.views) == 3

    # core's SaveGLB wrote the MESH: one triangle primitive with our counts and positions (glTF frame)
    (core_file,) = outputs["7"]["3d"]
    prims, _ = glb_arrays(comfy.output_dir / core_file["subfolder"] / core_file["filename"])
    ((mode, pos, idx, _),) = prims
    assert mode == 4 and pos.shape == (mesh.num_vertices, 3) and idx.shape == (3 * mesh.num_faces,)
    want = (mesh.vertices.double() @ gltf[:3, :3].T + gltf[:3, 3]).numpy()
    np.testing.assert_allclose(pos, want, atol=1e-4)
    np.testing.assert_array_equal(idx, mesh.faces.reshape(-1).numpy())

    # Save Mesh: the same triangles with colours, plus the three cameras as lines; its path goes to Preview 3D
    (ours,) = outputs["8"]["3d"]
    prims, g = glb_arrays(comfy.output_dir / ours["subfolder"] / ours["filename"])
    tri = next(p for p in prims if p[0] == 4)
    lines = next(p for p in prims if p[0] == 1)
    assert tri[1].shape == (mesh.num_vertices, 3) and tri[3] and lines[1].shape == (3 * 16, 3)
    assert g.scenes[0].extras["anydepth_faces"] == mesh.num_faces
    model_file = outputs["9"]["result"][0]
    assert model_file == f"{ours['subfolder']}/{ours['filename']}" and (comfy.output_dir / model_file).is_file()

    # the masks and numbers of Any-View Geometry
    _, confidence, _, _, sky, conf01, fov, focal = seen["outputs"]
    assert sky.shape == (3, H, W) and float(sky.abs().sum()) == 0.0  # an any-view model predicts no sky
    torch.testing.assert_close(conf01, confidence_map(ref))
    torch.testing.assert_close(conf01, confidence[..., 0])
    assert (fov, focal) == pytest.approx(field_of_view(ref)) and 1.0 < fov < 179.0
    k = ref.intrinsics.double()
    assert focal == pytest.approx(float(k[:, 0, 0].mean()))


def test_monocular_depth_to_mesh_with_a_field_of_view(comfy, setup):
    prompt = {
        **loads(),
        "4": {"class_type": "AnyDepthLoadModel", "inputs": {"model": RELATIVE_OPTION, "dtype": "fp32", "memory": "managed"}},
        "5": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["4", 0], "image": ["10", 0], "input_size": 70,
                                                          "batch_size": 1}},
        "6": {"class_type": "AnyDepthDepthToMesh",
              "inputs": {"depth": ["5", 0], "image": ["10", 0], **mesh_inputs(fov_degrees=70.0, near=0.5, far=5.0,
                                                                                stride=2, discontinuity=0.2)}},
        "7": {"class_type": "AnyDepthSaveMesh", "inputs": {"mesh": ["6", 0], "format": "ply", "filename_prefix": "mesh/mono"}},
    }
    outputs = comfy.run(prompt)["outputs"]
    (saved,) = outputs["7"]["3d"]
    got = read_mesh_ply(comfy.output_dir / saved["subfolder"] / saved["filename"])

    est = DepthEstimator(str(comfy.models_dir / "depthanything" / RELATIVE_FILE), dtype="fp32", device="cpu")
    depth = est.estimate(setup["images"][:1], input_size=70)
    want = scene_mesh(depth, images=setup["images"][:1], fov_degrees=70.0, near=0.5, far=5.0,
                      options=MeshOptions(stride=2, discontinuity=0.2)).mesh
    assert got.num_faces == want.num_faces > 50
    torch.testing.assert_close(got.vertices, want.vertices, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.faces, want.faces) and torch.equal(got.colors, want.colors)
    # in the camera frame with the stated field of view: every vertex projects back into the picture
    k = intrinsics_from_fov(H, W, 70.0).float()
    uv = got.vertices @ k.T
    uv = uv[:, :2] / uv[:, 2:]
    assert bool((uv >= -0.5).all()) and bool((uv[:, 0] <= W).all()) and bool((uv[:, 1] <= H).all())
    z = got.vertices[:, 2]
    assert 0.5 - 1e-4 <= float(z.min()) and float(z.max()) <= 5.0 + 1e-3  # disparity mapped into [near, far]


def test_depth_to_image_sends_the_sky_far(comfy, setup):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "mesh_view0.png"}},
        "4": {"class_type": "AnyDepthLoadModel", "inputs": {"model": RELATIVE_OPTION, "dtype": "fp32", "memory": "managed"}},
        "5": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["4", 0], "image": ["1", 0], "input_size": 70,
                                                          "batch_size": 1}},
        "6": {"class_type": "AnyDepthToImage",
              "inputs": {"depth": ["5", 0], "sky_mask": ["1", 1], "mode": "v2_style", "scope": "image",
                         "low_percentile": 1.0, "high_percentile": 99.0, "near": 0.0, "far": 0.0, "invert": False,
                         "gamma": 1.0}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    outputs = comfy.run(prompt)["outputs"]
    (img,) = outputs["7"]["images"]
    png = np.asarray(Image.open(f"{comfy.folder_paths.get_temp_directory()}/{img['subfolder']}/{img['filename']}"))
    est = DepthEstimator(str(comfy.models_dir / "depthanything" / RELATIVE_FILE), dtype="fp32", device="cpu")
    depth = est.estimate(setup["images"][:1], input_size=70)
    sky = torch.zeros(1, H, W)
    sky[:, :12] = 1.0
    expected = to_image(normalize_depth(clip_sky(depth.depth, depth.kind, sky), depth.kind, "v2_style"))[0].numpy()
    assert np.abs(png.astype(int) - np.round(expected * 255).astype(int)).max() <= 1
    # the sky rows all hold one value (the far end): the 2nd percentile of the other pixels' disparity
    assert png[:12].std() == 0 and png[:12].mean() <= np.percentile(png[12:], 5)


def test_depth_to_mesh_errors_name_what_to_do(comfy, setup):
    prompt = {**loads(), "6": {"class_type": "AnyDepthDepthToMesh", "inputs": mesh_inputs()},
              "7": {"class_type": "SaveGLB", "inputs": {"mesh": ["6", 0], "filename_prefix": "mesh/none"}}}
    err = comfy.execution_error(prompt)
    assert err["node_type"] == "AnyDepthDepthToMesh" and "give depth" in err["exception_message"]
    prompt = geometry_graph()
    prompt["6"]["inputs"]["view"] = 7
    err = comfy.execution_error(prompt)
    assert "view 7 does not exist: there are 3 views" in err["exception_message"]


def test_sequence_geometry_on_a_video_matches_the_library(comfy, setup):
    from test_sequence import write_video

    from anydepth.sequence import GeometryCollector, estimate_sequence, video_frames

    base = Image.fromarray((setup["images"][0].numpy() * 255).astype(np.uint8))
    path = write_video(comfy.input_dir / "mesh_walk.mp4", [np.asarray(base.rotate(3 * i)) for i in range(12)])
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "mesh_walk.mp4"}},
        "4": {"class_type": "AnyDepthLoadModel", "inputs": {"model": DA3_OPTION, "dtype": "fp32", "memory": "managed"}},
        "5": {"class_type": "AnyDepthSequenceGeometry",
              "inputs": {"depth_model": ["4", 0], "video": ["1", 0], "chunk_size": 6, "overlap": 2,
                         "loop_closure": False, "fps": 5.0, "process_res": PROCESS_RES}},
        "6": {"class_type": "AnyDepthDepthToMesh", "inputs": {"geometry": ["5", 2], **mesh_inputs()}},
        "7": {"class_type": "SaveGLB", "inputs": {"mesh": ["6", 0], "filename_prefix": "mesh/sequence"}},
    }
    outputs = comfy.run(prompt)["outputs"]
    (saved,) = outputs["7"]["3d"]
    prims, _ = glb_arrays(comfy.output_dir / saved["subfolder"] / saved["filename"])

    net = load_model(comfy.models_dir / "depthanything3" / "tiny-da3-mesh", device="cpu", dtype=torch.float32)
    est = AnyViewEstimator(net, dtype="fp32", device="cpu")
    collect = GeometryCollector()
    seq = estimate_sequence(est, video_frames(path, fps=5.0)[1], chunk_size=6, overlap=2, on_view=collect,
                            process_res=PROCESS_RES)
    assert len(seq) == 6 and seq.chunks == [(0, 6)]  # 12 frames at 10 fps sampled to 5 fps: one chunk
    want = scene_mesh(None, collect.result(seq)).mesh
    assert prims[0][1].shape == (want.num_vertices, 3) and prims[0][2].shape == (3 * want.num_faces,)

    prompt["5"]["inputs"]["fps"] = 0.0  # every frame: 12 views in chunks 0-5, 4-9, 8-11
    outputs = comfy.run(prompt)["outputs"]
    collect = GeometryCollector()
    seq = estimate_sequence(est, video_frames(path)[1], chunk_size=6, overlap=2, on_view=collect, process_res=PROCESS_RES)
    assert seq.chunks == [(0, 6), (4, 10), (8, 12)]
    want = scene_mesh(None, collect.result(seq)).mesh
    (saved,) = outputs["7"]["3d"]
    prims, _ = glb_arrays(comfy.output_dir / saved["subfolder"] / saved["filename"])
    assert prims[0][1].shape == (want.num_vertices, 3)
    np.testing.assert_allclose(prims[0][1], want.transformed(scene_mesh(None, collect.result(seq)).gltf).vertices.numpy(),
                               atol=1e-4)
