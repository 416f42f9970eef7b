"""Cameras from the Depth Anything 3 ray map: the official ``use_ray_pose`` (ComfyUI core's ``ray_pose``).

The DualDPT head's ray branch predicts, at 8× the patch grid, a world-space ray per pixel: a direction
(3) and the camera centre it starts from (3), plus a confidence. The official code turns a view's rays
into a camera in four steps, reproduced here on batched tensors:

1. every ray direction ``d`` is divided by its ``z`` (where ``|z| > 1e-4``; other pixels get weight 0) and
   paired with its pixel on a normalised grid (pixel centres in ``[-1, 1]``);
2. a homography ``H`` (``d ≈ H [x, y, 1]``) is fitted by confidence-weighted RANSAC: 100 samples of 8
   points, each drawn from the 30 % most confident pixels, a weighted DLT per sample, inliers within 0.2,
   the sample with the largest inlier weight wins; then a weighted DLT on its inliers (at most 8000, a
   random subset of the 95 % most confident when there are more);
3. ``H`` (sign fixed to a positive determinant) is split by a QL decomposition into a rotation and a
   lower-triangular matrix whose diagonal and last row give the focal lengths and principal point;
4. the camera centre is the confidence-weighted mean of the ray origins.

Random draws: like the official code, 100 × ``randperm`` of the candidate count (and one ``randperm`` per
view whose inliers exceed 8000) from ``generator`` or, when ``None``, torch's global generator on the
rays' device — with the same seed the official package draws the same samples (checked on CPU).
"""

from __future__ import annotations

import torch

from ..cameras import invert_rigid

#: RANSAC constants of the official ray-pose solver.
RANSAC_ITERATIONS = 100
RANSAC_SAMPLE = 8
RANSAC_CANDIDATES = 0.3
RANSAC_THRESHOLD = 0.2
REFIT_MAX_POINTS = 8000
REFIT_KEEP = 0.95
Z_EPS = 1e-4

__all__ = ["homographies_dlt", "ql_decompose", "rays_to_cameras", "rays_to_pinhole"]


def _grid(h: int, w: int, device) -> torch.Tensor:
    """Normalised pixel centres ``[h*w, 2]`` (x, y) in ``(-1, 1)``, float32, row-major."""
    xs = torch.linspace(1 / w, 2 - 1 / w, w, dtype=torch.float32, device=device) - 1
    ys = torch.linspace(1 / h, 2 - 1 / h, h, dtype=torch.float32, device=device) - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


