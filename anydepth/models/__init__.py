"""The networks, written once in plain torch."""

from .depth_anything import ARCHS, ArchConfig, DepthAnything, ModelConfig, create_model, layer_indices

__all__ = ["ARCHS", "ArchConfig", "DepthAnything", "ModelConfig", "create_model", "layer_indices"]
