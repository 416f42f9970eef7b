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
:func:`anydepth.weights.convert_da3`). The DINOv2 parts (blocks, patch embedding, position-embedding
resize) are those of :mod:`anydepth.models.dinov2`; the DPT fusion blocks those of
:mod:`anydepth.models.dpt`. The Gaussian-splatting head of GIANT is not built (its weights are
skipped at load).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..kinds import DEPTH, METRIC_DEPTH, DepthKind
from .depth_anything import ArchConfig
from .dinov2 import Block, DinoVisionTransformer, Mlp
from .dpt import FeatureFusionBlock

RefViewStrategy = Literal["first", "middle", "saddle_balanced", "saddle_sim_range"]
REF_VIEW_STRATEGIES: tuple[str, ...] = ("first", "middle", "saddle_balanced", "saddle_sim_range")

#: Reference-view selection runs only from this many views on (and never with given poses).
MIN_VIEWS_FOR_REF_SELECTION = 3

#: The metric network's output times ``focal / METRIC_FOCAL_DIVISOR`` is metres (focal in pixels).
METRIC_FOCAL_DIVISOR = 300.0

#: Sky probability below which a pixel counts as "not sky" (official threshold).
SKY_THRESHOLD = 0.3


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class DA3Config:
    """A buildable Depth Anything 3 network (any-view, mono or metric).

    Attributes:
        arch: backbone and head widths (``features`` / ``out_channels`` are the head's).
        layers: blocks whose outputs feed the head.
        alt_start: first block of the within-view / across-view alternation (odd blocks from here
            attend across views); ``-1`` for a plain per-image ViT (mono / metric).
        qknorm_start, rope_start: first block with QK-norm / 2D RoPE (``-1``: none).
        cat_token: the head sees ``[local, global]`` features (twice the width).
        head: ``"dualdpt"`` (depth + confidence + rays) or ``"dpt"`` (depth + sky).
        camera: has the camera encoder and decoder.
        metric: output × focal / 300 is metres (DA3METRIC).
        rope_freq: RoPE base frequency.
        name: catalogue / preset name.
    """

    arch: ArchConfig
    layers: tuple[int, ...]
    alt_start: int = -1
    qknorm_start: int = -1
    rope_start: int = -1
    cat_token: bool = True
    head: str = "dualdpt"
    camera: bool = True
    metric: bool = False
    rope_freq: float = 100.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.head not in ("dualdpt", "dpt"):
            raise ValueError(f"DA3 head must be 'dualdpt' or 'dpt', got {self.head!r}")
        if len(self.layers) != 4 or not all(0 <= i < self.arch.depth for i in self.layers):
            raise ValueError(f"layers must be four block indices below {self.arch.depth}, got {self.layers}")
        if self.alt_start == 0 or self.alt_start >= self.arch.depth:
            raise ValueError(f"alt_start must be -1 or in 1..{self.arch.depth - 1}, got {self.alt_start}")
        if self.camera and self.alt_start < 0:
            raise ValueError("a DA3 network with cameras needs alt_start >= 1 (the camera token enters there)")
        if self.rope_start >= 0 and (self.arch.embed_dim // self.arch.num_heads) % 4:
            raise ValueError("2D RoPE needs a head width divisible by 4")

    @property
    def kind(self) -> DepthKind:
        """``"metric_depth"`` for the metric network (after focal scaling), else ``"depth"``."""
        return METRIC_DEPTH if self.metric else DEPTH

    @property
    def anyview(self) -> bool:
        """Views attend to each other (the network predicts cameras)."""
        return self.alt_start >= 0

    @property
    def sky(self) -> bool:
        return self.head == "dpt"

    @property
    def head_dim_in(self) -> int:
        return self.arch.embed_dim * (2 if self.cat_token else 1)


@dataclass(frozen=True)
class NestedDA3Config:
    """DA3NESTED: an any-view network whose depth and cameras are scaled to metres by a metric one."""

    anyview_config: DA3Config
    metric_config: DA3Config
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.anyview_config.camera or not self.metric_config.metric:
            raise ValueError("a nested DA3 needs an any-view network with cameras and a metric network")

    kind: DepthKind = field(default=METRIC_DEPTH, init=False)
    camera: bool = field(default=True, init=False)
    anyview: bool = field(default=True, init=False)
    sky: bool = field(default=True, init=False)
    metric: bool = field(default=True, init=False)

    @property
    def arch(self) -> ArchConfig:
        return self.anyview_config.arch

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.anyview_config.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.anyview_config.std


_VITS = ArchConfig(384, 12, 6, 64, (48, 96, 192, 384))
_VITB = ArchConfig(768, 12, 12, 128, (96, 192, 384, 768))
_VITL = ArchConfig(1024, 24, 16, 256, (256, 512, 1024, 1024))
_VITG = ArchConfig(1536, 40, 24, 256, (256, 512, 1024, 1024), ffn="swiglu")


def _anyview(name: str, arch: ArchConfig, layers: tuple[int, ...], alt: int) -> DA3Config:
    return DA3Config(arch, layers, alt, alt, alt, name=name)


def _mono(name: str, metric: bool) -> DA3Config:
    return DA3Config(_VITL, (4, 11, 17, 23), cat_token=False, head="dpt", camera=False, metric=metric, name=name)


#: The official presets (``model_name`` in a DA3 ``config.json``).
DA3_PRESETS: dict[str, DA3Config | NestedDA3Config] = {
    "da3-small": _anyview("da3-small", _VITS, (5, 7, 9, 11), 4),
    "da3-base": _anyview("da3-base", _VITB, (5, 7, 9, 11), 4),
    "da3-large": _anyview("da3-large", _VITL, (11, 15, 19, 23), 8),
    "da3-giant": _anyview("da3-giant", _VITG, (19, 27, 33, 39), 13),
    "da3mono-large": _mono("da3mono-large", False),
    "da3metric-large": _mono("da3metric-large", True),
}
DA3_PRESETS["da3nested-giant-large"] = NestedDA3Config(DA3_PRESETS["da3-giant"], DA3_PRESETS["da3metric-large"],
                                                       name="da3nested-giant-large")


def da3_preset(name: str) -> DA3Config | NestedDA3Config:
    """Preset for an official ``model_name`` (``-1.1`` releases share the architecture of their base)."""
    base = name.lower().removesuffix("-1.1")
    try:
        return DA3_PRESETS[base]
    except KeyError:
        raise KeyError(f"unknown Depth Anything 3 model {name!r}; known: {', '.join(DA3_PRESETS)}") from None


# --------------------------------------------------------------------------------------------
# Small pure functions


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


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from quaternions in ``(x, y, z, w)`` order (need not be unit length).

    Shape: ``[..., 4]`` -> ``[..., 3, 3]``.
    """
    i, j, k, r = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    m = torch.stack(
        (
            1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
            two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
            two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return m.reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(x, y, z, w)`` with ``w >= 0`` from rotation matrices.

    Uses the best-conditioned of the four closed-form candidates (largest diagonal term).

    Shape: ``[..., 3, 3]`` -> ``[..., 4]``.
    """
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.reshape(m.shape[:-2] + (9,)).unbind(-1)
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    q_abs = diag.clamp_min(0).sqrt()
    # Row c: the quaternion (w, x, y, z) times 2 * q_abs[c].
    cand = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ],
        -2,
    ) / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(-1)[..., None, None].expand(q_abs.shape[:-1] + (1, 4))
    wxyz = cand.gather(-2, best).squeeze(-2)
    xyzw = wxyz[..., [1, 2, 3, 0]]
    return torch.where(xyzw[..., 3:] < 0, -xyzw, xyzw)


