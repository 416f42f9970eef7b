"""DPT decoder of Depth Anything V1/V2: reassemble four ViT feature maps, fuse them coarse to fine.

Names follow the original ``depth_head.*`` layout so original checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, device=device, dtype=dtype)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The inner ReLU works in place on conv1's fresh output (x itself is needed for the residual): at
        # full resolution these maps are hundreds of MB, and an extra copy costs memory bandwidth.
        return self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True)).add_(x)


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
            x = self.resConfUnit1(skip).add_(x)  # a fresh map: add in place, same sum
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


def add_reassemble_layers(head: nn.Module, in_channels: int, features: int, out_channels: Sequence[int],
                          dd: dict) -> None:
    """Give ``head`` the DPT reassemble stage under the original names (V1/V2 and DA3 heads share it).

    ``projects.N`` (1×1 to each level's width), ``resize_layers.N`` (×4, ×2, ×1, ×½ of the patch grid) and
    ``scratch.layerN_rn`` (3×3 to the fusion width) for the four levels; ``head.scratch`` is created here.
    """
    c = list(out_channels)
    head.projects = nn.ModuleList(nn.Conv2d(in_channels, oc, 1, **dd) for oc in c)
    head.resize_layers = nn.ModuleList([
        nn.ConvTranspose2d(c[0], c[0], 4, stride=4, **dd),
        nn.ConvTranspose2d(c[1], c[1], 2, stride=2, **dd),
        nn.Identity(),
        nn.Conv2d(c[3], c[3], 3, stride=2, padding=1, **dd),
    ])
    head.scratch = nn.Module()
    for i, oc in enumerate(c, start=1):
        setattr(head.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False, **dd))


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
        add_reassemble_layers(self, in_channels, features, out_channels, dd)
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features, **dd))
        head_hidden = 32
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1, **dd)
        activation = {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid()}[output_activation]
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, head_hidden, 3, padding=1, **dd),
            nn.ReLU(inplace=True),  # on the conv's own output, the largest map of the network
            nn.Conv2d(head_hidden, 1, 1, **dd),
            activation,
        )

    def forward(self, features: Sequence[torch.Tensor], patch_size: int = 14, *, mix: Mix | None = None,
                chunk: int | None = None) -> torch.Tensor:
        """Shape: four ``[B, C, h, w]`` maps in, ``[B, 1, h * patch, w * patch]`` out.

        Args:
            features: the backbone taps, shallowest first.
            patch_size: pixels per token side.
            mix: extension point of the video model (:mod:`anydepth.models.video_depth_anything`): called as
                ``mix(i, x)`` at four points and continued with what it returns: ``i = 0, 1`` on the third and
                fourth reassembled maps (before their ``layerN_rn`` conv), ``i = 2`` after ``refinenet4``,
                ``i = 3`` after ``refinenet3``. ``None`` (V1/V2) changes nothing.
            chunk: run the two shallow levels and the full-resolution stages ``chunk`` images at a time: the
                same numbers with a lower peak memory for large batches (video windows). ``None``: all at once.
        """
        gh, gw = features[0].shape[-2:]
        s = self.scratch
        # The deep levels first (where the video model mixes frames); the shallow ones are per image and
        # the largest maps, so they are made per chunk, right where they are fused.
        l3 = s.layer3_rn(_mixed(mix, 0, self.resize_layers[2](self.projects[2](features[2]))))
        l4 = s.layer4_rn(_mixed(mix, 1, self.resize_layers[3](self.projects[3](features[3]))))
        path = _mixed(mix, 2, s.refinenet4(l4, size=l3.shape[2:]))
        del l4
        # level 2 is the grid ×2 (its transposed convolution has kernel = stride = 2)
        path = _mixed(mix, 3, s.refinenet3(path, l3, size=(2 * gh, 2 * gw)))
        del l3
        out_size = (gh * patch_size, gw * patch_size)
        step = path.shape[0] if chunk is None else chunk
        outs = [self._fine(path[i:i + step], features[0][i:i + step], features[1][i:i + step], out_size)
                for i in range(0, path.shape[0], step)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _fine(self, path: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """The shallow levels from their taps, fused into ``path``; upsampled to ``out_size``; the prediction."""
        s = self.scratch
        l2 = s.layer2_rn(self.resize_layers[1](self.projects[1](f2)))
        path = s.refinenet2(path, l2, size=(2 * l2.shape[-2], 2 * l2.shape[-1]))
        del l2
        l1 = s.layer1_rn(self.resize_layers[0](self.projects[0](f1)))
        path = s.refinenet1(path, l1)
        del l1
        out = s.output_conv1(path)
        out = F.interpolate(out, out_size, mode="bilinear", align_corners=True)
        return s.output_conv2(out)


#: ``mix(i, x) -> x``: what :meth:`DPTHead.forward` calls at its four extension points.
Mix = Callable[[int, torch.Tensor], torch.Tensor]


def _mixed(mix: Mix | None, i: int, x: torch.Tensor) -> torch.Tensor:
    """``mix(i, x)``, or ``x`` unchanged without a hook."""
    return x if mix is None else mix(i, x)
