"""DepthEstimator: load a model once, estimate depth for many images, batched on the device."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from .catalog import DEFAULT_MODEL
from .kinds import METRIC_DEPTH, UNITS, DepthKind
from .memory import (parameter_bytes, MemoryPolicy, estimate_activation_bytes, fit_batch, interrupt_checks, make_policy, resolve_dtype,
                     run_in_batches)
from .models import DepthAnything
from .preprocess import (ImageInput, check_max_tokens, network_size, prepare_batch, resize_depth, resolve_max_tokens,
                         to_tensor_list, warn_capped)
from .tiling import check_tile_size, make_tile_grid, tile_network_size, tiled_depth
from .weights import load_network

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]

TTA_MODES: tuple[str, ...] = ("none", "flip")
"""Test-time augmentation: ``"flip"`` averages the prediction with that of the horizontally flipped image."""


@dataclass
class DepthResult:
    """Raw depth for a batch of images, at each input's own resolution.

    Attributes:
        depth: ``[B, H, W]`` float32 when all inputs share one size, else a list of ``[H_i, W_i]`` maps.
            Values are what the network gives: relative disparity (larger = nearer) or metres.
        kind: ``"disparity"`` or ``"metric_depth"`` (see :mod:`anydepth.kinds`).
        processed_size: per image, the ``(height, width)`` the network saw.
        model_name: catalogue name or file the model came from.
        max_depth: the metric range of the model in metres, ``None`` for relative models.
    """

    depth: torch.Tensor | list[torch.Tensor]
    kind: DepthKind
    processed_size: list[tuple[int, int]]
    model_name: str
    max_depth: float | None = None

    @property
    def units(self) -> str:
        return UNITS[self.kind]

    def __len__(self) -> int:
        return len(self.processed_size)

    def maps(self) -> list[torch.Tensor]:
        """Per-image ``[H_i, W_i]`` maps (views, no copy)."""
        return list(self.depth.unbind(0)) if isinstance(self.depth, torch.Tensor) else list(self.depth)

    def stacked(self) -> torch.Tensor:
        """``[B, H, W]``; raises when the inputs had different sizes."""
        if isinstance(self.depth, torch.Tensor):
            return self.depth
        sizes = sorted({tuple(d.shape) for d in self.depth})
        raise ValueError(f"the inputs had different sizes {sizes}; use .maps() or resize the inputs to one size")


@dataclass
class _Item:
    tensor: int
    index: int
    size: tuple[int, int]


class DepthEstimator:
    """Depth Anything V1/V2 inference with batching, dtype choice, a memory policy and OOM fallback.

    Args:
        model: catalogue name (``anydepth info`` lists them), checkpoint path, or a built
            :class:`~anydepth.models.DepthAnything`. A built network is used as is, not copied: the
            estimator casts it to ``dtype`` in place, sets it to eval mode, and its memory policy moves it
            between devices (pass ``copy.deepcopy(net)`` to keep your own module unchanged).
        device: compute device; defaults to CUDA, then MPS, then CPU.
        dtype: ``"auto" | "fp32" | "fp16" | "bf16"`` or a torch dtype. ``auto`` picks the fastest
            safe one for the device (see :func:`anydepth.memory.resolve_dtype`).
        batch_size: images per forward pass; halved automatically on out-of-memory.
        input_size: shorter side the network sees (multiple of 14; 518 as in the reference).
        max_tokens: token budget of one network input, in 14×14 patches. ``None`` (default): four times
            the tokens of an ``input_size`` square (5476 at 518), so aspect ratios up to 4:1 keep the
            reference size; ``0``: no cap. A longer image (a 2×3000 strip would be a 518×777,000 input) is
            run at the largest size of its aspect ratio within the budget, with one warning per call,
            and its depth resized back to the input size (:func:`anydepth.preprocess.capped_size`).
        memory: ``"keep"`` (stay on device), ``"offload"`` (to CPU after each call) or a
            :class:`~anydepth.memory.MemoryPolicy`. Before each group of images the batch is sized to the free
            memory (GPU, or host RAM on the CPU); on the CPU, work that does not fit even one image at a time
            is refused with :class:`~anydepth.memory.InsufficientMemoryError` instead of exhausting the host.
            The policy's ``check_interrupt`` runs between batches, tiles and network blocks.
        models_dir, revision: where to look for / download weights, and a hub revision pin.
        family, kind, max_depth: override what is detected from the checkpoint.
        antialias: antialiased bicubic when shrinking (off to match the reference).
        output_device: where results are returned (CPU by default).
        tile_size: 0 (off) or the side in pixels of native-resolution tiles for images larger than that:
            a global pass at ``input_size`` plus overlapping tiles aligned to it and blended
            (:mod:`anydepth.tiling`); memory is then bounded by the tile size, not the image size.
        tile_overlap: blend ramp between tiles in pixels (default ``tile_size // 4``).
        tta: ``"none"`` or ``"flip"`` (average with the horizontally flipped prediction; twice the compute).

    Example:
        >>> est = DepthEstimator("v2-small")
        >>> result = est.estimate(["a.jpg", "b.png"])
        >>> result.depth.shape, result.kind
        (torch.Size([2, 45, 61]), 'disparity')
    """

    def __init__(
        self,
        model: str | os.PathLike | DepthAnything = DEFAULT_MODEL,
        *,
        device: torch.device | str | None = None,
        dtype: str | torch.dtype = "auto",
        batch_size: int = 4,
        input_size: int = 518,
        max_tokens: int | None = None,
        memory: str | MemoryPolicy = "keep",
        models_dir=None,
        revision: str | None = None,
        family: str | None = None,
        kind: str | None = None,
        max_depth: float | None = None,
        antialias: bool = False,
        output_device: torch.device | str = "cpu",
        tile_size: int = 0,
        tile_overlap: int | None = None,
        tta: str | None = None,
    ) -> None:
        self.policy = make_policy(memory, device)
        self.dtype = resolve_dtype(dtype, self.policy.device)
        self.model, self.model_name = load_network(model, "image", dtype=self.dtype, models_dir=models_dir,
                                                   revision=revision, family=family, kind=kind, max_depth=max_depth)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.input_size = input_size
        network_size(518, 518, input_size)  # validates input_size early
        self.max_tokens = check_max_tokens(max_tokens)
        self.antialias = antialias
        self.output_device = torch.device(output_device)
        self.tile_size = check_tile_size(tile_size)
        if tile_overlap is not None:
            make_tile_grid(self.tile_size or 518, self.tile_size or 518, self.tile_size or 518, tile_overlap)  # validates
        self.tile_overlap = tile_overlap
        self.tta = _check_tta(tta)

    @property
    def kind(self) -> DepthKind:
        return self.model.config.kind

    @property
    def weight_bytes(self) -> int:
        return parameter_bytes(self.model)

    def memory_required(self, batch: int, size: tuple[int, int]) -> int:
        """Bytes for weights plus activations of a ``batch`` at network ``size``."""
        return self.weight_bytes + estimate_activation_bytes(self.model.config, batch, size, self.dtype)

    @torch.inference_mode()
    def estimate(
        self,
        images: ImageInput,
        *,
        input_size: int | None = None,
        batch_size: int | None = None,
        callback: ProgressCallback | None = None,
        tile_size: int | None = None,
        tta: str | None = None,
        max_tokens: int | None = None,
    ) -> DepthResult:
        """Raw depth for ``images`` at each input's resolution.

        ``images``: a PIL image, numpy array (HWC, uint8 or float 0..1), tensor (ComfyUI
        ``[B,H,W,C]`` or ``[B,C,H,W]``), image path, or a list of those. Grayscale is repeated to RGB,
        alpha is dropped. ``callback(done, total)`` is called after every batch. ``tile_size``, ``tta`` and
        ``max_tokens`` override the constructor's options for this call (``tile_size=0``: no tiling).

        Raises:
            InsufficientMemoryError: on the CPU, when one image at its network size needs more memory than
                the host has available (the message names the image size and the options to change).
        """
        tile_size = self.tile_size if tile_size is None else check_tile_size(tile_size)
        tta = self.tta if tta is None else _check_tta(tta)
        input_size = input_size or self.input_size
        budget = resolve_max_tokens(self.max_tokens if max_tokens is None else max_tokens, input_size)
        batch_size = _positive_int(batch_size or self.batch_size, "batch_size")
        tensors = to_tensor_list(images)
        items = [_Item(t, i, tuple(x.shape[-2:])) for t, x in enumerate(tensors) for i in range(x.shape[0])]
        groups: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
        for n, item in enumerate(items):
            groups.setdefault(item.size, []).append(n)
        net_sizes = {s: network_size(*s, input_size, max_tokens=budget) for s in groups}
        warn_capped(((s, network_size(*s, input_size), net) for s, net in net_sizes.items()), budget)
        uniform = len(groups) == 1
        out: torch.Tensor | list = (
            torch.empty((len(items), *items[0].size), dtype=torch.float32, device=self.output_device) if uniform else [None] * len(items)
        )
        largest = max(net_sizes.values(), key=lambda s: s[0] * s[1])
        if tile_size:  # tiles run at native resolution and may be larger than the global pass
            largest = max(largest, tile_network_size(tile_size, tile_size), key=lambda s: s[0] * s[1])
        device = self.policy.acquire(self.model, self.memory_required(min(batch_size, len(items)), largest))
        done = 0
        try:
            with interrupt_checks(self.model, self.policy.check_interrupt):  # also within a long forward pass
                for size, members in groups.items():
                    net = net_sizes[size]

                    def run(start: int, bs: int) -> torch.Tensor:
                        chunk = [items[n] for n in members[start:start + bs]]
                        return self._forward(tensors, chunk, net, size, device, tile_size=tile_size, tta=tta, tile_batch=bs)

                    tiled = bool(tile_size) and max(size) > tile_size
                    widest = max(net, tile_network_size(tile_size, tile_size), key=lambda s: s[0] * s[1]) if tiled else net
                    batches = run_in_batches(
                        run, len(members), self._fit_batch(batch_size, widest, device, size), self.policy,
                        unit="images per batch",
                        message=f"out of memory on {device} even with batch size 1 at {net[1]}×{net[0]} px; "
                                "lower input_size or max_tokens, use dtype fp16/bf16, or free memory used by other models")
                    for start, stop, depth in batches:
                        chunk = members[start:stop]
                        if uniform:
                            out[chunk[0]:chunk[-1] + 1] = depth
                        else:
                            for n, d in zip(chunk, depth.unbind(0)):
                                out[n] = d
                        done += len(chunk)
                        if callback is not None:
                            callback(done, len(items))
        finally:
            self.policy.release(self.model)
        cfg = self.model.config
        return DepthResult(out, cfg.kind, [net_sizes[it.size] for it in items], self.model_name,
                           cfg.max_depth if cfg.kind == METRIC_DEPTH else None)

    __call__ = estimate

    def _fit_batch(self, requested: int, net: tuple[int, int], device: torch.device, size: tuple[int, int]) -> int:
        """The batch that fits the free memory at network size ``net``; refuses on the CPU when one image does not."""
        per_image = estimate_activation_bytes(self.model.config, 1, net, self.dtype)
        return fit_batch(requested, lambda k: k * per_image, self.policy.free_bytes(), refuse=device.type == "cpu",
                         what=f"a {size[1]}×{size[0]} px image (width×height) at network size {net[1]}×{net[0]}",
                         advice="lower max_tokens (--max-tokens) or input_size (--input-size), use dtype bf16, "
                                "or free memory")

    def _forward(self, tensors: list[torch.Tensor], chunk: list[_Item], net: tuple[int, int], size: tuple[int, int],
                 device: torch.device, *, tile_size: int = 0, tta: str = "none", tile_batch: int = 1) -> torch.Tensor:
        first = chunk[0]
        contiguous = all(it.tensor == first.tensor and it.index == first.index + k for k, it in enumerate(chunk))
        if contiguous:
            batch = tensors[first.tensor][first.index:first.index + len(chunk)]
        else:
            batch = torch.stack([tensors[it.tensor][it.index] for it in chunk])
        x01 = batch.to(device, non_blocking=True)
        if tile_size and max(size) > tile_size:
            depth = tiled_depth(x01, lambda x, n, o: self._predict(x, n, o, tta), tile_size=tile_size, global_size=net,
                                overlap=self.tile_overlap, batch_size=tile_batch, check_interrupt=self.policy.check_interrupt)
            return depth.to(self.output_device)
        return self._predict(x01, net, size, tta).to(self.output_device)

    def _predict(self, x01: torch.Tensor, net: tuple[int, int], out_size: tuple[int, int], tta: str = "none") -> torch.Tensor:
        """``[b, 3, h, w]`` in 0..1 -> network at ``net`` (with test-time augmentation) -> ``[b, *out_size]`` float32."""
        cfg = self.model.config
        x = prepare_batch(x01, net, cfg.mean, cfg.std, antialias=self.antialias, dtype=self.dtype)
        depth = self.model(x).float()  # [b, net_h, net_w]
        if tta == "flip":
            depth = (depth + self.model(x.flip(-1)).float().flip(-1)) * 0.5
        return resize_depth(depth, out_size)


def _check_tta(tta: str | None) -> str:
    if tta is None:
        return "none"
    if tta not in TTA_MODES:
        raise ValueError(f"unknown tta {tta!r}; expected one of {', '.join(TTA_MODES)} (or None)")
    return tta


def _positive_int(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


