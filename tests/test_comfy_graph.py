"""The pack inside a real ComfyUI (in process): graphs executed by ``PromptExecutor``, checked with numbers.

Reference values come from outside the pack: the transformers ``DepthAnythingForDepthEstimation`` whose
weights the tiny checkpoints hold (exact at 518×518, where transformers matches the original), and the
library called directly (any size).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import DepthEstimator, apply_colormap, normalize_depth, to_image, to_uint16
from anydepth.export import load_depth
from comfy_harness import (ANYDEPTH_NODES, METRIC_OPTION, RELATIVE_OPTION, comfy, install_tiny_models,  # noqa: F401
                           tiny_checkpoint, tiny_reference)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def models(comfy):
    return install_tiny_models(comfy.models_dir)


def write_input(comfy, name: str, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB picture in ComfyUI's input folder; returns it as LoadImage will ([1, H, W, 3])."""
    rng = np.random.default_rng(seed)
    small = rng.random((4, 6, 3))
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    img.save(comfy.input_dir / name)
    return torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)[None]


def transformers_depth(model, image: torch.Tensor) -> torch.Tensor:
    """``predicted_depth`` of the transformers reference for a ComfyUI IMAGE at 518×518 (no resizing)."""
    x = (image.movedim(-1, 1) - MEAN) / STD
    with torch.no_grad():
        return model(pixel_values=x).predicted_depth


def load(model: str = RELATIVE_OPTION, dtype: str = "fp32") -> dict:
    return {"class_type": "AnyDepthLoadModel", "inputs": {"model": model, "dtype": dtype, "memory": "managed"}}


def estimate(input_size: int, batch_size: int = 4, image=("1", 0), model=("2", 0)) -> dict:
    return {"class_type": "AnyDepthEstimate",
            "inputs": {"depth_model": list(model), "image": list(image), "input_size": input_size, "batch_size": batch_size}}


def to_img(depth=("3", 0), mode="v2_style", scope="image", near=0.0, far=0.0, invert=False, gamma=1.0) -> dict:
    return {"class_type": "AnyDepthToImage",
            "inputs": {"depth": list(depth), "mode": mode, "scope": scope, "low_percentile": 1.0, "high_percentile": 99.0,
                       "near": near, "far": far, "invert": invert, "gamma": gamma}}


def read_png(comfy, item: dict) -> np.ndarray:
    return np.asarray(Image.open(comfy.output_dir / item["subfolder"] / item["filename"]))


def test_every_node_is_registered_with_a_v3_schema(comfy):
    mappings = comfy.nodes.NODE_CLASS_MAPPINGS
    for node_id in ANYDEPTH_NODES:
        cls = mappings[node_id]
        schema = cls.GET_SCHEMA()
        assert schema.node_id == node_id and schema.category.startswith("anydepth")
        assert schema.display_name and schema.description
        for inp in schema.inputs:
            assert inp.tooltip, f"{node_id}.{inp.id} has no tooltip"
        assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == schema.display_name
    assert [k for k in mappings if k.startswith("AnyDepth")] == list(ANYDEPTH_NODES)


