"""Depth tool nodes: scale/shift alignment, temporally stable video depth, and loading raw depth files.

Each ``execute`` converts ComfyUI's layouts at the boundary (MASK -> bool, IMAGE frames as they are) and
calls the library: :mod:`anydepth.align`, :mod:`anydepth.video`, :mod:`anydepth.export`. Saving depth is
:class:`nodes.save.SaveDepth`; tiling and flip TTA are options of Estimate Depth and Estimate Video Depth.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from dataclasses import replace

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io
from PIL import Image

from anydepth.align import SPACES, align_scale_shift, aligned_kind
from anydepth.estimator import TTA_MODES, DepthResult
from anydepth.export import RAW_FORMATS, SUFFIX, export_format, load_depth
from anydepth.kinds import ALL_KINDS, METRIC_DEPTH
from anydepth.normalize import to_image
from anydepth.tiling import check_tile_size
from anydepth.sequence import tensor_frames
from anydepth.video import STABILIZE_MODES, estimate_video, flicker, normalize_clip, stabilize_depth, static_mask
from anydepth.video_io import read_video

from .depth_nodes import AUTO_MAX_TOKENS, library_max_tokens, max_tokens_input, snap_input_size
from .types import Depth, DepthModel
from .validation import Choice, check_with

CATEGORY = "anydepth"

ROBUST_OPTIONS: tuple[str, ...] = ("none", "trimmed", "irls")
"""The robust dropdown: ``none`` is plain least squares (the library's ``robust=None``)."""

DEPTH_FILE_SUFFIXES: tuple[str, ...] = tuple(sorted({SUFFIX[f] for f in RAW_FORMATS}))
"""Files Load Depth lists from the input folder (PNGs only when they hold raw depth, not a control image)."""

AUTO_KIND = "from file"
"""Load Depth's ``kind`` option that takes the kind recorded in the file."""
KIND_OPTIONS: tuple[str, ...] = (AUTO_KIND, *ALL_KINDS)

_ROBUST_TOOLTIP = ("Outlier handling of the scale/shift fit. none: plain least squares. trimmed: refit on the 80 % "
                   "best-fitting pixels. irls: Tukey-biweight reweighting (moving objects, bad reference pixels get "
                   "weight 0).")
_MOMENTUM_TOOLTIP = "running mode: weight of the newest aligned frame in the running reference (lower = steadier)."


def _robust(option: str) -> str | None:
    return None if option == "none" else option


def _json(values: dict) -> str:
    """JSON text of a report; NaN / inf (undefined measures) become null."""
    def clean(v):
        if isinstance(v, list):
            return [clean(x) for x in v]
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps({k: clean(v) for k, v in values.items()})


def _as_bool_mask(mask: torch.Tensor | None, name: str = "mask") -> torch.Tensor | None:
    """ComfyUI MASK (``[B, H, W]`` or ``[H, W]``, 0..1) -> bool, True where the value is above 0.5."""
    if mask is None:
        return None
    if mask.ndim not in (2, 3):
        raise ValueError(f"{name} must be a ComfyUI MASK of shape [B, H, W] or [H, W], got {tuple(mask.shape)}")
    return (mask if mask.ndim == 3 else mask[None]) > 0.5


class AlignDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthAlign",
            display_name="Align Depth (scale and shift)",
            category=f"{CATEGORY}/tools",
            description="Fit a per-image scale and shift that maps depth onto a reference depth (closed-form least "
                        "squares, optionally robust) and apply it: relative depth in the reference's units, e.g. "
                        "metres from a metric model or a sensor.",
            inputs=[
                Depth.Input("depth", tooltip="The depth to align (e.g. relative disparity from Estimate Depth)."),
                Depth.Input("reference", tooltip="The reference with the wanted units, at the same size: one map for "
                                                 "the whole batch or one per image."),
                Choice("space", options=list(SPACES), default="direct",
                               tooltip="direct: fit scale·depth + shift ≈ reference (both disparity, or both depth). "
                                       "disparity: depth is a disparity (relative Depth Anything), the reference a "
                                       "depth; the fit is done in 1/depth and the result is depth in the reference's "
                                       "units."),
                Choice("robust", options=list(ROBUST_OPTIONS), default="none", tooltip=_ROBUST_TOOLTIP),
                io.Mask.Input("mask", optional=True,
                              tooltip="Pixels used for the fit (white); every pixel is aligned. One mask or one per "
                                      "image."),
                io.Float.Input("max_depth", default=0.0, min=0.0, max=100000.0, step=0.1, optional=True,
                               tooltip="disparity space: cap on the aligned depth in the reference's units (e.g. 10 "
                                       "indoors, 80 outdoors); 0 = no cap."),
            ],
            outputs=[
                Depth.Output(display_name="depth", tooltip="The aligned depth, with the reference's kind and units."),
                io.String.Output(display_name="scale_shift",
                                 tooltip='JSON {"scale": [...], "shift": [...]}, one entry per image, in the fitting '
                                         "space (aligned = scale·depth + shift; disparity space: 1/aligned)."),
            ],
        )

    @classmethod
    def execute(cls, depth: DepthResult, reference: DepthResult, space: str, robust: str,
                mask: torch.Tensor | None = None, max_depth: float = 0.0) -> io.NodeOutput:
        kind = aligned_kind(depth.kind, reference.kind, space)
        ref = reference.stacked().to(depth.stacked().device)
        out = align_scale_shift(depth.stacked(), ref, _as_bool_mask(mask), space=space, robust=_robust(robust),
                                max_depth=max_depth or None)
        aligned = DepthResult(out.aligned.float().to(mm.intermediate_device()), kind,
                              list(depth.processed_size), depth.model_name, reference.max_depth)
        report = _json({"scale": out.scale.tolist(), "shift": out.shift.tolist(), "space": space})
        return io.NodeOutput(aligned, report)


