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
    if gs_head:  # the Gaussian-splatting head of GIANT files, with the adapter settings of the da3-giant preset
        install_evo_stub()  # the adapter's module imports the official pose alignment, which imports evo
        from depth_anything_3.model.gs_adapter import GaussianAdapter
        from depth_anything_3.model.gsdpt import GSDPT

        model.gs_head = GSDPT(dim_in=config.head_dim_in, output_dim=38, features=a.features, out_channels=list(a.out_channels))
        model.gs_adapter = GaussianAdapter(sh_degree=2, pred_color=False, pred_offset_depth=True, pred_offset_xy=True,
                                           gaussian_scale_min=1e-5, gaussian_scale_max=30.0)
    return randomize(model.eval(), seed)


def _umeyama_numpy(x, y):
    """``(r, t, c)`` with ``y ≈ c r x + t`` for ``[3, n]`` point sets (Umeyama 1991), as evo computes it:
    population covariance, reflection fix, and an error for a covariance of rank below 2."""
    import numpy as np

    mx, my = x.mean(1, keepdims=True), y.mean(1, keepdims=True)
    sigma = ((x - mx) ** 2).sum(0).mean()
    cov = (y - my) @ (x - mx).T / x.shape[1]
    u, d, vt = np.linalg.svd(cov)
    if np.linalg.matrix_rank(cov) < 2:
        raise ValueError("degenerate covariance rank, Umeyama alignment is not possible")
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2, 2] = -1
    r = u @ s @ vt
    c = np.trace(np.diag(d) @ s) / sigma
    return r, (my - c * r @ mx)[:, 0], c


def install_evo_stub() -> None:
    """Make ``evo.core.trajectory.PosePath3D`` importable when evo is not installed.

    The official pose alignment (and the Gaussian adapter's module, which imports it) needs evo only for
    ``PosePath3D(poses_se3=...).align(ref, correct_scale=True)``: a Umeyama similarity of the camera
    positions, applied to the path. This stand-in computes it with NumPy (:func:`_umeyama_numpy`, written
    from the paper, not from anydepth); with evo installed, evo itself is used.
    """
    import importlib.util
    import sys
    import types

    if "evo.core.trajectory" in sys.modules or importlib.util.find_spec("evo") is not None:
        return
    import numpy as np

    class PosePath3D:
        def __init__(self, poses_se3):
            self.poses_se3 = [np.asarray(p, dtype=np.float64) for p in poses_se3]

        @property
        def positions_xyz(self):
            return np.stack([p[:3, 3] for p in self.poses_se3])

        def align(self, ref, correct_scale=False):
            r, t, c = _umeyama_numpy(self.positions_xyz.T, ref.positions_xyz.T)
            c = c if correct_scale else 1.0
            moved = []
            for p in self.poses_se3:
                q = np.eye(4)
                q[:3, :3], q[:3, 3] = r @ p[:3, :3], c * r @ p[:3, 3] + t
                moved.append(q)
            self.poses_se3 = moved
            return r, t, c

    for name in ("evo", "evo.core", "evo.core.trajectory"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["evo.core.trajectory"].PosePath3D = PosePath3D


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


# ------------------------------------------------------------------------------------------------ ComfyUI core's layout


def comfy_state_dict(net: nn.Module, *, shared_norm_once: bool = False) -> dict[str, torch.Tensor]:
    """The official network's tensors under ComfyUI core's names (``comfy/ldm/depth_anything_3`` on core's DINOv2).

    Written from core's module tree, not from anydepth's converter: ``Dinov2Model`` holds ``embeddings``
    (``patch_embeddings.projection``, ``position_embeddings``, ``cls_token``, ``camera_token``), ``encoder.layer.N``
    (``norm1``, ``attention.attention.{query,key,value}``, ``attention.output.dense``, ``attention.{q,k}_norm``,
    ``layer_scale{1,2}.lambda1``, ``norm2``, ``mlp.fc1/fc2`` or SwiGLU ``mlp.weights_in/weights_out``) and
    ``layernorm``; the heads and camera modules keep the official names. Core's DualDPT lists its shared aux
    LayerNorm under all four heads (``shared_norm_once`` stores it once, as a de-duplicating writer would).
    """
    out: dict[str, torch.Tensor] = {}
    renames = {"patch_embed.proj": "embeddings.patch_embeddings.projection", "pos_embed": "embeddings.position_embeddings",
               "cls_token": "embeddings.cls_token", "camera_token": "embeddings.camera_token", "norm": "layernorm"}
    block = {"attn.proj": "attention.output.dense", "attn.q_norm": "attention.q_norm", "attn.k_norm": "attention.k_norm",
             "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1", "mlp.w12": "mlp.weights_in",
             "mlp.w3": "mlp.weights_out"}
    for k, v in net.state_dict().items():
        v = v.detach().clone()
        if not k.startswith("backbone.pretrained."):
            if any(f".output_conv2_aux.{i}.2." in k for i in (1, 2, 3)):
                continue  # the one shared LayerNorm, written from its level-0 name below
            if shared_norm_once or ".output_conv2_aux.0.2." not in k:
                out[k] = v
            else:
                for i in range(4):
                    out[k.replace(".output_conv2_aux.0.2.", f".output_conv2_aux.{i}.2.")] = v.clone()
            continue
        name = k[len("backbone.pretrained."):]
        if not name.startswith("blocks."):
            stem, _, param = name.rpartition(".") if name.endswith((".weight", ".bias")) else (name, "", "")
            out["backbone." + renames[stem] + (f".{param}" if param else "")] = v
            continue
        _, i, rest = name.split(".", 2)
        prefix = f"backbone.encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            for part, which in zip(v.chunk(3), ("query", "key", "value")):
                out[prefix + f"attention.attention.{which}.{rest.rsplit('.', 1)[1]}"] = part.clone()
            continue
        for old, new in block.items():
            if rest.startswith(old + ".") or rest == old:
                rest = new + rest[len(old):]
                break
        out[prefix + rest] = v
    return out


def write_comfy_file(net: nn.Module, path: Path, *, prefix: str = "", shared_norm_once: bool = False) -> Path:
    """A ``Comfy-Org/Depth-Anything-3`` style file: core's key names (optionally under ``prefix``), no config.json."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    sd = comfy_state_dict(net, shared_norm_once=shared_norm_once)
    save_file({prefix + k: v.contiguous() for k, v in sd.items()}, str(path))
    return path
