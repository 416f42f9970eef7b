r"""Video Depth Anything inference: temporally consistent depth for clips of any length.

Two modes, both as the official code (DepthAnything/Video-Depth-Anything, REFERENCE.md §9):

- **Offline** (the default): windows of :data:`WINDOW` = 32 frames stepping by :data:`STRIDE` = 22. Every
  window after the first replaces its first 10 slots with the previous window's key frames
  (:data:`KEY_SLOTS`), so window ``s`` sees frames ``0, s-10, s+2 .. s+31`` (:func:`window_frames`; the
  clip is padded with its last frame, :func:`padded_length`). A relative model's window gets one scale and
  shift, fitted on its first two slots against the already aligned depth of frames ``0`` and ``s-10``
  (:func:`fit_window_scale_shift`; metric models: none); its first 8 new frames are blended linearly into
  the previous window's last 8 (:func:`blend_weights`); values are clamped at 0.
- **Streaming** (the official online mode, :class:`VideoDepthStream`): one frame at a time; every temporal
  attention sees the cached states of frame 0, frame ``k-41`` and the 29 most recent frames
  (:func:`stream_context_frames`). Constant memory, no look-ahead, a little less consistent.

Frames stream in (any iterable of frames, or a ``[T, H, W, C]`` tensor / array) and depth streams out
(:meth:`VideoDepthEstimator.iter_depth` yields each frame's ``[H, W]`` map as soon as it is final), so a
10,000-frame clip never holds all frames on the device nor all depth in memory: the peak is set by the
window (offline) or the cache (streaming).

Preprocessing is the official one: RGB in 0..1 (float32), bicubic to the V2 "lower bound" size for
:func:`video_input_size` (which shrinks the size for frames wider than 16:9), ImageNet statistics. The
same backbone features serve a frame in every window that holds it (the key frames), which saves about
a third of the backbone work without changing the numbers.

Example:
    >>> from anydepth.models import ArchConfig, VideoModelConfig, create_model
    >>> net = create_model(VideoModelConfig(ArchConfig(64, 4, 2, 32, (8, 16, 32, 32)), (0, 1, 2, 3)))  # random, tiny
    >>> est = VideoDepthEstimator(net, dtype="fp32", input_size=28)
    >>> frames = (torch.rand(28, 42, 3) for _ in range(40))      # any iterable of frames: a decoder, a folder ...
    >>> for i, depth in enumerate(est.iter_depth(frames)):       # each frame as soon as it is final
    ...     torch.save(depth, f"depth_{i:05d}.pt")               # written away, not kept
    >>> i, depth.shape
    (39, torch.Size([28, 42]))
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .align import fit_scale_shift
from .estimator import DepthResult
from .kinds import METRIC_DEPTH, DepthKind
from .memory import (parameter_bytes, MemoryPolicy, estimate_activation_bytes, estimate_stream_cache_bytes, make_policy,
                     resolve_dtype, retry_halving_on_oom)
from .models import VideoDepthAnything
from .preprocess import (check_max_tokens, network_size, prepare_batch, resize_depth, resolve_max_tokens, to_tensor_list,
                         warn_capped)
from .weights import estimator_family, load_network, wrong_family_message

__all__ = [
    "BLEND",
    "KEY_SLOTS",
    "STRIDE",
    "WINDOW",
    "VideoDepthEstimator",
    "VideoDepthStream",
    "WindowAligner",
    "blend_weights",
    "fit_window_scale_shift",
    "iter_frames",
    "padded_length",
    "stream_context_frames",
    "video_input_size",
    "window_frames",
    "window_starts",
]

WINDOW = 32
"""Frames the network sees at once (offline) and positions of every temporal attention."""

STRIDE = 22
"""Step between offline windows; the other ``WINDOW - STRIDE`` slots hold key frames of the previous window."""

KEY_SLOTS: tuple[int, ...] = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
"""Slots of a window copied into the first slots of the next one."""

ALIGN_SLOTS = 2
"""Leading key slots (frames ``0`` and ``s-10``) on which each window's scale and shift are fitted."""

BLEND = WINDOW - STRIDE - ALIGN_SLOTS
"""Frames shared by consecutive windows and blended linearly (8)."""

