"""Depth Anything 3: any-view depth, confidence and cameras, plus the mono / metric / nested networks.

One implementation covers every published DA3 network:

* any-view (SMALL, BASE, LARGE, GIANT): a DINOv2 whose blocks from ``alt_start`` on alternate between
  attention within each view and attention across all views (2D RoPE and QK-norm from the same
  block, a camera token in place of the class token), a DualDPT head (depth = exp, confidence =
  exp + 1, and a 7-channel ray branch), a camera decoder (translation, quaternion xyzw, two fields of
  view per view) and a camera encoder that turns known poses into camera tokens;
* mono / metric (DA3MONO-LARGE, DA3METRIC-LARGE): a plain DINOv2 ViT-L and a DPT head giving depth
  (exp) and a sky map (ReLU);
* nested (DA3NESTED-GIANT-LARGE): an any-view GIANT plus a METRIC-LARGE whose focal-scaled depth fixes
  the scale of the any-view depth and cameras (in metres).

Parameter names follow the official release (``backbone.pretrained`` shortened to ``backbone``, see
:func:`convert_da3`, at the end of this module). The DINOv2 parts (blocks, patch embedding, position-embedding
resize) are those of :mod:`anydepth.models.dinov2`; the DPT fusion blocks those of
:mod:`anydepth.models.dpt`. GIANT files also carry a Gaussian-splatting head (:class:`GaussianHead`; its
raw output becomes 3DGS Gaussians in :mod:`anydepth.gaussians`). Cameras come from the camera decoder or,
with ``pose_method="ray_pose"``, from the ray branch (:mod:`anydepth.models.ray_pose`). ComfyUI core's
repacked files load through :func:`convert_comfy_da3`. The configs and presets live in
:mod:`anydepth.models.config`, the camera maths (rigid inverse, quaternions) in :mod:`anydepth.cameras`;
every module returns a documented dataclass (:class:`DA3Output`, :class:`DA3BackboneOutput`,
:class:`DA3HeadOutput`, :class:`GaussianHeadOutput`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..cameras import invert_rigid, matrix_to_quaternion, quaternion_to_matrix
from ..kinds import METRIC_DEPTH, DepthKind
from .config import DA3Config, NestedDA3Config
from .dinov2 import Block, DinoVisionTransformer, Mlp, convert_hf_dinov2
from .dpt import FeatureFusionBlock, add_reassemble_layers
from .ray_pose import rays_to_cameras

RefViewStrategy = Literal["first", "middle", "saddle_balanced", "saddle_sim_range"]
REF_VIEW_STRATEGIES: tuple[str, ...] = ("first", "middle", "saddle_balanced", "saddle_sim_range")

PoseMethod = Literal["cam_dec", "ray_pose"]
#: How any-view cameras are predicted: the camera decoder (official default) or solved from the ray branch.
POSE_METHODS: tuple[str, ...] = ("cam_dec", "ray_pose")

#: Channels of the Gaussian-splatting head: xy offset 2, scales 3, rotation 4, colour SH 3 × 9 (degree 2),
#: depth offset 1, then the density.
GS_CHANNELS = 38

#: Reference-view selection runs only from this many views on (and never with given poses).
MIN_VIEWS_FOR_REF_SELECTION = 3

#: The metric network's output times ``focal / METRIC_FOCAL_DIVISOR`` is metres (focal in pixels).
METRIC_FOCAL_DIVISOR = 300.0

#: Sky probability below which a pixel counts as "not sky" (official threshold).
SKY_THRESHOLD = 0.3


# --------------------------------------------------------------------------------------------
# Small pure functions


def check_pose_method(pose_method: str, config) -> None:
    """Raise a ``ValueError`` naming the fix when ``pose_method`` is unknown or the network cannot use it."""
    if pose_method not in POSE_METHODS:
        raise ValueError(f"unknown pose_method {pose_method!r}; expected one of {', '.join(POSE_METHODS)}")
    if pose_method == "ray_pose" and getattr(config, "head", "dualdpt") != "dualdpt":
        raise ValueError(f"pose_method='ray_pose' needs an any-view DA3 model (SMALL, BASE, LARGE, GIANT, nested): "
                         f"{config.name or 'this mono / metric network'} has no ray branch; use pose_method='cam_dec'")


def rope_tables(positions: torch.Tensor, head_dim: int, frequency: float = 100.0, *,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine / sine tables of the 2D RoPE for integer ``(y, x)`` positions.

    Each half of a head (``head_dim / 2`` channels) is rotated by one axis with frequencies
    ``frequency ** (-2k / (head_dim / 2))``; see :func:`anydepth.models.dinov2.rope_2d`.

    Shape:
        - positions: ``[N, 2]`` (row, column).
        - output: two ``[N, head_dim]`` tables.
    """
    d = head_dim // 2
    inv_freq = 1.0 / frequency ** (torch.arange(0, d, 2, device=positions.device, dtype=torch.float32) / d)
    ang = positions.float()[..., None] * inv_freq  # [N, 2, d/2]
    ang = torch.cat([ang, ang], dim=-1)  # [N, 2, d]: each axis' angles twice (rotation pairs)
    ang = ang.flatten(-2)  # [N, 2d]: y half then x half
    return ang.cos().to(dtype), ang.sin().to(dtype)


