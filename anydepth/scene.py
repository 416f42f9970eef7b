"""The files and pictures of an any-view scene, made the same way by every door (CLI, nodes, Python).

- :func:`parse_cameras` / :func:`read_cameras_json`: known cameras from the JSON that
  :func:`anydepth.geometry.write_cameras_json` and the Any-View Geometry node's ``camera_poses`` write
  (a list of views with ``intrinsics`` and/or ``extrinsics``), checked view by view.
- :func:`write_point_cloud`: the fused, confidence-filtered cloud of a
  :class:`~anydepth.anyview.GeometryResult` with its camera frusta, as PLY and/or GLB. For one result and
  one set of options the bytes are the same whoever calls it.
- :func:`confidence_map`: confidence as a ``0..1`` map, for a grey preview or a mask.
- :func:`sky_mask`: the official sky mask (``sky >= 0.5``) as a ``0/1`` map.
- :func:`field_of_view`: horizontal field of view and focal length of the cameras.
- :func:`read_scene_folder`: what ``anydepth geometry`` wrote (``cameras.json``, ``<stem>_depth.npy``,
  ``_conf.npy``, ``_sky.npy``) back as tensors, view by view in the cameras' order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .anyview import GeometryResult
from .geometry import glb_alignment, scene_extent, write_glb, write_ply

__all__ = ["POINT_CLOUD_FORMATS", "KnownCameras", "SavedPointCloud", "confidence_map", "field_of_view", "parse_cameras",
           "read_cameras_json", "read_scene_folder", "sky_mask", "SceneFiles", "write_point_cloud"]

POINT_CLOUD_FORMATS: tuple[str, ...] = ("ply", "glb")
"""What :func:`write_point_cloud` writes: binary PLY (points, then the cameras' vertices and edges) and glTF binary."""

FRUSTUM_SCALE = 0.03
"""Camera wire frames are this fraction of the written cloud's extent (:func:`anydepth.geometry.scene_extent`)."""


class KnownCameras(NamedTuple):
    """Cameras read from JSON; either may be ``None`` when the file gives none.

    Shape:
        extrinsics: ``(N, 3, 4)`` or ``(N, 4, 4)`` world-to-camera; intrinsics: ``(N, 3, 3)`` pixels; float64.
    """

    extrinsics: Tensor | None
    intrinsics: Tensor | None


def _matrices(views: list[dict], key: str, shapes: tuple[tuple[int, int], ...], source: str) -> Tensor | None:
    """The ``key`` matrices of every view as one float64 tensor, ``None`` when no view has one."""
    missing = [i for i, v in enumerate(views) if key not in v]
    if len(missing) == len(views):
        return None
    if missing:
        raise ValueError(f"{source}: give {key} for every view or for none; views {missing} have none")
    wanted = " or ".join("×".join(map(str, s)) for s in shapes)
    mats = []
    for i, v in enumerate(views):
        try:
            m = torch.tensor(v[key], dtype=torch.float64)
        except (TypeError, ValueError):
            m = None
        if m is None or tuple(m.shape) not in shapes or not torch.isfinite(m).all():
            raise ValueError(f"{source}: view {i}: {key} must be a {wanted} matrix of finite numbers, got {v[key]!r}")
        mats.append(m)
    if len({tuple(m.shape) for m in mats}) > 1:
        raise ValueError(f"{source}: {key} must all have one shape ({wanted}), got a mix")
    return torch.stack(mats)


def parse_cameras(text: str, n: int, *, source: str = "cameras") -> KnownCameras:
    """Known cameras for ``n`` views from JSON text.

    The JSON is a list of ``n`` objects (or ``{"views": [...]}``), one per image in order, each with
    ``intrinsics`` (3×3, pixels of that image) and/or ``extrinsics`` (3×4 or 4×4 world-to-camera): the
    ``cameras.json`` that ``anydepth geometry`` writes and the ``camera_poses`` output of Any-View Geometry.
    Other keys (``name``, ``width``, ``height``) are ignored.

    Args:
        text: the JSON.
        n: the number of views (images).
        source: what to call the JSON in errors (a file name, an input name).

    Returns:
        :class:`KnownCameras` (float64).

    Raises:
        ValueError: naming ``source`` (and the view) when the JSON is not such a list.

    Example:
        >>> k = [[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]
        >>> cams = parse_cameras(json.dumps([{"intrinsics": k}] * 2), 2)
        >>> cams.extrinsics is None, tuple(cams.intrinsics.shape)
        (True, (2, 3, 3))
    """
    try:
        views = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not valid JSON ({e}); expected a list of views with 'intrinsics' and/or "
                         "'extrinsics', like the cameras.json that `anydepth geometry` writes") from None
    if isinstance(views, dict) and "views" in views:
        views = views["views"]
    if not isinstance(views, list) or len(views) != n:
        got = f"a list of {len(views)}" if isinstance(views, list) else f"a JSON {type(views).__name__}"
        raise ValueError(f"{source}: expected a list of {n} views (one per image, in order), got {got}")
    for i, v in enumerate(views):
        if not isinstance(v, dict):
            raise ValueError(f"{source}: view {i} must be an object with 'intrinsics' and/or 'extrinsics', "
                             f"got {type(v).__name__}")
    cams = KnownCameras(_matrices(views, "extrinsics", ((3, 4), (4, 4)), source),
                        _matrices(views, "intrinsics", ((3, 3),), source))
    if cams.extrinsics is None and cams.intrinsics is None:
        raise ValueError(f"{source}: no view has 'extrinsics' (3×4 or 4×4 world-to-camera) or 'intrinsics' (3×3 "
                         "pixels); give them for every view, or leave the cameras out to estimate them")
    return cams