STREAM_RECENT = WINDOW - 3
"""Most recent frames a streamed frame attends to (29), besides frame 0 and frame ``k - STREAM_GAP``."""

STREAM_GAP = 2 * STRIDE - 1 - ALIGN_SLOTS
"""How far back the second context frame of streaming lies (41), as a window's slot 1 in offline mode."""

WIDE_RATIO = 1.78
"""Frames with a longer-to-shorter side ratio above this get a smaller input size (:func:`video_input_size`)."""

ProgressCallback = Callable[[int, int], None]
"""``callback(frames_done, total)``; ``total`` is 0 when the clip length is not known in advance."""


# --------------------------------------------------------------------------------------------------
# the official rules, as small functions


def video_input_size(height: int, width: int, input_size: int = 518) -> int:
    """The shorter-side size the network sees for ``height × width`` frames (the official wide-frame rule).

    Frames up to 16:9 keep ``input_size``. Wider ones (ratio above :data:`WIDE_RATIO`) get
    ``round(int(input_size · 1.777 / ratio) / 14) · 14`` (at least 14), so the longer side stays about
    ``1.777 · input_size``.

    Example:
        >>> video_input_size(1080, 1920), video_input_size(1080, 2560), video_input_size(480, 1920)
        (518, 392, 224)
    """
    if height < 1 or width < 1:
        raise ValueError(f"frames must be at least 1×1 pixels, got {height}×{width}")
    ratio = max(height, width) / min(height, width)
    if ratio <= WIDE_RATIO:
        return input_size
    return max(14, round(int(input_size * 1.777 / ratio) / 14) * 14)


def video_network_size(height: int, width: int, input_size: int = 518, *, max_tokens: int | None = None,
                       warn: bool = False) -> tuple[int, int]:
    """The network size for frames of ``height × width``: the official rule (:func:`video_input_size`, then the
    "lower_bound" resize), capped by the token budget like every estimator, so a thin clip cannot exhaust the host
    (:func:`anydepth.preprocess.network_size`; ``max_tokens`` ``None``: the default budget, ``0``: no cap; ``warn``
    logs the one-line warning when the cap applies).

    Example:
        >>> video_network_size(480, 640), video_network_size(2, 3000), video_network_size(480, 640, max_tokens=1000)
        ((518, 686), (14, 21000), (378, 504))
    """
    budget = resolve_max_tokens(max_tokens, input_size)
    rule = video_input_size(height, width, input_size)
    net = network_size(height, width, rule, max_tokens=budget)
    if warn:
        warn_capped([((height, width), network_size(height, width, rule), net)], budget)
    return net


def padded_length(frames: int) -> int:
    """Clip length after padding with copies of the last frame, so every offline window is full.

    Example:
        >>> padded_length(50), padded_length(22), padded_length(1)
        (76, 32, 32)
    """
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {frames}")
    return frames + (STRIDE - frames % STRIDE) % STRIDE + (WINDOW - STRIDE)


def window_starts(frames: int) -> range:
    """First clip frame of each offline window.

    Example:
        >>> list(window_starts(50))
        [0, 22, 44]
    """
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {frames}")
    return range(0, frames, STRIDE)


def window_frames(start: int, frames: int) -> list[int]:
    """Clip frames in the slots of the offline window starting at ``start`` (padding: the last frame).

    Window 0 holds frames ``0 .. 31``; a later window holds its predecessor's key frames
    (``0, start - 10, start + 2 .. start + 9``) and then ``start + 10 .. start + 31``.

    Example:
        >>> window_frames(22, 50)[:4], window_frames(22, 50)[-3:]
        ([0, 12, 24, 25], [49, 49, 49])
    """
    if start % STRIDE or not 0 <= start < frames:
        raise ValueError(f"windows start at multiples of {STRIDE} below the clip length {frames}, got {start}")
    if start == 0:
        slots = list(range(WINDOW))
    else:
        previous = window_frames(start - STRIDE, frames + STRIDE)  # unclamped: the clamp is applied once below
        slots = [previous[k] for k in KEY_SLOTS] + list(range(start + WINDOW - STRIDE, start + WINDOW))
    return [min(i, frames - 1) for i in slots]


