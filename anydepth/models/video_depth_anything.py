"""Video Depth Anything: V2's DINOv2 and DPT head with four temporal modules in the head.

The backbone is :class:`~anydepth.models.dinov2.DinoVisionTransformer` and the head a
:class:`~anydepth.models.dpt.DPTHead` whose extension point (``mix``) runs a temporal module at each
of its four points (REFERENCE.md §9). A temporal module mixes every pixel's features over the frames of
a window: GroupNorm per frame, a linear in, one transformer block over time (two attentions, each after
a LayerNorm and a fixed sinusoidal position code, then a GEGLU feed-forward), a linear out, a residual.
With the temporal modules off (or their output linears at zero) the network computes V2.

Module and parameter names follow the published files (``pretrained.*``, ``head.*``,
``head.motion_modules.N.temporal_transformer.*``), so they load strictly without renaming. Attention,
the temporal one included, runs through ``torch.nn.functional.scaled_dot_product_attention``; the
explicit softmax path of :func:`anydepth.models.dinov2.use_fused_attn` is kept for debugging.

Streaming (the official online mode) runs one frame against cached states: each temporal attention
returns the normalised input of its new frames (``return_states=True``) and takes earlier frames' states
as ``context``; :mod:`anydepth.video_model` keeps that cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import VideoModelConfig
from .dinov2 import DinoVisionTransformer, use_fused_attn
from .dpt import DPTHead

def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """The fixed position code of the temporal attentions: sine on even channels, cosine on odd ones.

    Shape:
        output: ``[1, length, dim]`` float32.

    Example:
        >>> sinusoid_table(3, 4)[0, :, 0]  # sin(position) on the fastest channel
        tensor([0.0000, 0.8415, 0.9093])
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * freq)
    table[0, :, 1::2] = torch.cos(position * freq)
    return table


