"""Align, video depth, stabilise and load-depth nodes inside a real ComfyUI (in process), checked with numbers.

Known answers come from synthetic data (a known scale and shift, a clip with known per-frame jitter); the
library called directly (:mod:`anydepth.align`, :mod:`anydepth.video`, :mod:`anydepth.export`) is the
reference for everything else.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import DepthEstimator
from anydepth.align import align_scale_shift
from anydepth.estimator import DepthResult
from anydepth.export import load_depth, save_depth
from anydepth.normalize import to_image
from anydepth.video import estimate_video, flicker, normalize_clip, stabilize_depth, static_mask
from comfy_harness import METRIC_OPTION, RELATIVE_OPTION, comfy, install_tiny_models  # noqa: F401


@pytest.fixture(scope="module")
def models(comfy):
    return install_tiny_models(comfy.models_dir)


@pytest.fixture(scope="module")
def tools(comfy):
    return comfy.pack.nodes.depth_tools_nodes


def smooth_map(h: int, w: int, seed: int) -> torch.Tensor:
    """A smooth positive [H, W] map with spread (a stand-in disparity)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 1, 4, 5, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)[0, 0].clamp_min(0) + 0.5


def spy(monkeypatch, module, name: str) -> list:
    """Record the calls of ``module.name`` (still calling it)."""
    calls: list = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **kwargs: calls.append((args, kwargs)) or real(*args, **kwargs))
    return calls


def depth_result(values: torch.Tensor, kind: str = "disparity", max_depth: float | None = None) -> DepthResult:
    return DepthResult(values, kind, [tuple(values.shape[-2:])] * values.shape[0], "synthetic", max_depth)


# --------------------------------------------------------------------------------------------- align


def test_align_node_recovers_a_known_scale_and_shift(tools):
    pred = torch.stack([smooth_map(24, 32, 0), smooth_map(24, 32, 1)])  # [2, H, W]
    scale, shift = torch.tensor([2.5, 0.4]), torch.tensor([0.7, -0.3])
    ref = pred * scale[:, None, None] + shift[:, None, None]
    corrupt = torch.zeros_like(pred, dtype=torch.bool)
    corrupt[:, 3:9, 5:14] = True  # 14 % of the pixels: a bad patch in the reference
    ref_bad = torch.where(corrupt, ref + 5.0, ref)

    plain, report = tools.AlignDepth.execute(depth_result(pred), depth_result(ref), "direct", "none")
    fitted = json.loads(report)
    np.testing.assert_allclose(fitted["scale"], scale.tolist(), rtol=1e-5)
    np.testing.assert_allclose(fitted["shift"], shift.tolist(), atol=1e-5)
    torch.testing.assert_close(plain.depth, ref, rtol=0, atol=1e-5)
    assert plain.kind == "disparity" and plain.processed_size == [(24, 32)] * 2

    # the MASK input leaves the bad patch out of the fit (ComfyUI MASK: 1 = use)
    masked, report = tools.AlignDepth.execute(depth_result(pred), depth_result(ref_bad), "direct", "none",
                                              mask=(~corrupt).float())
    np.testing.assert_allclose(json.loads(report)["scale"], scale.tolist(), rtol=1e-5)
    torch.testing.assert_close(masked.depth, ref, rtol=0, atol=1e-5)  # every pixel aligned, also the masked ones

    # robust without a mask ignores the outliers; the plain fit does not
    robust, report = tools.AlignDepth.execute(depth_result(pred), depth_result(ref_bad), "direct", "irls")
    np.testing.assert_allclose(json.loads(report)["shift"], shift.tolist(), atol=1e-4)
    fooled, _ = tools.AlignDepth.execute(depth_result(pred), depth_result(ref_bad), "direct", "none")
    assert (fooled.depth - ref).abs().max() > 0.3 and (robust.depth - ref).abs().max() < 1e-4
    expected = align_scale_shift(pred, ref_bad, robust="trimmed")
    trimmed, _ = tools.AlignDepth.execute(depth_result(pred), depth_result(ref_bad), "direct", "trimmed")
    torch.testing.assert_close(trimmed.depth, expected.aligned)  # exactly what the library gives


