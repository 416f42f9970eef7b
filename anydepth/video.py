r"""Temporally stable depth for video: per-frame scale/shift alignment, clip normalisation, flicker.

An image depth model run frame by frame gives each frame its own scale and shift (relative models) or a
slightly different metric scale; played back, the depth flickers. Alignment removes it:

- :func:`stabilize_depth` aligns every frame to a reference with the closed-form (optionally robust)
  scale/shift solver of :mod:`anydepth.align`, fitted on static pixels when a mask is given:

  * ``mode="running"``: the reference starts as the first frame (so the output keeps its units, e.g.
    metres) and follows the clip as an exponential moving average of the aligned frames,
    :math:`R \leftarrow (1 - m) R + m\,\hat d_t`. Sequential by nature; streams across chunks.
  * ``mode="clip"``: one reference for the clip, the per-pixel temporal median of the frames after
    each is standardised (median / mean absolute deviation), brought back to the clip's typical units;
    all frames are aligned to it in one batched solve.

- :func:`estimate_video` / :func:`iter_video_depth` run a :class:`~anydepth.DepthEstimator` over a long
  clip in chunks so memory stays bounded: chunk by chunk, the running reference carries over (``running``),
  or each chunk's own clip reference is tied to the previous chunk through ``overlap`` shared frames
  (``clip``: a sliding window).
- :func:`normalize_clip` maps a clip to a control video in ``0..1`` with one mapping for the whole clip or
  bounds smoothed over a sliding window, so brightness does not pump from frame to frame.
- :func:`flicker` measures what is left: the mean absolute temporal difference on static pixels,
  relative to the clip's spread; :func:`static_mask` finds static pixels from the colour frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .align import ROBUST, _check_choice, _masked_median, fit_scale_shift
from .estimator import DepthResult
from .kinds import DISPARITY, check_kind
from .normalize import _masked_quantiles, _scale01, normalize_depth

__all__ = [
    "STABILIZE_MODES",
    "Stabilized",
    "VideoDepth",
    "estimate_video",
    "flicker",
    "iter_video_depth",
    "normalize_clip",
    "stabilize_depth",
    "static_mask",
]

STABILIZE_MODES: tuple[str, ...] = ("running", "clip")
"""Reference used by :func:`stabilize_depth`."""


class Stabilized(NamedTuple):
    """Aligned frames and the per-frame affine maps applied (``depth = scale * raw + shift``).

    ``reference`` is the running reference after the last frame (pass it as ``reference=`` to continue a
    stream), or the clip reference in ``"clip"`` mode.

    Shape:
        depth: ``(T, H, W)``; scale, shift: ``(T,)``; reference: ``(H, W)``.
    """

    depth: Tensor
    scale: Tensor
    shift: Tensor
    reference: Tensor


@dataclass
class VideoDepth:
    """Stabilised depth of a whole clip (:func:`estimate_video`).

    Attributes:
        depth: ``[T, H, W]`` float32, in the units of the first frame (``running``) or the clip's typical
            units (``clip``).
        kind: what the values mean (see :mod:`anydepth.kinds`).
        scale, shift: ``[T]`` affine maps applied to the raw per-frame outputs.
        model_name: the estimator's model.
        processed_size: per frame, the ``(height, width)`` the network saw, as the estimator recorded it.
        max_depth: the metric range of the model in metres, ``None`` for relative models.
    """

    depth: Tensor
    kind: str
    scale: Tensor
    shift: Tensor
    model_name: str = ""
    processed_size: list[tuple[int, int]] = field(default_factory=list)
    max_depth: float | None = None

    def depth_result(self) -> DepthResult:
        """The stabilised depth as a :class:`~anydepth.estimator.DepthResult` (kind, sizes and range as the
        estimator gave them), for everything that takes one: normalisation, export, ComfyUI's ``DEPTH``."""
        sizes = self.processed_size or [tuple(self.depth.shape[-2:])] * self.depth.shape[0]
        return DepthResult(self.depth, self.kind, list(sizes), self.model_name, self.max_depth)


