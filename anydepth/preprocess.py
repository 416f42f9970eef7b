"""Bring any image input into batched float tensors and resize them the way the reference does.

One canonicaliser (:func:`to_tensor_list`) accepts PIL images, numpy arrays, torch tensors in either
ComfyUI ``[B, H, W, C]`` or ``[B, C, H, W]`` layout, image files, and lists of all of these. The
network-side resize (:func:`network_size`, :func:`prepare_batch`) reproduces the reference
``infer_image``: keep the aspect ratio, make the shorter side at least ``input_size``, round each
side to a multiple of 14, bicubic, ImageNet normalisation.

That rule alone makes a 2×3000 strip a 518×777,000 network input (two million tokens: minutes of work
and tens of gigabytes). :func:`network_size` therefore takes a token budget (``max_tokens``; the
estimators default to :func:`default_max_tokens`, four times the tokens of an ``input_size`` square):
sizes within it are the reference's, larger ones are shrunk to fit it by :func:`capped_size`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

ImageInput = Union["PIL.Image.Image", np.ndarray, torch.Tensor, str, os.PathLike, Sequence[Any]]  # noqa: F821

_CHANNELS = (1, 2, 3, 4)


def _pil_to_tensor(img) -> torch.Tensor:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale (Pillow opens some 16-bit PNGs as mode "I"): 0..65535 -> 0..1.
        a = np.asarray(img, dtype=np.float32)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"a 32-bit integer image with values {a.min():g}..{a.max():g}; expected 16-bit 0..65535")
        return torch.from_numpy(a / 65535.0)[None, None].expand(1, 3, -1, -1).contiguous()
    if img.mode == "F":
        return _float_array_to_tensor(np.asarray(img, dtype=np.float32)[..., None], "PIL image (mode F)")
    if img.mode != "RGB":
        img = img.convert("RGB")  # palette, grayscale, RGBA (alpha dropped), CMYK ...
    a = np.asarray(img)
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float().div_(255.0)


def _float_array_to_tensor(a: np.ndarray, what: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return _hwc_to_bchw(t[None], what)


def _check_float_range(t: torch.Tensor, what: str) -> None:
    if t.numel() == 0:
        return
    lo, hi = float(t.min()), float(t.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{what} contains NaN or infinite values; pass finite colours in 0..1")
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(f"{what} holds floats in {lo:.3g}..{hi:.3g}; float images must be in 0..1 "
                         "(divide 0..255 data by 255, or pass it as uint8)")


def _to_unit_float(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.dtype == torch.uint16:
        return t.float() / 65535.0
    if t.dtype == torch.bool:
        return t.float()
    if not t.is_floating_point():
        raise TypeError(f"{what} has dtype {t.dtype}; expected uint8, uint16 or float in 0..1")
    t = t.float()
    _check_float_range(t, what)
    return t


def _fix_channels(t: torch.Tensor, what: str) -> torch.Tensor:
    """[B, C, H, W] with C in 1..4 -> [B, 3, H, W]: grayscale repeated, alpha dropped."""
    c = t.shape[1]
    if c == 3:
        return t
    if c in (1, 2):  # gray, gray + alpha
        return t[:, :1].expand(-1, 3, -1, -1)
    if c == 4:
        return t[:, :3]
    raise ValueError(f"{what} has {c} channels; expected 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA)")


def _hwc_to_bchw(t: torch.Tensor, what: str) -> torch.Tensor:
    return _fix_channels(t.permute(0, 3, 1, 2), what)


def _tensor_to_bchw(t: torch.Tensor, what: str) -> torch.Tensor:
    """Interpret a tensor's layout: [H,W], [H,W,C], [C,H,W], [B,H,W,C] (ComfyUI) or [B,C,H,W]."""
    shape = tuple(t.shape)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    elif t.ndim != 4:
        raise ValueError(f"{what} has shape {shape}; expected [H,W], [H,W,C], [C,H,W], [B,H,W,C] or [B,C,H,W]")
    if t.ndim == 4 and len(shape) == 2:
        layout = "bchw"
    else:
        last_is_c, first_is_c = t.shape[-1] in _CHANNELS, t.shape[1] in _CHANNELS
        # ComfyUI IMAGE batches are [B,H,W,C]; prefer that reading when both fit and C == 3.
        layout = "bhwc" if last_is_c and (not first_is_c or t.shape[-1] == 3) else "bchw"
        if not last_is_c and not first_is_c:
            raise ValueError(f"{what} has shape {shape}; no axis looks like 1-4 colour channels "
                             "(expected [B,H,W,C] as in ComfyUI IMAGE, or [B,C,H,W])")
    if layout == "bhwc":
        t = t.permute(0, 3, 1, 2)
    if t.shape[0] == 0:
        raise ValueError(f"{what} is an empty batch (shape {shape}); pass at least one image")
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise ValueError(f"{what} has shape {shape}: an image needs at least 1×1 pixels")
    return _fix_channels(_to_unit_float(t, what), what)


