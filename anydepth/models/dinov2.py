"""DINOv2 vision transformer, the backbone of Depth Anything V1 and V2.

Module and parameter names follow the original release (``pretrained.blocks.N.attn.qkv`` ...) so
original checkpoints load without renaming; other layouts are converted in
:mod:`anydepth.weights`.

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (memory-efficient or
flash kernels where the device has them). The explicit softmax path is kept as a reference for
debugging and parity tests; set ``ANYDEPTH_FUSED_ATTN=0`` to use it everywhere.
"""

from __future__ import annotations

import math
import os
import re
from typing import Final, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def use_fused_attn() -> bool:
    """Whether new attention layers use SDPA (default) rather than the explicit softmax path."""
    return os.environ.get("ANYDEPTH_FUSED_ATTN", "1") != "0"


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    fused_attn: Final[bool]

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim, dim * 3, device=device, dtype=dtype)
        # QK-norm (Depth Anything 3 from ``qknorm_start`` on): LayerNorm over each head's q and k.
        self.q_norm = nn.LayerNorm(dim // num_heads, device=device, dtype=dtype) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // num_heads, device=device, dtype=dtype) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Shape: ``[B, N, C]`` -> ``[B, N, C]``. ``rope``: ``(cos, sin)`` tables of :func:`rope_2d` (DA3)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, head_dim] each
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope_2d(q, *rope), rope_2d(k, *rope)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, *, device=None, dtype=None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim or dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """The gated MLP of ViT-g: ``w3(silu(x1) * x2)`` with ``x1, x2`` from one fused projection."""

    def __init__(self, dim: int, hidden: int, *, device=None, dtype=None) -> None:
        super().__init__()
        # DINOv2 shrinks the hidden width by 2/3 and rounds up to a multiple of 8.
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden, device=device, dtype=dtype)
        self.w3 = nn.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, mlp: type[nn.Module], *, qk_norm: bool = False,
                 norm_eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, **dd)
        self.ls1 = LayerScale(dim, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp = mlp(dim, mlp_hidden, **dd)
        self.ls2 = LayerScale(dim, **dd)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, h*w, C]


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with a class token and a learned position embedding for a square grid.

    Args:
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        ffn: ``"mlp"`` (GELU MLP) or ``"swiglu"`` (ViT-g).
        patch_size: pixels per patch side.
        pos_grid: side of the square grid the position embedding was trained for (37 for 518 px).
        mask_token: keep the (inference-unused) mask token of the V1/V2 checkpoints; DA3 files have none.
        norm_eps: epsilon of the final LayerNorm (1e-6 in V1/V2, 1e-5 in Depth Anything 3).
        qk_norm_from: blocks from this index on normalise q and k per head (DA3); ``-1``: none.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        ffn: str = "mlp",
        patch_size: int = 14,
        pos_grid: int = 37,
        *,
        mask_token: bool = True,
        norm_eps: float = 1e-6,
        qk_norm_from: int = -1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        mlp = {"mlp": Mlp, "swiglu": SwiGLU}[ffn]
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.pos_grid = pos_grid
        self.patch_embed = PatchEmbed(patch_size, embed_dim, **dd)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid + 1, embed_dim, **dd))
        if mask_token:  # unused at inference; kept so that released V1/V2 checkpoints load strictly
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim, **dd))
        hidden = int(embed_dim * mlp_ratio)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, hidden, mlp, qk_norm=0 <= qk_norm_from <= i, **dd) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps, **dd)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embedding for a ``grid_h × grid_w`` patch grid, shape ``[1, 1 + h*w, C]``.

        Resized bicubically with a scale factor of ``(grid + 0.1) / pos_grid`` as the original DINOv2
        does. The offset changes the sampling positions (not only the output size), so resizing to
        an explicit size — as transformers does — differs from the released models away from 518 px.
        """
        pos = self.pos_embed
        if grid_h == grid_w == self.pos_grid:
            return pos
        m = self.pos_grid
        patch_pos = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(
            patch_pos, scale_factor=((grid_h + 0.1) / m, (grid_w + 0.1) / m), mode="bicubic", align_corners=False
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1).to(pos.dtype)
        return torch.cat([pos[:, :1], patch_pos], dim=1)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Normalised patch tokens after each block in ``indices``.

        Shape:
            - x: ``[B, 3, H, W]`` with ``H`` and ``W`` multiples of ``patch_size``.
            - output: one ``[B, C, H / patch, W / patch]`` map per index.
        """
        b, _, h, w = x.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(gh, gw)
        wanted = set(indices)
        taken: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks[: max(indices) + 1]):
            tokens = block(tokens)
            if i in wanted:
                taken[i] = tokens
        return [self.norm(taken[i])[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw) for i in indices]