# --------------------------------------------------------------------------------------------------
# validation


def _check_clip(depth: object, name: str = "depth") -> Tensor:
    if not isinstance(depth, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (T, H, W), got {type(depth).__name__}")
    if not depth.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {depth.dtype}; convert it with .float()")
    if depth.ndim != 3 or min(depth.shape) < 1:
        raise ValueError(f"{name} must have shape (T, H, W) (frames first), got {tuple(depth.shape)}")
    return depth


def _check_static(mask: object, shape: torch.Size, name: str = "mask") -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = static pixel) of shape (H, W) or (T, H, W)")
    if tuple(mask.shape) not in (tuple(shape[1:]), tuple(shape)):
        raise ValueError(f"{name} must have shape (H, W) = {tuple(shape[1:])} or (T, H, W) = {tuple(shape)}, "
                         f"got {tuple(mask.shape)}")
    return mask


def _frame_mask(mask: Tensor | None, t: int) -> Tensor | None:
    if mask is None:
        return None
    return mask if mask.ndim == 2 else mask[t]


# --------------------------------------------------------------------------------------------------
# measures


def flicker(depth: Tensor, static: Tensor | None = None, *, relative: bool = True) -> Tensor:
    r"""Temporal flicker: mean absolute frame-to-frame difference on static pixels.

    .. math::

        \phi = \frac{1}{|S|} \sum_{t=1}^{T-1} \sum_{p \in S_t} |d_t(p) - d_{t-1}(p)|
        \;\Big/\; \frac{1}{|S|}\sum_{t, p \in S} |d_t(p) - \bar d|

    over pixels static in both frames and finite. With ``relative=True`` (default) it is divided by the
    clip's mean absolute deviation on the static pixels, so it does not depend on the clip's scale or shift
    and raw and stabilised clips can be compared. Static pixels of a perfectly stable clip give 0.

    Args:
        depth: the clip.
        static: bool, True where the scene does not move (e.g. from :func:`static_mask`); default all.
        relative: divide by the clip's spread.

    Returns:
        A scalar tensor (float32, float64 for float64 input); NaN when there are fewer than two frames or no
        static pixel.

    Shape:
        - depth: :math:`(T, H, W)`
        - static: :math:`(H, W)` or :math:`(T, H, W)`
    """
    depth = _check_clip(depth)
    static = _check_static(static, depth.shape, "static")
    work = torch.float64 if depth.dtype == torch.float64 else torch.float32
    d = depth.to(work)
    valid = torch.isfinite(d)
    if static is not None:
        valid = valid & static.to(d.device)
    pair = valid[1:] & valid[:-1]
    n = pair.sum()
    if depth.shape[0] < 2 or n == 0:
        return torch.tensor(math.nan, dtype=work)
    d0 = torch.where(valid, d, torch.zeros_like(d))
    diff = ((d0[1:] - d0[:-1]).abs() * pair).sum() / n
    if not relative:
        return diff
    mean = (d0 * valid).sum() / valid.sum()
    spread = ((d0 - mean).abs() * valid).sum() / valid.sum()
    return diff / spread if spread > 0 else torch.where(diff > 0, torch.tensor(math.inf, dtype=work), diff)