def _one_to_tensors(item: Any, what: str) -> list[torch.Tensor]:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if isinstance(item, (str, os.PathLike)):
        from .io import read_image

        return [_pil_to_tensor(read_image(item))]
    if Image is not None and isinstance(item, Image.Image):
        if item.width == 0 or item.height == 0:
            raise ValueError(f"{what} is an empty image ({item.width}×{item.height})")
        return [_pil_to_tensor(item)]
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint16:
            item = item.astype(np.float32) / 65535.0
        elif item.dtype.kind == "f" and item.dtype != np.float32:
            item = item.astype(np.float32)
        if item.dtype.kind not in "uf" and item.dtype != np.bool_:
            raise TypeError(f"{what} is a numpy array of {item.dtype}; expected uint8, uint16 or float in 0..1")
        t = torch.from_numpy(np.ascontiguousarray(item))
        if t.ndim == 3 and t.shape[-1] not in _CHANNELS and t.shape[0] in _CHANNELS:
            pass  # CHW numpy
        elif t.ndim == 3:
            t = t.permute(2, 0, 1)  # numpy images are HWC
        return [_tensor_to_bchw(t, what)]
    if isinstance(item, torch.Tensor):
        return [_tensor_to_bchw(item.detach(), what)]
    raise TypeError(f"{what} is a {type(item).__name__}; expected a PIL image, numpy array, torch tensor, "
                    "image file path, or a list of those")


