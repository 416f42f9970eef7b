r"""Tiled inference: depth for images far larger than the network input (4K and up).

A ViT's memory and time grow with the number of tokens, and Depth Anything was trained at 518 px, so a
4K image is either shrunk (losing thin structures) or run whole (gigabytes of activations). Tiling keeps
both the detail and the memory bound:

1. **Global pass.** The whole image at the usual network size (e.g. 518 px on the shorter side) gives
   a coarse map whose scale and shift are consistent over the image.
2. **Tiles.** Overlapping square tiles of ``tile_size`` pixels run at native resolution (each side
   rounded to a multiple of 14), so the network sees every pixel.
3. **Alignment.** Each tile is mapped onto the global map over the same pixels with the closed-form
   least-squares scale and shift (:func:`anydepth.align.fit_scale_shift`). The fit uses the tile blurred
   to the global map's resolution (fine detail only the tile has would otherwise bias the scale low, the
   "regression dilution" of a noisy regressor), leaves out a band of half a global pixel at the tile's
   edges (extrapolated there, not measured) and is applied to the full-detail tile. A tile whose fit has
   a non-positive scale (a flat, textureless tile) falls back to the global map there.
4. **Blending.** Tiles are averaged with separable raised-cosine weights that fall smoothly to near
   zero over ``overlap`` pixels at every tile edge inside the image, so there are no seams.

The global map is registered with the image on the ``align_corners=False`` grid that produced it (the
reference's bilinear ``align_corners=True`` upsampling shifts it by up to half a global pixel).

Memory is bounded by the tile size: apart from the input and the output maps, only ``batch_size`` tiles
and the low-resolution global map are alive at any time. The global map is upsampled on the fly, tile by
tile (:func:`upsampled_crop`), and the blend normaliser is the outer product of two 1-D weight sums, so
no other full-size buffer is ever allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .align import fit_scale_shift

__all__ = ["Predict", "TileGrid", "check_tile_size", "make_tile_grid", "tile_network_size", "tiled_depth", "upsampled_crop"]

Predict = Callable[[Tensor, tuple[int, int], tuple[int, int]], Tensor]
"""``predict(images, network_size, output_size) -> depth``: ``images`` ``[N, 3, h, w]`` in 0..1 are run at
``network_size`` (sides multiples of 14) and the depth comes back as ``[N, *output_size]`` float32."""

PATCH = 14


def tile_network_size(height: int, width: int, multiple: int = PATCH) -> tuple[int, int]:
    """Native network size of a tile: each side rounded to the nearest multiple of ``multiple`` (at least one).

    Example:
        >>> tile_network_size(518, 520)
        (518, 518)
    """
    return tuple(max(multiple, int(round(s / multiple)) * multiple) for s in (height, width))  # type: ignore[return-value]


def _starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px, neighbours overlapping by >= ``overlap``."""
    if tile >= length:
        return (0,)
    n = math.ceil((length - overlap) / (tile - overlap))
    n = max(n, 2)
    return tuple(int(round(i * (length - tile) / (n - 1))) for i in range(n))


def _ramp(tile: int, overlap: int, fade_start: bool, fade_end: bool) -> Tensor:
    """1-D blend weights: 1 inside, raised cosine over ``overlap`` px at faded ends (never exactly 0)."""
    w = torch.ones(tile, dtype=torch.float64)
    if overlap > 0:
        n = min(overlap, tile)
        r = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)
        if fade_start:
            w[:n] = torch.minimum(w[:n], r)
        if fade_end:
            w[tile - n:] = torch.minimum(w[tile - n:], r.flip(0))
    return w.float()


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image size go.

    Attributes:
        height, width: image size in pixels.
        tile_h, tile_w: tile size (``min(tile_size, image side)``).
        ys, xs: start rows / columns of the tile rows / columns (every combination is a tile).
        overlap: blend ramp length in pixels (neighbours overlap at least this much).
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    overlap: int

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def network_size(self) -> tuple[int, int]:
        """What the network sees per tile (:func:`tile_network_size`)."""
        return tile_network_size(self.tile_h, self.tile_w)

    def row_weights(self) -> list[Tensor]:
        """Per tile row, its ``[tile_h]`` blend weights."""
        return [_ramp(self.tile_h, self.overlap, y > 0, y + self.tile_h < self.height) for y in self.ys]

    def col_weights(self) -> list[Tensor]:
        """Per tile column, its ``[tile_w]`` blend weights."""
        return [_ramp(self.tile_w, self.overlap, x > 0, x + self.tile_w < self.width) for x in self.xs]


