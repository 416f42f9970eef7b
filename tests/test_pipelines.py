"""Control images for diffusers pipelines: sizes, normalisation, real tiny pipelines, GPU sharing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import DepthEstimator, normalize_depth
from anydepth.estimator import DepthResult
from anydepth.fit import fit_to_size
from anydepth.pipelines import (
    control_image,
    control_inputs,
    control_size,
    default_pixels,
    depth_to_control,
    load_depth_pipeline,
    offload,
    pipeline_multiple,
    takes_raw_tensors,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipes(tiny_pipelines):
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    p = tiny_pipelines
    sd15 = load_depth_pipeline(p["sd15"], p["sd15-controlnet"], device="cpu")
    out = {
        "sd15": sd15,
        "sd15_img2img": StableDiffusionControlNetImg2ImgPipeline(**sd15.components),
        "sdxl": load_depth_pipeline(p["sdxl"], p["sdxl-controlnet"], device="cpu"),
        "flux_control": load_depth_pipeline(p["flux-depth"], device="cpu"),
        "flux_controlnet": load_depth_pipeline(p["flux"], p["flux-controlnet"], device="cpu"),
    }
    for pipe in out.values():
        pipe.set_progress_bar_config(disable=True)
    return out


# ------------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    "source, kwargs, expected",
    [
        ((480, 640), dict(multiple=8), (480, 640)),
        ((481, 643), dict(multiple=8), (480, 640)),  # floored like diffusers
        ((481, 643), dict(multiple=16), (480, 640)),
        ((480, 640), dict(multiple=16, height=500), (496, 656)),  # 496 * 4/3 = 661.3 -> 656
        ((480, 640), dict(multiple=8, width=1000), (752, 1000)),  # 1000 * 3/4 = 750 -> 752
        ((480, 640), dict(multiple=8, height=1024, width=1024), (1024, 1024)),
        ((480, 640), dict(multiple=16, height=1030, width=770), (1024, 768)),
        ((480, 640), dict(multiple=8, pixels=512 * 512), (440, 592)),
        ((1000, 1000), dict(multiple=16, pixels=1024 * 1024), (1024, 1024)),
        ((10, 1000), dict(multiple=16, height=16), (16, 1600)),
    ],
)
def test_control_size_known_answers(source, kwargs, expected):
    assert control_size(source, **kwargs) == expected


def test_control_size_errors():
    with pytest.raises(ValueError, match="height=5 is smaller than the pipeline's multiple 8"):
        control_size((64, 64), multiple=8, height=5)
    with pytest.raises(ValueError, match="multiple must be a positive integer"):
        control_size((64, 64), multiple=0)
    with pytest.raises(ValueError, match="source height"):
        control_size((7, 64), multiple=8)


def test_depth_to_control_fits_with_the_one_fit_vocabulary():
    """crop / resize / pad are anydepth.fit's words; a padded border is missing depth: black, out of the statistics."""
    depth = torch.linspace(1, 2, 4 * 8).reshape(1, 4, 8)  # disparity, twice as wide as the 8×8 target
    for fit in ("crop", "resize"):
        x = depth_to_control(depth, "disparity", multiple=4, height=8, width=8, fit=fit, mode="minmax")
        expected = normalize_depth(fit_to_size(depth[:, None], (8, 8), fit)[:, 0], "disparity", "minmax")
        torch.testing.assert_close(x[:, 0], expected)
    padded = depth_to_control(depth, "disparity", multiple=4, height=8, width=8, fit="pad", mode="minmax", invert=True)
    assert (padded[0, 0, :2] == 0).all() and (padded[0, 0, 6:] == 0).all()  # 4×8 scaled into rows 2..5
    inner = padded[0, 0, 2:6]
    assert float(inner.min()) == 0.0 and float(inner.max()) == 1.0  # min-max of the image only
    with pytest.raises(ValueError, match="fit mode 'stretch' is now called 'resize'"):
        depth_to_control(depth, "disparity", multiple=4, fit="stretch")


# ------------------------------------------------------------------------------------------------ control images


def test_depth_to_control_equals_normalising_the_fitted_map():
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(2, 30, 50, generator=g) + 0.1
    before = depth.clone()
    x = depth_to_control(depth, "metric_depth", multiple=16, height=32, width=32, mode="metric_disparity")
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(depth, before)  # caller's tensor untouched
    fitted = fit_to_size(depth[:, None], (32, 32), "crop")[:, 0]
    expected = normalize_depth(fitted, "metric_depth", "metric_disparity")
    torch.testing.assert_close(x[:, 0], expected)
    torch.testing.assert_close(x[:, 1], x[:, 0])
    torch.testing.assert_close(x[:, 2], x[:, 0])
    assert float(x.amin()) == 0.0 and float(x.amax()) == 1.0  # min-max of the visible region