def uv_position_embedding(height: int, width: int, channels: int, aspect: float, *, device=None,
                          ratio: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Sinusoidal embedding of normalised image coordinates, added to DualDPT feature maps.

    Coordinates span ``±aspect / √(aspect² + 1)`` horizontally and ``±1 / √(aspect² + 1)`` vertically
    (pixel centres of a ``height × width`` grid); each gets ``channels / 2`` sin/cos features with base
    frequency 100, scaled by ``ratio``. The map is separable: the first half of the channels depends
    only on the column, the second half only on the row, so it is returned as two broadcastable parts.

    Shape:
        output: ``[channels / 2, 1, width]`` (columns) and ``[channels / 2, height, 1]`` (rows), float32.
    """
    diag = (aspect**2 + 1.0) ** 0.5
    sx, sy = aspect / diag, 1.0 / diag
    u = torch.linspace(-sx * (width - 1) / width, sx * (width - 1) / width, width, device=device, dtype=torch.float32)
    v = torch.linspace(-sy * (height - 1) / height, sy * (height - 1) / height, height, device=device, dtype=torch.float32)
    quarter = channels // 4
    omega = 1.0 / 100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    eu, ev = u[:, None] * omega, v[:, None] * omega  # [W, C/4], [H, C/4]
    cols = torch.cat([eu.sin(), eu.cos()], dim=-1).T[:, None, :] * ratio
    rows = torch.cat([ev.sin(), ev.cos()], dim=-1).T[:, :, None] * ratio
    return cols, rows


def add_uv_position_embedding_(x: torch.Tensor, aspect: float) -> torch.Tensor:
    """Add :func:`uv_position_embedding` to a ``[B, C, H, W]`` map in place (no full-size temporary)."""
    cols, rows = uv_position_embedding(x.shape[-2], x.shape[-1], x.shape[1], aspect, device=x.device)
    half = x.shape[1] // 2
    x[:, :half] += cols.to(x.dtype)
    x[:, half:] += rows.to(x.dtype)
    return x


def pose_encoding_to_cameras(pose: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-decoder output -> world-to-camera extrinsics and pixel intrinsics.

    ``pose`` holds camera-to-world translation (3), rotation quaternion xyzw (4), vertical and
    horizontal field of view (radians); the principal point is the image centre.

    Shape:
        - pose: ``[..., 9]``; size: ``(H, W)`` of the network input.
        - output: extrinsics ``[..., 3, 4]``, intrinsics ``[..., 3, 3]`` (float32).
    """
    pose = pose.float()
    h, w = size
    c2w = torch.cat([quaternion_to_matrix(pose[..., 3:7]), pose[..., :3, None]], dim=-1)
    fy = (h / 2.0) / torch.tan(pose[..., 7] / 2.0).clamp_min(1e-6)
    fx = (w / 2.0) / torch.tan(pose[..., 8] / 2.0).clamp_min(1e-6)
    k = torch.zeros(pose.shape[:-1] + (3, 3), device=pose.device, dtype=torch.float32)
    k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2], k[..., 2, 2] = fx, fy, w / 2.0, h / 2.0, 1.0
    return invert_rigid(c2w), k


def cameras_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """World-to-camera extrinsics and intrinsics -> the 9-number pose encoding of the camera encoder.

    Shape: extrinsics ``[..., 3|4, 4]``, intrinsics ``[..., 3, 3]`` -> ``[..., 9]`` float32.
    """
    c2w = invert_rigid(extrinsics.float()[..., :3, :])
    h, w = size
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1].float())
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0].float())
    return torch.cat([c2w[..., :3, 3], matrix_to_quaternion(c2w[..., :3, :3]), fov_h[..., None], fov_w[..., None]], -1)