def test_load_image_to_saved_png_matches_the_library(comfy, models):
    """LoadImage -> Load Depth Model -> Estimate Depth -> Depth to Image -> SaveImage, at an odd size."""
    image = write_input(comfy, "odd.png", 100, 150)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "odd.png"}},
        "2": load(),
        "3": estimate(input_size=70),  # the network sees 70×112, the depth comes back at 100×150
        "4": to_img(),
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "graph/odd"}},
    }
    history = comfy.run(prompt)
    (saved,) = history["outputs"]["5"]["images"]
    png = read_png(comfy, saved)
    assert png.shape == (100, 150, 3)

    ref = DepthEstimator(str(models[RELATIVE_OPTION]), dtype="fp32", device="cpu").estimate(image, input_size=70)
    assert ref.processed_size == [(70, 112)]
    expected = np.clip(255.0 * to_image(normalize_depth(ref.depth, ref.kind, "v2_style"))[0].numpy(), 0, 255).astype(np.uint8)
    diff = np.abs(png.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert png.std() > 20  # a real depth map, not a flat image


@pytest.mark.parametrize("metric", [False, True], ids=["relative", "metric"])
def test_save_depth_matches_transformers_at_518(comfy, models, metric):
    """Raw depth saved as NPY / EXR equals the transformers reference; the 16-bit PNG is its normalisation."""
    name = f"square_{int(metric)}.png"
    image = write_input(comfy, name, 518, 518, seed=3)
    option = METRIC_OPTION if metric else RELATIVE_OPTION
    mode, near, far = ("metric_linear", 0.5, 20.0) if metric else ("v2_style", 0.0, 0.0)
    raw_format = "exr" if metric else "npy"
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": load(option),
        "3": estimate(input_size=518),
        "4": {"class_type": "AnyDepthSave",
              "inputs": {"depth": ["3", 0], "filename_prefix": f"graph/sq{int(metric)}", "format": f"control_png16+{raw_format}", "mode": mode,
                         "scope": "image", "near": near, "far": far, "invert": False}},
    }
    ui = comfy.run(prompt)["outputs"]["4"]
    (png_item,), (raw_item,) = ui["images"], ui["depth_files"]
    assert png_item["filename"] == f"sq{int(metric)}_00001_.png" and raw_item["filename"] == f"sq{int(metric)}_00001_.{raw_format}"
    assert png_item["subfolder"] == "graph" and png_item["type"] == "output"
    saved = load_depth(comfy.output_dir / "graph" / raw_item["filename"])  # the library's reader
    raw = saved.depth
    assert saved.kind == ("metric_depth" if metric else "disparity") and saved.metadata["model"] == option.split(" ")[0]
    png = read_png(comfy, png_item)
    assert raw.dtype == np.float32 and raw.shape == (518, 518) and png.dtype == np.uint16 and png.shape == (518, 518)

    ref = transformers_depth(tiny_reference(metric), image)[0].numpy()
    assert np.abs(raw - ref).max() <= 1e-4 * (ref.max() - ref.min())
    if metric:
        assert 0 < raw.min() and raw.max() <= 20.0  # metres, never normalised away
        expected = np.round(65535 * np.clip((far - raw) / (far - near), 0, 1)).astype(np.uint16)
    else:
        expected = to_uint16(normalize_depth(torch.from_numpy(raw)[None], "disparity", "v2_style"))[0]
    assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1


def test_one_step_node_and_colormap(comfy, models):
    """Depth Anything (one step) gives the same picture as Load + Estimate; Depth Colormap colours it."""
    image = write_input(comfy, "pair.png", 64, 96, seed=5)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "pair.png"}},
        "2": load(dtype="auto"),
        "3": estimate(input_size=56),
        "4": {"class_type": "AnyDepthAnything",
              "inputs": {"image": ["1", 0], "model": RELATIVE_OPTION, "input_size": 56, "mode": "v2_style", "scope": "image"}},
        "5": {"class_type": "AnyDepthColormap", "inputs": {"image": ["4", 0], "colormap": "viridis"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "pair/two_step"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "pair/one_step"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "pair/colour"}},
    }
    out = comfy.run(prompt)["outputs"]
    two, one, colour = (read_png(comfy, out[k]["images"][0]) for k in ("6", "7", "8"))
    np.testing.assert_array_equal(one, two)
    ref = DepthEstimator(str(models[RELATIVE_OPTION]), dtype="fp32", device="cpu").estimate(image, input_size=56)
    coloured = apply_colormap(normalize_depth(ref.depth, ref.kind, "v2_style"), "viridis")[0].numpy()
    expected = np.clip(255.0 * coloured, 0, 255).astype(np.uint8)
    assert np.abs(colour.astype(int) - expected.astype(int)).max() <= 1


