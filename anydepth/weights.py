"""Find, download and read Depth Anything checkpoints, whatever their published format.

One canonical set of parameter names (the original release's) is understood by the network; every
other layout is converted into it by one pure function per format, which lives beside the network
it feeds (:func:`~anydepth.models.depth_anything.convert_hf`, :func:`~anydepth.models.da3.convert_da3` ...).
This module spots the format from sentinel keys (:data:`FORMATS`), the architecture from tensor
shapes, and what the model outputs from (in order) the caller, the transformers ``config.json``,
the catalogue entry, the file name; then loads strictly (:func:`build_model`).

Safety: safetensors are preferred; pickle-based files go only through
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from .catalog import VARIANTS, Variant, get_variant, variant_for_file
from .kinds import DISPARITY, METRIC_DEPTH, check_kind
from .models import (ARCHS, ArchConfig, DepthAnything, DepthAnything3, ModelConfig, NestedDepthAnything3,
                     VideoDepthAnything, create_model, layer_indices)
from .models.config import DA3Config, NestedDA3Config, VideoModelConfig, da3_preset
from .models.da3 import convert_comfy_da3, convert_da3
from .models.depth_anything import convert_distill, convert_hf
from .models.dinov2 import pos_grid_for

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used; the message names the file and what was expected."""


class WeightsNotFoundError(FileNotFoundError):
    """A model is neither a file nor present locally, and cannot be downloaded."""


# --------------------------------------------------------------------------------------------
# Where models live


def default_models_dir() -> Path:
    """First entry of ``ANYDEPTH_MODELS`` (``os.pathsep``-separated), else ``~/.cache/anydepth/models``."""
    env = os.environ.get("ANYDEPTH_MODELS")
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "anydepth" / "models"


def model_dirs(models_dir: str | os.PathLike | Iterable[str | os.PathLike] | None = None) -> list[Path]:
    """Folders searched for models, in order; the first one receives downloads."""
    if models_dir is None:
        env = os.environ.get("ANYDEPTH_MODELS")
        dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p] if env else [default_models_dir()]
    elif isinstance(models_dir, (str, os.PathLike)):
        dirs = [Path(models_dir).expanduser()]
    else:
        dirs = [Path(p).expanduser() for p in models_dir]
    if not dirs:
        raise ValueError("models_dir is an empty list; give at least one folder")
    return dirs


def find_local(variant: Variant, dirs: Iterable[Path]) -> Path | None:
    """Path of ``variant`` in one of ``dirs``, or ``None``.

    Looks for its local name (a weights file, or a folder holding every required file) and then for
    each of its aliases (other names the same weights are kept under, e.g. ``da3_large.safetensors``).
    """
    if variant.local_name is None:
        return None
    for d in dirs:
        p = d / variant.local_name
        if variant.is_directory:
            if p.is_dir() and all((p / f).is_file() for f in variant.required_files):
                return p
        elif p.is_file():
            return p
        found = next((d / a for a in variant.aliases if (d / a).is_file()), None)
        if found is not None:
            return found
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _not_local_message(variant: Variant, target: Path) -> str:
    where = target / variant.local_name if variant.is_directory else (target / variant.local_name).parent
    urls = ", ".join(f"https://huggingface.co/{variant.repo_id}/resolve/main/{f}" for f in variant.files)
    return f"{variant.name} is not present locally. Download {urls} and put it in {where}"


