"""What Estimate Depth sends back to the frontend: a depth preview and a raw-value grid for the probe.

The frontend extension (``js/anydepth_depth_preview.js``) draws the preview on the node, recolours it with
the colour map the user picks and, under the mouse, reads the raw value (disparity or metres) from the grid.
The payload is kept small: one 8-bit grey PNG in ComfyUI's temp folder and at most
:data:`GRID_MAX` x :data:`GRID_MAX` floats per run.
"""

from __future__ import annotations

import math
import os
import uuid

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anydepth.estimator import DepthResult
from anydepth.io import atomic_open
from anydepth.kinds import METRIC_DEPTH, UNITS
from anydepth.normalize import COLORMAPS, apply_colormap, normalize_depth, to_uint8

UI_KEY = "anydepth_depth"
"""Key of the payload in the node's UI output (the frontend reads ``output[UI_KEY][0]``)."""
GRID_MAX = 128
"""Longest side of the raw-value grid sent to the frontend."""
PREVIEW_MAX = 1024
"""Longest side of the preview PNG."""
LUT_SIZE = 128
"""Control points per colour map sent to the frontend: its linear interpolation between them stays within one
8-bit level of :func:`anydepth.normalize.apply_colormap`."""


def grid_size(height: int, width: int, max_side: int = GRID_MAX) -> tuple[int, int]:
    """Size ``(h, w)`` of a map fitted into ``max_side`` with the aspect ratio kept; never upsampled.

    Args:
        height: map height, > 0.
        width: map width, > 0.
        max_side: longest side allowed, > 0.

    Returns:
        ``(h, w)``, each at least 1.
    """
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def downsample_depth(depth: torch.Tensor, max_side: int = GRID_MAX) -> torch.Tensor:
    """Area-average a raw depth map down to at most ``max_side`` on its longer side (NaN/inf left out).

    Args:
        depth: raw depth (not modified).
        max_side: longest side of the result.

    Returns:
        float32 map; cells with no finite pixel are NaN.

    Shape:
        - depth: :math:`(H, W)`
        - output: :math:`(h, w)` with :math:`\\max(h, w) \\le` ``max_side``
    """
    if depth.ndim != 2 or depth.numel() == 0:
        raise ValueError(f"depth must be a non-empty [H, W] map, got shape {tuple(depth.shape)}")
    size = grid_size(*depth.shape, max_side=max_side)
    d = depth.detach().float()
    finite = torch.isfinite(d)
    values = torch.where(finite, d, torch.zeros_like(d))[None, None]
    weights = finite.float()[None, None]
    total = F.interpolate(values, size=size, mode="area")[0, 0]
    count = F.interpolate(weights, size=size, mode="area")[0, 0]
    return torch.where(count > 0, total / count.clamp_min(1e-12), torch.full_like(total, math.nan))


def preview_map(depth: torch.Tensor, kind: str) -> torch.Tensor:
    """The preview's grey ``[0, 1]`` map, near = white: linear in metres for metric depth, else min-max disparity.

    Shape:
        - depth: :math:`(H, W)`
        - output: :math:`(H, W)`
    """
    mode = "metric_linear" if kind == METRIC_DEPTH else "minmax"
    return normalize_depth(depth[None], kind, mode)[0]


def colormap_luts(size: int = LUT_SIZE) -> dict[str, list[int]]:
    """Each of :data:`anydepth.normalize.COLORMAPS` as ``size`` RGB control points, flattened 8-bit values.

    The frontend interpolates between them, so its colours follow the library's Depth Colormap node.
    """
    ramp = torch.linspace(0.0, 1.0, size)[None, None]  # [1, 1, size]
    return {name: (apply_colormap(ramp, name)[0, 0] * 255).round().clamp(0, 255).to(torch.uint8).reshape(-1).tolist()
            for name in COLORMAPS}


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def depth_payload(result: DepthResult, temp_dir: str, max_side: int = GRID_MAX) -> dict:
    """Write the preview PNG of the batch's first map into ``temp_dir`` and describe it for the frontend.

    Args:
        result: the Estimate Depth result.
        temp_dir: ComfyUI's temp folder (served by ``/view?type=temp``).
        max_side: longest side of the raw-value grid.

    Returns:
        JSON-ready dict: ``image`` (filename/subfolder/type for ``/view``), ``width``/``height`` of the
        depth map, ``grid`` (row-major floats, ``None`` for no value) with ``grid_width``/``grid_height``,
        ``kind``, ``units``, ``min``/``max`` of the finite values, ``batch`` (maps in the result),
        ``preview_mode`` and ``colormaps`` (see :func:`colormap_luts`).
    """
    depth = result.maps()[0].detach().float().cpu()
    height, width = depth.shape
    grid = downsample_depth(depth, max_side)
    finite = depth[torch.isfinite(depth)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (math.nan, math.nan)

    grey = preview_map(depth, result.kind)
    ph, pw = grid_size(height, width, PREVIEW_MAX)
    if (ph, pw) != (height, width):
        grey = F.interpolate(grey[None, None], size=(ph, pw), mode="area")[0, 0]
    os.makedirs(temp_dir, exist_ok=True)
    name = f"anydepth_preview_{uuid.uuid4().hex}.png"
    with atomic_open(os.path.join(temp_dir, name)) as f:
        Image.fromarray(to_uint8(grey[None])[0]).save(f, format="PNG", compress_level=1)

    values = np.round(grid.numpy().astype(np.float64), 6).reshape(-1)
    return {
        "image": {"filename": name, "subfolder": "", "type": "temp"},
        "width": width,
        "height": height,
        "grid_width": grid.shape[1],
        "grid_height": grid.shape[0],
        "grid": [v if math.isfinite(v) else None for v in values.tolist()],
        "kind": result.kind,
        "units": UNITS[result.kind],
        "min": _finite_or_none(lo),
        "max": _finite_or_none(hi),
        "batch": len(result),
        "preview_mode": "metric_linear" if result.kind == METRIC_DEPTH else "minmax",
        "colormaps": colormap_luts(),
    }
