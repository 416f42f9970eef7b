"""anydepth: Depth Anything for ComfyUI, diffusers and plain Python.

Example:
    >>> from anydepth import DepthEstimator, normalize_depth
    >>> result = DepthEstimator("v2-small").estimate("photo.jpg")  # downloaded on first use
    >>> result.kind, result.units
    ('disparity', 'relative')
    >>> control = normalize_depth(result.depth, result.kind, "v2_style")  # near = 1, far = 0
    >>> control.shape  # [images, height, width], at the photo's own size
    torch.Size([1, 45, 61])
"""

from .catalog import DEFAULT_MODEL, VARIANTS, Variant, get_variant
from .estimator import DepthEstimator, DepthResult
from .kinds import DEPTH, DISPARITY, METRIC_DEPTH
from .memory import InsufficientMemoryError, KeepOnDevice, MemoryPolicy, OffloadAfterUse
from .models import DepthAnything, ModelConfig, create_model
from .normalize import COLORMAPS, NORMALIZE_MODES, apply_colormap, normalize_depth, to_image, to_pil, to_uint8, to_uint16
from .weights import CheckpointError, WeightsNotFoundError, load_model, resolve_checkpoint
from .align import align_scale_shift, align_to_points, evaluate_depth, fit_scale_shift, gradient_matching_loss, ssi_loss
from .export import ControlImageError, load_depth, save_control_image, save_depth
from .batch import BatchReport, OutputSpec, run_batch
from .video import estimate_video, flicker, normalize_clip, stabilize_depth
from .anyview import AnyViewEstimator, GeometryResult
from .models.da3 import DepthAnything3, NestedDepthAnything3
from .video_model import VideoDepthEstimator
from .models import VideoDepthAnything

__version__ = "0.1.0"

__all__ = [
    "COLORMAPS", "DEFAULT_MODEL", "DEPTH", "DISPARITY", "METRIC_DEPTH", "NORMALIZE_MODES", "VARIANTS",
    "CheckpointError", "DepthAnything", "DepthEstimator", "DepthResult", "KeepOnDevice", "MemoryPolicy",
    "ModelConfig", "OffloadAfterUse", "Variant", "WeightsNotFoundError", "apply_colormap", "create_model",
    "get_variant", "load_model", "normalize_depth", "resolve_checkpoint", "to_image", "to_pil", "to_uint8", "to_uint16",
    # high resolution, video, alignment, export
    "align_scale_shift", "align_to_points", "estimate_video", "evaluate_depth", "fit_scale_shift", "flicker",
    "gradient_matching_loss", "load_depth", "normalize_clip", "save_depth", "ssi_loss", "stabilize_depth",
    "ControlImageError", "InsufficientMemoryError", "save_control_image",
    # whole folders and datasets: the one job engine behind `anydepth estimate` / `batch`
    "BatchReport", "OutputSpec", "run_batch",
    # Depth Anything 3 (any-view geometry; point clouds in anydepth.geometry)
    "AnyViewEstimator", "DepthAnything3", "GeometryResult", "NestedDepthAnything3",
    # Video Depth Anything (temporally consistent video depth; `anydepth video`)
    "VideoDepthAnything", "VideoDepthEstimator",
]