def select_reference_view(cls_tokens: torch.Tensor, strategy: RefViewStrategy = "saddle_balanced") -> torch.Tensor:
    """Index of the reference view per scene, from each view's class token (the official rules).

    * ``first`` / ``middle``: by position;
    * ``saddle_balanced``: the view whose mean similarity to the others, token norm and token variance
      are each closest to the middle of their range over the views;
    * ``saddle_sim_range``: the view with the widest range of similarities to the others.

    Shape: ``[B, S, C]`` -> ``[B]`` (long).
    """
    b, s, _ = cls_tokens.shape
    if strategy not in REF_VIEW_STRATEGIES:
        raise ValueError(f"unknown reference view strategy {strategy!r}; expected one of {', '.join(REF_VIEW_STRATEGIES)}")
    if s <= 1 or strategy == "first":
        return torch.zeros(b, dtype=torch.long, device=cls_tokens.device)
    if strategy == "middle":
        return torch.full((b,), s // 2, dtype=torch.long, device=cls_tokens.device)
    x = cls_tokens.float()
    unit = x / x.norm(dim=-1, keepdim=True)
    sim = unit @ unit.transpose(1, 2) - torch.eye(s, device=x.device)
    if strategy == "saddle_sim_range":
        return (sim.max(-1).values - sim.min(-1).values).argmax(1)

    def spread(v: torch.Tensor) -> torch.Tensor:
        lo, hi = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
        return ((v - lo) / (hi - lo + 1e-8) - 0.5).abs()

    score = spread(sim.sum(-1) / (s - 1)) + spread(x.norm(dim=-1)) + spread(unit.var(dim=-1))
    return score.argmin(1)


def reference_first_order(ref: torch.Tensor, views: int) -> torch.Tensor:
    """View order that puts ``ref`` first and keeps the others in order: ``[B]`` -> ``[B, S]``."""
    pos = torch.arange(views, device=ref.device).expand(ref.shape[0], -1)
    order = torch.where((pos > 0) & (pos <= ref[:, None]), pos - 1, pos)
    order[:, 0] = ref
    return order


def _take_views(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return x[torch.arange(x.shape[0], device=x.device)[:, None], order]


# --------------------------------------------------------------------------------------------
# Outputs


@dataclass
class DA3Output:
    """Raw network output for ``B`` scenes of ``S`` views at the network's input size ``H × W``.

    Attributes:
        depth: ``[B, S, H, W]``, larger = farther (relative; metres for the nested network).
        confidence: ``[B, S, H, W]`` (≥ 1, any-view networks) or ``None``.
        extrinsics: ``[B, S, 3, 4]`` world-to-camera (the reference view's camera is the world) or ``None``.
        intrinsics: ``[B, S, 3, 3]`` in pixels of the network input, or ``None``.
        sky: ``[B, S, H, W]`` sky score (mono / metric / nested; ≥ 0.3 counts as sky) or ``None``.
        rays, ray_confidence: ``[B, S, 8h, 8w, 6]`` / ``[B, S, 8h, 8w]`` when asked for.
        reference_view: ``[B]`` reference view chosen per scene, ``None`` when none was chosen.
        scale_factor: nested network only, the factor that took the any-view depth to metres.
        gs_raw, gs_density: Gaussian-splatting head (when asked for): ``[B, S, H, W, 37]`` raw parameters
            and ``[B, S, H, W]`` density in 0..1; :func:`anydepth.gaussians.gaussians_from_raw` makes
            world-space Gaussians of them with ``gs_depth`` and the cameras.
        gs_depth: ``[B, S, H, W]`` the depth the Gaussian centres start from: the any-view depth, which the
            nested network then scales to metres (its ``scale_factor``) and fills in the sky.
    """

    depth: torch.Tensor
    confidence: torch.Tensor | None = None
    extrinsics: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    sky: torch.Tensor | None = None
    rays: torch.Tensor | None = None
    ray_confidence: torch.Tensor | None = None
    reference_view: torch.Tensor | None = None
    scale_factor: torch.Tensor | None = None
    gs_raw: torch.Tensor | None = None
    gs_density: torch.Tensor | None = None
    gs_depth: torch.Tensor | None = None


@dataclass
class DA3BackboneOutput:
    """What :class:`DA3Backbone` hands to the heads, for ``B`` scenes of ``S`` views on an ``h × w`` patch grid.

    Attributes:
        features: per layer of ``config.layers``, ``[B, S, h*w, C']`` (``C' = 2C`` with ``cat_token``:
            raw local half, normalised global half).
        camera_tokens: per layer ``[B, S, C']`` (before the norm); the last one feeds the camera decoder.
        reference_view: ``[B]`` reference view chosen per scene, ``None`` when none was chosen.
    """

    features: list[torch.Tensor]
    camera_tokens: list[torch.Tensor]
    reference_view: torch.Tensor | None = None


@dataclass
class DA3HeadOutput:
    """Per-view maps of a DA3 head for ``M`` views at the network input size ``H × W``.

    Attributes:
        depth: ``[M, H, W]``, exp of the logits (> 0, larger = farther).
        confidence: ``[M, H, W]`` (≥ 1, DualDPT head) or ``None``.
        sky: ``[M, H, W]`` sky score (≥ 0, mono / metric DPT head) or ``None``.
        rays, ray_confidence: ``[M, H/14*8, W/14*8, 6]`` / ``[M, H/14*8, W/14*8]`` (DualDPT head, when asked for) or ``None``.
    """

    depth: torch.Tensor
    confidence: torch.Tensor | None = None
    sky: torch.Tensor | None = None
    rays: torch.Tensor | None = None
    ray_confidence: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------
# Modules


class DA3Backbone(DinoVisionTransformer):
    """DINOv2 with Depth Anything 3's alternating within-view / across-view attention.

    Blocks before ``alt_start`` and even blocks after it attend within each view; odd blocks from
    ``alt_start`` on attend across all views of a scene. At ``alt_start`` the class token of each
    view is replaced by a camera token (a learned one for the reference view and one for the others,
    or the camera encoder's tokens for known poses). With ≥ 3 views and no known poses, the reference
    view is chosen just before that block and moved first (outputs come back in the input order).
    """

    def __init__(self, config: DA3Config, *, device=None, dtype=None) -> None:
        a = config.arch
        super().__init__(a.embed_dim, a.depth, a.num_heads, a.mlp_ratio, a.ffn, a.patch_size, a.pos_grid,
                         mask_token=False, norm_eps=1e-5, qk_norm_from=config.qknorm_start, device=device, dtype=dtype)
        self.config = config
        if config.alt_start >= 0:
            self.camera_token = nn.Parameter(torch.zeros(1, 2, a.embed_dim, device=device, dtype=dtype))

    def _rope(self, gh: int, gw: int, views: int, device, dtype) -> tuple[tuple, tuple]:
        """(cos, sin) for within-view attention (patch ``(y+1, x+1)``, token 0 at 0) and across views
        (every patch at 1, token 0 at 0, repeated for each view)."""
        yx = torch.cartesian_prod(torch.arange(gh, device=device), torch.arange(gw, device=device)) + 1
        zero = torch.zeros(1, 2, dtype=yx.dtype, device=device)
        hd = self.embed_dim // self.blocks[0].attn.num_heads
        local = rope_tables(torch.cat([zero, yx]), hd, self.config.rope_freq, dtype=dtype)
        flat = torch.cat([zero, torch.ones_like(yx)])
        cos, sin = rope_tables(flat, hd, self.config.rope_freq, dtype=dtype)
        return local, (cos.repeat(views, 1), sin.repeat(views, 1))

    def forward(
        self,
        x: torch.Tensor,
        cam_token: torch.Tensor | None = None,
        ref_view_strategy: RefViewStrategy = "saddle_balanced",
        chunk: int | None = None,
    ) -> DA3BackboneOutput:
        """Head features and camera tokens of the blocks in ``config.layers``.

        Args:
            x: normalised images ``[B, S, 3, H, W]``, sides multiples of 14.
            cam_token: ``[B, S, C]`` tokens of known cameras, or ``None``.
            ref_view_strategy: see :func:`select_reference_view`.
            chunk: views per pass through the within-view blocks and MLPs (bounds activation memory).

        Returns:
            a :class:`DA3BackboneOutput`: per-layer features and camera tokens, and the reference view.
        """
        cfg = self.config
        b, s, _, h, w = x.shape
        gh, gw = h // self.patch_size, w // self.patch_size
        c = self.embed_dim
        t = self.patch_embed(x.flatten(0, 1))
        t = torch.cat([self.cls_token.expand(b * s, -1, -1), t], dim=1) + self.interpolate_pos_encoding(gh, gw)
        n = t.shape[1]
        t = t.view(b, s, n, c)
        rope_local = rope_global = None
        if cfg.rope_start >= 0:
            rope_local, rope_global = self._rope(gh, gw, s, x.device, t.dtype)
        order = ref = None
        local = t
        wanted = set(cfg.layers)
        taken: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, blk in enumerate(self.blocks[: max(cfg.layers) + 1]):
            if cfg.anyview and i == cfg.alt_start - 1 and s >= MIN_VIEWS_FOR_REF_SELECTION and cam_token is None:
                ref = select_reference_view(t[:, :, 0], ref_view_strategy)
                order = reference_first_order(ref, s)
                t, local = _take_views(t, order), _take_views(local, order)
            if cfg.anyview and i == cfg.alt_start:
                if cam_token is None:
                    cam_token = torch.cat([self.camera_token[:, :1].expand(b, 1, c), self.camera_token[:, 1:].expand(b, s - 1, c)], 1)
                t = torch.cat([cam_token[:, :, None].to(t.dtype), t[:, :, 1:]], dim=2)
            use_rope = 0 <= cfg.rope_start <= i
            if cfg.anyview and i >= cfg.alt_start and i % 2 == 1:
                t = _run_block(blk, t, rope_global if use_rope else None, chunk, across_views=True)
            else:
                t = _run_block(blk, t, rope_local if use_rope else None, chunk, across_views=False)
                local = t
            if i in wanted:
                out = torch.cat([local, t], dim=-1) if cfg.cat_token else t
                if order is not None:
                    out = _take_views(out, torch.argsort(order, dim=1))
                cam = out[:, :, 0]
                if cfg.cat_token:
                    feat = torch.cat([out[:, :, 1:, :c], self.norm(out[:, :, 1:, c:])], dim=-1)
                else:
                    feat = self.norm(out[:, :, 1:])
                taken[i] = (feat, cam)
        return DA3BackboneOutput([taken[i][0] for i in cfg.layers], [taken[i][1] for i in cfg.layers], ref)


def _run_block(blk: Block, t: torch.Tensor, rope, chunk: int | None, across_views: bool) -> torch.Tensor:
    """One block on ``[B, S, N, C]`` tokens, attending within views or across them.

    With ``chunk``, within-view blocks run ``chunk`` views at a time and the MLP of across-view blocks
    too: same numbers, bounded memory for many views.
    """
    b, s, n, c = t.shape
    if across_views:
        seq = t.reshape(b, s * n, c)
        if chunk is None or chunk >= b * s:
            return blk(seq, rope).view(b, s, n, c)
        seq = seq + blk.ls1(blk.attn(blk.norm1(seq), rope))
        parts = seq.view(b * s, n, c).split(chunk)
        return torch.cat([p + blk.ls2(blk.mlp(blk.norm2(p))) for p in parts]).view(b, s, n, c)
    seq = t.reshape(b * s, n, c)
    if chunk is None or chunk >= b * s:
        return blk(seq, rope).view(b, s, n, c)
    return torch.cat([blk(p, rope) for p in seq.split(chunk)]).view(b, s, n, c)


class _Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def _head_conv2(features: int, out: int, norm: nn.Module | None, dd: dict) -> nn.Sequential:
    """``conv3x3 -> [LayerNorm over channels] -> ReLU -> conv1x1`` (the official index layout)."""
    mid = 32
    layers: list[nn.Module] = [nn.Conv2d(features // 2, mid, 3, padding=1, **dd)]
    if norm is not None:
        layers += [_Permute(0, 2, 3, 1), norm, _Permute(0, 3, 1, 2)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True), nn.Conv2d(mid, out, 1, **dd))  # in place: our own temporary


class _DA3DPTBase(nn.Module):
    """Reassemble four token maps and fuse them coarse to fine (shared by the DA3 heads)."""

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], out_dim: int, dd: dict) -> None:
        super().__init__()
        add_reassemble_layers(self, dim_in, features, out_channels, dd)
        self._fusion_chain(features, "", dd)
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1, **dd)
        self.scratch.output_conv2 = _head_conv2(features, out_dim, None, dd)

    def _fusion_chain(self, features: int, suffix: str, dd: dict) -> None:
        for i in (1, 2, 3):
            setattr(self.scratch, f"refinenet{i}{suffix}", FeatureFusionBlock(features, **dd))
        setattr(self.scratch, f"refinenet4{suffix}", FeatureFusionBlock(features, has_residual=False, **dd))

    def _levels(self, feats: Sequence[torch.Tensor], grid: tuple[int, int], image: tuple[int, int]) -> list[torch.Tensor]:
        gh, gw = grid
        levels = []
        for f, project, resize, i in zip(feats, self.projects, self.resize_layers, range(1, 5)):
            x = self._norm(f).transpose(1, 2).reshape(f.shape[0], -1, gh, gw)
            x = self._pos(project(x), image)
            levels.append(getattr(self.scratch, f"layer{i}_rn")(resize(x)))
        return levels

    def _fuse(self, levels: list[torch.Tensor], suffix: str = "") -> list[torch.Tensor]:
        """Fusion outputs from coarse to fine (the last one is the finest)."""
        l1, l2, l3, l4 = levels
        r = lambda i: getattr(self.scratch, f"refinenet{i}{suffix}")
        out = [r(4)(l4, size=l3.shape[2:])]
        out.append(r(3)(out[-1], l3, size=l2.shape[2:]))
        out.append(r(2)(out[-1], l2, size=l1.shape[2:]))
        out.append(r(1)(out[-1], l1))
        return out

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _pos(self, x: torch.Tensor, image: tuple[int, int]) -> torch.Tensor:
        return x

    def _upsample(self, x: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
        return F.interpolate(self.scratch.output_conv1(x), (grid[0] * patch, grid[1] * patch), mode="bilinear", align_corners=True)


class DualDPTHead(_DA3DPTBase):
    """DualDPT of the any-view networks: depth (exp) + confidence (exp + 1), and a ray branch.

    The ray branch (its own fusion chain, 6 ray channels + a confidence at 8× the patch grid) runs
    only when asked for: the camera decoder does not use it.
    """

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], *, device=None, dtype=None) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__(dim_in, features, out_channels, 2, dd)
        self.norm = nn.LayerNorm(dim_in, **dd)
        self._fusion_chain(features, "_aux", dd)
        half = features // 2
        self.scratch.output_conv1_aux = nn.ModuleList(
            nn.Sequential(*(nn.Conv2d(*io, 3, padding=1, **dd) for io in
                            ((features, half), (half, features), (features, half), (half, features), (features, half))))
            for _ in range(4)
        )
        # One LayerNorm object in all four aux heads, as in the release (files store it once).
        shared = nn.LayerNorm(32, **dd)
        self.scratch.output_conv2_aux = nn.ModuleList(_head_conv2(features, 7, shared, dd) for _ in range(4))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _pos(self, x: torch.Tensor, image: tuple[int, int]) -> torch.Tensor:
        return add_uv_position_embedding_(x, image[1] / image[0])  # x is this head's own intermediate

    def forward(self, feats: Sequence[torch.Tensor], grid: tuple[int, int], patch: int = 14,
                rays: bool = False) -> DA3HeadOutput:
        """Shape: four ``[M, h*w, C]`` token maps in; ``depth``, ``confidence`` ``[M, 14h, 14w]`` out
        (and with ``rays``: ``rays`` ``[M, 8h, 8w, 6]``, ``ray_confidence`` ``[M, 8h, 8w]``)."""
        image = (grid[0] * patch, grid[1] * patch)
        levels = self._levels(feats, grid, image)
        main = self._pos(self._upsample(self._fuse(levels)[-1], grid, patch), image)
        logits = self.scratch.output_conv2(main)
        out = DA3HeadOutput(logits[:, 0].exp(), confidence=logits[:, 1].exp() + 1)
        if rays:
            aux = self.scratch.output_conv1_aux[-1](self._fuse(levels, "_aux")[-1])
            ray = self.scratch.output_conv2_aux[-1](self._pos(aux, image)).permute(0, 2, 3, 1)
            out.rays, out.ray_confidence = ray[..., :6], ray[..., 6].exp() + 1
        return out


