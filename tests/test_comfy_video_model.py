"""Video Depth Anything in a real ComfyUI (in process): Load Video → Load Depth Model → Estimate Video Depth → Save Depth.

The tiny random VDA of :mod:`tiny_vda` sits where the existing VDA pack keeps its files
(``models/videodepthanything/video_depth_anything_vits.pth``) and answers the catalogue entry ``vda-small``; every
number is compared with :class:`~anydepth.video_model.VideoDepthEstimator` on the same frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anydepth.normalize import to_image
from anydepth.video import normalize_clip
from anydepth.video_io import read_video
from anydepth.video_model import VideoDepthEstimator
from comfy_harness import RELATIVE_OPTION, comfy, install_tiny_models  # noqa: F401
from test_video_cli import pattern, write_clip
from tiny_vda import vda_state_dict, write_vda

VDA_OPTION = "vda-small (Apache-2.0)"
VDA_FILE = "video_depth_anything_vits.pth"
SIZE = 28


@pytest.fixture(scope="module")
def setup(comfy):
    from test_comfy_mesh import load_core_3d_nodes

    load_core_3d_nodes(comfy)  # core's LoadVideo among them
    install_tiny_models(comfy.models_dir)
    path = write_vda(vda_state_dict(), comfy.models_dir / "videodepthanything" / VDA_FILE)
    clip = write_clip(comfy.input_dir / "vda_clip.mp4", [pattern(t) for t in range(12)], fps=10)
    yield {"model": path, "clip": clip, "tools": comfy.pack.nodes.depth_tools_nodes, "loader": comfy.pack.nodes.loader}
    comfy.pack.nodes.loader.clear_cache()


def reference(path, frames, **kw) -> torch.Tensor:
    return VideoDepthEstimator(path, dtype="fp32", device="cpu", input_size=SIZE).estimate(frames, **kw).depth


def video_inputs(**over) -> dict:
    return {"input_size": SIZE, "batch_size": 4, "chunk_size": 16, "overlap": 4, "mode": "running", "robust": "irls",
            "momentum": 0.2, "static_threshold": 0.0, "target_fps": 0.0, "max_frames": 0, "streaming": False, **over}


def graph(fmt: str = "npy") -> dict:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "vda_clip.mp4"}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": VDA_OPTION, "dtype": "fp32", "memory": "managed"}},
        "3": {"class_type": "AnyDepthVideoDepth", "inputs": {"depth_model": ["2", 0], "video": ["1", 0], **video_inputs()}},
        "4": {"class_type": "AnyDepthSave", "inputs": {"depth": ["3", 0], "filename_prefix": f"vda/{fmt}", "format": fmt,
                                                       "mode": "v2_style", "scope": "batch", "near": 0.0, "far": 0.0,
                                                       "invert": False}},
    }


def saved_npy(comfy, prefix: str) -> np.ndarray:
    files = sorted((comfy.output_dir / "vda").glob(f"{prefix}_*.npy"))
    return np.stack([np.load(f) for f in files])


def test_load_video_to_save_depth_runs_in_comfyui(comfy, setup):
    comfy.run(graph())
    want = reference(setup["model"], list(read_video(setup["clip"]).frames))
    got = saved_npy(comfy, "npy")
    assert got.shape == (12, 24, 32)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)

    prompt = graph()  # a VIDEO sampled to 5 fps, 4 frames, streamed
    prompt["3"]["inputs"].update(target_fps=5.0, max_frames=4, streaming=True)
    prompt["4"]["inputs"]["filename_prefix"] = "vda/stream"
    comfy.run(prompt)
    frames = list(read_video(setup["clip"], target_fps=5.0, max_frames=4).frames)
    np.testing.assert_allclose(saved_npy(comfy, "stream"), reference(setup["model"], frames, streaming=True).numpy(),
                               rtol=0, atol=1e-5)


def test_load_depth_model_lists_and_loads_vda(comfy, setup):
    folders = comfy.pack.nodes.folders
    options = folders.model_options()
    assert VDA_FILE in options and VDA_OPTION in options and "vda-large (CC-BY-NC-4.0)" in options
    model = setup["loader"].load(VDA_OPTION, "fp32")
    assert model.is_video and model.path == setup["model"] and model.license == "Apache-2.0"
    assert setup["loader"].load(VDA_FILE, "fp32") is model  # the file and its catalogue entry: one cached model
    with pytest.raises(ValueError, match="is a Video Depth Anything model; Depth Anything \\(one step\\) runs"):
        folders.require_model_option(VDA_OPTION, folders.DEPTH_FAMILIES, "Depth Anything (one step)")


def test_image_batch_under_model_patcher_with_progress_per_window(comfy, setup, monkeypatch):
    model = setup["loader"].load(VDA_OPTION, "fp32", "offload_after_use")
    frames = torch.from_numpy(np.stack([pattern(t) for t in range(40)]).astype(np.float32) / 255)  # two windows
    loads = []
    real = comfy.mm.load_models_gpu
    monkeypatch.setattr(comfy.mm, "load_models_gpu", lambda *a, **k: loads.append(a) or real(*a, **k))
    comfy.progress.clear()
    depth, control = setup["tools"].EstimateVideoDepth.execute(model, frames, **video_inputs())
    want = reference(setup["model"], frames)
    torch.testing.assert_close(depth.depth, want, rtol=0, atol=1e-5)
    assert depth.kind == "disparity" and len(depth) == 40 and depth.processed_size[0] == (28, 42)
    torch.testing.assert_close(control, to_image(normalize_clip(want, "disparity")), rtol=0, atol=1e-5)
    assert [a[0] for a in loads] == [[model.memory.patcher]] and not model.memory.is_loaded
    assert comfy.progress == [(24, 40), (40, 40)]  # one step per window
    # max_tokens reaches this run only: 2 patches put the 28×42 input at 14×14; the cached model keeps its default
    capped, _ = setup["tools"].EstimateVideoDepth.execute(model, frames[:8], **video_inputs(max_tokens=2))
    assert capped.processed_size[0] == (14, 14) and model.estimator.max_tokens is None


def test_interrupt_stops_between_windows(comfy, setup, monkeypatch):
    model = setup["loader"].load(VDA_OPTION, "fp32")
    frames = torch.rand(60, 24, 32, 3)
    calls = []
    windows = []
    real_decode = model.estimator.model.decode
    monkeypatch.setattr(model.estimator.model, "decode", lambda *a, **k: windows.append(1) or real_decode(*a, **k))

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise comfy.mm.InterruptProcessingException()

    monkeypatch.setattr(comfy.mm, "throw_exception_if_processing_interrupted", check)
    with pytest.raises(comfy.mm.InterruptProcessingException):
        setup["tools"].EstimateVideoDepth.execute(model, frames, **video_inputs())
    assert len(windows) == 1  # the first window ran, the second never started


def test_wrong_models_and_inputs_are_clear_errors(comfy, setup):
    tools = setup["tools"]
    vda = setup["loader"].load(VDA_OPTION, "fp32")
    image_model = setup["loader"].load(RELATIVE_OPTION, "fp32")
    frames = torch.rand(3, 24, 32, 3)
    with pytest.raises(ValueError, match="Estimate Depth: video_depth_anything_vits.pth is a Video Depth Anything model"):
        comfy.pack.nodes.depth_nodes.EstimateDepth.execute(vda, frames, 28, 2)
    with pytest.raises(ValueError, match="streaming needs a Video Depth Anything model"):
        tools.EstimateVideoDepth.execute(image_model, frames, **video_inputs(streaming=True))
    with pytest.raises(ValueError, match="connect a video or an image batch"):
        tools.EstimateVideoDepth.execute(vda, None, **video_inputs())
    with pytest.raises(ValueError, match="image batch has no frames"):
        tools.EstimateVideoDepth.execute(vda, torch.zeros(0, 24, 32, 3), **video_inputs())
    with pytest.raises(ValueError, match="tile_size and tta are for image models"):
        tools.EstimateVideoDepth.execute(vda, frames, **video_inputs(), tile_size=64)
    one, _ = tools.EstimateVideoDepth.execute(vda, frames[:1], **video_inputs())  # one frame: a correct result
    torch.testing.assert_close(one.depth, reference(setup["model"], frames[:1]), rtol=0, atol=1e-5)
    # an image model keeps today's stabilisation, also from a VIDEO input (decoded, at most max_frames)
    from comfy_api.input_impl import VideoFromFile

    video = VideoFromFile(str(setup["clip"]))
    depth, _ = tools.EstimateVideoDepth.execute(image_model, None, **video_inputs(max_frames=5), video=video)
    assert len(depth) == 5 and depth.kind == "disparity"
    prompt = graph()
    prompt["2"]["inputs"]["model"] = RELATIVE_OPTION
    prompt["3"]["inputs"]["streaming"] = True
    err = comfy.execution_error(prompt)
    assert "streaming needs a Video Depth Anything model" in err["exception_message"]
