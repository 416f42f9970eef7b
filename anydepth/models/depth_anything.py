"""Depth Anything V1 / V2: a DINOv2 backbone and a DPT head, relative or metric.

The configuration (:class:`~anydepth.models.config.ModelConfig`) lives in :mod:`anydepth.models.config`;
:func:`anydepth.models.create_model` builds the network from it.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..kinds import METRIC_DEPTH
from .config import ModelConfig
from .dinov2 import DinoVisionTransformer, convert_hf_dinov2
from .dpt import DPTHead


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


# --------------------------------------------------------------------------------------------
# Checkpoint converters: foreign key layouts -> this network's names (the original release's).
# Each is pure (a new dict, tensors shared); anydepth.weights picks one from a sentinel key.

_HF_HEAD_RENAMES = [
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.", r"depth_head.projects.\1."),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.", r"depth_head.resize_layers.\1."),
    (r"head\.conv1\.", "depth_head.scratch.output_conv1."),
    (r"head\.conv2\.", "depth_head.scratch.output_conv2.0."),
    (r"head\.conv3\.", "depth_head.scratch.output_conv2.2."),
]


def convert_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``DepthAnythingForDepthEstimation`` keys (every ``-hf`` repo) -> original keys.

    The DINOv2 backbone goes through :func:`~anydepth.models.dinov2.convert_hf_dinov2` (published and
    transformers ≥ 5 attention names, q/k/v joined into ``attn.qkv``); the neck and head are renamed here.
    Unknown keys are kept for the strict load to report.

    Example:
        >>> sorted(convert_hf({"head.conv3.bias": torch.zeros(1), "neck.convs.0.weight": torch.zeros(1)}))
        ['depth_head.scratch.layer1_rn.weight', 'depth_head.scratch.output_conv2.2.bias']
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in convert_hf_dinov2(sd).items():
        m = re.match(r"neck\.convs\.(\d)\.(.*)", k)
        if m:
            out[f"depth_head.scratch.layer{int(m.group(1)) + 1}_rn.{m.group(2)}"] = v
            continue
        m = re.match(r"neck\.fusion_stage\.layers\.(\d)\.(.*)", k)
        if m:  # transformers counts fusion stages from the deepest; the original names them refinenet4..1
            rest = (m.group(2).replace("projection.", "out_conv.").replace("residual_layer", "resConfUnit")
                    .replace("convolution", "conv"))
            out[f"depth_head.scratch.refinenet{4 - int(m.group(1))}.{rest}"] = v
            continue
        for pattern, repl in _HF_HEAD_RENAMES:
            new, n = re.subn("^" + pattern, repl, k)
            if n:
                out[new] = v
                break
        else:
            out[k] = v
    return out


_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def convert_distill(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Distill-Any-Depth training-code keys -> original keys.

    The authors' code names the DINOv2 ``backbone`` (not ``pretrained``) and builds ViT-L with chunked
    blocks: block ``N`` is stored as ``backbone.blocks.C.N.*``, ``N`` counting from the first block of
    the network (DINOv2 pads each chunk with identities), so dropping the chunk index ``C`` gives the
    plain ``blocks.N``. Head keys (``depth_head.*``) are already the original ones.

    Example:
        >>> sorted(convert_distill({"backbone.blocks.0.7.ls1.gamma": torch.ones(1), "backbone.blocks.3.norm1.bias": torch.ones(1)}))
        ['pretrained.blocks.3.norm1.bias', 'pretrained.blocks.7.ls1.gamma']
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            k = "pretrained." + _CHUNKED_BLOCK.sub(r"blocks.\1.", k[len("backbone."):])
        out[k] = v
    return out