class MonoDPTHead(_DA3DPTBase):
    """DPT of the mono / metric networks: depth (exp) and a sky map (ReLU)."""

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], *, device=None, dtype=None) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__(dim_in, features, out_channels, 1, dd)
        self.scratch.sky_output_conv2 = _head_conv2(features, 1, None, dd)

    def forward(self, feats: Sequence[torch.Tensor], grid: tuple[int, int], patch: int = 14,
                rays: bool = False) -> DA3HeadOutput:
        """Shape: four ``[M, h*w, C]`` token maps in; ``depth``, ``sky`` ``[M, 14h, 14w]`` out (no rays)."""
        feat = self._upsample(self._fuse(self._levels(feats, grid, (0, 0)))[-1], grid, patch)
        return DA3HeadOutput(self.scratch.output_conv2(feat)[:, 0].exp(), sky=F.relu(self.scratch.sky_output_conv2(feat)[:, 0]))


@dataclass
class GaussianHeadOutput:
    """Per-pixel output of :class:`GaussianHead` for ``M`` views at the network input size ``H × W``.

    Attributes:
        raw: ``[M, H, W, 37]`` raw Gaussian parameters (xy offset 2, scale 3, rotation 4, SH 27, depth offset 1).
        density: ``[M, H, W]`` sigmoid of the last channel (the official opacity before its mapping).
    """

    raw: torch.Tensor
    density: torch.Tensor


