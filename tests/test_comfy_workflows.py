"""Every shipped workflow against a real ComfyUI: converted to the API format, validated, and run where it can be.

Workflows that need only depth nodes run end to end with the tiny models; the diffusion ones are checked by
ComfyUI's own prompt validation, where the only errors allowed are the model files that cannot exist here.
"""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import DepthEstimator, normalize_depth, to_uint16
from anydepth.export import ControlImageError, load_depth
from comfy_harness import RELATIVE_FILE, REPO, comfy_server, install_tiny_models  # noqa: F401
from comfy_workflow import to_api

WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
RUNNABLE = {"image_to_depth_map", "metric_depth_to_png16", "video_frames_to_depth_images", "photos_to_point_cloud",
            "photos_to_mesh", "video_to_depth_video"}
MODEL_FILE_INPUTS = {"ckpt_name", "control_net_name", "unet_name", "clip_name1", "clip_name2", "vae_name"}
FRAMES, FRAME_SIZE = 4, (48, 64)


@pytest.fixture(scope="module")
def server(comfy_server):
    install_tiny_models(comfy_server.base / "models")
    inputs = comfy_server.base / "input"
    rng = np.random.default_rng(7)
    picture = Image.fromarray((rng.random((3, 4, 3)) * 255).astype(np.uint8)).resize((84, 56), Image.BICUBIC)
    picture.save(inputs / "example.png")
    for i in range(3):  # photos_to_point_cloud: three views of one scene
        picture.rotate(5 * i).save(inputs / f"photo_{i + 1}.png")
    from tiny_da3 import TINY_FILE, official_tiny, save_official

    save_official(official_tiny(TINY_FILE, seed=3), comfy_server.base / "models" / "depthanything3" / "DA3-SMALL")
    from tiny_vda import vda_state_dict, write_vda  # video_to_depth_video: vda-small, found in models/videodepthanything

    write_vda(vda_state_dict(), comfy_server.base / "models" / "videodepthanything" / "video_depth_anything_vits.pth")
    with av.open(str(inputs / "example_video.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width = FRAME_SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(FRAMES):
            frame = np.asarray(picture.resize(FRAME_SIZE[::-1]).rotate(10 * i), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_every_workflow_has_a_thumbnail_and_is_named_for_what_it_does():
    assert {p.stem for p in WORKFLOWS} >= RUNNABLE | {"sd15_depth_controlnet", "sdxl_depth_controlnet", "flux_depth_dev"}
    for path in WORKFLOWS:
        thumb = path.with_suffix(".jpg")
        assert thumb.is_file(), f"{path.name} has no thumbnail"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.width >= 256
        notes = [n for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note"]
        assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 40  # says what it does and what it needs


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_converts_and_passes_comfyui_validation(server, object_info, path):
    workflow = json.loads(path.read_text())
    prompt = to_api(workflow, object_info)  # raises on unknown nodes, inputs, widget counts or link types
    assert len(prompt) == len(workflow["nodes"]) - 1  # everything but the note
    assert any(node["class_type"].startswith("AnyDepth") for node in prompt.values())
    if path.stem in RUNNABLE:
        return  # queued and run by the tests below
    status, body = server.post("/prompt", {"prompt": prompt})
    problems = [(node, e["type"], e["extra_info"].get("input_name")) for node, info in body["node_errors"].items()
                for e in info["errors"]]
    wrong = [p for p in problems if not (p[1] == "value_not_in_list" and p[2] in MODEL_FILE_INPUTS)]
    assert problems and not wrong, f"validation errors other than missing model files: {wrong}"
    if status == 200:  # ComfyUI queued the outputs that validated (the depth preview): they must run
        entry = server.wait(body["prompt_id"])
        assert entry["status"]["status_str"] == "success", entry["status"]
    else:
        assert status == 400


def run(server, object_info, name: str) -> dict:
    prompt = to_api(json.loads((REPO / "workflows" / f"{name}.json").read_text()), object_info)
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry["outputs"]


def test_image_to_depth_map_runs(server, object_info):
    outputs = run(server, object_info, "image_to_depth_map")
    (item,) = next(o["images"] for o in outputs.values() if "images" in o)
    depth = np.asarray(Image.open(server.base / "output" / item["subfolder"] / item["filename"]))
    assert depth.shape == (56, 84, 3) and depth.min() == 0 and depth.max() == 255  # v2_style spans the range


def test_metric_depth_to_png16_runs_and_keeps_metres(server, object_info):
    outputs = run(server, object_info, "metric_depth_to_png16")
    save = next(o for o in outputs.values() if "depth_files" in o)
    folder = server.base / "output" / save["depth_files"][0]["subfolder"]
    metres = np.load(folder / save["depth_files"][0]["filename"])
    levels = np.asarray(Image.open(folder / save["images"][0]["filename"]))
    assert metres.shape == levels.shape == (56, 84) and levels.dtype == np.uint16
    assert 0 < metres.min() and metres.max() <= 20.0  # the indoor model's range, in metres
    near, far = 0.01, 20.0  # the workflow's fixed mapping: far - v / 65535 * (far - near) gives the metres back
    decoded = far - levels.astype(np.float64) / 65535 * (far - near)
    assert np.abs(decoded - metres).max() <= (far - near) / 65535
    previews = [o for o in outputs.values() if "images" in o and o is not save]
    assert previews and previews[0]["images"][0]["type"] == "temp"  # the colour preview
    # the raw file is depth with its meaning, as the note says Load Depth reads it back; the PNG is only a picture
    raw = load_depth(folder / save["depth_files"][0]["filename"])
    assert (raw.kind, raw.units) == ("metric_depth", "metres") and np.array_equal(raw.depth, metres)
    with pytest.raises(ControlImageError):
        load_depth(folder / save["images"][0]["filename"])


def test_video_frames_to_depth_images_runs(server, object_info):
    outputs = run(server, object_info, "video_frames_to_depth_images")
    frames = next(o for o in outputs.values() if "images" in o and o["images"][0]["filename"].endswith(".png"))["images"]
    assert len(frames) == FRAMES
    folder = server.base / "output" / frames[0]["subfolder"]
    pngs = np.stack([np.asarray(Image.open(folder / f["filename"])) for f in frames])
    assert pngs.shape == (FRAMES, *FRAME_SIZE) and pngs.dtype == np.uint16

    # The same frames through the library, normalised over the whole clip (scope "batch": no flicker)
    with av.open(str(server.base / "input" / "example_video.mp4")) as container:
        video = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) / 255.0 for f in container.decode(video=0)])
    model = server.base / "models" / "depthanything" / RELATIVE_FILE
    raw = DepthEstimator(str(model), dtype="fp32", device="cpu").estimate(video, input_size=518).depth
    expected = to_uint16(normalize_depth(raw, "disparity", "v2_style", scope="batch"))
    assert np.abs(pngs.astype(int) - expected.astype(int)).max() <= 1
    per_frame = to_uint16(normalize_depth(raw, "disparity", "v2_style", scope="image"))
    assert np.abs(pngs.astype(int) - per_frame.astype(int)).max() > 20  # a per-frame mapping would differ

    videos = list((server.base / "output" / "anydepth" / "video_depth").glob("depth_*.mp4"))
    assert len(videos) == 1
    with av.open(str(videos[0])) as container:
        decoded = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert len(decoded) == FRAMES and decoded[0].shape == FRAME_SIZE


def test_video_to_depth_video_runs(server, object_info):
    from anydepth.video_io import read_video
    from anydepth.video_model import VideoDepthEstimator

    outputs = run(server, object_info, "video_to_depth_video")
    save = next(o for o in outputs.values() if "depth_files" in o)
    folder = server.base / "output" / save["depth_files"][0]["subfolder"]
    raw = np.stack([np.load(folder / f["filename"]) for f in save["depth_files"]])
    model = server.base / "models" / "videodepthanything" / "video_depth_anything_vits.pth"
    want = VideoDepthEstimator(model, dtype="fp32", device="cpu").estimate(
        list(read_video(server.base / "input" / "example_video.mp4").frames)).depth
    assert raw.shape == (FRAMES, *FRAME_SIZE)
    np.testing.assert_allclose(raw, want.numpy(), rtol=0, atol=1e-4 * float(want.abs().max()))
    videos = list((server.base / "output" / "anydepth" / "vda").glob("depth_*.mp4"))
    assert len(videos) == 1
    with av.open(str(videos[0])) as container:
        assert float(container.streams.video[0].average_rate) == 8  # the source's frame rate
        assert len(list(container.decode(video=0))) == FRAMES


def test_photos_to_point_cloud_runs(server, object_info):
    from plyfile import PlyData

    outputs = run(server, object_info, "photos_to_point_cloud")
    (saved,) = [o["point_clouds"] for o in outputs.values() if "point_clouds" in o]
    assert [f["filename"][-4:] for f in saved] == [".ply", ".glb"]
    ply = PlyData.read(str(server.base / "output" / saved[0]["subfolder"] / saved[0]["filename"]))
    points = next(o["points"][0] for o in outputs.values() if "points" in o)
    assert f"anydepth points {points} cameras 3" in ply.comments and len(ply["vertex"]) == points + 15 and points > 100
    (depth,) = [o["images"] for o in outputs.values() if "images" in o]
    assert len(depth) == 3  # one depth image per photo
    viewer = next(o["anydepth_geometry"] for o in outputs.values() if "anydepth_geometry" in o)
    assert viewer[0]["type"] == "temp" and viewer[0]["filename"].endswith(".ply")


def test_photos_to_mesh_runs_into_core_preview3d(server, object_info):
    import pygltflib

    outputs = run(server, object_info, "photos_to_mesh")
    (saved,) = [o["3d"] for o in outputs.values() if "3d" in o]
    path = f"{saved[0]['subfolder']}/{saved[0]['filename']}"
    assert path.startswith("anydepth/") and path.endswith(".glb")
    (preview,) = [o["result"] for o in outputs.values() if "result" in o]  # core's Preview 3D got the file to show
    assert preview[0] == path
    glb = pygltflib.GLTF2().load(str(server.base / "output" / path))
    modes = {p.mode: glb.accessors[p.attributes.POSITION].count for m in glb.meshes for p in m.primitives}
    assert modes[4] > 100 and modes[1] == 3 * 16  # the mesh, and the three cameras as lines