def homographies_dlt(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted direct linear transform: ``H`` with ``dst ≈ H [src, 1]`` (up to scale), normalised to ``H[2, 2] = 1``.

    Each correspondence adds two rows scaled by ``√weight``; ``H`` is the right singular vector of the
    smallest singular value.

    Shape: src, dst ``[..., K, 2]``, weight ``[..., K]`` (K ≥ 4) -> ``[..., 3, 3]``.
    """
    s = weight.sqrt()[..., None]
    x, y = src[..., :1], src[..., 1:]
    u, v = dst[..., :1], dst[..., 1:]
    zero = torch.zeros_like(x)
    rows_u = torch.cat([-x * s, -y * s, -s, zero, zero, zero, x * u * s, y * u * s, u * s], -1)
    rows_v = torch.cat([zero, zero, zero, -x * s, -y * s, -s, x * v * s, y * v * s, v * s], -1)
    a = torch.cat([rows_u, rows_v], -2)  # [..., 2K, 9]
    vh = torch.linalg.svd(a, full_matrices=False).Vh
    h = vh[..., -1, :].reshape(vh.shape[:-2] + (3, 3))
    return h / h[..., 2:, 2:]


def ql_decompose(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a = Q L`` with ``Q`` orthogonal and ``L`` lower triangular with a positive diagonal.

    Computed from the QR decomposition of ``a`` with its columns reversed.

    Shape: ``[..., 3, 3]`` -> ``Q``, ``L`` ``[..., 3, 3]``.
    """
    rev = torch.flip(torch.eye(3, dtype=a.dtype, device=a.device), [0])  # the exchange matrix (its own inverse)
    q, r = torch.linalg.qr(a @ rev)
    q, low = q @ rev, rev @ r @ rev
    sign = torch.sign(torch.diagonal(low, dim1=-2, dim2=-1))
    return q * sign[..., None, :], low * sign[..., :, None]


def _draw(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """One ``randperm(n)``: from ``generator`` (then moved to ``device``) or torch's global one on ``device``."""
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _best_hypotheses(src, dst, weight, samples: torch.Tensor, n_candidates: int) -> torch.Tensor:
    """Inlier masks ``[M, N]`` of each view's best RANSAC sample (largest inlier weight; first on ties).

    ``samples`` ``[iterations, 8]`` index each view's ``n_candidates`` most confident pixels."""
    candidates = torch.argsort(weight, dim=1, descending=True)[:, :n_candidates]
    best = []
    src_h = torch.cat([src, torch.ones_like(src[:, :1])], -1)  # [N, 3]
    for i in range(weight.shape[0]):  # one view at a time: the projection of all N pixels is [iterations, N, 3]
        pick = candidates[i][samples]  # [iterations, 8]
        h = homographies_dlt(src[pick], dst[i][pick], weight[i][pick])
        proj = src_h @ h.transpose(-1, -2)  # [iterations, N, 3]
        err = ((proj[..., :2] / proj[..., 2:] - dst[i]) ** 2).sum(-1).sqrt()
        inliers = err < RANSAC_THRESHOLD
        score = (inliers * weight[i]).sum(-1)
        best.append(inliers[torch.argmax(score)])
    return torch.stack(best)


def rays_to_pinhole(rays: torch.Tensor, confidence: torch.Tensor | None = None, *,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotation, centre, focal lengths and principal point per view from its ray map (official solver).

    Focal lengths and principal point are in units of the normalised image (width and height 2).

    Args:
        rays: ``[..., h, w, 6]``: world ray direction (3) and origin (3) per pixel.
        confidence: ``[..., h, w]`` ray confidence (``None``: all 1).
        generator: source of the RANSAC samples (``None``: torch's global generator).

    Returns:
        camera-to-world rotation ``[..., 3, 3]``, camera centre ``[..., 3]``, focal ``[..., 2]`` (x, y),
        principal point ``[..., 2]`` (x, y).
    """
    if rays.ndim < 3 or rays.shape[-1] != 6:
        raise ValueError(f"rays must be [..., h, w, 6] (direction and origin per pixel), got {tuple(rays.shape)}")
    lead, (h, w) = rays.shape[:-3], rays.shape[-3:-1]
    rays = rays.float().reshape(-1, h * w, 6)
    weight = (torch.ones(rays.shape[:2], device=rays.device) if confidence is None
              else confidence.float().reshape(-1, h * w).clone())
    n = h * w
    if n < RANSAC_SAMPLE:
        raise ValueError(f"a ray map of {h}×{w} pixels is too small for the ray-pose solver (at least {RANSAC_SAMPLE})")
    src = _grid(h, w, rays.device)
    direction = rays[..., :3]
    z = direction[..., 2]
    valid = z.abs() > Z_EPS
    dst = torch.where(valid[..., None], direction[..., :2] / torch.where(valid, z, torch.ones_like(z))[..., None],
                      direction[..., :2])
    weight[~valid] = 0  # rays parallel to the image plane carry no information (also for the centre below)

    n_candidates = max(RANSAC_SAMPLE, int(n * RANSAC_CANDIDATES))
    samples = torch.stack([_draw(n_candidates, generator, rays.device)[:RANSAC_SAMPLE] for _ in range(RANSAC_ITERATIONS)])
    inliers = _best_hypotheses(src, dst, weight, samples, n_candidates)

    hs = []
    for i in range(rays.shape[0]):  # refit on each view's inliers (their count differs per view)
        idx = inliers[i].nonzero()[:, 0]
        idx = idx[torch.argsort(weight[i][idx], descending=True)]
        if idx.numel() > REFIT_MAX_POINTS:  # a random subset of the most confident inliers
            idx = idx[: max(int(idx.numel() * REFIT_KEEP), REFIT_MAX_POINTS)]
            idx = idx[_draw(idx.numel(), generator, rays.device)[:REFIT_MAX_POINTS]]
        if idx.numel() < 4:  # (the official code fails here) fall back to every usable pixel
            idx = weight[i].nonzero()[:, 0]
        if idx.numel() < 4:
            raise ValueError("the ray map has fewer than 4 usable rays (all parallel to the image plane or zero confidence); "
                             "use pose_method='cam_dec'")
        hs.append(homographies_dlt(src[idx], dst[i][idx], weight[i][idx]))
    hom = torch.stack(hs)
    hom = torch.where((torch.linalg.det(hom) < 0)[:, None, None], -hom, hom)
    rot, low = ql_decompose(hom)
    low = low / low[:, 2:, 2:]
    focal = 1.0 / torch.stack([low[:, 0, 0], low[:, 1, 1]], -1)
    principal = torch.stack([low[:, 2, 0], low[:, 2, 1]], -1) + 1.0
    centre = (rays[..., 3:] * weight[..., None]).sum(1) / weight.sum(-1, keepdim=True)
    return rot.reshape(lead + (3, 3)), centre.reshape(lead + (3,)), focal.reshape(lead + (2,)), principal.reshape(lead + (2,))


def rays_to_cameras(rays: torch.Tensor, confidence: torch.Tensor | None, size: tuple[int, int], *,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera extrinsics and pixel intrinsics from ray maps, as the official ``use_ray_pose``.

    Args:
        rays, confidence: see :func:`rays_to_pinhole`.
        size: ``(H, W)`` of the network input, the pixels the intrinsics are given in.
        generator: source of the RANSAC samples (``None``: torch's global generator).

    Returns:
        extrinsics ``[..., 3, 4]`` (world-to-camera) and intrinsics ``[..., 3, 3]``, float32.

    Example:
        >>> ys, xs = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
        >>> rays = torch.zeros(1, 16, 16, 6)  # a camera at (0, 0, -2) looking along +z, focal half the image width
        >>> rays[..., 0], rays[..., 1], rays[..., 2], rays[..., 5] = xs / 8 - 1, ys / 8 - 1, 1.0, -2.0
        >>> ext, k = rays_to_cameras(rays, None, (32, 32), generator=torch.Generator().manual_seed(0))
        >>> k[0].round(decimals=3), ext[0, :, 3].round(decimals=3).abs()
        (tensor([[16.,  0., 16.],
                [ 0., 16., 16.],
                [ 0.,  0.,  1.]]), tensor([0., 0., 2.]))
    """
    rot, centre, focal, principal = rays_to_pinhole(rays, confidence, generator=generator)
    h, w = size
    c2w = torch.cat([rot, centre[..., None]], -1)
    k = torch.zeros(rot.shape[:-2] + (3, 3), dtype=torch.float32, device=rot.device)
    k[..., 0, 0], k[..., 1, 1] = focal[..., 0] / 2 * w, focal[..., 1] / 2 * h
    k[..., 0, 2], k[..., 1, 2], k[..., 2, 2] = principal[..., 0] * w * 0.5, principal[..., 1] * h * 0.5, 1.0
    return invert_rigid(c2w), k