class GaussianHead(_DA3DPTBase):
    """DPT of DA3-GIANT's Gaussian-splatting branch (the official ``GSDPT``).

    The DualDPT main branch without the token LayerNorm, with the normalised input image added (through a
    small conv stack, ``images_merger``) to the upsampled features before the last convolutions.
    """

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], out_dim: int = GS_CHANNELS, *,
                 device=None, dtype=None) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__(dim_in, features, out_channels, out_dim, dd)
        half = features // 2
        widths = (3, half // 4, half // 2, half)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, **dd), nn.GELU()]
        self.images_merger = nn.Sequential(*layers)

    def _pos(self, x: torch.Tensor, image: tuple[int, int]) -> torch.Tensor:
        return add_uv_position_embedding_(x, image[1] / image[0])  # x is this head's own intermediate

    def forward(self, feats: Sequence[torch.Tensor], grid: tuple[int, int], images: torch.Tensor,
                patch: int = 14) -> GaussianHeadOutput:
        """Shape: four ``[M, h*w, C]`` token maps and the normalised images ``[M, 3, 14h, 14w]`` in; see
        :class:`GaussianHeadOutput`."""
        image = (grid[0] * patch, grid[1] * patch)
        x = self._upsample(self._fuse(self._levels(feats, grid, image))[-1], grid, patch)
        x = self._pos(x + self.images_merger(images.to(x.dtype)), image)
        logits = self.scratch.output_conv2(x).permute(0, 2, 3, 1)
        return GaussianHeadOutput(logits[..., :-1], torch.sigmoid(logits[..., -1]))


class CameraEncoder(nn.Module):
    """Known cameras -> camera tokens: pose encoding, MLP, four transformer blocks across the views."""

    def __init__(self, dim: int, depth: int = 4, num_heads: int = 16, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.pose_branch = Mlp(9, dim // 2, dim, **dd)
        self.token_norm = nn.LayerNorm(dim, **dd)
        self.trunk = nn.Sequential(*(Block(dim, num_heads, 4 * dim, Mlp, norm_eps=1e-5, **dd) for _ in range(depth)))
        self.trunk_norm = nn.LayerNorm(dim, **dd)

    def forward(self, extrinsics: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Shape: extrinsics ``[B, S, 3|4, 4]`` (world-to-camera), intrinsics ``[B, S, 3, 3]`` -> ``[B, S, C]``."""
        dtype = self.token_norm.weight.dtype
        tokens = self.token_norm(self.pose_branch(cameras_to_pose_encoding(extrinsics, intrinsics, size).to(dtype)))
        return self.trunk_norm(self.trunk(tokens))


class CameraDecoder(nn.Module):
    """Camera tokens -> pose encoding ``[t (3), quaternion xyzw (4), fov_h, fov_w]`` per view."""

    def __init__(self, dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.backbone = nn.Sequential(nn.Linear(dim, dim, **dd), nn.ReLU(), nn.Linear(dim, dim, **dd), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3, **dd)
        self.fc_qvec = nn.Linear(dim, 4, **dd)
        self.fc_fov = nn.Sequential(nn.Linear(dim, 2, **dd), nn.ReLU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Shape: ``[B, S, C]`` -> ``[B, S, 9]``."""
        f = self.backbone(tokens)
        return torch.cat([self.fc_t(f), self.fc_qvec(f), self.fc_fov(f)], dim=-1)


class DepthAnything3(nn.Module):
    """A Depth Anything 3 network (any-view, mono or metric); see the module docstring.

    ``forward`` maps normalised ``[B, S, 3, H, W]`` views (sides multiples of 14) to a :class:`DA3Output`.
    """

    def __init__(self, config: DA3Config, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        dd = {"device": device, "dtype": dtype}
        a = config.arch
        self.backbone = DA3Backbone(config, **dd)
        head = DualDPTHead if config.head == "dualdpt" else MonoDPTHead
        self.head = head(config.head_dim_in, a.features, a.out_channels, **dd)
        if config.camera:
            self.cam_enc = CameraEncoder(a.embed_dim, **dd)
            self.cam_dec = CameraDecoder(config.head_dim_in, **dd)
        self.gs_head = GaussianHead(config.head_dim_in, a.features, a.out_channels, **dd) if config.gaussians else None

    @property
    def kind(self) -> DepthKind:
        return self.config.kind

    def forward(
        self,
        x: torch.Tensor,
        extrinsics: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        *,
        ref_view_strategy: RefViewStrategy = "saddle_balanced",
        chunk: int | None = 8,
        rays: bool = False,
        pose_method: PoseMethod = "cam_dec",
        gaussians: bool = False,
        generator: torch.Generator | None = None,
    ) -> DA3Output:
        """Depth, confidence and cameras for ``B`` scenes of ``S`` views.

        Args:
            x: normalised images ``[B, S, 3, H, W]``.
            extrinsics, intrinsics: known cameras ``[B, S, 3|4, 4]`` (world-to-camera, normalised as
                :func:`anydepth.anyview.normalize_extrinsics` does) and ``[B, S, 3, 3]`` (pixels of ``x``),
                turned into camera tokens; ignored by networks without cameras.
            ref_view_strategy: how the reference view is chosen for ≥ 3 views without known poses.
            chunk: views per pass through the per-view parts (memory bound; results do not change).
            rays: also return the ray branch of the DualDPT head.
            pose_method: ``"cam_dec"`` (the camera decoder, official default) or ``"ray_pose"`` (cameras
                solved from the ray branch, :func:`~anydepth.models.ray_pose.rays_to_cameras`; the official
                ``use_ray_pose``).
            gaussians: also run the Gaussian-splatting head (``gs_raw``, ``gs_density``; GIANT files).
            generator: source of the ray-pose RANSAC samples (``None``: torch's global generator, as the
                official code).
        """
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"x must be [B, S, 3, H, W] normalised views, got shape {tuple(x.shape)}")
        b, s, _, h, w = x.shape
        p = self.config.arch.patch_size
        if h % p or w % p:
            raise ValueError(f"view size {h}×{w} is not a multiple of the patch size {p}; resize first")
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be a positive number of views or None, got {chunk}")
        check_pose_method(pose_method, self.config)
        if gaussians and self.gs_head is None:
            raise ValueError(f"{self.config.name or 'this network'} has no Gaussian-splatting head (only DA3-GIANT and "
                             "the nested GIANT files carry one)")
        cam_token = None
        if self.config.camera and extrinsics is not None:
            if intrinsics is None:
                raise ValueError("known extrinsics need intrinsics too (the camera encoder uses the field of view)")
            cam_token = self.cam_enc(extrinsics, intrinsics, (h, w))
        tokens = self.backbone(x, cam_token, ref_view_strategy, chunk)
        grid = (h // p, w // p)
        flat = [f.flatten(0, 1) for f in tokens.features]  # [B*S, T, C']
        step = b * s if chunk is None else chunk
        ray_pose = pose_method == "ray_pose"
        parts = [self.head([f[i:i + step] for f in flat], grid, p, rays=rays or ray_pose) for i in range(0, b * s, step)]

        def joined(name: str, chunks: list | None = None) -> torch.Tensor | None:  # the chunks' maps as [B, S, ...]
            maps = [getattr(part, name) for part in (parts if chunks is None else chunks)]
            if maps[0] is None:
                return None
            return (torch.cat(maps) if len(maps) > 1 else maps[0]).unflatten(0, (b, s))

        out = DA3Output(joined("depth"), joined("confidence"), sky=joined("sky"), rays=joined("rays"),
                        ray_confidence=joined("ray_confidence"), reference_view=tokens.reference_view)
        if ray_pose:
            out.extrinsics, out.intrinsics = rays_to_cameras(out.rays, out.ray_confidence, (h, w), generator=generator)
            if not rays:
                out.rays = out.ray_confidence = None
        elif self.config.camera:
            out.extrinsics, out.intrinsics = pose_encoding_to_cameras(self.cam_dec(tokens.camera_tokens[-1]), (h, w))
        if gaussians:
            images = x.flatten(0, 1)
            gs = [self.gs_head([f[i:i + step] for f in flat], grid, images[i:i + step], p) for i in range(0, b * s, step)]
            out.gs_raw, out.gs_density, out.gs_depth = joined("raw", gs), joined("density", gs), out.depth
        return out


class NestedDepthAnything3(nn.Module):
    """DA3NESTED: any-view depth and cameras brought to metres by a metric network (official rules).

    The metric depth (× focal / 300 with the predicted focal) is compared with the any-view depth on
    pixels that are not sky, have a positive depth in both and at least the median confidence; the
    least-squares scale multiplies the depth and the camera translations. Sky pixels then get the
    99th percentile of the other depths (at most 200 m) and confidence 1.
    """

    def __init__(self, config: NestedDA3Config, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config
        self.da3 = DepthAnything3(config.anyview_config, device=device, dtype=dtype)
        self.da3_metric = DepthAnything3(config.metric_config, device=device, dtype=dtype)

    @property
    def kind(self) -> DepthKind:
        return METRIC_DEPTH

    def forward(self, x: torch.Tensor, extrinsics: torch.Tensor | None = None, intrinsics: torch.Tensor | None = None, *,
                ref_view_strategy: RefViewStrategy = "saddle_balanced", chunk: int | None = 8, rays: bool = False,
                pose_method: PoseMethod = "cam_dec", gaussians: bool = False,
                generator: torch.Generator | None = None) -> DA3Output:
        """Same contract as :meth:`DepthAnything3.forward`; depth and translations in metres, ``sky`` set.

        The Gaussian head's output (``gaussians=True``) stays in the any-view network's units, as in the
        official code; ``scale_factor`` takes it to metres.
        """
        out = self.da3(x, extrinsics, intrinsics, ref_view_strategy=ref_view_strategy, chunk=chunk, rays=rays,
                       pose_method=pose_method, gaussians=gaussians, generator=generator)
        metric = self.da3_metric(x, chunk=chunk)
        metric_depth = scale_metric_depth(metric.depth.float(), out.intrinsics)
        depth, conf = out.depth.float(), out.confidence.float()
        non_sky = metric.sky.float() < SKY_THRESHOLD
        if int(non_sky.sum()) <= 10:
            raise ValueError("the metric network sees (almost) only sky; cannot bring this scene to metres")
        median_conf = quantile(conf[non_sky], 0.5)
        mask = (conf >= median_conf) & non_sky & (metric_depth > 1e-2) & (depth > 1e-3)
        a, d = metric_depth[mask], depth[mask]
        scale = (a * d).sum() / (d * d).sum().clamp_min(1e-12)
        depth = depth * scale
        extr = out.extrinsics.clone()
        extr[..., :3, 3] = extr[..., :3, 3] * scale
        sky_depth = torch.clamp(quantile(depth[non_sky], 0.99), max=200.0)
        out.depth = torch.where(non_sky, depth, sky_depth)
        out.confidence = torch.where(non_sky, conf, torch.ones_like(conf))
        out.extrinsics, out.sky, out.scale_factor = extr, metric.sky, scale
        return out


# --------------------------------------------------------------------------------------------
# Post-processing shared by the inference API


def quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Exact linear-interpolation quantile of all elements (no size limit, unlike ``torch.quantile``)."""
    v = x.flatten().float().sort().values
    pos = q * (v.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, v.numel() - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def scale_metric_depth(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """DA3METRIC output -> metres: ``depth × (fx + fy) / 2 / 300`` with the focal in pixels of the network input.

    Shape: depth ``[..., H, W]``, intrinsics ``[..., 3, 3]`` -> ``[..., H, W]``.
    """
    focal = (intrinsics[..., 0, 0] + intrinsics[..., 1, 1]) / 2
    return depth * (focal[..., None, None] / METRIC_FOCAL_DIVISOR).to(depth.dtype)


def fill_sky(depth: torch.Tensor, sky: torch.Tensor, quantile_q: float = 0.99, min_pixels: int = 10) -> torch.Tensor:
    """Give sky pixels the ``quantile_q`` depth of the rest of their view (official mono rule, per view).

    A view with ``min_pixels`` or fewer sky or non-sky pixels is left unchanged. The input is not
    modified.

    Shape: depth, sky ``[N, H, W]`` -> ``[N, H, W]``.
    """
    out = depth.clone()
    non_sky = sky < SKY_THRESHOLD
    for i in range(depth.shape[0]):  # per view: a quantile over a different number of pixels each
        keep = non_sky[i]
        n_keep = int(keep.sum())
        if n_keep <= min_pixels or keep.numel() - n_keep <= min_pixels:
            continue
        out[i] = torch.where(keep, depth[i], quantile(depth[i][keep], quantile_q).to(depth.dtype))
    return out


# --------------------------------------------------------------------------------------------
# Checkpoint converters: official DA3 and ComfyUI core layouts -> this implementation's (anydepth.weights picks
# one from a sentinel key)

_DA3_SHARED_NORM = re.compile(r"^(.*head\.scratch\.output_conv2_aux)\.(\d)\.2\.(weight|bias)$")


def convert_da3(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Depth Anything 3 ``model.safetensors`` keys (``model.`` already stripped) -> this implementation's.

    * ``backbone.pretrained.*`` -> ``backbone.*`` (also under ``da3.`` / ``da3_metric.`` of the nested model);
    * the DualDPT aux heads share one LayerNorm that files store once (``...output_conv2_aux.0.2``):
      its tensors are filled in for all four heads so that the strict load sees every key.

    The Gaussian-splatting head of GIANT (``gs_head.*``) keeps its names.

    Example:
        >>> sd = convert_da3({"backbone.pretrained.cls_token": torch.zeros(1), "gs_head.x": torch.zeros(1),
        ...                   "head.scratch.output_conv2_aux.0.2.weight": torch.ones(1)})
        >>> sorted(sd)[:3], len(sd)
        (['backbone.cls_token', 'gs_head.x', 'head.scratch.output_conv2_aux.0.2.weight'], 6)
    """
    out = {k.replace("backbone.pretrained.", "backbone.", 1): v for k, v in sd.items()}
    for k, v in list(out.items()):
        m = _DA3_SHARED_NORM.match(k)
        if m:
            for i in range(4):
                out.setdefault(f"{m.group(1)}.{i}.2.{m.group(3)}", v)
    return out


#: Key prefix of ComfyUI "diffusion model" files (``model.`` is stripped by the reader already).
COMFY_PREFIX = "diffusion_model."


def convert_comfy_da3(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI core's Depth Anything 3 keys (the ``Comfy-Org/Depth-Anything-3`` repacks) -> this implementation's.

    Core runs DA3 on its own DINOv2 (``comfy/image_encoders/dino2.py``), whose names are the transformers
    ones plus DA3's additions; the heads and camera modules keep the official names. So:

    * ``backbone.embeddings.*`` / ``backbone.encoder.layer.N.*`` / ``backbone.layernorm`` go through the
      transformers renaming (:func:`~anydepth.models.dinov2.convert_hf_dinov2`: split q/k/v joined into
      ``qkv``, ``layer_scale`` -> ``ls``, SwiGLU ``weights_in/out`` -> ``w12/w3``, DA3's
      ``embeddings.camera_token`` and per-head ``attention.q_norm`` / ``k_norm``);
    * then :func:`convert_da3` (the shared LayerNorm of the aux heads, stored once or four times).

    An optional ``diffusion_model.`` prefix (a full ComfyUI checkpoint) is dropped.

    Example:
        >>> q = torch.zeros(4, 4)
        >>> sd = convert_comfy_da3({f"backbone.encoder.layer.0.attention.attention.{n}.weight": q for n in ("query", "key", "value")}
        ...                        | {"backbone.embeddings.camera_token": torch.zeros(1, 2, 4),
        ...                           "backbone.encoder.layer.0.attention.q_norm.weight": torch.ones(2)})
        >>> sorted(sd), tuple(sd["backbone.blocks.0.attn.qkv.weight"].shape)
        (['backbone.blocks.0.attn.q_norm.weight', 'backbone.blocks.0.attn.qkv.weight', 'backbone.camera_token'], (12, 4))
    """
    sd = {k.removeprefix(COMFY_PREFIX): v for k, v in sd.items()}
    return convert_da3(convert_hf_dinov2(sd, "backbone.", "backbone."))
