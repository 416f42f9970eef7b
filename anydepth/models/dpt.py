"""DPT decoder of Depth Anything V1/V2: reassemble four ViT feature maps, fuse them coarse to fine.

Names follow the original ``depth_head.*`` layout so original checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, device=device, dtype=dtype)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """Adds a skip feature (after a residual unit), refines, upsamples ×2 (or to ``size``), projects."""

    def __init__(self, features: int, *, has_residual: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.out_conv = nn.Conv2d(features, features, 1, **dd)
        # The coarsest block never gets a skip; DA3 files store no weights for its unused unit.
        self.resConfUnit1 = ResidualConvUnit(features, **dd) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features, **dd)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    """DPT head producing one channel at the input resolution (``14 × grid``).

    Args:
        in_channels: ViT token width.
        features: fusion width (64 / 128 / 256 / 384 for S / B / L / G).
        out_channels: per-level reassemble widths.
        output_activation: ``"relu"`` for relative disparity, ``"sigmoid"`` for metric depth in (0, 1).
    """

    def __init__(
        self,
        in_channels: int,
        features: int,
        out_channels: Sequence[int],
        output_activation: str = "relu",
        *,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        c = list(out_channels)
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, oc, 1, **dd) for oc in c)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(c[0], c[0], 4, stride=4, **dd),
                nn.ConvTranspose2d(c[1], c[1], 2, stride=2, **dd),
                nn.Identity(),
                nn.Conv2d(c[3], c[3], 3, stride=2, padding=1, **dd),
            ]
        )
        self.scratch = nn.Module()
        for i, oc in enumerate(c, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False, **dd))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features, **dd))
        head_hidden = 32
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1, **dd)
        activation = {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid()}[output_activation]
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, head_hidden, 3, padding=1, **dd),
            nn.ReLU(),
            nn.Conv2d(head_hidden, 1, 1, **dd),
            activation,
        )

    def forward(self, features: Sequence[torch.Tensor], patch_size: int = 14) -> torch.Tensor:
        """Shape: four ``[B, C, h, w]`` maps in, ``[B, 1, h * patch, w * patch]`` out."""
        gh, gw = features[0].shape[-2:]
        s = self.scratch
        l1, l2, l3, l4 = (
            rn(resize(project(f)))
            for f, project, resize, rn in zip(
                features, self.projects, self.resize_layers, (s.layer1_rn, s.layer2_rn, s.layer3_rn, s.layer4_rn)
            )
        )
        path = s.refinenet4(l4, size=l3.shape[2:])
        path = s.refinenet3(path, l3, size=l2.shape[2:])
        path = s.refinenet2(path, l2, size=l1.shape[2:])
        path = s.refinenet1(path, l1)
        out = s.output_conv1(path)
        out = F.interpolate(out, (gh * patch_size, gw * patch_size), mode="bilinear", align_corners=True)
        return s.output_conv2(out)