def test_align_node_in_disparity_space_gives_metres(tools):
    disparity = torch.stack([smooth_map(20, 30, 2)])
    metres = 1.0 / (0.8 * disparity + 0.05)  # a metric reference (one map for the batch)
    reference = depth_result(metres, "metric_depth", max_depth=20.0)
    aligned, report = tools.AlignDepth.execute(depth_result(disparity), reference, "disparity", "none", max_depth=20.0)
    assert aligned.kind == "metric_depth" and aligned.max_depth == 20.0
    torch.testing.assert_close(aligned.depth, metres, rtol=1e-5, atol=0)
    fitted = json.loads(report)
    assert fitted["space"] == "disparity"
    np.testing.assert_allclose([fitted["scale"][0], fitted["shift"][0]], [0.8, 0.05], rtol=1e-4)

    with pytest.raises(ValueError, match="use space 'disparity'"):
        tools.AlignDepth.execute(depth_result(disparity), reference, "direct", "none")
    with pytest.raises(ValueError, match="use space 'direct'"):
        tools.AlignDepth.execute(depth_result(disparity), depth_result(disparity), "disparity", "none")
    assert isinstance(tools.AlignDepth.INPUT_TYPES()["required"]["robust"][0], list)  # ComfyUI checks it at queue time


# --------------------------------------------------------------------------------------------- stabilise


def jittery_clip(t: int = 12, h: int = 24, w: int = 32):
    """A static scene with a moving square, per-frame random scale/shift jitter; colour frames to match."""
    g = torch.Generator().manual_seed(7)
    base = smooth_map(h, w, 3)
    depth = base.repeat(t, 1, 1)
    frames = (base / base.max())[None, :, :, None].repeat(t, 1, 1, 3).clone()
    for i in range(t):  # the near object moves right by 2 px per frame
        depth[i, 4:10, 2 + 2 * i:8 + 2 * i] = 3.0
        frames[i, 4:10, 2 + 2 * i:8 + 2 * i] = 1.0
    scale = 0.6 + 0.8 * torch.rand(t, generator=g)
    shift = 0.6 * torch.rand(t, generator=g) - 0.3
    return depth * scale[:, None, None] + shift[:, None, None], frames


@pytest.mark.parametrize("mode", ["running", "clip"])
def test_stabilize_node_cuts_flicker_tenfold_like_the_library(tools, mode):
    raw, frames = jittery_clip()
    stable, report = tools.StabilizeDepth.execute(depth_result(raw), mode, "irls", 0.2, frames=frames,
                                                  static_threshold=0.02)
    numbers = json.loads(report)
    static = static_mask(frames, 0.02, min_fraction=0.05)
    expected = stabilize_depth(raw, mode=mode, mask=static, momentum=0.2, robust="irls")
    torch.testing.assert_close(stable.depth, expected.depth)
    assert stable.kind == "disparity" and stable.processed_size == [(24, 32)] * raw.shape[0]
    assert numbers["flicker_before"] == pytest.approx(float(flicker(raw, static)), rel=1e-6)
    assert numbers["flicker_after"] == pytest.approx(float(flicker(expected.depth, static)), rel=1e-6)
    assert numbers["flicker_before"] > 10 * numbers["flicker_after"]
    assert 0.5 < numbers["static_fraction"] < 1.0  # the moving square's path is left out
    np.testing.assert_allclose(numbers["scale"], expected.scale.tolist(), rtol=1e-6)


def test_stabilize_node_without_frames_and_with_one_frame(tools):
    raw, _ = jittery_clip(t=6)
    stable, report = tools.StabilizeDepth.execute(depth_result(raw), "running", "none", 0.5)
    torch.testing.assert_close(stable.depth, stabilize_depth(raw, momentum=0.5, robust=None).depth)
    assert json.loads(report)["static_fraction"] == 1.0
    _, report = tools.StabilizeDepth.execute(depth_result(raw[:1]), "clip", "irls", 0.2)
    assert json.loads(report)["flicker_before"] is None  # undefined for one frame: null, not NaN in the JSON
    with pytest.raises(ValueError, match="must match the depth's frames and size"):
        tools.StabilizeDepth.execute(depth_result(raw), "running", "irls", 0.2, frames=torch.rand(5, 24, 32, 3))


# --------------------------------------------------------------------------------------------- video depth


