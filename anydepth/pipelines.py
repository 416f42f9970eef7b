"""Depth control images for diffusers pipelines, and sharing the GPU with them.

Depth ControlNets (SD1.5, SDXL, Flux) and the Flux depth model (FLUX.1-Depth-dev) are conditioned on
a grey image, near = white, at the size the pipeline generates. This module turns raw depth (an
:class:`~anydepth.estimator.DepthResult` or ``[B, H, W]`` maps) into exactly that input:

* :func:`depth_to_control` — fit to the requested ``height`` × ``width`` snapped to the pipeline's
  multiple (:mod:`anydepth.fit`: pad, resize or centre crop), normalise (any :data:`~anydepth.normalize.NORMALIZE_MODES` mode),
  and return a ``[B, 3, H, W]`` tensor in ``0..1`` or a list of RGB PIL images;
* :func:`control_image` — the same, estimating the depth first;
* :func:`control_inputs` — the keyword arguments that hand the result to a pipeline
  (``image=`` or ``control_image=``, plus ``height`` and ``width``), checked against its multiple and
  in the value range that pipeline expects for tensors (Flux takes ``-1..1``, SD ``0..1``);
* :func:`pipeline_multiple` — 8 for SD1.5/SDXL, 16 for Flux and SD3, read from the pipeline;
* :func:`offload` — move the depth model off the accelerator now (it comes back on the next call);
* :func:`load_depth_pipeline` — a depth-conditioned pipeline from a hub id or folder, plus an
  optional ControlNet, picking the right pipeline class.

diffusers itself is imported lazily: only :func:`load_depth_pipeline` needs it.

Example:
    >>> est = DepthEstimator("v2-small", memory="offload")  # leaves the GPU to the pipeline between calls
    >>> pipe = load_depth_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5",
    ...                            "lllyasviel/control_v11f1p_sd15_depth", offload="model")
    >>> control = control_image(est, "room.jpg", pipe=pipe, height=512)  # width from the photo's aspect
    >>> image = pipe("a cosy reading room", num_inference_steps=20, **control_inputs(pipe, control)).images[0]
    >>> image.size
    (696, 512)
"""

from __future__ import annotations

import inspect
import math
import os
import re
from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from .estimator import DepthEstimator, DepthResult
from .fit import FIT_MODES, check_fit_mode, fit_to_size
from .kinds import check_kind
from .memory import empty_cache
from .normalize import NORMALIZE_MODES, normalize_depth, to_pil

__all__ = [
    "FIT_MODES",
    "OUTPUTS",
    "control_image",
    "control_inputs",
    "control_size",
    "default_pixels",
    "depth_to_control",
    "load_depth_pipeline",
    "offload",
    "pipeline_multiple",
    "takes_raw_tensors",
]

Output = Literal["pt", "pil"]
OUTPUTS: tuple[str, ...] = ("pt", "pil")
"""``"pt"``: one ``[B, 3, H, W]`` float32 tensor in 0..1; ``"pil"``: a list of RGB PIL images."""

DepthInput = DepthResult | Tensor | Sequence[Tensor]


# --------------------------------------------------------------------------------------------------
# sizes


def pipeline_multiple(pipe: Any) -> int:
    """Pixel multiple that a pipeline's ``height`` and ``width`` must have.

    8 for SD1.5 and SDXL (VAE factor 8); 16 for Flux (VAE factor 8 × 2×2 latent packing) and SD3
    (VAE factor 8 × transformer patch 2). Read from the pipeline itself: the largest of its
    ``vae_scale_factor`` × transformer ``patch_size`` and the ``vae_scale_factor`` of its image
    processors (Flux pipelines configure theirs with the packing included).

    Args:
        pipe: a diffusers pipeline.

    Returns:
        The multiple, a positive int.

    Raises:
        TypeError: ``pipe`` has no ``vae_scale_factor`` (not a diffusers image pipeline).
    """
    vsf = getattr(pipe, "vae_scale_factor", None)
    if not isinstance(vsf, int) or vsf < 1:
        raise TypeError(f"pipe must be a diffusers image pipeline with a vae_scale_factor, got {type(pipe).__name__}; "
                        "pass multiple= (8 for SD1.5/SDXL, 16 for Flux/SD3) instead")
    candidates = [vsf]
    transformer = getattr(pipe, "transformer", None)
    patch = getattr(pipe, "patch_size", None) or getattr(getattr(transformer, "config", None), "patch_size", None)
    if isinstance(patch, int) and patch > 0:
        candidates.append(vsf * patch)
    for name in ("image_processor", "control_image_processor"):
        factor = getattr(getattr(getattr(pipe, name, None), "config", None), "vae_scale_factor", None)
        if isinstance(factor, int) and factor > 0:
            candidates.append(factor)
    return max(candidates)