def static_mask(frames: Tensor, threshold: float = 0.02, *, min_fraction: float = 0.0) -> Tensor:
    """Pixels whose colour stays put through the clip: temporal standard deviation below ``threshold``.

    Args:
        frames: colour frames in 0..1, ComfyUI ``[T, H, W, C]`` or ``[T, C, H, W]`` (C = 1 or 3).
        threshold: largest per-pixel standard deviation over time (mean over channels) of a static pixel.
        min_fraction: when fewer than this fraction of pixels are static (a moving camera), every pixel is
            returned as static so that fits still have data.

    Returns:
        bool ``(H, W)``.

    Shape:
        - frames: :math:`(T, H, W, C)` or :math:`(T, C, H, W)`
        - output: :math:`(H, W)`
    """
    if not isinstance(frames, Tensor) or frames.ndim != 4:
        raise ValueError(f"frames must be a [T, H, W, C] or [T, C, H, W] tensor, got {getattr(frames, 'shape', type(frames).__name__)}")
    x = frames.float()
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.movedim(-1, 1)
    elif x.shape[1] not in (1, 3):
        raise ValueError(f"frames must have 1 or 3 colour channels, got shape {tuple(frames.shape)}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if x.shape[0] < 2:
        return torch.ones(x.shape[-2:], dtype=torch.bool, device=x.device)
    mask = x.std(dim=0, unbiased=False).mean(0) < threshold
    if mask.float().mean() < min_fraction:
        return torch.ones_like(mask)
    return mask


# --------------------------------------------------------------------------------------------------
# stabilisation


def _standardize(depth: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame median and mean absolute deviation over the valid pixels, and the standardised frames."""
    t = depth.shape[0]
    x = depth.reshape(t, -1)
    v = valid.reshape(t, -1)
    med = _masked_median(x, v)
    dev = ((x - med[:, None]).abs() * v).sum(1) / v.sum(1).clamp_min(1)
    dev_safe = torch.where(dev > 0, dev, torch.ones_like(dev))
    return ((x - med[:, None]) / dev_safe[:, None]).reshape(depth.shape), med, dev


def stabilize_depth(
    depth: Tensor,
    *,
    mode: str = "running",
    mask: Tensor | None = None,
    momentum: float = 0.2,
    robust: str | None = "irls",
    reference: Tensor | None = None,
) -> Stabilized:
    r"""Remove per-frame scale/shift jitter from a depth clip by aligning each frame to a reference.

    ``"running"``: frame :math:`t` is fitted to the reference :math:`R` (initially ``reference`` or the first
    frame), then :math:`R \leftarrow (1 - m) R + m\,\hat d_t` with ``momentum`` :math:`m`. The output keeps
    the first frame's (or ``reference``'s) units, e.g. metres. ``"clip"``: the reference is the temporal
    median of the standardised frames in the clip's median units, and all frames are fitted to it at once.

    Fits use the pixels where ``mask`` is True (static scene parts) and are robust to moving objects with
    ``robust="irls"`` (default) or ``"trimmed"`` (see :func:`~anydepth.align.fit_scale_shift`).

    Args:
        depth: raw per-frame depth (any kind; frames of one clip share it).
        mode: one of :data:`STABILIZE_MODES`.
        mask: bool, True on static pixels; default all pixels.
        momentum: weight of the newest aligned frame in the running reference, in ``(0, 1]``.
        robust: ``None``, ``"irls"`` or ``"trimmed"``.
        reference: ``(H, W)`` reference to start from (``running``), e.g. the ``reference`` returned for the
            previous chunk of a stream.

    Returns:
        :class:`Stabilized`; ``depth`` is a new float32 tensor (float64 for float64 input).

    Shape:
        - depth: :math:`(T, H, W)`; mask: :math:`(H, W)` or :math:`(T, H, W)`; reference: :math:`(H, W)`
    """
    depth = _check_clip(depth)
    mode = _check_choice(mode, "mode", STABILIZE_MODES)
    robust = _check_choice(robust, "robust", ROBUST, allow_none=True)
    mask = _check_static(mask, depth.shape)
    if not 0 < momentum <= 1:
        raise ValueError(f"momentum must be in (0, 1], got {momentum}")
    work = torch.float64 if depth.dtype == torch.float64 else torch.float32
    d = depth.to(work)
    if mask is not None:
        mask = mask.to(d.device)
    if mode == "clip":
        valid = torch.isfinite(d) if mask is None else torch.isfinite(d) & mask
        z, med, dev = _standardize(torch.nan_to_num(d), valid)
        z = torch.where(valid, z, torch.full_like(z, math.nan))
        ref = torch.nanmedian(z, dim=0).values  # pixels never valid: NaN, unused by the fit
        ref = ref * dev.median() + med.median()
        scale, shift = fit_scale_shift(d, ref[None], mask, robust=robust)
        out = d * scale[:, None, None] + shift[:, None, None]
        return Stabilized(out, scale, shift, ref)

    if reference is not None:
        if not isinstance(reference, Tensor) or tuple(reference.shape) != tuple(d.shape[1:]):
            raise ValueError(f"reference must be an (H, W) = {tuple(d.shape[1:])} tensor, "
                             f"got {getattr(reference, 'shape', type(reference).__name__)}")
        ref = reference.to(device=d.device, dtype=work)
    else:
        ref = d[0]
    out = torch.empty_like(d)
    scales, shifts = torch.empty(d.shape[0], dtype=work, device=d.device), torch.empty(d.shape[0], dtype=work, device=d.device)
    for t in range(d.shape[0]):  # the reference depends on every earlier frame: inherently sequential
        m = _frame_mask(mask, t)
        s, b = fit_scale_shift(d[t:t + 1], ref[None], None if m is None else m[None], robust=robust)
        out[t] = d[t] * s + b
        scales[t], shifts[t] = s[0], b[0]
        ref = torch.where(torch.isfinite(out[t]), torch.lerp(ref, out[t], momentum), ref)
    return Stabilized(out, scales, shifts, ref)


# --------------------------------------------------------------------------------------------------
# normalisation for control videos


def normalize_clip(
    depth: Tensor,
    kind: str,
    *,
    window: int | None = None,
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
    invert: bool = False,
) -> Tensor:
    r"""Control video in ``0..1`` (near = white) with one mapping for the clip or bounds over a sliding window.

    Like :func:`~anydepth.normalize.normalize_depth` in ``"v2_style"`` (disparity clipped to percentiles, then
    rescaled). ``window=None``: the percentiles of the whole clip, one mapping for every frame.
    ``window=k``: each frame's percentiles averaged over the ``k`` frames centred on it (edges repeated), so
    the mapping follows slow changes in the scene without pumping from frame to frame.

    Args:
        depth: stabilised depth (see :func:`stabilize_depth`).
        kind: what ``depth`` holds (see :mod:`anydepth.kinds`).
        window: sliding window length in frames (odd is symmetric), or None for the whole clip.
        low_percentile, high_percentile: clip percentiles, ``0 <= low < high <= 100``.
        invert: near = black.

    Returns:
        ``(T, H, W)`` in ``0..1``, never NaN.

    Shape:
        - depth: :math:`(T, H, W)`; output: :math:`(T, H, W)`
    """
    depth = _check_clip(depth)
    if window is None:
        return normalize_depth(depth, kind, "v2_style", scope="batch", low_percentile=low_percentile,
                               high_percentile=high_percentile, invert=invert)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be a positive number of frames or None (whole clip), got {window!r}")
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low_percentile}, {high_percentile}")
    kind = check_kind(kind)
    x = depth.to(torch.float64 if depth.dtype == torch.float64 else torch.float32)
    valid = torch.isfinite(x)
    x = torch.where(valid, x, torch.zeros_like(x))
    disp = x if kind == DISPARITY else x.clamp_min(1e-6).reciprocal()
    lo, hi = _masked_quantiles(disp, valid, low_percentile / 100.0, high_percentile / 100.0, "image")  # (T,1,1)
    bounds = torch.stack([lo.flatten(), hi.flatten()])[:, None]  # (2, 1, T)
    left = (window - 1) // 2
    padded = F.pad(bounds, (left, window - 1 - left), mode="replicate")
    smooth = F.avg_pool1d(padded, window, stride=1)[:, 0]  # (2, T)
    out = _scale01(disp, smooth[0].view(-1, 1, 1), smooth[1].view(-1, 1, 1))
    if invert:
        out = 1.0 - out
    return torch.where(valid, out, torch.zeros_like(out))


# --------------------------------------------------------------------------------------------------
# long clips through an estimator


def _frame_chunks(frames: Any, size: int) -> Iterator[Any]:
    """Slices of a [T, ...] tensor, or lists of ``size`` items from any iterable of frames."""
    if isinstance(frames, Tensor):
        if frames.ndim != 4:
            raise ValueError(f"frames must be a [T, H, W, C] or [T, C, H, W] tensor, got {tuple(frames.shape)}")
        for start in range(0, frames.shape[0], size):
            yield frames[start:start + size]
        return
    if not isinstance(frames, Iterable) or isinstance(frames, (str, bytes)):
        raise TypeError(f"frames must be a [T, H, W, C] tensor or an iterable of frames, got {type(frames).__name__}")
    chunk: list = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _as_frames(chunk: Any) -> Tensor:
    from .preprocess import to_tensor_list

    return torch.cat(to_tensor_list(chunk))


def iter_video_depth(
    estimator: Any,
    frames: Any,
    *,
    chunk_size: int = 16,
    overlap: int = 4,
    mode: str = "running",
    momentum: float = 0.2,
    robust: str | None = "irls",
    static_threshold: float | None = None,
    **estimate_kwargs: Any,
) -> Iterator[tuple[int, Stabilized]]:
    """Stabilised depth of a long clip, chunk by chunk, with bounded memory (a generator).

    Each step estimates up to ``chunk_size - overlap`` new frames (``estimator.estimate``; its other options
    via ``estimate_kwargs``, e.g. ``tile_size``), stabilises them and yields ``(index of the first frame,
    Stabilized)``. ``running``: the running reference carries over from chunk to chunk. ``clip``: each
    chunk is stabilised together with the last ``overlap`` raw frames of the previous one (kept, not
    re-estimated) and then mapped by one scale/shift onto the already emitted versions of those frames, so
    consecutive chunks share one scale. ``static_threshold``: fit only on pixels whose colour is static
    within the chunk (see :func:`static_mask`; all pixels when under 5 % are).

    Args:
        estimator: a :class:`~anydepth.DepthEstimator` (anything with ``estimate(frames) -> DepthResult``).
        frames: ``[T, H, W, C]`` / ``[T, C, H, W]`` tensor, or any iterable of frames (PIL images, arrays,
            tensors, paths), e.g. a video reader.
        chunk_size: frames per estimator call plus ``overlap``; bounds the memory.
        overlap: frames shared by consecutive chunks in ``clip`` mode, ``0 <= overlap < chunk_size``.
        mode, momentum, robust: see :func:`stabilize_depth`.
        static_threshold: colour standard deviation below which a pixel is static, or None.

    Yields:
        ``(start, Stabilized)`` with ``Stabilized.depth`` of shape ``(n, H, W)`` for frames
        ``start .. start + n - 1``.
    """
    for start, st, _ in _stabilized_chunks(estimator, frames, chunk_size=chunk_size, overlap=overlap, mode=mode,
                                           momentum=momentum, robust=robust, static_threshold=static_threshold,
                                           **estimate_kwargs):
        yield start, st


def _stabilized_chunks(estimator: Any, frames: Any, *, chunk_size: int, overlap: int, mode: str, momentum: float,
                       robust: str | None, static_threshold: float | None,
                       **estimate_kwargs: Any) -> Iterator[tuple[int, Stabilized, Any]]:
    """:func:`iter_video_depth` with each chunk's estimator result (for its kind, sizes and range)."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of frames, got {chunk_size!r}")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < chunk_size:
        raise ValueError(f"overlap must be an integer in [0, chunk_size) = [0, {chunk_size}), got {overlap!r}")
    mode = _check_choice(mode, "mode", STABILIZE_MODES)
    new_per_chunk = chunk_size - overlap if mode == "clip" else chunk_size
    reference: Tensor | None = None
    tail_raw: Tensor | None = None  # raw depth of the last `overlap` frames (clip mode)
    tail_out: Tensor | None = None  # their emitted, stabilised depth
    tail_frames: Tensor | None = None
    start = 0
    for chunk in _frame_chunks(frames, new_per_chunk):
        result = estimator.estimate(chunk, **estimate_kwargs)
        raw = result.stacked() if hasattr(result, "stacked") else result.depth
        mask = None
        if static_threshold is not None:
            rgb = _as_frames(chunk)
            both = rgb if tail_frames is None else torch.cat([tail_frames, rgb.to(tail_frames.device)])
            mask = static_mask(both, static_threshold, min_fraction=0.05).to(raw.device)
            tail_frames = both[-overlap:] if overlap else None
        if mode == "running":
            st = stabilize_depth(raw, mode="running", mask=mask, momentum=momentum, robust=robust, reference=reference)
            reference = st.reference
            yield start, st, result
        else:
            n_tail = 0 if tail_raw is None else tail_raw.shape[0]
            window = raw if n_tail == 0 else torch.cat([tail_raw, raw])
            st = stabilize_depth(window, mode="clip", mask=mask, robust=robust)
            scale, shift, depth = st.scale, st.shift, st.depth
            if n_tail:
                tie = fit_scale_shift(depth[:n_tail].reshape(1, -1), tail_out.reshape(1, -1).to(depth.dtype), robust=robust)
                depth = depth * tie.scale + tie.shift
                scale, shift = scale * tie.scale, shift * tie.scale + tie.shift
            tail_raw = window[-overlap:] if overlap else None
            tail_out = depth[-overlap:] if overlap else None
            yield start, Stabilized(depth[n_tail:], scale[n_tail:], shift[n_tail:], st.reference), result
        start += raw.shape[0]


def estimate_video(
    estimator: Any,
    frames: Any,
    *,
    chunk_size: int = 16,
    overlap: int = 4,
    mode: str = "running",
    momentum: float = 0.2,
    robust: str | None = "irls",
    static_threshold: float | None = None,
    callback: Callable[[int], None] | None = None,
    **estimate_kwargs: Any,
) -> VideoDepth:
    """Stabilised depth for a whole clip (collects :func:`iter_video_depth`; see it for the arguments).

    ``callback(frames_done)`` is called after every chunk. Use :func:`iter_video_depth` directly to write
    frames out as they come for clips whose depth does not fit in memory.

    Returns:
        :class:`VideoDepth` with ``[T, H, W]`` depth on the estimator's output device.

    Example:
        >>> from anydepth import DepthEstimator
        >>> est = DepthEstimator("v2-small")
        >>> frames = torch.rand(12, 60, 80, 3)  # [T, H, W, 3] in 0..1, e.g. a decoded clip
        >>> video = estimate_video(est, frames, chunk_size=8)  # 8 frames in memory at a time
        >>> control = normalize_clip(video.depth, video.kind)  # one mapping for the whole clip: no flicker
        >>> control.shape, bool(control.min() >= 0) and bool(control.max() <= 1)
        (torch.Size([12, 60, 80]), True)
    """
    parts, scales, shifts, sizes = [], [], [], []
    last = None
    for start, st, last in _stabilized_chunks(estimator, frames, chunk_size=chunk_size, overlap=overlap, mode=mode,
                                              momentum=momentum, robust=robust, static_threshold=static_threshold,
                                              **estimate_kwargs):
        parts.append(st.depth.float())
        scales.append(st.scale)
        shifts.append(st.shift)
        # The estimator's own record of what the network saw (global pass size, also when tiling).
        sizes += getattr(last, "processed_size", None) or [tuple(st.depth.shape[-2:])] * st.depth.shape[0]
        if callback is not None:
            callback(start + st.depth.shape[0])
    if not parts:
        raise ValueError("frames is empty; pass at least one frame")
    kind = getattr(last, "kind", None) or getattr(estimator, "kind", DISPARITY)
    return VideoDepth(torch.cat(parts), kind, torch.cat(scales), torch.cat(shifts),
                      getattr(last, "model_name", None) or getattr(estimator, "model_name", ""), [tuple(s) for s in sizes],
                      getattr(last, "max_depth", None))