def rope_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` by 2D rotary position tables (Depth Anything 3 blocks from ``rope_start`` on).

    The first half of each head's channels is rotated by the row (y) position, the second half by the
    column (x) position; within each half the first and second quarter form the rotation pairs.

    Shape:
        - x: ``[B, heads, N, D]`` with ``D`` divisible by 4.
        - cos, sin: ``[N, D]`` (or broadcastable), from :func:`anydepth.models.da3.rope_tables`.
    """
    a, b, c, d = x.chunk(4, dim=-1)
    return x * cos + torch.cat([-b, a, -d, c], dim=-1) * sin


def pos_grid_for(num_pos_tokens: int) -> int:
    """Side of the square patch grid behind a position embedding with ``num_pos_tokens`` entries."""
    side = math.isqrt(num_pos_tokens - 1)
    if side * side != num_pos_tokens - 1:
        raise ValueError(f"position embedding of {num_pos_tokens} tokens is not a square grid plus a class token")
    return side


# --------------------------------------------------------------------------------------------
# transformers' DINOv2 names -> the original ones (the -hf Depth Anything repos, ComfyUI core's DINOv2)

_HF_DINOV2_RENAMES = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.mask_token", "mask_token"),
    (r"embeddings\.camera_token", "camera_token"),  # Depth Anything 3 (ComfyUI core)
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"layernorm\.", "norm."),
    (r"encoder\.layer\.(\d+)\.(attention\.output\.dense|attention\.o_proj)\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layer\.(\d+)\.attention\.(q_norm|k_norm)\.", r"blocks.\1.attn.\2."),  # Depth Anything 3 (ComfyUI core)
    (r"encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
    (r"encoder\.layer\.(\d+)\.mlp\.weights_out\.", r"blocks.\1.mlp.w3."),
    (r"encoder\.layer\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.", r"blocks.\1.\2."),
]
_HF_DINOV2_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")


def convert_hf_dinov2(sd: dict[str, torch.Tensor], src: str = "backbone.", dst: str = "pretrained.") -> dict[str, torch.Tensor]:
    """transformers-style DINOv2 keys under ``src`` -> this module's (the original release's) under ``dst``.

    Reads the published attention names (``attention.attention.query``, ``attention.output.dense``), the names
    transformers ≥ 5 uses in memory (``attention.q_proj`` ... ``attention.o_proj``) and ComfyUI core's Depth
    Anything 3 additions (``embeddings.camera_token``, ``attention.q_norm`` / ``k_norm``); separate q/k/v are
    joined into ``attn.qkv``. Keys outside ``src``, and unknown ones, are kept for the strict load to report.

    Example:
        >>> q = torch.zeros(2, 2)
        >>> sorted(convert_hf_dinov2({f"backbone.encoder.layer.3.attention.attention.{n}.weight": q for n in ("query", "key", "value")}
        ...                           | {"backbone.layernorm.bias": torch.zeros(2), "head.x": q}))
        ['head.x', 'pretrained.blocks.3.attn.qkv.weight', 'pretrained.norm.bias']
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if not k.startswith(src):
            out[k] = v
            continue
        name = k[len(src):]
        m = _HF_DINOV2_QKV.match(name)
        if m:
            which = {"query": "q", "key": "k", "value": "v"}.get(m.group(2) or "", m.group(3))
            qkv.setdefault((int(m.group(1)), m.group(4)), {})[which] = v
            continue
        for pattern, repl in _HF_DINOV2_RENAMES:
            new, n = re.subn("^" + pattern, repl, name)
            if n:
                out[dst + new] = v
                break
        else:
            out[k] = v
    for (layer, param), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            for which, t in parts.items():  # incomplete: keep under a name the strict load will report
                out[f"{src}encoder.layer.{layer}.attention.{which}.{param}"] = t
            continue
        out[f"{dst}blocks.{layer}.attn.qkv.{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out
