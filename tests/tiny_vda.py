"""Tiny random Video Depth Anything checkpoints in the published key layout.

The layout is written out here from the published files' names (REFERENCE.md §9), not taken from
anydepth's network, so a strict load tests that the network's names match the releases: V2's
``pretrained.*`` backbone, V2's DPT head under ``head.*`` (instead of ``depth_head.*``) and four
``head.motion_modules.N.temporal_transformer.*`` modules. The V2 part comes from the same transformers
model as every other tiny checkpoint (:mod:`tiny`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from anydepth.models import ArchConfig, VideoModelConfig, layer_indices
from tiny import hf_model, original_state_dict

#: Like :data:`tiny.TINY`, with the widths the temporal modules need (multiples of 32: their GroupNorm).
TINY_VDA = dict(hidden=128, heads=2, layers=4, fusion=32, neck=(8, 16, 32, 32))

#: Per temporal module of width ``C`` (``F``: frames of the position code): published name -> shape.
MODULE_KEYS: dict[str, "callable"] = {
    "norm.weight": lambda c, f: (c,),
    "norm.bias": lambda c, f: (c,),
    "proj_in.weight": lambda c, f: (c, c),
    "proj_in.bias": lambda c, f: (c,),
    **{f"transformer_blocks.0.attention_blocks.{a}.{name}": shape
       for a in (0, 1)
       for name, shape in (("to_q.weight", lambda c, f: (c, c)), ("to_k.weight", lambda c, f: (c, c)),
                           ("to_v.weight", lambda c, f: (c, c)), ("to_out.0.weight", lambda c, f: (c, c)),
                           ("to_out.0.bias", lambda c, f: (c,)), ("pos_encoder.pe", lambda c, f: (1, f, c)))},
    **{f"transformer_blocks.0.norms.{a}.{p}": (lambda c, f: (c,)) for a in (0, 1) for p in ("weight", "bias")},
    "transformer_blocks.0.ff.net.0.proj.weight": lambda c, f: (8 * c, c),
    "transformer_blocks.0.ff.net.0.proj.bias": lambda c, f: (8 * c,),
    "transformer_blocks.0.ff.net.2.weight": lambda c, f: (c, 4 * c),
    "transformer_blocks.0.ff.net.2.bias": lambda c, f: (c,),
    "transformer_blocks.0.ff_norm.weight": lambda c, f: (c,),
    "transformer_blocks.0.ff_norm.bias": lambda c, f: (c,),
    "proj_out.weight": lambda c, f: (c, c),
    "proj_out.bias": lambda c, f: (c,),
}


def position_code(frames: int, width: int) -> torch.Tensor:
    """The sinusoidal ``pe`` buffer the releases store: sine on even channels, cosine on odd ones."""
    pe = torch.zeros(1, frames, width)
    for t in range(frames):
        for i in range(0, width, 2):
            angle = t * math.exp(-math.log(10000.0) * i / width)
            pe[0, t, i] = math.sin(angle)
            pe[0, t, i + 1] = math.cos(angle)
    return pe


def temporal_widths(shape: dict = TINY_VDA) -> tuple[int, int, int, int]:
    """Third and fourth reassemble widths, then twice the fusion width."""
    return shape["neck"][2], shape["neck"][3], shape["fusion"], shape["fusion"]


def v2_state_dict(shape: dict = TINY_VDA, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """The V2 part in V2's own layout (``depth_head.*``): what a V2 file of the same weights holds."""
    return original_state_dict(hf_model(shape, seed=seed))


def vda_state_dict(shape: dict = TINY_VDA, *, seed: int = 0, frames: int = 32, zero_out: bool = False) -> dict[str, torch.Tensor]:
    """A random VDA state dict in the published layout; ``zero_out``: the temporal output linears at zero
    (the training initialisation, with which the network is exactly V2)."""
    sd = {("head." + k[len("depth_head."):] if k.startswith("depth_head.") else k): v
          for k, v in v2_state_dict(shape, seed=seed).items()}
    g = torch.Generator().manual_seed(seed + 1)
    for i, c in enumerate(temporal_widths(shape)):
        for name, shape_of in MODULE_KEYS.items():
            size = shape_of(c, frames)
            if name.endswith("pos_encoder.pe"):
                t = position_code(frames, c)
            elif "norm" in name and name.endswith("weight"):
                t = 1.0 + 0.1 * torch.randn(size, generator=g)
            elif zero_out and name.startswith("proj_out."):
                t = torch.zeros(size)
            else:
                t = (0.3 if name.startswith("proj_out.") else 0.1) * torch.randn(size, generator=g)
            sd[f"head.motion_modules.{i}.temporal_transformer.{name}"] = t
    return sd


def vda_config(shape: dict = TINY_VDA, *, metric: bool = False, frames: int = 32) -> VideoModelConfig:
    """The config a loader should detect for :func:`vda_state_dict` of ``shape``."""
    arch = ArchConfig(shape["hidden"], shape["layers"], shape["heads"], shape["fusion"], tuple(shape["neck"]))
    return VideoModelConfig(arch, layer_indices("v2", shape["layers"]), "metric_depth" if metric else "disparity",
                            frames=frames)


def write_vda(sd: dict[str, torch.Tensor], path: Path) -> Path:
    """Save as the releases do (``.pth``, a plain state dict) or as safetensors, by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path
