"""Depth Anything 3 inference: depth, confidence and cameras for any number of views.

:class:`AnyViewEstimator` runs the DA3 networks the way the official ``DepthAnything3.inference``
does, on batched tensors:

1. every view is resized like the official ``InputProcessor`` ("upper_bound_resize" to ``process_res``
   = 504: the longer side becomes 504, then each side goes to the nearest multiple of 14; OpenCV's
   INTER_CUBIC when enlarging, INTER_AREA when shrinking, reproduced in torch) and ImageNet-normalised;
2. known cameras (optional) are normalised (first camera = world, median camera distance = 1) and
   fed to the camera encoder;
3. the network sees all views of the scene at once (any-view and nested models) or each view alone
   (mono / metric models); with ≥ 3 views and no known poses it picks a reference view itself;
   Views whose network sizes differ are centre-cropped to the smallest height and width, as the official
   preprocessing does (the pixels outside a crop were not seen: their depth repeats the crop's edge);
4. outputs: mono / metric sky pixels get the 99th percentile depth of their view; DA3METRIC becomes
   metres with the focal length (``depth × focal / 300``) when intrinsics are known; with known poses the
   depth is rescaled to their units (a similarity between predicted and given camera centres: Umeyama, or
   RANSAC over Umeyama fits from 10 views on, as :func:`align_poses` does) and the given cameras are returned;
5. depth and confidence are resized back to each input's size, and intrinsics rescaled with them.

Cameras come from the camera decoder or, with ``pose_method="ray_pose"``, from the ray branch (the
official ``use_ray_pose``); GIANT files can also return 3D Gaussians (``gaussians=True``, see
:mod:`anydepth.gaussians`).

Memory: the backbone holds every view's tokens at once (cross-view attention); the per-view parts
(within-view blocks, MLPs, the DPT head) run ``chunk`` views at a time. See the README for figures.
A view's network size is capped by a token budget (``max_tokens``, as for
:class:`~anydepth.estimator.DepthEstimator`); the ``chunk`` (or batch) is sized to the free memory
before the pass, and on the CPU a scene that does not fit even one view at a time is refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import camera_centers, to_homogeneous
from .kinds import DEPTH, METRIC_DEPTH, UNITS, DepthKind
from .memory import (parameter_bytes, MemoryPolicy, estimate_activation_bytes, fit_batch, interrupt_checks, make_policy, resolve_dtype,
                     retry_halving_on_oom, run_in_batches)
from .models.da3 import (
    POSE_METHODS,
    REF_VIEW_STRATEGIES,
    DA3Output,
    NestedDepthAnything3,
    check_pose_method,
    fill_sky,
    scale_metric_depth,
)
from .preprocess import (ImageInput, capped_size, check_max_tokens, resize_depth, resolve_max_tokens, to_tensor_list,
                         token_count, warn_capped)
from .weights import load_network

if TYPE_CHECKING:
    from .estimator import DepthResult
    from .gaussians import Gaussians
    from .geometry import PointCloud

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
PROCESS_RES_METHODS = ("upper_bound_resize", "lower_bound_resize")
DEFAULT_DA3_MODEL = "da3-small"

#: Known poses are aligned to the predicted ones by RANSAC from this many views on (official threshold).
RANSAC_MIN_VIEWS = 10

__all__ = [
    "AnyViewEstimator",
    "GeometryResult",
    "POSE_METHODS",
    "align_poses",
    "area_resize",
    "da3_network_size",
    "da3_processed_size",
    "normalize_extrinsics",
    "prepare_views",
    "resize_views",
    "view_layouts",
    "umeyama_sim3",
]


# --------------------------------------------------------------------------------------------
# Preprocessing (the official InputProcessor, batched in torch)


def _nearest_multiple(x: int, m: int) -> int:
    down = x // m * m
    up = down + m
    return up if abs(up - x) <= abs(x - down) else down


def da3_processed_size(height: int, width: int, process_res: int = 504, method: str = "upper_bound_resize",
                       patch: int = 14) -> tuple[tuple[int, int], tuple[int, int]]:
    """The official two-step network size for an image: the boundary resize, then multiples of 14.

    ``upper_bound_resize``: the longer side becomes ``process_res``; ``lower_bound_resize``: the shorter
    one. Sides are ``round(side × scale)`` (Python rounding), then each goes to the nearest multiple of
    ``patch`` (ties up; never below ``patch``).

    Returns:
        ``((h1, w1), (h2, w2))``: after the boundary resize, and the network size.

    Example:
        >>> da3_processed_size(480, 640)
        ((378, 504), (378, 504))
        >>> da3_processed_size(1080, 1920)[1]
        (280, 504)
    """
    if method not in PROCESS_RES_METHODS:
        raise ValueError(f"unknown process_res_method {method!r}; expected one of {', '.join(PROCESS_RES_METHODS)}")
    if not isinstance(process_res, int) or process_res < patch:
        raise ValueError(f"process_res must be an integer >= {patch}, got {process_res!r}")
    side = max(height, width) if method == "upper_bound_resize" else min(height, width)
    if side == process_res:
        h1, w1 = height, width
    else:
        scale = process_res / float(side)
        h1, w1 = max(1, round(height * scale)), max(1, round(width * scale))
    return (h1, w1), (max(patch, _nearest_multiple(h1, patch)), max(patch, _nearest_multiple(w1, patch)))


def da3_network_size(height: int, width: int, process_res: int = 504, method: str = "upper_bound_resize",
                     max_tokens: int = 0, patch: int = 14) -> tuple[int, int]:
    """The network size of :func:`da3_processed_size`, or the :func:`~anydepth.preprocess.capped_size`
    of the image when that has more than ``max_tokens`` patches (``0``: no cap).

    Only ``lower_bound_resize`` can exceed a budget of a few times ``(process_res / 14)²``: the upper
    bound keeps the longer side at ``process_res``.

    Example:
        >>> da3_network_size(2, 3000, 504, "lower_bound_resize"), da3_network_size(2, 3000, 504, "lower_bound_resize", 5184)
        ((504, 756000), (14, 21000))
    """
    size = da3_processed_size(height, width, process_res, method, patch)[1]
    if max_tokens and token_count(size, patch) > max_tokens:
        return capped_size(height, width, max_tokens, patch)
    return size


def _area_weights(src: int, dst: int, device, dtype) -> torch.Tensor:
    """``[dst, src]`` matrix of OpenCV INTER_AREA: each output pixel averages the source pixels its
    footprint ``[i·s, (i+1)·s)`` covers, weighted by overlap (``s = src / dst >= 1``)."""
    s = src / dst
    lo = torch.arange(dst, dtype=torch.float64)[:, None] * s
    k = torch.arange(src, dtype=torch.float64)[None]
    overlap = (torch.minimum(k + 1, lo + s) - torch.maximum(k, lo)).clamp_min(0)
    overlap = torch.where(overlap > 1e-3, overlap, torch.zeros_like(overlap))  # OpenCV drops slivers under 1e-3
    return (overlap / overlap.sum(1, keepdim=True)).to(device=device, dtype=dtype)


def area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """OpenCV INTER_AREA shrinking of ``[B, C, H, W]`` to ``size`` (each side not larger than before).

    Exact box-filter averaging (two small matrix products), unlike ``F.interpolate(mode="area")``,
    which rounds the footprints to whole pixels.
    """
    h, w = size
    if h > x.shape[-2] or w > x.shape[-1]:
        raise ValueError(f"area_resize only shrinks; {tuple(x.shape[-2:])} -> {size}")
    wh = _area_weights(x.shape[-2], h, x.device, x.dtype)
    ww = _area_weights(x.shape[-1], w, x.device, x.dtype)
    return wh @ x @ ww.T


def _cv2_like_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """INTER_CUBIC (clipped to 0..1 like uint8) when any side grows, INTER_AREA otherwise."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] > x.shape[-2] or size[1] > x.shape[-1]:
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp_(0, 1)
    return area_resize(x, size)