class PositionCode(nn.Module):
    """Adds the sinusoidal code of positions ``0 .. L-1`` to a ``[N, L, C]`` sequence (buffer ``pe`` in the files)."""

    def __init__(self, dim: int, length: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoid_table(length, dim).to(device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"a temporal attention sees at most {self.pe.shape[1]} frames, got {x.shape[1]}")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Attention over the frames of each pixel; the queries are the newest ``T`` positions only.

    Keys and values are computed from ``[context, x]`` (earlier frames' cached states, then the new
    frames), each with its position code; without context every frame queries the whole window.
    """

    fused_attn: Final[bool]

    def __init__(self, dim: int, heads: int, length: int, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.heads = heads
        self.fused_attn = use_fused_attn()
        self.to_q = nn.Linear(dim, dim, bias=False, **dd)
        self.to_k = nn.Linear(dim, dim, bias=False, **dd)
        self.to_v = nn.Linear(dim, dim, bias=False, **dd)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, **dd)])
        self.pos_encoder = PositionCode(dim, length, **dd)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Shape: ``x`` ``[N, T, C]`` (N pixels), ``context`` ``[N, S, C]`` -> ``[N, T, C]``."""
        n, t, c = x.shape
        seq = self.pos_encoder(x if context is None else torch.cat([context, x], dim=1))
        q = self.to_q(seq[:, seq.shape[1] - t:])
        k, v = self.to_k(seq), self.to_v(seq)
        q, k, v = (y.unflatten(-1, (self.heads, c // self.heads)).transpose(1, 2) for y in (q, k, v))
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.to_out[0](out.transpose(1, 2).reshape(n, t, c))


class GEGLU(nn.Module):
    """``a * gelu(b)`` with ``a, b`` from one projection to twice the hidden width."""

    def __init__(self, dim: int, hidden: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class TemporalBlock(nn.Module):
    """Two pre-norm temporal attentions and a GEGLU feed-forward (×4 hidden), each on a residual."""

    def __init__(self, dim: int, heads: int, length: int, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.attention_blocks = nn.ModuleList(TemporalAttention(dim, heads, length, **dd) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(dim, **dd) for _ in range(2))
        # Index 1 is the (inactive) dropout slot of the published layout, so the output linear is ``net.2``.
        self.ff = nn.Module()
        self.ff.net = nn.Sequential(GEGLU(dim, 4 * dim, **dd), nn.Identity(), nn.Linear(4 * dim, dim, **dd))
        self.ff_norm = nn.LayerNorm(dim, **dd)

    def forward(self, x: torch.Tensor, context: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``[N, T, C]`` -> ``[N, T, C]`` and each attention's normalised input ``[N, T, C]`` (the states to cache)."""
        states = []
        for i, (attention, norm) in enumerate(zip(self.attention_blocks, self.norms)):
            normed = norm(x)
            states.append(normed)
            x = x + attention(normed, None if context is None else context[i])
        return x + self.ff.net(self.ff_norm(x)), states


class TemporalModule(nn.Module):
    """One temporal module of the head: per-frame GroupNorm, linear in, :class:`TemporalBlock`, linear out, residual.

    Args:
        channels: width of the map it mixes (a multiple of 32 and of ``heads``).
        heads: attention heads.
        length: longest sequence of frames one attention sees (its position code).
        chunk_elements: pixels run in groups whose feed-forward hidden layer has at most this many
            elements (pixels are independent here: the same numbers, a bounded working set).
    """

    def __init__(self, channels: int, heads: int, length: int, chunk_elements: int = 2**24, *, device=None,
                 dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.chunk_elements = chunk_elements
        t = self.temporal_transformer = nn.Module()  # a container, for the published key names
        t.norm = nn.GroupNorm(32, channels, eps=1e-6, **dd)
        t.proj_in = nn.Linear(channels, channels, **dd)
        t.transformer_blocks = nn.ModuleList([TemporalBlock(channels, heads, length, **dd)])
        t.proj_out = nn.Linear(channels, channels, **dd)

    def forward(self, x: torch.Tensor, frames: int, context: Sequence[torch.Tensor] | None = None, *,
                return_states: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mix ``x`` over its ``frames`` consecutive frames (per clip, per pixel).

        Args:
            x: ``[B * T, C, H, W]``, the ``T = frames`` frames of each clip consecutive.
            frames: ``T``.
            context: per attention of the block, earlier frames' states ``[B * H * W, S, C]`` (streaming).
            return_states: also return each attention's normalised input for the new frames.

        Returns:
            The mixed ``[B * T, C, H, W]`` and, when asked, two states ``[B * H * W, T, C]`` (else ``[]``).
        """
        t = self.temporal_transformer
        bt, c, h, w = x.shape
        b = bt // frames
        rows = t.norm(x).reshape(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
        seen = frames + (0 if context is None else context[0].shape[1])
        step = max(1, self.chunk_elements // (seen * 8 * c))
        outs, states = [], []
        for i in range(0, rows.shape[0], step):
            ctx = None if context is None else [s[i:i + step] for s in context]
            y, st = self._mix(rows[i:i + step], ctx)
            outs.append(y)
            if return_states:
                states.append(st)
        y = torch.cat(outs) if len(outs) > 1 else outs[0]
        y = y.reshape(b, h, w, frames, c).permute(0, 3, 4, 1, 2).reshape(bt, c, h, w)
        merged = [torch.cat(s) if len(states) > 1 else s[0] for s in zip(*states)] if return_states else []
        return y + x, merged

    def _mix(self, rows: torch.Tensor, context: Sequence[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        t = self.temporal_transformer
        y, states = t.transformer_blocks[0](t.proj_in(rows), context)
        return t.proj_out(y), states


@dataclass
class TemporalHeadOutput:
    """What the temporal head returns.

    Attributes:
        depth: ``[B * T, H, W]`` at the network resolution (relative disparity or metres, ≥ 0).
        states: with ``return_states``, the eight temporal states of the new frames (module 0 attention 0,
            module 0 attention 1, ... module 3 attention 1), each ``[B * h_i * w_i, T, C_i]``; else empty.
    """

    depth: torch.Tensor
    states: list[torch.Tensor] = field(default_factory=list)


class TemporalDPTHead(DPTHead):
    """V2's DPT head (ReLU output) with four :class:`TemporalModule` at its extension points.

    Args:
        in_channels, features, out_channels: as :class:`~anydepth.models.dpt.DPTHead`.
        widths: the four temporal module widths (``None``: no temporal modules, V2 alone).
        heads, length, chunk_elements: of every :class:`TemporalModule`.
    """

    def __init__(self, in_channels: int, features: int, out_channels: Sequence[int], widths: Sequence[int] | None,
                 heads: int = 8, length: int = 32, chunk_elements: int = 2**24, *, device=None, dtype=None) -> None:
        super().__init__(in_channels, features, out_channels, "relu", device=device, dtype=dtype)
        self.motion_modules = (None if widths is None else nn.ModuleList(
            TemporalModule(w, heads, length, chunk_elements, device=device, dtype=dtype) for w in widths))

    def forward(self, features: Sequence[torch.Tensor], frames: int, patch_size: int = 14, *, temporal: bool = True,
                context: Sequence[torch.Tensor] | None = None, return_states: bool = False,
                chunk: int | None = None) -> TemporalHeadOutput:
        """Depth for ``B`` clips of ``frames`` frames each, from the backbone taps of all ``B * T`` frames.

        Args:
            features: four ``[B * T, C, h, w]`` taps.
            frames: ``T``.
            patch_size: pixels per token side.
            temporal: run the temporal modules (``False``: every frame alone, as V2).
            context: the eight states of earlier frames (see :class:`TemporalHeadOutput`), ``[B * h_i * w_i, S, C_i]``.
            return_states: return the new frames' states.
            chunk: frames per pass through the full-resolution stages.
        """
        if features[0].shape[0] % frames:
            raise ValueError(f"{features[0].shape[0]} feature maps are not whole clips of {frames} frames")
        use = temporal and self.motion_modules is not None
        if context is not None and (not use or len(context) != 2 * len(self.motion_modules)):
            raise ValueError("context needs the temporal modules on and two states per module")
        states: list[torch.Tensor] = []

        def mix(i: int, x: torch.Tensor) -> torch.Tensor:
            ctx = None if context is None else context[2 * i: 2 * i + 2]
            y, st = self.motion_modules[i](x, frames, ctx, return_states=return_states)
            states.extend(st)
            return y

        depth = super().forward(features, patch_size, mix=mix if use else None, chunk=chunk)
        return TemporalHeadOutput(depth[:, 0], states)


class VideoDepthAnything(nn.Module):
    """Video Depth Anything network.

    ``forward`` maps normalised clips ``[B, T, 3, H, W]`` (``H``, ``W`` multiples of 14, ``T`` at most
    ``config.frames``) to ``[B, T, H, W]``: relative disparity (larger = nearer) or metres (metric models),
    every frame seeing the whole clip. :meth:`encode` and :meth:`decode` split it at the per-frame backbone,
    so a caller can reuse frames' features across windows and stream with cached states.

    Example:
        >>> from anydepth.models import ArchConfig, VideoModelConfig, create_model
        >>> net = create_model(VideoModelConfig(ArchConfig(64, 4, 2, 32, (8, 16, 32, 32)), (0, 1, 2, 3)))
        >>> net(torch.zeros(1, 3, 3, 28, 42)).shape
        torch.Size([1, 3, 28, 42])
    """

    def __init__(self, config: VideoModelConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        a = config.arch
        self.config = config
        self.pretrained = DinoVisionTransformer(
            a.embed_dim, a.depth, a.num_heads, a.mlp_ratio, a.ffn, a.patch_size, a.pos_grid, device=device, dtype=dtype
        )
        self.head = TemporalDPTHead(a.embed_dim, a.features, a.out_channels,
                                    config.temporal_widths if config.temporal else None, config.temporal_heads,
                                    config.frames, config.temporal_chunk, device=device, dtype=dtype)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone taps of each frame on its own. Shape: ``[N, 3, H, W]`` -> four ``[N, C, H / 14, W / 14]``."""
        return self.pretrained.forward_intermediates(x, self.config.layers)

    def decode(self, features: Sequence[torch.Tensor], frames: int, *, temporal: bool = True,
               context: Sequence[torch.Tensor] | None = None, return_states: bool = False,
               chunk: int | None = None) -> TemporalHeadOutput:
        """Depth of ``B`` clips of ``frames`` frames from their taps (see :meth:`TemporalDPTHead.forward`)."""
        return self.head(features, frames, self.config.arch.patch_size, temporal=temporal, context=context,
                         return_states=return_states, chunk=chunk)

    def forward(self, x: torch.Tensor, *, temporal: bool = True, chunk: int | None = None) -> torch.Tensor:
        """Shape: ``[B, T, 3, H, W]`` -> ``[B, T, H, W]``. ``temporal=False`` gives V2's per-frame depth."""
        if x.ndim != 5:
            raise ValueError(f"VideoDepthAnything takes clips [B, T, 3, H, W], got shape {tuple(x.shape)}; "
                             "use x[None] for one clip")
        b, t = x.shape[:2]
        out = self.decode(self.encode(x.flatten(0, 1)), t, temporal=temporal, chunk=chunk)
        return out.depth.unflatten(0, (b, t))
