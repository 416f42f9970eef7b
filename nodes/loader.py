"""Loading depth models for the nodes, with a small cache that survives between runs.

ComfyUI caches node outputs only while the inputs of a node stay the same and the graph keeps it;
this cache keeps the built network across graphs and queue runs, and rebuilds it when the file
changes on disk (size or modification time) or another dtype or memory mode is picked.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management as mm

from anydepth.anyview import AnyViewEstimator
from anydepth.catalog import Variant
from anydepth.estimator import DepthEstimator
from anydepth.models import ModelConfig, VideoModelConfig
from anydepth.video_model import VideoDepthEstimator
from anydepth.weights import build_model, read_checkpoint, resolve_checkpoint

from . import folders
from .model_patcher import ComfyMemory, comfy_dtype

log = logging.getLogger(__name__)

MEMORY_MODES: tuple[str, ...] = ("managed", "offload_after_use")
"""``managed``: ComfyUI loads and evicts the model like any other; ``offload_after_use``: unload it
from the device after every run as well."""

CACHE_SIZE = 2
"""Built models kept between runs (the least recently used beyond this is dropped)."""


@dataclass
class DepthModel:
    """What travels through a ``DEPTH_MODEL`` socket.

    Attributes:
        estimator: a :class:`~anydepth.estimator.DepthEstimator` (V1/V2: batching, dtype, OOM fallback),
            an :class:`~anydepth.anyview.AnyViewEstimator` (Depth Anything 3: any-view depth and cameras) or a
            :class:`~anydepth.video_model.VideoDepthEstimator` (Video Depth Anything: temporally consistent clips).
        memory: the ComfyUI memory bridge that places the network.
        path: the checkpoint file or folder it was read from.
        variant: the catalogue entry, when the file is a known one.
    """

    estimator: DepthEstimator | AnyViewEstimator | VideoDepthEstimator
    memory: ComfyMemory
    path: Path
    variant: Variant | None

    @property
    def license(self) -> str:
        return self.variant.license if self.variant is not None else "unknown (not a catalogue file)"

    @property
    def is_da3(self) -> bool:
        """A Depth Anything 3 model (runs in Any-View Geometry, not in Estimate Depth)."""
        return isinstance(self.estimator, AnyViewEstimator)

    @property
    def is_video(self) -> bool:
        """A Video Depth Anything model (runs in Estimate Video Depth only)."""
        return isinstance(self.estimator, VideoDepthEstimator)

    def require_depth_estimator(self, node: str) -> DepthEstimator:
        """The V1/V2 estimator, or a clear error naming ``node`` for a DA3 or VDA model."""
        if self.is_video:
            raise ValueError(f"{node}: {self.path.name} is a Video Depth Anything model (temporal: it needs the frames "
                             "of a clip together); connect it to Estimate Video Depth, or load a v1-/v2- model here")
        if self.is_da3:
            raise ValueError(f"{node}: {self.path.name} is a Depth Anything 3 model; {node} runs Depth Anything V1/V2 "
                             "models. Connect it to Any-View Geometry (its DEPTH output works with Depth to Image, Save "
                             "Depth and Apply Depth ControlNet), or load a v1-/v2- model here")
        return self.estimator

    def require_anyview_estimator(self, node: str) -> AnyViewEstimator:
        """The DA3 estimator, or a clear error naming ``node`` for a V1/V2 model."""
        if not self.is_da3:
            what = "Video Depth Anything" if self.is_video else "Depth Anything V1/V2"
            raise ValueError(f"{node}: {self.path.name} is a {what} model; {node} needs a Depth Anything 3 "
                             "model (a DA3 model.safetensors in models/depthanything3). Use Estimate Depth for V1/V2 models")
        return self.estimator

    def __repr__(self) -> str:  # shown in ComfyUI's error reports
        cfg = self.estimator.model.config
        kind = "Depth Anything 3" if self.is_da3 else cfg.kind
        return f"DepthModel({self.path.name}, {kind}, {self.estimator.dtype}, license {self.license})"


_cache: OrderedDict[tuple, DepthModel] = OrderedDict()
_lock = threading.Lock()


def _file_state(path: Path) -> tuple:
    """Size and mtime of the weights (of every file in a folder checkpoint)."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return tuple((p.name, st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])


def fingerprint(option: str) -> tuple:
    """Changes whenever the model behind a dropdown entry changes on disk (ComfyUI's IS_CHANGED)."""
    try:
        target, variant = folders.resolve(option)
    except FileNotFoundError:
        return (option, "missing")
    if isinstance(target, str):  # catalogue name: the local copy, if any
        try:
            target = resolve_checkpoint(target, models_dir=folders.model_dirs(variant), download_missing=False).path
        except FileNotFoundError:
            return (option, "not downloaded")
    return (option, _file_state(Path(target)))


def load(option: str, dtype: str = "auto", memory: str = "managed") -> DepthModel:
    """Build (or take from the cache) the depth model for a dropdown entry.

    Catalogue entries are downloaded into ``models/depthanything`` (DA3: ``models/depthanything3``) on first use; the license is
    logged. The network is built on ComfyUI's offload device; ComfyUI moves it when it runs.
    """
    if memory not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {memory!r}; expected one of {', '.join(MEMORY_MODES)}")
    target, variant = folders.resolve(option)
    resolved = resolve_checkpoint(target, models_dir=folders.model_dirs(variant))
    variant = variant or resolved.variant
    load_device = mm.get_torch_device()
    torch_dtype = comfy_dtype(dtype, load_device)
    key = (str(resolved.path.resolve()), _file_state(resolved.path), str(torch_dtype), memory)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        ckpt = read_checkpoint(resolved.path, variant=variant)
        net = build_model(ckpt, device=mm.unet_offload_device(), dtype=torch_dtype)
        bridge = ComfyMemory(net, offload_after_use=memory == "offload_after_use", load_device=load_device)
        if isinstance(ckpt.config, ModelConfig):
            estimator = DepthEstimator(net, memory=bridge, dtype=torch_dtype, output_device=mm.intermediate_device())
        elif isinstance(ckpt.config, VideoModelConfig):  # Video Depth Anything: windows or streaming over clips
            estimator = VideoDepthEstimator(net, memory=bridge, dtype=torch_dtype, output_device=mm.intermediate_device())
        else:  # Depth Anything 3 (any-view, mono, metric or nested)
            estimator = AnyViewEstimator(net, memory=bridge, dtype=torch_dtype, output_device=mm.intermediate_device())
        model = DepthModel(estimator, bridge, resolved.path, variant)
        log.info("anydepth: loaded %r (%r, %s, license %s)", os.fspath(resolved.path), model, torch_dtype, model.license)
        # A file that changed on disk replaces its old build instead of waiting for eviction.
        for old in [k for k in _cache if k[0] == key[0] and k[2:] == key[2:]]:
            _cache.pop(old).memory.unload()
        _cache[key] = model
        while len(_cache) > CACHE_SIZE:
            _, evicted = _cache.popitem(last=False)
            evicted.memory.unload()
        return model


def clear_cache() -> None:
    """Drop every cached model (and unload it from the device)."""
    with _lock:
        while _cache:
            _cache.popitem()[1].memory.unload()