def blend_weights(n: int = BLEND) -> Tensor:
    """Weights of the newer window in the ``n`` frames two windows share: ``0, 1/(n-1), .., 1``.

    Example:
        >>> blend_weights(3)
        tensor([0.0000, 0.5000, 1.0000])
    """
    if n < 2:
        raise ValueError(f"a blend needs at least two frames, got {n}")
    return torch.arange(n, dtype=torch.float32) / (n - 1)


def fit_window_scale_shift(pred: Tensor, ref: Tensor) -> tuple[float, float]:
    """Least-squares ``scale, shift`` with ``scale · pred + shift ≈ ref`` over all pixels of all maps.

    A constant ``pred`` has no defined fit: ``(1.0, 0.0)``, as the official solver's zero determinant.

    Shape:
        pred, ref: the same shape, e.g. ``(2, H, W)`` (a window's two alignment slots and their references).

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
        >>> fit_window_scale_shift(x, 3 * x - 1)
        (3.0, -1.0)
    """
    if pred.shape != ref.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and ref {tuple(ref.shape)} must have the same shape")
    if bool(pred.max() == pred.min()):
        return 1.0, 0.0
    fit = fit_scale_shift(pred.reshape(1, -1), ref.reshape(1, -1))
    return float(fit.scale[0]), float(fit.shift[0])


def stream_context_frames(index: int) -> list[int]:
    """Frames whose cached states frame ``index`` (≥ 1) attends to in streaming, in position order.

    Frame 0, frame ``index - 41`` and the 29 most recent frames; before there are enough frames,
    frame 0 stands in (the official cache starts as 32 copies of frame 0). The new frame takes the last
    of the :data:`WINDOW` positions.

    Example:
        >>> stream_context_frames(100)[:3], stream_context_frames(100)[-1], len(stream_context_frames(100))
        ([0, 59, 71], 99, 31)
        >>> stream_context_frames(3)[-4:]
        [0, 0, 1, 2]
    """
    if index < 1:
        raise ValueError(f"frame 0 is computed alone; context frames exist from frame 1 on, got {index}")
    return [0, max(index - STREAM_GAP, 0)] + [max(i, 0) for i in range(index - STREAM_RECENT, index)]


# --------------------------------------------------------------------------------------------------
# frames in


def _is_batch(item: Any) -> bool:
    return isinstance(item, (Tensor, np.ndarray)) and item.ndim == 4


def iter_frames(frames: Any) -> Iterator[Tensor]:
    """One ``[3, H, W]`` float tensor in 0..1 per frame, read lazily.

    ``frames``: a ``[T, H, W, C]`` (ComfyUI IMAGE) or ``[T, C, H, W]`` tensor or array, or any iterable
    of frames (PIL images, ``[H, W, C]`` arrays, tensors, image paths; an item that is itself a 4-D
    batch gives its frames in order), e.g. a video decoder. Nothing is read ahead and nothing the caller
    passed is modified; a uint8 clip is converted one frame at a time.

    Raises:
        TypeError: not a clip or an iterable of frames.
        ValueError: a frame of another size than the first (its index is named), or a bad frame.
    """
    if _is_batch(frames):
        items: Iterable[Any] = (frames[i] for i in range(frames.shape[0]))
    elif isinstance(frames, (Tensor, np.ndarray)):
        raise ValueError(f"a clip tensor must be [T, H, W, C] or [T, C, H, W], got shape {tuple(frames.shape)}")
    elif isinstance(frames, Iterable) and not isinstance(frames, (str, bytes, os.PathLike)):
        items = frames
    else:
        raise TypeError(f"frames must be a [T, H, W, C] tensor or array, or an iterable of frames, got {type(frames).__name__}")
    size = None
    index = 0
    for item in items:
        for batch in to_tensor_list(item):
            for frame in batch:
                if size is None:
                    size = tuple(frame.shape[-2:])
                elif tuple(frame.shape[-2:]) != size:
                    raise ValueError(f"frame {index} is {frame.shape[-2]}×{frame.shape[-1]} but the clip started at "
                                     f"{size[0]}×{size[1]}; resize the frames to one size")
                index += 1
                yield frame


def _known_length(frames: Any) -> int:
    """The clip length when it is known without reading the frames, else 0."""
    if _is_batch(frames):
        return int(frames.shape[0])
    if isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)) and not any(map(_is_batch, frames)):
        return len(frames)
    return 0


