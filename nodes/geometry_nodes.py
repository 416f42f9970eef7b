"""Depth Anything 3 nodes: any-view geometry (depth, confidence, cameras) and point-cloud export.

``Any-View Geometry`` runs a DA3 model on an IMAGE batch as one scene; its ``GEOMETRY`` output carries the
whole :class:`~anydepth.anyview.GeometryResult` to ``Geometry to Point Cloud``, which writes PLY / GLB files
into the output folder. Both show a point cloud in the 3D viewer (``js/anydepth_pointcloud.js``, UI key
``anydepth_geometry``): Any-View Geometry a preview PLY in the temp folder, Geometry to Point Cloud the PLY it saved
(its GLB when only GLB is written; beyond :data:`PREVIEW_POINTS` points, a preview PLY of the same cloud). Both are
output nodes, like core's preview nodes, so ComfyUI re-sends the viewer's file when a run is cached.
"""

from __future__ import annotations

import json
import os

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from anydepth.anyview import GeometryResult
from anydepth.geometry import cameras_to_json
from anydepth.models.da3 import POSE_METHODS, REF_VIEW_STRATEGIES
from anydepth.normalize import to_image
from anydepth.scene import confidence_map, field_of_view, parse_cameras, sky_mask, write_point_cloud

from .depth_nodes import AUTO_MAX_TOKENS, library_max_tokens, max_tokens_input
from .types import Depth, DepthModel, Geometry
from .validation import Choice

CATEGORY = "anydepth/geometry"
UI_KEY = "anydepth_geometry"
"""UI output key the 3D viewer extension reads: a list of ``{filename, subfolder, type}`` PLY files."""
FORMATS: tuple[str, ...] = ("ply", "glb", "ply+glb")
PREVIEW_POINTS = 200_000
"""Points in the viewer's PLY (a seeded random subset beyond this)."""


def _saved(path: str, base: str, folder_type: io.FolderType) -> ui.SavedResult:
    rel = os.path.relpath(path, base)
    return ui.SavedResult(os.path.basename(rel), os.path.dirname(rel), folder_type)


def _preview_ply(result: GeometryResult, conf_percentile: float = 40.0, max_points: int = PREVIEW_POINTS) -> ui.SavedResult:
    """Write the viewer's PLY of ``result`` (at most :data:`PREVIEW_POINTS` points) into the temp folder."""
    temp = folder_paths.get_temp_directory()
    folder, filename, counter, _, _ = folder_paths.get_save_image_path("anydepth/geometry", temp)
    saved = write_point_cloud(result, {"ply": os.path.join(folder, f"{filename}_{counter:05}_.ply")},
                              conf_percentile=conf_percentile, max_points=min(max_points, PREVIEW_POINTS))
    return _saved(saved.paths["ply"], temp, io.FolderType.temp)


