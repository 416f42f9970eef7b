"""The pack's socket types."""

from __future__ import annotations

from comfy_api.latest import io

from anydepth.anyview import GeometryResult
from anydepth.estimator import DepthResult

from .loader import DepthModel as _DepthModel


@io.comfytype(io_type="DEPTH_MODEL")
class DepthModel(io.ComfyTypeIO):
    """A loaded depth network with its memory bridge (:class:`nodes.loader.DepthModel`)."""

    Type = _DepthModel


@io.comfytype(io_type="DEPTH")
class Depth(io.ComfyTypeIO):
    """Raw depth: an :class:`anydepth.estimator.DepthResult` (values, kind, sizes, model)."""

    Type = DepthResult


@io.comfytype(io_type="GEOMETRY")
class Geometry(io.ComfyTypeIO):
    """Any-view geometry: an :class:`anydepth.anyview.GeometryResult` (depth, confidence, cameras, colours)."""

    Type = GeometryResult
