"""ComfyUI adapter: thin V3 node classes over the ``anydepth`` library, and the ModelPatcher memory bridge.

Importing this package needs a running ComfyUI (``comfy``, ``comfy_api``, ``folder_paths``); the
library itself never imports ComfyUI.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import folders
from .controlnet import ApplyDepthControlNet
from .depth_nodes import DepthAnythingOneStep, DepthColormap, DepthToImage, EstimateDepth, LoadDepthModel
from .depth_tools_nodes import AlignDepth, EstimateVideoDepth, LoadDepth, StabilizeDepth
from .geometry_nodes import AnyViewGeometry, GeometryToPointCloud
from .mesh_nodes import DepthToMesh, SaveMesh
from .sequence_nodes import SequenceGeometry
from .save import SaveDepth

NODES: list[type[io.ComfyNode]] = [
    LoadDepthModel,
    EstimateDepth,
    DepthToImage,
    DepthColormap,
    DepthAnythingOneStep,
    ApplyDepthControlNet,
    SaveDepth,
    AlignDepth,
    EstimateVideoDepth,
    StabilizeDepth,
    LoadDepth,
    AnyViewGeometry,
    GeometryToPointCloud,
    DepthToMesh,
    SaveMesh,
    SequenceGeometry,
]


class AnyDepthExtension(ComfyExtension):
    """The pack's node list (ComfyUI V3 extension API)."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        folders.register()  # here rather than on_load(): ComfyUI 0.3.x does not call on_load
        return list(NODES)


__all__ = ["NODES", "AnyDepthExtension"]
