"""Save Depth: control images and/or raw depth files in ComfyUI's output folder, written atomically.

The format names are the library's (:mod:`anydepth.export`), one meaning each: ``control_png16`` /
``control_png8`` are normalised pictures (what a ControlNet takes), ``npy`` / ``npz`` / ``exr`` /
``depth_png16`` are the raw values with kind and units (what Load Depth reads back). ``control_...+raw``
writes both under one number; a raw 16-bit PNG is named ``..._raw.png`` so it never takes a picture's name.
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from anydepth.batch import OutputSpec
from anydepth.estimator import DepthResult
from anydepth.export import CONTROL_FORMATS, RAW_FORMATS, SUFFIX, check_format, is_raw_format, save_control_image, save_depth
from anydepth.normalize import normalize_depth

from .options import normalize_inputs, normalize_kwargs
from .types import Depth
from .validation import check_with

FORMATS: tuple[str, ...] = (*CONTROL_FORMATS, *RAW_FORMATS, *(f"{c}+{r}" for c in CONTROL_FORMATS for r in RAW_FORMATS))
"""The format dropdown: a control image, raw depth, or a control image and raw depth under one number."""

_CONTROL_ONLY = "Used by the control_... formats only (raw depth is saved as it is)."


def split_format(value: str) -> tuple[str | None, str | None]:
    """``(control format or None, raw format or None)`` of a dropdown value; a ``ValueError`` for an unknown
    one (naming the new word for a retired ``png16``).

    Example:
        >>> split_format("control_png16+exr"), split_format("npz")
        (('control_png16', 'exr'), (None, 'npz'))
    """
    parts = [check_format(p) for p in value.split("+")]
    control = [p for p in parts if not is_raw_format(p)]
    raw = [p for p in parts if is_raw_format(p)]
    if len(parts) > 2 or len(control) > 1 or len(raw) > 1:
        raise ValueError(f"format {value!r} must be one control image format, one raw format, or control+raw, "
                         f"e.g. control_png16+npy")
    return (control[0] if control else None), (raw[0] if raw else None)


def file_name(stem: str, fmt: str) -> str:
    """The file of ``stem`` in ``fmt``: ``stem.png`` for a control image, ``stemraw.png`` for raw depth as PNG."""
    return f"{stem}{'raw' if fmt == 'depth_png16' else ''}{SUFFIX[fmt]}"


class SaveDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthSave",
            display_name="Save Depth",
            category="anydepth/io",
            description="Save depth to the output folder as a control image (a normalised grey picture, 16-bit: "
                        "65536 levels, or 8-bit) and/or as raw depth (the model's values, disparity or metres, with "
                        "kind, units and model recorded) that Load Depth reads back.",
            inputs=[
                Depth.Input("depth", tooltip="Raw depth from Estimate Depth."),
                io.String.Input("filename_prefix", default="anydepth/depth",
                                tooltip="File name prefix, may hold sub-folders and %date:...% style variables like "
                                        "Save Image."),
                io.Combo.Input("format", options=list(FORMATS), default="control_png16",
                               tooltip="control_png16 / control_png8: the normalised picture (for ControlNets and "
                                       "viewers). npy (+ .json), npz, exr (needs OpenEXR), depth_png16 (16-bit PNG of "
                                       "the raw values, ..._raw.png): raw depth, metres stay metres, for Load Depth. "
                                       "control_...+raw: both, with the same number."),
                *normalize_inputs("mode", "scope", "near", "far", "invert", note=_CONTROL_ONLY),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, format: str | None = None) -> bool | str:
        return check_with(split_format, format)  # names a retired format's new name

    @classmethod
    def execute(cls, depth: DepthResult, filename_prefix: str, format: str, **options) -> io.NodeOutput:
        control, raw_format = split_format(format)
        raw = depth.stacked()  # [B, H, W]
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), raw.shape[-1], raw.shape[-2])
        settings = normalize_kwargs(options)
        pictures = values = None
        if control is not None:
            pictures = normalize_depth(raw, depth.kind, **settings).cpu().numpy()  # [B, H, W] in 0..1
            spec = OutputSpec(control, settings["mode"], settings["near"], settings["far"], settings["invert"])
            control_meta = {**spec.metadata(depth), "scope": settings["scope"]}
        if raw_format is not None:
            values = raw.detach().float().cpu().numpy()
            raw_meta = OutputSpec(raw_format).metadata(depth)  # what `anydepth estimate` records too
        saved: dict[str, list[ui.SavedResult]] = {"images": [], "depth_files": []}
        for b in range(raw.shape[0]):
            stem = f"{filename.replace('%batch_num%', str(b))}_{counter + b:05}_"
            if pictures is not None:
                name = file_name(stem, control)
                save_control_image(os.path.join(folder, name), pictures[b], format=control, metadata=control_meta)
                saved["images"].append(ui.SavedResult(name, subfolder, io.FolderType.output))
            if values is not None:
                name = file_name(stem, raw_format)
                save_depth(os.path.join(folder, name), values[b], kind=depth.kind, format=raw_format, metadata=raw_meta)
                saved["depth_files"].append(ui.SavedResult(name, subfolder, io.FolderType.output))
        return io.NodeOutput(ui=saved)