@pytest.mark.parametrize("mode, static_threshold, tile_size, tta", [("running", 0.05, 0, "none"), ("clip", 0.0, 56, "flip")])
def test_video_depth_node_matches_the_library_through_the_memory_bridge(comfy, tools, models, monkeypatch, mode,
                                                                        static_threshold, tile_size, tta):
    loader = comfy.pack.nodes.loader
    model = loader.load(RELATIVE_OPTION, "fp32", "offload_after_use")
    base = torch.rand(1, 42, 70, 3, generator=torch.Generator().manual_seed(4))
    frames = (base + 0.05 * torch.rand(7, 42, 70, 3, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    loads = spy(monkeypatch, comfy.mm, "load_models_gpu")
    comfy.progress.clear()
    depth, control = tools.EstimateVideoDepth.execute(model, frames, input_size=28, batch_size=2, chunk_size=4,
                                                      overlap=1, mode=mode, robust="irls", momentum=0.3,
                                                      static_threshold=static_threshold, tile_size=tile_size, tta=tta)
    chunks = 2 if mode == "running" else 3  # running: 4 + 3 frames; clip: 3 new frames per chunk of 4
    assert len(loads) == chunks and all(args[0] == [model.memory.patcher] for args, _ in loads)
    assert not model.memory.is_loaded  # offload_after_use honoured after every chunk
    assert [v for v, _ in comfy.progress][-1] == 7 and len(comfy.progress) == chunks

    reference = DepthEstimator(str(models[RELATIVE_OPTION]), dtype="fp32", device="cpu")
    expected = estimate_video(reference, frames, chunk_size=4, overlap=1, mode=mode, momentum=0.3, robust="irls",
                              static_threshold=static_threshold or None, input_size=28, batch_size=2,
                              tile_size=tile_size, tta=tta)
    torch.testing.assert_close(depth.depth, expected.depth)
    assert depth.kind == "disparity" and len(depth) == 7 and depth.processed_size[0] == (28, 42)
    torch.testing.assert_close(control, to_image(normalize_clip(expected.depth, expected.kind)))
    assert control.shape == (7, 42, 70, 3)
    loader.clear_cache()


def test_video_depth_node_rejects_overlap_not_below_chunk_size(tools, comfy, models):
    assert "tile_size must be 0" in tools.EstimateVideoDepth.validate_inputs(tile_size=10)
    assert tools.EstimateVideoDepth.validate_inputs(tile_size=0) is True
    model = comfy.pack.nodes.loader.load(RELATIVE_OPTION, "fp32")
    with pytest.raises(ValueError, match=r"overlap must be an integer in \[0, chunk_size\) = \[0, 4\), got 4"):
        tools.EstimateVideoDepth.execute(model, torch.rand(6, 28, 28, 3), input_size=28, batch_size=2, chunk_size=4,
                                         overlap=4, mode="clip", robust="irls", momentum=0.2, static_threshold=0.0)


# --------------------------------------------------------------------------------------------- save / load


def test_save_then_load_round_trips_the_raw_depth_exactly(comfy, tools, models):
    """Estimate -> Save Depth (npy, exr) in a graph; Load Depth reads the files back bit for bit."""
    rng = np.random.default_rng(9)
    Image.fromarray((rng.random((30, 44, 3)) * 255).astype(np.uint8)).save(comfy.input_dir / "rt.png")
    saved = {}
    for fmt in ("npy", "exr"):
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "rt.png"}},
            "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": METRIC_OPTION, "dtype": "fp32", "memory": "managed"}},
            "3": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "input_size": 28,
                                                               "batch_size": 1}},
            "4": {"class_type": "AnyDepthSave", "inputs": {"depth": ["3", 0], "filename_prefix": f"rt/{fmt}", "format": fmt,
                                                           "mode": "v2_style", "scope": "image", "near": 0.0, "far": 0.0,
                                                           "invert": False}},
        }
        (item,) = comfy.run(prompt)["outputs"]["4"]["depth_files"]
        src = comfy.output_dir / item["subfolder"] / item["filename"]
        (comfy.input_dir / "depth_in").mkdir(exist_ok=True)
        for path in [src] + ([src.with_suffix(".json")] if fmt == "npy" else []):
            shutil.copy2(path, comfy.input_dir / "depth_in" / path.name)
        saved[fmt] = f"depth_in/{item['filename']}"
    estimator = DepthEstimator(str(models[METRIC_OPTION]), dtype="fp32", device="cpu")
    image = torch.from_numpy(np.asarray(Image.open(comfy.input_dir / "rt.png")).astype(np.float32) / 255.0)[None]
    expected = estimator.estimate(image, input_size=28)

    options = tools.depth_files()
    for fmt, name in saved.items():
        assert name in options
        (loaded,) = tools.LoadDepth.execute(name, "from file").args
        assert torch.equal(loaded.depth, expected.depth), fmt  # the raw float32 values, bit for bit
        assert loaded.kind == "metric_depth" and loaded.max_depth == 20.0 and loaded.model_name == "v2-metric-indoor-small"
        assert loaded.depth.shape == (1, 30, 44) and len(loaded) == 1

    # Load Depth in a graph, saved again: the same values come out
    prompt = {
        "1": {"class_type": "AnyDepthLoadDepth", "inputs": {"file": saved["npy"], "kind": "from file"}},
        "2": {"class_type": "AnyDepthSave", "inputs": {"depth": ["1", 0], "filename_prefix": "rt/again", "format": "npy",
                                                       "mode": "v2_style", "scope": "image", "near": 0.0, "far": 0.0,
                                                       "invert": False}},
    }
    (item,) = comfy.run(prompt)["outputs"]["2"]["depth_files"]
    again = load_depth(comfy.output_dir / item["subfolder"] / item["filename"])
    np.testing.assert_array_equal(again.depth, expected.depth[0].numpy())
    assert again.kind == "metric_depth" and again.metadata["max_depth_m"] == 20.0