def invert_rigid(m: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms ``[R | t]`` given as ``[..., 3, 4]`` or ``[..., 4, 4]`` (same shape out)."""
    r, t = m[..., :3, :3], m[..., :3, 3:]
    rt = r.transpose(-1, -2)
    out = torch.cat([rt, -rt @ t], dim=-1)
    if m.shape[-2] == 4:
        out = torch.cat([out, m[..., 3:, :]], dim=-2)
    return out


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
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Head features and camera tokens of the blocks in ``config.layers``.

        Args:
            x: normalised images ``[B, S, 3, H, W]``, sides multiples of 14.
            cam_token: ``[B, S, C]`` tokens of known cameras, or ``None``.
            ref_view_strategy: see :func:`select_reference_view`.
            chunk: views per pass through the within-view blocks and MLPs (bounds activation memory).

        Returns:
            features: per layer ``[B, S, h*w, C']`` (``C' = 2C`` with ``cat_token``: raw local half,
            normalised global half); camera tokens: per layer ``[B, S, C']`` (before the norm);
            the chosen reference view per scene ``[B]`` (``None`` when none was chosen).
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
        return [taken[i][0] for i in cfg.layers], [taken[i][1] for i in cfg.layers], ref


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
        c = list(out_channels)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1, **dd) for oc in c)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c[0], c[0], 4, stride=4, **dd),
            nn.ConvTranspose2d(c[1], c[1], 2, stride=2, **dd),
            nn.Identity(),
            nn.Conv2d(c[3], c[3], 3, stride=2, padding=1, **dd),
        ])
        self.scratch = nn.Module()
        for i, oc in enumerate(c, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False, **dd))
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
                rays: bool = False) -> dict[str, torch.Tensor]:
        """Shape: four ``[M, h*w, C]`` token maps in; ``depth``, ``confidence`` ``[M, 14h, 14w]`` out
        (and with ``rays``: ``rays`` ``[M, 8h, 8w, 6]``, ``ray_confidence`` ``[M, 8h, 8w]``)."""
        image = (grid[0] * patch, grid[1] * patch)
        levels = self._levels(feats, grid, image)
        main = self._pos(self._upsample(self._fuse(levels)[-1], grid, patch), image)
        logits = self.scratch.output_conv2(main)
        out = {"depth": logits[:, 0].exp(), "confidence": logits[:, 1].exp() + 1}
        if rays:
            aux = self.scratch.output_conv1_aux[-1](self._fuse(levels, "_aux")[-1])
            ray = self.scratch.output_conv2_aux[-1](self._pos(aux, image)).permute(0, 2, 3, 1)
            out["rays"], out["ray_confidence"] = ray[..., :6], ray[..., 6].exp() + 1
        return out


class MonoDPTHead(_DA3DPTBase):
    """DPT of the mono / metric networks: depth (exp) and a sky map (ReLU)."""

    def __init__(self, dim_in: int, features: int, out_channels: Sequence[int], *, device=None, dtype=None) -> None:
        dd = {"device": device, "dtype": dtype}
        super().__init__(dim_in, features, out_channels, 1, dd)
        self.scratch.sky_output_conv2 = _head_conv2(features, 1, None, dd)

    def forward(self, feats: Sequence[torch.Tensor], grid: tuple[int, int], patch: int = 14,
                rays: bool = False) -> dict[str, torch.Tensor]:
        """Shape: four ``[M, h*w, C]`` token maps in; ``depth``, ``sky`` ``[M, 14h, 14w]`` out."""
        feat = self._upsample(self._fuse(self._levels(feats, grid, (0, 0)))[-1], grid, patch)
        return {"depth": self.scratch.output_conv2(feat)[:, 0].exp(), "sky": F.relu(self.scratch.sky_output_conv2(feat)[:, 0])}


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
        """
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"x must be [B, S, 3, H, W] normalised views, got shape {tuple(x.shape)}")
        b, s, _, h, w = x.shape
        p = self.config.arch.patch_size
        if h % p or w % p:
            raise ValueError(f"view size {h}×{w} is not a multiple of the patch size {p}; resize first")
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be a positive number of views or None, got {chunk}")
        cam_token = None
        if self.config.camera and extrinsics is not None:
            if intrinsics is None:
                raise ValueError("known extrinsics need intrinsics too (the camera encoder uses the field of view)")
            cam_token = self.cam_enc(extrinsics, intrinsics, (h, w))
        feats, cams, ref = self.backbone(x, cam_token, ref_view_strategy, chunk)
        grid = (h // p, w // p)
        flat = [f.flatten(0, 1) for f in feats]  # [B*S, T, C']
        step = b * s if chunk is None else chunk
        parts = [self.head([f[i:i + step] for f in flat], grid, p, rays=rays) for i in range(0, b * s, step)]
        maps = {k: (torch.cat([pt[k] for pt in parts]) if len(parts) > 1 else parts[0][k]).unflatten(0, (b, s)) for k in parts[0]}
        out = DA3Output(maps["depth"], maps.get("confidence"), sky=maps.get("sky"), rays=maps.get("rays"),
                        ray_confidence=maps.get("ray_confidence"), reference_view=ref)
        if self.config.camera:
            out.extrinsics, out.intrinsics = pose_encoding_to_cameras(self.cam_dec(cams[-1]), (h, w))
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
                ref_view_strategy: RefViewStrategy = "saddle_balanced", chunk: int | None = 8, rays: bool = False) -> DA3Output:
        """Same contract as :meth:`DepthAnything3.forward`; depth and translations in metres, ``sky`` set."""
        out = self.da3(x, extrinsics, intrinsics, ref_view_strategy=ref_view_strategy, chunk=chunk, rays=rays)
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


def create_da3_model(config: DA3Config | NestedDA3Config, *, device=None, dtype=None) -> nn.Module:
    """Build a DA3 network (random weights; ``device="meta"`` for ``load_state_dict(assign=True)``)."""
    if isinstance(config, NestedDA3Config):
        return NestedDepthAnything3(config, device=device, dtype=dtype).eval()
    if isinstance(config, DA3Config):
        return DepthAnything3(config, device=device, dtype=dtype).eval()
    raise TypeError(f"expected a DA3Config or NestedDA3Config, got {type(config).__name__}")
