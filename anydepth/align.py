r"""Scale-and-shift alignment of depth maps, the scale-and-shift-invariant losses, and evaluation metrics.

Relative depth models (Depth Anything V1/V2 relative heads, MiDaS) predict depth up to an unknown affine
map: a prediction :math:`x` is only meaningful as :math:`s x + t` for some scale :math:`s` and shift
:math:`t`. Everything here is built on one batched closed-form solver of

.. math::

    (s, t) = \arg\min_{s, t} \sum_i w_i \, (s x_i + t - y_i)^2

per sample, with :math:`w_i` a validity mask (and, for the robust variants, per-pixel weights):

.. math::

    \bar x = \frac{\sum w x}{\sum w}, \quad \bar y = \frac{\sum w y}{\sum w}, \quad
    s = \frac{\sum w (x - \bar x)(y - \bar y)}{\sum w (x - \bar x)^2}, \quad t = \bar y - s \bar x .

It works on any ``(B, *)`` shape, so dense maps ``(B, H, W)`` and sparse samples ``(B, N)`` (SfM or LiDAR
points, see :func:`sample_depth` / :func:`align_to_points`) go through the same code.

- :func:`fit_scale_shift` / :func:`align_scale_shift`: least squares, optionally robust (``"trimmed"``:
  refit on the best-fitting fraction; ``"irls"``: Tukey-biweight iteratively reweighted least squares,
  both started from a median / median-absolute-deviation fit), directly or in disparity space
  (``space="disparity"``: the prediction is a disparity, the reference a depth; the fit is done in
  inverse depth and the result returned as depth, the usual protocol for evaluating relative models).
- :func:`ssi_loss`, :func:`gradient_matching_loss`, :class:`ScaleShiftInvariantLoss`: the MiDaS /
  Depth Anything training losses, differentiable through the closed-form fit.
- :func:`abs_rel`, :func:`delta1`, :func:`evaluate_depth`: the standard metrics, after alignment.

Undetermined fits are defined, never NaN: where the valid predictions of a sample have no spread (fewer
than two distinct values) the scale is 0 and the shift is the weighted mean of the reference (the best
constant); a sample with no valid pixel at all gets scale 1 and shift 0 (left unchanged). Non-finite
values in the prediction or the reference are never used.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kinds import DISPARITY, check_kind

__all__ = [
    "ROBUST",
    "SPACES",
    "Aligned",
    "DepthMetrics",
    "ScaleShift",
    "ScaleShiftInvariantLoss",
    "abs_rel",
    "align_scale_shift",
    "align_to_points",
    "aligned_kind",
    "delta1",
    "evaluate_depth",
    "fit_scale_shift",
    "gradient_matching_loss",
    "sample_depth",
    "ssi_loss",
]

Space = Literal["direct", "disparity"]
SPACES: tuple[str, ...] = ("direct", "disparity")
"""``"direct"``: fit :math:`s x + t \\approx y`. ``"disparity"``: fit :math:`s x + t \\approx 1 / y` (``x`` a
disparity, ``y`` a depth > 0) and return depth :math:`1 / (s x + t)`."""

Robust = Literal["trimmed", "irls"]
ROBUST: tuple[str, ...] = ("trimmed", "irls")
"""Robust variants of :func:`fit_scale_shift`."""

_TUKEY_C = 4.685  # 95 % efficiency at the normal distribution
_MAD_TO_SIGMA = 1.4826


class ScaleShift(NamedTuple):
    """Per-sample affine parameters: ``aligned = scale * pred + shift`` (in the fitting space).

    Shape:
        scale, shift: ``(B,)``.
    """

    scale: Tensor
    shift: Tensor


class Aligned(NamedTuple):
    """An aligned prediction with the parameters that produced it.

    Shape:
        aligned: like the prediction; scale, shift: ``(B,)``.
    """

    aligned: Tensor
    scale: Tensor
    shift: Tensor


class DepthMetrics(NamedTuple):
    """Per-sample metrics of :func:`evaluate_depth` and the alignment used.

    Shape:
        every field ``(B,)``.
    """

    abs_rel: Tensor
    delta1: Tensor
    scale: Tensor
    shift: Tensor


# --------------------------------------------------------------------------------------------------
# validation


def _check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}; convert it with .float()")
    return x


def _check_choice(value: object, name: str, choices: tuple[str, ...], allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if value not in choices:
        extra = " or None" if allow_none else ""
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}{extra}")
    return value  # type: ignore[return-value]


def _prepare(pred: object, ref: object, mask: object, space: str, min_ndim: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    """Validate and flatten to ``(B, N)``: prediction, target in the fitting space, validity (bool)."""
    pred = _check_tensor(pred, "pred")
    ref = _check_tensor(ref, "ref")
    space = _check_choice(space, "space", SPACES)
    if pred.ndim < min_ndim:
        raise ValueError(f"pred must have shape (B, *) with a batch axis, got {tuple(pred.shape)}; use pred[None] for one map")
    if pred.shape[0] < 1 or pred[0].numel() < 1:
        raise ValueError(f"pred must have at least one sample and one value, got shape {tuple(pred.shape)}")
    try:
        ref = torch.broadcast_to(ref, pred.shape)
    except RuntimeError:
        raise ValueError(f"ref of shape {tuple(ref.shape)} does not broadcast to pred's shape {tuple(pred.shape)}") from None
    valid = torch.isfinite(pred) & torch.isfinite(ref)
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a bool torch.Tensor, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must have dtype torch.bool (True = use this pixel), got {mask.dtype}; use mask > 0.5")
        try:
            valid = valid & torch.broadcast_to(mask.to(pred.device), pred.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to pred's shape {tuple(pred.shape)}") from None
    if space == "disparity":
        valid = valid & (ref > 0)
        target = torch.where(valid, ref, torch.ones_like(ref)).reciprocal()
    else:
        target = ref
    b = pred.shape[0]
    work = torch.float64 if torch.float64 in (pred.dtype, ref.dtype) else torch.float32
    x = torch.where(valid, pred, torch.zeros_like(pred)).to(work).reshape(b, -1)
    y = torch.where(valid, target, torch.zeros_like(target)).to(work).reshape(b, -1)
    return x, y, valid.reshape(b, -1)


# --------------------------------------------------------------------------------------------------
# solvers on (B, N)


def _weighted_fit(x: Tensor, y: Tensor, w: Tensor) -> ScaleShift:
    """Closed-form weighted least squares per row; ``w >= 0`` (zero = unused). Differentiable in x and y."""
    sw = w.sum(1)
    has = sw > 0
    sw_safe = torch.where(has, sw, torch.ones_like(sw))
    mx = (w * x).sum(1) / sw_safe
    my = (w * y).sum(1) / sw_safe
    dx = x - mx[:, None]
    var = (w * dx * dx).sum(1)
    cov = (w * dx * (y - my[:, None])).sum(1)
    # relative threshold: a spread below float rounding of the values means "no spread"
    # no spread: a variance at the level of rounding noise of the values (16 ulp of their mean magnitude)
    noise = (torch.finfo(x.dtype).eps * 16 * (w * x.abs()).sum(1) / sw_safe).square()
    spread = (var / sw_safe > noise) & (var > 0)
    scale = torch.where(spread, cov / torch.where(spread, var, torch.ones_like(var)), torch.zeros_like(var))
    shift = my - scale * mx
    scale = torch.where(has, scale, torch.ones_like(scale))
    shift = torch.where(has, shift, torch.zeros_like(shift))
    return ScaleShift(scale, shift)


def _masked_median(v: Tensor, valid: Tensor) -> Tensor:
    """Lower median of the valid entries per row (0 for rows without any)."""
    m = torch.where(valid, v, torch.full_like(v, math.nan)).nanmedian(dim=1).values
    return torch.nan_to_num(m, nan=0.0)


def _median_fit(x: Tensor, y: Tensor, valid: Tensor) -> ScaleShift:
    """Robust start: match medians and median absolute deviations (sign from the median cross product)."""
    mx, my = _masked_median(x, valid), _masked_median(y, valid)
    dx, dy = x - mx[:, None], y - my[:, None]
    sx, sy = _masked_median(dx.abs(), valid), _masked_median(dy.abs(), valid)
    sign = torch.where(_masked_median(dx * dy, valid) < 0, -1.0, 1.0).to(x.dtype)
    scale = torch.where(sx > 0, sign * sy / torch.where(sx > 0, sx, torch.ones_like(sx)), torch.zeros_like(sx))
    return ScaleShift(scale, my - scale * mx)


def _residual(p: ScaleShift, x: Tensor, y: Tensor) -> Tensor:
    return (p.scale[:, None] * x + p.shift[:, None] - y).abs()


def _trimmed_fit(x: Tensor, y: Tensor, valid: Tensor, trim: float, iters: int) -> ScaleShift:
    n_valid = valid.sum(1)
    keep = torch.ceil((1.0 - trim) * n_valid.to(torch.float64)).long().clamp(min=1)
    p = _median_fit(x, y, valid)
    w = valid.to(x.dtype)
    for _ in range(iters):
        r = torch.where(valid, _residual(p, x, y), torch.full_like(x, math.inf))
        kth = r.sort(dim=1).values.gather(1, (keep - 1).clamp(max=x.shape[1] - 1)[:, None])
        w = (valid & (r <= kth)).to(x.dtype)
        p = _weighted_fit(x, y, w)
    return _keep_identity_for_empty(p, n_valid)


def _irls_fit(x: Tensor, y: Tensor, valid: Tensor, iters: int) -> ScaleShift:
    n_valid = valid.sum(1)
    vf = valid.to(x.dtype)
    # floor on the residual scale: 1e-4 of the reference's spread, so exact fits do not divide by zero
    my = _masked_median(y, valid)
    floor = 1e-4 * _masked_median((y - my[:, None]).abs(), valid).clamp_min(torch.finfo(x.dtype).tiny)
    p = _median_fit(x, y, valid)
    for _ in range(iters):
        r = _residual(p, x, y)
        sigma = torch.maximum(_MAD_TO_SIGMA * _masked_median(r, valid), floor)
        u = r / (_TUKEY_C * sigma[:, None])
        w = vf * (1 - u.square()).clamp_min(0).square()
        p = _weighted_fit(x, y, w)
    return _keep_identity_for_empty(p, n_valid)


def _keep_identity_for_empty(p: ScaleShift, n_valid: Tensor) -> ScaleShift:
    empty = n_valid == 0
    return ScaleShift(torch.where(empty, torch.ones_like(p.scale), p.scale), torch.where(empty, torch.zeros_like(p.shift), p.shift))


# --------------------------------------------------------------------------------------------------
# public API: fitting and aligning


def fit_scale_shift(
    pred: Tensor,
    ref: Tensor,
    mask: Tensor | None = None,
    *,
    space: str = "direct",
    robust: str | None = None,
    trim: float = 0.2,
    iters: int = 5,
) -> ScaleShift:
    r"""Per-sample scale and shift that best map ``pred`` onto ``ref`` (closed-form least squares).

    ``space="direct"`` fits :math:`s \cdot pred + t \approx ref`; ``space="disparity"`` fits
    :math:`s \cdot pred + t \approx 1 / ref` (``pred`` a disparity, ``ref`` a depth; pixels with
    ``ref <= 0`` are unused). Only pixels where ``mask`` is True and both maps are finite are used.

    Robust variants (both start from a median / median-absolute-deviation fit, which tolerates up to half
    the pixels being outliers):

    - ``"trimmed"``: ``iters`` rounds of least squares on the ``1 - trim`` fraction of valid pixels with the
      smallest residuals. Exact when the outliers are fewer than ``trim`` of the valid pixels.
    - ``"irls"``: ``iters`` rounds of iteratively reweighted least squares with Tukey's biweight
      (:math:`c = 4.685 \cdot 1.4826 \cdot \mathrm{MAD}` of the residuals); gross outliers get weight 0.

    The plain fit is differentiable in ``pred`` and ``ref``; the robust ones are too, given their weights.

    Args:
        pred: the prediction to be aligned.
        ref: the reference; broadcast to ``pred``'s shape (e.g. one ``(1, H, W)`` reference for a clip).
        mask: bool, True where a pixel may be used; broadcast to ``pred``'s shape.
        space: one of :data:`SPACES`.
        robust: ``None`` (plain least squares) or one of :data:`ROBUST`.
        trim: fraction of the valid pixels left out by ``"trimmed"``, in ``[0, 1)``.
        iters: refinement rounds of the robust variants, >= 1.

    Returns:
        :class:`ScaleShift` with ``(B,)`` tensors in float32 (float64 when an input is float64).
        Undetermined samples: no spread in ``pred`` gives scale 0 and shift = mean of the reference;
        no valid pixel gives scale 1, shift 0.

    Shape:
        - pred: :math:`(B, *)`, e.g. :math:`(B, H, W)` maps or :math:`(B, N)` sparse samples
        - ref, mask: broadcastable to :math:`(B, *)`
        - output: two :math:`(B,)` tensors

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> fit_scale_shift(x, 2 * x + 1)
        ScaleShift(scale=tensor([2.]), shift=tensor([1.]))
    """
    robust = _check_choice(robust, "robust", ROBUST, allow_none=True)
    if robust == "trimmed" and not (isinstance(trim, (int, float)) and 0.0 <= trim < 1.0):
        raise ValueError(f"trim must be a fraction in [0, 1), got {trim!r}")
    if robust is not None and (not isinstance(iters, int) or isinstance(iters, bool) or iters < 1):
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    x, y, valid = _prepare(pred, ref, mask, space)
    if robust is None:
        return _weighted_fit(x, y, valid.to(x.dtype))
    if robust == "trimmed":
        return _trimmed_fit(x, y, valid, float(trim), iters)
    return _irls_fit(x, y, valid, iters)


def _apply(pred: Tensor, p: ScaleShift, space: str, max_depth: float | None, eps: float) -> Tensor:
    shape = (-1,) + (1,) * (pred.ndim - 1)
    out = p.scale.reshape(shape) * pred.to(p.scale.dtype) + p.shift.reshape(shape)
    if space == "disparity":
        floor = eps if max_depth is None else 1.0 / max_depth
        out = out.clamp_min(floor).reciprocal()
    return out


def align_scale_shift(
    pred: Tensor,
    ref: Tensor,
    mask: Tensor | None = None,
    *,
    space: str = "direct",
    robust: str | None = None,
    trim: float = 0.2,
    iters: int = 5,
    max_depth: float | None = None,
    eps: float = 1e-6,
) -> Aligned:
    r"""Align ``pred`` to ``ref`` with the per-sample scale and shift of :func:`fit_scale_shift`.

    ``space="direct"``: :math:`\hat y = s \cdot pred + t`, in ``ref``'s units. ``space="disparity"``:
    ``pred`` is a disparity (a relative Depth Anything output), ``ref`` a depth; the fit is done in inverse
    depth and the result is depth :math:`\hat y = 1 / \max(s \cdot pred + t, 1 / max\_depth)` (or ``eps``
    without ``max_depth``), in ``ref``'s units. Every pixel is aligned, also those left out of the fit.

    Args:
        pred, ref, mask, space, robust, trim, iters: as in :func:`fit_scale_shift`.
        max_depth: cap on the aligned depth in disparity space (e.g. 10 m indoors, 80 m outdoors).
        eps: smallest disparity inverted when ``max_depth`` is None, > 0.

    Returns:
        :class:`Aligned` ``(aligned, scale, shift)``; ``aligned`` is a new tensor (``pred`` is not modified),
        float32 (float64 for float64 inputs).

    Shape:
        - pred: :math:`(B, *)`; ref, mask: broadcastable to it
        - aligned: :math:`(B, *)`; scale, shift: :math:`(B,)`

    Example:
        >>> x = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
        >>> align_scale_shift(x, 3 * x - 1).aligned
        tensor([[[-1.,  2.],
                 [ 5.,  8.]]])
    """
    if max_depth is not None and not (isinstance(max_depth, (int, float)) and max_depth > 0):
        raise ValueError(f"max_depth must be a positive number of depth units or None, got {max_depth!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    p = fit_scale_shift(pred, ref, mask, space=space, robust=robust, trim=trim, iters=iters)
    return Aligned(_apply(pred, p, space, max_depth, eps), p.scale, p.shift)


def aligned_kind(kind: str, reference_kind: str, space: str = "direct") -> str:
    """The kind of ``kind`` depth aligned to a ``reference_kind`` reference in ``space``: the reference's kind.

    The fit only makes sense when both run in one direction: ``"direct"`` needs both disparities (larger =
    nearer) or both depths (larger = farther); ``"disparity"`` aligns a disparity to a depth.

    Raises:
        ValueError: the kinds do not suit ``space``, saying which space to use.

    Example:
        >>> aligned_kind("disparity", "metric_depth", "disparity")
        'metric_depth'
        >>> aligned_kind("disparity", "metric_depth", "direct")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: depth (disparity) and reference (metric_depth) run in opposite directions ...
    """
    kind, reference_kind = check_kind(kind), check_kind(reference_kind)
    space = _check_choice(space, "space", SPACES)
    if space == "disparity" and (kind != DISPARITY or reference_kind == DISPARITY):
        raise ValueError(f"space 'disparity' aligns a disparity depth to a reference in depth units; got depth of "
                         f"kind {kind} and a reference of kind {reference_kind}: use space 'direct'")
    if space == "direct" and (kind == DISPARITY) != (reference_kind == DISPARITY):
        raise ValueError(f"depth ({kind}) and reference ({reference_kind}) run in opposite directions "
                         "(disparity: larger = nearer); use space 'disparity' to align a disparity to a depth")
    return reference_kind


def sample_depth(depth: Tensor, points: Tensor) -> Tensor:
    r"""Bilinear samples of depth maps at sub-pixel positions (e.g. where SfM / LiDAR points project).

    Pixel ``(x, y)`` has its centre at integer coordinates: ``x`` in ``[0, W - 1]`` left to right, ``y`` in
    ``[0, H - 1]`` top to bottom. Points outside the image give NaN (so :func:`fit_scale_shift` skips them).

    Args:
        depth: the maps.
        points: ``(x, y)`` pixel coordinates per sample.

    Returns:
        The values at the points, float32 (float64 for float64 maps).

    Shape:
        - depth: :math:`(B, H, W)`
        - points: :math:`(B, N, 2)`
        - output: :math:`(B, N)`

    Example:
        >>> d = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
        >>> sample_depth(d, torch.tensor([[[0.5, 0.5], [1.0, 0.0]]]))
        tensor([[1.5000, 1.0000]])
    """
    depth = _check_tensor(depth, "depth")
    points = _check_tensor(points, "points")
    if depth.ndim != 3:
        raise ValueError(f"depth must have shape (B, H, W), got {tuple(depth.shape)}")
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != depth.shape[0]:
        raise ValueError(f"points must have shape (B, N, 2) with (x, y) pixel coordinates and B = {depth.shape[0]}, "
                         f"got {tuple(points.shape)}")
    b, h, w = depth.shape
    work = depth.dtype if depth.dtype == torch.float64 else torch.float32
    pts = points.to(device=depth.device, dtype=work)
    # align_corners=True: -1 and +1 are the centres of the first and last pixels
    gx = pts[..., 0] * (2.0 / max(w - 1, 1)) - 1.0 if w > 1 else torch.zeros_like(pts[..., 0])
    gy = pts[..., 1] * (2.0 / max(h - 1, 1)) - 1.0 if h > 1 else torch.zeros_like(pts[..., 1])
    grid = torch.stack([gx, gy], dim=-1)[:, None]  # (B, 1, N, 2)
    out = F.grid_sample(depth.to(work)[:, None], grid, mode="bilinear", align_corners=True, padding_mode="border")[:, 0, 0]
    inside = (pts[..., 0] >= 0) & (pts[..., 0] <= w - 1) & (pts[..., 1] >= 0) & (pts[..., 1] <= h - 1)
    return torch.where(inside, out, torch.full_like(out, math.nan))


def align_to_points(
    pred: Tensor,
    points: Tensor,
    values: Tensor,
    mask: Tensor | None = None,
    *,
    space: str = "direct",
    robust: str | None = None,
    trim: float = 0.2,
    iters: int = 5,
    max_depth: float | None = None,
    eps: float = 1e-6,
) -> Aligned:
    r"""Align dense predictions to sparse reference samples (SfM points, LiDAR returns).

    ``pred`` is sampled at ``points`` (:func:`sample_depth`), :func:`fit_scale_shift` fits the samples to
    ``values``, and the fit is applied to the whole map. Pad samples of different lengths to one ``N``
    and mark the padding False in ``mask`` (or NaN in ``values``).

    Args:
        pred: dense predictions.
        points: ``(x, y)`` pixel coordinates of the samples.
        values: reference depth (or disparity) at the samples.
        mask: bool, True for samples to use.
        space, robust, trim, iters, max_depth, eps: as in :func:`align_scale_shift`.

    Returns:
        :class:`Aligned` with the aligned dense maps.

    Shape:
        - pred: :math:`(B, H, W)`
        - points: :math:`(B, N, 2)`; values, mask: :math:`(B, N)`
        - aligned: :math:`(B, H, W)`; scale, shift: :math:`(B,)`
    """
    values = _check_tensor(values, "values")
    samples = sample_depth(pred, points)
    if values.shape != samples.shape:
        raise ValueError(f"values must have shape (B, N) = {tuple(samples.shape)} like points[..., 0], got {tuple(values.shape)}")
    p = fit_scale_shift(samples, values, mask, space=space, robust=robust, trim=trim, iters=iters)
    if max_depth is not None and not max_depth > 0:
        raise ValueError(f"max_depth must be > 0 or None, got {max_depth!r}")
    return Aligned(_apply(pred, p, space, max_depth, eps), p.scale, p.shift)


# --------------------------------------------------------------------------------------------------
# losses


def _check_maps(pred: object, target: object, mask: object) -> tuple[Tensor, Tensor, Tensor]:
    pred = _check_tensor(pred, "pred")
    target = _check_tensor(target, "target")
    if pred.ndim != 3:
        raise ValueError(f"pred must have shape (B, H, W), got {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {tuple(pred.shape)}, got {tuple(target.shape)}")
    valid = torch.isfinite(target) & torch.isfinite(pred)
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask must be a bool torch.Tensor (True = use this pixel)")
        if mask.shape != pred.shape:
            raise ValueError(f"mask must have pred's shape {tuple(pred.shape)}, got {tuple(mask.shape)}")
        valid = valid & mask
    return pred, target, valid


def _reduce(per_image: Tensor, has: Tensor, reduction: str) -> Tensor:
    _check_choice(reduction, "reduction", ("mean", "none"))
    if reduction == "none":
        return per_image
    n = has.sum()
    return (per_image * has).sum() / n.clamp_min(1)


def _aligned_residual(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """``s·pred + t − target`` with the closed-form fit, zero where invalid; differentiable in pred."""
    b = pred.shape[0]
    x = torch.where(valid, pred, torch.zeros_like(pred)).reshape(b, -1)
    y = torch.where(valid, target, torch.zeros_like(target)).reshape(b, -1)
    w = valid.reshape(b, -1).to(x.dtype)
    p = _weighted_fit(x, y, w)
    r = (p.scale[:, None] * x + p.shift[:, None] - y) * w
    return r.reshape(pred.shape)


def ssi_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, *, reduction: str = "mean") -> Tensor:
    r"""Scale-and-shift-invariant loss: mean squared residual after the closed-form affine fit.

    .. math::

        \mathcal L_{ssi} = \frac{1}{M} \sum_i (s\,x_i + t - y_i)^2, \qquad
        (s, t) = \arg\min \sum_i (s\,x_i + t - y_i)^2

    per image over its ``M`` valid pixels (MiDaS, "Towards Robust Monocular Depth Estimation"; Depth
    Anything trains with this family of losses). Gradients flow through :math:`s, t` into ``pred``. It is
    0 exactly when ``pred`` is an affine copy of ``target`` on the valid pixels.

    Args:
        pred: predictions (e.g. disparity).
        target: references in the same space.
        mask: bool, True where ``target`` is valid.
        reduction: ``"mean"`` (over images with at least one valid pixel) or ``"none"`` (per image).

    Returns:
        A scalar, or ``(B,)`` with ``reduction="none"``.

    Shape:
        - pred, target, mask: :math:`(B, H, W)`

    Example:
        >>> x = torch.rand(2, 8, 8)
        >>> float(ssi_loss(x, 5 * x - 2)) < 1e-10
        True
    """
    pred, target, valid = _check_maps(pred, target, mask)
    r = _aligned_residual(pred, target, valid)
    m = valid.flatten(1).sum(1)
    per_image = r.square().flatten(1).sum(1) / m.clamp_min(1)
    return _reduce(per_image, m > 0, reduction)


def gradient_matching_loss(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, *, scales: int = 4, reduction: str = "mean"
) -> Tensor:
    r"""Multi-scale gradient-matching loss on the aligned residual (MiDaS), which sharpens edges.

    With :math:`R = s\,x + t - y` the residual after the closed-form fit (as in :func:`ssi_loss`) and
    :math:`R^k` its subsample with stride :math:`2^k`:

    .. math::

        \mathcal L_{gm} = \sum_{k=0}^{K-1} \frac{1}{M_k} \sum_i
            \left(|\nabla_x R^k_i| + |\nabla_y R^k_i|\right)

    where a difference counts only when both its pixels are valid and :math:`M_k` is the number of valid
    pixels at scale :math:`k`. Zero for an affine copy of ``target``; differentiable in ``pred``.

    Args:
        pred, target, mask: as in :func:`ssi_loss`.
        scales: number of scales :math:`K`, >= 1.
        reduction: ``"mean"`` or ``"none"``.

    Returns:
        A scalar, or ``(B,)`` with ``reduction="none"``.

    Shape:
        - pred, target, mask: :math:`(B, H, W)`
    """
    if not isinstance(scales, int) or isinstance(scales, bool) or scales < 1:
        raise ValueError(f"scales must be a positive integer, got {scales!r}")
    pred, target, valid = _check_maps(pred, target, mask)
    r = _aligned_residual(pred, target, valid)
    total = torch.zeros(pred.shape[0], dtype=r.dtype, device=r.device)
    for k in range(scales):
        step = 2**k
        rk, vk = r[:, ::step, ::step], valid[:, ::step, ::step]
        gx = (rk[:, :, 1:] - rk[:, :, :-1]).abs() * (vk[:, :, 1:] & vk[:, :, :-1])
        gy = (rk[:, 1:, :] - rk[:, :-1, :]).abs() * (vk[:, 1:, :] & vk[:, :-1, :])
        mk = vk.flatten(1).sum(1)
        total = total + (gx.flatten(1).sum(1) + gy.flatten(1).sum(1)) / mk.clamp_min(1)
    return _reduce(total, valid.flatten(1).any(1), reduction)


class ScaleShiftInvariantLoss(nn.Module):
    r"""MiDaS-style training loss: :func:`ssi_loss` + ``alpha`` × :func:`gradient_matching_loss`.

    Args:
        alpha: weight of the gradient term (0.5 in MiDaS; 0 disables it).
        scales: scales of the gradient term.

    Shape:
        - pred, target, mask: :math:`(B, H, W)`; output: scalar
    """

    def __init__(self, alpha: float = 0.5, scales: int = 4) -> None:
        super().__init__()
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.scales = scales

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        loss = ssi_loss(pred, target, mask)
        if self.alpha > 0:
            loss = loss + self.alpha * gradient_matching_loss(pred, target, mask, scales=self.scales)
        return loss


# --------------------------------------------------------------------------------------------------
# metrics


def _metric_valid(pred: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    pred, target, valid = _check_maps(pred, target, mask)
    return valid & (target > 0)


def abs_rel(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean absolute relative error :math:`\frac{1}{M}\sum |d_i - d^*_i| / d^*_i` per image.

    Computed over pixels where ``mask`` is True, both maps are finite and ``target > 0``. Align relative
    predictions first (:func:`evaluate_depth` does both). Images without a valid pixel give NaN.

    Shape:
        - pred, target, mask: :math:`(B, H, W)`; output: :math:`(B,)`
    """
    valid = _metric_valid(pred, target, mask)
    safe_t = torch.where(valid, target, torch.ones_like(target))
    err = torch.where(valid, (pred - target).abs() / safe_t, torch.zeros_like(pred))
    m = valid.flatten(1).sum(1)
    return torch.where(m > 0, err.flatten(1).sum(1) / m.clamp_min(1), torch.full_like(err[:, 0, 0], math.nan))


