"""Depth + cameras -> 3D points; fused coloured point clouds; PLY, GLB, camera JSON and COLMAP export.

Conventions (those of Depth Anything 3 and OpenCV):

* camera frame: x right, y down, z forward; pixel ``(u, v)`` = (column, row) index, so a pixel's
  camera point is ``depth · K⁻¹ [u, v, 1]ᵀ``;
* extrinsics are **world-to-camera** ``[R | t]`` (``[N, 3, 4]`` or ``[N, 4, 4]``):
  ``X_cam = R · X_world + t``, camera centre ``-Rᵀ t``;
* intrinsics ``K`` are in pixels of the depth map they go with.

Everything is batched over views in torch; the writers are atomic (a temporary file renamed into
place), so an interrupted export never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .cameras import camera_centers, matrix_to_quaternion, to_homogeneous
from .cameras import invert_rigid as invert_extrinsics  # the public name geometry has always exported
from .io import atomic_open, atomic_write

__all__ = [
    "GlbPrimitive",
    "PointCloud",
    "apply_transform",
    "camera_centers",
    "camera_frusta",
    "camera_to_world",
    "cameras_to_json",
    "depth_to_points",
    "frusta_primitive",
    "fuse_point_cloud",
    "glb_alignment",
    "invert_extrinsics",
    "project_points",
    "scene_extent",
    "to_homogeneous",
    "unproject_depth",
    "write_cameras_json",
    "write_colmap_text",
    "write_glb",
    "write_glb_scene",
    "write_ply",
]


# --------------------------------------------------------------------------------------------
# Validation


def _check_extrinsics(ext: torch.Tensor, n: int | None = None, name: str = "extrinsics") -> torch.Tensor:
    if not isinstance(ext, torch.Tensor):
        ext = torch.as_tensor(np.asarray(ext))
    if ext.ndim != 3 or tuple(ext.shape[-2:]) not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must be [N, 3, 4] or [N, 4, 4] world-to-camera matrices, got shape {tuple(ext.shape)}")
    if n is not None and ext.shape[0] != n:
        raise ValueError(f"{name} has {ext.shape[0]} cameras for {n} views; pass one per view")
    return ext


def _check_intrinsics(k: torch.Tensor, n: int | None = None, name: str = "intrinsics") -> torch.Tensor:
    if not isinstance(k, torch.Tensor):
        k = torch.as_tensor(np.asarray(k))
    if k.ndim != 3 or tuple(k.shape[-2:]) != (3, 3):
        raise ValueError(f"{name} must be [N, 3, 3] pixel intrinsics, got shape {tuple(k.shape)}")
    if n is not None and k.shape[0] != n:
        raise ValueError(f"{name} has {k.shape[0]} matrices for {n} views; pass one per view")
    return k


def _check_depth(depth: torch.Tensor) -> torch.Tensor:
    if not isinstance(depth, torch.Tensor) or depth.ndim != 3 or not depth.is_floating_point():
        shape = tuple(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
        raise ValueError(f"depth must be a float tensor [N, H, W], got {shape}")
    return depth


# --------------------------------------------------------------------------------------------
# Transforms (rigid inverse, centres and homogeneous matrices: :mod:`anydepth.cameras`)


def unproject_depth(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-frame points of every pixel: ``depth · K⁻¹ [u, v, 1]ᵀ``.

    Shape:
        - depth: ``[N, H, W]``; intrinsics ``[N, 3, 3]`` in pixels of the depth map.
        - output: ``[N, H, W, 3]`` (same dtype as depth, at least float32).

    Example:
        >>> k = torch.tensor([[[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]]])
        >>> unproject_depth(torch.full((1, 2, 2), 4.0), k)[0, 0, 0]
        tensor([-2., -2.,  4.])
    """
    depth = _check_depth(depth)
    n, h, w = depth.shape
    k = _check_intrinsics(intrinsics, n).to(device=depth.device, dtype=torch.promote_types(depth.dtype, torch.float32))
    v, u = torch.meshgrid(torch.arange(h, device=depth.device, dtype=k.dtype), torch.arange(w, device=depth.device, dtype=k.dtype),
                          indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H, W, 3]
    rays = torch.einsum("nij,hwj->nhwi", torch.linalg.inv(k), pix)
    return rays * depth.to(k.dtype)[..., None]