def download(variant: Variant, target_dir: Path, revision: str | None = None) -> Path:
    """Fetch ``variant`` from the hub into ``target_dir`` with huggingface_hub; return its local path.

    ``revision`` pins a branch, tag or commit. huggingface_hub writes each file to a temporary name
    and renames it, so an interrupted download never leaves a truncated checkpoint in place.
    """
    if variant.repo_id is None:
        raise WeightsNotFoundError(f"{variant.name}: {variant.notes}. Load a file of this architecture by path instead.")
    if _offline():
        raise WeightsNotFoundError(_not_local_message(variant, target_dir) + " (HF_HUB_OFFLINE=1, so nothing is downloaded).")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    local = target_dir / variant.local_name
    # hf_hub_download keeps the file's path inside the repo below local_dir.
    dest = local if variant.is_directory else local.parents[len(Path(variant.weights_file).parts) - 1]
    dest.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (%s, license %s) into %s", variant.name, variant.repo_id, variant.license, dest)
    try:
        for f in variant.files:
            hf_hub_download(variant.repo_id, f, revision=revision, local_dir=dest)
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: the hub was not reachable
        raise WeightsNotFoundError(_not_local_message(variant, target_dir) + f" (the hub could not be reached: {e})") from e
    except (EntryNotFoundError, RepositoryNotFoundError) as e:
        raise WeightsNotFoundError(f"{variant.name}: {variant.repo_id} has no {variant.files} at revision {revision or 'main'} ({e})") from e
    return local


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint on disk, with the catalogue entry it belongs to when known."""

    path: Path
    variant: Variant | None


def resolve_checkpoint(
    model: str | os.PathLike,
    *,
    models_dir: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    revision: str | None = None,
    download_missing: bool = True,
) -> ResolvedCheckpoint:
    """Turn a path or catalogue name into a file on disk.

    Search order: ``model`` as a path; ``model`` as a catalogue name found in the model folders;
    a download into the first model folder (skipped with ``HF_HUB_OFFLINE=1``).
    """
    p = Path(model).expanduser()
    if p.exists():
        return ResolvedCheckpoint(p, variant_for_file(p))
    name = str(model)
    if name not in VARIANTS:
        if any(name.endswith(s) for s in WEIGHT_SUFFIXES) or os.sep in name:
            raise WeightsNotFoundError(f"checkpoint file {name} does not exist")
        get_variant(name)  # raises with close matches
    variant = VARIANTS[name]
    dirs = model_dirs(models_dir)
    local = find_local(variant, dirs)
    if local is not None:
        return ResolvedCheckpoint(local, variant)
    if not download_missing:
        raise WeightsNotFoundError(_not_local_message(variant, dirs[0]))
    return ResolvedCheckpoint(download(variant, dirs[0], revision), variant)


# --------------------------------------------------------------------------------------------
# Reading files


def read_state_dict(path: str | os.PathLike) -> tuple[StateDict, dict | None]:
    """Tensors of a checkpoint file or transformers folder, plus its ``config.json`` if it has one.

    Raises:
        CheckpointError: unreadable, truncated, or a pickle holding anything but tensors.
    """
    path = Path(path)
    config = None
    if path.is_dir():
        cfg = path / "config.json"
        config = json.loads(cfg.read_text()) if cfg.is_file() else None
        files = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
        if not files:
            raise CheckpointError(f"{path}: folder has no model.safetensors or pytorch_model.bin")
        path = files[0]
    elif path.name == "model.safetensors" and (path.parent / "config.json").is_file():
        config = json.loads((path.parent / "config.json").read_text())
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        elif suffix in PICKLE_SUFFIXES:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"{path}: unknown checkpoint type {suffix!r}; expected one of {', '.join(WEIGHT_SUFFIXES)}")
    except CheckpointError:
        raise
    except Exception as e:  # safetensors / pickle errors differ by version; all mean the same thing here
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "Unpickl" in type(e).__name__:
            raise CheckpointError(
                f"{path}: refused to load: the file contains pickled objects other than tensors "
                "(it could run code). Use a .safetensors file or a plain state dict."
            ) from e
        raise CheckpointError(f"{path}: cannot read checkpoint, the file is truncated or corrupt ({type(e).__name__}: {text[:200]}). "
                              "Delete it and download it again.") from e
    return _unwrap(sd, path), config


def _unwrap(obj: object, path: Path) -> StateDict:
    """Dig the tensor dict out of training containers and strip wrapper prefixes."""
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    sd = dict(obj)
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------------------------
# Formats: sentinel keys -> converter into the network's own names. The converters live beside the
# network they feed (models/depth_anything.py, models/da3.py); this module only picks one.


#: The key that tells a Video Depth Anything file from a V2 one: its first temporal module.
VDA_SENTINEL = "head.motion_modules.0.temporal_transformer.proj_in.weight"
_VDA_POSITION_CODE = "head.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"


#: The key layouts that hold a Depth Anything 3 network: the official one and ComfyUI core's repack.
DA3_FORMATS: tuple[str, ...] = ("da3", "comfy_da3")


def convert_original(sd: StateDict) -> StateDict:
    """Original layout (``.pth`` releases, community safetensors): already canonical."""
    return sd


#: (sentinel keys that must all be present, format name, converter). The first match wins, so a
#: more specific row comes before a row whose keys it shares (Distill-Any-Depth's ``backbone.*``
#: DINOv2 with a ``depth_head`` before the DA3 mono/metric ``backbone.*`` with a ``head``).
FORMATS: list[tuple[tuple[str, ...], str, Callable[[StateDict], StateDict]]] = [
    # Video Depth Anything: V2's backbone, the head under head.* with temporal modules (before "original": same backbone)
    (("pretrained.patch_embed.proj.weight", VDA_SENTINEL), "vda", convert_original),
    (("pretrained.patch_embed.proj.weight",), "original", convert_original),
    # ComfyUI core's DA3 (Comfy-Org repacks): transformers-named DINOv2 like "hf" below, but a DA3 head
    (("backbone.embeddings.patch_embeddings.projection.weight", "head.scratch.refinenet1.out_conv.weight"), "comfy_da3",
     convert_comfy_da3),
    (("diffusion_model.backbone.embeddings.patch_embeddings.projection.weight",), "comfy_da3", convert_comfy_da3),
    (("backbone.embeddings.patch_embeddings.projection.weight",), "hf", convert_hf),
    (("backbone.patch_embed.proj.weight", "depth_head.projects.0.weight"), "distill", convert_distill),
    (("backbone.pretrained.patch_embed.proj.weight",), "da3", convert_da3),
    (("backbone.patch_embed.proj.weight",), "da3", convert_da3),
    (("da3.backbone.pretrained.patch_embed.proj.weight",), "da3", convert_da3),
    (("da3.backbone.patch_embed.proj.weight",), "da3", convert_da3),
]


def detect_format(sd: StateDict) -> tuple[str, Callable[[StateDict], StateDict]]:
    """The format of a state dict and its converter, from the first :data:`FORMATS` row whose keys it holds.

    Example:
        >>> detect_format({"backbone.patch_embed.proj.weight": torch.zeros(1), "depth_head.projects.0.weight": torch.zeros(1)})[0]
        'distill'
    """
    for sentinels, name, convert in FORMATS:
        if all(k in sd for k in sentinels):
            return name, convert
    sample = ", ".join(sorted(sd)[:3])
    raise CheckpointError(f"not a Depth Anything V1/V2 checkpoint (nor Depth Anything 3; no known sentinel key; first keys: {sample})")


# --------------------------------------------------------------------------------------------
# Architecture and output detection


def detect_arch(sd: StateDict, num_heads: int | None = None) -> ArchConfig:
    """Architecture from tensor shapes of an original-layout state dict."""
    try:
        embed_dim, _, patch, _ = sd["pretrained.patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("pretrained.blocks."))
        swiglu = "pretrained.blocks.0.mlp.w12.weight" in sd
        hidden = sd["pretrained.blocks.0.mlp.w12.weight" if swiglu else "pretrained.blocks.0.mlp.fc1.weight"].shape[0]
        features = sd["depth_head.scratch.layer1_rn.weight"].shape[0]
        out_channels = tuple(sd[f"depth_head.projects.{i}.weight"].shape[0] for i in range(4))
        pos_grid = pos_grid_for(sd["pretrained.pos_embed"].shape[1])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"cannot work out the architecture: {e}") from e
    for arch in ARCHS.values():  # released sizes keep their exact configs (mlp ratio of ViT-g ...)
        if (arch.embed_dim, arch.depth, arch.features, arch.out_channels) == (embed_dim, depth, features, out_channels):
            return arch
    # SwiGLU stores 2 × (2/3 × ratio × dim) rounded; undo it only approximately (exact for ratio 4).
    mlp_ratio = 4.0 if swiglu else hidden / embed_dim
    heads = num_heads or max(1, embed_dim // 64)
    return ArchConfig(int(embed_dim), depth, heads, int(features), out_channels, mlp_ratio, "swiglu" if swiglu else "mlp", int(patch), pos_grid)


_DA3_ANYVIEW_LAYERS = {12: (5, 7, 9, 11), 24: (11, 15, 19, 23), 40: (19, 27, 33, 39)}


def _da3_from_shapes(sd: StateDict, prefix: str, preset: DA3Config | None, metric: bool | None) -> DA3Config:
    """A :class:`DA3Config` from tensor shapes; block taps and "metric" from ``preset`` when its shapes agree."""
    try:
        embed_dim, _, patch, _ = sd[f"{prefix}backbone.patch_embed.proj.weight"].shape
        blocks = f"{prefix}backbone.blocks."
        depth = 1 + max(int(k[len(blocks):].split(".")[0]) for k in sd if k.startswith(blocks))
        swiglu = f"{blocks}0.mlp.w12.weight" in sd
        hidden = sd[f"{blocks}0.mlp.w12.weight" if swiglu else f"{blocks}0.mlp.fc1.weight"].shape[0]
        qk = [i for i in range(depth) if f"{blocks}{i}.attn.q_norm.weight" in sd]
        head_dim = sd[f"{blocks}{qk[0]}.attn.q_norm.weight"].shape[0] if qk else 64
        features = sd[f"{prefix}head.scratch.layer1_rn.weight"].shape[0]
        out_channels = tuple(sd[f"{prefix}head.projects.{i}.weight"].shape[0] for i in range(4))
        head_in = sd[f"{prefix}head.projects.0.weight"].shape[1]
        pos_grid = pos_grid_for(sd[f"{prefix}backbone.pos_embed"].shape[1])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"cannot work out the Depth Anything 3 architecture: missing or odd tensor {e}") from e
    camera = f"{prefix}cam_dec.fc_t.weight" in sd
    anyview = f"{prefix}backbone.camera_token" in sd
    alt = qk[0] if anyview and qk else -1
    if anyview and alt < 0:
        raise CheckpointError("Depth Anything 3 file with a camera token but no QK-norm blocks: cannot tell where "
                              "cross-view attention starts")
    arch = ArchConfig(int(embed_dim), depth, int(embed_dim) // head_dim, int(features), out_channels,
                      4.0 if swiglu else hidden / embed_dim, "swiglu" if swiglu else "mlp", int(patch), pos_grid)
    if preset is not None and (preset.arch.embed_dim, preset.arch.depth, preset.anyview) == (arch.embed_dim, depth, anyview):
        layers = preset.layers
    elif anyview:
        layers = _DA3_ANYVIEW_LAYERS.get(depth) or tuple(i for i in range(depth) if i >= alt and i % 2 == 1)[-4:]
    else:
        layers = layer_indices("v2", depth)
    if len(layers) != 4:
        raise CheckpointError(f"cannot tell which blocks of this {depth}-block Depth Anything 3 network feed the head")
    if metric is None:
        metric = bool(preset is not None and preset.metric)
    return DA3Config(arch, tuple(layers), alt, alt, alt, cat_token=head_in == 2 * embed_dim,
                     head="dualdpt" if f"{prefix}head.norm.weight" in sd else "dpt", camera=camera,
                     metric=metric and not camera, gaussians=f"{prefix}gs_head.projects.0.weight" in sd,
                     name=preset.name if preset is not None else "")


def detect_da3_config(sd: StateDict, names: Iterable[str | None] = (), metric: bool | None = None) -> DA3Config | NestedDA3Config:
    """The Depth Anything 3 network a converted state dict fits.

    ``names`` (``config.json`` ``model_name``, catalogue name, file name; first known one wins) pick the
    official preset, whose block taps are used when its shapes agree with the tensors.
    """
    preset = None
    for name in names:
        if not name:
            continue
        try:
            preset = da3_preset(name)
            break
        except KeyError:
            continue
    if metric is None:
        metric = next((True for n in names if n and "metric" in n.lower() and "nested" not in n.lower()), None)
    if any(k.startswith("da3_metric.") for k in sd):
        nested = preset if isinstance(preset, NestedDA3Config) else None
        anyview = _da3_from_shapes(sd, "da3.", nested.anyview_config if nested else None, False)
        metric_cfg = _da3_from_shapes(sd, "da3_metric.", nested.metric_config if nested else None, True)
        if not anyview.camera or metric_cfg.camera:
            raise CheckpointError("nested Depth Anything 3 file: expected an any-view network under da3. "
                                  "and a metric one under da3_metric.")
        return NestedDA3Config(anyview, metric_cfg, name=nested.name if nested else "")
    return _da3_from_shapes(sd, "", preset if isinstance(preset, DA3Config) else None, metric)


_ENCODER_RE = re.compile(r"vit[sblg]")


def guess_from_name(filename: str) -> dict:
    """Family / kind / max_depth hints from a file or folder name (``{}`` when nothing is recognised)."""
    n = filename.lower()
    hints: dict = {}
    if "hypersim" in n or "indoor" in n:
        hints.update(kind=METRIC_DEPTH, max_depth=20.0)
    elif "vkitti" in n or "outdoor" in n:
        hints.update(kind=METRIC_DEPTH, max_depth=80.0)
    if "v2" in n:
        hints["family"] = "v2"
    elif re.search(r"depth[_-]anything[_-](vit[sbl]14|small|base|large)", n):
        hints["family"] = "v1"
    return hints


def _hints_from_hf_config(config: dict) -> dict:
    hints: dict = {}
    backbone = config.get("backbone_config") or {}
    if backbone.get("out_indices"):
        hints["layers"] = tuple(i - 1 for i in backbone["out_indices"])
    if backbone.get("num_attention_heads"):
        hints["num_heads"] = backbone["num_attention_heads"]
    if config.get("depth_estimation_type") == "metric":
        hints["kind"] = METRIC_DEPTH
        if config.get("max_depth"):  # transformers would silently use 1 m without it: never guess here
            hints["max_depth"] = float(config["max_depth"])
    elif config.get("depth_estimation_type") == "relative":
        hints["kind"] = DISPARITY
    return hints


@dataclass(frozen=True)
class LoadedCheckpoint:
    """Everything read from one checkpoint: its tensors (original layout) and the network they fit."""

    state_dict: StateDict
    config: ModelConfig | DA3Config | NestedDA3Config | VideoModelConfig
    path: Path
    format: str
    variant: Variant | None


def read_checkpoint(
    path: str | os.PathLike,
    *,
    variant: Variant | None = None,
    family: str | None = None,
    kind: str | None = None,
    max_depth: float | None = None,
) -> LoadedCheckpoint:
    """Read any supported checkpoint and work out the :class:`ModelConfig` it needs.

    Output kind and layer selection come from, in order of precedence: the arguments, the
    transformers ``config.json``, the catalogue entry, the file name; a V2 relative model otherwise.
    A metric range is never invented: a metric ``config.json`` without ``max_depth`` takes the
    catalogue's range when the file is a known variant.

    Raises:
        CheckpointError: unreadable or unknown file, or a metric model whose range is unknown (the
            message names the file and the ``max_depth=`` / ``--max-depth`` override).
    """
    path = Path(path)
    raw, hf_config = read_state_dict(path)
    try:
        fmt, convert = detect_format(raw)
        sd = convert(raw)
    except CheckpointError as e:
        raise type(e)(f"{path}: {e}") from e
    variant = variant or variant_for_file(path)
    if fmt in DA3_FORMATS:
        if family not in (None, "da3") or max_depth is not None or kind not in (None, "depth", "metric_depth"):
            raise ValueError(f"{path}: a Depth Anything 3 file takes no family/max_depth override and kind 'depth' "
                             f"or 'metric_depth' only (got family={family!r}, kind={kind!r}, max_depth={max_depth!r})")
        names = [(hf_config or {}).get("model_name"), variant.name if variant else None,
                 path.parent.name if path.name == "model.safetensors" else path.name]
        try:
            cfg = detect_da3_config(sd, names, metric={"depth": False, "metric_depth": True}.get(kind))
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from e
        cfg = replace(cfg, name=variant.name if variant else (names[0] or cfg.name or path.name))
        return LoadedCheckpoint(sd, cfg, path, fmt, variant)
    if fmt == "vda":
        return LoadedCheckpoint(sd, _vda_config(sd, path, variant, family, kind, max_depth), path, fmt, variant)
    hints: dict = {}
    hints.update(guess_from_name(path.name if path.is_file() else path.name + "/"))
    if variant is not None:
        hints.update(family=variant.family, kind=variant.kind, max_depth=variant.max_depth)
    if hf_config:
        hf_hints = _hints_from_hf_config(hf_config)
        if hf_hints.get("kind") == METRIC_DEPTH and "max_depth" not in hf_hints:
            # A metric config.json without a range: only the catalogue (or the caller) may give one, not the name.
            hf_hints["max_depth"] = variant.max_depth if variant is not None else None
        hints.update(hf_hints)
    overrides = {k: v for k, v in (("family", family), ("kind", kind), ("max_depth", max_depth)) if v is not None}
    hints.update(overrides)
    if "family" in overrides:
        hints.pop("layers", None)
    try:
        arch = detect_arch(sd, hints.get("num_heads"))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e
    out_kind = check_kind(hints.get("kind", DISPARITY))
    if out_kind == METRIC_DEPTH and not hints.get("max_depth"):
        raise CheckpointError(_no_max_depth_message(path, hf_config))
    layers = hints.get("layers") or layer_indices(hints.get("family", "v2"), arch.depth)
    cfg = ModelConfig(arch, tuple(layers), out_kind, hints.get("max_depth") if out_kind == METRIC_DEPTH else None,
                      name=variant.name if variant else path.name)
    return LoadedCheckpoint(sd, cfg, path, fmt, variant)


def _vda_config(sd: StateDict, path: Path, variant: Variant | None, family: str | None, kind: str | None,
                max_depth: float | None) -> VideoModelConfig:
    """The :class:`VideoModelConfig` of a Video Depth Anything state dict: V2's architecture from the shapes (under
    ``head.``), the position code's length from its buffer, metric from ``kind``, the catalogue or the file name."""
    if family not in (None, "vda") or max_depth is not None or kind not in (None, DISPARITY, METRIC_DEPTH):
        raise ValueError(f"{path}: a Video Depth Anything file takes no family/max_depth override (the metric models "
                         f"output metres without a fixed range) and kind 'disparity' or 'metric_depth' only (got "
                         f"family={family!r}, kind={kind!r}, max_depth={max_depth!r})")
    as_v2 = {("depth_head." + k[len("head."):] if k.startswith("head.") else k): v for k, v in sd.items()}
    try:
        arch = detect_arch(as_v2)
        frames = int(sd[_VDA_POSITION_CODE].shape[1])  # [1, frames, width]: the most frames one attention sees
    except (CheckpointError, KeyError, IndexError) as e:
        raise CheckpointError(f"{path}: cannot work out the Video Depth Anything architecture: {e}") from e
    if kind is None:
        kind = variant.kind if variant is not None else METRIC_DEPTH if "metric" in path.name.lower() else DISPARITY
    try:
        return VideoModelConfig(arch, layer_indices("v2", arch.depth), kind, frames=frames,
                                name=variant.name if variant is not None else path.name)
    except ValueError as e:
        raise CheckpointError(f"{path}: not a Video Depth Anything network anydepth can build: {e}") from e