def test_load_depth_lists_depth_files_and_needs_a_kind_for_foreign_ones(comfy, tools):
    folder = comfy.input_dir / "foreign"
    folder.mkdir(exist_ok=True)
    values = np.linspace(0.1, 0.9, 12 * 16, dtype=np.float32).reshape(12, 16)
    np.save(folder / "plain.npy", values)  # no sidecar: no kind recorded
    save_depth(folder / "disp.png", values, kind="disparity")  # 16-bit PNG with metadata
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "photo.png")  # an ordinary 8-bit image
    (folder / "notes.txt").write_text("not depth")
    options = tools.depth_files()
    assert {"foreign/plain.npy", "foreign/disp.png"} <= set(options)
    assert "foreign/photo.png" not in options and "foreign/notes.txt" not in options

    with pytest.raises(ValueError, match="records no depth kind"):
        tools.LoadDepth.execute("foreign/plain.npy", "from file")
    (loaded,) = tools.LoadDepth.execute("foreign/plain.npy", "disparity").args
    np.testing.assert_array_equal(loaded.depth[0].numpy(), values)
    (png,) = tools.LoadDepth.execute("foreign/disp.png", "from file").args
    step = (values.max() - values.min()) / 65534
    assert png.kind == "disparity" and np.abs(png.depth[0].numpy() - values).max() <= step / 2 + 1e-7

    assert "'../secret.npy' is not inside the input folder" in tools.LoadDepth.validate_inputs(file="../secret.npy")
    with pytest.raises(ValueError, match="not inside the input folder"):
        tools.LoadDepth.execute("../secret.npy", "disparity")
    before = tools.LoadDepth.fingerprint_inputs("foreign/plain.npy", "disparity")
    np.save(folder / "plain.npy", values[:6])
    assert tools.LoadDepth.fingerprint_inputs("foreign/plain.npy", "disparity") != before  # a changed file reruns


def _save_prompt(image: str, fmt: str, prefix: str, model: str = METRIC_OPTION) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": model, "dtype": "fp32", "memory": "managed"}},
        "3": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "input_size": 28,
                                                           "batch_size": 1}},
        "4": {"class_type": "AnyDepthSave", "inputs": {"depth": ["3", 0], "filename_prefix": prefix, "format": fmt,
                                                       "mode": "metric_linear", "scope": "image", "near": 0.0, "far": 0.0,
                                                       "invert": False}},
    }


def _to_input(comfy, src, folder: str = "png_in") -> str:
    (comfy.input_dir / folder).mkdir(exist_ok=True)
    shutil.copy2(src, comfy.input_dir / folder / src.name)
    return f"{folder}/{src.name}"


