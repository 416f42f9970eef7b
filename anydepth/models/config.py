"""Architecture configs and layer taps of every network, as plain data.

Nothing here builds a network: this module imports neither :mod:`anydepth.models.depth_anything`
nor :mod:`anydepth.models.da3`, so the catalogue, the weight loader and memory estimates can use the
configs without the networks, and the networks import their config from here (no cycle).
:func:`anydepth.models.create_model` maps a config type to its network class.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..kinds import DEPTH, DISPARITY, METRIC_DEPTH, DepthKind

__all__ = [
    "ARCHS",
    "DA3_PRESETS",
    "ArchConfig",
    "DA3Config",
    "ModelConfig",
    "NestedDA3Config",
    "VIDEO_ENCODERS",
    "VideoModelConfig",
    "da3_preset",
    "layer_indices",
    "video_config",
]


# --------------------------------------------------------------------------------------------
# Depth Anything V1 / V2


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
    """Blocks whose outputs feed the DPT head: V1 takes the last four, V2 spreads them out.

    Example:
        >>> layer_indices("v1", 12), layer_indices("v2", 12)
        ((8, 9, 10, 11), (2, 5, 8, 11))
    """
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


# --------------------------------------------------------------------------------------------
# Depth Anything 3


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
        gaussians: has the Gaussian-splatting head (``gs_head.*``, DA3-GIANT files).
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
    gaussians: bool = False
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
        if self.gaussians and not self.camera:
            raise ValueError("the Gaussian-splatting head needs an any-view network with cameras (DA3-GIANT)")
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
    "da3-giant": replace(_anyview("da3-giant", _VITG, (19, 27, 33, 39), 13), gaussians=True),
    "da3mono-large": _mono("da3mono-large", False),
    "da3metric-large": _mono("da3metric-large", True),
}
DA3_PRESETS["da3nested-giant-large"] = NestedDA3Config(DA3_PRESETS["da3-giant"], DA3_PRESETS["da3metric-large"],
                                                       name="da3nested-giant-large")


def da3_preset(name: str) -> DA3Config | NestedDA3Config:
    """Preset for an official ``model_name`` (``-1.1`` releases share the architecture of their base).

    Example:
        >>> da3_preset("DA3-LARGE-1.1").layers
        (11, 15, 19, 23)
    """
    base = name.lower().removesuffix("-1.1")
    try:
        return DA3_PRESETS[base]
    except KeyError:
        raise KeyError(f"unknown Depth Anything 3 model {name!r}; known: {', '.join(DA3_PRESETS)}") from None


# --------------------------------------------------------------------------------------------
# Video Depth Anything


@dataclass(frozen=True)
class VideoModelConfig:
    """A buildable Video Depth Anything network: V2's DINOv2 and DPT head plus four temporal modules.

    The temporal modules mix each pixel's features over the frames of a window (REFERENCE.md §9):
    two on the two deepest reassembled maps, two on the decoder paths after ``refinenet4`` and
    ``refinenet3``; :attr:`temporal_widths` gives their widths.

    Attributes:
        arch: backbone and head widths (V2's ``vits`` / ``vitb`` / ``vitl``).
        layers: blocks whose outputs feed the head (V2's taps).
        kind: ``"disparity"`` (relative models) or ``"metric_depth"`` (metric models, whose ReLU output is
            metres: no sigmoid, no fixed range).
        temporal: build the temporal modules; without them the network is V2 under VDA's key names.
        frames: length of the temporal position code, the most frames one attention sees (32, the window).
        temporal_heads: heads of every temporal attention.
        temporal_chunk: elements of the widest temporal intermediate (the feed-forward's hidden layer)
            computed at once; pixels are independent there, so they run in groups this large (the same
            numbers, a bounded working set).
        mean, std: input normalisation (ImageNet).
        name: catalogue name or file the weights came from.
    """

    arch: ArchConfig
    layers: tuple[int, ...]
    kind: DepthKind = DISPARITY
    temporal: bool = True
    frames: int = 32
    temporal_heads: int = 8
    temporal_chunk: int = field(default=2**24, compare=False)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in (DISPARITY, METRIC_DEPTH):
            raise ValueError(f"Video Depth Anything outputs 'disparity' or 'metric_depth', not {self.kind!r}")
        if len(self.layers) != 4 or not all(0 <= i < self.arch.depth for i in self.layers):
            raise ValueError(f"layers must be four block indices below {self.arch.depth}, got {self.layers}")
        if self.frames < 1 or self.temporal_heads < 1 or self.temporal_chunk < 1:
            raise ValueError(f"frames, temporal_heads and temporal_chunk must be positive, got {self.frames}, "
                             f"{self.temporal_heads} and {self.temporal_chunk}")
        if self.temporal:
            # GroupNorm of 32 groups in front of every temporal module; heads split each width evenly.
            bad = [w for w in self.temporal_widths if w % 32 or w % self.temporal_heads]
            if bad:
                raise ValueError(f"temporal module widths {self.temporal_widths} must be multiples of 32 and of "
                                 f"{self.temporal_heads} heads; {bad} are not (check features / out_channels)")

    @property
    def temporal_widths(self) -> tuple[int, int, int, int]:
        """Widths of the four temporal modules: third and fourth reassembled maps, then twice the fusion width."""
        a = self.arch
        return a.out_channels[2], a.out_channels[3], a.features, a.features

    @property
    def metric(self) -> bool:
        return self.kind == METRIC_DEPTH

    @property
    def max_depth(self) -> None:
        """Always ``None``: the metric releases output metres directly, without a fixed range."""
        return None


#: Released Video Depth Anything encoders: V2's sizes and taps (no ViT-g).
VIDEO_ENCODERS: tuple[str, ...] = ("vits", "vitb", "vitl")


def video_config(encoder: str, metric: bool = False, name: str = "") -> VideoModelConfig:
    """The config of a released Video Depth Anything network (relative or metric).

    Example:
        >>> video_config("vits").temporal_widths
        (192, 384, 64, 64)
    """
    if encoder not in VIDEO_ENCODERS:
        raise ValueError(f"unknown Video Depth Anything encoder {encoder!r}; expected one of {', '.join(VIDEO_ENCODERS)}")
    arch = ARCHS[encoder]
    return VideoModelConfig(arch, layer_indices("v2", arch.depth), METRIC_DEPTH if metric else DISPARITY, name=name)