def _no_max_depth_message(path: Path, hf_config: dict | None) -> str:
    """Why a metric checkpoint has no range, naming the file to blame and the override to use."""
    override = ("give the range in metres with max_depth= in Python or --max-depth on the command line "
                "(20 for indoor/Hypersim models, 80 for outdoor/VKITTI)")
    if hf_config and hf_config.get("depth_estimation_type") == "metric":
        cfg = (path if path.is_dir() else path.parent) / "config.json"
        return (f"{cfg}: a metric model (depth_estimation_type 'metric') without max_depth, and {path.name} is not a "
                f"catalogue model whose range is known (`anydepth info` lists them); {override}")
    return f"{path}: a metric model needs its range and the file does not give it; {override}"


def _summarise(keys: Iterable[str], n: int = 4) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def build_model(ckpt: LoadedCheckpoint, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> DepthAnything:
    """Instantiate the network on the meta device and load the tensors strictly into it."""
    model = create_model(ckpt.config, device="meta")
    expected = model.state_dict()
    missing = expected.keys() - ckpt.state_dict.keys()
    unexpected = ckpt.state_dict.keys() - expected.keys()
    wrong_shape = [k for k in expected.keys() & ckpt.state_dict.keys() if expected[k].shape != ckpt.state_dict[k].shape]
    if missing or unexpected or wrong_shape:
        a = ckpt.config.arch
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_summarise(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_summarise(unexpected)})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} keys with other shapes ({_summarise(wrong_shape)})")
        raise CheckpointError(
            f"{ckpt.path}: does not fit a Depth Anything network with width {a.embed_dim}, {a.depth} blocks, "
            f"{len(expected)} tensors expected: " + "; ".join(parts) + ". Is this a different model or a damaged file?"
        )
    sd = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in ckpt.state_dict.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model