def read_cameras_json(path: str | os.PathLike, n: int) -> KnownCameras:
    """:func:`parse_cameras` of a file; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the cameras file {p}: {e}") from None
    return parse_cameras(text, n, source=str(p))


@dataclass(frozen=True)
class SavedPointCloud:
    """What :func:`write_point_cloud` wrote: the files (by format), the points and the cameras in them."""

    paths: dict[str, Path]
    points: int
    cameras: int


def write_point_cloud(result: GeometryResult, paths: dict[str, str | os.PathLike], *, conf_percentile: float = 40.0,
                      max_points: int = 1_000_000) -> SavedPointCloud:
    """Write the fused point cloud of ``result`` with its camera frusta, atomically.

    The cloud is :meth:`GeometryResult.point_cloud` (confidence-filtered, a seeded subset beyond
    ``max_points``); the frusta are :data:`FRUSTUM_SCALE` of its extent. PLY: points then 5 vertices and 8
    edges per camera (:func:`anydepth.geometry.write_ply`); GLB: the same, turned so that the first camera
    looks along -z (:func:`anydepth.geometry.glb_alignment`).

    Args:
        result: an any-view result with cameras.
        paths: the file to write per format, e.g. ``{"ply": "out/points.ply"}``; keys from :data:`POINT_CLOUD_FORMATS`.
        conf_percentile: drop this percentage of the least confident pixels.
        max_points: at most this many points.

    Returns:
        :class:`SavedPointCloud`.

    Raises:
        ValueError: ``result`` has no cameras, or an unknown format.
    """
    unknown = sorted(set(paths) - set(POINT_CLOUD_FORMATS))
    if unknown or not paths:
        raise ValueError(f"point cloud formats must be some of {', '.join(POINT_CLOUD_FORMATS)}, got {sorted(paths)}")
    if not result.has_cameras:
        raise ValueError("this geometry has no cameras (a mono / metric DA3 model without known cameras): use an "
                         "any-view DA3 model, or give intrinsics and extrinsics")
    cloud = result.point_cloud(conf_percentile=conf_percentile, max_points=max_points)
    frusta = result.frusta(FRUSTUM_SCALE * scene_extent(cloud.points))
    written: dict[str, Path] = {}
    if "ply" in paths:
        written["ply"] = Path(write_ply(paths["ply"], cloud, frusta))
    if "glb" in paths:
        transform = glb_alignment(result.extrinsics[0], cloud.points)
        written["glb"] = Path(write_glb(paths["glb"], cloud, frusta, transform=transform))
    return SavedPointCloud(written, len(cloud), int(frusta.shape[0]))


def confidence_map(result: GeometryResult) -> Tensor:
    """Confidence in ``0..1`` (min-max over all views; zeros without confidence), every view at the first's size.

    Shape:
        output: ``(N, H_0, W_0)`` float32.
    """
    maps: Sequence[Tensor] = result.maps("confidence")
    if not maps:
        return torch.zeros(len(result), *result.maps("depth")[0].shape)
    conf = torch.stack(_first_size(maps))
    lo, hi = conf.amin(), conf.amax()
    return (conf - lo) / (hi - lo).clamp_min(1e-12)


def _first_size(maps: Sequence[Tensor]) -> list[Tensor]:
    """Every map at the first map's size (bilinear), float32."""
    size = tuple(maps[0].shape)
    return [m.float() if tuple(m.shape) == size else
            F.interpolate(m[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0] for m in maps]


SKY_THRESHOLD = 0.5
"""A pixel is sky where the sky score reaches this (the official mask)."""


def sky_mask(result: GeometryResult, threshold: float = SKY_THRESHOLD) -> Tensor:
    """Sky as ``1.0``, the rest ``0.0`` (``sky >= threshold``), every view at the first's size; all zeros when the
    model predicts no sky (any-view models).

    Shape:
        output: ``(N, H_0, W_0)`` float32.
    """
    maps = result.maps("sky")
    if not maps:
        return torch.zeros(len(result), *result.maps("depth")[0].shape)
    return (torch.stack(_first_size(maps)) >= threshold).float()


def field_of_view(result: GeometryResult) -> tuple[float, float]:
    """Horizontal field of view in degrees and focal length ``fx`` in pixels of the input images, averaged over the
    views (``(0.0, 0.0)`` without intrinsics).

    Example:
        >>> from anydepth.mesh import intrinsics_from_fov
        >>> class R: intrinsics, input_sizes = intrinsics_from_fov(480, 640, 60.0)[None], [(480, 640)]
        >>> [round(x, 3) for x in field_of_view(R())]
        [60.0, 554.256]
    """
    if result.intrinsics is None:
        return 0.0, 0.0
    k = result.intrinsics.double()
    widths = torch.tensor([w for _, w in result.input_sizes], dtype=torch.float64)
    fov = torch.rad2deg(2 * torch.atan(widths / 2 / k[:, 0, 0]))
    return float(fov.mean()), float(k[:, 0, 0].mean())


@dataclass
class SceneFiles:
    """An ``anydepth geometry`` output folder read back (:func:`read_scene_folder`).

    Attributes:
        names: the image file names, in the cameras' order.
        stems: each view's output stem (``<stem>_depth.npy``), relative to the folder.
        depth: ``[H_i, W_i]`` float32 maps; confidence, sky: the same, or ``None`` when the folder has none.
        kind: the depth's kind (:mod:`anydepth.kinds`).
        extrinsics: ``(N, 3|4, 4)`` world-to-camera; intrinsics: ``(N, 3, 3)`` in pixels of each image.
    """

    names: list[str]
    stems: list[str]
    depth: list[Tensor]
    confidence: list[Tensor] | None
    sky: list[Tensor] | None
    kind: str
    extrinsics: Tensor
    intrinsics: Tensor


def read_scene_folder(folder: str | os.PathLike) -> SceneFiles:
    """Read an ``anydepth geometry`` output folder: ``cameras.json`` and each view's ``<stem>_depth.npy`` (found by
    the image's name), with ``<stem>_conf.npy`` / ``<stem>_sky.npy`` when every view has one.

    Raises:
        ValueError: naming the folder or file when something is missing or unreadable.
    """
    import numpy as np

    from .export import load_depth

    root = Path(folder)
    cameras = root / "cameras.json"
    if not cameras.is_file():
        raise ValueError(f"{root} has no cameras.json: give the output folder of `anydepth geometry` (or depth files)")
    try:
        views = json.loads(cameras.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {cameras}: {e}") from None
    if not isinstance(views, list):
        raise ValueError(f"{cameras} must hold a list of views (as `anydepth geometry` writes it)")
    cams = read_cameras_json(cameras, len(views))
    if cams.extrinsics is None or cams.intrinsics is None:
        raise ValueError(f"{cameras} needs extrinsics and intrinsics for every view")
    by_name: dict[str, list[Path]] = {}
    for f in sorted(root.rglob("*_depth.npy")):
        by_name.setdefault(f.name, []).append(f)
    names, stems, depth, kinds = [], [], [], []
    for i, v in enumerate(views):
        name = str(v.get("name") or f"view_{i:04d}")
        found = by_name.get(f"{Path(name).stem}_depth.npy", [])
        if len(found) != 1:
            what = "no" if not found else f"{len(found)} ({', '.join(str(f.relative_to(root)) for f in found)})"
            raise ValueError(f"{root}: {what} {Path(name).stem}_depth.npy for view {i} ({name}) in cameras.json")
        d = load_depth(found[0])
        names.append(name)
        stems.append(found[0].relative_to(root).as_posix()[: -len("_depth.npy")])
        depth.append(torch.from_numpy(d.depth))
        kinds.append(d.kind)

    def extra(suffix: str) -> list[Tensor] | None:
        paths = [root / f"{stem}_{suffix}.npy" for stem in stems]
        if not all(p.is_file() for p in paths):
            return None
        return [torch.from_numpy(np.load(p, allow_pickle=False).astype(np.float32)) for p in paths]

    return SceneFiles(names, stems, depth, extra("conf"), extra("sky"), kinds[0] or "depth", cams.extrinsics,
                      cams.intrinsics)

