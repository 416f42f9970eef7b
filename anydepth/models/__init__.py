"""The networks, written once in plain torch.

:mod:`anydepth.models.config` holds every architecture config; :func:`create_model` is the one
constructor and picks the network class from the config's type (:data:`NETWORKS`), so no network
module imports another.
"""

from __future__ import annotations

from torch import nn

from .config import (ARCHS, DA3_PRESETS, ArchConfig, DA3Config, ModelConfig, NestedDA3Config, VideoModelConfig, da3_preset,
                     layer_indices, video_config)
from .da3 import DA3Output, DepthAnything3, NestedDepthAnything3
from .depth_anything import DepthAnything
from .video_depth_anything import VideoDepthAnything

__all__ = ["ARCHS", "ArchConfig", "DepthAnything", "ModelConfig", "NETWORKS", "create_model", "layer_indices",
           "DA3_PRESETS", "DA3Config", "DA3Output", "DepthAnything3", "NestedDA3Config", "NestedDepthAnything3", "da3_preset",
           "VideoDepthAnything", "VideoModelConfig", "video_config"]

#: Config type -> the network class it builds.
NETWORKS: dict[type, type[nn.Module]] = {
    ModelConfig: DepthAnything,
    DA3Config: DepthAnything3,
    NestedDA3Config: NestedDepthAnything3,
    VideoModelConfig: VideoDepthAnything,
}


def create_model(config: ModelConfig | DA3Config | NestedDA3Config | VideoModelConfig, *, device=None, dtype=None) -> nn.Module:
    """The only constructor: the network for ``config``, in eval mode, with random weights.

    ``device="meta"`` builds without memory for ``load_state_dict(assign=True)``.

    Example:
        >>> cfg = ModelConfig(ArchConfig(64, 4, 2, 16, (8, 16, 32, 64)), layer_indices("v2", 4))
        >>> type(create_model(cfg, device="meta")).__name__
        'DepthAnything'
    """
    network = next((NETWORKS[t] for t in type(config).__mro__ if t in NETWORKS), None)
    if network is None:
        known = ", ".join(t.__name__ for t in NETWORKS)
        raise TypeError(f"create_model needs one of {known}, got {type(config).__name__}")
    return network(config, device=device, dtype=dtype).eval()
