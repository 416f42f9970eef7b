"""Depth Anything 3 reference networks (the official ``depth-anything-3==0.1.1`` code) with random weights.

The official package is a test-only reference (installed ``--no-deps``). Its DA3 presets are built with
``create_object(load_config(MODEL_REGISTRY[name]))``; tiny any-view / mono / nested networks are
assembled from its own classes (the ``DinoV2`` wrapper only knows the four released widths). Weights are
random but chosen so that depth, confidence and cameras are all non-degenerate (no exp overflow, fields
of view away from the ReLU floor), otherwise a parity check would compare nothing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from anydepth.models import ArchConfig, create_model
from anydepth.models.config import DA3Config, NestedDA3Config
from anydepth.weights import convert_da3

TINY_ARCH = ArchConfig(64, 10, 2, 16, (8, 16, 32, 32))  # head width 32: divisible by 4 for the 2D RoPE
TINY_ANYVIEW = DA3Config(TINY_ARCH, (3, 5, 6, 9), alt_start=2, qknorm_start=2, rope_start=2, name="tiny")  # block 6 is within-view
TINY_SWIGLU = replace(TINY_ANYVIEW, arch=replace(TINY_ARCH, ffn="swiglu"), name="tiny-swiglu")  # GIANT's MLP
# Heads 64 wide, as in every DINOv2: a file without QK-norm does not tell the head count otherwise.
TINY_MONO = DA3Config(ArchConfig(64, 6, 1, 16, (8, 16, 32, 32)), (1, 2, 3, 5), cat_token=False, head="dpt", camera=False,
                      name="tiny-mono")
TINY_FILE = replace(TINY_ANYVIEW, layers=(3, 5, 7, 9), name="")  # block taps a file without model_name implies


class _DinoV2(nn.Module):
    """Stand-in for the official ``DinoV2`` wrapper (same ``pretrained`` attribute and call)."""

    def __init__(self, vit: nn.Module, out_layers) -> None:
        super().__init__()
        self.pretrained = vit
        self.out_layers = list(out_layers)

    def forward(self, x, **kwargs):
        return self.pretrained.get_intermediate_layers(x, self.out_layers, **kwargs)


def official_small(seed: int = 0) -> nn.Module:
    from depth_anything_3.cfg import create_object, load_config
    from depth_anything_3.registry import MODEL_REGISTRY

    return randomize(create_object(load_config(MODEL_REGISTRY["da3-small"])).eval(), seed)


def official_tiny(config: DA3Config, seed: int = 0, gs_head: bool = False) -> nn.Module:
    """The official network for a tiny ``config`` (any-view with DualDPT + cameras, or mono/metric DPT)."""
    from depth_anything_3.model.cam_dec import CameraDec
    from depth_anything_3.model.cam_enc import CameraEnc
    from depth_anything_3.model.da3 import DepthAnything3Net
    from depth_anything_3.model.dinov2.vision_transformer import DinoVisionTransformer
    from depth_anything_3.model.dpt import DPT
    from depth_anything_3.model.dualdpt import DualDPT

    a = config.arch
    vit = DinoVisionTransformer(
        img_size=518, patch_size=14, embed_dim=a.embed_dim, depth=a.depth, num_heads=a.num_heads, mlp_ratio=4,
        ffn_layer="swiglufused" if a.ffn == "swiglu" else "mlp", alt_start=config.alt_start,
        qknorm_start=config.qknorm_start, rope_start=config.rope_start, cat_token=config.cat_token,
    )
    net = _DinoV2(vit, config.layers)
    if config.head == "dualdpt":
        head = DualDPT(dim_in=config.head_dim_in, output_dim=2, features=a.features, out_channels=list(a.out_channels))
        model = DepthAnything3Net(net, head, cam_dec=CameraDec(dim_in=config.head_dim_in), cam_enc=CameraEnc(dim_out=a.embed_dim))
    else:
        head = DPT(dim_in=config.head_dim_in, output_dim=1, features=a.features, out_channels=list(a.out_channels))
        model = DepthAnything3Net(net, head)
    if gs_head:  # the Gaussian-splatting head of GIANT files: present in the file, skipped by anydepth
        from depth_anything_3.model.gsdpt import GSDPT

        model.gs_head = GSDPT(dim_in=config.head_dim_in, output_dim=38, features=a.features, out_channels=list(a.out_channels))
    return randomize(model.eval(), seed)


def official_nested(anyview: nn.Module, metric: nn.Module) -> nn.Module:
    from depth_anything_3.model.da3 import NestedDepthAnything3Net

    nested = NestedDepthAnything3Net.__new__(NestedDepthAnything3Net)
    nn.Module.__init__(nested)
    nested.da3, nested.da3_metric = anyview, metric
    return nested.eval()


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights giving well-conditioned outputs (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=g)
            if "norm" in name or name.endswith(("aux.0.2.weight", "aux.0.2.bias")):
                p.copy_(1 + 0.1 * n if name.endswith("weight") else 0.1 * n)
            elif name.endswith("gamma"):
                p.copy_(0.5 + 0.1 * n)
            elif "token" in name or "pos_embed" in name:
                p.copy_(0.5 * n)
            else:
                fan_in = max(1, p[0].numel()) if p.ndim > 1 else 1
                p.copy_(n * (0.8 / fan_in**0.5 if p.ndim > 1 else 0.05))
        for name, p in model.named_parameters():
            if name.endswith("cam_dec.fc_fov.0.bias"):
                p.copy_(torch.tensor([1.0, 1.2]))  # fields of view around 60°, away from the ReLU floor
            elif name.endswith("cam_dec.fc_qvec.bias"):
                p.add_(torch.tensor([0.0, 0.0, 0.0, 2.0]))
            elif name.endswith("scratch.output_conv2.2.weight"):
                p.mul_(0.3)
            elif name.endswith("sky_output_conv2.2.weight"):
                p.mul_(8.0)
            elif name.endswith("sky_output_conv2.2.bias"):
                p.fill_(0.3)  # about half the pixels over the 0.3 sky threshold
    return model


def ours_from(official: nn.Module, config: DA3Config | NestedDA3Config) -> nn.Module:
    """anydepth's network for ``config`` holding the official network's weights (strict load)."""
    model = create_model(config)
    model.load_state_dict(convert_da3(official.state_dict()), strict=True)
    return model.eval()


class _Saver(nn.Module):
    """What the official ``DepthAnything3`` looks like to ``PyTorchModelHubMixin``: the network under ``model``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.model = net


def save_official(net: nn.Module, folder: Path, model_name: str | None = None) -> Path:
    """``config.json`` + ``model.safetensors`` as ``DepthAnything3.save_pretrained`` writes them.

    With a ``model_name`` of a released preset the official ``PyTorchModelHubMixin`` writes the files;
    otherwise (tiny networks) its safetensors call is used directly and no ``model_name`` is recorded.
    """
    import json

    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    if model_name is not None:
        from huggingface_hub import PyTorchModelHubMixin

        class DepthAnything3(nn.Module, PyTorchModelHubMixin):
            def __init__(self, model_name: str = "da3-large") -> None:
                super().__init__()
                self.model = net

        DepthAnything3(model_name=model_name).save_pretrained(folder)
    else:
        save_model(_Saver(net), str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({}))
    return folder


def write_single_file(net: nn.Module, path: Path) -> Path:
    """One ``.safetensors`` with the official ``model.*`` keys and no ``config.json``: the published
    ``model.safetensors`` renamed, as the ComfyUI-DepthAnythingV3 pack keeps it (``da3_large.safetensors`` ...)."""
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(_Saver(net), str(path))
    return path
