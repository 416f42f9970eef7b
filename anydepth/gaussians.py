"""3D Gaussian splats from Depth Anything 3's Gaussian head, and the standard 3DGS PLY file.

DA3-GIANT (and the nested GIANT model) carries a Gaussian-splatting head: per pixel of every view it
predicts 37 raw numbers and a density (:class:`~anydepth.models.da3.GaussianHead`). The official
``GaussianAdapter`` (settings of the ``da3-giant`` preset: SH degree 2, xy and depth offsets, scales in
``[1e-5, 30]``) turns them into world-space Gaussians, one per pixel; :func:`gaussians_from_raw` does the same:

* centre: the pixel centre moved by the xy offset (in pixels), cast as a unit-length ray through the
  camera and taken ``depth + depth offset`` along it (note: along the ray, not along the optical axis);
* scale: ``1e-5 + (30 - 1e-5) · sigmoid(raw)`` times that distance times ``0.1 · (1/fx + 1/fy)``
  (``fx, fy`` in pixels): about a tenth of the pixel footprint for raw 0;
* rotation: the raw quaternion, normalised, composed with the camera's rotation (the official component
  order is kept, so the stored 4-vector is the one its renderer, and 3DGS PLY readers, take as ``w x y z``);
* colour: spherical-harmonic coefficients (degree 2), the higher bands damped (× 0.025, × 0.00625) and
  rotated from the camera frame to the world frame (:func:`rotate_sh`);
* opacity: the density.

:func:`select_gaussians` applies the official export filters (border trim, per-view depth percentile, every
N-th view) and :func:`write_gaussian_ply` writes the PLY layout that splat viewers and trainers read
(``x y z nx ny nz f_dc_0..2 [f_rest_*] opacity scale_0..2 rot_0..3``, opacity as a logit, scales as logs).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .cameras import invert_rigid, matrix_to_quaternion, quaternion_to_matrix, to_homogeneous
from .io import atomic_write
from .models.da3 import quantile

#: The official GaussianAdapter settings of DA3-GIANT.
SH_DEGREE = 2
SCALE_MIN, SCALE_MAX = 1e-5, 30.0
SCALE_MULTIPLIER = 0.1
#: Official export defaults (``export_to_gs_ply``).
BORDER_TRIM = 8 / 256
DEPTH_QUANTILE = 0.9

__all__ = [
    "Gaussians",
    "gaussians_from_raw",
    "rotate_sh",
    "save_gaussian_ply",
    "select_gaussians",
    "sh_basis",
    "write_gaussian_ply",
]


@dataclass
class Gaussians:
    """3D Gaussians: one per pixel of each view (leading dims ``[V, H, W]``) or a flat list (``[N]``).

    Attributes:
        means: ``[..., 3]`` centres (world frame).
        scales: ``[..., 3]`` standard deviations along the Gaussian's axes (world units, not logs).
        rotations: ``[..., 4]`` quaternions in the order 3DGS files and renderers read them (``w x y z``).
        harmonics: ``[..., 3, K]`` colour spherical harmonics per RGB channel, ``K = (degree + 1)²``, in the
            3DGS basis (degree 0 first).
        opacities: ``[...]`` in 0..1.
    """

    means: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor
    harmonics: torch.Tensor
    opacities: torch.Tensor

    def __len__(self) -> int:
        return self.opacities.numel()

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.harmonics.shape[-1]) - 1

    def flatten(self) -> Gaussians:
        """All Gaussians as a flat list (``[N, ...]``)."""
        lead = self.opacities.ndim
        return Gaussians(*(getattr(self, f.name).flatten(0, lead - 1) if lead else getattr(self, f.name)[None]
                           for f in fields(self)))

    def masked(self, mask: torch.Tensor) -> Gaussians:
        """The Gaussians where ``mask`` (shaped like :attr:`opacities`) is true, as a flat list."""
        return Gaussians(*(getattr(self, f.name)[mask] for f in fields(self)))

    def transformed(self, scale: float = 1.0, rotation: torch.Tensor | None = None,
                    translation: torch.Tensor | None = None) -> Gaussians:
        """The Gaussians under ``x -> scale · rotation · x + translation`` (a similarity transform of the world).

        Centres and scales follow, orientations and colour harmonics are rotated. Returns a new object.
        """
        r = torch.eye(3, dtype=torch.float64) if rotation is None else rotation.double().cpu()
        t = torch.zeros(3, dtype=torch.float64) if translation is None else translation.double().cpu()
        dev, dt = self.means.device, self.means.dtype
        means = (self.means.double() @ (scale * r).to(dev).T + t.to(dev)).to(dt)
        if rotation is None:
            return replace(self, means=means, scales=self.scales * scale)
        actual = quaternion_to_matrix(self.rotations.double()[..., [1, 2, 3, 0]])  # w x y z -> x y z w
        q = matrix_to_quaternion(r.to(dev) @ actual)[..., [3, 0, 1, 2]]
        q = torch.where(q[..., 3:] < 0, -q, q).to(dt)  # the sign the official adapter stores (last component ≥ 0)
        return replace(self, means=means, scales=self.scales * scale, rotations=q, harmonics=rotate_sh(self.harmonics, r))


# --------------------------------------------------------------------------------------------
# Spherical harmonics (the 3DGS real basis and its rotation)

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
       1.445305721320277, -0.5900435899266435)


def sh_basis(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """The real spherical harmonics 3DGS evaluates colours with, up to ``degree`` (≤ 3), at unit ``directions``.

    Shape: ``[..., 3]`` -> ``[..., (degree + 1)²]``.

    Example:
        >>> sh_basis(torch.tensor([0.0, 0.0, 1.0]), 1).abs()  # straight ahead: only the constant and the z term
        tensor([0.2821, 0.0000, 0.4886, 0.0000])
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"spherical-harmonic degree must be 0..3, got {degree}")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, _C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [_C2[0] * x * y, _C2[1] * y * z, _C2[2] * (2 * zz - xx - yy), _C2[3] * x * z, _C2[4] * (xx - yy)]
    if degree >= 3:
        out += [_C3[0] * y * (3 * xx - yy), _C3[1] * x * y * z, _C3[2] * y * (4 * zz - xx - yy),
                _C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _C3[4] * x * (4 * zz - xx - yy), _C3[5] * z * (xx - yy),
                _C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def _sphere_samples(n: int = 64) -> torch.Tensor:
    """``n`` well-spread unit directions (a Fibonacci sphere), float64."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = (1 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], -1)


def rotate_sh(coefficients: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Spherical-harmonic coefficients of a colour function rotated by ``rotation``: ``f'(d) = f(Rᵀ d)``.

    Each band ``l`` mixes only within itself; its ``(2l+1)²`` matrix is solved exactly from the basis at
    a spread of directions (any real basis convention; here the 3DGS one of :func:`sh_basis`).

    Shape: coefficients ``[..., K]`` (``K = (degree + 1)²``), rotation ``[..., 3, 3]`` broadcast against
    the leading dims -> ``[..., K]``.
    """
    k = coefficients.shape[-1]
    degree = math.isqrt(k) - 1
    if (degree + 1) ** 2 != k:
        raise ValueError(f"coefficients must hold (degree + 1)² values per channel, got {k}")
    if degree == 0:
        return coefficients.clone()
    dirs = _sphere_samples()
    rot = rotation.double().to("cpu")
    basis = sh_basis(dirs, degree)  # [n, K]
    rotated = sh_basis(dirs @ rot, degree)  # [..., n, K]: the basis at Rᵀ d
    mix = torch.zeros(rot.shape[:-2] + (k, k), dtype=torch.float64)
    mix[..., 0, 0] = 1.0  # the constant band does not turn
    for band in range(1, degree + 1):
        cols = slice(band * band, (band + 1) ** 2)
        mix[..., cols, cols] = torch.linalg.pinv(basis[:, cols]) @ rotated[..., :, cols]
    mix = mix.to(device=coefficients.device, dtype=coefficients.dtype)
    return (mix @ coefficients[..., None])[..., 0]


# --------------------------------------------------------------------------------------------
# The official GaussianAdapter


def _pdf_to_opacity(density: torch.Tensor) -> torch.Tensor:
    """The official density -> opacity mapping at its inference setting (exponent 1: the identity)."""
    return 0.5 * (1 - (1 - density) + density)


def gaussians_from_raw(raw: torch.Tensor, density: torch.Tensor, depth: torch.Tensor, extrinsics: torch.Tensor,
                       intrinsics: torch.Tensor, *, sh_degree: int = SH_DEGREE) -> Gaussians:
    """World-space Gaussians from the Gaussian head's output (the official ``GaussianAdapter``; see the module doc).

    Args:
        raw: ``[V, H, W, C]`` raw parameters: xy offset 2, scale 3, rotation 4, SH ``3 (degree + 1)²``, depth offset 1.
        density: ``[V, H, W]`` the head's density (sigmoid).
        depth: ``[V, H, W]`` the predicted depth the centres start from.
        extrinsics: ``[V, 3|4, 4]`` world-to-camera; intrinsics ``[V, 3, 3]`` in pixels of ``H × W``.
        sh_degree: colour SH degree the head predicts (2 for DA3-GIANT).

    Returns:
        :class:`Gaussians` with leading dims ``[V, H, W]`` (float32).
    """
    v, h, w, c = raw.shape
    d_sh = (sh_degree + 1) ** 2
    if c != 2 + 3 + 4 + 3 * d_sh + 1:
        raise ValueError(f"raw Gaussians must have {2 + 3 + 4 + 3 * d_sh + 1} channels for SH degree {sh_degree}, got {c}")
    if depth.shape != (v, h, w) or density.shape != (v, h, w):
        raise ValueError(f"depth and density must be [{v}, {h}, {w}] like raw, got {tuple(depth.shape)} and {tuple(density.shape)}")
    raw, depth, density = raw.float(), depth.float(), density.float()
    c2w = invert_rigid(to_homogeneous(extrinsics.float()))
    k_norm = intrinsics.float().clone()
    k_norm[:, 0] /= w
    k_norm[:, 1] /= h
    dist = depth + raw[..., -1]  # [V, H, W]
    offset_xy, scales, quat, sh = raw[..., :-1].split((2, 3, 4, 3 * d_sh), dim=-1)

    ys, xs = torch.meshgrid(torch.arange(h, device=raw.device), torch.arange(w, device=raw.device), indexing="ij")
    pixel = 1 / torch.tensor((w, h), dtype=torch.float32, device=raw.device)
    xy = (torch.stack([xs, ys], -1) + 0.5) * pixel + offset_xy * pixel  # [V, H, W, 2] in 0..1
    cam = torch.einsum("vij,vhwj->vhwi", torch.linalg.inv(k_norm), torch.cat([xy, torch.ones_like(xy[..., :1])], -1))
    cam = cam / cam.norm(dim=-1, keepdim=True)
    world_dir = torch.einsum("vij,vhwj->vhwi", c2w[:, :3, :3], cam)
    means = c2w[:, None, None, :3, 3] + world_dir * dist[..., None]

    multiplier = SCALE_MULTIPLIER * (torch.linalg.inv(k_norm[:, :2, :2]) @ pixel).sum(-1)  # 0.1 (1/fx + 1/fy)
    scales = (SCALE_MIN + (SCALE_MAX - SCALE_MIN) * scales.sigmoid()) * dist[..., None] * multiplier[:, None, None, None]

    quat = quat / (quat.norm(dim=-1, keepdim=True) + 1e-8)
    # The official adapter reads its raw (x, y, z, w) as (w, x, y, z) in an (x, y, z, w) routine and stores the
    # composed rotation (x, y, z, w) as the renderer's (w, x, y, z): the same component shuffles, kept as trained.
    local = quaternion_to_matrix(quat[..., [3, 0, 1, 2]])
    rotations = matrix_to_quaternion(c2w[:, None, None, :3, :3] @ local)

    mask = torch.cat([torch.full((2 * b + 1,), 0.1 * 0.25**b if b else 1.0) for b in range(sh_degree + 1)]).to(raw.device)
    harmonics = sh.reshape(v, h, w, 3, d_sh) * mask
    harmonics = rotate_sh(harmonics, c2w[:, None, None, None, :3, :3])
    return Gaussians(means, scales, rotations, harmonics, _pdf_to_opacity(density))


# --------------------------------------------------------------------------------------------
# Export


def select_gaussians(gaussians: Gaussians, depth: torch.Tensor | None = None, *, trim_border: float = BORDER_TRIM,
                     depth_quantile: float | None = DEPTH_QUANTILE, views_every: int = 1) -> Gaussians:
    """The official export filters on per-pixel Gaussians (``[V, H, W]``); returns a flat list.

    Args:
        gaussians: from :func:`gaussians_from_raw`.
        depth: ``[V, H, W]`` depth for the depth filter (the official export uses the returned depth maps).
        trim_border: drop ``int(trim_border · H)`` rows and ``int(trim_border · W)`` columns at each border
            (official 8/256; ``0`` keeps all. A trim that rounds to 0 keeps everything, where the official
            code would drop every Gaussian).
        depth_quantile: keep pixels whose depth is at most this per-view quantile (official 0.9); ``None`` or
            ``1`` keeps all.
        views_every: keep every N-th view (official ``gs_views_interval``).
    """
    if gaussians.opacities.ndim != 3:
        raise ValueError(f"select_gaussians needs per-pixel Gaussians [V, H, W], got leading shape {tuple(gaussians.opacities.shape)}")
    if not isinstance(views_every, int) or views_every < 1:
        raise ValueError(f"views_every must be a positive integer, got {views_every!r}")
    if not 0 <= trim_border < 0.5:
        raise ValueError(f"trim_border must be in [0, 0.5), got {trim_border}")
    v, h, w = gaussians.opacities.shape
    keep = torch.ones(v, h, w, dtype=torch.bool, device=gaussians.opacities.device)
    th, tw = int(trim_border * h), int(trim_border * w)
    if th:
        keep[:, :th], keep[:, h - th:] = False, False
    if tw:
        keep[:, :, :tw], keep[:, :, w - tw:] = False, False
    if depth_quantile is not None and depth_quantile < 1:
        if depth is None or depth.shape != (v, h, w):
            raise ValueError(f"the depth filter needs depth [{v}, {h}, {w}], got {None if depth is None else tuple(depth.shape)}")
        d = depth.float().to(keep.device)
        limit = torch.stack([quantile(d[i], depth_quantile) for i in range(v)])  # exact, any size
        keep &= d <= limit[:, None, None]
    chosen = torch.zeros_like(keep)
    chosen[::views_every] = True
    return gaussians.masked(keep & chosen)


def write_gaussian_ply(path: str | os.PathLike, gaussians: Gaussians, *, sh_dc_only: bool = True) -> str:
    """Binary little-endian 3DGS PLY: ``x y z nx ny nz f_dc_0..2 [f_rest_*] opacity scale_0..2 rot_0..3``.

    Every property is a float; normals are 0; opacity is stored as a logit and scales as logs (what 3DGS
    trainers and splat viewers expect). ``f_rest`` (the higher SH bands, channel-major) is written unless
    ``sh_dc_only`` (the official default). Written atomically.
    """
    g = gaussians.flatten()
    n = len(g)
    sh = g.harmonics.detach().float().cpu()
    rest = 0 if sh_dc_only else sh.shape[-1] - 1
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(3 * rest)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    opacity = g.opacities.detach().double().cpu().clamp(1e-12, 1 - 1e-7)
    columns = [g.means.detach().float().cpu(), torch.zeros(n, 3), sh[:, :, 0]]
    if rest:
        columns.append(sh[:, :, 1:].flatten(1))
    columns += [torch.log(opacity / (1 - opacity)).float()[:, None], g.scales.detach().float().cpu().log(),
                g.rotations.detach().float().cpu()]
    table = torch.cat(columns, 1).numpy().astype("<f4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}", *(f"property float {p}" for p in names),
              "end_header"]

    def write(fh) -> None:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(np.ascontiguousarray(table).tobytes())

    return str(atomic_write(path, write))


def save_gaussian_ply(path: str | os.PathLike, gaussians: Gaussians, depth: torch.Tensor | None = None, *,
                      trim_border: float = BORDER_TRIM, depth_quantile: float | None = DEPTH_QUANTILE, views_every: int = 1,
                      sh_dc_only: bool = True) -> int:
    """:func:`select_gaussians` then :func:`write_gaussian_ply` (the official ``gs_ply`` export); returns the count."""
    chosen = select_gaussians(gaussians, depth, trim_border=trim_border, depth_quantile=depth_quantile, views_every=views_every)
    write_gaussian_ply(path, chosen, sh_dc_only=sh_dc_only)
    return len(chosen)
