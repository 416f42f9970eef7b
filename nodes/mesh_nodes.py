"""Mesh nodes: depth of any model (and/or Depth Anything 3 geometry) -> ComfyUI's ``MESH``; GLB / OBJ / PLY files.

``Depth to Mesh`` gives core's ``MESH`` type, so core's SaveGLB and any MESH node take it; its vertices are in
glTF's frame (y up, the first camera looking along -z), as SaveGLB writes them. The mesh also carries the library's
:class:`~anydepth.mesh.SceneMesh` (world frame, vertex colours, cameras) for ``Save Mesh``, which writes coloured
GLB / OBJ / PLY files and returns the file's path for core's Preview 3D (``model_file``); the pack's 3D viewer on
the node shows the GLB / PLY it saved (``js/anydepth_pointcloud.js``).
"""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import Types, io, ui

from anydepth.mesh import DEFAULT_FOV_DEGREES, MESH_FORMATS, MeshOptions, SceneMesh, TriangleMesh, scene_mesh, write_mesh

from .geometry_nodes import UI_KEY
from .types import Depth, Geometry
from .validation import Choice

CATEGORY = "anydepth/geometry"
VIEWER_FORMATS: tuple[str, ...] = ("glb", "ply")
"""Formats the pack's 3D viewer reads (not OBJ): Save Mesh sends it the file it saved under ``UI_KEY``."""
SCENE_ATTR = "anydepth_scene"
"""Attribute of a ``MESH`` made by Depth to Mesh that holds its :class:`~anydepth.mesh.SceneMesh`."""


def to_comfy_mesh(scene: SceneMesh):
    """Core's ``MESH`` (a batch of one: vertices ``[1, V, 3]`` in glTF's frame, faces ``[1, F, 3]``) carrying ``scene``."""
    gl = scene.mesh.transformed(scene.gltf)
    mesh = Types.MESH(gl.vertices[None], gl.faces[None])
    setattr(mesh, SCENE_ATTR, scene)
    return mesh


class DepthToMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthDepthToMesh",
            display_name="Depth to Mesh",
            category=CATEGORY,
            description="Turn depth into a triangle mesh: each view's pixel grid becomes triangles, cut where the depth "
                        "jumps (object silhouettes), without sky or low-confidence pixels, coloured from the image. With "
                        "Any-View Geometry the views are fused in one world frame; depth of any other model is placed "
                        "with a field of view or focal length. Gives ComfyUI's MESH (Save GLB, Save Mesh).",
            inputs=[
                Depth.Input("depth", optional=True,
                            tooltip="Depth of any model (Estimate Depth, Any-View Geometry). Optional when geometry is "
                                    "connected (its own depth is used, at the network's size)."),
                Geometry.Input("geometry", optional=True,
                               tooltip="From Any-View Geometry: cameras (world frame), confidence, sky and colours."),
                io.Image.Input("image", optional=True,
                               tooltip="Vertex colours (the images the depth came from); default the geometry's views."),
                io.Int.Input("view", default=-1, min=-1, max=4096,
                             tooltip="-1: every view, fused in the world frame. 0, 1, ...: only that view."),
                io.Float.Input("fov_degrees", default=DEFAULT_FOV_DEGREES, min=1.0, max=179.0, step=0.1,
                               tooltip="Depth without cameras: horizontal field of view of the photo, in degrees "
                                       "(ignored when focal_length is set or the geometry has cameras)."),
                io.Float.Input("focal_length", default=0.0, min=0.0, max=100000.0, step=0.1,
                               tooltip="Depth without cameras: focal length in pixels of the depth map; 0 = use "
                                       "fov_degrees."),
                io.Int.Input("stride", default=1, min=1, max=64,
                             tooltip="Decimation: keep every n-th pixel per axis (2 = about a quarter of the faces)."),
                io.Float.Input("discontinuity", default=MeshOptions.discontinuity, min=0.0, max=10.0, step=0.01,
                               tooltip="Drop triangles whose depth span (max - min) / min exceeds this: no faces across "
                                       "object silhouettes. 0 = keep every face."),
                io.Float.Input("conf_percentile", default=MeshOptions.conf_percentile, min=0.0, max=99.0, step=1.0,
                               tooltip="Drop this percentage of the least confident pixels (any-view geometry)."),
                io.Float.Input("near", default=1.0, min=0.001, max=10000.0, step=0.01,
                               tooltip="Relative disparity (V1/V2) only: the distance its largest value stands for."),
                io.Float.Input("far", default=10.0, min=0.002, max=100000.0, step=0.01,
                               tooltip="Relative disparity (V1/V2) only: the distance its smallest value stands for "
                                       "(disparity is mapped linearly in 1/depth between them)."),
            ],
            outputs=[io.Mesh.Output(display_name="mesh", tooltip="ComfyUI's MESH (y up), with colours and cameras "
                                                                 "for Save Mesh.")],
        )

    @classmethod
    def execute(cls, view: int, fov_degrees: float, focal_length: float, stride: int, discontinuity: float,
                conf_percentile: float, near: float, far: float, depth=None, geometry=None, image=None) -> io.NodeOutput:
        options = MeshOptions(stride=stride, discontinuity=discontinuity, conf_percentile=conf_percentile)
        scene = scene_mesh(depth, geometry, images=image, view=view, fov_degrees=fov_degrees,
                           focal_px=focal_length or None, near=near, far=far, options=options)
        return io.NodeOutput(to_comfy_mesh(scene))


