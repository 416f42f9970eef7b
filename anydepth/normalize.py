"""Turn raw depth maps into depth-ControlNet control images and colour previews.

Depth ControlNets (SD1.5/SDXL/Flux "depth" models trained on MiDaS / Depth Anything output) expect a
grey image where **near is white (1.0) and far is black (0.0)**. Raw depth is not like that:

* ``"disparity"`` (V1/V2 relative heads) is *inverse* depth: larger = nearer. It already has the
  right orientation but an arbitrary scale and shift, so it only needs rescaling to ``[0, 1]``.
* ``"metric_depth"`` (metres) and ``"depth"`` (relative) are larger = farther. They are flipped to
  disparity with :math:`1 / \\max(d, \\epsilon)` (see :func:`to_disparity`), which both makes near
  bright and spends more of the grey range on the foreground, as the ControlNets were trained.

:func:`normalize_depth` offers four modes (:data:`NORMALIZE_MODES`):

* ``"v2_style"``: disparity clipped to its per-image ``[1 %, 99 %]`` percentiles, then rescaled;
  robust to a few outlier pixels (sky, reflections). The default.
* ``"minmax"``: disparity min-max rescaled, per image or over the whole batch
  (``scope="batch"``: the same mapping for every frame of a video, so no flicker).
* ``"metric_linear"``: metres mapped linearly, :math:`(far - d) / (far - near)`.
* ``"metric_disparity"``: metres mapped in inverse depth,
  :math:`(1/d - 1/far) / (1/near - 1/far)`.

Pixels that are NaN or infinite in the input are ignored by every statistic and come out as ``0``
(black, i.e. "far"), even with ``invert=True``; the output never contains NaN.

:func:`to_image`, :func:`to_uint8`, :func:`to_uint16` and :func:`to_pil` convert a ``[0, 1]`` map
to ComfyUI's IMAGE layout, integer arrays and PIL images; :func:`apply_colormap` makes colour
previews (turbo, inferno, viridis, spectral, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .kinds import DISPARITY, METRIC_DEPTH, check_kind

__all__ = [
    "COLORMAPS",
    "NORMALIZE_MODES",
    "NORMALIZE_OPTIONS",
    "RELATIVE_MODES",
    "SCOPES",
    "NormalizeOption",
    "apply_colormap",
    "clip_sky",
    "normalize_depth",
    "to_disparity",
    "to_image",
    "to_pil",
    "to_uint8",
    "to_uint16",
]

NormalizeMode = Literal["v2_style", "minmax", "metric_linear", "metric_disparity"]
NORMALIZE_MODES: tuple[str, ...] = ("v2_style", "minmax", "metric_linear", "metric_disparity")
"""Modes accepted by :func:`normalize_depth`."""

SCOPES: tuple[str, ...] = ("image", "batch")
"""Where :func:`normalize_depth` takes its statistics: each image alone, or the whole batch."""

_METRIC_MODES = ("metric_linear", "metric_disparity")

_QUANTILE_MAX_ELEMENTS = 2**24
"""``torch.quantile``/``torch.nanquantile`` refuse inputs with more elements than this (16 777 216)."""


# --------------------------------------------------------------------------------------------------
# validation helpers


def _check_depth(depth: object, name: str = "depth") -> Tensor:
    if not isinstance(depth, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B,H,W), got {type(depth).__name__}")
    if not depth.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {depth.dtype}; convert it with .float()")
    if depth.ndim != 3:
        hint = "; use x[None] for one map" if depth.ndim == 2 else ""
        raise ValueError(f"{name} must have shape (B,H,W), got {tuple(depth.shape)}: pass (B,H,W){hint}")
    if depth.shape[0] < 1 or depth.shape[1] < 1 or depth.shape[2] < 1:
        raise ValueError(f"{name} must have B, H and W >= 1, got shape {tuple(depth.shape)}")
    return depth


def _check_x01(x01: object, name: str = "x01") -> Tensor:
    """A grey ``(B,H,W)`` map, or an RGB ``(B,H,W,3)`` image such as :func:`apply_colormap` returns."""
    if isinstance(x01, Tensor) and x01.ndim == 4 and x01.shape[-1] == 3 and x01.is_floating_point():
        return x01
    return _check_depth(x01, name)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float16/bfloat16/float32 are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value  # type: ignore[return-value]


def _check_bound(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in metres or None, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite distance >= 0 in metres, got {value}")
    return value


# --------------------------------------------------------------------------------------------------
# statistics (batched, finite values only)


def _masked_minmax(x: Tensor, valid: Tensor, scope: str) -> tuple[Tensor, Tensor]:
    """Min and max of the valid values, shaped (B,1,1) (scope image) or (1,1,1) (scope batch).

    Samples without a valid value get min = max = 0.
    """
    dims = (1, 2) if scope == "image" else (0, 1, 2)
    lo = torch.where(valid, x, torch.full_like(x, math.inf)).amin(dim=dims, keepdim=True)
    hi = torch.where(valid, x, torch.full_like(x, -math.inf)).amax(dim=dims, keepdim=True)
    empty = ~valid.any(dim=dims, keepdim=True) if scope == "image" else ~valid.any().reshape(1, 1, 1)
    lo = torch.where(empty, torch.zeros_like(lo), lo)
    hi = torch.where(empty, torch.zeros_like(hi), hi)
    return lo, hi


def _masked_quantiles(x: Tensor, valid: Tensor, q_low: float, q_high: float, scope: str) -> tuple[Tensor, Tensor]:
    """Low/high quantiles (``q`` in [0, 1]) of the valid values, shaped like :func:`_masked_minmax`.

    Uses ``torch.nanquantile`` (linear interpolation, same as ``numpy.percentile``'s default) on all
    rows at once. ``torch.nanquantile`` refuses more than 2**24 elements in total, so a larger input
    is subsampled deterministically: every ``stride``-th pixel in row-major order of each row, with
    ``stride = ceil(numel / 2**24)``. Samples without a valid value get 0 for both quantiles.
    """
    rows = x.reshape(x.shape[0], -1) if scope == "image" else x.reshape(1, -1)
    rows = torch.where(valid.reshape(rows.shape), rows, torch.full_like(rows, math.nan))
    stride = -(-rows.numel() // _QUANTILE_MAX_ELEMENTS)
    if stride > 1:
        rows = rows[:, ::stride]
    q = torch.tensor([q_low, q_high], dtype=rows.dtype, device=rows.device)
    lo, hi = torch.nanquantile(rows, q, dim=1).reshape(2, -1, 1, 1).unbind(0)  # all-NaN rows give NaN
    lo = torch.nan_to_num(lo, nan=0.0)
    hi = torch.nan_to_num(hi, nan=0.0)
    return lo, hi


def _scale01(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Map ``x`` (larger = nearer) linearly so that ``lo`` -> 0 and ``hi`` -> 1, clipped to [0, 1].

    Where ``hi <= lo`` (a constant image, or bounds that cross) the map is a step: 1 where
    ``x > hi``, else 0, so a constant image becomes all zeros and nothing is divided by zero.
    """
    span = hi - lo
    ok = span > 0
    scaled = ((x - lo) / torch.where(ok, span, torch.ones_like(span))).clamp(0.0, 1.0)
    return torch.where(ok, scaled, (x > hi).to(x.dtype))


# --------------------------------------------------------------------------------------------------
# public API: normalisation


def to_disparity(depth: Tensor, kind: str, eps: float = 1e-6) -> Tensor:
    r"""Convert a raw depth map to disparity (inverse depth, larger = nearer).

    .. math::

        D = \begin{cases} d & \text{kind = disparity} \\
                           1 / \max(d, \epsilon) & \text{kind = metric\_depth or depth} \end{cases}

    NaN stays NaN; ``+inf`` depth becomes disparity 0. The input is never modified; the result is a
    new tensor (float32, or float64 for a float64 input: float16 would overflow at ``1/eps``).

    Args:
        depth: raw depth map.
        kind: one of :data:`anydepth.kinds.ALL_KINDS`.
        eps: smallest depth used in the division, > 0.

    Returns:
        The disparity map.

    Shape:
        - depth: :math:`(B, H, W)`
        - output: :math:`(B, H, W)`

    Example:
        >>> to_disparity(torch.tensor([[[0.5, 2.0]]]), "metric_depth")
        tensor([[[2.0000, 0.5000]]])
    """
    depth = _check_depth(depth)
    kind = check_kind(kind)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    x = depth.to(_work_dtype(depth.dtype), copy=True)
    if kind == DISPARITY:
        return x
    return x.clamp_min_(eps).reciprocal_()


SKY_FAR_PERCENTILE = 98.0
"""Sky pixels get this percentile of the other pixels' depth (the official DA3 export's ``sky_depth_def``)."""


def clip_sky(depth: Tensor, kind: str, sky: Tensor, *, threshold: float = 0.5,
             percentile: float = SKY_FAR_PERCENTILE) -> Tensor:
    r"""Send sky pixels to the far end of each image, as the official Depth Anything 3 render does.

    A pixel is sky where ``sky >= threshold`` (a sky score or a 0/1 mask, e.g. Any-View Geometry's ``sky_mask``).
    Its value becomes the ``percentile`` of the image's other finite depth values (``100 - percentile`` for
    ``disparity``, where far is small), so sky is as far as the farthest scenery without stretching the range
    the way a raw sky prediction (often huge or zero) would. Images with no sky, or with fewer than 10 other
    pixels, are left as they are. The input is not modified.

    Args:
        depth: raw depth map.
        kind: one of :data:`anydepth.kinds.ALL_KINDS` (which end is far).
        sky: sky score or mask, same shape as ``depth`` (any float or bool dtype).
        threshold: sky where ``sky >= threshold``.
        percentile: in ``[0, 100]``.

    Shape:
        - depth, sky: :math:`(B, H, W)`
        - output: :math:`(B, H, W)`

    Example:
        >>> d = torch.tensor([[[1.0, 2.0, 3.0, 500.0]] * 4])  # the last column is sky, predicted far too far
        >>> sky = torch.tensor([[[0.0, 0.0, 0.0, 1.0]] * 4])
        >>> clip_sky(d, "depth", sky, percentile=100.0)[0, 0]
        tensor([1., 2., 3., 3.])
    """
    depth = _check_depth(depth)
    kind = check_kind(kind)
    if not isinstance(sky, Tensor) or tuple(sky.shape) != tuple(depth.shape):
        shape = tuple(sky.shape) if isinstance(sky, Tensor) else type(sky).__name__
        raise ValueError(f"sky must be a mask of the depth's shape {tuple(depth.shape)} (a ComfyUI MASK of the same "
                         f"images), got {shape}")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    out = depth.to(_work_dtype(depth.dtype), copy=True)
    is_sky = sky.to(device=depth.device).float() >= threshold
    q = (100.0 - percentile if kind == DISPARITY else percentile) / 100.0
    for i in range(out.shape[0]):  # per image: each has its own number of non-sky pixels
        rest = out[i][~is_sky[i] & torch.isfinite(out[i])]
        if not is_sky[i].any() or rest.numel() < 10:
            continue
        far = torch.quantile(rest[:: -(-rest.numel() // _QUANTILE_MAX_ELEMENTS)], q)
        out[i] = torch.where(is_sky[i], far, out[i])
    return out


def normalize_depth(
    depth: Tensor,
    kind: str,
    mode: str = "v2_style",
    *,
    scope: str = "image",
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
    near: float | None = None,
    far: float | None = None,
    invert: bool = False,
    gamma: float = 1.0,
    eps: float = 1e-6,
) -> Tensor:
    r"""Normalise raw depth to a ControlNet control map in ``[0, 1]`` with near = 1.0 (white).

    With :math:`D` the disparity (:func:`to_disparity`) and :math:`d` the metric depth:

    - ``"v2_style"``: :math:`x = (\mathrm{clip}(D, p_{lo}, p_{hi}) - p_{lo}) / (p_{hi} - p_{lo})`, with
      :math:`p_{lo}, p_{hi}` the ``low_percentile``/``high_percentile`` of the finite :math:`D` values.
    - ``"minmax"``: :math:`x = (D - \min D) / (\max D - \min D)`.
    - ``"metric_linear"`` (kind ``metric_depth`` only): :math:`x = \mathrm{clip}((far - d) / (far - near), 0, 1)`.
    - ``"metric_disparity"`` (kind ``metric_depth`` only):
      :math:`x = \mathrm{clip}((1/d - 1/far) / (1/near - 1/far), 0, 1)`, with :math:`1/\max(\cdot, \epsilon)`.

    ``near``/``far`` (metres) default to the min/max of the finite depth values. Statistics are taken
    per image (``scope="image"``) or over the whole batch (``scope="batch"``: one mapping for every
    frame of a video, no flicker). Then :math:`x \leftarrow 1 - x` if ``invert`` and
    :math:`x \leftarrow x^{\gamma}`.

    Degenerate input is safe: a constant image gives all zeros; NaN/inf pixels are left out of the
    statistics and are 0 in the output (also with ``invert``); an all-NaN image gives zeros. When a
    given ``far`` is nearer than the whole image (or a given ``near`` farther), every pixel becomes
    0 (resp. 1). For more than 2**24 pixels in total, ``v2_style`` percentiles are computed on a
    deterministic strided subsample (see :func:`_masked_quantiles`).

    Args:
        depth: raw depth map (any float dtype; not modified).
        kind: what ``depth`` holds, one of :data:`anydepth.kinds.ALL_KINDS`.
        mode: one of :data:`NORMALIZE_MODES`.
        scope: ``"image"`` or ``"batch"``.
        low_percentile: lower clip percentile in ``[0, 100)`` (``v2_style``).
        high_percentile: upper clip percentile in ``(low_percentile, 100]`` (``v2_style``).
        near: distance in metres that becomes white (metric modes); ``None``: nearest pixel.
        far: distance in metres that becomes black (metric modes); ``None``: farthest pixel.
        invert: swap white and black (near = black).
        gamma: exponent applied last, > 0; below 1 brightens the far range.
        eps: smallest depth used when dividing, > 0.

    Returns:
        The control map, values in ``[0, 1]``, never NaN; float32 (float64 for a float64 input).

    Shape:
        - depth: :math:`(B, H, W)`
        - output: :math:`(B, H, W)`

    Example:
        >>> normalize_depth(torch.tensor([[[1.0, 2.0, 4.0]]]), "metric_depth", "metric_linear")
        tensor([[[1.0000, 0.6667, 0.0000]]])
        >>> normalize_depth(torch.tensor([[[1.0, 2.0, 4.0]]]), "disparity", "minmax")
        tensor([[[0.0000, 0.3333, 1.0000]]])
    """
    depth = _check_depth(depth)
    kind = check_kind(kind)
    mode = _check_choice(mode, "mode", NORMALIZE_MODES)
    scope = _check_choice(scope, "scope", SCOPES)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if not gamma > 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number > 0, got {gamma}")
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ValueError(
            "percentiles must satisfy 0 <= low_percentile < high_percentile <= 100, "
            f"got low_percentile={low_percentile}, high_percentile={high_percentile}"
        )
    if mode in _METRIC_MODES and kind != METRIC_DEPTH:
        raise ValueError(
            f"mode {mode!r} needs metric depth in metres (kind {METRIC_DEPTH!r}), but depth has kind {kind!r}; "
            "use mode='v2_style' or mode='minmax' for relative maps"
        )
    near = _check_bound(near, "near")
    far = _check_bound(far, "far")
    if near is not None and far is not None and near >= far:
        raise ValueError(f"near must be smaller than far, got near={near} m, far={far} m")

    x = depth.to(_work_dtype(depth.dtype), copy=True)
    valid = torch.isfinite(x)
    x = torch.where(valid, x, torch.zeros_like(x))  # keep NaN/inf out of every later op

    if mode in ("v2_style", "minmax"):
        disp = x if kind == DISPARITY else x.clamp_min(eps).reciprocal()
        if mode == "v2_style":
            lo, hi = _masked_quantiles(disp, valid, low_percentile / 100.0, high_percentile / 100.0, scope)
        else:
            lo, hi = _masked_minmax(disp, valid, scope)
        out = _scale01(disp, lo, hi)
    else:
        d_min, d_max = _masked_minmax(x, valid, scope)
        near_t = d_min if near is None else torch.full_like(d_min, near)
        far_t = d_max if far is None else torch.full_like(d_max, far)
        if mode == "metric_linear":
            # nearness -d: far -> 0, near -> 1
            out = _scale01(-x, -far_t, -near_t)
        else:
            inv = lambda t: t.clamp_min(eps).reciprocal()  # noqa: E731
            out = _scale01(inv(x), inv(far_t), inv(near_t))

    if invert:
        out = 1.0 - out
    if gamma != 1.0:
        out = out.pow(gamma)
    return torch.where(valid, out, torch.zeros_like(out))


# --------------------------------------------------------------------------------------------------
# public API: output formats


def to_image(x01: Tensor) -> Tensor:
    r"""Grey ``[0, 1]`` map to a ComfyUI IMAGE: float32, channels last, grey repeated in R, G, B.

    Values are clamped to ``[0, 1]`` and NaN becomes 0.

    Args:
        x01: map in ``[0, 1]``, e.g. from :func:`normalize_depth`.

    Returns:
        The image, float32, on the device of ``x01``.

    Shape:
        - x01: :math:`(B, H, W)`
        - output: :math:`(B, H, W, 3)`

    Example:
        >>> to_image(torch.tensor([[[0.0, 0.5]]])).shape
        torch.Size([1, 1, 2, 3])
    """
    x = _clean01(_check_x01(x01))
    return x[..., None].expand(-1, -1, -1, 3).contiguous()


def _clean01(x: Tensor) -> Tensor:
    return torch.nan_to_num(x.to(_work_dtype(x.dtype)), nan=0.0).clamp(0.0, 1.0)


def to_uint8(x01: Tensor) -> np.ndarray:
    r"""Quantise a ``[0, 1]`` map to 8 bits: :math:`\mathrm{round}(255 x)` (clamped, NaN -> 0).

    Args:
        x01: map in ``[0, 1]``.

    Returns:
        A numpy array of dtype uint8 (on the CPU).

    Shape:
        - x01: :math:`(B, H, W)` or an RGB :math:`(B, H, W, 3)`
        - output: the same shape

    Example:
        >>> to_uint8(torch.tensor([[[0.0, 0.5, 1.0]]]))
        array([[[  0, 128, 255]]], dtype=uint8)
    """
    x = _clean01(_check_x01(x01))
    return (x * 255.0).round().to(torch.uint8).cpu().numpy()


def to_uint16(x01: Tensor) -> np.ndarray:
    r"""Quantise a ``[0, 1]`` map to 16 bits: :math:`\mathrm{round}(65535 x)` (clamped, NaN -> 0).

    Args:
        x01: map in ``[0, 1]``.

    Returns:
        A numpy array of dtype uint16 (on the CPU).

    Shape:
        - x01: :math:`(B, H, W)`
        - output: :math:`(B, H, W)`

    Example:
        >>> to_uint16(torch.tensor([[[0.0, 0.5, 1.0]]]))
        array([[[    0, 32768, 65535]]], dtype=uint16)
    """
    x = _clean01(_check_x01(x01))
    # int32 as the intermediate: torch has no uint16 arithmetic on every backend
    return (x * 65535.0).round().to(torch.int32).cpu().numpy().astype(np.uint16)


_PIL_MODES = ("L", "RGB", "I;16")


def to_pil(x01: Tensor, mode: str = "L") -> list:
    r"""Convert a ``[0, 1]`` map to one PIL image per batch element.

    ``"L"``: 8-bit grey; ``"RGB"``: 8-bit grey in three channels; ``"I;16"``: 16-bit grey (save as PNG
    to keep all 16 bits).

    Args:
        x01: map in ``[0, 1]``.
        mode: ``"L"``, ``"RGB"`` or ``"I;16"``.

    Returns:
        A list of ``B`` ``PIL.Image.Image`` of size ``(W, H)``.

    Shape:
        - x01: :math:`(B, H, W)`

    Example:
        >>> [im.size for im in to_pil(torch.zeros(2, 3, 4))]
        [(4, 3), (4, 3)]
    """
    from PIL import Image

    mode = _check_choice(mode, "PIL mode", _PIL_MODES)
    arr = to_uint16(x01) if mode == "I;16" else to_uint8(x01)
    if mode == "RGB":
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return [Image.fromarray(np.ascontiguousarray(a)) for a in arr]


# --------------------------------------------------------------------------------------------------
# colour maps

# matplotlib "inferno" (CC0, by Stéfan van der Walt and Nathaniel Smith): every 3rd of its 256
# entries (86 points, indices 0, 3, ..., 255). Linear interpolation between them stays within
# 0.26/255 of the full table.
_INFERNO = (
    (0.001462, 0.000466, 0.013866), (0.004547, 0.003392, 0.030909), (0.009561, 0.007713, 0.055143),
    (0.016561, 0.013136, 0.080282), (0.025793, 0.019331, 0.105930), (0.037668, 0.025921, 0.132232),
    (0.051644, 0.032474, 0.159254), (0.066331, 0.038504, 0.186962), (0.081962, 0.043328, 0.215289),
    (0.098702, 0.046402, 0.243904), (0.116656, 0.047574, 0.272321), (0.135778, 0.046856, 0.299776),
    (0.155850, 0.044559, 0.325338), (0.176493, 0.041402, 0.348111), (0.197297, 0.038400, 0.367535),
    (0.217949, 0.036615, 0.383522), (0.238273, 0.036621, 0.396353), (0.258234, 0.038571, 0.406485),
    (0.277850, 0.042353, 0.414392), (0.297178, 0.047470, 0.420491), (0.316282, 0.053490, 0.425116),
    (0.335217, 0.060060, 0.428524), (0.354032, 0.066925, 0.430906), (0.372768, 0.073915, 0.432400),
    (0.391453, 0.080927, 0.433109), (0.410113, 0.087896, 0.433098), (0.428768, 0.094790, 0.432412),
    (0.447428, 0.101597, 0.431080), (0.466100, 0.108322, 0.429125), (0.484789, 0.114974, 0.426548),
    (0.503493, 0.121575, 0.423356), (0.522206, 0.128150, 0.419549), (0.540920, 0.134729, 0.415123),
    (0.559624, 0.141346, 0.410078), (0.578304, 0.148039, 0.404411), (0.596940, 0.154848, 0.398125),
    (0.615513, 0.161817, 0.391219), (0.633998, 0.168992, 0.383704), (0.652369, 0.176421, 0.375586),
    (0.670599, 0.184153, 0.366879), (0.688653, 0.192239, 0.357603), (0.706500, 0.200728, 0.347777),
    (0.724103, 0.209670, 0.337424), (0.741423, 0.219112, 0.326576), (0.758422, 0.229097, 0.315266),
    (0.775059, 0.239667, 0.303526), (0.791293, 0.250856, 0.291390), (0.807082, 0.262692, 0.278898),
    (0.822386, 0.275197, 0.266085), (0.837165, 0.288385, 0.252988), (0.851384, 0.302260, 0.239636),
    (0.865006, 0.316822, 0.226055), (0.878001, 0.332060, 0.212268), (0.890341, 0.347957, 0.198286),
    (0.902003, 0.364492, 0.184116), (0.912966, 0.381636, 0.169755), (0.923215, 0.399359, 0.155193),
    (0.932737, 0.417627, 0.140417), (0.941521, 0.436405, 0.125409), (0.949562, 0.455660, 0.110164),
    (0.956852, 0.475356, 0.094695), (0.963387, 0.495462, 0.079073), (0.969163, 0.515946, 0.063488),
    (0.974176, 0.536780, 0.048392), (0.978422, 0.557937, 0.034931), (0.981895, 0.579392, 0.026250),
    (0.984591, 0.601122, 0.023606), (0.986502, 0.623105, 0.027814), (0.987622, 0.645320, 0.039886),
    (0.987945, 0.667748, 0.058329), (0.987464, 0.690366, 0.079990), (0.986175, 0.713153, 0.103863),
    (0.984075, 0.736087, 0.129527), (0.981173, 0.759135, 0.156863), (0.977497, 0.782258, 0.185923),
    (0.973088, 0.805409, 0.216877), (0.968041, 0.828515, 0.249972), (0.962517, 0.851476, 0.285546),
    (0.956834, 0.874129, 0.323974), (0.951546, 0.896226, 0.365627), (0.947594, 0.917399, 0.410665),
    (0.946403, 0.937159, 0.458592), (0.949545, 0.955063, 0.507860), (0.957896, 0.971003, 0.556275),
    (0.971162, 0.985282, 0.602154), (0.988362, 0.998364, 0.644924),
)  # fmt: skip

# ColorBrewer "Spectral" (11 classes), the control points of matplotlib's "Spectral": 0 = dark red,
# 1 = blue-violet. "spectral_r" (near = red, far = blue) is the look of the Depth Anything demos.
_SPECTRAL_HEX = (
    "9e0142", "d53e4f", "f46d43", "fdae61", "fee08b", "ffffbf", "e6f598", "abdda4", "66c2a5", "3288bd", "5e4fa2",
)  # fmt: skip
_SPECTRAL = tuple(tuple(int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4)) for h in _SPECTRAL_HEX)

_KORNIA_MAPS = ("turbo", "viridis", "plasma", "cividis", "jet")

COLORMAPS: tuple[str, ...] = (
    "gray", "turbo", "inferno", "viridis", "plasma", "cividis", "jet", "spectral", "spectral_r",
)  # fmt: skip
"""Names accepted by :func:`apply_colormap` (case-insensitive)."""

_LUT_CACHE: dict[str, Tensor] = {}


def _lut(name: str) -> Tensor:
    """The (N, 3) float32 CPU control points of a colour map, evenly spaced over [0, 1]."""
    lut = _LUT_CACHE.get(name)
    if lut is None:
        if name in _KORNIA_MAPS:
            from kornia.color import ColorMap

            # kornia 0.9's base tables have 64 entries: resampling to 64 returns them unchanged
            # (a different size would shift the interior colours, linear with align_corners=False).
            lut = ColorMap(base=name, num_colors=64, dtype=torch.float32).colors.T.contiguous()
        elif name == "inferno":
            lut = torch.tensor(_INFERNO, dtype=torch.float32)
        elif name == "spectral":
            lut = torch.tensor(_SPECTRAL, dtype=torch.float32)
        elif name == "spectral_r":
            lut = torch.tensor(_SPECTRAL[::-1], dtype=torch.float32)
        else:  # pragma: no cover - guarded by COLORMAPS
            raise ValueError(name)
        _LUT_CACHE[name] = lut
    return lut


def apply_colormap(x01: Tensor, name: str = "turbo") -> Tensor:
    r"""Colour a ``[0, 1]`` map with a named colour map (for previews, not for ControlNets).

    The map's :math:`N` evenly spaced control points :math:`c_k` are interpolated linearly:
    with :math:`t = (N - 1)\,\mathrm{clip}(x, 0, 1)` and :math:`k = \min(\lfloor t \rfloor, N - 2)`,
    :math:`\mathrm{rgb} = c_k + (t - k)(c_{k+1} - c_k)`. NaN is treated as 0. turbo, viridis, plasma,
    cividis and jet come from ``kornia.color.ColorMap``; inferno and spectral are built in
    (matplotlib's tables). ``"gray"`` repeats the value.

    Args:
        x01: map in ``[0, 1]``, e.g. from :func:`normalize_depth` (near = 1).
        name: one of :data:`COLORMAPS`, case-insensitive.

    Returns:
        RGB image, float32 in ``[0, 1]``, channels last (ComfyUI IMAGE layout).

    Shape:
        - x01: :math:`(B, H, W)`
        - output: :math:`(B, H, W, 3)`

    Example:
        >>> apply_colormap(torch.tensor([[[0.0, 1.0]]]), "viridis")
        tensor([[[[0.2670, 0.0049, 0.3294],
                  [0.9932, 0.9062, 0.1439]]]])
    """
    x01 = _check_x01(x01)
    if not isinstance(name, str) or name.lower() not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; expected one of {', '.join(COLORMAPS)}")
    name = name.lower()
    x = torch.nan_to_num(x01.float(), nan=0.0).clamp(0.0, 1.0)
    if name == "gray":
        return x[..., None].expand(-1, -1, -1, 3).contiguous()
    lut = _lut(name).to(x.device)
    n = lut.shape[0]
    t = x * (n - 1)
    k = t.floor().long().clamp(0, n - 2)
    w = (t - k.to(t.dtype))[..., None]
    c0 = lut[k]
    c1 = lut[k + 1]
    return (c0 + (c1 - c0) * w).clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# public API: the options, defined once for every door (CLI flags, ComfyUI inputs)


@dataclass(frozen=True)
class NormalizeOption:
    """One normalisation option as every door shows it: name, type, default, range and help text.

    The command line (:mod:`anydepth.cli.options`) and the ComfyUI nodes (``nodes/options.py``) build their
    flags and inputs from :data:`NORMALIZE_OPTIONS`, so a default or a help text is changed here only.

    Attributes:
        name: keyword of :func:`normalize_depth` (``colormap``: of :func:`apply_colormap`); the node input id.
        type: ``str`` (a choice), ``float`` or ``bool``.
        default: the library's default (``None`` for ``near``/``far``: the nearest/farthest pixel; for
            ``colormap``: grey, no colour map).
        help: what the option does, one door-neutral sentence.
        choices: the allowed values of a ``str`` option.
        min, max, step: the range a UI offers for a ``float`` option.
        unset: the number a UI without ``None`` shows for the ``None`` default (``0`` for ``near``/``far``).
        unset_help: what ``None`` (or ``unset``) means, e.g. ``"the nearest pixel"``.
        cli_flag: the command-line flag when it is not ``--`` + the name with ``-`` for ``_`` (:attr:`flag`
            gives the flag either way).

    Example:
        >>> NORMALIZE_OPTIONS["gamma"].default, NORMALIZE_OPTIONS["mode"].flag
        (1.0, '--normalize')
        >>> NORMALIZE_OPTIONS["near"].from_ui(0.0) is None
        True
    """

    name: str
    type: type
    default: object
    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    unset: float | None = None
    unset_help: str | None = None
    cli_flag: str | None = None

    @property
    def flag(self) -> str:
        return self.cli_flag or "--" + self.name.replace("_", "-")

    def from_ui(self, value: object) -> object:
        """A UI value as the library takes it: :attr:`unset` becomes ``None``."""
        return None if self.unset is not None and value == self.unset else value


NORMALIZE_OPTIONS: dict[str, NormalizeOption] = {o.name: o for o in (
    NormalizeOption("mode", str, "v2_style", choices=NORMALIZE_MODES, cli_flag="--normalize",
                    help="how raw depth becomes an image. v2_style: disparity clipped to the low/high percentiles (the "
                         "Depth Anything look). minmax: disparity min-max. metric_linear / metric_disparity (metric "
                         "models only): metres between near and far, linear or in 1/depth"),
    NormalizeOption("scope", str, "image", choices=SCOPES,
                    help="statistics per image, or over the whole batch (one mapping for all video frames: no flicker)"),
    NormalizeOption("low_percentile", float, 1.0, min=0.0, max=100.0, step=0.1,
                    help="v2_style: percentile of the disparity that becomes black"),
    NormalizeOption("high_percentile", float, 99.0, min=0.0, max=100.0, step=0.1,
                    help="v2_style: percentile of the disparity that becomes white"),
    NormalizeOption("near", float, None, min=0.0, max=10000.0, step=0.01, unset=0.0, unset_help="the nearest pixel",
                    help="metric modes: distance in metres that becomes white"),
    NormalizeOption("far", float, None, min=0.0, max=10000.0, step=0.01, unset=0.0, unset_help="the farthest pixel",
                    help="metric modes: distance in metres that becomes black"),
    NormalizeOption("invert", bool, False, help="swap black and white (near = black)"),
    NormalizeOption("gamma", float, 1.0, min=0.05, max=10.0, step=0.01,
                    help="exponent applied last; below 1 brightens the far range"),
    NormalizeOption("colormap", str, None, choices=COLORMAPS, unset_help="grey",
                    help="colour map of a preview image (not for ControlNets)"),
)}
"""Every normalisation option by name (see :class:`NormalizeOption`); defaults match :func:`normalize_depth`."""

RELATIVE_MODES: tuple[str, ...] = tuple(m for m in NORMALIZE_MODES if m not in _METRIC_MODES)
"""The modes that work for every kind of depth (the metric modes need metres)."""