def delta1(pred: Tensor, target: Tensor, mask: Tensor | None = None, *, threshold: float = 1.25) -> Tensor:
    r"""Fraction of pixels with :math:`\max(d / d^*, d^* / d) < 1.25` per image (the δ1 accuracy).

    Pixels as in :func:`abs_rel`; a non-positive prediction counts as wrong. Images without a valid pixel
    give NaN.

    Shape:
        - pred, target, mask: :math:`(B, H, W)`; output: :math:`(B,)`
    """
    valid = _metric_valid(pred, target, mask)
    pos = pred > 0
    safe_p = torch.where(pos, pred, torch.ones_like(pred))
    safe_t = torch.where(valid, target, torch.ones_like(target))
    ratio = torch.maximum(safe_p / safe_t, safe_t / safe_p)
    good = valid & pos & (ratio < threshold)
    m = valid.flatten(1).sum(1)
    frac = good.flatten(1).sum(1).to(pred.dtype) / m.clamp_min(1)
    return torch.where(m > 0, frac, torch.full_like(frac, math.nan))


def evaluate_depth(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    space: str | None = "disparity",
    robust: str | None = None,
    max_depth: float | None = None,
) -> DepthMetrics:
    r"""AbsRel and δ1 of predictions against ground-truth depth, after scale-and-shift alignment.

    ``space="disparity"`` (the protocol for relative Depth Anything / MiDaS outputs): ``pred`` is a
    disparity, aligned to :math:`1 / target` and inverted (capped at ``max_depth``). ``space="direct"``:
    ``pred`` is a depth aligned directly. ``space=None``: no alignment (metric predictions).

    Args:
        pred: predictions.
        target: ground-truth depth (> 0 where valid).
        mask: bool, True where ``target`` is valid.
        space: ``"disparity"``, ``"direct"`` or None.
        robust: as in :func:`fit_scale_shift`.
        max_depth: depth cap of the evaluation (e.g. 10 for NYU, 80 for KITTI).

    Returns:
        :class:`DepthMetrics` of ``(B,)`` tensors (scale 1 / shift 0 without alignment).

    Shape:
        - pred, target, mask: :math:`(B, H, W)`
    """
    _check_maps(pred, target, mask)
    if space is None:
        aligned = pred if max_depth is None else pred.clamp(max=max_depth)
        ones = torch.ones(pred.shape[0], dtype=pred.dtype, device=pred.device)
        scale, shift = ones, torch.zeros_like(ones)
    else:
        fit_mask = (target > 0) if mask is None else (mask & (target > 0))
        aligned, scale, shift = align_scale_shift(pred, target, fit_mask, space=space, robust=robust, max_depth=max_depth)
        if max_depth is not None and space == "direct":
            aligned = aligned.clamp(max=max_depth)
    target = target.to(aligned.dtype)
    return DepthMetrics(abs_rel(aligned, target, mask), delta1(aligned, target, mask), scale, shift)