def resize_views(images: torch.Tensor, size: tuple[int, int], *, process_res: int = 504,
                 method: str = "upper_bound_resize") -> torch.Tensor:
    """Resize ``[N, 3, H, W]`` views in 0..1 to the network ``size`` the official way.

    When ``size`` is the official size for ``H × W`` the two official steps run (boundary resize, then
    multiples of 14); otherwise (views of another size joining a scene) one direct resize.

    Shape: ``[N, 3, H, W]`` -> ``[N, 3, size[0], size[1]]`` float32 in 0..1.
    """
    x = images.float()
    first, second = da3_processed_size(x.shape[-2], x.shape[-1], process_res, method)
    if second == tuple(size):
        return _cv2_like_resize(_cv2_like_resize(x, first), second)
    return _cv2_like_resize(x, tuple(size))


def prepare_views(images: torch.Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float], *,
                  process_res: int = 504, method: str = "upper_bound_resize", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:func:`resize_views`, then normalisation with ``mean`` / ``std``, in ``dtype``."""
    return _normalize(resize_views(images, size, process_res=process_res, method=method), mean, std, dtype)


@dataclass(frozen=True)
class ViewLayout:
    """Where a view's network input comes from: its own network size and the centre crop taken of it.

    Attributes:
        own: ``(h, w)`` the view's own network size (the official two-step resize of its input).
        crop: ``(top, left)`` of the crop, in pixels of ``own``; ``(0, 0)`` when the view is used whole.
    """

    own: tuple[int, int]
    crop: tuple[int, int] = (0, 0)


def view_layouts(sizes: Sequence[tuple[int, int]], process_res: int = 504, method: str = "upper_bound_resize",
                 max_tokens: int = 0) -> tuple[tuple[int, int], list[ViewLayout]]:
    """The scene's network size and each view's layout, as the official preprocessing batches views of mixed sizes.

    Every view is resized to its own network size (:func:`da3_network_size`); when these differ, each is
    centre-cropped to the smallest height and the smallest width (``top = (h - h_min) // 2``; the official
    ``InputProcessor._unify_batch_shapes``), never resized to another view's aspect ratio.

    Returns:
        ``(h, w)`` of the network input, and one :class:`ViewLayout` per view.

    Example:
        >>> view_layouts([(480, 640), (640, 480)])
        ((378, 378), [ViewLayout(own=(378, 504), crop=(0, 63)), ViewLayout(own=(504, 378), crop=(63, 0))])
    """
    own = [da3_network_size(h, w, process_res, method, max_tokens) for h, w in sizes]
    size = (min(h for h, _ in own), min(w for _, w in own))
    return size, [ViewLayout(o, ((o[0] - size[0]) // 2, (o[1] - size[1]) // 2)) for o in own]


def _crop(x: torch.Tensor, layout: ViewLayout, size: tuple[int, int]) -> torch.Tensor:
    top, left = layout.crop
    return x[..., top:top + size[0], left:left + size[1]]


def _to_input_size(m: torch.Tensor, in_size: tuple[int, int], layout: ViewLayout, size: tuple[int, int]) -> torch.Tensor:
    """A network-size map ``[h, w]`` back at its input's size ``[H, W]``.

    A cropped view's map is resized onto the input region the crop covers; the pixels outside it (never
    seen by the network) repeat the region's edge.
    """
    if layout.own == tuple(size):
        return resize_depth(m[None], in_size)[0]
    r0, c0, h, w = _input_region(in_size, layout, size)
    inner = resize_depth(m[None], (h, w))
    return F.pad(inner[None], (c0, in_size[1] - c0 - w, r0, in_size[0] - r0 - h), mode="replicate")[0, 0]


def _input_region(in_size: tuple[int, int], layout: ViewLayout, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` in input pixels of what the network saw of a view (see :func:`_to_input_size`)."""
    (big_h, big_w), (oh, ow), (top, left) = in_size, layout.own, layout.crop
    r0, c0 = round(top * big_h / oh), round(left * big_w / ow)
    r1 = max(r0 + 1, round((top + size[0]) * big_h / oh))
    c1 = max(c0 + 1, round((left + size[1]) * big_w / ow))
    return r0, c0, r1 - r0, c1 - c0


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype)