def _scene_of(mesh) -> list[SceneMesh | TriangleMesh]:
    """The library meshes of a ``MESH``: ours carry their scene; another node's batch becomes plain meshes (already in
    glTF's frame, no colours)."""
    scene = getattr(mesh, SCENE_ATTR, None)
    if scene is not None:
        return [scene]
    return [TriangleMesh(mesh.vertices[i].float().cpu(), mesh.faces[i].long().cpu()) for i in range(mesh.vertices.shape[0])]


class SaveMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyDepthSaveMesh",
            display_name="Save Mesh",
            category=CATEGORY,
            description="Save a MESH as GLB (y up, vertex colours, camera frusta), OBJ or PLY (world frame of the "
                        "cameras, vertex colours) in the output folder. The path output feeds Preview 3D's model_file.",
            inputs=[
                io.Mesh.Input("mesh", tooltip="From Depth to Mesh (or any node that gives a MESH)."),
                Choice("format", options=list(MESH_FORMATS), default="glb",
                       tooltip="glb: glTF binary for viewers (Preview 3D). obj / ply: for Blender, MeshLab, trainers, in "
                               "the cameras' world frame (OpenCV axes, y down)."),
                io.String.Input("filename_prefix", default="anydepth/mesh",
                                tooltip="File name prefix, may hold sub-folders and %date:...% variables like Save Image."),
            ],
            outputs=[io.String.Output(display_name="model_file", tooltip="The first file's path in the output folder, "
                                                                         "for Preview 3D's model_file.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, mesh, format: str, filename_prefix: str) -> io.NodeOutput:
        out = folder_paths.get_output_directory()
        folder, filename, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, out)
        saved = []
        for part in _scene_of(mesh):
            path = os.path.join(folder, f"{filename}_{counter:05}_.{format}")
            if isinstance(part, SceneMesh):
                part.write(path, format)
            else:
                write_mesh(path, part, format=format)
            rel = os.path.relpath(path, out)
            saved.append(ui.SavedResult(os.path.basename(rel), os.path.dirname(rel), io.FolderType.output))
            counter += 1
        first = os.path.relpath(os.path.join(out, saved[0].subfolder, saved[0].filename), out).replace(os.sep, "/")
        ui_out: dict = {"3d": saved}
        if format in VIEWER_FORMATS:  # the pack's 3D viewer on this node shows the first file (js/anydepth_pointcloud.js)
            ui_out[UI_KEY] = saved[:1]
        return io.NodeOutput(first, ui=ui_out)


NODES: list[type[io.ComfyNode]] = [DepthToMesh, SaveMesh]