def clip_frames(video, image: torch.Tensor | None, target_fps: float, max_frames: int, node: str):
    """``(count or None, frames)`` of a ComfyUI VIDEO (decoded lazily from its file when it has one) or an IMAGE batch,
    every frame or about ``target_fps`` per second, at most ``max_frames`` (0: no limit)."""
    fps, limit = target_fps or None, max_frames or None
    if video is not None:
        source = getattr(video, "get_stream_source", None)
        if source is not None:
            src = read_video(source(), target_fps=fps, max_frames=limit)
            return src.count, src.frames
        parts = video.get_components()
        return tensor_frames(parts.images, source_fps=float(parts.frame_rate), fps=fps, limit=limit)
    if image is None:
        raise ValueError(f"{node}: connect a video or an image batch")
    if image.shape[0] == 0:
        raise ValueError(f"{node}: the image batch has no frames")
    return tensor_frames(image, limit=limit)


class EstimateVideoDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthVideoDepth",
            display_name="Estimate Video Depth",
            category=CATEGORY,
            description="Temporally stable depth for a video or video frames. With a Video Depth Anything model: its "
                        "temporal network over 32-frame windows (or streaming), as the official code. With an image "
                        "model: estimated in chunks (bounded memory), each frame aligned to a running or per-window "
                        "reference so the depth does not flicker. Uses the model's memory management like Estimate "
                        "Depth.",
            inputs=[
                DepthModel.Input("depth_model", tooltip="A model from Load Depth Model: Video Depth Anything (vda-*) "
                                                        "or an image model (v1-/v2-)."),
                io.Image.Input("image", optional=True, tooltip="The video frames, in order (an IMAGE batch); or connect "
                                                               "a video."),
                io.Video.Input("video", optional=True, tooltip="A video (e.g. from Load Video), decoded frame by frame; "
                                                               "see target_fps and max_frames."),
                io.Int.Input("input_size", default=518, min=14, max=4088, step=14,
                             tooltip="Shorter side the network sees, a multiple of 14 (518 as in the reference; other "
                                     "values are rounded to the nearest multiple)."),
                io.Int.Input("batch_size", default=4, min=1, max=256,
                             tooltip="Frames per forward pass; lowered automatically to fit free memory."),
                io.Int.Input("chunk_size", default=16, min=1, max=4096,
                             tooltip="Frames estimated and stabilised together (clip mode: including the overlap); "
                                     "bounds the memory of long clips."),
                io.Int.Input("overlap", default=4, min=0, max=4095,
                             tooltip="clip mode: frames shared by consecutive chunks, tying their scales together; "
                                     "less than chunk_size."),
                Choice("mode", options=list(STABILIZE_MODES), default="running",
                       tooltip="running: align each frame to an exponential moving average that starts at the "
                               "first frame (keeps its units, e.g. metres). clip: align each window to its "
                               "temporal median."),
                Choice("robust", options=list(ROBUST_OPTIONS), default="irls", tooltip=_ROBUST_TOOLTIP),
                io.Float.Input("momentum", default=0.2, min=0.01, max=1.0, step=0.01, tooltip=_MOMENTUM_TOOLTIP),
                io.Float.Input("static_threshold", default=0.0, min=0.0, max=1.0, step=0.005,
                               tooltip="0: fit on every pixel. Otherwise fit only on pixels whose colour varies less "
                                       "than this (standard deviation, 0..1) within a chunk, e.g. 0.02: moving "
                                       "objects do not pull the scale."),
                io.Int.Input("tile_size", default=0, min=0, max=16384, step=1, optional=True,
                             tooltip="0: off. Otherwise frames larger than this many pixels also get native-resolution "
                                     "tiles of this size (see Estimate Depth)."),
                Choice("tta", options=list(TTA_MODES), default="none", optional=True,
                       tooltip="flip: average with the mirrored frame's prediction (twice the compute)."),
                io.Float.Input("target_fps", default=0.0, min=0.0, max=240.0, step=0.5, optional=True,
                               tooltip="video: frames per second to keep, by their timestamps (0 = every frame)."),
                io.Int.Input("max_frames", default=0, min=0, max=1_000_000, optional=True,
                             tooltip="At most this many frames (0 = all)."),
                io.Boolean.Input("streaming", default=False, optional=True,
                                 tooltip="Video Depth Anything only: the online mode, one frame at a time against "
                                         "cached states (constant memory, a little less consistent)."),
                max_tokens_input(),
            ],
            outputs=[
                Depth.Output(display_name="depth", tooltip="Stabilised raw depth of every frame, with its kind."),
                io.Image.Output(display_name="control_image",
                                tooltip="Depth as a ControlNet video: near = white, one percentile mapping for the "
                                        "whole clip (no brightness pumping)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, tile_size: int | None = None) -> bool | str:
        # one input only (see nodes.validation); overlap < chunk_size is checked by the library before any work
        return check_with(check_tile_size, tile_size)

    @classmethod
    def execute(cls, depth_model, image: torch.Tensor | None = None, input_size: int = 518, batch_size: int = 4,
                chunk_size: int = 16, overlap: int = 4, mode: str = "running", robust: str = "irls", momentum: float = 0.2,
                static_threshold: float = 0.0, tile_size: int = 0, tta: str = "none", target_fps: float = 0.0,
                max_frames: int = 0, streaming: bool = False, max_tokens: int = AUTO_MAX_TOKENS,
                video=None) -> io.NodeOutput:
        node = "Estimate Video Depth"
        input_size = snap_input_size(input_size, node)
        count, frames = clip_frames(video, image, target_fps, max_frames, node)
        if depth_model.is_video:
            if tile_size or tta != "none":
                raise ValueError(f"{node}: tile_size and tta are for image models; Video Depth Anything runs whole "
                                 "frames. Set tile_size 0 and tta none")
            estimator = copy.copy(depth_model.estimator)  # the cached model, with this run's frames per pass
            estimator.batch_size = batch_size
            estimator.max_tokens = library_max_tokens(max_tokens)
            bar = comfy.utils.ProgressBar(count or 1)
            result = estimator.estimate(frames, streaming=streaming, input_size=input_size,
                                        callback=lambda done, total: bar.update_absolute(done, total or count or done))
            control = to_image(normalize_clip(result.depth, result.kind)).to(mm.intermediate_device())
            return io.NodeOutput(replace(result, depth=result.depth.to(mm.intermediate_device())), control)
        if streaming:
            raise ValueError(f"{node}: streaming needs a Video Depth Anything model (vda-*); "
                             f"{depth_model.path.name} is an image model, stabilised by mode running / clip instead")
        estimator = depth_model.require_depth_estimator(node)
        if video is not None or (max_frames and image.shape[0] > max_frames):  # the image estimator takes a batch
            image = list(frames)
            if not image:
                raise ValueError(f"{node}: the video has no frames")
            image = torch.stack(image)
        bar = comfy.utils.ProgressBar(image.shape[0])
        video = estimate_video(estimator, image, chunk_size=chunk_size, overlap=overlap, mode=mode, momentum=momentum,
                               robust=_robust(robust), static_threshold=static_threshold or None,
                               callback=bar.update_absolute, input_size=input_size, batch_size=batch_size,
                               tile_size=tile_size, tta=tta, max_tokens=library_max_tokens(max_tokens))
        result = video.depth_result()
        result = replace(result, depth=result.depth.to(mm.intermediate_device()))
        control = to_image(normalize_clip(video.depth, video.kind)).to(mm.intermediate_device())
        return io.NodeOutput(result, control)


class StabilizeDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthStabilize",
            display_name="Stabilize Depth (video)",
            category=f"{CATEGORY}/tools",
            description="Remove frame-to-frame scale/shift flicker from depth you already have (a batch of video "
                        "frames in order) by aligning every frame to a reference; reports the flicker before and "
                        "after.",
            inputs=[
                Depth.Input("depth", tooltip="Raw depth of the frames, in order (e.g. Estimate Depth on a video)."),
                Choice("mode", options=list(STABILIZE_MODES), default="running",
                       tooltip="running: exponential moving average reference starting at the first frame "
                               "(keeps its units). clip: the temporal median of the whole batch."),
                Choice("robust", options=list(ROBUST_OPTIONS), default="irls", tooltip=_ROBUST_TOOLTIP),
                io.Float.Input("momentum", default=0.2, min=0.01, max=1.0, step=0.01, tooltip=_MOMENTUM_TOOLTIP),
                io.Image.Input("frames", optional=True,
                               tooltip="The colour frames the depth came from: pixels whose colour stays put are used "
                                       "for the fit and the flicker measure (moving objects are left out)."),
                io.Float.Input("static_threshold", default=0.02, min=0.001, max=1.0, step=0.001, optional=True,
                               tooltip="With frames: largest colour standard deviation (0..1) of a static pixel."),
            ],
            outputs=[
                Depth.Output(display_name="depth", tooltip="The stabilised depth, same kind and size."),
                io.String.Output(display_name="report",
                                 tooltip='JSON {"flicker_before", "flicker_after", "static_fraction", "scale", '
                                         '"shift"}: flicker is the mean absolute frame-to-frame change on static '
                                         "pixels relative to the clip's spread (null for a single frame)."),
            ],
        )

    @classmethod
    def execute(cls, depth: DepthResult, mode: str, robust: str, momentum: float, frames: torch.Tensor | None = None,
                static_threshold: float = 0.02) -> io.NodeOutput:
        raw = depth.stacked()  # [T, H, W]
        static = None
        if frames is not None:
            if frames.shape[0] != raw.shape[0] or tuple(frames.shape[1:3]) != tuple(raw.shape[-2:]):
                raise ValueError(f"frames {tuple(frames.shape[:3])} must match the depth's frames and size "
                                 f"{tuple(raw.shape)} ([T, H, W]); pass the images the depth was estimated from")
            static = static_mask(frames, static_threshold, min_fraction=0.05).to(raw.device)
        st = stabilize_depth(raw, mode=mode, mask=static, momentum=momentum, robust=_robust(robust))
        report = _json({
            "flicker_before": float(flicker(raw, static)),
            "flicker_after": float(flicker(st.depth, static)),
            "static_fraction": 1.0 if static is None else float(static.float().mean()),
            "scale": st.scale.tolist(),
            "shift": st.shift.tolist(),
        })
        out = DepthResult(st.depth.float().to(mm.intermediate_device()), depth.kind, list(depth.processed_size),
                          depth.model_name, depth.max_depth)
        return io.NodeOutput(out, report)


@functools.lru_cache(maxsize=4096)
def _png_holds_depth(path: str, mtime_ns: int, size: int) -> bool:
    """Whether a PNG is 16-bit grey and not marked as a control image (its header only; cached per file
    version, so listing the input folder opens each PNG once)."""
    try:
        with Image.open(path) as im:  # parses the chunks before the pixels, text included
            if not im.mode.startswith("I"):
                return False
            meta = json.loads(im.info.get("anydepth") or "{}")
    except (OSError, ValueError):
        return False
    return not (isinstance(meta, dict) and meta.get("content") == "control_image")


def depth_files() -> list[str]:
    """Raw depth files in ComfyUI's input folder and its sub-folders, as ``/``-separated relative paths.

    ``.npy``, ``.npz`` and ``.exr`` by name; a ``.png`` when it is 16-bit grey and not a control image.
    """
    root = folder_paths.get_input_directory()
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            suffix = os.path.splitext(name)[1].lower()
            if suffix not in DEPTH_FILE_SUFFIXES or name.startswith("."):
                continue
            full = os.path.join(folder, name)
            if suffix == ".png":
                st = os.stat(full)
                if not _png_holds_depth(full, st.st_mtime_ns, st.st_size):
                    continue
            found.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return sorted(found)


def check_depth_file(name: str) -> str:
    """``name`` if it is a depth file in the input folder (by its suffix and one stat: no listing, no reading),
    else a ``ValueError`` saying why."""
    full = _input_path(name)
    if os.path.splitext(name)[1].lower() not in DEPTH_FILE_SUFFIXES:
        raise ValueError(f"file {name!r} is not a depth file ({', '.join(DEPTH_FILE_SUFFIXES)}); pick one from the "
                         "dropdown")
    if not os.path.isfile(full):
        raise ValueError(f"file {name!r} is not available in the input folder {folder_paths.get_input_directory()}; "
                         "copy it there (e.g. from the output folder) and refresh")
    return name


def _input_path(name: str) -> str:
    """The full path of an input-folder entry; refuses names that leave the input folder."""
    root = os.path.abspath(folder_paths.get_input_directory())
    full = os.path.abspath(os.path.join(root, name))
    if os.path.commonpath([root, full]) != root:
        raise ValueError(f"depth file {name!r} is not inside the input folder {root}")
    return full


class LoadDepth(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthLoadDepth",
            display_name="Load Depth",
            category=f"{CATEGORY}/io",
            description="Load raw depth saved by Save Depth or `anydepth estimate` (or another tool) from the input "
                        "folder: npy (+ .json), npz, exr (needs OpenEXR) or depth_png16, with the kind and units "
                        "recorded in the file. Control images (normalised pictures) are refused: they hold no depth "
                        "values.",
            inputs=[
                io.Combo.Input("file", options=depth_files(),
                               tooltip="Raw depth files in ComfyUI's input folder and its sub-folders (.npy, .npz, "
                                       ".exr, 16-bit raw-depth .png). Copy files from the output folder there to load "
                                       "them."),
                Choice("kind", options=list(KIND_OPTIONS), default=AUTO_KIND,
                       tooltip="What the values mean. from file: as recorded by Save Depth (files from other "
                               "tools need a choice: disparity = larger is nearer, metric_depth = metres)."),
            ],
            outputs=[Depth.Output(display_name="depth", tooltip="The raw depth as saved, one map, with its kind.")],
        )

    @classmethod
    def validate_inputs(cls, file: str | None = None) -> bool | str:
        return check_with(check_depth_file, file)

    @classmethod
    def fingerprint_inputs(cls, file: str, kind: str):
        full = _input_path(file)
        paths = [full] + ([os.path.splitext(full)[0] + ".json"] if export_format(full) == "npy" else [])
        return kind, tuple((p, st.st_size, st.st_mtime_ns) for p in paths if os.path.isfile(p) for st in [os.stat(p)])

    @classmethod
    def execute(cls, file: str, kind: str) -> io.NodeOutput:
        loaded = load_depth(_input_path(file))
        chosen = loaded.kind if kind == AUTO_KIND else kind
        if chosen is None:
            raise ValueError(f"{file} records no depth kind (not written by Save Depth); pick the kind input: "
                             "disparity (larger = nearer), metric_depth (metres) or depth (relative, larger = farther)")
        max_depth = loaded.metadata.get("max_depth_m") if chosen == METRIC_DEPTH else None
        depth = torch.from_numpy(loaded.depth)[None].to(mm.intermediate_device())  # [1, H, W]
        model = str(loaded.metadata.get("model", os.path.basename(file)))
        return io.NodeOutput(DepthResult(depth, chosen, [tuple(depth.shape[-2:])], model, max_depth))

