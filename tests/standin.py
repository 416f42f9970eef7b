"""A stand-in depth network whose output is a known function of its input.

:class:`PointwiseDepth` is a :class:`~anydepth.models.DepthAnything` (so :class:`~anydepth.DepthEstimator`
accepts it and runs its real pre- and post-processing) whose ``forward`` ignores the tiny unused weights and
returns, per pixel, :math:`f = 0.2 + 0.5 R + 0.3 G + 0.2 B` of the un-normalised colours, then standardises
each output map to zero mean and unit variance. That last step gives it the affine ambiguity of a real
relative depth model: a tile and the whole image get different scales and shifts, which tiling has to undo.

``width`` > 3 routes the colours through a ``width``-channel intermediate (``width × 4`` bytes per pixel),
like a network's activations, without changing the result; the memory tests use it.
"""

from __future__ import annotations

import torch

from anydepth.models import ArchConfig, DepthAnything, ModelConfig

WEIGHTS = (0.5, 0.3, 0.2)
BIAS = 0.2


def known_depth(images: torch.Tensor) -> torch.Tensor:
    """The stand-in's answer for ``[B, 3, H, W]`` images in 0..1: ``[B, H, W]``, standardised per image."""
    f = BIAS + sum(w * images[:, c].double() for c, w in enumerate(WEIGHTS))
    return ((f - f.mean((1, 2), keepdim=True)) / f.std((1, 2), keepdim=True)).float()


class PointwiseDepth(DepthAnything):
    def __init__(self, width: int = 3) -> None:
        super().__init__(ModelConfig(ArchConfig(14, 1, 1, 4, (4, 4, 4, 4)), layers=(0, 0, 0, 0), name="pointwise"))
        if width % 3:
            raise ValueError("width must be a multiple of 3")
        self.width = width
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        mean = torch.tensor(self.config.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        rgb = x * std + mean
        k = self.width // 3
        w = torch.tensor(WEIGHTS, dtype=x.dtype, device=x.device).repeat_interleave(k).view(1, -1, 1, 1) / k
        hidden = rgb.repeat_interleave(k, dim=1)  # [B, width, H, W]: the "activations"
        f = BIAS + (hidden * w).sum(1)
        del hidden
        return (f - f.mean((1, 2), keepdim=True)) / f.std((1, 2), keepdim=True)