def test_estimate_depth_passes_tiling_and_tta_to_the_library(comfy, models):
    estimate_node = comfy.pack.nodes.depth_nodes.EstimateDepth
    model = comfy.pack.nodes.loader.load(RELATIVE_OPTION, "fp32")
    image = torch.rand(1, 70, 100, 3)
    reference = DepthEstimator(str(models[RELATIVE_OPTION]), dtype="fp32", device="cpu")
    tiled, _ = estimate_node.execute(model, image, input_size=28, batch_size=2, tile_size=56, tta="flip")
    torch.testing.assert_close(tiled.depth, reference.estimate(image, input_size=28, tile_size=56, tta="flip").depth)
    plain, _ = estimate_node.execute(model, image, input_size=28, batch_size=2)
    torch.testing.assert_close(plain.depth, reference.estimate(image, input_size=28).depth)
    assert (tiled.depth - plain.depth).abs().max() > 1e-3
    assert "tile_size must be 0" in estimate_node.validate_inputs(tile_size=10)


def test_estimate_depth_passes_the_token_budget_and_rounds_input_size(comfy, models):
    """max_tokens: -1 is the library's default budget, 0 no cap, N a budget of N patches; input_size snaps to 14."""
    estimate_node = comfy.pack.nodes.depth_nodes.EstimateDepth
    model = comfy.pack.nodes.loader.load(RELATIVE_OPTION, "fp32")
    strip = torch.rand(1, 4, 300, 3)  # 75:1 - far beyond the 4:1 the default budget keeps at the reference size
    reference = DepthEstimator(str(models[RELATIVE_OPTION]), dtype="fp32", device="cpu")
    for widget, library in ((-1, None), (0, 0), (30, 30)):
        depth, _ = estimate_node.execute(model, strip, input_size=28, batch_size=1, max_tokens=widget)
        expected = reference.estimate(strip, input_size=28, max_tokens=library)
        assert depth.processed_size == expected.processed_size, widget
        torch.testing.assert_close(depth.depth, expected.depth)
        assert depth.depth.shape == (1, 4, 300)  # always the input's size
    sizes = {w: estimate_node.execute(model, strip, input_size=28, batch_size=1, max_tokens=w)[0].processed_size[0]
             for w in (-1, 0, 30)}
    assert sizes[0] == (28, 2100)  # the reference rule: shorter side 28, 150 patches along
    assert sizes[-1] == (14, 224) and sizes[30] == (14, 420)  # default: 4 squares of 2x2 = 16 patches, 1 across
    odd, _ = estimate_node.execute(model, strip[:, :, :8], input_size=30, batch_size=1)  # 30 -> 28, as the widget does
    assert odd.processed_size == reference.estimate(strip[:, :, :8], input_size=28).processed_size


def test_metric_mode_on_a_relative_model_is_a_clear_error(comfy, models):
    write_input(comfy, "err.png", 28, 28)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "err.png"}},
        "2": load(),
        "3": estimate(input_size=28),
        "4": to_img(mode="metric_linear"),
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    error = comfy.execution_error(prompt)
    assert error["node_type"] == "AnyDepthToImage"
    assert "needs metric depth in metres" in error["exception_message"]


