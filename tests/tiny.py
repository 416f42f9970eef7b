"""Tiny random Depth Anything checkpoints written in every published format.

The source of truth is a transformers ``DepthAnythingForDepthEstimation`` built from a config (no hub):
its weights are written as a ``-hf`` folder (old and new attention names) and, converted to the
original layout, as ``.pth`` and fp16/fp32 safetensors. Real weights cannot be downloaded here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

from anydepth.weights import convert_hf

TINY = dict(hidden=128, heads=2, layers=4, fusion=16, neck=(8, 16, 32, 32))
VITS = dict(hidden=384, heads=6, layers=12, fusion=64, neck=(48, 96, 192, 384))


def hf_model(shape: dict = TINY, *, seed: int = 0, metric: bool = False, max_depth: int = 20,
             out_indices: list[int] | None = None) -> DepthAnythingForDepthEstimation:
    """A transformers Depth Anything with random weights that give a non-trivial output."""
    n = shape["layers"]
    backbone = Dinov2Config(
        hidden_size=shape["hidden"], num_attention_heads=shape["heads"], num_hidden_layers=n,
        intermediate_size=4 * shape["hidden"], patch_size=14, image_size=518, layerscale_value=1.0,
        out_indices=out_indices or ([3, 6, 9, 12] if n == 12 else list(range(1, 5))),
        apply_layernorm=True, reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, fusion_hidden_size=shape["fusion"], neck_hidden_sizes=list(shape["neck"]),
        reassemble_hidden_size=shape["hidden"], head_hidden_size=32,
        depth_estimation_type="metric" if metric else "relative", max_depth=int(max_depth) if metric else 1,
    )
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "norm1" in name or "norm2" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p)) if name.endswith("weight") else p.normal_(0, 0.1)
            else:
                p.normal_(0, 0.05)
        # Keep the relative ReLU output (and the metric sigmoid) away from their flat ends.
        model.head.conv3.bias.fill_(0.0 if metric else 1.0)
        model.head.conv3.weight.mul_(4.0)
    return model


def write_hf_dir(model: DepthAnythingForDepthEstimation, path: Path, names: str = "old") -> Path:
    """A ``-hf`` repo folder. ``names="old"``: published attention names (save_pretrained);
    ``"new"``: the in-memory names of transformers ≥ 5 (``q_proj`` ...)."""
    path.mkdir(parents=True, exist_ok=True)
    if names == "old":
        model.save_pretrained(path)
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps(model.config.to_dict()))
    return path


def original_state_dict(model: DepthAnythingForDepthEstimation, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype).contiguous() for k, v in convert_hf(model.state_dict()).items()}


def write_pth(model, path: Path) -> Path:
    torch.save(original_state_dict(model), path)
    return path


def write_safetensors(model, path: Path, dtype: torch.dtype = torch.float32) -> Path:
    save_file(original_state_dict(model, dtype), str(path))
    return path


#: ``preprocessor_config.json`` as the published ``-hf`` repos hold it (transformers' DPT image processor:
#: shorter side to 518 keeping the aspect ratio, multiples of 14, bicubic, ImageNet statistics).
PREPROCESSOR_CONFIG = {
    "do_normalize": True, "do_pad": False, "do_rescale": True, "do_resize": True, "ensure_multiple_of": 14,
    "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "DPTImageProcessor", "image_std": [0.229, 0.224, 0.225],
    "keep_aspect_ratio": True, "resample": 3, "rescale_factor": 1 / 255, "size": {"height": 518, "width": 518},
}


def write_preprocessor_config(folder: Path) -> Path:
    """Add the ``preprocessor_config.json`` of a published ``-hf`` repo to ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "preprocessor_config.json"
    path.write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2))
    return path


def write_hf_repo(model: DepthAnythingForDepthEstimation, path: Path) -> Path:
    """A ``-hf`` repo folder with every published file: config, weights and image-processor config."""
    write_hf_dir(model, path)
    write_preprocessor_config(path)
    return path


def write_distill(model, path: Path, chunks: int = 1, dtype: torch.dtype = torch.float32) -> Path:
    """Distill-Any-Depth's training-code layout, as its published ``large/model.safetensors``.

    The DINOv2 is named ``backbone`` (not ``pretrained``) and built with ``block_chunks``: block ``N``
    is stored as ``backbone.blocks.C.N`` with ``C = N // ceil(depth / chunks)`` (``N`` is not reset per
    chunk). The head keeps the original ``depth_head.*`` names.
    """
    sd = original_state_dict(model, dtype)
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("pretrained.blocks."))
    per_chunk = -(-depth // chunks)
    out = {}
    for k, v in sd.items():
        if k.startswith("pretrained."):
            parts = k.split(".")
            if parts[1] == "blocks":
                parts.insert(2, str(int(parts[2]) // per_chunk))
            k = ".".join(["backbone", *parts[1:]])
        out[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return path