def load_model(
    model: str | os.PathLike = "v2-small",
    *,
    models_dir: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    revision: str | None = None,
    family: str | None = None,
    kind: str | None = None,
    max_depth: float | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DepthAnything:
    """Resolve (and if needed download) a model by catalogue name or path and build it.

    Example:
        >>> device = "cuda" if torch.cuda.is_available() else "cpu"
        >>> net = load_model("v2-small", device=device, dtype=torch.float16)
        >>> next(net.parameters()).dtype, net.config.kind
        (torch.float16, 'disparity')
    """
    resolved = resolve_checkpoint(model, models_dir=models_dir, revision=revision)
    ckpt = read_checkpoint(resolved.path, variant=resolved.variant, family=family, kind=kind, max_depth=max_depth)
    return build_model(ckpt, device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Which estimator runs a network: one owner for the three estimators' "load or adopt" step


#: Per estimator family: what such a network is called, the estimator class, its CLI command and its ComfyUI node.
ESTIMATOR_FAMILIES: dict[str, tuple[str, str, str, str]] = {
    "image": ("an image model (Depth Anything V1/V2)", "DepthEstimator", "anydepth estimate", "Estimate Depth"),
    "da3": ("a Depth Anything 3 network", "AnyViewEstimator", "anydepth geometry", "Any-View Geometry"),
    "vda": ("a Video Depth Anything model (temporal, for clips)", "VideoDepthEstimator", "anydepth video",
            "Estimate Video Depth"),
}


def estimator_family(net: object) -> str | None:
    """``"image"``, ``"da3"`` or ``"vda"``: the estimator family of a built network (``None``: not one of ours).

    Example:
        >>> from anydepth.models import ArchConfig, ModelConfig
        >>> estimator_family(create_model(ModelConfig(ArchConfig(32, 4, 2, 8, (8, 8, 8, 8)), (0, 1, 2, 3)))), estimator_family("x")
        ('image', None)
    """
    if isinstance(net, VideoDepthAnything):
        return "vda"
    if isinstance(net, (DepthAnything3, NestedDepthAnything3)):
        return "da3"
    if isinstance(net, DepthAnything):
        return "image"
    return None


def wrong_family_message(what: str, got: str | None, wanted: str) -> str:
    """``what`` (a name) is not a network the ``wanted`` estimator runs: say what it is and which door runs it."""
    want = ESTIMATOR_FAMILIES[wanted][0].split(" (")[0]
    if got is None:
        return f"{what} is not {want}: pass a catalogue name, a checkpoint path or a built network of that family"
    kind, cls, cli, node = ESTIMATOR_FAMILIES[got]
    return f"{what} is {kind}, not {want}; use anydepth.{cls} (Python), `{cli}` (CLI) or {node} (ComfyUI)"


def load_network(model: str | os.PathLike | torch.nn.Module, estimator: str, *, dtype: torch.dtype,
                 models_dir=None, revision: str | None = None, **checkpoint_options) -> tuple[torch.nn.Module, str]:
    """The network the ``estimator`` family (``"image"``, ``"da3"``, ``"vda"``) runs, and its display name.

    A built network is adopted (cast to ``dtype`` in place, eval mode); a catalogue name or path is loaded on
    the CPU through :func:`load_model` (``checkpoint_options``: ``family`` / ``kind`` / ``max_depth`` overrides).
    A catalogue name of another family is refused before anything is downloaded, and a network of another
    family with a message naming the estimator, command and node that run it.

    Raises:
        ValueError: the model belongs to another estimator (or is not a depth network).
    """
    what = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    if isinstance(model, str) and model in VARIANTS:
        listed = {"da3": "da3", "vda": "vda"}.get(VARIANTS[model].family, "image")
        if listed != estimator:
            raise ValueError(wrong_family_message(what, listed, estimator))
    net = model if isinstance(model, torch.nn.Module) else load_model(
        model, models_dir=models_dir, revision=revision, device="cpu", dtype=dtype, **checkpoint_options)
    got = estimator_family(net)
    if got != estimator:
        raise ValueError(wrong_family_message(what, got, estimator))
    name = getattr(net.config, "name", "") or what
    return net.to(dtype=dtype).eval(), name