def test_model_cache_rebuilds_on_file_or_dtype_change(comfy, models):
    loader = comfy.pack.nodes.loader
    path = comfy.models_dir / "depthanything" / "cache_test.pth"
    tiny_checkpoint(path)
    first = loader.load("cache_test.pth", "fp32")
    assert loader.load("cache_test.pth", "fp32") is first  # cached across runs
    fingerprint = loader.fingerprint("cache_test.pth")
    bf16 = loader.load("cache_test.pth", "bf16")
    assert bf16 is not first and bf16.estimator.dtype == torch.bfloat16 and first.estimator.dtype == torch.float32

    tiny_checkpoint(path, metric=True)  # the file changes on disk: other weights
    assert loader.fingerprint("cache_test.pth") != fingerprint
    rebuilt = loader.load("cache_test.pth", "fp32")
    assert rebuilt is not first
    old_w, new_w = (m.estimator.model.pretrained.patch_embed.proj.weight for m in (first, rebuilt))
    assert not torch.equal(old_w, new_w)
    torch.testing.assert_close(new_w, tiny_reference(metric=True).backbone.embeddings.patch_embeddings.projection.weight)
    assert not first.memory.is_loaded  # the stale build was dropped from the device
    loader.clear_cache()


def test_model_dropdown_lists_files_and_catalogue_with_licenses(comfy, models):
    folders = comfy.pack.nodes.folders
    extra = comfy.base / "elsewhere" / "da3"
    tiny_checkpoint(extra / "sub" / "custom_depth.safetensors".replace(".safetensors", ".pth"))
    comfy.folder_paths.add_model_folder_path("depthanything3", str(extra))  # as extra_model_paths.yaml would
    folders.register()
    options = folders.model_options()
    assert "depth_anything_v2_vits.pth" in options and "sub/custom_depth.pth" in options
    assert "v2-small (Apache-2.0)" in options and "v2-large (CC-BY-NC-4.0)" in options
    assert not any(o.startswith("v2-giant") for o in options)  # no published weights
    assert "da3-small (Apache-2.0)" in options and "da3-large (CC-BY-NC-4.0)" in options
    da3_small = folders.catalogue_labels()["da3-small (Apache-2.0)"]
    assert folders.model_dirs(da3_small)[0] == str(comfy.models_dir / "depthanything3")  # DA3 downloads land here
    assert options.index("sub/custom_depth.pth") < options.index("v2-small (Apache-2.0)")
    assert folders.model_dirs()[0] == str(comfy.models_dir / "depthanything")  # downloads land here
    assert folders.resolve("sub/custom_depth.pth")[0] == extra / "sub" / "custom_depth.pth"
    with pytest.raises(FileNotFoundError, match="not in any depth model folder"):
        folders.resolve("../../etc/passwd")


def test_validate_inputs_is_cheap_and_still_catches_bad_values(comfy, models, monkeypatch):
    """validate_inputs runs on every queue: no schema rebuilt, no folder listed, no image opened."""
    import inspect
    import os

    import PIL.Image

    pack = comfy.pack.nodes
    np.save(comfy.input_dir / "cheap.npy", np.ones((4, 4), np.float32))
    values = {}
    for node in pack.NODES:
        schema = node.define_schema()
        values[node] = {i.id: i.default if getattr(i, "default", None) is not None else i.options[0]
                        for i in schema.inputs if hasattr(i, "options")}
        values[node].update({i.id: i.default for i in schema.inputs
                             if not hasattr(i, "options") and getattr(i, "default", None) is not None})
    values[pack.LoadDepth]["file"] = "cheap.npy"
    values[pack.LoadDepthModel]["model"] = "depth_anything_v2_vits.pth"  # a file: one stat per model folder

    def forbidden(*args, **kwargs):
        raise AssertionError("validate_inputs must not list folders, open images or build schemas")

    for module, name in ((os, "walk"), (os, "scandir"), (os, "listdir"), (PIL.Image, "open"),
                         (comfy.folder_paths, "get_filename_list"), (comfy.folder_paths, "recursive_search")):
        monkeypatch.setattr(module, name, forbidden)
    for node in pack.NODES:
        monkeypatch.setattr(node, "define_schema", classmethod(forbidden))
    for node, given in values.items():
        if "validate_inputs" not in vars(node):  # dropdowns only: ComfyUI checks them (test below)
            continue
        params = inspect.signature(node.validate_inputs).parameters
        assert node.validate_inputs(**{k: v for k, v in given.items() if k in params}) is True, node.__name__
    assert "model 'nope.pth' is not in any depth model folder" in pack.LoadDepthModel.validate_inputs(model="nope.pth")
    assert "neither a weight file" in pack.DepthAnythingOneStep.validate_inputs(model="notes.txt")
    assert "file 'gone.npy' is not available" in pack.LoadDepth.validate_inputs(file="gone.npy")
    assert "fit mode 'stretch' is now called 'resize'" in pack.ApplyDepthControlNet.validate_inputs(fit="stretch")