def to_tensor_list(images: ImageInput) -> list[torch.Tensor]:
    """Canonicalise any supported input into a list of ``[B_i, 3, H_i, W_i]`` float32 tensors in 0..1.

    Tensors stay on their device and are not copied where a view will do; nothing the caller passed
    is modified.

    Raises:
        ValueError: empty input, an empty image, an unsupported shape or out-of-range floats.
        TypeError: an unsupported type or dtype.
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("images is an empty list; pass at least one image")
        out: list[torch.Tensor] = []
        for i, item in enumerate(images):
            if isinstance(item, (list, tuple)):
                raise TypeError(f"images[{i}] is a nested {type(item).__name__}; pass a flat list of images")
            out += _one_to_tensors(item, f"images[{i}]")
        return out
    return _one_to_tensors(images, "images")


def _constrain(x: float, multiple: int, min_val: int) -> int:
    # Python's round() rounds halves to even like numpy.round in the reference.
    y = int(round(x / multiple) * multiple)
    if y < min_val:
        y = int(np.ceil(x / multiple) * multiple)
    return y


MAX_TOKENS_FACTOR = 4
"""The default token budget is this many times the tokens of an ``input_size`` square, so aspect ratios up
to 4:1 keep the reference size (5476 tokens at 518: a 518×2072 input)."""


def default_max_tokens(input_size: int = 518, multiple: int = 14) -> int:
    """The default token budget for ``input_size``: :data:`MAX_TOKENS_FACTOR` squares of it.

    Example:
        >>> default_max_tokens(518)
        5476
    """
    return MAX_TOKENS_FACTOR * (input_size // multiple) ** 2


def token_count(size: tuple[int, int], multiple: int = 14) -> int:
    """Patch tokens of a network input of ``size = (height, width)`` (the class token not counted).

    Example:
        >>> token_count((518, 686))
        1813
    """
    return (size[0] // multiple) * (size[1] // multiple)


def check_max_tokens(max_tokens: object, name: str = "max_tokens") -> int | None:
    """``max_tokens`` as given when valid: ``None`` (the default budget), ``0`` (no cap) or a positive int."""
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0):
        raise ValueError(f"{name} must be None (the default: {MAX_TOKENS_FACTOR}× the tokens of an input_size square), "
                         f"0 (no cap) or a positive number of 14×14 patches, got {max_tokens!r}")
    return max_tokens


def resolve_max_tokens(max_tokens: int | None, input_size: int, multiple: int = 14) -> int:
    """The budget an estimator applies: ``None`` -> :func:`default_max_tokens`, ``0`` stays 0 (no cap)."""
    check_max_tokens(max_tokens)
    return default_max_tokens(input_size, multiple) if max_tokens is None else max_tokens


def capped_size(height: int, width: int, max_tokens: int, multiple: int = 14) -> tuple[int, int]:
    """The largest network size of at most ``max_tokens`` patches with the aspect ratio of ``height × width``.

    Each side is a multiple of ``multiple`` and at least one patch. The shorter side gets
    ``floor(sqrt(max_tokens / aspect))`` patches and the longer side ``aspect`` times as many (fewer
    when the budget runs out), so the aspect ratio is kept to within one patch; an image more
    elongated than ``max_tokens : 1`` gets one patch across and ``max_tokens`` along.

    Example:
        >>> capped_size(2, 3000, 5476)     # 1 × 1500 patches
        (14, 21000)
        >>> capped_size(1000, 8000, 5476)  # 26 × 208 patches
        (364, 2912)
    """
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive number of patches, got {max_tokens!r}")
    short, long = min(height, width), max(height, width)
    aspect = long / short
    across = max(1, math.floor(math.sqrt(max_tokens / aspect)))
    along = max(1, min(max_tokens // across, round(across * aspect)))
    sides = (across * multiple, along * multiple)
    return sides if height <= width else (sides[1], sides[0])


def network_size(height: int, width: int, input_size: int = 518, multiple: int = 14, *,
                 max_tokens: int = 0) -> tuple[int, int]:
    """Size the network sees for a ``height × width`` image (the reference "lower_bound" rule, capped).

    The aspect ratio is kept, the shorter side becomes at least ``input_size``, and each side is
    rounded to a multiple of ``multiple`` (up when rounding would drop below ``input_size``). When
    that size has more than ``max_tokens`` patches (``0``: no cap), :func:`capped_size` is returned
    instead: the aspect ratio within the budget.

    Example:
        >>> network_size(480, 640)
        (518, 686)
        >>> network_size(2, 3000), network_size(2, 3000, max_tokens=5476)
        ((518, 777000), (14, 21000))
    """
    if input_size < multiple or input_size % multiple:
        raise ValueError(f"input_size must be a positive multiple of {multiple}, got {input_size}")
    scale = max(input_size / height, input_size / width)
    size = _constrain(scale * height, multiple, input_size), _constrain(scale * width, multiple, input_size)
    if max_tokens and token_count(size, multiple) > max_tokens:
        return capped_size(height, width, max_tokens, multiple)
    return size


Size = tuple[int, int]


def warn_capped(sizes: Iterable[tuple[Size, Size, Size]], max_tokens: int) -> list[Size]:
    """Log one warning for the inputs the token budget shrank; returns their input sizes.

    Args:
        sizes: per input size, ``(input size, size the resize rule gives, size used)``, each ``(h, w)``.
        max_tokens: the budget that was applied.

    Example:
        >>> warn_capped([((2, 3000), (518, 777000), (14, 21000)), ((480, 640), (518, 686), (518, 686))], 5476)
        [(2, 3000)]
    """
    capped = [(size, rule, used) for size, rule, used in sizes if rule != used]
    if capped:
        what = "; ".join(f"{w}×{h} px at {used[1]}×{used[0]} instead of {rule[1]}×{rule[0]}"
                         for (h, w), rule, used in capped)
        log.warning("anydepth: input over the token budget (%d patches per network input; max_tokens, --max-tokens "
                    "on the command line, 0 = no cap): run at a smaller size of the same aspect ratio, depth resized "
                    "back to the input size (width×height): %s", max_tokens, what)
    return [size for size, _, _ in capped]


def prepare_batch(
    images: torch.Tensor,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    antialias: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Resize ``[B, 3, H, W]`` images in 0..1 to ``size`` (bicubic) and normalise with ``mean``/``std``.

    ``antialias=False`` matches the reference's OpenCV INTER_CUBIC; antialiasing changes the result
    by several percent when shrinking and is offered for users who prefer it.

    Shape:
        - images: ``[B, 3, H, W]``; output: ``[B, 3, size[0], size[1]]`` in ``dtype``.
    """
    x = images.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=antialias)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype)


def resize_depth(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=True, as the reference) resize of ``[B, h, w]`` maps to ``[B, *size]``."""
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
