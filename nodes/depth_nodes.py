"""Depth nodes: load a model, estimate depth, turn depth into images.

Each ``execute`` converts ComfyUI's layouts at the boundary and calls the library; batching, dtype,
memory and normalisation live in ``anydepth``.
"""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from anydepth.catalog import DEFAULT_MODEL, VARIANTS
from anydepth.estimator import TTA_MODES, DepthResult
from anydepth.normalize import RELATIVE_MODES, apply_colormap, clip_sky, normalize_depth, to_image
from anydepth.tiling import check_tile_size

from . import folders, loader, preview
from .model_patcher import DTYPE_CHOICES
from .options import normalize_inputs, normalize_kwargs
from .types import Depth, DepthModel
from .validation import Choice, check_with, snap_to_step

CATEGORY = "anydepth"

_MODEL_TOOLTIP = (
    "Files in models/depthanything, models/depthanything3 and models/videodepthanything (and their "
    "extra_model_paths.yaml entries), then the catalogue with each model's license: a catalogue entry is downloaded "
    "into its family's folder on first use. CC-BY-NC-4.0 models are not for commercial use."
)
_INPUT_SIZE_TOOLTIP = (
    "Shorter side the network sees, a multiple of 14 (518 as in the reference; other values are rounded to the "
    "nearest multiple). Larger shows finer detail and costs memory quadratically; the depth is returned at the "
    "input image's size either way."
)
INPUT_SIZE_STEP = 14
"""The network's patch size: ``input_size`` is a multiple of it (the widget's step; the node rounds API values)."""
AUTO_MAX_TOKENS = -1
"""The ``max_tokens`` widget value for the library's default budget (``max_tokens=None``); 0 is "no cap"."""
MAX_TOKENS_LIMIT = 1_000_000
_MAX_TOKENS_TOOLTIP = (
    "Token budget of one network input, in 14×14 patches: it keeps very thin or very large images in bounded memory "
    "and time. -1 (auto): four {side} squares (5476 patches at 518), so every aspect ratio up to 4:1 runs at the "
    "reference size; a longer image runs at the largest size of its aspect ratio within the budget (one warning in the "
    "log) and its depth is resized back to the input size. 0: no cap (the reference rule: a 2×3000 strip would become "
    "518×777000 and could exhaust the host). Larger: more detail along long strips, more memory."
)


_ONE_STEP_MODEL_TOOLTIP = (
    "Depth Anything V1/V2 files in models/depthanything (and its extra_model_paths.yaml entries), then the V1/V2 "
    "catalogue with each model's license: a catalogue entry is downloaded into models/depthanything on first use. "
    "Depth Anything 3 models run in Any-View Geometry. CC-BY-NC-4.0 models are not for commercial use."
)


def default_model_option() -> str:
    return folders.catalogue_label(VARIANTS[DEFAULT_MODEL])


def _model_input(families: tuple[str, ...] = folders.FAMILIES, tooltip: str = _MODEL_TOOLTIP) -> io.Combo.Input:
    # not a Choice: the options come from disk, and a missing file deserves a message saying where it goes
    return io.Combo.Input("model", options=folders.model_options(families), default=default_model_option(),
                          tooltip=tooltip)


def _input_size_input() -> io.Int.Input:
    return io.Int.Input("input_size", default=518, min=14, max=4088, step=INPUT_SIZE_STEP, tooltip=_INPUT_SIZE_TOOLTIP)


def max_tokens_input(side: str = "input_size") -> io.Int.Input:
    """The token-budget widget: an int that is never None (-1 = the library's default, 0 = no cap); optional, last,
    so workflows saved before it load unchanged."""
    return io.Int.Input("max_tokens", default=AUTO_MAX_TOKENS, min=AUTO_MAX_TOKENS, max=MAX_TOKENS_LIMIT, step=1,
                        optional=True, tooltip=_MAX_TOKENS_TOOLTIP.format(side=side))


def library_max_tokens(value: int) -> int | None:
    """The widget's value as the library's ``max_tokens``: -1 -> ``None`` (the default budget), else as it is.

    Example:
        >>> library_max_tokens(-1), library_max_tokens(0), library_max_tokens(8000)
        (None, 0, 8000)
    """
    return None if value == AUTO_MAX_TOKENS else value