# --------------------------------------------------------------------------------------------------
# offline: windows -> one aligned clip


class WindowAligner:
    """Joins consecutive offline windows' depth into one clip, frame by frame, as the official code does.

    :meth:`push` takes a window's ``[32, h, w]`` network output and yields the frames that are final, at
    the frame size: window 0 as it is; every later window scaled and shifted onto the clip (relative
    models), clamped at 0, its first :data:`BLEND` new frames blended into the previous window's last
    ones. The last :data:`BLEND` frames of a window wait for the next one, unless it is the last.
    Memory: the two alignment references and the waiting frames, at the frame size.

    Args:
        size: ``(H, W)`` of the frames.
        fit: fit a scale and shift per window (relative models); ``False`` for metric ones.
    """

    def __init__(self, size: tuple[int, int], *, fit: bool = True) -> None:
        self.size = tuple(size)
        self.fit = fit
        self.refs: list[Tensor] = []  # aligned depth of frames 0 and of the next window's slot 1
        self.tail: list[Tensor] = []  # aligned frames the next window blends into
        self.scales: list[tuple[float, float]] = []  # per window, for inspection and tests

    def push(self, depth: Tensor, *, last: bool) -> Iterator[Tensor]:
        """Yield the frames of this window that are final, in clip order (iterate to the end before the next push).

        Shape:
            depth: ``[32, h, w]`` (float32); yields ``[H, W]`` maps.
        """
        if depth.ndim != 3 or depth.shape[0] != WINDOW:
            raise ValueError(f"a window's depth must be [{WINDOW}, h, w], got {tuple(depth.shape)}")

        def frame(slot: int) -> Tensor:
            return resize_depth(depth[slot:slot + 1], self.size)[0]

        if not self.refs:  # the first window sets the clip's scale
            scale, shift = 1.0, 0.0
            frames: Iterator[Tensor] = (frame(i) for i in range(WINDOW))
            first = 0
        else:
            if self.fit:
                scale, shift = fit_window_scale_shift(torch.stack([frame(0), frame(1)]), torch.stack(self.refs))
            else:
                scale, shift = 1.0, 0.0
            frames = ((frame(i) * scale + shift).clamp_(min=0) for i in range(ALIGN_SLOTS, WINDOW))
            first = ALIGN_SLOTS
        self.scales.append((scale, shift))
        weights = blend_weights().tolist()
        tail, self.tail = self.tail, []
        keep_from = WINDOW if last else WINDOW - BLEND
        for slot, d in enumerate(frames, start=first):
            if tail and slot < ALIGN_SLOTS + BLEND:  # shared with the previous window: blend
                w = weights[slot - ALIGN_SLOTS]
                d = tail[slot - ALIGN_SLOTS] * (1 - w) + d * w
            # copies: the caller may change the frames it gets
            if slot == 0 and not self.refs:
                self.refs = [d.clone(), d]
            if slot == KEY_SLOTS[1]:
                self.refs = [self.refs[0], d.clone()]  # the next window's slot 1 is this frame
            if slot >= keep_from:
                self.tail.append(d)
            else:
                yield d


# --------------------------------------------------------------------------------------------------
# streaming: one frame at a time against cached temporal states


