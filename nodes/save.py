"""Save Depth: 16-bit PNG control images and raw NPY / EXR depth in ComfyUI's output folder, written atomically."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from anydepth.estimator import DepthResult
from anydepth.export import save_depth
from anydepth.io import save_png16
from anydepth.normalize import NORMALIZE_MODES, SCOPES, normalize_depth, to_uint16

from .types import Depth
from .validation import check_options

FORMATS: tuple[str, ...] = ("png16", "npy", "exr", "png16+npy", "png16+exr")
"""``png16``: the normalised depth image in 16 bits; ``npy`` / ``exr``: the raw float32 values with their metadata."""


class SaveDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthSave",
            display_name="Save Depth",
            category="anydepth/io",
            description="Save depth to the output folder: a 16-bit grey PNG of the normalised depth (65536 levels "
                        "instead of 256) and/or the raw float32 values (disparity or metres) as NPY (with a .json "
                        "sidecar) or EXR, with kind, units and model recorded.",
            inputs=[
                Depth.Input("depth", tooltip="Raw depth from Estimate Depth."),
                io.String.Input("filename_prefix", default="anydepth/depth",
                                tooltip="File name prefix, may hold sub-folders and %date:...% style variables like "
                                        "Save Image."),
                io.Combo.Input("format", options=list(FORMATS), default="png16",
                               tooltip="png16: normalised 16-bit PNG. npy / exr: raw float32 values, metres stay metres "
                                       "(EXR needs the OpenEXR package). png16+...: both, with the same number."),
                io.Combo.Input("mode", options=list(NORMALIZE_MODES), default="v2_style",
                               tooltip="PNG normalisation (see Depth to Image). For metric models metric_linear with "
                                       "fixed near/far keeps a known mapping: d = far - v / 65535 × (far - near)."),
                io.Combo.Input("scope", options=list(SCOPES), default="image",
                               tooltip="PNG statistics per image or over the whole batch."),
                io.Float.Input("near", default=0.0, min=0.0, max=10000.0, step=0.01,
                               tooltip="Metric modes: metres stored as 65535; 0 = the nearest pixel."),
                io.Float.Input("far", default=0.0, min=0.0, max=10000.0, step=0.01,
                               tooltip="Metric modes: metres stored as 0; 0 = the farthest pixel."),
                io.Boolean.Input("invert", default=False, tooltip="PNG: near = black instead of white."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, format: str | None = None, mode: str | None = None, scope: str | None = None) -> bool | str:
        return check_options(cls, format=format, mode=mode, scope=scope)

    @classmethod
    def execute(cls, depth: DepthResult, filename_prefix: str, format: str, mode: str, scope: str, near: float,
                far: float, invert: bool) -> io.NodeOutput:
        raw = depth.stacked()  # [B, H, W]
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), raw.shape[-1], raw.shape[-2])
        parts = format.split("+")
        raw_format = next((p for p in parts if p != "png16"), None)
        levels = None
        if "png16" in parts:
            x01 = normalize_depth(raw, depth.kind, mode, scope=scope, near=near or None, far=far or None, invert=invert)
            levels = to_uint16(x01)  # [B, H, W] uint16
        values = raw.detach().cpu().numpy() if raw_format else None
        metadata = {"model": depth.model_name, **({"max_depth_m": depth.max_depth} if depth.max_depth else {})}
        pngs: list[ui.SavedResult] = []
        raws: list[ui.SavedResult] = []
        for b in range(raw.shape[0]):
            stem = f"{filename.replace('%batch_num%', str(b))}_{counter + b:05}_"
            if levels is not None:
                save_png16(os.path.join(folder, stem + ".png"), levels[b])
                pngs.append(ui.SavedResult(stem + ".png", subfolder, io.FolderType.output))
            if values is not None:
                name = f"{stem}.{raw_format}"
                save_depth(os.path.join(folder, name), values[b], kind=depth.kind, format=raw_format, metadata=metadata)
                raws.append(ui.SavedResult(name, subfolder, io.FolderType.output))
        return io.NodeOutput(ui={"images": pngs, "depth_files": raws})