def test_save_depth_png16_round_trips_through_load_depth_and_control_pngs_are_refused(comfy, tools, models):
    """Save Depth control_png16+depth_png16 -> Load Depth: kind, units, range and values within the PNG's step;
    the control PNG beside it is not listed, and loading it says what it is."""
    rng = np.random.default_rng(4)
    Image.fromarray((rng.random((30, 44, 3)) * 255).astype(np.uint8)).save(comfy.input_dir / "png_rt.png")
    ui = comfy.run(_save_prompt("png_rt.png", "control_png16+depth_png16", "png_rt/d"))["outputs"]["4"]
    (picture,), (raw_item,) = ui["images"], ui["depth_files"]
    assert picture["filename"] == "d_00001_.png" and raw_item["filename"] == "d_00001_raw.png"
    raw_name = _to_input(comfy, comfy.output_dir / "png_rt" / raw_item["filename"])
    control_name = _to_input(comfy, comfy.output_dir / "png_rt" / picture["filename"])
    options = tools.depth_files()
    assert raw_name in options and control_name not in options  # listed from the header: pictures are not depth

    estimator = DepthEstimator(str(models[METRIC_OPTION]), dtype="fp32", device="cpu")
    image = torch.from_numpy(np.asarray(Image.open(comfy.input_dir / "png_rt.png")).astype(np.float32) / 255.0)[None]
    expected = estimator.estimate(image, input_size=28).depth
    (loaded,) = tools.LoadDepth.execute(raw_name, "from file").args
    assert (loaded.kind, loaded.units, loaded.max_depth) == ("metric_depth", "metres", 20.0)
    assert loaded.model_name == "v2-metric-indoor-small" and loaded.depth.shape == (1, 30, 44)
    step = float(expected.max() - expected.min()) / 65534
    assert float((loaded.depth - expected).abs().max()) <= step / 2 + 1e-6  # metres within half a PNG step

    assert tools.LoadDepth.validate_inputs(file=control_name) is True  # cheap: no file opened
    err = comfy.execution_error({"1": {"class_type": "AnyDepthLoadDepth", "inputs": {"file": control_name, "kind": "from file"}},
                                 "2": {"class_type": "AnyDepthToImage",
                                       "inputs": {"depth": ["1", 0], "mode": "v2_style", "scope": "image", "low_percentile": 1.0,
                                                  "high_percentile": 99.0, "near": 0.0, "far": 0.0, "invert": False,
                                                  "gamma": 1.0}},
                                 "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}})
    assert err["node_type"] == "AnyDepthLoadDepth" and err["exception_type"].endswith("ControlImageError")
    assert "is a control image (a normalised picture of depth, control_png16, mode metric_linear)" in err["exception_message"]


def test_load_depth_reads_what_anydepth_estimate_wrote(comfy, tools, models, tmp_path):
    from anydepth.cli import main

    rng = np.random.default_rng(6)
    Image.fromarray((rng.random((26, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "cli.png")
    for fmt in ("depth_png16", "npz"):
        rc = main(["estimate", str(tmp_path / "cli.png"), "--out", str(tmp_path / fmt), "--model", str(models[METRIC_OPTION]),
                   "--format", fmt, "--input-size", "28", "--dtype", "fp32", "--device", "cpu"])
        (written,) = (tmp_path / fmt).rglob(f"*{'.png' if fmt == 'depth_png16' else '.npz'}")
        (loaded,) = tools.LoadDepth.execute(_to_input(comfy, written, f"cli_{fmt}"), "from file").args
        expected = DepthEstimator(str(models[METRIC_OPTION]), dtype="fp32", device="cpu").estimate(
            str(tmp_path / "cli.png"), input_size=28).depth
        tol = float(expected.max() - expected.min()) / 65534 / 2 + 1e-6 if fmt == "depth_png16" else 0.0
        assert rc == 0 and (loaded.kind, loaded.units, loaded.max_depth) == ("metric_depth", "metres", 20.0), fmt
        assert float((loaded.depth - expected).abs().max()) <= tol, fmt


def test_save_depth_formats_use_the_library_words(tools, comfy):
    save = comfy.pack.nodes.save
    assert save.FORMATS[:6] == ("control_png16", "control_png8", "npy", "npz", "exr", "depth_png16")
    assert "control_png16+depth_png16" in save.FORMATS and "png16" not in save.FORMATS
    assert save.split_format("control_png8+npz") == ("control_png8", "npz")
    message = save.SaveDepth.validate_inputs(format="png16+npy")
    assert "'png16' is now control_png16 (a normalised picture) or depth_png16 (raw values)" in message
    assert "one control image format, one raw format" in save.SaveDepth.validate_inputs(format="npy+exr")
    assert save.SaveDepth.validate_inputs(format="control_png16+exr") is True