def test_depth_to_control_pil_and_result_inputs():
    maps = [torch.linspace(0, 1, 24 * 40).reshape(24, 40), torch.linspace(0, 2, 16 * 32).reshape(16, 32)]
    result = DepthResult(maps, "disparity", [(28, 42), (28, 56)], "tiny")
    pil = depth_to_control(result, output="pil", multiple=8, mode="minmax")
    assert [im.size for im in pil] == [(40, 24), (32, 16)] and all(im.mode == "RGB" for im in pil)
    # one mapping over both maps (scope="batch"): the second map reaches twice the first's brightness
    joint = depth_to_control(result, output="pil", multiple=8, mode="minmax", scope="batch")
    assert np.asarray(joint[0]).max() == 128 and np.asarray(joint[1]).max() == 255
    with pytest.raises(ValueError, match="different sizes"):
        depth_to_control(result, multiple=8)  # one tensor needs one size
    both = depth_to_control(result, multiple=8, height=16, width=24)
    assert both.shape == (2, 3, 16, 24)


def test_depth_to_control_errors():
    d = torch.rand(1, 16, 16)
    with pytest.raises(ValueError, match="kind is required"):
        depth_to_control(d)
    with pytest.raises(ValueError, match="needs metric depth"):
        depth_to_control(d, "disparity", mode="metric_linear")
    with pytest.raises(ValueError, match="output must be one of pt, pil"):
        depth_to_control(d, "disparity", output="np")
    with pytest.raises(TypeError, match="raw depth must be floating point"):
        depth_to_control(torch.ones(1, 16, 16, dtype=torch.int64), "disparity")
    with pytest.raises(TypeError, match="DepthResult"):
        depth_to_control("depth.png", "disparity")


def test_control_always_matches_the_pipeline_multiple():
    """Whatever the source size and request, the result is (B,3,H,W) in 0..1 with H, W multiples."""
    rng = np.random.default_rng(1)
    for _ in range(40):
        multiple = int(rng.choice([8, 16, 32]))
        h, w = (int(v) for v in rng.integers(multiple, 300, 2))
        req = dict(height=int(rng.integers(multiple, 400)) if rng.random() < 0.5 else None,
                   width=int(rng.integers(multiple, 400)) if rng.random() < 0.5 else None)
        x = depth_to_control(torch.rand(2, h, w) * 5, "disparity", multiple=multiple, fit=str(rng.choice(["crop", "resize", "pad"])), **req)
        assert x.ndim == 4 and x.shape[:2] == (2, 3) and x.dtype == torch.float32
        assert x.shape[-2] % multiple == 0 and x.shape[-1] % multiple == 0
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        if req["height"]:
            assert x.shape[-2] == req["height"] - req["height"] % multiple


# ------------------------------------------------------------------------------------------------ real pipelines


def test_pipeline_multiple_and_default_size(pipes):
    assert {name: pipeline_multiple(p) for name, p in pipes.items()} == {
        "sd15": 8, "sd15_img2img": 8, "sdxl": 8, "flux_control": 16, "flux_controlnet": 16}
    assert default_pixels(pipes["sd15"]) == 64 * 64  # tiny UNet sample_size 8 × 8
    assert default_pixels(pipes["flux_control"]) == 1024 * 1024  # Flux default_sample_size 128 × 8

    class SD3Like:  # SD3: VAE factor 8, transformer patch 2 -> 16
        vae_scale_factor = 8

        class transformer:
            class config:
                patch_size = 2

    assert pipeline_multiple(SD3Like()) == 16
    with pytest.raises(TypeError, match="vae_scale_factor"):
        pipeline_multiple(object())


