"""The networks, written once in plain torch."""

from .da3 import DA3_PRESETS, DA3Config, DA3Output, DepthAnything3, NestedDA3Config, NestedDepthAnything3, da3_preset
from .depth_anything import ARCHS, ArchConfig, DepthAnything, ModelConfig, create_model, layer_indices

__all__ = ["ARCHS", "ArchConfig", "DepthAnything", "ModelConfig", "create_model", "layer_indices",
           "DA3_PRESETS", "DA3Config", "DA3Output", "DepthAnything3", "NestedDA3Config", "NestedDepthAnything3", "da3_preset"]
