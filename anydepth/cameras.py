"""Camera helpers, written once: rigid inverse, camera centres, homogeneous 4×4, quaternions.

The Depth Anything 3 network (:mod:`anydepth.models.da3`), the any-view estimator
(:mod:`anydepth.anyview`) and the 3D exports (:mod:`anydepth.geometry`) all use these functions.

Conventions (Depth Anything 3 / OpenCV): extrinsics are world-to-camera ``[R | t]`` with
``X_cam = R · X_world + t``, so the camera centre is ``-Rᵀ t``; quaternions are ``(x, y, z, w)``.
Every function is batched over leading dimensions and keeps the input's dtype and device.
"""

from __future__ import annotations

import torch

__all__ = [
    "camera_centers",
    "invert_rigid",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "to_homogeneous",
]


def _check_rigid(m: torch.Tensor, name: str) -> None:
    if not isinstance(m, torch.Tensor) or m.ndim < 2 or tuple(m.shape[-2:]) not in ((3, 4), (4, 4)):
        shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
        raise ValueError(f"{name} must be a tensor of [..., 3, 4] or [..., 4, 4] rigid transforms [R | t], got {shape}")


def to_homogeneous(m: torch.Tensor) -> torch.Tensor:
    """Rigid transforms as 4×4 matrices: the top three rows of ``m`` over the row ``(0, 0, 0, 1)``.

    Always a new tensor (the input is not modified).

    Shape: ``[..., 3, 4]`` or ``[..., 4, 4]`` -> ``[..., 4, 4]``.

    Example:
        >>> to_homogeneous(torch.tensor([[1.0, 0, 0, 2], [0, 1, 0, 3], [0, 0, 1, 4]]))
        tensor([[1., 0., 0., 2.],
                [0., 1., 0., 3.],
                [0., 0., 1., 4.],
                [0., 0., 0., 1.]])
    """
    _check_rigid(m, "to_homogeneous input")
    out = torch.zeros(m.shape[:-2] + (4, 4), dtype=m.dtype, device=m.device)
    out[..., :3, :] = m[..., :3, :]
    out[..., 3, 3] = 1
    return out


def invert_rigid(m: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms: ``[R | t]`` -> ``[Rᵀ | -Rᵀ t]`` (world-to-camera <-> camera-to-world).

    Exact for rotations (a transpose, no matrix inverse); a ``4×4`` input keeps its bottom row.

    Shape: ``[..., 3, 4]`` or ``[..., 4, 4]`` -> same shape.

    Example:
        >>> rz = torch.tensor([[0.0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3]])  # 90° about z, then (1, 2, 3)
        >>> invert_rigid(rz)
        tensor([[ 0.,  1.,  0., -2.],
                [-1.,  0.,  0.,  1.],
                [ 0.,  0.,  1., -3.]])
    """
    _check_rigid(m, "invert_rigid input")
    r, t = m[..., :3, :3], m[..., :3, 3:]
    rt = r.transpose(-1, -2)
    out = torch.cat([rt, -rt @ t], dim=-1)
    return torch.cat([out, m[..., 3:, :]], dim=-2) if m.shape[-2] == 4 else out


def camera_centers(extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera centres in world coordinates, ``-Rᵀ t``, of world-to-camera extrinsics.

    Shape: ``[..., 3, 4]`` or ``[..., 4, 4]`` -> ``[..., 3]``.

    Example:
        >>> camera_centers(torch.tensor([[[1.0, 0, 0, -1], [0, 1, 0, -2], [0, 0, 1, 3]]]))
        tensor([[ 1.,  2., -3.]])
    """
    _check_rigid(extrinsics, "extrinsics")
    return invert_rigid(extrinsics[..., :3, :])[..., 3]


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions in ``(x, y, z, w)`` order (need not be unit length).

    Shape: ``[..., 4]`` -> ``[..., 3, 3]``.

    Example:
        >>> import math
        >>> half = math.pi / 4  # 90° about z
        >>> quaternion_to_matrix(torch.tensor([0.0, 0.0, math.sin(half), math.cos(half)])).round(decimals=6)
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.],
                [ 0.,  0.,  1.]])
    """
    if not isinstance(q, torch.Tensor) or q.ndim < 1 or q.shape[-1] != 4:
        shape = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"quaternions must be a tensor [..., 4] in (x, y, z, w) order, got {shape}")
    i, j, k, r = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    m = torch.stack(
        (
            1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
            two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
            two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(x, y, z, w)`` with ``w >= 0`` from rotation matrices.

    Uses the best-conditioned of the four closed-form candidates (largest diagonal term), so it is
    accurate near 180° rotations too.

    Shape: ``[..., 3, 3]`` -> ``[..., 4]``.

    Example:
        >>> matrix_to_quaternion(torch.eye(3))
        tensor([0., 0., 0., 1.])
    """
    if not isinstance(m, torch.Tensor) or m.ndim < 2 or tuple(m.shape[-2:]) != (3, 3):
        shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
        raise ValueError(f"rotation matrices must be a tensor [..., 3, 3], got {shape}")
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.reshape(m.shape[:-2] + (9,)).unbind(-1)
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    q_abs = diag.clamp_min(0).sqrt()
    # Row c: the quaternion (w, x, y, z) times 2 * q_abs[c].
    cand = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ],
        -2,
    ) / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(-1)[..., None, None].expand(q_abs.shape[:-1] + (1, 4))
    wxyz = cand.gather(-2, best).squeeze(-2)
    xyzw = wxyz[..., [1, 2, 3, 0]]
    return torch.where(xyzw[..., 3:] < 0, -xyzw, xyzw)