def make_tile_grid(height: int, width: int, tile_size: int, overlap: int | None = None) -> TileGrid:
    """Tiles of ``tile_size`` px (clamped to the image) covering a ``height × width`` image.

    Tiles are spread evenly, the first and last flush with the image borders, and neighbours overlap by at
    least ``overlap`` px (default ``tile_size // 4``).

    Example:
        >>> g = make_tile_grid(1000, 2000, 518, 128)
        >>> g.ys, g.xs, len(g)
        ((0, 241, 482), (0, 370, 741, 1112, 1482), 15)
    """
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive number of pixels, got {v!r}")
    tile_size = check_tile_size(tile_size)
    if tile_size == 0:
        raise ValueError("tile_size must be > 0 to build a tile grid (0 means tiling off)")
    overlap = tile_size // 4 if overlap is None else overlap
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap <= tile_size // 2:
        raise ValueError(f"tile overlap must be an integer in [0, tile_size / 2] = [0, {tile_size // 2}] px, got {overlap!r}")
    th, tw = min(tile_size, height), min(tile_size, width)
    return TileGrid(height, width, th, tw, _starts(height, th, overlap), _starts(width, tw, overlap), overlap)


def check_tile_size(tile_size: object) -> int:
    """``tile_size`` as an int: 0 (off) or at least 28 px; raises a ValueError that says what to pass."""
    if not isinstance(tile_size, int) or isinstance(tile_size, bool) or (tile_size != 0 and tile_size < 2 * PATCH):
        raise ValueError(f"tile_size must be 0 (no tiling) or a number of pixels >= {2 * PATCH} "
                         f"(518 matches the training resolution), got {tile_size!r}")
    return tile_size