class AnyViewGeometry(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthAnyViewGeometry",
            display_name="Any-View Geometry",
            category=CATEGORY,
            description="Depth Anything 3 on an image batch as one scene: consistent depth, confidence and cameras "
                        "(world-to-camera poses, intrinsics) for every view. Shows the fused point cloud in 3D.",
            inputs=[
                DepthModel.Input("depth_model", tooltip="A Depth Anything 3 model from Load Depth Model "
                                                        "(a DA3 model.safetensors in models/depthanything3)."),
                io.Image.Input("image", tooltip="The views of one scene (an IMAGE batch, e.g. photos or video frames)."),
                Choice("ref_view_strategy", options=list(REF_VIEW_STRATEGIES), default="saddle_balanced",
                       tooltip="Which view's camera becomes the world frame (3 or more views, no known poses); "
                               "saddle_balanced is the official default."),
                io.Int.Input("process_res", default=504, min=14, max=4088, step=14,
                             tooltip="Longer side the network sees (504 as the official default), a multiple of 14. "
                                     "Memory grows with the views and quadratically with this."),
                io.String.Input("cameras", default="", multiline=True, optional=True,
                                tooltip="Optional known cameras as JSON: a list with one entry per image holding "
                                        "'intrinsics' (3×3, pixels of that image) and optionally 'extrinsics' (3×4 "
                                        "world-to-camera), like the camera_poses output. Empty: estimated."),
                max_tokens_input("process_res"),
                Choice("pose_method", options=list(POSE_METHODS), default="cam_dec", optional=True,
                       tooltip="Where predicted cameras come from: cam_dec, the camera decoder (official default), or "
                               "ray_pose, solved from the ray output (the official use_ray_pose; any-view models). "
                               "Try both if the 3D result looks distorted."),
            ],
            outputs=[
                Depth.Output(display_name="depth", tooltip="Depth at each input's size (kind 'depth' or metres): "
                                                           "works with Depth to Image, Save Depth and Apply Depth ControlNet."),
                io.Image.Output(display_name="confidence", tooltip="Confidence per pixel as a grey image (white = confident)."),
                io.String.Output(display_name="camera_poses", tooltip="Cameras as JSON: per view 'extrinsics' (3×4 "
                                                                      "world-to-camera) and 'intrinsics' (3×3 pixels)."),
                Geometry.Output(display_name="geometry", tooltip="Everything above plus colours, for Geometry to Point Cloud."),
                io.Mask.Output(display_name="sky_mask", tooltip="Sky = 1 (sky score >= 0.5, mono / metric / nested "
                                                                "models; all 0 for any-view models), e.g. for Depth to "
                                                                "Image's sky_mask."),
                io.Mask.Output(display_name="confidence_mask", tooltip="Confidence per pixel in 0..1 (min-max over all "
                                                                       "views; all 0 without confidence)."),
                io.Float.Output(display_name="fov_degrees", tooltip="Horizontal field of view in degrees (mean over the "
                                                                     "views; 0 without intrinsics)."),
                io.Float.Output(display_name="focal_length", tooltip="Focal length fx in pixels of the input images "
                                                                     "(mean over the views; 0 without intrinsics)."),
            ],
            is_output_node=True,  # like core's preview nodes: the viewer's file is re-sent when the run is cached
        )

    @classmethod
    def validate_inputs(cls, process_res: int | None = None) -> bool | str:
        if process_res is not None and process_res % 14:
            return f"process_res must be a multiple of 14 (the network's patch size), got {process_res}; e.g. 504"
        return True

    @classmethod
    def execute(cls, depth_model, image: torch.Tensor, ref_view_strategy: str, process_res: int,
                cameras: str = "", max_tokens: int = AUTO_MAX_TOKENS, pose_method: str = "cam_dec") -> io.NodeOutput:
        estimator = depth_model.require_anyview_estimator("Any-View Geometry")
        extrinsics = intrinsics = None
        if cameras and cameras.strip():  # empty: estimate the cameras
            extrinsics, intrinsics = parse_cameras(cameras, image.shape[0], source="cameras input")
        bar = comfy.utils.ProgressBar(image.shape[0])
        res = estimator.estimate(image, extrinsics=extrinsics, intrinsics=intrinsics, ref_view_strategy=ref_view_strategy,
                                 process_res=process_res, max_tokens=library_max_tokens(max_tokens), pose_method=pose_method,
                                 callback=lambda done, total: bar.update_absolute(done, total))
        poses = json.dumps(cameras_to_json(res.extrinsics, res.intrinsics, sizes=res.input_sizes)) if res.has_cameras else "[]"
        ui_out = {UI_KEY: [_preview_ply(res)]} if res.has_cameras else None
        conf01 = confidence_map(res).to(mm.intermediate_device())
        fov, focal = field_of_view(res)
        return io.NodeOutput(res.depth_result(), to_image(conf01), poses, res,
                             sky_mask(res).to(mm.intermediate_device()), conf01, fov, focal, ui=ui_out)


class GeometryToPointCloud(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthGeometryToPointCloud",
            display_name="Geometry to Point Cloud",
            category=CATEGORY,
            description="Fuse every view's depth into one coloured, confidence-filtered point cloud in the world frame "
                        "and save it with the camera frusta as PLY and/or GLB in the output folder.",
            inputs=[
                Geometry.Input("geometry", tooltip="From Any-View Geometry."),
                Choice("format", options=list(FORMATS), default="ply",
                       tooltip="ply: binary PLY (points, then 5 vertices and 8 edges per camera). glb: glTF "
                               "binary (points + camera lines), turned so that the first camera looks along -z."),
                io.Float.Input("conf_percentile", default=40.0, min=0.0, max=99.0, step=1.0,
                               tooltip="Drop the least confident pixels: this percentage of them (official default 40)."),
                io.Int.Input("max_points", default=1_000_000, min=1, max=100_000_000,
                             tooltip="At most this many points (a seeded random subset beyond it)."),
                io.String.Input("filename_prefix", default="anydepth/point_cloud",
                                tooltip="File name prefix, may hold sub-folders and %date:...% variables like Save Image."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, geometry: GeometryResult, format: str, conf_percentile: float, max_points: int,
                filename_prefix: str) -> io.NodeOutput:
        if not geometry.has_cameras:
            raise ValueError("Geometry to Point Cloud: this geometry has no cameras (a mono / metric DA3 model without "
                             "known cameras); use an any-view DA3 model or give cameras to Any-View Geometry")
        out = folder_paths.get_output_directory()
        folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, out)
        stem = os.path.join(folder, f"{filename}_{counter:05}_")
        saved = write_point_cloud(geometry, {f: f"{stem}.{f}" for f in format.split("+")},
                                  conf_percentile=conf_percentile, max_points=max_points)
        files = [_saved(path, out, io.FolderType.output) for path in saved.paths.values()]
        # the viewer shows the saved file itself (the PLY, else the GLB) when it is small enough, else a preview subset
        fmt = "ply" if "ply" in saved.paths else "glb"
        shown = (files[list(saved.paths).index(fmt)] if saved.points <= PREVIEW_POINTS
                 else _preview_ply(geometry, conf_percentile, max_points))
        return io.NodeOutput(ui={"point_clouds": files, "points": [saved.points], "cameras": [saved.cameras],
                                 UI_KEY: [shown]})