def test_each_check_lands_on_one_input(comfy):
    """ComfyUI attaches a validate_inputs message to every input the function names, and checks only legacy
    (list-typed) dropdowns itself: so every validate_inputs names one input, and every other dropdown is a Choice."""
    import inspect

    pack = comfy.pack.nodes
    for node in pack.NODES:
        named = [p for p in inspect.signature(node.validate_inputs).parameters if p != "kwargs"]
        assert len(named) <= 1, (node.__name__, named)
        for spec in node.define_schema().inputs:
            if hasattr(spec, "options") and spec.id not in named:
                assert isinstance(spec, pack.validation.Choice), (node.__name__, spec.id)
                assert isinstance(node.INPUT_TYPES()["optional" if spec.optional else "required"][spec.id][0], list)


@pytest.mark.parametrize("node, inputs, bad", [
    ("AnyDepthAnything", {"model": RELATIVE_OPTION, "input_size": 56, "mode": "metric_linear", "scope": "image"}, "mode"),
    ("AnyDepthColormap", {"colormap": "rainbow"}, "colormap"),
    ("AnyDepthLoadModel", {"model": RELATIVE_OPTION, "dtype": "int8", "memory": "managed"}, "dtype"),
])
def test_a_bad_dropdown_value_is_one_error_on_its_input(comfy, models, node, inputs, bad):
    image_input = {"AnyDepthAnything": "image", "AnyDepthColormap": "image"}.get(node)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "cheap_dropdown.png"}},
              "2": {"class_type": node, "inputs": {**inputs, **({image_input: ["1", 0]} if image_input else {})}}}
    if node == "AnyDepthLoadModel":
        prompt["3"] = {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0],
                                                                    "input_size": 28, "batch_size": 1}}
    else:
        prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    write_input(comfy, "cheap_dropdown.png", 8, 8)
    valid, _, _, node_errors = comfy.validate(prompt)
    assert not valid
    (error,) = node_errors["2"]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == ("value_not_in_list", bad)
    assert repr(inputs[bad]) in error["details"] and bad in error["details"]


def test_normalisation_inputs_come_from_the_library_table(comfy):
    """Defaults, ranges and choices of every normalisation input are NORMALIZE_OPTIONS' (0 = unset for near/far)."""
    from anydepth.normalize import NORMALIZE_OPTIONS, RELATIVE_MODES

    pack = comfy.pack.nodes
    seen = 0
    for node in (pack.DepthToImage, pack.SaveDepth, pack.DepthAnythingOneStep, pack.DepthColormap):
        for i in node.define_schema().inputs:
            option = NORMALIZE_OPTIONS.get(i.id)
            if option is None:
                continue
            seen += 1
            assert i.tooltip.startswith(option.help[0].upper() + option.help[1:]), (node.__name__, i.id)
            if option.type is float:
                assert (i.default, i.min, i.max, i.step) == (
                    option.unset if option.default is None else option.default, option.min, option.max, option.step)
            elif option.type is bool:
                assert i.default == option.default
            elif node is pack.DepthColormap:
                assert list(i.options) == list(option.choices) and i.default == "inferno"
            else:
                expected = RELATIVE_MODES if node is pack.DepthAnythingOneStep and i.id == "mode" else option.choices
                assert list(i.options) == list(expected) and i.default == option.default
    assert seen == 8 + 5 + 2 + 1