class VideoDepthStream:
    """The official online mode: push frames one at a time, get each frame's depth at once.

    Every temporal attention sees the cached normalised states of :func:`stream_context_frames` plus the
    new frame; the cache holds frame 0 and the :data:`STREAM_GAP` most recent frames, so memory does not
    grow with the clip. No scale/shift alignment. Use it from :meth:`VideoDepthEstimator.stream` (which
    places the model) or directly with a model already on ``device``.

    Args:
        model: a :class:`~anydepth.models.VideoDepthAnything` with its temporal modules.
        device: where the network runs; the frame tensors are moved there.
        dtype: the network's dtype (inputs are cast to it).
        input_size: shorter side the network sees, before :func:`video_input_size`.
        max_tokens: token budget of a frame's network input (see :func:`video_network_size`).

    Example:
        >>> from anydepth.models import ArchConfig, VideoModelConfig, create_model
        >>> net = create_model(VideoModelConfig(ArchConfig(64, 4, 2, 32, (8, 16, 32, 32)), (0, 1, 2, 3)))
        >>> stream = VideoDepthStream(net, device="cpu", dtype=torch.float32, input_size=28)
        >>> depth = [stream.push(torch.rand(28, 42, 3)) for _ in range(50)]   # each [H, W] float32, on ``device``
        >>> depth[-1].shape, stream.cache_frames
        (torch.Size([28, 42]), 42)
    """

    def __init__(self, model: VideoDepthAnything, *, device: torch.device | str, dtype: torch.dtype,
                 input_size: int = 518, max_tokens: int | None = None) -> None:
        _check_video_model(model)
        if model.head.motion_modules is None:
            raise ValueError("streaming needs the temporal modules; this network was built with temporal=False")
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        self.input_size = input_size
        self.max_tokens = check_max_tokens(max_tokens)
        self.reset()

    def reset(self) -> None:
        """Forget the clip: the next frame starts a new one (and may have another size)."""
        self.frames_seen = 0
        self.frame_size: tuple[int, int] | None = None
        self.net_size: tuple[int, int] | None = None
        # Per temporal attention, [pixels, 1 + STREAM_GAP, width]: slot 0 holds frame 0, slots 1.. the recent
        # frames in a ring. One index_select gathers a frame's context (the official code concatenates 31
        # per-frame tensors along the time axis for every attention, a slow strided copy).
        self.bank: list[Tensor] = []

    @property
    def cache_frames(self) -> int:
        """Frames whose states are held (at most ``1 + STREAM_GAP``)."""
        return min(self.frames_seen, 1 + STREAM_GAP)

    @staticmethod
    def _slot(frame: int) -> int:
        return 0 if frame == 0 else 1 + (frame - 1) % STREAM_GAP

    @torch.inference_mode()
    def push(self, frame: Any) -> Tensor:
        """Depth of the next frame, ``[H, W]`` float32 on the stream's device (relative or metres, ≥ 0).

        ``frame``: a PIL image, ``[H, W, C]`` array or tensor, ``[C, H, W]`` tensor, or image path.

        Raises:
            ValueError: a frame of another size than the clip's first, or not a single frame.
        """
        batch = to_tensor_list(frame)
        if len(batch) != 1 or batch[0].shape[0] != 1:
            raise ValueError("push takes one frame at a time; iterate over a batch of frames")
        x01 = batch[0]
        size = tuple(x01.shape[-2:])
        if self.frame_size is None:
            net = video_network_size(*size, self.input_size, max_tokens=self.max_tokens)
            if max(net) <= 28:  # the coarsest head stage would be 1×1 px: one value per channel for the norms
                raise ValueError(f"streaming needs a network input of at least 42 px on one side; frames of "
                                 f"{size[0]}×{size[1]} run at {net[0]}×{net[1]}. Raise input_size or max_tokens, or "
                                 "use offline mode")
            self.frame_size, self.net_size = size, net
        elif size != self.frame_size:
            raise ValueError(f"frame {self.frames_seen} is {size[0]}×{size[1]} but the stream started at "
                             f"{self.frame_size[0]}×{self.frame_size[1]}; call reset() to start a new clip")
        cfg = self.model.config
        x = prepare_batch(x01.to(self.device), self.net_size, cfg.mean, cfg.std, dtype=self.dtype)
        context = None
        if self.frames_seen:
            slots = torch.tensor([self._slot(i) for i in stream_context_frames(self.frames_seen)], device=self.device)
            context = [bank.index_select(1, slots) for bank in self.bank]
        out = self.model.decode(self.model.encode(x), 1, context=context, return_states=True)
        del context
        if not self.bank:  # sized by the first frame; the clip's memory from then on
            self.bank = [s.new_empty(s.shape[0], 1 + STREAM_GAP, s.shape[2]) for s in out.states]
        for bank, state in zip(self.bank, out.states):
            bank[:, self._slot(self.frames_seen)] = state[:, 0]
        self.frames_seen += 1
        return resize_depth(out.depth.float(), self.frame_size)[0]


# --------------------------------------------------------------------------------------------------
# the estimator