# --------------------------------------------------------------------------------------------
# Cameras


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, (np.ndarray, list, tuple)):
        t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    else:
        raise TypeError(f"{name} must be a tensor, numpy array or nested list, got {type(x).__name__}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t.double()


def normalize_extrinsics(extrinsics: torch.Tensor) -> torch.Tensor:
    """Known world-to-camera poses in the frame the camera encoder was trained with (official rule).

    The first camera becomes the world frame and translations are divided by the median distance of
    the camera centres from it (at least 0.1).

    Shape: ``[N, 3|4, 4]`` -> ``[N, 4, 4]``.
    """
    ext = to_homogeneous(extrinsics)
    norm = ext @ torch.linalg.inv(ext[:1])
    dist = torch.linalg.inv(norm)[:, :3, 3].norm(dim=-1)
    norm[:, :3, 3] = norm[:, :3, 3] / torch.median(dist).clamp_min(0.1)
    return norm


def _umeyama_or_none(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """:func:`umeyama_sim3`, or ``None`` where the official alignment's Umeyama refuses: a cross-covariance of
    rank below 2 (collinear or coincident centres)."""
    xs, xd = src.double() - src.double().mean(0), dst.double() - dst.double().mean(0)
    if int(torch.linalg.matrix_rank(xd.T @ xs / src.shape[0])) < 2:
        return None
    return umeyama_sim3(src, dst)


def align_poses(predicted: torch.Tensor, given: torch.Tensor, *, ransac: bool | None = None, seed: int | None = 42,
                iterations: int = 10) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Similarity ``(R, t, s)`` with predicted camera centres ``≈ s R given + t`` (the official known-pose alignment).

    Without RANSAC: Umeyama on all camera centres. With RANSAC (default from :data:`RANSAC_MIN_VIEWS` = 10
    views on): the official loop — a first Umeyama fit on all views sets the inlier distance (the median,
    over the given cameras so aligned, of the distance to the nearest predicted centre); ``iterations``
    fits on random subsets of ``max(3, ⌈N/2⌉)`` views (NumPy's ``default_rng(seed)``, as the official code
    with seed 42) each count the views within that distance of their own predicted centre; the fit with
    the most inliers (then the lowest mean error) wins and is refitted on its inliers (≥ 3). So a few
    views with wrong predicted (or given) poses do not bend the scale.

    Shape: predicted, given ``[N, 3|4, 4]`` world-to-camera -> ``[3, 3]``, ``[3]``, float (float64).
    """
    ref, est = camera_centers(predicted.double().cpu()), camera_centers(given.double().cpu())
    n = ref.shape[0]
    if ransac is None:
        ransac = n >= RANSAC_MIN_VIEWS
    r, t, s = umeyama_sim3(est, ref)
    if not ransac or n < 3:
        return r, t, s
    moved = s * est @ r.T + t
    nearest = (moved[:, None] - ref[None]).norm(dim=-1).min(1).values
    threshold = float(np.median(nearest.numpy()))  # NumPy's median: the mean of the middle two for even N
    rng = np.random.default_rng(seed)
    best, best_inliers, best_score = (r, t, s), None, (-1, float("inf"))
    for _ in range(iterations):
        sample = torch.from_numpy(rng.choice(np.arange(n), size=max(3, (n + 1) // 2), replace=False))
        fit = _umeyama_or_none(est[sample], ref[sample])
        if fit is None:
            continue
        err = (fit[2] * est @ fit[0].T + fit[1] - ref).norm(dim=-1)
        inliers = err <= threshold
        k = int(inliers.sum())
        score = (k, float(err[inliers].mean()) if k else float("inf"))
        if score[0] > best_score[0] or (score[0] == best_score[0] and score[1] < best_score[1]):
            best, best_inliers, best_score = fit, inliers, score
    if best_inliers is not None and int(best_inliers.sum()) >= 3:
        return umeyama_sim3(est[best_inliers], ref[best_inliers])
    return best


def umeyama_sim3(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Similarity ``(R, t, s)`` with ``dst ≈ s R src + t`` in the least-squares sense (Umeyama 1991).

    Degenerate inputs stay usable: with collinear points the scale is still the ratio of spreads;
    with a single point (or all points equal) the scale is 1.

    Shape: ``[M, 3]`` each -> ``[3, 3]``, ``[3]``, float.
    """
    src, dst = src.double(), dst.double()
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = float((xs**2).sum(1).mean())
    if src.shape[0] < 2 or var_s < 1e-12:
        return torch.eye(3, dtype=torch.float64), mu_d - mu_s, 1.0
    cov = xd.T @ xs / src.shape[0]
    u, d, vt = torch.linalg.svd(cov)
    sign = torch.ones(3, dtype=torch.float64)
    if torch.det(u) * torch.det(vt) < 0:
        sign[2] = -1
    r = u @ torch.diag(sign) @ vt
    s = float((d * sign).sum() / var_s)
    return r, mu_d - s * r @ mu_s, s


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class GeometryResult:
    """Depth, confidence and cameras for ``N`` views.

    Per-view maps are at each input's own size: a ``[N, H, W]`` tensor when all inputs share one size,
    else a list of ``[H_i, W_i]`` maps. ``processed_*`` fields are at the network's size.

    Attributes:
        depth: depth along the optical axis, larger = farther (``kind`` says relative or metres).
        confidence: any-view confidence (≥ 1, larger = better), ``None`` for mono / metric models.
        sky: sky score (mono / metric / nested; the official mask is ``sky >= 0.5``), else ``None``.
        extrinsics: ``[N, 3, 4]`` world-to-camera (OpenCV axes), or ``None`` (mono / metric without poses).
        intrinsics: ``[N, 3, 3]`` in pixels of each input image, or ``None``.
        kind: ``"depth"`` (relative) or ``"metric_depth"`` (metres).
        processed_size: ``(h, w)`` the network saw (the same for every view).
        processed_depth, processed_confidence, processed_sky: ``[N, h, w]``.
        processed_intrinsics: ``[N, 3, 3]`` in pixels of the processed size.
        processed_images: ``[N, h, w, 3]`` colours in 0..1 as the network saw them (for point colours).
        input_sizes: ``(H_i, W_i)`` per view.
        reference_view: the view the network chose as reference (its camera is the world frame), if any.
        scale_factor: nested models: any-view -> metres; with known poses: prediction units per pose unit.
        model_name: catalogue name or file of the model.
        notes: anything the caller should know (e.g. metric model without intrinsics).
        view_regions: per view ``(top, left, height, width)`` of the input region the network saw, in input
            pixels, when views of different sizes were centre-cropped (else ``None``: every view seen whole).
        gaussians: 3D Gaussians, one per pixel of ``processed_size`` per view (``[N, h, w]``), in the frame and
            units of ``extrinsics`` (``gaussians=True`` with a GIANT model), else ``None``.
        pose_method: ``"cam_dec"`` or ``"ray_pose"``: where predicted cameras came from.
    """

    depth: torch.Tensor | list[torch.Tensor]
    confidence: torch.Tensor | list[torch.Tensor] | None
    sky: torch.Tensor | list[torch.Tensor] | None
    extrinsics: torch.Tensor | None
    intrinsics: torch.Tensor | None
    kind: DepthKind
    processed_size: tuple[int, int]
    processed_depth: torch.Tensor
    processed_confidence: torch.Tensor | None
    processed_sky: torch.Tensor | None
    processed_intrinsics: torch.Tensor | None
    processed_images: torch.Tensor
    input_sizes: list[tuple[int, int]]
    model_name: str = ""
    reference_view: int | None = None
    scale_factor: float | None = None
    notes: list[str] = field(default_factory=list)
    view_regions: list[tuple[int, int, int, int]] | None = None
    gaussians: Gaussians | None = None
    pose_method: str = "cam_dec"

    @property
    def units(self) -> str:
        return UNITS[self.kind]

    def __len__(self) -> int:
        return len(self.input_sizes)

    def maps(self, name: str = "depth") -> list[torch.Tensor]:
        """Per-view ``[H_i, W_i]`` maps of ``depth``, ``confidence`` or ``sky``."""
        x = getattr(self, name)
        if x is None:
            return []
        return list(x.unbind(0)) if isinstance(x, torch.Tensor) else list(x)

    def depth_result(self) -> DepthResult:
        """The depth as an :class:`anydepth.estimator.DepthResult` (for code written for V1/V2 results:
        normalisation, export, ComfyUI's ``DEPTH`` socket); cameras and confidence are not carried."""
        from .estimator import DepthResult

        return DepthResult(self.depth, self.kind, [self.processed_size] * len(self), self.model_name)

    @property
    def has_cameras(self) -> bool:
        return self.extrinsics is not None and self.intrinsics is not None

    def point_cloud(self, **kwargs) -> PointCloud:
        """Fused, confidence-filtered coloured points of all views (see :func:`anydepth.geometry.fuse_point_cloud`)."""
        from .geometry import fuse_point_cloud

        if not self.has_cameras:
            raise ValueError("this result has no cameras: use an any-view DA3 model, or pass intrinsics and extrinsics")
        return fuse_point_cloud(self.processed_depth, self.processed_intrinsics, self.extrinsics, self.processed_images,
                                self.processed_confidence, sky=self.processed_sky, **kwargs)

    def save_gaussians(self, path, **kwargs) -> int:
        """Write :attr:`gaussians` as a 3DGS PLY with the official export filters; returns the number written.

        Keyword arguments go to :func:`anydepth.gaussians.save_gaussian_ply` (``trim_border``, ``depth_quantile``,
        ``views_every``, ``sh_dc_only``); the depth filter uses :attr:`processed_depth`.
        """
        from .gaussians import save_gaussian_ply

        if self.gaussians is None:
            raise ValueError("this result has no Gaussians: estimate with gaussians=True and a DA3 GIANT model "
                             "(da3-giant-1.1, da3nested-giant-large-1.1)")
        return save_gaussian_ply(path, self.gaussians, self.processed_depth, **kwargs)

    def frusta(self, scale: float | None = None) -> torch.Tensor:
        """Camera wire frames ``[N, 8, 2, 3]``; ``scale`` defaults to 3 % of the point cloud's extent."""
        from .geometry import camera_frusta, scene_extent

        if not self.has_cameras:
            raise ValueError("this result has no cameras")
        if scale is None:
            scale = 0.03 * scene_extent(self.point_cloud(max_points=200_000).points)
        return camera_frusta(self.processed_intrinsics, self.extrinsics, self.processed_size, scale)


# --------------------------------------------------------------------------------------------
# Estimator


class AnyViewEstimator:
    """Depth Anything 3 inference for any number of views: depth, confidence, cameras.

    Args:
        model: DA3 catalogue name (``anydepth info``), a DA3 folder / ``model.safetensors``, or a built
            :class:`~anydepth.models.da3.DepthAnything3` / ``NestedDepthAnything3``. A built network is used
            as is, not copied: the estimator casts it to ``dtype`` in place, sets it to eval mode, and its
            memory policy moves it between devices (pass ``copy.deepcopy(net)`` to keep your own module unchanged).
        device: compute device (default CUDA, then MPS, then CPU).
        dtype: ``"auto" | "fp32" | "fp16" | "bf16"`` or a torch dtype (see :func:`anydepth.memory.resolve_dtype`).
        process_res: the longer side the network sees (504 as the official default; multiple of 14 after rounding).
        process_res_method: ``"upper_bound_resize"`` (official default) or ``"lower_bound_resize"``.
        max_tokens: token budget of one view's network input, in 14×14 patches: ``None`` (default) four times
            the tokens of a ``process_res`` square, ``0`` no cap. Only ``lower_bound_resize`` reaches it (a thin
            strip); such views run at the largest size of their aspect ratio within it, with one warning.
        chunk: views per pass through the per-view parts of the network (memory bound, same numbers);
            lowered to fit the free memory before the pass, halved on out-of-memory.
        batch_size: views per forward pass of mono / metric models (independent images).
        memory: ``"keep"``, ``"offload"`` or a :class:`~anydepth.memory.MemoryPolicy`. Its ``check_interrupt``
            runs between batches and between the network's blocks (so between chunks of views too).
        models_dir, revision: where to look for / download weights, and a hub revision pin.
        output_device: where results are returned (CPU by default).

    Example:
        >>> est = AnyViewEstimator("da3-small")
        >>> res = est.estimate(["a.jpg", "b.jpg", "c.jpg"])
        >>> res.depth.shape, res.extrinsics.shape, res.intrinsics.shape
        (torch.Size([3, 45, 61]), torch.Size([3, 3, 4]), torch.Size([3, 3, 3]))
    """

    def __init__(
        self,
        model: str | os.PathLike | torch.nn.Module = DEFAULT_DA3_MODEL,
        *,
        device: torch.device | str | None = None,
        dtype: str | torch.dtype = "auto",
        process_res: int = 504,
        process_res_method: str = "upper_bound_resize",
        max_tokens: int | None = None,
        chunk: int | None = 8,
        batch_size: int = 8,
        memory: str | MemoryPolicy = "keep",
        models_dir=None,
        revision: str | None = None,
        output_device: torch.device | str = "cpu",
    ) -> None:
        self.policy = make_policy(memory, device)
        self.dtype = resolve_dtype(dtype, self.policy.device)
        self.model, self.model_name = load_network(model, "da3", dtype=self.dtype, models_dir=models_dir,
                                                   revision=revision)
        da3_processed_size(504, 504, process_res, process_res_method)  # validates early
        self.process_res = process_res
        self.process_res_method = process_res_method
        self.max_tokens = check_max_tokens(max_tokens)
        self.chunk = _check_chunk(chunk)
        self.batch_size = _check_chunk(batch_size, "batch_size")
        self.output_device = torch.device(output_device)

    @property
    def config(self):
        return self.model.config

    @property
    def anyview(self) -> bool:
        """The views of one call form one scene (cross-view attention and cameras)."""
        return bool(self.config.anyview)

    @property
    def has_gaussian_head(self) -> bool:
        """The network carries DA3-GIANT's Gaussian-splatting head (``estimate(gaussians=True)`` works)."""
        net = self.model.da3 if isinstance(self.model, NestedDepthAnything3) else self.model
        return getattr(net, "gs_head", None) is not None

    @property
    def weight_bytes(self) -> int:
        return parameter_bytes(self.model)

    def memory_required(self, views: int, size: tuple[int, int]) -> int:
        """Bytes for weights plus activations of ``views`` views at network ``size``."""
        n = views if self.anyview else min(views, self.batch_size)
        return self.weight_bytes + estimate_activation_bytes(self.config, n, size, self.dtype, self.chunk)

    @torch.inference_mode()
    def estimate(
        self,
        images: ImageInput,
        *,
        extrinsics=None,
        intrinsics=None,
        ref_view_strategy: str = "saddle_balanced",
        process_res: int | None = None,
        align_to_input_scale: bool = True,
        callback: ProgressCallback | None = None,
        max_tokens: int | None = None,
        pose_method: str = "cam_dec",
        gaussians: bool = False,
        seed: int | None = 0,
    ) -> GeometryResult:
        """Depth, confidence and cameras for ``images`` (one scene of N views).

        Args:
            images: the views: a list of files / PIL images / arrays, a ComfyUI IMAGE batch
                ``[N, H, W, 3]``, video frames ``[N, 3, H, W]``, or a list of those.
            extrinsics: known world-to-camera poses ``[N, 3|4, 4]`` (any scale), or ``None``.
            intrinsics: known intrinsics ``[N, 3, 3]`` in pixels of each input image, or ``None``.
            ref_view_strategy: ``saddle_balanced`` (official default), ``saddle_sim_range``, ``first``
                or ``middle``: which view's camera becomes the world frame (≥ 3 views, no known poses).
            process_res: override the estimator's ``process_res`` for this call.
            align_to_input_scale: with known poses, return them and rescale the depth to their units
                (official default); ``False`` keeps the prediction's frame and maps the given cameras into it.
            callback: ``callback(done, total)`` after each forward pass.
            max_tokens: override the estimator's ``max_tokens`` for this call.
            pose_method: ``"cam_dec"`` (the camera decoder, official default) or ``"ray_pose"`` (cameras solved
                from the ray branch by weighted RANSAC, the official ``use_ray_pose``; any-view models only).
            gaussians: also return 3D Gaussians (:attr:`GeometryResult.gaussians`; DA3-GIANT and nested GIANT models).
            seed: seed of the ray-pose RANSAC samples (same result for the same input); ``None`` draws from
                torch's global generator, as the official code (then ``torch.manual_seed(s)`` reproduces it).

        Raises:
            InsufficientMemoryError: on the CPU, when the scene does not fit the host memory even one view per
                chunk (the message names the views, their size and the options to change).
        """
        if ref_view_strategy not in REF_VIEW_STRATEGIES:
            raise ValueError(f"unknown ref_view_strategy {ref_view_strategy!r}; expected one of {', '.join(REF_VIEW_STRATEGIES)}")
        check_pose_method(pose_method, self.config)
        if gaussians and not self.has_gaussian_head:
            raise ValueError(f"{self.model_name} has no Gaussian-splatting head: 3D Gaussians need a DA3 GIANT model "
                             "(da3-giant-1.1, da3-giant, da3nested-giant-large-1.1)")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        process_res = process_res or self.process_res
        tensors = to_tensor_list(images)
        sizes = [tuple(t.shape[-2:]) for t in tensors for _ in range(t.shape[0])]
        n = len(sizes)
        budget = resolve_max_tokens(self.max_tokens if max_tokens is None else max_tokens, process_res)
        size, layouts = view_layouts(sizes, process_res, self.process_res_method, budget)
        distinct = {s: lay.own for s, lay in zip(sizes, layouts)}
        warn_capped([(s, da3_processed_size(*s, process_res, self.process_res_method)[1], own) for s, own in distinct.items()],
                    budget)
        if len({lay.own for lay in layouts}) > 1:
            log.warning("views of different network sizes (%s): each centre-cropped to %s×%s as the official preprocessing "
                        "does", ", ".join(sorted({f"{w}×{h}" for h, w in (lay.own for lay in layouts)})), size[1], size[0])
        ext_in = _check_cameras(extrinsics, n, "extrinsics", ((3, 4), (4, 4)))
        k_in = _check_cameras(intrinsics, n, "intrinsics", ((3, 3),))
        k_proc = None
        if k_in is not None:  # fx, cx by the width ratio, fy, cy by the height ratio; then the crop moves the centre
            scale = torch.tensor([[lay.own[1] / w, lay.own[0] / h, 1.0] for (h, w), lay in zip(sizes, layouts)], dtype=torch.float64)
            k_proc = k_in * scale[:, :, None]
            k_proc[:, 0, 2] -= torch.tensor([float(lay.crop[1]) for lay in layouts], dtype=torch.float64)
            k_proc[:, 1, 2] -= torch.tensor([float(lay.crop[0]) for lay in layouts], dtype=torch.float64)

        device = self.policy.acquire(self.model, self.memory_required(n, size))
        try:
            self.policy.check_interrupt()
            per_pass = self._fit_memory(n, size, sizes[0], device)  # before anything of the size of the pass exists
            cfg = self.config
            seen, first = [], 0
            for t in tensors:
                for part in t.split(8):  # a few views at a time at input size (views of one tensor share a layout)
                    lay = layouts[first]
                    first += part.shape[0]
                    seen.append(_crop(resize_views(part.to(device), lay.own, process_res=process_res,
                                                   method=self.process_res_method), lay, size))
            seen = torch.cat(seen)
            x = _normalize(seen, cfg.mean, cfg.std, self.dtype)
            seen = seen.to(self.output_device)
            with interrupt_checks(self.model, self.policy.check_interrupt):  # between blocks and chunks of views
                if self.anyview:
                    out = self._run_scene(x, ext_in, k_proc, ref_view_strategy, device, size, per_pass,
                                          pose_method=pose_method, gaussians=gaussians, seed=seed)
                    if callback is not None:
                        callback(n, n)
                else:
                    out = self._run_independent(x, device, size, callback, per_pass)
        finally:
            self.policy.release(self.model)
        res = self._finish(out, seen, sizes, size, layouts, ext_in, k_in, k_proc, align_to_input_scale)
        res.pose_method = pose_method
        return res

    __call__ = estimate

    # -- the network --------------------------------------------------------------------------

    def _fit_memory(self, n: int, size: tuple[int, int], first: tuple[int, int], device: torch.device) -> int:
        """Views per chunk (any-view) or per batch (mono / metric) that fit the free memory.

        Raises:
            InsufficientMemoryError: on the CPU, when one view per chunk / batch does not fit.
        """
        shape = f"{n} view(s) of {first[1]}×{first[0]} px (width×height) at network size {size[1]}×{size[0]}"
        advice = ("use fewer views, a lower process_res (--process-res) or max_tokens (--max-tokens), dtype bf16, "
                  "or free memory")
        free, refuse = self.policy.free_bytes(), device.type == "cpu"
        if self.anyview:  # every view's tokens stay resident; the chunk bounds the per-view parts
            need = lambda chunk: estimate_activation_bytes(self.config, n, size, self.dtype, chunk)  # noqa: E731
            return fit_batch(self.chunk or n, need, free, refuse=refuse, what=shape, advice=advice)
        need = lambda batch: estimate_activation_bytes(self.config, batch, size, self.dtype, self.chunk)  # noqa: E731
        return fit_batch(min(self.batch_size, n), need, free, refuse=refuse, what=shape, advice=advice)

    def _run_scene(self, x, ext_in, k_proc, strategy, device, size, chunk: int, *, pose_method: str = "cam_dec",
                   gaussians: bool = False, seed: int | None = 0) -> DA3Output:
        ext_t = k_t = None
        if ext_in is not None:
            if k_proc is None:
                raise ValueError("known extrinsics need intrinsics too (the camera encoder needs the field of view); pass intrinsics=")
            ext_t = normalize_extrinsics(ext_in).float().to(device)[None]
            k_t = k_proc.float().to(device)[None]

        def run(chunk: int | None) -> DA3Output:  # a fresh generator per try: a retry after OOM draws the same samples
            gen = None if seed is None else torch.Generator().manual_seed(seed)
            return self.model(x[None], ext_t, k_t, ref_view_strategy=strategy, chunk=chunk, pose_method=pose_method,
                              gaussians=gaussians, generator=gen)

        # chunk=None (all views at once) runs the same code as chunk = number of views
        out, _ = retry_halving_on_oom(
            run,
            chunk, self.policy, unit="views per chunk",
            message=f"out of memory on {device} with {x.shape[0]} views at {size[1]}×{size[0]} even one view at a time; "
                    "use fewer views, a lower process_res, dtype fp16/bf16, or free memory used by other models")
        return out

    def _run_independent(self, x, device, size, callback, batch_size: int) -> DA3Output:
        n = x.shape[0]
        parts: list[DA3Output] = []
        batches = run_in_batches(
            lambda start, bs: self.model(x[start:start + bs, None], chunk=self.chunk), n, batch_size, self.policy,
            unit="views per batch", message=f"out of memory on {device} even with one view at {size[1]}×{size[0]}; "
                                            "lower process_res or use fp16/bf16")
        for _, stop, part in batches:
            parts.append(part)
            if callback is not None:
                callback(stop, n)
        cat = lambda k: None if getattr(parts[0], k) is None else torch.cat([getattr(p, k) for p in parts])
        return DA3Output(cat("depth").transpose(0, 1), sky=cat("sky").transpose(0, 1))

    # -- outputs ------------------------------------------------------------------------------

    def _gaussians(self, out: DA3Output, scale_factor: float | None) -> Gaussians | None:
        """World-space Gaussians of the head's output, in the frame and units of the predicted cameras."""
        if out.gs_raw is None:
            return None
        from .gaussians import gaussians_from_raw

        ext = out.extrinsics[0].double().clone()
        nested = isinstance(self.model, NestedDepthAnything3)
        if nested:  # the head works in the any-view network's units; the nested output is in metres
            ext[:, :3, 3] /= scale_factor
        gs = gaussians_from_raw(out.gs_raw[0], out.gs_density[0], out.gs_depth[0], ext, out.intrinsics[0])
        return gs.transformed(scale=scale_factor) if nested else gs

    def _finish(self, out: DA3Output, seen, sizes, size, layouts, ext_in, k_in, k_proc, align: bool) -> GeometryResult:
        notes: list[str] = []
        depth = out.depth[0].float()
        conf = None if out.confidence is None else out.confidence[0].float()
        sky = None if out.sky is None else out.sky[0].float()
        ext = None if out.extrinsics is None else out.extrinsics[0].double()
        k = None if out.intrinsics is None else out.intrinsics[0].double()
        kind: DepthKind = DEPTH
        scale_factor = None if out.scale_factor is None else float(out.scale_factor)
        cfg = self.config
        gs = self._gaussians(out, scale_factor)
        if isinstance(self.model, NestedDepthAnything3):
            kind = METRIC_DEPTH
        elif cfg.sky:  # mono / metric: sky at the far end of each view, metres from the focal length
            depth = fill_sky(depth, sky)
            if cfg.metric:
                if k_proc is not None:
                    depth = scale_metric_depth(depth, k_proc.to(depth.device))
                    kind = METRIC_DEPTH
                else:
                    notes.append("DA3METRIC gives metres only with known intrinsics (metres = output × focal / 300); "
                                 "without them the depth is relative")
            if k_proc is not None:
                k = k_proc.to(depth.device)
            if ext_in is not None:
                ext = to_homogeneous(ext_in)[:, :3].to(depth.device)
        if cfg.camera and ext_in is None and k_in is not None:
            notes.append("intrinsics without extrinsics are not used by any-view models (as in the official code); "
                         "the returned intrinsics are predicted")
        if cfg.camera and ext_in is not None:
            # pred ≈ s·R·given + t  (official: Umeyama of the given poses onto the predicted ones; RANSAC from 10 views)
            r, t, s = align_poses(ext.cpu(), ext_in)
            if align:
                depth = depth / s
                ext = to_homogeneous(ext_in)[:, :3].to(depth.device)
                scale_factor = s
                if gs is not None:  # into the given cameras' frame: given = Rᵀ (pred - t) / s
                    gs = gs.transformed(scale=1 / s, rotation=r.T, translation=-(r.T @ t) / s)
            else:
                sim = torch.eye(4, dtype=torch.float64)
                sim[:3, :3], sim[:3, 3] = s * r, t
                c2w = torch.linalg.inv(to_homogeneous(ext_in))
                c2w_new = sim @ c2w
                c2w_new[:, :3, :3] = r @ c2w[:, :3, :3]
                ext = torch.linalg.inv(c2w_new)[:, :3].to(depth.device)
            k = k_proc.to(depth.device)
        od = self.output_device
        uniform = len(set(sizes)) == 1 and layouts[0].own == tuple(size)
        cropped = any(lay.own != tuple(size) for lay in layouts)
        regions = None
        if cropped:
            regions = [_input_region(s, lay, size) for s, lay in zip(sizes, layouts)]
            notes.append(f"views of different sizes were centre-cropped to {size[1]}×{size[0]} network pixels as the "
                         "official preprocessing does; outside each view's region (view_regions) the maps repeat its edge")

        def back(m: torch.Tensor | None):
            if m is None:
                return None
            if uniform:
                return resize_depth(m, sizes[0]).to(od)
            return [_to_input_size(m[i], s, lay, size).to(od) for i, (s, lay) in enumerate(zip(sizes, layouts))]

        k_out = None
        if k is not None:
            if k_in is not None and (ext_in is not None or not cfg.camera):
                k_out = k_in.float().to(od)
            else:  # undo the crop (principal point), then the resize (each view's own network size -> input size)
                k_full = k.clone()
                k_full[:, 0, 2] += torch.tensor([float(lay.crop[1]) for lay in layouts], dtype=k.dtype, device=k.device)
                k_full[:, 1, 2] += torch.tensor([float(lay.crop[0]) for lay in layouts], dtype=k.dtype, device=k.device)
                scale = torch.tensor([[sw / lay.own[1], sh / lay.own[0], 1.0] for (sh, sw), lay in zip(sizes, layouts)],
                                     dtype=torch.float64, device=k.device)
                k_out = (k_full * scale[:, :, None]).float().to(od)
        images = seen.permute(0, 2, 3, 1)
        ref = None if out.reference_view is None else int(out.reference_view[0])
        if gs is not None:
            gs = type(gs)(*(getattr(gs, f).to(od) for f in ("means", "scales", "rotations", "harmonics", "opacities")))
        return GeometryResult(
            depth=back(depth), confidence=back(conf), sky=back(sky),
            extrinsics=None if ext is None else ext.float().to(od), intrinsics=k_out, kind=kind,
            processed_size=size, processed_depth=depth.to(od),
            processed_confidence=None if conf is None else conf.to(od), processed_sky=None if sky is None else sky.to(od),
            processed_intrinsics=None if k is None else k.float().to(od), processed_images=images, input_sizes=list(sizes),
            model_name=self.model_name, reference_view=ref, scale_factor=scale_factor, notes=notes,
            view_regions=regions, gaussians=gs,
        )


def _check_cameras(x, n: int, name: str, shapes) -> torch.Tensor | None:
    if x is None:
        return None
    t = _as_tensor(x, name)
    if t.ndim != 3 or tuple(t.shape[-2:]) not in shapes or t.shape[0] != n:
        want = " or ".join(f"[{n}, {a}, {b}]" for a, b in shapes)
        raise ValueError(f"{name} must be {want} (one per view), got shape {tuple(t.shape)}")
    return t


def _check_chunk(value, name: str = "chunk"):
    if value is None and name == "chunk":
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if name == 'chunk' else ''}, got {value!r}")
    return value