def camera_to_world(points: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-frame points of each view -> world frame: ``Rᵀ (X - t)``.

    Shape: points ``[N, ..., 3]``, extrinsics ``[N, 3|4, 4]`` (world-to-camera) -> ``[N, ..., 3]``.
    """
    ext = _check_extrinsics(extrinsics, points.shape[0]).to(device=points.device, dtype=points.dtype)
    r, t = ext[:, :3, :3], ext[:, :3, 3]
    flat = points.reshape(points.shape[0], -1, 3)
    return ((flat - t[:, None]) @ r).reshape(points.shape)


def depth_to_points(depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor | None = None) -> torch.Tensor:
    """World points of every pixel (camera frame when ``extrinsics`` is ``None``).

    Shape: depth ``[N, H, W]``, intrinsics ``[N, 3, 3]``, extrinsics ``[N, 3|4, 4]`` -> ``[N, H, W, 3]``.
    """
    pts = unproject_depth(depth, intrinsics)
    return pts if extrinsics is None else camera_to_world(pts, extrinsics)


def project_points(points: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points seen by each camera: pixel coordinates ``(u, v)`` and depth (z in the camera frame).

    Shape: points ``[M, 3]``, intrinsics ``[N, 3, 3]``, extrinsics ``[N, 3|4, 4]`` -> uv ``[N, M, 2]``, z ``[N, M]``.
    """
    ext = _check_extrinsics(extrinsics).to(points.dtype)
    k = _check_intrinsics(intrinsics, ext.shape[0]).to(points.dtype)
    cam = points[None] @ ext[:, :3, :3].transpose(1, 2) + ext[:, None, :3, 3]
    z = cam[..., 2]
    pix = cam @ k.transpose(1, 2)
    return pix[..., :2] / pix[..., 2:], z


# --------------------------------------------------------------------------------------------
# Point clouds


@dataclass
class PointCloud:
    """A coloured point cloud in one world frame.

    Attributes:
        points: ``[M, 3]`` float32 world coordinates.
        colors: ``[M, 3]`` uint8 RGB.
        view: ``[M]`` int64, the view each point came from.
    """

    points: torch.Tensor
    colors: torch.Tensor
    view: torch.Tensor

    def __len__(self) -> int:
        return int(self.points.shape[0])


def _colors_u8(images: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor:
    n, h, w = shape
    if images is None:
        return torch.full((n, h, w, 3), 200, dtype=torch.uint8)
    img = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if img.ndim == 4 and img.shape[1] == 3 and img.shape[-1] != 3:
        img = img.permute(0, 2, 3, 1)  # [N, 3, H, W] -> [N, H, W, 3]
    if tuple(img.shape) != (n, h, w, 3):
        raise ValueError(f"images must be [N, H, W, 3] (or [N, 3, H, W]) matching depth {n}×{h}×{w}, got {tuple(img.shape)}")
    if img.dtype == torch.uint8:
        return img.cpu()
    return (img.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def confidence_threshold(confidence: torch.Tensor, valid: torch.Tensor | None = None, percentile: float = 40.0,
                         minimum: float = 1.05, ceiling_percentile: float = 90.0) -> float:
    """The official adaptive threshold: the ``percentile`` of the confidence (over ``valid`` pixels),
    at least ``minimum`` and at most the ``ceiling_percentile``."""
    values = confidence[valid] if valid is not None and int(valid.sum()) > 10 else confidence.flatten()
    values = values.float()
    lo = float(torch.quantile(_subsample(values), percentile / 100))
    hi = float(torch.quantile(_subsample(values), ceiling_percentile / 100))
    return min(max(minimum, lo), hi)


def _subsample(x: torch.Tensor, limit: int = 1 << 24) -> torch.Tensor:
    """``torch.quantile`` takes at most 2**24 elements: take an evenly spaced subset beyond that."""
    x = x.flatten()
    return x if x.numel() <= limit else x[:: -(-x.numel() // limit)]


def fuse_point_cloud(
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    extrinsics: torch.Tensor,
    images: torch.Tensor | None = None,
    confidence: torch.Tensor | None = None,
    *,
    sky: torch.Tensor | None = None,
    conf_percentile: float = 40.0,
    conf_threshold: float | None = None,
    sky_threshold: float = 0.3,
    max_points: int | None = 1_000_000,
    stride: int = 1,
    seed: int = 0,
) -> PointCloud:
    """All views' pixels as one coloured, confidence-filtered point cloud in the world frame.

    A pixel is kept when its depth is finite and positive, it is not sky (``sky < sky_threshold``),
    and its confidence reaches the threshold: ``conf_threshold`` if given, else the official adaptive
    one (:func:`confidence_threshold` with ``conf_percentile``: the lowest ``conf_percentile`` % of the
    non-sky pixels go). ``stride`` keeps every n-th pixel per axis; beyond ``max_points`` a seeded random
    subset is kept.

    Args:
        depth: ``[N, H, W]`` depth along the optical axis.
        intrinsics: ``[N, 3, 3]`` in pixels of ``depth``.
        extrinsics: ``[N, 3|4, 4]`` world-to-camera.
        images: ``[N, H, W, 3]`` colours (uint8 or float 0..1), or ``None`` for grey.
        confidence: ``[N, H, W]`` (larger = better), or ``None`` to keep every valid pixel.
        sky: ``[N, H, W]`` sky score, or ``None``.

    Returns:
        :class:`PointCloud` (on the CPU).
    """
    depth = _check_depth(depth)
    n, h, w = depth.shape
    _check_intrinsics(intrinsics, n)
    _check_extrinsics(extrinsics, n)
    for name, t in (("confidence", confidence), ("sky", sky)):
        if t is not None and tuple(t.shape) != (n, h, w):
            raise ValueError(f"{name} must match depth {n}×{h}×{w}, got {tuple(t.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    pts = depth_to_points(depth.float(), intrinsics.to(depth.device), extrinsics.to(depth.device)).cpu()
    d = depth.float().cpu()
    valid = torch.isfinite(d) & (d > 0) & torch.isfinite(pts).all(-1)
    if sky is not None:
        valid &= sky.float().cpu() < sky_threshold
    if confidence is not None:
        conf = confidence.float().cpu()
        thr = conf_threshold if conf_threshold is not None else confidence_threshold(conf, valid, conf_percentile)
        valid &= conf >= thr
    colors = _colors_u8(images, (n, h, w))
    if stride > 1:
        sub = torch.zeros_like(valid)
        sub[:, ::stride, ::stride] = True
        valid &= sub
    view = torch.arange(n)[:, None, None].expand(n, h, w)
    cloud = PointCloud(pts[valid].float(), colors[valid], view[valid].clone())
    if max_points is not None and len(cloud) > max_points:
        keep = torch.randperm(len(cloud), generator=torch.Generator().manual_seed(seed))[:max_points].sort().values
        cloud = PointCloud(cloud.points[keep], cloud.colors[keep], cloud.view[keep])
    return cloud


def camera_frusta(intrinsics: torch.Tensor, extrinsics: torch.Tensor, sizes: Sequence[tuple[int, int]] | tuple[int, int],
                  scale: float = 1.0) -> torch.Tensor:
    """Wire-frame pyramids of the cameras: centre -> the four image corners at depth ``scale``.

    Shape: intrinsics ``[N, 3, 3]``, extrinsics ``[N, 3|4, 4]``, ``sizes`` one ``(H, W)`` or one per view ->
    ``[N, 8, 2, 3]`` line segments in world coordinates (4 centre-corner edges, then the image rectangle).
    """
    ext = _check_extrinsics(extrinsics).double()
    n = ext.shape[0]
    k = _check_intrinsics(intrinsics, n).double()
    sizes = [tuple(sizes)] * n if isinstance(sizes, tuple) and isinstance(sizes[0], int) else [tuple(s) for s in sizes]
    corners = torch.tensor([[[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]] for h, w in sizes], dtype=torch.float64)
    rays = corners @ torch.linalg.inv(k).transpose(1, 2)
    plane = camera_to_world(rays / rays[..., 2:] * scale, ext)  # [N, 4, 3]
    centre = camera_centers(ext)[:, None].expand(-1, 4, -1)
    spokes = torch.stack([centre, plane], dim=2)  # [N, 4, 2, 3]
    rim = torch.stack([plane, plane.roll(-1, dims=1)], dim=2)
    return torch.cat([spokes, rim], dim=1).float()


def _camera_colors(n: int) -> np.ndarray:
    """Distinct saturated colours (hue spread over the views), ``[N, 3]`` uint8."""
    import colorsys

    return np.array([[round(c * 255) for c in colorsys.hsv_to_rgb((i + 0.5) / max(n, 1), 0.85, 0.95)] for i in range(n)], dtype=np.uint8)


def scene_extent(points: torch.Tensor, fallback: float = 1.0) -> float:
    """Diagonal of the 5–95 % box of the points (robust scene size), ``fallback`` for < 2 points."""
    if points.shape[0] < 2:
        return fallback
    p = _subsample(points.double(), 1 << 20) if points.shape[0] > 1 << 20 else points.double()
    diag = float((torch.quantile(p, 0.95, dim=0) - torch.quantile(p, 0.05, dim=0)).norm())
    return diag if np.isfinite(diag) and diag > 0 else fallback


# --------------------------------------------------------------------------------------------
# Writers


def write_ply(path: str | os.PathLike, cloud: PointCloud, frusta: torch.Tensor | None = None) -> str:
    """Binary little-endian PLY of the points (``x y z`` float, ``red green blue`` uchar), atomically.

    With ``frusta`` (``[K, 8, 2, 3]`` from :func:`camera_frusta`) the cameras are appended as
    ``5 K`` extra vertices (centre + 4 corners each, coloured per camera) and an ``edge`` element of
    ``8 K`` coloured lines; a ``comment anydepth points M cameras K`` line says which vertices are points.
    """
    pts = cloud.points.detach().cpu().numpy().astype("<f4")
    col = cloud.colors.detach().cpu().numpy().astype(np.uint8)
    m = pts.shape[0]
    k = 0 if frusta is None else frusta.shape[0]
    vert = np.empty(m + 5 * k, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vert["x"][:m], vert["y"][:m], vert["z"][:m] = pts[:, 0], pts[:, 1], pts[:, 2]
    vert["red"][:m], vert["green"][:m], vert["blue"][:m] = col[:, 0], col[:, 1], col[:, 2]
    header = ["ply", "format binary_little_endian 1.0", f"comment anydepth points {m} cameras {k}", f"element vertex {m + 5 * k}",
              "property float x", "property float y", "property float z",
              "property uchar red", "property uchar green", "property uchar blue"]
    edges = None
    if k:
        f = frusta.detach().cpu().double().numpy()
        cam_v = np.concatenate([f[:, :1, 0], f[:, :4, 1]], axis=1).reshape(-1, 3)  # centre + 4 corners per camera
        cam_c = np.repeat(_camera_colors(k), 5, axis=0)
        vert["x"][m:], vert["y"][m:], vert["z"][m:] = cam_v.T.astype("<f4")
        vert["red"][m:], vert["green"][m:], vert["blue"][m:] = cam_c.T
        local = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])
        idx = (m + 5 * np.arange(k)[:, None, None] + local[None]).reshape(-1, 2)
        edges = np.empty(8 * k, dtype=[("vertex1", "<i4"), ("vertex2", "<i4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
        edges["vertex1"], edges["vertex2"] = idx[:, 0], idx[:, 1]
        ec = np.repeat(_camera_colors(k), 8, axis=0)
        edges["red"], edges["green"], edges["blue"] = ec.T
        header += [f"element edge {8 * k}", "property int vertex1", "property int vertex2",
                   "property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")

    def write(fh) -> None:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vert.tobytes())
        if edges is not None:
            fh.write(edges.tobytes())

    return str(atomic_write(path, write))


def glb_alignment(first_extrinsics: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
    """World -> glTF transform used by :func:`write_glb` (as the official GLB export).

    The first camera's frame becomes the viewer frame with glTF axes (x right, y up, z backward:
    OpenCV's y and z flipped), and the median of the points moves to the origin.

    Shape: ``[3|4, 4]`` (and points ``[M, 3]``) -> ``[4, 4]`` float64.
    """
    w2c = to_homogeneous(first_extrinsics.double()[None])[0]
    a = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)) @ w2c
    if points is not None and points.shape[0] > 0:
        p = points.double() @ a[:3, :3].T + a[:3, 3]
        a[:3, 3] -= p.median(dim=0).values
    return a


@dataclass(frozen=True)
class GlbPrimitive:
    """One glTF primitive for :func:`write_glb_scene`.

    Attributes:
        name: the mesh / node name.
        positions: ``[V, 3]`` float vertex positions (already in the frame to write).
        colors: ``[V, 4]`` uint8 RGBA vertex colours (``COLOR_0``, normalised), or ``None``.
        mode: glTF primitive mode: 0 points, 1 lines, 4 triangles.
        indices: ``[F, 3]`` (or flat) vertex indices for indexed triangles, or ``None``.
    """

    name: str
    positions: np.ndarray
    colors: np.ndarray | None
    mode: int
    indices: np.ndarray | None = None


_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_FLOAT, _UNSIGNED_BYTE, _UNSIGNED_INT = 5126, 5121, 5125


def write_glb_scene(path: str | os.PathLike, primitives: Sequence[GlbPrimitive], extras: dict | None = None) -> str:
    """A binary glTF 2.0 file with one mesh and one node per primitive, atomically.

    Positions get ``min`` / ``max`` (required by glTF); colours are normalised ``UNSIGNED_BYTE`` RGBA; triangle
    indices are ``UNSIGNED_INT``. ``extras`` goes to the scene's ``extras``.
    """
    blob = bytearray()
    views, accessors, meshes, nodes = [], [], [], []

    def add(data: np.ndarray, comp: int, typ: str, target: int, *, normalized: bool = False, bounds: bool = False) -> int:
        raw = np.ascontiguousarray(data).tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(raw), "target": target})
        count = int(data.shape[0]) if typ != "SCALAR" else int(data.size)
        acc: dict = {"bufferView": len(views) - 1, "componentType": comp, "count": count, "type": typ}
        if normalized:
            acc["normalized"] = True
        if bounds:
            acc["min"], acc["max"] = data.min(0).astype(float).tolist(), data.max(0).astype(float).tolist()
        accessors.append(acc)
        blob.extend(raw + b"\0" * (-len(raw) % 4))
        return len(accessors) - 1

    for prim in primitives:
        pos = np.asarray(prim.positions, dtype="<f4").reshape(-1, 3)
        if not pos.shape[0]:
            continue  # glTF accessors may not be empty
        entry: dict = {"attributes": {"POSITION": add(pos, _FLOAT, "VEC3", _ARRAY_BUFFER, bounds=True)}, "mode": prim.mode}
        if prim.colors is not None:
            entry["attributes"]["COLOR_0"] = add(np.asarray(prim.colors, dtype=np.uint8), _UNSIGNED_BYTE, "VEC4",
                                                 _ARRAY_BUFFER, normalized=True)
        if prim.indices is not None:
            idx = np.asarray(prim.indices, dtype="<u4").reshape(-1)
            if not idx.size:
                continue
            entry["indices"] = add(idx, _UNSIGNED_INT, "SCALAR", _ELEMENT_ARRAY_BUFFER)
        meshes.append({"name": prim.name, "primitives": [entry]})
        nodes.append({"mesh": len(meshes) - 1, "name": prim.name})
    scene: dict = {"nodes": list(range(len(nodes)))}
    if extras:
        scene["extras"] = extras
    doc = {"asset": {"version": "2.0", "generator": "anydepth"}, "scene": 0, "scenes": [scene], "nodes": nodes,
           "meshes": meshes, "accessors": accessors, "bufferViews": views}
    if blob:
        doc["buffers"] = [{"byteLength": len(blob)}]
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + (8 + len(blob) if blob else 0)

    def write(fh) -> None:
        fh.write(struct.pack("<4sII", b"glTF", 2, total))
        fh.write(struct.pack("<I4s", len(js), b"JSON") + js)
        if blob:
            fh.write(struct.pack("<I4s", len(blob), b"BIN\0") + bytes(blob))

    return str(atomic_write(path, write))


def apply_transform(points: np.ndarray | torch.Tensor, transform: torch.Tensor | None) -> np.ndarray:
    """``[M, 3]`` points through a ``[4, 4]`` (or ``[3, 4]``) transform (float64 maths), as float32 numpy;
    ``None`` leaves them as they are."""
    x = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if transform is None:
        return x.astype("<f4")
    a = transform.double().cpu()
    return (torch.from_numpy(x.astype(np.float64)) @ a[:3, :3].T + a[:3, 3]).numpy().astype("<f4")


def frusta_primitive(frusta: torch.Tensor, transform: torch.Tensor | None = None) -> GlbPrimitive:
    """The camera wire frames of :func:`camera_frusta` as a ``LINES`` primitive, one colour per camera."""
    k = frusta.shape[0]
    seg = frusta.detach().cpu().numpy().reshape(-1, 3)  # 16 vertices per camera, pairs = lines
    rgb = np.repeat(_camera_colors(k), 16, axis=0)
    return GlbPrimitive("cameras", apply_transform(seg, transform),
                        np.concatenate([rgb, np.full((rgb.shape[0], 1), 255, np.uint8)], 1), 1)


def write_glb(
    path: str | os.PathLike,
    cloud: PointCloud,
    frusta: torch.Tensor | None = None,
    *,
    transform: torch.Tensor | None = None,
) -> str:
    """A binary glTF 2.0 scene: the points (``POINTS`` primitive, RGBA colours) and the camera frusta
    (``LINES`` primitive, one colour per camera), atomically.

    ``transform`` (``[4, 4]``, e.g. :func:`glb_alignment`) is applied to every vertex and recorded in the
    scene's ``extras.anydepth_world_to_gltf``; without it the coordinates are written as they are.
    """
    prims: list[GlbPrimitive] = []
    n = len(cloud)
    if n:
        rgba = np.concatenate([cloud.colors.cpu().numpy().astype(np.uint8), np.full((n, 1), 255, np.uint8)], 1)
        prims.append(GlbPrimitive("points", apply_transform(cloud.points, transform), rgba, 0))
    k = 0 if frusta is None else frusta.shape[0]
    if k:
        prims.append(frusta_primitive(frusta, transform))
    extras: dict = {"anydepth_points": n, "anydepth_cameras": int(k)}
    if transform is not None:
        extras["anydepth_world_to_gltf"] = transform.double().tolist()
    return write_glb_scene(path, prims, extras)


def cameras_to_json(extrinsics: torch.Tensor, intrinsics: torch.Tensor, *, names: Sequence[str] | None = None,
                    sizes: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    """One dict per view: ``name``, ``width``, ``height``, ``extrinsics`` (3×4 world-to-camera) and
    ``intrinsics`` (3×3 pixels), as plain lists (JSON-ready)."""
    ext = _check_extrinsics(extrinsics)
    k = _check_intrinsics(intrinsics, ext.shape[0])
    out = []
    for i in range(ext.shape[0]):
        view: dict = {"name": names[i] if names else f"view_{i:04d}"}
        if sizes is not None:
            view["height"], view["width"] = int(sizes[i][0]), int(sizes[i][1])
        view["extrinsics"] = ext[i, :3].double().tolist()
        view["intrinsics"] = k[i].double().tolist()
        out.append(view)
    return out


def write_cameras_json(path: str | os.PathLike, extrinsics: torch.Tensor, intrinsics: torch.Tensor, *,
                       names: Sequence[str] | None = None, sizes: Sequence[tuple[int, int]] | None = None) -> str:
    """``cameras.json``: a list of views (see :func:`cameras_to_json`), written atomically."""
    views = cameras_to_json(extrinsics, intrinsics, names=names, sizes=sizes)
    return str(atomic_write(path, lambda f: f.write(json.dumps(views, indent=1).encode())))


def write_colmap_text(folder: str | os.PathLike, extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                      sizes: Sequence[tuple[int, int]], names: Sequence[str], cloud: PointCloud | None = None) -> str:
    """COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``): one PINHOLE camera per view
    at its image size, the poses (quaternion ``w x y z`` + translation, world-to-camera) and the points.
    Intrinsics are written as given (no half-pixel shift).

    Like the official DA3 export, each point has a track of one element: the view it came from
    (``cloud.view``) and its pixel there, listed in that image's ``POINTS2D`` line (the point projected
    into its own view, which gives back the pixel it was lifted from). A point with no valid view (outside
    ``0..N-1`` or behind its camera) is written without a track.
    """
    ext = _check_extrinsics(extrinsics).double()
    k = _check_intrinsics(intrinsics, ext.shape[0]).double()
    if len(sizes) != ext.shape[0] or len(names) != ext.shape[0]:
        raise ValueError(f"need one size and one name per view ({ext.shape[0]}), got {len(sizes)} and {len(names)}")
    n = ext.shape[0]
    observations = _colmap_observations(ext, k, cloud)
    q = matrix_to_quaternion(ext[:, :3, :3])
    cams = ["# Camera list: CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    imgs = ["# Image list: IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
            "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for i in range(n):
        h, w = sizes[i]
        cams.append(f"{i + 1} PINHOLE {w} {h} {k[i, 0, 0]:.10g} {k[i, 1, 1]:.10g} {k[i, 0, 2]:.10g} {k[i, 1, 2]:.10g}")
        x, y, z, qw = q[i].tolist()
        t = ext[i, :3, 3].tolist()
        imgs += [f"{i + 1} {qw:.12g} {x:.12g} {y:.12g} {z:.12g} {t[0]:.12g} {t[1]:.12g} {t[2]:.12g} {i + 1} {names[i]}",
                 observations.points2d_line(i)]
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, "cameras.txt"), lambda f: f.write(("\n".join(cams) + "\n").encode()))
    atomic_write(os.path.join(folder, "images.txt"), lambda f: f.write(("\n".join(imgs) + "\n").encode()))
    with atomic_open(os.path.join(folder, "points3D.txt")) as f:
        f.write(b"# 3D point list: POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        if cloud is not None and len(cloud):
            p = cloud.points.double().numpy()
            c = cloud.colors.numpy()
            ids = np.arange(1, len(p) + 1)[:, None]
            rows = np.concatenate([ids, p, c, np.zeros((len(p), 1)), observations.track], 1)
            tracked = observations.track[:, 0] > 0
            fmt = ["%d", "%.7g", "%.7g", "%.7g", "%d", "%d", "%d", "%.1f"]
            np.savetxt(f, rows[tracked], fmt=fmt + ["%d", "%d"])  # IDs are explicit: the order of lines is free
            np.savetxt(f, rows[~tracked, :8], fmt=fmt)
    return folder


@dataclass
class _ColmapObservations:
    """Each point's one observation: ``track`` ``[M, 2]`` (image id, index in that image's POINTS2D; ``0, 0`` for
    none) and per image the ``(x, y, point3D id)`` rows in index order."""

    track: np.ndarray
    per_image: list[np.ndarray]

    def points2d_line(self, image: int) -> str:
        return " ".join(f"{x:.6f} {y:.6f} {int(pid)}" for x, y, pid in self.per_image[image])


def _colmap_observations(ext: torch.Tensor, k: torch.Tensor, cloud: PointCloud | None) -> _ColmapObservations:
    n = ext.shape[0]
    if cloud is None or not len(cloud):
        return _ColmapObservations(np.zeros((0, 2), dtype=np.int64), [np.zeros((0, 3))] * n)
    view = cloud.view.long()
    ok = (view >= 0) & (view < n)
    v = view.clamp(0, n - 1)
    cam = (ext[v, :3, :3] @ cloud.points.double()[..., None])[..., 0] + ext[v, :3, 3]  # each point in its own view
    ok &= cam[:, 2] > 0
    pix = (k[v] @ cam[..., None])[..., 0]
    uv = (pix[:, :2] / pix[:, 2:].clamp_min(1e-12)).numpy()
    ok_np, v_np = ok.numpy(), v.numpy()
    track = np.zeros((len(cloud), 2), dtype=np.int64)
    per_image = []
    for i in range(n):  # a loop over views, not points: each view's points are one vectorised slice
        members = np.flatnonzero(ok_np & (v_np == i))
        track[members, 0] = i + 1
        track[members, 1] = np.arange(len(members))
        per_image.append(np.concatenate([uv[members], members[:, None] + 1.0], 1))
    return _ColmapObservations(track, per_image)