class VideoDepthEstimator:
    """Video Depth Anything over clips of any length, with the image estimator's device and memory behaviour.

    Args:
        model: a built :class:`~anydepth.models.VideoDepthAnything`, or a catalogue name / checkpoint path
            that :func:`anydepth.weights.load_model` reads as one. A built network is used as is (cast to
            ``dtype`` in place, moved by the memory policy).
        device: compute device; defaults to CUDA, then MPS, then CPU.
        dtype: ``"auto" | "fp32" | "fp16" | "bf16"`` or a torch dtype (see :func:`anydepth.memory.resolve_dtype`).
        batch_size: frames per pass through the per-frame parts (backbone, full-resolution head stages; 4
            as the official micro-batch); a window is always 32 frames. Halved automatically on
            out-of-memory, and kept halved for the rest of the clip.
        input_size: shorter side the network sees (multiple of 14; wide frames get less, see :func:`video_input_size`).
        max_tokens: token budget of one frame's network input, in 14×14 patches: ``None`` (default) four times
            the patches of an ``input_size`` square, ``0`` no cap. Frames over it run smaller (one warning).
        memory: ``"keep"``, ``"offload"`` or a :class:`~anydepth.memory.MemoryPolicy` (ComfyUI's bridge).
        models_dir, revision, kind: passed to the loader for a name or path.
        output_device: where depth maps are returned (CPU by default).

    Example:
        >>> from anydepth.models import ArchConfig, VideoModelConfig, create_model
        >>> net = create_model(VideoModelConfig(ArchConfig(64, 4, 2, 32, (8, 16, 32, 32)), (0, 1, 2, 3)))  # random, tiny
        >>> est = VideoDepthEstimator(net, dtype="fp32", input_size=28)
        >>> result = est.estimate(torch.rand(40, 48, 64, 3))     # [T, H, W, C] in 0..1, e.g. a ComfyUI IMAGE batch
        >>> result.depth.shape, result.kind
        (torch.Size([40, 48, 64]), 'disparity')
        >>> with est.stream() as stream:                          # online: frames arrive one by one
        ...     live = [stream.push(frame) for frame in torch.rand(5, 48, 64, 3)]
        >>> live[0].shape
        torch.Size([48, 64])
    """

    def __init__(
        self,
        model: str | os.PathLike | VideoDepthAnything,
        *,
        device: torch.device | str | None = None,
        dtype: str | torch.dtype = "auto",
        batch_size: int = 4,
        input_size: int = 518,
        memory: str | MemoryPolicy = "keep",
        models_dir=None,
        revision: str | None = None,
        kind: str | None = None,
        output_device: torch.device | str = "cpu",
        max_tokens: int | None = None,
    ) -> None:
        self.policy = make_policy(memory, device)
        self.dtype = resolve_dtype(dtype, self.policy.device)
        self.model, self.model_name = load_network(model, "vda", dtype=self.dtype, models_dir=models_dir,
                                                   revision=revision, kind=kind)
        self.batch_size = _positive_int(batch_size, "batch_size")
        network_size(518, 518, input_size)  # validates input_size early
        self.input_size = input_size
        self.max_tokens = check_max_tokens(max_tokens)
        self.output_device = torch.device(output_device)

    @property
    def kind(self) -> DepthKind:
        return self.model.config.kind

    @property
    def weight_bytes(self) -> int:
        return parameter_bytes(self.model)

    def memory_required(self, size: tuple[int, int], *, streaming: bool = False, batch_size: int | None = None) -> int:
        """Bytes for weights plus the activations of one window (or one streamed frame and the cache) at network ``size``."""
        cfg = self.model.config
        if streaming:
            return self.weight_bytes + (estimate_activation_bytes(cfg, 1, size, self.dtype)
                                        + estimate_stream_cache_bytes(cfg, size, self.dtype))
        return self.weight_bytes + estimate_activation_bytes(cfg, WINDOW, size, self.dtype, batch_size or self.batch_size)

    def stream(self, *, input_size: int | None = None) -> "_PlacedStream":
        """A :class:`VideoDepthStream` with the model placed by the memory policy, as a context manager
        (see the class example): the device is acquired on entry and released on exit."""
        return _PlacedStream(self, input_size or self.input_size)

    @torch.inference_mode()
    def iter_depth(self, frames: Any, *, streaming: bool = False, input_size: int | None = None,
                   callback: ProgressCallback | None = None) -> Iterator[Tensor]:
        """Each frame's depth, ``[H, W]`` float32 on ``output_device``, in order, as soon as it is final (a generator).

        Offline, a window's frames come out when it is done (all but the last 8, which the next window
        blends); streaming, every frame at once. ``callback(done, total)`` runs after every window (offline)
        or frame (streaming); ``total`` is the clip length when known (tensor, array, list), else 0. The
        memory policy's ``check_interrupt`` runs before every window / frame.

        Raises:
            ValueError: an empty clip, frames of mixed sizes (the first odd one is named).
            torch.OutOfMemoryError: even one frame per pass does not fit (says what to change).
        """
        input_size = input_size or self.input_size
        network_size(518, 518, input_size)
        total = _known_length(frames)
        source = iter_frames(frames)
        first = next(source, None)
        if first is None:
            raise ValueError("the clip has no frames; pass at least one frame")
        size = tuple(first.shape[-2:])
        net = video_network_size(*size, input_size, max_tokens=self.max_tokens, warn=True)
        source = itertools.chain([first], source)
        device = self.policy.acquire(self.model, self.memory_required(net, streaming=streaming))
        done = 0
        try:
            parts = self._streamed(source, device, input_size) if streaming else self._windows(source, net, size, device)
            for part in parts:
                for depth in part:
                    yield depth.to(self.output_device)
                    done += 1
                if callback is not None:
                    callback(done, total)
        finally:
            self.policy.release(self.model)

    def estimate(self, frames: Any, *, streaming: bool = False, input_size: int | None = None,
                 callback: ProgressCallback | None = None) -> DepthResult:
        """Depth of the whole clip as one :class:`~anydepth.estimator.DepthResult` (``depth``: ``[T, H, W]``).

        Collects :meth:`iter_depth` (into one preallocated tensor when the clip length is known, so the
        maps are not held twice); use :meth:`iter_depth` directly to write long clips away frame by frame.
        """
        total = _known_length(frames)
        out: Tensor | None = None
        maps: list[Tensor] = []
        for i, depth in enumerate(self.iter_depth(frames, streaming=streaming, input_size=input_size, callback=callback)):
            if total:
                if out is None:
                    out = torch.empty((total, *depth.shape), dtype=depth.dtype, device=depth.device)
                out[i] = depth
            else:
                maps.append(depth)
        depth = out if out is not None else torch.stack(maps)
        h, w = depth.shape[-2:]
        net = video_network_size(h, w, input_size or self.input_size, max_tokens=self.max_tokens)
        return DepthResult(depth, self.kind, [net] * depth.shape[0], self.model_name, None)

    __call__ = estimate

    # ---------------------------------------------------------------------------------------------- offline

    def _windows(self, source: Iterator[Tensor], net: tuple[int, int], size: tuple[int, int],
                 device: torch.device) -> Iterator[Iterator[Tensor]]:
        """The clip's frames, window by window (consume each window's frames before asking for the next)."""
        cfg = self.model.config
        aligner = WindowAligner(size, fit=cfg.kind != METRIC_DEPTH)
        features: dict[int, list[Tensor]] = {}  # backbone taps by clip frame, reused by the next window
        # Frames read but not yet encoded, already at the network size on the device: a window's worth of
        # inputs then costs the same whatever the source resolution (32 float 4K frames would be 3 GB).
        ready: dict[int, Tensor] = {}
        read = emitted = 0
        length = None  # the clip length, once the source is exhausted
        chunk = self._fit_chunk(net)  # halved on out-of-memory, for the rest of the clip
        for start in itertools.count(0, STRIDE):
            self.policy.check_interrupt()
            while length is None and read < start + WINDOW:
                frame = next(source, None)
                if frame is None:
                    length = read
                else:
                    ready[read] = prepare_batch(frame[None].to(device), net, cfg.mean, cfg.std, dtype=self.dtype)[0]
                    read += 1
            # Until the end is known the window lies wholly inside the clip; after it, slots past it are padding.
            slots = window_frames(start, length if length is not None else start + WINDOW)
            last = length is not None and start + STRIDE >= length

            def run(per_pass: int) -> tuple[Tensor, dict[int, list[Tensor]]]:
                return self._window_depth(slots, ready, features, per_pass)

            (depth, new), chunk = retry_halving_on_oom(
                run, chunk, self.policy, unit="frames per pass",
                message=f"out of memory on {device} even with one frame per pass at {net[1]}×{net[0]} px; lower "
                        "input_size, use dtype fp16/bf16, use streaming=True, or free memory used by other models")
            for i in new:
                del ready[i]
            # The next window starts with this one's key frames: keep their taps (copies, so the batches go).
            have = {**features, **new}
            features = {i: [t.clone() for t in have[i]] for i in {slots[k] for k in KEY_SLOTS}} if not last else {}
            del have, new
            # Frames come out one at a time (at the frame size); padding frames are never emitted, and once the
            # clip is out no window is left to compute (the official code runs one more and drops it).
            count = (WINDOW if start == 0 else WINDOW - ALIGN_SLOTS) - (0 if last else BLEND)
            limit = count if length is None else min(count, length - emitted)
            yield _first(aligner.push(depth, last=last), limit)
            del depth  # the window's output is in the aligner's frames now; do not hold it through the next window
            emitted += limit
            if last or emitted == length:
                return

    def _fit_chunk(self, net: tuple[int, int]) -> int:
        """``batch_size``, or less when the device says its free memory cannot hold a window at that size."""
        free = self.policy.free_bytes()
        chunk = self.batch_size
        while free is not None and chunk > 1 and estimate_activation_bytes(
                self.model.config, WINDOW, net, self.dtype, chunk) > 0.9 * free:
            chunk //= 2
        return chunk

    def _window_depth(self, slots: list[int], ready: dict[int, Tensor], features: dict[int, list[Tensor]],
                      chunk: int) -> tuple[Tensor, dict[int, list[Tensor]]]:
        """One window's ``[32, h, w]`` float32 depth and the taps of the frames it encoded (``chunk`` per pass)."""
        todo = sorted({i for i in slots if i not in features})
        new: dict[int, list[Tensor]] = {}
        for k in range(0, len(todo), chunk):
            ids = todo[k:k + chunk]
            x = torch.stack([ready[i] for i in ids])
            taps = self.model.encode(x)
            for j, i in enumerate(ids):
                new[i] = [t[j] for t in taps]
        have = {**features, **new}
        taps = [torch.stack([have[i][level] for i in slots]) for level in range(4)]
        depth = self.model.decode(taps, WINDOW, chunk=chunk).depth.float()
        return depth, new

    # ---------------------------------------------------------------------------------------------- streaming

    def _streamed(self, source: Iterator[Tensor], device: torch.device, input_size: int) -> Iterator[Iterator[Tensor]]:
        stream = VideoDepthStream(self.model, device=device, dtype=self.dtype, input_size=input_size,
                                  max_tokens=self.max_tokens)
        for frame in source:
            self.policy.check_interrupt()
            depth, _ = retry_halving_on_oom(
                lambda _: stream.push(frame), 1, self.policy, unit="frames",
                message=f"out of memory on {device} streaming one frame; lower input_size, use dtype fp16/bf16, "
                        "or free memory used by other models")
            yield iter([depth])


def _first(items: Iterator[Tensor], n: int) -> Iterator[Tensor]:
    """The first ``n`` items, running ``items`` to its end (a window's aligner finishes its bookkeeping there)."""
    for k, item in enumerate(items):
        if k < n:
            yield item


class _PlacedStream:
    """Context manager of :meth:`VideoDepthEstimator.stream`: acquire the device, stream, release."""

    def __init__(self, estimator: VideoDepthEstimator, input_size: int) -> None:
        self.estimator = estimator
        self.input_size = input_size

    def __enter__(self) -> VideoDepthStream:
        est = self.estimator
        size = (self.input_size, self.input_size)
        device = est.policy.acquire(est.model, est.memory_required(size, streaming=True))
        return VideoDepthStream(est.model, device=device, dtype=est.dtype, input_size=self.input_size,
                                max_tokens=est.max_tokens)

    def __exit__(self, *exc: object) -> None:
        self.estimator.policy.release(self.estimator.model)


# --------------------------------------------------------------------------------------------------
# checks


def _check_video_model(net: Any) -> None:
    family = estimator_family(net)
    if family != "vda":
        raise ValueError(wrong_family_message(type(net).__name__, family, "vda"))


def _positive_int(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
