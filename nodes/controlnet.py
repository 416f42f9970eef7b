"""Apply Depth ControlNet: fit the depth image to the latent, then apply it with ComfyUI's own logic.

ComfyUI scales a ControlNet hint to the latent with a silent centre crop. This node first fits the
image to the exact pixel size the ControlNet will use (pad, resize or an explicit crop: the user
picks), so nothing is cropped behind their back, then hands over to the core
``ControlNetApplyAdvanced.apply_controlnet`` (strength, start/end percent, chaining with earlier
ControlNets, VAE for latent-space ControlNets) instead of copying it.
"""

from __future__ import annotations

import nodes as comfy_nodes  # ComfyUI's core nodes.py (this pack's own folder is imported as `<pack>.nodes`)
import torch
from comfy_api.latest import io

from anydepth.fit import FIT_MODES, check_fit_mode, fit_to_size
from anydepth.normalize import normalize_depth, to_image

from .types import Depth
from .validation import check_with

CATEGORY = "anydepth/conditioning"


def hint_size(control_net, latent: dict, vae=None) -> tuple[int, int]:
    """Pixel size ComfyUI will scale the hint to for this latent (``ControlNet.get_control``'s rule)."""
    ratio = getattr(control_net, "compression_ratio", 8)
    if vae is not None and getattr(control_net, "latent_format", None) is not None:
        ratio *= vae.spacial_compression_encode()
    h, w = latent["samples"].shape[-2:]
    return int(h) * ratio, int(w) * ratio


class ApplyDepthControlNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthApplyControlNet",
            display_name="Apply Depth ControlNet",
            category=CATEGORY,
            description="Fit a depth image (or raw depth) to the latent's size by padding, resizing or an explicit "
                        "crop, then apply the ControlNet to every positive and negative conditioning entry with "
                        "ComfyUI's own ControlNet logic.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.ControlNet.Input("control_net", tooltip="A depth ControlNet (Load ControlNet Model)."),
                io.Latent.Input("latent", tooltip="The latent being sampled; only its size is used, to fit the hint."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="ControlNet strength; 0 leaves the conditioning unchanged."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Fraction of the sampling steps where the ControlNet starts."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Fraction of the sampling steps where the ControlNet stops."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="pad",
                               tooltip="How the depth image meets the latent's aspect ratio: pad (letterbox with black "
                                       "= far, nothing lost), resize (stretch), crop (centre crop, explicit)."),
                io.Image.Input("image", optional=True,
                               tooltip="A depth control image (near = white), e.g. from Estimate Depth or Depth to "
                                       "Image. Give this or depth."),
                Depth.Input("depth", optional=True,
                            tooltip="Raw depth instead of an image; normalised with v2_style. Give this or image."),
                io.Vae.Input("vae", optional=True, tooltip="VAE, for ControlNets that work in latent space (SD3, Flux)."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Positive conditioning with the ControlNet."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning with the ControlNet."),
            ],
        )

    @classmethod
    def validate_inputs(cls, fit: str | None = None) -> bool | str:
        return check_with(check_fit_mode, fit)  # an old word ("stretch") gets its new name

    @classmethod
    def execute(cls, positive, negative, control_net, latent: dict, strength: float, start_percent: float,
                end_percent: float, fit: str, image: torch.Tensor | None = None, depth=None, vae=None) -> io.NodeOutput:
        if (image is None) == (depth is None):
            raise ValueError("Apply Depth ControlNet needs exactly one of image or depth: connect one of them")
        if depth is not None:
            image = to_image(normalize_depth(depth.stacked(), depth.kind, "v2_style"))
        fitted = fit_to_size(image.movedim(-1, 1), hint_size(control_net, latent, vae), fit).movedim(1, -1)
        positive, negative = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(
            positive, negative, control_net, fitted, strength, start_percent, end_percent, vae=vae)
        return io.NodeOutput(positive, negative)
