"""Fit a batch of images to a target size: letterbox padding, stretching, or an explicit centre crop.

Depth control images rarely have the aspect ratio of the latent they condition. ComfyUI's ControlNet
code silently centre-crops the hint to the latent's aspect, cutting off whatever lies outside. These
functions make the choice explicit:

* ``"pad"``: scale to fit inside the target keeping the aspect ratio, then pad the borders with
  ``pad_value`` (0 = black = "far" for a depth control image). Nothing is lost or distorted.
* ``"resize"``: stretch to the target size. Nothing is lost; shapes are distorted.
* ``"crop"``: cut the centre region with the target's aspect ratio, then scale it to the target
  (what ComfyUI does implicitly).

These three words are the one vocabulary of every door (Python API, ``anydepth generate --fit``, the Apply
Depth ControlNet node); an older word (``"stretch"``) is refused with a message naming its new name.
"""

from __future__ import annotations

from typing import Literal

import torch  # noqa: F401  (the doctests use it)
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FIT_MODES", "FitBox", "check_fit_mode", "fit_box", "fit_to_size"]

FitMode = Literal["pad", "resize", "crop"]
FIT_MODES: tuple[str, ...] = ("pad", "resize", "crop")
"""Modes accepted by :func:`fit_box` and :func:`fit_to_size`."""

RENAMED_FIT_MODES: dict[str, str] = {"stretch": "resize"}
"""Words an earlier release used for a mode, and the mode's name now."""

FitBox = tuple[int, int, int, int]
"""``(inner_h, inner_w, top, left)``: size of the resized image and its offset in the target frame."""


def _check_size(size: object, name: str) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)):
        raise ValueError(f"{name} must be (height, width) with two integers >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def check_fit_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`FIT_MODES`, else a ``ValueError`` (naming the new word for an old one).

    Example:
        >>> check_fit_mode("crop")
        'crop'
        >>> check_fit_mode("stretch")
        Traceback (most recent call last):
        ...
        ValueError: fit mode 'stretch' is now called 'resize'; expected one of pad, resize, crop
    """
    if mode in FIT_MODES:
        return mode  # type: ignore[return-value]
    if mode in RENAMED_FIT_MODES:
        raise ValueError(f"fit mode {mode!r} is now called {RENAMED_FIT_MODES[mode]!r}; "
                         f"expected one of {', '.join(FIT_MODES)}")
    raise ValueError(f"unknown fit mode {mode!r}; expected one of {', '.join(FIT_MODES)}")


def fit_box(src: tuple[int, int], dst: tuple[int, int], mode: str = "pad") -> FitBox:
    r"""Where an ``src``-sized image lands in a ``dst``-sized frame.

    With :math:`s = \min(h_d / h_s, w_d / w_s)` for ``"pad"`` and :math:`\max(\cdot)` for ``"crop"``,
    the image is resized to :math:`(\mathrm{round}(s\,h_s), \mathrm{round}(s\,w_s))` (the side that
    decides :math:`s` matches the frame exactly) and centred: ``top = (h_d - inner_h) // 2``, which is
    negative for ``"crop"`` (the overflow cut off above). ``"resize"`` fills the frame.

    Args:
        src: ``(height, width)`` of the image.
        dst: ``(height, width)`` of the target frame.
        mode: one of :data:`FIT_MODES`.

    Returns:
        ``(inner_h, inner_w, top, left)``.

    Example:
        >>> fit_box((100, 200), (100, 100), "pad")
        (50, 100, 25, 0)
        >>> fit_box((100, 200), (100, 100), "crop")
        (100, 200, 0, -50)
    """
    sh, sw = _check_size(src, "src")
    dh, dw = _check_size(dst, "dst")
    mode = check_fit_mode(mode)
    if mode == "resize":
        return dh, dw, 0, 0
    # Compare cross products instead of float ratios: the side that decides the scale is exact.
    wider = sw * dh > sh * dw  # the source is relatively wider than the frame
    if (mode == "pad") == wider:  # width decides
        ih, iw = max(1, round(sh * dw / sw)), dw
    else:  # height decides
        ih, iw = dh, max(1, round(sw * dh / sh))
    return ih, iw, (dh - ih) // 2, (dw - iw) // 2


def fit_to_size(
    images: Tensor,
    size: tuple[int, int],
    mode: str = "pad",
    *,
    pad_value: float = 0.0,
    antialias: bool = True,
) -> Tensor:
    r"""Fit images to exactly ``size`` by letterbox padding, stretching or centre cropping.

    Resampling is bilinear (``align_corners=False``), antialiased when shrinking unless
    ``antialias=False``. An image that already has the target size is returned as a copy.
    The input is never modified.

    Args:
        images: float images, any channel count (e.g. 0..1 RGB or a depth map with ``C = 1``).
        size: target ``(height, width)``.
        mode: ``"pad"``, ``"resize"`` or ``"crop"`` (see the module docs and :func:`fit_box`).
        pad_value: value of the padded border (``"pad"`` only); ``nan`` marks it as missing, which
            :func:`anydepth.normalize.normalize_depth` leaves out of its statistics and shows black (far).
        antialias: antialias when shrinking.

    Returns:
        The fitted images, same dtype and device as ``images``.

    Shape:
        - images: :math:`(B, C, H, W)`
        - output: :math:`(B, C, size[0], size[1])`

    Example:
        >>> fit_to_size(torch.ones(1, 1, 2, 4), (4, 4), "pad")[0, 0]
        tensor([[0., 0., 0., 0.],
                [1., 1., 1., 1.],
                [1., 1., 1., 1.],
                [0., 0., 0., 0.]])
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a [B, C, H, W] tensor, got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating point tensor, got {images.dtype}; convert it with .float()")
    if images.shape[0] == 0 or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"images is empty (shape {tuple(images.shape)})")
    dh, dw = _check_size(size, "size")
    mode = check_fit_mode(mode)
    if mode == "crop":
        # Cut the centre region with the target aspect first, then resample only what is kept.
        images = _centre_crop_to_aspect(images, dh, dw)
    ih, iw, top, left = fit_box(tuple(images.shape[-2:]), (dh, dw), "resize" if mode == "crop" else mode)
    x = images
    if (ih, iw) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=(ih, iw), mode="bilinear", align_corners=False, antialias=antialias)
    else:
        x = x.clone()
    if mode == "pad":
        return F.pad(x, (left, dw - iw - left, top, dh - ih - top), value=float(pad_value))
    return x


def _centre_crop_to_aspect(images: Tensor, dh: int, dw: int) -> Tensor:
    """The centred ``[..., h', w']`` view whose aspect ratio is ``dh : dw`` (one side kept whole)."""
    h, w = images.shape[-2:]
    if w * dh > h * dw:  # relatively wider than the target: keep the full height
        cw = max(1, round(h * dw / dh))
        x0 = (w - cw) // 2
        return images[..., :, x0:x0 + cw]
    ch = max(1, round(w * dh / dw))
    y0 = (h - ch) // 2
    return images[..., y0:y0 + ch, :]
