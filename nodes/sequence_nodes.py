"""Sequence Geometry: Depth Anything 3 over a long video or image batch, in overlapping chunks aligned into one world
frame (:func:`anydepth.sequence.estimate_sequence`). The network's memory is set by the chunk size; the outputs hold
every view (at the network's size for the geometry), so thousands of views belong to ``anydepth sequence``, which
streams them to disk.
"""

from __future__ import annotations

import json

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from anydepth.geometry import cameras_to_json
from anydepth.sequence import GeometryCollector, estimate_sequence, tensor_frames, video_frames

from .types import Depth, DepthModel, Geometry

CATEGORY = "anydepth/geometry"


def _frames(video, image: torch.Tensor | None, fps: float):
    """``(count, frames)`` of the VIDEO (decoded lazily from its file when it has one) or of the IMAGE batch."""
    want = fps or None
    if video is not None:
        source = getattr(video, "get_stream_source", None)
        if source is not None:
            return video_frames(source(), fps=want)
        parts = video.get_components()
        return tensor_frames(parts.images, source_fps=float(parts.frame_rate), fps=want)
    if image is not None:
        return tensor_frames(image)
    raise ValueError("Sequence Geometry: connect a video or an image batch")


class SequenceGeometry(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthSequenceGeometry",
            display_name="Sequence Geometry",
            category=CATEGORY,
            description="Depth Anything 3 for a long video or image batch in bounded memory: overlapping chunks of "
                        "views, each aligned to the previous one by a similarity transform (scale included), with "
                        "optional loop closure. Same outputs as Any-View Geometry.",
            inputs=[
                DepthModel.Input("depth_model", tooltip="An any-view Depth Anything 3 model from Load Depth Model."),
                io.Video.Input("video", optional=True, tooltip="A video (decoded chunk by chunk from its file)."),
                io.Image.Input("image", optional=True, tooltip="Or an image batch (frames in order)."),
                io.Int.Input("chunk_size", default=16, min=2, max=512,
                             tooltip="Views per network pass: the network's memory is set by this, not by the length."),
                io.Int.Input("overlap", default=4, min=1, max=511,
                             tooltip="Views shared by consecutive chunks, used to align them (3 or more is stable); "
                                     "smaller than chunk_size."),
                io.Boolean.Input("loop_closure", default=False,
                                 tooltip="The camera returns to its start: spread the drift the loop reveals."),
                io.Float.Input("fps", default=0.0, min=0.0, max=240.0, step=0.5,
                               tooltip="Video: frames per second to keep (0 = every frame)."),
                io.Int.Input("process_res", default=504, min=14, max=4088, step=14,
                             tooltip="Longer side the network sees (504 as the official default)."),
            ],
            outputs=[
                Depth.Output(display_name="depth", tooltip="Depth of every view in the world frame's units."),
                io.String.Output(display_name="camera_poses", tooltip="Cameras as JSON (extrinsics 3×4 world-to-camera, "
                                                                      "intrinsics 3×3 pixels), like Any-View Geometry."),
                Geometry.Output(display_name="geometry", tooltip="For Depth to Mesh and Geometry to Point Cloud."),
            ],
        )

    @classmethod
    def execute(cls, depth_model, chunk_size: int, overlap: int, loop_closure: bool, fps: float, process_res: int,
                video=None, image: torch.Tensor | None = None) -> io.NodeOutput:
        estimator = depth_model.require_anyview_estimator("Sequence Geometry")
        count, frames = _frames(video, image, fps)
        bar = comfy.utils.ProgressBar(count or 1)
        collect = GeometryCollector()
        seq = estimate_sequence(estimator, frames, chunk_size=chunk_size, overlap=overlap, loop_closure=loop_closure,
                                on_view=collect, total=count, process_res=process_res,
                                progress=lambda done, total: bar.update_absolute(done, total or done),
                                check_interrupt=mm.throw_exception_if_processing_interrupted)
        res = collect.result(seq, estimator.model_name)
        poses = json.dumps(cameras_to_json(res.extrinsics, res.intrinsics, sizes=res.input_sizes))
        return io.NodeOutput(res.depth_result(), poses, res)
