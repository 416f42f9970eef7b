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
from anydepth.normalize import COLORMAPS, NORMALIZE_MODES, RELATIVE_MODES, SCOPES, apply_colormap, normalize_depth, to_image
from anydepth.tiling import check_tile_size

from . import folders, loader, preview
from .model_patcher import DTYPE_CHOICES
from .options import normalize_inputs, normalize_kwargs
from .types import Depth, DepthModel
from .validation import check_choices, check_with

CATEGORY = "anydepth"

_MODEL_TOOLTIP = (
    "Files in models/depthanything and models/depthanything3 (and their extra_model_paths.yaml entries), "
    "then the catalogue with each model's license: a catalogue entry is downloaded into models/depthanything "
    "on first use. CC-BY-NC-4.0 models are not for commercial use."
)
_INPUT_SIZE_TOOLTIP = (
    "Shorter side the network sees, a multiple of 14 (518 as in the reference). Larger shows finer detail "
    "and costs memory quadratically; the depth is returned at the input image's size either way."
)


def default_model_option() -> str:
    return folders.catalogue_label(VARIANTS[DEFAULT_MODEL])


def _model_input() -> io.Combo.Input:
    return io.Combo.Input("model", options=folders.model_options(), default=default_model_option(), tooltip=_MODEL_TOOLTIP)


def _input_size_input() -> io.Int.Input:
    return io.Int.Input("input_size", default=518, min=14, max=4088, step=14, tooltip=_INPUT_SIZE_TOOLTIP)


def _check_model(option: str | None) -> str | None:
    """Why a model dropdown value cannot be used, or ``None`` (also for a linked input): no folder walk."""
    return check_with(folders.require_model_option, option)


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
                        "Geometry). The model is kept "
                        "between runs and rebuilt when the file or dtype changes; ComfyUI's memory manager places it.",
            inputs=[
                _model_input(),
                io.Combo.Input("dtype", options=list(DTYPE_CHOICES), default="auto",
                               tooltip="Compute precision. auto follows ComfyUI's choice for the device (bf16/fp16 on "
                                       "GPUs that support them, fp32 on the CPU)."),
                io.Combo.Input("memory", options=list(loader.MEMORY_MODES), default="managed",
                               tooltip="managed: ComfyUI loads the model and evicts it when a diffusion model needs the "
                                       "room, like any other model. offload_after_use: also unload it after every run."),
            ],
            outputs=[DepthModel.Output(display_name="depth_model", tooltip="The loaded depth model.")],
        )

    @classmethod
    def validate_inputs(cls, model: str | None = None, dtype: str | None = None, memory: str | None = None) -> bool | str:
        return _check_model(model) or check_choices(dtype=(dtype, DTYPE_CHOICES), memory=(memory, loader.MEMORY_MODES))

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
                        "depth (relative disparity or metres) and a ready depth-ControlNet image (v2_style).",
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
                io.Combo.Input("tta", options=list(TTA_MODES), default="none", optional=True,
                               tooltip="Test-time augmentation: flip averages with the mirrored image's prediction "
                                       "(twice the compute, slightly cleaner edges)."),
            ],
            outputs=[
                Depth.Output(display_name="depth", tooltip="Raw depth at the input size, with its kind and units."),
                io.Image.Output(display_name="control_image",
                                tooltip="Depth as a ControlNet image: near = white, v2_style normalisation."),
            ],
        )

    @classmethod
    def validate_inputs(cls, tile_size: int | None = None, tta: str | None = None) -> bool | str:
        return check_with(check_tile_size, tile_size) or check_choices(tta=(tta, TTA_MODES))

    @classmethod
    def execute(cls, depth_model, image: torch.Tensor, input_size: int, batch_size: int, tile_size: int = 0,
                tta: str = "none") -> io.NodeOutput:
        estimator = depth_model.require_depth_estimator("Estimate Depth")
        result = estimator.estimate(image, input_size=input_size, batch_size=batch_size, tile_size=tile_size,
                                                tta=tta, callback=_progress_callback(image.shape[0]))
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
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Grey depth image in 0..1, RGB.")],
        )

    @classmethod
    def validate_inputs(cls, mode: str | None = None, scope: str | None = None) -> bool | str:
        return check_choices(mode=(mode, NORMALIZE_MODES), scope=(scope, SCOPES))

    @classmethod
    def execute(cls, depth: DepthResult, **options) -> io.NodeOutput:
        x01 = normalize_depth(depth.stacked(), depth.kind, **normalize_kwargs(options))
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
    def validate_inputs(cls, colormap: str | None = None) -> bool | str:
        return check_choices(colormap=(colormap, COLORMAPS))

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
                _model_input(),
                _input_size_input(),
                *normalize_inputs("mode", "scope", choices={"mode": RELATIVE_MODES}),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Depth as a ControlNet image: near = white.")],
        )

    @classmethod
    def validate_inputs(cls, model: str | None = None, mode: str | None = None, scope: str | None = None) -> bool | str:
        return _check_model(model) or check_choices(mode=(mode, RELATIVE_MODES), scope=(scope, SCOPES))

    @classmethod
    def fingerprint_inputs(cls, image, model: str, input_size: int, mode: str, scope: str):
        return loader.fingerprint(model)

    @classmethod
    def execute(cls, image: torch.Tensor, model: str, input_size: int, mode: str, scope: str) -> io.NodeOutput:
        estimator = loader.load(model).require_depth_estimator("Depth Anything (one step)")
        result = estimator.estimate(image, input_size=input_size, callback=_progress_callback(image.shape[0]))
        x01 = normalize_depth(result.stacked(), result.kind, mode, scope=scope)
        return io.NodeOutput(to_image(x01).to(mm.intermediate_device()))