def default_pixels(pipe: Any) -> int:
    """The pixel area a pipeline generates by default: 512² for SD1.5, 1024² for SDXL and Flux.

    From ``default_sample_size`` (SDXL, Flux, SD3) or the UNet's ``sample_size``, times
    ``vae_scale_factor``, squared.
    """
    vsf = getattr(pipe, "vae_scale_factor", None) or 8
    side = getattr(pipe, "default_sample_size", None)
    if side is None:
        unet = getattr(pipe, "unet", None)
        side = getattr(getattr(unet, "config", None), "sample_size", None)
    if isinstance(side, (tuple, list)):
        side = side[0]
    if not isinstance(side, int) or side < 1:
        return 512 * 512
    return (side * vsf) ** 2


def _check_multiple(multiple: int) -> int:
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
        raise ValueError(f"multiple must be a positive integer (8 for SD1.5/SDXL, 16 for Flux/SD3), got {multiple!r}")
    return multiple


def _floor_to(value: int, multiple: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < multiple:
        raise ValueError(f"{name}={value} is smaller than the pipeline's multiple {multiple}; "
                         f"pass a {name} of at least {multiple}")
    return value - value % multiple


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def control_size(
    source: tuple[int, int],
    *,
    multiple: int = 8,
    height: int | None = None,
    width: int | None = None,
    pixels: int | None = None,
) -> tuple[int, int]:
    """Control image size ``(height, width)`` for a map of size ``source``, a multiple of ``multiple``.

    - ``height`` and ``width`` given: each is floored to the multiple (as diffusers does).
    - one of them given: it is floored; the other keeps the source aspect ratio, rounded to the
      nearest multiple.
    - neither, ``pixels`` given: about ``pixels`` in area with the source aspect ratio (each side to
      the nearest multiple).
    - nothing given: the source size floored to the multiple.

    Args:
        source: ``(height, width)`` of the depth map.
        multiple: pixel multiple of the pipeline (:func:`pipeline_multiple`).
        height, width: requested output size in pixels.
        pixels: requested area when neither side is given (e.g. :func:`default_pixels`).

    Returns:
        ``(height, width)``, both positive multiples of ``multiple``.

    Example:
        >>> control_size((480, 640), multiple=16, height=500)
        (496, 656)
        >>> control_size((480, 640), multiple=8, pixels=512 * 512)
        (440, 592)
    """
    multiple = _check_multiple(multiple)
    sh, sw = int(source[0]), int(source[1])
    if sh < 1 or sw < 1:
        raise ValueError(f"source size must be positive, got {source}")
    if height is not None and width is not None:
        return _floor_to(height, multiple, "height"), _floor_to(width, multiple, "width")
    if height is not None:
        h = _floor_to(height, multiple, "height")
        return h, _round_to(h * sw / sh, multiple)
    if width is not None:
        w = _floor_to(width, multiple, "width")
        return _round_to(w * sh / sw, multiple), w
    if pixels is not None:
        if not isinstance(pixels, int) or pixels < multiple * multiple:
            raise ValueError(f"pixels must be an int >= {multiple * multiple}, got {pixels!r}")
        scale = math.sqrt(pixels / (sh * sw))
        return _round_to(sh * scale, multiple), _round_to(sw * scale, multiple)
    return _floor_to(sh, multiple, "source height"), _floor_to(sw, multiple, "source width")


# --------------------------------------------------------------------------------------------------
# control images


def _as_maps(depth: DepthInput, kind: str | None) -> tuple[list[Tensor], str]:
    """Per-image ``[H, W]`` float maps and their kind, from any accepted depth input."""
    if isinstance(depth, DepthResult):
        if kind is not None and kind != depth.kind:
            raise ValueError(f"kind={kind!r} contradicts the DepthResult, which holds {depth.kind!r}; leave kind out")
        return depth.maps(), depth.kind
    if kind is None:
        raise ValueError("kind is required for raw depth tensors: 'disparity' (V1/V2 relative), "
                         "'metric_depth' (metres) or 'depth' (DA3); or pass the DepthResult itself")
    kind = check_kind(kind)
    if isinstance(depth, Tensor):
        if depth.ndim == 2:
            depth = depth[None]
        if depth.ndim != 3:
            raise ValueError(f"depth must have shape (B,H,W) or (H,W), got {tuple(depth.shape)}")
        maps = list(depth.unbind(0))
    elif isinstance(depth, (list, tuple)) and depth:
        maps = []
        for i, d in enumerate(depth):
            if not isinstance(d, Tensor) or d.ndim != 2:
                what = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
                raise ValueError(f"depth[{i}] must be an (H,W) tensor, got {what}")
            maps.append(d)
    else:
        raise TypeError(f"depth must be a DepthResult, a (B,H,W) tensor or a list of (H,W) tensors, "
                        f"got {type(depth).__name__}")
    for i, d in enumerate(maps):
        if not d.is_floating_point():
            raise TypeError(f"depth[{i}] has dtype {d.dtype}; raw depth must be floating point")
    return maps, kind


def depth_to_control(
    depth: DepthInput,
    kind: str | None = None,
    *,
    pipe: Any = None,
    multiple: int | None = None,
    height: int | None = None,
    width: int | None = None,
    pixels: int | None = None,
    fit: str = "crop",
    mode: str = "v2_style",
    output: str = "pt",
    scope: str = "image",
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
    near: float | None = None,
    far: float | None = None,
    invert: bool = False,
    gamma: float = 1.0,
) -> Tensor | list:
    """Turn raw depth into the control image a depth pipeline expects.

    The raw maps are first fitted to the control size (:func:`control_size` with the pipeline's
    multiple, then :func:`anydepth.fit.fit_to_size`), then normalised together with
    :func:`~anydepth.normalize.normalize_depth` (near = white), so percentiles and min/max describe
    exactly what the pipeline sees. Metric metres are normalised with the metric modes.

    Args:
        depth: a :class:`~anydepth.estimator.DepthResult`, raw ``[B, H, W]`` / ``[H, W]`` maps, or a
            list of ``[H, W]`` maps of any sizes. Not modified.
        kind: what raw tensors hold (``"disparity"``, ``"metric_depth"``, ``"depth"``); taken from a
            DepthResult.
        pipe: the diffusers pipeline; gives the multiple (:func:`pipeline_multiple`).
        multiple: the pixel multiple when no ``pipe`` is given (default 8).
        height, width, pixels: requested size (see :func:`control_size`); default: each map's size
            floored to the multiple.
        fit: one of :data:`~anydepth.fit.FIT_MODES`: ``"crop"`` (centre crop to the target aspect, as
            ComfyUI does with a hint), ``"resize"`` (stretch) or ``"pad"`` (letterbox; the border is missing
            depth, black = far in the control image).
        mode: a :data:`~anydepth.normalize.NORMALIZE_MODES` mode.
        output: ``"pt"`` (tensor) or ``"pil"`` (RGB images).
        scope, low_percentile, high_percentile, near, far, invert, gamma: as in
            :func:`~anydepth.normalize.normalize_depth`.

    Returns:
        ``"pt"``: a float32 ``[B, 3, H, W]`` tensor in 0..1 (grey repeated; on the depth's device);
        ``"pil"``: a list of ``B`` RGB PIL images. ``H`` and ``W`` are multiples of the pipeline's
        multiple.

    Raises:
        ValueError: maps of different sizes with ``output="pt"`` and no size requested (one tensor
            needs one size); a metric mode for relative depth; bad sizes or options.

    Shape:
        - depth: :math:`(B, H_i, W_i)`
        - output: :math:`(B, 3, H, W)`

    Example:
        >>> x = depth_to_control(torch.rand(2, 30, 40), "disparity", multiple=16, height=64)
        >>> tuple(x.shape), float(x.min()) >= 0.0, float(x.max()) <= 1.0
        ((2, 3, 64, 80), True, True)
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"mode must be one of {', '.join(NORMALIZE_MODES)}, got {mode!r}")
    fit = check_fit_mode(fit)
    if pipe is not None:
        found = pipeline_multiple(pipe)
        if multiple is not None and multiple % found:
            raise ValueError(f"multiple={multiple} does not fit {type(pipe).__name__}, which needs multiples of {found}")
        multiple = multiple or found
    multiple = _check_multiple(8 if multiple is None else multiple)
    maps, kind = _as_maps(depth, kind)
    sizes = [control_size(tuple(d.shape), multiple=multiple, height=height, width=width, pixels=pixels) for d in maps]
    if output == "pt" and len(set(sizes)) > 1:
        raise ValueError(f"the depth maps would give control images of different sizes {sorted(set(sizes))}; "
                         "pass height/width so they share one size, or output='pil'")

    # Fit raw depth, batched per (source size, target size) group.
    fitted: list[Tensor | None] = [None] * len(maps)
    groups: dict[tuple, list[int]] = {}
    for i, (d, s) in enumerate(zip(maps, sizes)):
        groups.setdefault((tuple(d.shape), s), []).append(i)
    for (_, target), members in groups.items():
        x = torch.stack([maps[i] for i in members]).float()[:, None]  # [b, 1, h, w]
        # A padded border is NaN (missing depth): left out of the statistics, black (far) after normalising.
        y = fit_to_size(x, target, fit, pad_value=math.nan)[:, 0]  # [b, H, W]
        for i, m in zip(members, y.unbind(0)):
            fitted[i] = m

    opts = dict(low_percentile=low_percentile, high_percentile=high_percentile, near=near, far=far,
                invert=invert, gamma=gamma)
    if len(set(sizes)) == 1:
        control = normalize_depth(torch.stack(fitted), kind, mode, scope=scope, **opts)  # [B, H, W]
        if output == "pt":
            return control[:, None].expand(-1, 3, -1, -1).contiguous()
        return to_pil(control, "RGB")
    if scope == "batch":  # one mapping over maps of different sizes: normalise them as one long image
        flat = torch.cat([f.reshape(1, 1, -1) for f in fitted], dim=-1)
        joint = normalize_depth(flat, kind, mode, scope="image", **opts)[0, 0]
        parts = joint.split([f.numel() for f in fitted])
        return [to_pil(p.reshape(f.shape)[None], "RGB")[0] for p, f in zip(parts, fitted)]
    return [to_pil(normalize_depth(f[None], kind, mode, scope=scope, **opts), "RGB")[0] for f in fitted]


def control_image(
    estimator: DepthEstimator,
    images: Any,
    *,
    pipe: Any = None,
    **kwargs: Any,
) -> Tensor | list:
    """Estimate depth for ``images`` and return the pipeline's control image.

    Equivalent to ``depth_to_control(estimator.estimate(images), pipe=pipe, **kwargs)``; with an
    estimator built with ``memory="offload"`` the depth model leaves the accelerator before this
    returns, so the pipeline gets the memory back.

    Args:
        estimator: a :class:`~anydepth.estimator.DepthEstimator`.
        images: anything :meth:`DepthEstimator.estimate` accepts (paths, PIL, arrays, tensors, lists).
        pipe: the diffusers pipeline (gives the multiple).
        **kwargs: options of :func:`depth_to_control` (``height``, ``width``, ``mode``, ``output`` ...).

    Returns:
        See :func:`depth_to_control`.
    """
    if not isinstance(estimator, DepthEstimator):
        raise TypeError(f"estimator must be a DepthEstimator, got {type(estimator).__name__}; "
                        "for precomputed depth use depth_to_control")
    return depth_to_control(estimator.estimate(images), pipe=pipe, **kwargs)


def _control_hw(control: Any) -> tuple[int, int]:
    if isinstance(control, Tensor):
        if control.ndim != 4 or control.shape[1] != 3:
            raise ValueError(f"control must be a (B,3,H,W) tensor, got shape {tuple(control.shape)}")
        return int(control.shape[-2]), int(control.shape[-1])
    images = control if isinstance(control, (list, tuple)) else [control]
    sizes = {getattr(im, "size", None) for im in images}
    if not images or None in sizes:
        raise TypeError(f"control must be a (B,3,H,W) tensor or PIL images, got {type(control).__name__}")
    if len(sizes) > 1:
        raise ValueError(f"control images have different sizes {sorted(sizes)}; a pipeline call needs one size")
    w, h = sizes.pop()
    return h, w


# Pipelines whose control tensors skip the image processor and go to the VAE as they are, so they
# must already be in the VAE's -1..1 range (PIL inputs are converted by the pipeline). diffusers 0.42:
# prepare_image() / prepare_control_image() start with ``if isinstance(image, torch.Tensor): pass``.
_RAW_TENSOR_PIPELINES: tuple[str, ...] = (
    "Flux", "StableDiffusion3ControlNet", "SanaControlNet", "QwenImageControlNet", "CogView4Control",
    "HunyuanDiTControlNet", "ZImageControlNet",
)
_PASSTHROUGH = re.compile(r"isinstance\(image,\s*torch\.Tensor\):\s*pass\b")


def takes_raw_tensors(pipe: Any) -> bool:
    """True when ``pipe`` hands a tensor control image to its VAE unchanged (expects -1..1).

    Flux (Control and ControlNet), SD3 ControlNet, Sana, QwenImage, CogView4, HunyuanDiT and Z-Image
    control pipelines do this; SD1.5/SDXL ControlNet pipelines take 0..1 tensors. Known classes are
    listed in ``_RAW_TENSOR_PIPELINES``; others are recognised from the source of ``prepare_image``.
    """
    name = type(pipe).__name__
    if name.startswith(_RAW_TENSOR_PIPELINES):
        return True
    for method in ("prepare_image", "prepare_control_image"):
        fn = getattr(type(pipe), method, None)
        if fn is None:
            continue
        try:
            if _PASSTHROUGH.search(inspect.getsource(fn)):
                return True
        except (OSError, TypeError):
            continue
    return False


def control_inputs(pipe: Any, control: Tensor | list) -> dict[str, Any]:
    """Keyword arguments that pass ``control`` to ``pipe`` at its own size and in its own range.

    ``control_image=`` for pipelines that take one (ControlNet img2img/inpaint, SD3 ControlNet, Flux
    Control, Flux ControlNet), otherwise ``image=`` (SD1.5 / SDXL ControlNet); plus ``height`` and
    ``width`` equal to the control image's, which must be multiples of :func:`pipeline_multiple`.

    A ``0..1`` tensor is given as ``2 x - 1`` to pipelines that feed tensors to their VAE unchanged
    (:func:`takes_raw_tensors`: Flux, SD3 ...), which expect ``-1..1`` there; passing the ``0..1``
    tensor to them directly would shift the depth map to the upper half of the range.

    Args:
        pipe: the diffusers pipeline.
        control: a ``[B, 3, H, W]`` tensor in 0..1 or PIL image(s), e.g. from :func:`depth_to_control`.

    Returns:
        ``{"image" or "control_image": control, "height": H, "width": W}``.

    Raises:
        ValueError: the size is not a multiple of the pipeline's (resize with :func:`depth_to_control`),
            or tensor values outside 0..1.
        TypeError: the pipeline takes no control image.
    """
    params = inspect.signature(type(pipe).__call__).parameters
    key = "control_image" if "control_image" in params else "image" if "image" in params else None
    if key is None:
        raise TypeError(f"{type(pipe).__name__} takes no control image (neither image= nor control_image=)")
    h, w = _control_hw(control)
    m = pipeline_multiple(pipe)
    if h % m or w % m:
        raise ValueError(f"control image is {w}×{h}, but {type(pipe).__name__} needs multiples of {m}; "
                         f"make it with depth_to_control(..., pipe=pipe) (or use {w - w % m}×{h - h % m})")
    if isinstance(control, Tensor):
        lo, hi = float(control.min()), float(control.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"control tensor values are in {lo:.3g}..{hi:.3g}; expected 0..1 (depth_to_control output)")
        if takes_raw_tensors(pipe):
            control = control * 2.0 - 1.0
    out: dict[str, Any] = {key: control}
    if "height" in params:
        out["height"] = h
    if "width" in params:
        out["width"] = w
    return out


# --------------------------------------------------------------------------------------------------
# GPU sharing


def offload(estimator: DepthEstimator, device: torch.device | str = "cpu") -> None:
    """Move the depth model to ``device`` (the CPU) now and free the accelerator's cache.

    The estimator moves it back to its compute device on its next call, whatever its memory policy.
    With ``DepthEstimator(..., memory="offload")`` this happens after every call already; use this
    for an estimator built with ``memory="keep"`` before a long denoising loop.
    """
    if not isinstance(estimator, DepthEstimator):
        raise TypeError(f"estimator must be a DepthEstimator, got {type(estimator).__name__}")
    estimator.model.to(device)
    empty_cache(estimator.policy.device)


# --------------------------------------------------------------------------------------------------
# loading pipelines

# (base pipeline class prefix, pipeline class with a ControlNet, ControlNet model class), most specific first
_CONTROLNET_PIPELINES: tuple[tuple[str, str, str], ...] = (
    ("StableDiffusionXL", "StableDiffusionXLControlNetPipeline", "ControlNetModel"),
    ("Flux", "FluxControlNetPipeline", "FluxControlNetModel"),
    ("StableDiffusion", "StableDiffusionControlNetPipeline", "ControlNetModel"),
)
# pipelines that take a depth image without a separate ControlNet (the control model is built in)
_BUILT_IN_CONTROL = ("StableDiffusionControlNetPipeline", "StableDiffusionXLControlNetPipeline",
                     "FluxControlNetPipeline", "FluxControlPipeline")

PIPELINE_DTYPES = ("auto", "fp32", "fp16", "bf16")


def _pipeline_dtype(dtype: str | torch.dtype, device: torch.device, class_name: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype in table:
        return table[dtype]
    if dtype != "auto":
        raise ValueError(f"dtype must be one of {', '.join(PIPELINE_DTYPES)} or a torch dtype, got {dtype!r}")
    if device.type == "cuda":
        return torch.bfloat16 if class_name.startswith("Flux") else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def load_depth_pipeline(
    pipeline: str | os.PathLike,
    controlnet: str | os.PathLike | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: str | torch.dtype = "auto",
    offload: str = "none",
    revision: str | None = None,
    variant: str | None = None,
) -> Any:
    """Load a depth-conditioned diffusers pipeline from a hub id or a local folder.

    The pipeline class is chosen from the pipeline's ``model_index.json`` and the ControlNet's
    ``config.json``:

    ====================================  ===============  =======================================
    ``pipeline``                          ``controlnet``   loaded as
    ====================================  ===============  =======================================
    SD1.5 (``StableDiffusionPipeline``)   ControlNetModel  ``StableDiffusionControlNetPipeline``
    SDXL (``StableDiffusionXLPipeline``)  ControlNetModel  ``StableDiffusionXLControlNetPipeline``
    Flux (``FluxPipeline``)               FluxControlNet   ``FluxControlNetPipeline``
    FLUX.1-Depth-dev                      —                ``FluxControlPipeline``
    a saved ``*ControlNetPipeline``       —                its own class
    ====================================  ===============  =======================================

    Args:
        pipeline: hub id (``"stable-diffusion-v1-5/stable-diffusion-v1-5"``) or folder.
        controlnet: hub id or folder of a depth ControlNet, when the pipeline has none built in.
        device: where to run (default CUDA, then MPS, then CPU). Ignored by ``offload`` modes, which
            place the models themselves.
        dtype: ``"auto"`` (bf16 for Flux and fp16 for SD on CUDA; fp16 on MPS; fp32 on CPU),
            ``"fp32"``, ``"fp16"``, ``"bf16"`` or a torch dtype.
        offload: ``"none"`` (all on ``device``), ``"model"`` (``enable_model_cpu_offload``: one model
            on the GPU at a time) or ``"sequential"`` (``enable_sequential_cpu_offload``: least memory).
        revision, variant: hub revision pin and weight variant (``"fp16"``) passed to diffusers.

    Returns:
        The pipeline, with its ``.vae_scale_factor`` etc. (see :func:`pipeline_multiple`).

    Raises:
        ValueError: a base pipeline without a ControlNet, or an unsupported combination.
    """
    import diffusers

    from .memory import default_device

    if offload not in ("none", "model", "sequential"):
        raise ValueError(f"offload must be none, model or sequential, got {offload!r}")
    device = torch.device(device) if device is not None else default_device()
    pipeline = os.fspath(pipeline)
    hub = dict(revision=revision) if revision else {}
    config = diffusers.DiffusionPipeline.load_config(pipeline, **hub)
    base = config.get("_class_name", "")
    cn_model = None
    if controlnet is not None:
        cn_config = diffusers.ControlNetModel.load_config(os.fspath(controlnet))
        cn_class = cn_config.get("_class_name", "")
        match = next((row for row in _CONTROLNET_PIPELINES if base.startswith(row[0])), None)
        if match is None:
            raise ValueError(f"{pipeline} is a {base or 'pipeline without _class_name'}; depth ControlNets are "
                             "supported for StableDiffusion, StableDiffusionXL and Flux pipelines")
        _, pipe_class, model_class = match
        if cn_class and cn_class != model_class:
            raise ValueError(f"{controlnet} is a {cn_class}, but a {base} needs a {model_class} "
                             "(a ControlNet trained for that base model)")
        torch_dtype = _pipeline_dtype(dtype, device, pipe_class)
        cn_model = getattr(diffusers, model_class).from_pretrained(os.fspath(controlnet),
                                                                   **_dtype_kwarg(diffusers, torch_dtype))
    else:
        pipe_class = base
        if base == "FluxPipeline" and _is_flux_control(diffusers, pipeline, hub):
            pipe_class = "FluxControlPipeline"
        if pipe_class not in _BUILT_IN_CONTROL:
            raise ValueError(f"{pipeline} is a {base or 'pipeline'} without a depth control model; pass a depth "
                             "ControlNet (e.g. lllyasviel/control_v11f1p_sd15_depth for SD1.5, "
                             "diffusers/controlnet-depth-sdxl-1.0 for SDXL) or use black-forest-labs/FLUX.1-Depth-dev")
        torch_dtype = _pipeline_dtype(dtype, device, pipe_class)
    kwargs: dict[str, Any] = dict(_dtype_kwarg(diffusers, torch_dtype), **hub)
    if variant:
        kwargs["variant"] = variant
    if cn_model is not None:
        kwargs["controlnet"] = cn_model
    pipe = getattr(diffusers, pipe_class).from_pretrained(pipeline, **kwargs)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def _dtype_kwarg(diffusers: Any, dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``dtype=`` where diffusers takes it (it deprecated ``torch_dtype`` in 2026), else ``torch_dtype=``."""
    takes_dtype = hasattr(getattr(getattr(diffusers, "utils", None), "deprecation_utils", None), "_resolve_dtype")
    return {"dtype" if takes_dtype else "torch_dtype": dtype}


def _is_flux_control(diffusers: Any, pipeline: str, hub: dict) -> bool:
    """FLUX.1-Depth/Canny-dev: the transformer takes the control latents concatenated (in = 2 × out)."""
    try:
        cfg = diffusers.FluxTransformer2DModel.load_config(pipeline, subfolder="transformer", **hub)
    except (OSError, ValueError):
        return False
    out = cfg.get("out_channels")
    return bool(out) and cfg.get("in_channels") == 2 * out