def _taps(out_len: int, in_len: int, start: int, count: int, align_corners: bool, device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices and weights of output samples ``start .. start + count`` of a linear resize."""
    pos = torch.arange(start, start + count, dtype=torch.float64)
    if align_corners:
        src = pos * ((in_len - 1) / (out_len - 1)) if out_len > 1 else torch.zeros_like(pos)
    else:
        src = ((pos + 0.5) * (in_len / out_len) - 0.5).clamp_min(0)
    i0 = src.floor().clamp(0, in_len - 1).long()
    frac = (src - i0).float()
    i1 = (i0 + 1).clamp(max=in_len - 1)
    return i0.to(device), i1.to(device), frac.to(device)


def upsampled_crop(
    maps: Tensor, size: tuple[int, int], box: tuple[int, int, int, int], *, align_corners: bool = False
) -> Tensor:
    r"""A crop of a bilinear upsampling, computed without building the full-size map.

    Equal to ``F.interpolate(maps[:, None], size, mode="bilinear", align_corners=align_corners)[:, 0,
    y:y + h, x:x + w]`` for ``box = (y, x, h, w)``, at the cost of the crop only.

    Args:
        maps: low-resolution maps.
        size: ``(H, W)`` of the (virtual) upsampled maps.
        box: ``(y, x, h, w)`` of the crop inside ``(H, W)``.
        align_corners: the resize convention (see ``torch.nn.functional.interpolate``).

    Returns:
        The crop, in ``maps``' dtype.

    Shape:
        - maps: :math:`(B, h_0, w_0)`
        - output: :math:`(B, h, w)`
    """
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise ValueError(f"maps must be a (B, h, w) tensor, got {getattr(maps, 'shape', type(maps).__name__)}")
    y, x, h, w = box
    if y < 0 or x < 0 or h < 1 or w < 1 or y + h > size[0] or x + w > size[1]:
        raise ValueError(f"box {box} (y, x, h, w) does not lie inside the upsampled size {tuple(size)}")
    y0, y1, fy = _taps(size[0], maps.shape[1], y, h, align_corners, maps.device)
    x0, x1, fx = _taps(size[1], maps.shape[2], x, w, align_corners, maps.device)
    fy, fx = fy.to(maps.dtype)[:, None], fx.to(maps.dtype)
    rows = torch.lerp(maps[:, y0], maps[:, y1], fy)  # (B, h, w_0)
    return torch.lerp(rows[:, :, x0], rows[:, :, x1], fx)


def _lowpass(tiles: Tensor, low: tuple[int, int]) -> Tensor:
    """``tiles`` with only the detail the global map has: antialiased down to ``low``, bilinear back up.

    Fitting the full-detail tile against the blurrier global map would bias the scale low (fine texture
    in the regressor that the target lacks: regression dilution); fitting its low-pass is unbiased.
    """
    size = tuple(tiles.shape[-2:])
    if low[0] >= size[0] and low[1] >= size[1]:
        return tiles
    small = F.interpolate(tiles[:, None], size=low, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False)[:, 0]


def tiled_depth(
    images: Tensor,
    predict: Predict,
    *,
    tile_size: int,
    global_size: tuple[int, int],
    overlap: int | None = None,
    batch_size: int = 4,
    robust: str | None = None,
    callback: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> Tensor:
    r"""Depth of large images from a global low-resolution pass and aligned, blended native-resolution tiles.

    See the module docstring for the method. With :math:`w_k = w^y_{i(k)} \otimes w^x_{j(k)}` the blend
    weights of tile :math:`k` and :math:`s_k, t_k` its fit to the global map :math:`G`:

    .. math::

        D = \frac{\sum_k w_k\,(s_k\,T_k + t_k)}{\sum_k w_k}, \qquad
        (s_k, t_k) = \arg\min \lVert s\,T_k + t - G|_{k} \rVert^2

    Args:
        images: the images, colours in 0..1.
        predict: runs the network (see :data:`Predict`); called once for the global pass and once per batch
            of tiles.
        tile_size: tile side in pixels (>= 28); the network sees each tile at this size (rounded to 14).
        global_size: ``(h, w)`` network size of the global pass (multiples of 14).
        overlap: blend ramp / minimum tile overlap in pixels, ``0 .. tile_size // 2`` (default ``tile_size // 4``).
        batch_size: tiles per ``predict`` call.
        robust: ``None``, ``"trimmed"`` or ``"irls"``: robust tile fits (:func:`~anydepth.align.fit_scale_shift`).
        callback: ``callback(done, total)`` after each batch of tiles.
        check_interrupt: called before the global pass and before each batch of tiles; raise in it to stop.

    Returns:
        ``[B, H, W]`` float32 depth, on ``images``' device, in the units of the global pass.

    Shape:
        - images: :math:`(B, 3, H, W)`
        - output: :math:`(B, H, W)`
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a [B, 3, H, W] tensor in 0..1, got {shape}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    b, _, h, w = images.shape
    grid = make_tile_grid(h, w, tile_size, overlap)
    net = grid.network_size
    dev = images.device

    if check_interrupt is not None:
        check_interrupt()
    g = predict(images, tuple(global_size), tuple(global_size)).float()  # [B, gh, gw]
    gh, gw = g.shape[-2:]
    wy = [v.to(dev) for v in grid.row_weights()]
    wx = [v.to(dev) for v in grid.col_weights()]

    # the tile's area at the global pass's resolution: tiles are compared with the global map at equal detail
    low = (max(1, round(grid.tile_h * gh / h)), max(1, round(grid.tile_w * gw / w)))
    # Within half a global pixel of a tile's edge its low-pass (and, at the image border, the global map) is
    # extrapolated rather than measured: leave that band out of the fits.
    band_y, band_x = math.ceil(0.5 * h / gh), math.ceil(0.5 * w / gw)
    fit_mask = torch.zeros(grid.tile_h, grid.tile_w, dtype=torch.bool, device=dev)
    fit_mask[band_y:grid.tile_h - band_y, band_x:grid.tile_w - band_x] = True
    if not fit_mask.any():  # tiles too small for the band
        fit_mask.fill_(True)
    out = torch.zeros((b, h, w), dtype=torch.float32, device=dev)
    items = [(n, i, j) for n in range(b) for i in range(len(grid.ys)) for j in range(len(grid.xs))]
    for start in range(0, len(items), batch_size):
        if check_interrupt is not None:
            check_interrupt()
        chunk = items[start:start + batch_size]
        crops = torch.stack([images[n, :, grid.ys[i]:grid.ys[i] + grid.tile_h, grid.xs[j]:grid.xs[j] + grid.tile_w]
                             for n, i, j in chunk])  # [k, 3, th, tw]
        tiles = predict(crops, net, (grid.tile_h, grid.tile_w)).float()  # [k, th, tw]
        del crops
        # The global map's pixel i covers image pixels around (i + 0.5) * h / gh - 0.5 (the network input was
        # resized with align_corners=False), so it is upsampled on that grid: no sub-pixel misregistration.
        ref = torch.cat([upsampled_crop(g[n:n + 1], (h, w), (grid.ys[i], grid.xs[j], grid.tile_h, grid.tile_w))
                         for n, i, j in chunk])  # [k, th, tw]: the global map over each tile
        scale, shift = fit_scale_shift(_lowpass(tiles, low), ref, fit_mask, robust=robust)
        ok = (scale > 0)[:, None, None]
        aligned = torch.where(ok, tiles.mul_(scale[:, None, None]).add_(shift[:, None, None]), ref)
        del tiles, ref
        for k, (n, i, j) in enumerate(chunk):
            y, x = grid.ys[i], grid.xs[j]
            out[n, y:y + grid.tile_h, x:x + grid.tile_w].addcmul_(aligned[k], wy[i][:, None] * wx[j][None, :])
        del aligned
        if callback is not None:
            callback(min(start + batch_size, len(items)), len(items))

    norm_y = torch.zeros(h, device=dev)
    norm_x = torch.zeros(w, device=dev)
    for y, v in zip(grid.ys, wy):
        norm_y[y:y + grid.tile_h] += v
    for x, v in zip(grid.xs, wx):
        norm_x[x:x + grid.tile_w] += v
    out.div_(norm_y[:, None]).div_(norm_x[None, :])
    return out
