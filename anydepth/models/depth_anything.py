"""Depth Anything V1 / V2: a DINOv2 backbone and a DPT head, relative or metric."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..kinds import DISPARITY, METRIC_DEPTH, DepthKind
from .dinov2 import DinoVisionTransformer
from .dpt import DPTHead


@dataclass(frozen=True)
class ArchConfig:
    """Shape of one Depth Anything network; everything needed to build it, nothing about weights."""

    embed_dim: int
    depth: int
    num_heads: int
    features: int
    out_channels: tuple[int, int, int, int]
    mlp_ratio: float = 4.0
    ffn: str = "mlp"
    patch_size: int = 14
    pos_grid: int = 37

    @property
    def image_size(self) -> int:
        """Side in pixels the position embedding was trained at (518 for the released models)."""
        return self.pos_grid * self.patch_size


# Released encoder sizes (REFERENCE.md §2). Heads are 64 wide in every DINOv2 size.
ARCHS: dict[str, ArchConfig] = {
    "vits": ArchConfig(384, 12, 6, 64, (48, 96, 192, 384)),
    "vitb": ArchConfig(768, 12, 12, 128, (96, 192, 384, 768)),
    "vitl": ArchConfig(1024, 24, 16, 256, (256, 512, 1024, 1024)),
    "vitg": ArchConfig(1536, 40, 24, 384, (1536, 1536, 1536, 1536), ffn="swiglu"),
}

_V2_LAYERS = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23), 40: (9, 19, 29, 39)}


def layer_indices(family: str, depth: int) -> tuple[int, ...]:
    """Blocks whose outputs feed the DPT head: V1 takes the last four, V2 spreads them out."""
    if family == "v1":
        return tuple(range(depth - 4, depth))
    if family == "v2":
        # Non-released depths (tiny test models) spread the taps evenly like the released ones.
        return _V2_LAYERS.get(depth, tuple(round((i + 1) * depth / 4) - 1 for i in range(4)))
    raise ValueError(f"unknown Depth Anything family {family!r}; expected 'v1' or 'v2'")


@dataclass(frozen=True)
class ModelConfig:
    """A buildable Depth Anything network: architecture, which blocks feed the head, what it outputs."""

    arch: ArchConfig
    layers: tuple[int, ...]
    kind: DepthKind = DISPARITY
    max_depth: float | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in (DISPARITY, METRIC_DEPTH):
            raise ValueError(f"V1/V2 networks output 'disparity' or 'metric_depth', not {self.kind!r}")
        if self.kind == METRIC_DEPTH and not (self.max_depth and self.max_depth > 0):
            raise ValueError("a metric model needs max_depth in metres (20 for indoor/Hypersim, 80 for outdoor/VKITTI)")
        if len(self.layers) != 4 or not all(0 <= i < self.arch.depth for i in self.layers):
            raise ValueError(f"layers must be four block indices below {self.arch.depth}, got {self.layers}")

    def with_output(self, kind: DepthKind, max_depth: float | None = None) -> "ModelConfig":
        return replace(self, kind=kind, max_depth=max_depth if kind == METRIC_DEPTH else None)


class DepthAnything(nn.Module):
    """Depth Anything V1/V2 network.

    ``forward`` maps a normalised ``[B, 3, H, W]`` batch (``H``, ``W`` multiples of 14) to ``[B, H, W]``:
    relative disparity (ReLU, larger = nearer) or metric depth in metres (sigmoid × max_depth).
    """

    def __init__(self, config: ModelConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        a = config.arch
        self.config = config
        self.pretrained = DinoVisionTransformer(
            a.embed_dim, a.depth, a.num_heads, a.mlp_ratio, a.ffn, a.patch_size, a.pos_grid, device=device, dtype=dtype
        )
        activation = "sigmoid" if config.kind == METRIC_DEPTH else "relu"
        self.depth_head = DPTHead(a.embed_dim, a.features, a.out_channels, activation, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pretrained.forward_intermediates(x, self.config.layers)
        out = self.depth_head(features, self.config.arch.patch_size).squeeze(1)
        if self.config.kind == METRIC_DEPTH:
            return out * self.config.max_depth
        return out  # the head already ends in ReLU; the original's second ReLU is a no-op


def create_model(config: ModelConfig, *, device=None, dtype=None) -> DepthAnything:
    """The only constructor. ``device="meta"`` builds without memory for ``load_state_dict(assign=True)``.

    A :class:`~anydepth.models.da3.DA3Config` / ``NestedDA3Config`` builds a Depth Anything 3 network.
    """
    if not isinstance(config, ModelConfig):
        from .da3 import create_da3_model

        return create_da3_model(config, device=device, dtype=dtype)
    return DepthAnything(config, device=device, dtype=dtype).eval()
