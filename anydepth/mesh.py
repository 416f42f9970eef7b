"""Depth + cameras -> triangle meshes (one per view, or fused in the world frame); GLB / OBJ / PLY files.

Each view's pixel grid becomes a surface: every 2×2 block of neighbouring pixels gives two triangles, and a
triangle is kept only when

* its three pixels are valid: finite positive depth, not sky (``sky < sky_threshold``) and confident enough
  (the lowest ``conf_percentile`` % of the confidence go, the official adaptive rule of the point clouds), and
* it does not bridge a depth discontinuity: ``(max z - min z) / min z <= discontinuity`` over its corners
  (``z`` = depth along the optical axis; ``0`` turns the cut off). Across an object's silhouette the depth
  jumps, so no "curtain" joins the object to the background behind it.

``stride`` keeps every n-th pixel per axis (grid decimation: about ``1 / stride²`` of the faces). Vertices are
coloured from the image. Faces wind counter-clockwise as seen from their camera (normals towards it).

Depth of any model becomes a mesh given intrinsics (:func:`intrinsics_from_fov`, :func:`intrinsics_from_focal`):

* ``metric_depth`` (metres) and ``depth`` (Depth Anything 3, relative) are distances along the optical axis, used
  as they are;
* ``disparity`` (V1/V2 relative heads) is inverse depth up to an unknown scale and shift. :func:`as_depth` maps
  each view's largest disparity to ``near`` and its smallest to ``far``, linearly in ``1 / depth`` in between:
  ``1/z = 1/far + (D - D_min) / (D_max - D_min) · (1/near - 1/far)``. This is exact when the scene's true nearest
  and farthest points are at ``near`` and ``far`` (disparity is affine in ``1/z``); otherwise the shape is right up
  to that choice.

Conventions are those of :mod:`anydepth.geometry` (OpenCV camera axes, world-to-camera extrinsics). Files:
PLY and OBJ hold world coordinates (the frame of the cameras, ``cameras.json`` and COLMAP); GLB is turned into
glTF's y-up frame with :func:`anydepth.geometry.glb_alignment` like the point-cloud GLB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .geometry import (GlbPrimitive, apply_transform, camera_frusta, confidence_threshold, depth_to_points,
                       frusta_primitive, glb_alignment, scene_extent, write_glb_scene)
from .io import atomic_write
from .kinds import DISPARITY, check_kind

__all__ = [
    "DEFAULT_FOV_DEGREES",
    "MESH_FORMATS",
    "MeshOptions",
    "SceneMesh",
    "TriangleMesh",
    "as_depth",
    "depth_to_mesh",
    "fov_from_intrinsics",
    "geometry_to_meshes",
    "gltf_transform",
    "intrinsics_from_focal",
    "intrinsics_from_fov",
    "maps_to_mesh",
    "mesh_frusta",
    "read_mesh_ply",
    "scene_mesh",
    "views_to_meshes",
    "write_mesh",
]

MESH_FORMATS: tuple[str, ...] = ("glb", "obj", "ply")
"""What :func:`write_mesh` writes: glTF binary (y up, vertex colours), Wavefront OBJ (``v x y z r g b``), binary PLY."""

DEFAULT_FOV_DEGREES = 60.0
"""Horizontal field of view assumed for a depth map without intrinsics (every door uses this default)."""


# --------------------------------------------------------------------------------------------
# The mesh


@dataclass
class TriangleMesh:
    """A triangle mesh with optional vertex colours.

    Attributes:
        vertices: ``[V, 3]`` float32 positions.
        faces: ``[F, 3]`` int64 vertex indices, counter-clockwise seen from the front.
        colors: ``[V, 3]`` uint8 RGB, or ``None``.
    """

    vertices: Tensor
    faces: Tensor
    colors: Tensor | None = None

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def transformed(self, transform: Tensor) -> TriangleMesh:
        """The mesh with every vertex through a ``[4, 4]`` rigid or similarity transform (faces and colours shared)."""
        return TriangleMesh(torch.from_numpy(apply_transform(self.vertices, transform)), self.faces, self.colors)

    @staticmethod
    def concat(meshes: Sequence[TriangleMesh]) -> TriangleMesh:
        """One mesh holding all of ``meshes`` (indices offset; grey where a part has no colours).

        Example:
            >>> tri = TriangleMesh(torch.eye(3), torch.tensor([[0, 1, 2]]))
            >>> TriangleMesh.concat([tri, tri]).faces.tolist()
            [[0, 1, 2], [3, 4, 5]]
        """
        if not meshes:
            return TriangleMesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64), None)
        offsets = np.cumsum([0] + [m.num_vertices for m in meshes[:-1]])
        faces = torch.cat([m.faces + int(o) for m, o in zip(meshes, offsets)])
        colors = None
        if any(m.colors is not None for m in meshes):
            colors = torch.cat([m.colors if m.colors is not None else torch.full((m.num_vertices, 3), 200, dtype=torch.uint8)
                                for m in meshes])
        return TriangleMesh(torch.cat([m.vertices.float() for m in meshes]), faces, colors)


@dataclass(frozen=True)
class MeshOptions:
    """How depth becomes triangles (see the module docstring).

    Attributes:
        stride: keep every n-th pixel per axis (1 = full resolution).
        discontinuity: drop triangles whose relative depth span ``(max z - min z) / min z`` exceeds this; 0 = off.
        conf_percentile: drop this percentage of the least confident pixels (when there is a confidence map).
        sky_threshold: pixels with a sky score at or above this are dropped (when there is a sky map).
    """

    stride: int = 1
    discontinuity: float = 0.1
    conf_percentile: float = 10.0
    sky_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.stride, int) or isinstance(self.stride, bool) or self.stride < 1:
            raise ValueError(f"stride must be an integer >= 1 (1 = every pixel), got {self.stride!r}")
        if not (math.isfinite(self.discontinuity) and self.discontinuity >= 0):
            raise ValueError(f"discontinuity must be >= 0 (a relative depth step; 0 = keep every face), "
                             f"got {self.discontinuity}")
        if not 0 <= self.conf_percentile < 100:
            raise ValueError(f"conf_percentile must be in [0, 100), got {self.conf_percentile}")


# --------------------------------------------------------------------------------------------
# Cameras for depth maps that have none


def intrinsics_from_fov(height: int, width: int, fov_degrees: float = DEFAULT_FOV_DEGREES, *,
                        axis: str = "horizontal") -> Tensor:
    """A pinhole ``K`` with square pixels, the principal point at the image centre and the given field of view.

    ``axis`` says which side the angle spans (``"horizontal"``: the width, ``"vertical"``: the height).

    Shape: output ``[3, 3]`` float64.

    Example:
        >>> intrinsics_from_fov(100, 200, 90.0)[0].round(decimals=6).tolist()
        [100.0, 0.0, 100.0]
    """
    if not (isinstance(fov_degrees, (int, float)) and 0 < fov_degrees < 180):
        raise ValueError(f"field of view must be between 0 and 180 degrees, got {fov_degrees!r}")
    if axis not in ("horizontal", "vertical"):
        raise ValueError(f"axis must be 'horizontal' or 'vertical', got {axis!r}")
    side = width if axis == "horizontal" else height
    return intrinsics_from_focal(height, width, side / 2 / math.tan(math.radians(fov_degrees) / 2))


def intrinsics_from_focal(height: int, width: int, focal_px: float) -> Tensor:
    """A pinhole ``K`` with focal length ``focal_px`` (pixels of this image), principal point at the centre.

    Example:
        >>> intrinsics_from_focal(480, 640, 500.0).tolist()
        [[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]
    """
    if not (isinstance(focal_px, (int, float)) and math.isfinite(focal_px) and focal_px > 0):
        raise ValueError(f"focal length must be a positive number of pixels, got {focal_px!r}")
    return torch.tensor([[focal_px, 0.0, width / 2], [0.0, focal_px, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def fov_from_intrinsics(intrinsics: Tensor, height: int, width: int) -> tuple[float, float]:
    """Horizontal and vertical field of view in degrees of ``K`` for an image of ``height × width`` pixels.

    Example:
        >>> fov_from_intrinsics(intrinsics_from_fov(100, 200, 90.0), 100, 200)
        (90.0, 53.13010235415598)
    """
    k = torch.as_tensor(intrinsics, dtype=torch.float64)
    return (math.degrees(2 * math.atan(width / 2 / float(k[0, 0]))),
            math.degrees(2 * math.atan(height / 2 / float(k[1, 1]))))


def as_depth(values: Tensor, kind: str, *, near: float = 1.0, far: float = 10.0) -> Tensor:
    """Depth along the optical axis (larger = farther) from a raw map of ``kind``.

    ``metric_depth`` and ``depth`` are returned as they are (a float copy); ``disparity`` is mapped per view,
    largest disparity -> ``near``, smallest -> ``far``, linear in ``1 / depth`` (see the module docstring).
    Non-finite pixels stay NaN.

    Shape: ``[N, H, W]`` -> ``[N, H, W]`` float32.

    Example:
        >>> as_depth(torch.tensor([[[0.0, 1.0, 3.0]]]), "disparity", near=1.0, far=4.0)
        tensor([[[4., 2., 1.]]])
    """
    kind = check_kind(kind)
    x = torch.as_tensor(values).float()
    if x.ndim != 3:
        raise ValueError(f"depth must be [N, H, W], got shape {tuple(x.shape)}")
    if kind != DISPARITY:
        return x.clone()
    if not (0 < near < far and math.isfinite(far)):
        raise ValueError(f"disparity needs 0 < near < far (the distances its largest and smallest values stand for), "
                         f"got near={near}, far={far}")
    out = torch.full_like(x, float("nan"))
    for i, d in enumerate(x):
        ok = torch.isfinite(d)
        if not ok.any():
            continue
        lo, hi = d[ok].min(), d[ok].max()
        t = (d - lo) / (hi - lo) if hi > lo else torch.zeros_like(d)
        inv = 1 / far + t * (1 / near - 1 / far)
        out[i] = torch.where(ok, 1 / inv, out[i])
    return out


# --------------------------------------------------------------------------------------------
# Depth -> mesh


def _colors_u8(image: Tensor | np.ndarray | None, size: tuple[int, int]) -> Tensor | None:
    if image is None:
        return None
    img = image if isinstance(image, Tensor) else torch.as_tensor(np.asarray(image))
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.permute(1, 2, 0)
    if tuple(img.shape) != (*size, 3):
        raise ValueError(f"colours must be an [H, W, 3] image of the depth map's size {size[0]}×{size[1]}, got "
                         f"{tuple(img.shape)}; resize the image or leave the colours out")
    return img.cpu() if img.dtype == torch.uint8 else (img.float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def _grid_faces(rows: int, cols: int) -> Tensor:
    """Two triangles per grid cell, ``(a, c, b)`` and ``(b, c, d)`` with ``a b / c d`` the cell's corners
    (row-major indices): counter-clockwise seen from a camera looking along +z with y down."""
    idx = torch.arange(rows * cols).reshape(rows, cols)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    return torch.cat([torch.stack([a, c, b], 1), torch.stack([b, c, d], 1)])


def depth_to_mesh(depth: Tensor, intrinsics: Tensor, extrinsics: Tensor | None = None, *, image=None,
                  confidence: Tensor | None = None, sky: Tensor | None = None,
                  options: MeshOptions = MeshOptions()) -> TriangleMesh:
    """One view's depth map as a triangle mesh, in the world frame (camera frame without ``extrinsics``).

    Args:
        depth: ``[H, W]`` depth along the optical axis (use :func:`as_depth` for disparity).
        intrinsics: ``[3, 3]`` in pixels of ``depth``.
        extrinsics: ``[3|4, 4]`` world-to-camera, or ``None``.
        image: ``[H, W, 3]`` colours (uint8, or float 0..1), or ``None`` for no colours.
        confidence: ``[H, W]`` (larger = better) or ``None``.
        sky: ``[H, W]`` sky score or ``None``.
        options: :class:`MeshOptions`.

    Returns:
        :class:`TriangleMesh` with only the vertices its faces use (float32, on the CPU).

    Example:
        >>> k = intrinsics_from_focal(3, 3, 3.0)
        >>> m = depth_to_mesh(torch.ones(3, 3), k)
        >>> m.num_vertices, m.num_faces
        (9, 8)
    """
    if not isinstance(depth, Tensor) or depth.ndim != 2:
        got = tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__
        raise ValueError(f"depth must be one [H, W] map, got {got}")
    h, w = depth.shape
    for name, t in (("confidence", confidence), ("sky", sky)):
        if t is not None and tuple(t.shape) != (h, w):
            raise ValueError(f"{name} must match the depth map's size {h}×{w}, got {tuple(t.shape)}")
    s = options.stride
    d = depth.detach().float().cpu()
    ext = None if extrinsics is None else torch.as_tensor(extrinsics)[None]
    pts = depth_to_points(d[None], torch.as_tensor(intrinsics)[None], ext)[0]
    valid = torch.isfinite(d) & (d > 0) & torch.isfinite(pts).all(-1)
    if sky is not None:
        valid &= sky.detach().float().cpu() < options.sky_threshold
    if confidence is not None and options.conf_percentile > 0:
        conf = confidence.detach().float().cpu()
        valid &= conf >= confidence_threshold(conf, valid, options.conf_percentile)
    colors = _colors_u8(image, (h, w))
    # decimate: the grid of kept pixels
    d, pts, valid = d[::s, ::s], pts[::s, ::s], valid[::s, ::s]
    colors = None if colors is None else colors[::s, ::s]
    rows, cols = d.shape
    if rows < 2 or cols < 2:
        return TriangleMesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64), None if colors is None else
                            torch.zeros(0, 3, dtype=torch.uint8))
    faces = _grid_faces(rows, cols)
    flat_ok = valid.reshape(-1)
    keep = flat_ok[faces].all(1)
    if options.discontinuity > 0:
        z = torch.where(valid, d, torch.ones_like(d)).reshape(-1)[faces].double()  # invalid corners are dropped anyway
        zmin, zmax = z.min(1).values, z.max(1).values
        keep &= (zmax - zmin) <= options.discontinuity * zmin
    faces = faces[keep]
    used = torch.zeros(rows * cols, dtype=torch.bool)
    used[faces.reshape(-1)] = True
    remap = torch.cumsum(used, 0) - 1
    verts = pts.reshape(-1, 3)[used].float()
    col = None if colors is None else colors.reshape(-1, 3)[used]
    return TriangleMesh(verts.contiguous(), remap[faces].contiguous(), col)


def _per_view(x, n: int, name: str) -> list:
    if x is None:
        return [None] * n
    items = list(x.unbind(0)) if isinstance(x, Tensor) else list(x)
    if len(items) != n:
        raise ValueError(f"{name} has {len(items)} entries for {n} depth maps; pass one per view")
    return items


def views_to_meshes(depth: Tensor | Sequence[Tensor], intrinsics: Tensor | Sequence[Tensor],
                    extrinsics: Tensor | Sequence[Tensor] | None = None, *, images=None, confidence=None, sky=None,
                    options: MeshOptions = MeshOptions()) -> list[TriangleMesh]:
    """:func:`depth_to_mesh` for every view; with extrinsics all meshes share the world frame
    (``TriangleMesh.concat`` of the list is the fused mesh).

    Shape: depth ``[N, H, W]`` (or a list of ``[H_i, W_i]``), intrinsics ``[N, 3, 3]``, extrinsics ``[N, 3|4, 4]``,
    images ``[N, H, W, 3]``, confidence and sky ``[N, H, W]`` (or lists).
    """
    maps = _per_view(depth, len(depth), "depth")
    n = len(maps)
    ks = _per_view(intrinsics, n, "intrinsics")
    exts = _per_view(extrinsics, n, "extrinsics")
    imgs, confs, skies = _per_view(images, n, "images"), _per_view(confidence, n, "confidence"), _per_view(sky, n, "sky")
    return [depth_to_mesh(maps[i], ks[i], exts[i], image=imgs[i], confidence=confs[i], sky=skies[i], options=options)
            for i in range(n)]


def geometry_to_meshes(result, views: Sequence[int] | None = None, *,
                       options: MeshOptions = MeshOptions()) -> list[TriangleMesh]:
    """Meshes of an any-view result (:class:`~anydepth.anyview.GeometryResult`) at the network's resolution, in its
    world frame, coloured with the views as the network saw them; ``views`` picks some (default all).

    Raises:
        ValueError: the result has no cameras.
    """
    if not result.has_cameras:
        raise ValueError("this geometry has no cameras (a mono / metric DA3 model without known cameras): use an "
                         "any-view DA3 model, give cameras, or mesh its depth with a field of view")
    n = len(result)
    pick = list(range(n)) if views is None else [int(v) for v in views]
    bad = [v for v in pick if not 0 <= v < n]
    if bad:
        raise ValueError(f"view {bad[0]} does not exist: this geometry has views 0..{n - 1}")
    sel = lambda t: None if t is None else t[pick]  # noqa: E731
    return views_to_meshes(result.processed_depth[pick], result.processed_intrinsics[pick], result.extrinsics[pick],
                           images=result.processed_images[pick], confidence=sel(result.processed_confidence),
                           sky=sel(result.processed_sky), options=options)


# --------------------------------------------------------------------------------------------
# Files


def _mesh_arrays(mesh: TriangleMesh, transform: Tensor | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    verts = apply_transform(mesh.vertices, transform)
    faces = mesh.faces.detach().cpu().numpy().astype(np.int64)
    cols = None if mesh.colors is None else mesh.colors.detach().cpu().numpy().astype(np.uint8)
    return verts, faces, cols


_PLY_XYZ = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
_PLY_RGB = [("red", "u1"), ("green", "u1"), ("blue", "u1")]


def _write_ply(path, verts: np.ndarray, faces: np.ndarray, cols: np.ndarray | None) -> str:
    fields = _PLY_XYZ + (_PLY_RGB if cols is not None else [])
    vert = np.empty(verts.shape[0], dtype=fields)
    vert["x"], vert["y"], vert["z"] = verts.T
    if cols is not None:
        vert["red"], vert["green"], vert["blue"] = cols.T
    face = np.empty(faces.shape[0], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, faces
    header = ["ply", "format binary_little_endian 1.0", "comment anydepth mesh", f"element vertex {len(vert)}",
              *[f"property {'float' if t == '<f4' else 'uchar'} {name}" for name, t in fields],
              f"element face {len(face)}", "property list uchar int vertex_indices", "end_header"]

    def write(fh) -> None:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vert.tobytes())
        fh.write(face.tobytes())

    return str(atomic_write(path, write))


def _write_obj(path, verts: np.ndarray, faces: np.ndarray, cols: np.ndarray | None) -> str:
    def write(fh) -> None:
        fh.write(b"# anydepth mesh\n")
        if cols is not None:  # the common "v x y z r g b" extension (MeshLab, Blender, Open3D read it)
            rows = np.concatenate([verts.astype(np.float64), cols.astype(np.float64) / 255], 1)
            np.savetxt(fh, rows, fmt="v %.7g %.7g %.7g %.4g %.4g %.4g")
        else:
            np.savetxt(fh, verts.astype(np.float64), fmt="v %.7g %.7g %.7g")
        np.savetxt(fh, faces + 1, fmt="f %d %d %d")

    return str(atomic_write(path, write))


def write_mesh(path: str | os.PathLike, mesh: TriangleMesh, *, format: str | None = None, transform: Tensor | None = None,
               frusta: Tensor | None = None) -> str:
    """Write ``mesh`` as GLB, OBJ or PLY (``format``, default from the suffix), atomically.

    ``transform`` (``[4, 4]``) moves the vertices first (e.g. :func:`anydepth.geometry.glb_alignment` for a y-up
    GLB); ``frusta`` (``[K, 8, 2, 3]`` from :func:`anydepth.geometry.camera_frusta`, GLB only) adds the cameras
    as coloured lines.

    Returns:
        The path written.
    """
    fmt = (format or Path(os.fspath(path)).suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"unknown mesh format {fmt!r} for {os.fspath(path)!r}; expected one of {', '.join(MESH_FORMATS)}")
    verts, faces, cols = _mesh_arrays(mesh, transform)
    if fmt == "ply":
        return _write_ply(path, verts, faces, cols)
    if fmt == "obj":
        return _write_obj(path, verts, faces, cols)
    rgba = None if cols is None else np.concatenate([cols, np.full((len(cols), 1), 255, np.uint8)], 1)
    prims = [GlbPrimitive("mesh", verts, rgba, 4, faces)]
    if frusta is not None and frusta.shape[0]:
        prims.append(frusta_primitive(frusta, transform))
    extras: dict = {"anydepth_vertices": len(verts), "anydepth_faces": len(faces),
                    "anydepth_cameras": 0 if frusta is None else int(frusta.shape[0])}
    if transform is not None:
        extras["anydepth_world_to_gltf"] = transform.double().tolist()
    return write_glb_scene(path, prims, extras)


def read_mesh_ply(path: str | os.PathLike) -> TriangleMesh:
    """Read a binary PLY written by :func:`write_mesh` back (vertices, faces, colours)."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    nv = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    nf = int(next(line.split()[2] for line in header if line.startswith("element face")))
    coloured = any(line.endswith(" red") for line in header)
    fields = _PLY_XYZ + (_PLY_RGB if coloured else [])
    vert = np.frombuffer(raw, dtype=fields, count=nv, offset=end)
    face = np.frombuffer(raw, dtype=[("n", "u1"), ("i", "<i4", (3,))], count=nf, offset=end + vert.nbytes)
    verts = torch.from_numpy(np.stack([vert["x"], vert["y"], vert["z"]], 1).copy())
    cols = torch.from_numpy(np.stack([vert["red"], vert["green"], vert["blue"]], 1).copy()) if coloured else None
    return TriangleMesh(verts, torch.from_numpy(face["i"].astype(np.int64)), cols)


def mesh_frusta(intrinsics: Tensor, extrinsics: Tensor, sizes, mesh: TriangleMesh, fraction: float = 0.03) -> Tensor:
    """Camera wire frames sized ``fraction`` of the mesh's extent (:func:`anydepth.geometry.camera_frusta`)."""
    return camera_frusta(intrinsics, extrinsics, sizes, fraction * scene_extent(mesh.vertices))


def gltf_transform(mesh: TriangleMesh, first_extrinsics: Tensor | None = None) -> Tensor:
    """World -> glTF transform for ``mesh``: the first camera's frame with y up, the median vertex at the origin
    (:func:`anydepth.geometry.glb_alignment`); the camera frame itself without extrinsics."""
    ext = torch.eye(4, dtype=torch.float64)[:3] if first_extrinsics is None else torch.as_tensor(first_extrinsics)
    return glb_alignment(ext, mesh.vertices if mesh.num_vertices else None)


# --------------------------------------------------------------------------------------------
# A scene's mesh from whatever the caller has: depth of any model, DA3 geometry, or both


@dataclass
class SceneMesh:
    """What :func:`scene_mesh` builds.

    Attributes:
        mesh: the chosen views fused into one mesh, in the world frame (the camera frame without cameras).
        views: the chosen views' meshes, in the same frame.
        view_indices: which views they are.
        gltf: ``[4, 4]`` world -> glTF transform (:func:`gltf_transform`: the first chosen camera, y up).
        frusta: ``[K, 8, 2, 3]`` camera wire frames of the chosen views (world frame), ``None`` without cameras.
        notes: what the caller should know (assumed field of view, disparity converted, ...).
    """

    mesh: TriangleMesh
    views: list[TriangleMesh]
    view_indices: list[int]
    gltf: Tensor
    frusta: Tensor | None
    notes: list[str]

    def write(self, path: str | os.PathLike, format: str | None = None) -> str:
        """:func:`write_mesh` of the fused mesh: GLB in glTF's frame with the cameras, OBJ / PLY in the world frame."""
        fmt = (format or Path(os.fspath(path)).suffix.lstrip(".")).lower()
        if fmt == "glb":
            return write_mesh(path, self.mesh, format=fmt, transform=self.gltf, frusta=self.frusta)
        return write_mesh(path, self.mesh, format=fmt)


def _resize_colors(image: Tensor, size: tuple[int, int]) -> Tensor:
    """``[H, W, 3]`` colours (0..1 or uint8) at ``size`` (bilinear), float 0..1."""
    img = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    if tuple(img.shape[:2]) == tuple(size):
        return img
    x = torch.nn.functional.interpolate(img.permute(2, 0, 1)[None], size=size, mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).clamp(0, 1)


def maps_to_mesh(depth: Sequence[Tensor], kind: str, *, intrinsics: Tensor | None = None,
                 extrinsics: Tensor | None = None, images=None, confidence=None, sky=None, view: int | None = None,
                 fov_degrees: float = DEFAULT_FOV_DEGREES, focal_px: float | None = None, near: float = 1.0,
                 far: float = 10.0, options: MeshOptions = MeshOptions()) -> SceneMesh:
    """A :class:`SceneMesh` from raw depth maps of ``kind`` and whatever cameras there are.

    Args:
        depth: ``[H_i, W_i]`` maps (a ``[N, H, W]`` tensor works too).
        kind: what the values are (:mod:`anydepth.kinds`); disparity is converted with :func:`as_depth`.
        intrinsics: ``[N, 3, 3]`` in pixels of each map, or ``None``: ``focal_px`` if given, else ``fov_degrees``
            (horizontal), principal point at the centre.
        extrinsics: ``[N, 3|4, 4]`` world-to-camera (the views are fused in that world frame), or ``None`` (each
            view in its own camera frame).
        images: colours per view (``[H, W, 3]``, 0..1 or uint8, any size: resized to the map), or ``None``.
        confidence, sky: per-view maps of each depth map's size, or ``None``.
        view: ``None`` (or -1) every view, else only that one.
        near, far: what disparity's largest and smallest values stand for.
        options: :class:`MeshOptions`.

    Raises:
        ValueError: a view that does not exist, mismatched inputs, or no face left.
    """
    maps = _per_view(depth, len(depth), "depth")
    n = len(maps)
    pick = _pick(view, n)
    sizes = [tuple(maps[i].shape) for i in pick]
    values = [as_depth(maps[i][None], kind, near=near, far=far)[0] for i in pick]
    notes: list[str] = []
    if kind == DISPARITY:
        notes.append(f"relative disparity made depth with near = {near:g}, far = {far:g} (largest disparity -> near, "
                     "smallest -> far, linear in 1/depth)")
    if intrinsics is not None:
        k = torch.stack(_per_view(intrinsics, n, "intrinsics"))[pick].double()
    elif focal_px:
        k = torch.stack([intrinsics_from_focal(h, w, focal_px) for h, w in sizes])
        notes.append(f"no intrinsics: focal length {focal_px:g} px, principal point at the centre")
    else:
        k = torch.stack([intrinsics_from_fov(h, w, fov_degrees) for h, w in sizes])
        notes.append(f"no intrinsics: horizontal field of view {fov_degrees:g}°, principal point at the centre")
    ext = None if extrinsics is None else torch.stack(_per_view(extrinsics, n, "extrinsics"))[pick].double()
    pick_of = lambda x, name: None if x is None else [_per_view(x, n, name)[i] for i in pick]  # noqa: E731
    imgs = pick_of(images, "images")
    imgs = None if imgs is None else [_resize_colors(im, s) for im, s in zip(imgs, sizes)]
    meshes = views_to_meshes(values, k, ext, images=imgs, confidence=pick_of(confidence, "confidence"),
                             sky=pick_of(sky, "sky"), options=options)
    fused = TriangleMesh.concat(meshes)
    if fused.num_faces == 0:
        raise ValueError("the mesh has no faces: every pixel was dropped; raise discontinuity, lower conf_percentile "
                         "or the stride, or check that the depth is valid")
    gltf = gltf_transform(fused, None if ext is None else ext[0])
    frusta = None if ext is None else mesh_frusta(k, ext, sizes, fused)
    return SceneMesh(fused, meshes, pick, gltf, frusta, notes)


def scene_mesh(depth=None, geometry=None, *, images=None, view: int | None = None,
               fov_degrees: float = DEFAULT_FOV_DEGREES, focal_px: float | None = None, near: float = 1.0,
               far: float = 10.0, options: MeshOptions = MeshOptions()) -> SceneMesh:
    """A mesh from depth of any model and/or Depth Anything 3 geometry (what the Depth to Mesh node does).

    * ``geometry`` alone (with cameras): its depth at the network's size in its world frame, with its confidence,
      sky and colours.
    * ``depth`` (a :class:`~anydepth.estimator.DepthResult`), or ``geometry`` without cameras (mono / metric DA3):
      each map at its own size. The cameras are ``geometry``'s when it has them (intrinsics at the input size,
      extrinsics), else ``focal_px`` / ``fov_degrees`` in each view's camera frame. Confidence and sky come from
      ``geometry`` when its maps have the depth's sizes.

    Everything else is :func:`maps_to_mesh`.

    Args:
        depth: a ``DepthResult`` (or ``None``).
        geometry: a ``GeometryResult`` (or ``None``).
        images: colours, ``[N, H, W, 3]`` or a list (resized to each map); default the geometry's views.
        view, fov_degrees, focal_px, near, far, options: see :func:`maps_to_mesh`.

    Raises:
        ValueError: neither input, a view that does not exist, depth and geometry of different images.
    """
    if depth is None and geometry is None:
        raise ValueError("give depth (any Depth Anything model) and/or geometry (Depth Anything 3) to make a mesh from")
    cams = geometry is not None and geometry.has_cameras
    common = dict(view=view, fov_degrees=fov_degrees, focal_px=focal_px, near=near, far=far, options=options)
    if depth is None and cams:
        return maps_to_mesh(geometry.processed_depth, geometry.kind, intrinsics=geometry.processed_intrinsics,
                            extrinsics=geometry.extrinsics,
                            images=geometry.processed_images if images is None else images,
                            confidence=geometry.processed_confidence, sky=geometry.processed_sky, **common)
    source = depth if depth is not None else geometry.depth_result()
    maps = source.maps()
    sizes = [tuple(m.shape) for m in maps]
    extra: dict = {}
    if geometry is not None:
        if len(geometry) != len(maps) or [tuple(s) for s in geometry.input_sizes] != sizes:
            raise ValueError(f"depth ({len(maps)} maps of sizes {sorted(set(sizes))}) and geometry ({len(geometry)} views "
                             f"of sizes {sorted(set(map(tuple, geometry.input_sizes)))}) are not of the same images; "
                             "connect the depth of the images the geometry was made from")
        extra = {"confidence": geometry.maps("confidence") or None, "sky": geometry.maps("sky") or None}
        if cams:
            extra.update(intrinsics=geometry.intrinsics, extrinsics=geometry.extrinsics)
        if images is None:
            images = geometry.processed_images
    return maps_to_mesh(maps, source.kind, images=images, **extra, **common)


def _pick(view: int | None, n: int) -> list[int]:
    if view is None or view == -1:
        return list(range(n))
    if not -1 <= view < n:
        raise ValueError(f"view {view} does not exist: there are {n} views (0..{n - 1}; -1 = all of them fused)")
    return [int(view)]