CASES = {
    # pipeline, control keyword, requested (height, width), expected output (height, width)
    "sd15": ("image", (40, 72), (40, 72)),
    "sd15_img2img": ("control_image", (40, 72), (40, 72)),
    "sdxl": ("image", (48, 40), (48, 40)),
    "flux_control": ("control_image", (40, 72), (32, 64)),
    "flux_controlnet": ("control_image", (48, 40), (48, 32)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pipeline_runs_with_our_control_image(name, pipes, tiny_estimator, photo):
    pipe = pipes[name]
    key, (h, w), expected = CASES[name]
    control = control_image(tiny_estimator, photo, pipe=pipe, height=h, width=w)
    assert control.shape == (1, 3, *expected) and control.dtype == torch.float32
    inputs = control_inputs(pipe, control)
    assert set(inputs) == {key, "height", "width"} and (inputs["height"], inputs["width"]) == expected
    extra = {"image": torch.rand(1, 3, *expected, generator=torch.Generator().manual_seed(1)), "strength": 0.9} \
        if name == "sd15_img2img" else {}

    def run(inputs):
        out = pipe("a room", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np",
                   **inputs, **extra).images
        return out

    image = run(inputs)
    assert image.shape == (1, *expected, 3)
    assert np.isfinite(image).all()
    # the control image reaches the model: another depth map changes the result
    other = run(control_inputs(pipe, 1.0 - control))
    assert np.abs(image - other).max() > 1e-4
    # PIL control images: the same size, and what the pipeline makes of their 8-bit values
    pil = control_image(tiny_estimator, photo, pipe=pipe, height=h, width=w, output="pil")
    assert [im.size for im in pil] == [(expected[1], expected[0])] and pil[0].mode == "RGB"
    as_8bit = torch.from_numpy(np.array(pil[0])).permute(2, 0, 1)[None].float() / 255.0
    assert (as_8bit - control).abs().max() <= 0.5 / 255 + 1e-6
    from_pil = run(control_inputs(pipe, pil))
    np.testing.assert_allclose(from_pil, run(control_inputs(pipe, as_8bit)), atol=1e-5)
    if takes_raw_tensors(pipe):  # the 0..1 tensor given directly lands in the wrong range of the VAE
        direct = run({key: as_8bit, "height": expected[0], "width": expected[1]})
        assert np.abs(direct - from_pil).max() > 1e-3


def test_which_pipelines_take_raw_tensors(pipes):
    assert {name: takes_raw_tensors(p) for name, p in pipes.items()} == {
        "sd15": False, "sd15_img2img": False, "sdxl": False, "flux_control": True, "flux_controlnet": True}
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(control_inputs(pipes["flux_control"], x)["control_image"], x * 2 - 1)
    assert control_inputs(pipes["sd15"], x)["image"] is x
    with pytest.raises(ValueError, match="expected 0..1"):
        control_inputs(pipes["sd15"], x * 2 - 1)


def test_control_inputs_refuses_wrong_sizes_and_types(pipes):
    with pytest.raises(ValueError, match="needs multiples of 16"):
        control_inputs(pipes["flux_control"], torch.zeros(1, 3, 40, 72))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        control_inputs(pipes["sd15"], torch.zeros(1, 40, 72))
    with pytest.raises(TypeError, match="PIL images"):
        control_inputs(pipes["sd15"], "depth.png")
    with pytest.raises(ValueError, match="different sizes"):
        control_inputs(pipes["sd15"], [Image.new("RGB", (8, 8)), Image.new("RGB", (16, 8))])
    with pytest.raises(ValueError, match="does not fit"):
        depth_to_control(torch.rand(1, 32, 32), "disparity", pipe=pipes["flux_control"], multiple=8)


# ------------------------------------------------------------------------------------------------ GPU sharing


@pytest.mark.parametrize("device", DEVICES)
def test_offload_pattern_leaves_the_depth_model_on_the_cpu(device, tiny_files, photo):
    est = DepthEstimator(tiny_files["pth"], dtype="fp32", input_size=70, device=device, memory="offload")
    seen, moves = [], []
    est.model.register_forward_pre_hook(lambda m, a: seen.append(next(m.parameters()).device.type))
    original_to = est.model.to
    est.model.to = lambda *a, **k: (moves.append(torch.device(a[0]).type if a else k.get("device")), original_to(*a, **k))[1]
    result = est.estimate([photo, photo])
    assert seen == [device]  # the forward ran on the compute device ...
    assert moves[-2:] == [device, "cpu"]  # ... it was moved there and back
    assert {p.device.type for p in est.model.parameters()} == {"cpu"}  # ... and it is parked on the CPU
    keep = DepthEstimator(tiny_files["pth"], dtype="fp32", input_size=70, device=device)
    torch.testing.assert_close(keep.estimate([photo, photo]).depth, result.depth)  # same numbers as "keep"
    offload(keep)
    assert {p.device.type for p in keep.model.parameters()} == {"cpu"}
    torch.testing.assert_close(keep.estimate(photo).depth[0], result.depth[0])  # comes back on the next call


def test_offload_estimator_beside_model_cpu_offload(tiny_pipelines, tiny_files, photo):
    """The depth model and a pipeline with enable_model_cpu_offload share one device, same images."""
    est = DepthEstimator(tiny_files["pth"], dtype="fp32", input_size=70, device="cpu", memory="offload")
    plain = load_depth_pipeline(tiny_pipelines["sd15"], tiny_pipelines["sd15-controlnet"], device="cpu")
    hooked = load_depth_pipeline(tiny_pipelines["sd15"], tiny_pipelines["sd15-controlnet"], device="cpu")
    hooked.enable_model_cpu_offload(device="cpu")  # the accelerate hooks the GPU users get
    assert hooked._offload_device is not None and hooked._all_hooks
    images = []
    for pipe in (plain, hooked):
        pipe.set_progress_bar_config(disable=True)
        control = control_image(est, photo, pipe=pipe, height=32, width=48)
        assert {p.device.type for p in est.model.parameters()} == {"cpu"}
        images.append(pipe("a room", num_inference_steps=2, generator=torch.Generator().manual_seed(3),
                           output_type="np", **control_inputs(pipe, control)).images)
    np.testing.assert_allclose(images[0], images[1], atol=1e-5)