def snap_input_size(value: int, node: str) -> int:
    """``input_size`` on the widget's step of 14 (an API prompt may hold any int): rounded as the widget rounds it."""
    return snap_to_step(value, INPUT_SIZE_STEP, INPUT_SIZE_STEP, 4088, name="input_size", node=node)


def _progress_callback(total: int):
    bar = comfy.utils.ProgressBar(total)
    return lambda done, _total: bar.update_absolute(done, _total)


def _control_image(result: DepthResult) -> torch.Tensor:
    control = to_image(normalize_depth(result.stacked(), result.kind, "v2_style"))
    return control.to(mm.intermediate_device())


class LoadDepthModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthLoadModel",
            display_name="Load Depth Model",
            category=f"{CATEGORY}/loaders",
            description="Load a Depth Anything V1/V2 model (any published checkpoint format; for Estimate Depth) or a "
                        "Depth Anything 3 model (config.json + model.safetensors in models/depthanything3; for Any-View "
                        "Geometry) or a Video Depth Anything model (models/videodepthanything; for Estimate Video Depth). "
                        "The model is kept "
                        "between runs and rebuilt when the file or dtype changes; ComfyUI's memory manager places it.",
            inputs=[
                _model_input(),
                Choice("dtype", options=list(DTYPE_CHOICES), default="auto",
                       tooltip="Compute precision. auto follows ComfyUI's choice for the device (bf16/fp16 on "
                               "GPUs that support them, fp32 on the CPU)."),
                Choice("memory", options=list(loader.MEMORY_MODES), default="managed",
                       tooltip="managed: ComfyUI loads the model and evicts it when a diffusion model needs the "
                               "room, like any other model. offload_after_use: also unload it after every run."),
            ],
            outputs=[DepthModel.Output(display_name="depth_model", tooltip="The loaded depth model.")],
        )

    @classmethod
    def validate_inputs(cls, model: str | None = None) -> bool | str:
        return check_with(folders.require_model_option, model)

    @classmethod
    def fingerprint_inputs(cls, model: str, dtype: str, memory: str):
        return loader.fingerprint(model), dtype, memory

    @classmethod
    def execute(cls, model: str, dtype: str, memory: str) -> io.NodeOutput:
        return io.NodeOutput(loader.load(model, dtype, memory))


class EstimateDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthEstimate",
            display_name="Estimate Depth",
            category=CATEGORY,
            description="Estimate depth for an image batch or video frames, in batches on the device. Returns the raw "
                        "depth (relative disparity or metres) and a ready depth-ControlNet image (v2_style), and shows "
                        "the first depth map with a colour map and a value probe.",
            inputs=[
                DepthModel.Input("depth_model", tooltip="A model from Load Depth Model."),
                io.Image.Input("image", tooltip="Images or video frames (an IMAGE batch)."),
                _input_size_input(),
                io.Int.Input("batch_size", default=4, min=1, max=256,
                             tooltip="Images per forward pass; lowered automatically to fit free memory and halved "
                                     "on out-of-memory."),
                io.Int.Input("tile_size", default=0, min=0, max=16384, step=1, optional=True,
                             tooltip="0: off. Otherwise images whose longer side exceeds this many pixels also get "
                                     "native-resolution tiles of this size, blended into a global pass: finer detail on "
                                     "big images, memory bounded by the tile (at least 28; 518 matches training)."),
                Choice("tta", options=list(TTA_MODES), default="none", optional=True,
                       tooltip="Test-time augmentation: flip averages with the mirrored image's prediction "
                               "(twice the compute, slightly cleaner edges)."),
                max_tokens_input(),
            ],
            outputs=[
                Depth.Output(display_name="depth", tooltip="Raw depth at the input size, with its kind and units."),
                io.Image.Output(display_name="control_image",
                                tooltip="Depth as a ControlNet image: near = white, v2_style normalisation."),
            ],
            # An output node, like core's Preview Image: ComfyUI then re-sends its preview when the run is cached.
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, tile_size: int | None = None) -> bool | str:
        return check_with(check_tile_size, tile_size)

    @classmethod
    def execute(cls, depth_model, image: torch.Tensor, input_size: int, batch_size: int, tile_size: int = 0,
                tta: str = "none", max_tokens: int = AUTO_MAX_TOKENS) -> io.NodeOutput:
        estimator = depth_model.require_depth_estimator("Estimate Depth")
        result = estimator.estimate(image, input_size=snap_input_size(input_size, "Estimate Depth"),
                                    batch_size=batch_size, tile_size=tile_size, tta=tta,
                                    max_tokens=library_max_tokens(max_tokens), callback=_progress_callback(image.shape[0]))
        ui = {preview.UI_KEY: [preview.depth_payload(result, folder_paths.get_temp_directory())]}
        return io.NodeOutput(result, _control_image(result), ui=ui)


class DepthToImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthToImage",
            display_name="Depth to Image",
            category=f"{CATEGORY}/image",
            description="Normalise raw depth into a grey image (near = white unless inverted) for depth ControlNets.",
            inputs=[
                Depth.Input("depth", tooltip="Raw depth from Estimate Depth."),
                *normalize_inputs("mode", "scope", "low_percentile", "high_percentile", "near", "far", "invert", "gamma"),
                io.Mask.Input("sky_mask", optional=True,
                              tooltip="Optional sky (1 = sky, e.g. Any-View Geometry's sky_mask): sky pixels are sent to "
                                      "the far end (the 98th percentile of the other depths) before normalising, as the "
                                      "official Depth Anything 3 render does."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Grey depth image in 0..1, RGB.")],
        )

    @classmethod
    def execute(cls, depth: DepthResult, sky_mask: torch.Tensor | None = None, **options) -> io.NodeOutput:
        values = depth.stacked() if sky_mask is None else clip_sky(depth.stacked(), depth.kind, sky_mask)
        x01 = normalize_depth(values, depth.kind, **normalize_kwargs(options))
        return io.NodeOutput(to_image(x01).to(mm.intermediate_device()))


class DepthColormap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthColormap",
            display_name="Depth Colormap",
            category=f"{CATEGORY}/image",
            description="Colour a grey depth image for previews (not for ControlNets).",
            inputs=[
                io.Image.Input("image", tooltip="A grey depth image in 0..1, e.g. from Depth to Image; RGB input is "
                                                "averaged over its channels."),
                *normalize_inputs("colormap", defaults={"colormap": "inferno"}),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The coloured preview.")],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, colormap: str) -> io.NodeOutput:
        return io.NodeOutput(apply_colormap(image.mean(dim=-1), colormap).to(mm.intermediate_device()))


class DepthAnythingOneStep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthAnything",
            display_name="Depth Anything (one step)",
            category=CATEGORY,
            description="Image in, depth ControlNet image out, like a preprocessor node. Uses the same cached model "
                        "and memory management as Load Depth Model + Estimate Depth.",
            inputs=[
                io.Image.Input("image", tooltip="Images or video frames."),
                _model_input(folders.DEPTH_FAMILIES, _ONE_STEP_MODEL_TOOLTIP),
                _input_size_input(),
                *normalize_inputs("mode", "scope", choices={"mode": RELATIVE_MODES}),
                max_tokens_input(),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Depth as a ControlNet image: near = white.")],
        )

    @classmethod
    def validate_inputs(cls, model: str | None = None) -> bool | str:
        return check_with(lambda m: folders.require_model_option(m, folders.DEPTH_FAMILIES, "Depth Anything (one step)"),
                          model)

    @classmethod
    def fingerprint_inputs(cls, image, model: str, input_size: int, mode: str, scope: str,
                           max_tokens: int = AUTO_MAX_TOKENS):
        return loader.fingerprint(model)

    @classmethod
    def execute(cls, image: torch.Tensor, model: str, input_size: int, mode: str, scope: str,
                max_tokens: int = AUTO_MAX_TOKENS) -> io.NodeOutput:
        node = "Depth Anything (one step)"
        estimator = loader.load(model).require_depth_estimator(node)
        result = estimator.estimate(image, input_size=snap_input_size(input_size, node),
                                    max_tokens=library_max_tokens(max_tokens), callback=_progress_callback(image.shape[0]))
        x01 = normalize_depth(result.stacked(), result.kind, mode, scope=scope)
        return io.NodeOutput(to_image(x01).to(mm.intermediate_device()))
