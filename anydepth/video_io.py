"""Video in and out: frames from a video file or a folder of frames, and depth written as a video.

Frames are read lazily, one ``[H, W, 3]`` float32 tensor in 0..1 at a time, so a clip of any length never sits in
memory: :func:`open_frames` takes a video file (decoded with PyAV, which ComfyUI already depends on) or a folder of
images (natural order: ``frame2`` before ``frame10``), keeps about ``target_fps`` frames per second (by the frames'
timestamps, so variable-frame-rate videos are sampled by time, not by count) and at most ``max_frames``.
Every failure is a ``ValueError`` naming the input: a file that is not a video, a video without a video stream, a
frame that cannot be decoded (truncated or corrupt file), a folder without images, a frame of another size.

Depth goes out as control pictures (:class:`ClipRange` fixes one mapping for the clip from its first frames, so
the brightness does not pump) and :class:`DepthVideoWriter` encodes them (grey or with a colour map) into an
H.264 ``.mp4`` (or any container PyAV writes), atomically: an interrupted run leaves no half-written video.

Example:
    >>> with DepthVideoWriter("depth.mp4", fps=10, colormap="turbo") as out:   # control pictures in 0..1
    ...     for t in range(12):
    ...         out.write(torch.linspace(0, 1, 32).expand(24, 32) * (t + 1) / 12)
    >>> src = open_frames("depth.mp4", target_fps=5, max_frames=4)   # a video file or a folder of frames
    >>> src.count, src.fps, src.name(0), next(src.frames).shape      # each frame [H, W, 3] in 0..1, read lazily
    (4, 5, 'frame_000000', torch.Size([24, 32, 3]))
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from .io import atomic_open
from .kinds import check_kind
from .normalize import COLORMAPS, apply_colormap, to_disparity

log = logging.getLogger(__name__)

__all__ = ["ClipRange", "DepthVideoWriter", "FrameSource", "open_frames", "read_folder", "read_video"]


@dataclass
class FrameSource:
    """Frames of a clip, read lazily, and what is known about them before reading.

    Attributes:
        frames: ``[H, W, 3]`` float32 tensors in 0..1, in order (an iterator: read once).
        count: how many frames will come, when known in advance (a folder; a video whose container says), else None.
        fps: frames per second of what comes out (the target rate, or the video's average rate), None for a folder.
        source: the file or folder read.
        files: the frame files of a folder, in order (None for a video).
    """

    frames: Iterator[Tensor]
    count: int | None
    fps: float | None
    source: Path | str
    files: list[Path] | None = None

    def name(self, index: int) -> str:
        """Output stem of frame ``index``: the frame file's stem (a folder) or ``frame_000123`` (a video)."""
        return self.files[index].stem if self.files is not None else f"frame_{index:06d}"


def _check_limits(target_fps: float | None, max_frames: int | None) -> None:
    if target_fps is not None and not target_fps > 0:
        raise ValueError(f"target_fps must be > 0 (or None for every frame), got {target_fps}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be a positive integer (or None for all), got {max_frames!r}")


def open_frames(source: str | os.PathLike, *, target_fps: float | None = None, max_frames: int | None = None) -> FrameSource:
    """The frames of a video file or a folder of images (see the module docstring).

    Raises:
        ValueError: the input does not exist, is not a video / holds no images, or a limit is not positive.
    """
    path = Path(source)
    if path.is_dir():
        return read_folder(path, max_frames=max_frames)
    if not path.exists():
        raise ValueError(f"{path} does not exist; give a video file or a folder of frames")
    return read_video(path, target_fps=target_fps, max_frames=max_frames)


def read_folder(folder: str | os.PathLike, *, max_frames: int | None = None) -> FrameSource:
    """The images of ``folder`` in natural order (``frame2`` before ``frame10``), at most ``max_frames``.

    A frame of another size than the first is an error naming both files (a clip has one frame size).
    """
    from .sequence import folder_frames

    _check_limits(None, max_frames)
    paths, frames = folder_frames(folder, limit=max_frames)

    def checked() -> Iterator[Tensor]:
        size = None
        for path, frame in zip(paths, frames):
            if size is None:
                size = tuple(frame.shape[:2])
            elif tuple(frame.shape[:2]) != size:
                raise ValueError(f"{path} is {frame.shape[0]}×{frame.shape[1]} but {paths[0].name} is {size[0]}×{size[1]}: "
                                 "the frames of a clip must have one size; resize them or move the odd ones out")
            yield frame

    return FrameSource(checked(), len(paths), None, Path(folder), paths)


def read_video(source: str | os.PathLike | BinaryIO, *, target_fps: float | None = None,
               max_frames: int | None = None) -> FrameSource:
    """The frames of a video (a path or a binary file object), decoded lazily with PyAV.

    With ``target_fps`` below the video's rate, a frame is kept when its timestamp reaches the next multiple of
    ``1 / target_fps`` (so a variable-frame-rate video is sampled evenly in time); the first frame is always kept.
    The container is closed when the frames are read to the end or the iterator is dropped.

    Raises:
        ValueError: not a video (or a corrupt one), no video stream; while reading: a frame that cannot be decoded.
    """
    import av

    _check_limits(target_fps, max_frames)
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "the video")
    try:
        container = av.open(name if isinstance(source, (str, os.PathLike)) else source)
    except (OSError, av.FFmpegError) as e:
        raise ValueError(f"cannot open the video {name}: {e} (not a video file, or a truncated or corrupt one)") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{name} has no video stream")
    stream = container.streams.video[0]
    native = float(stream.average_rate) if stream.average_rate else None
    fps = target_fps if target_fps is not None and (native is None or target_fps < native) else native
    count = None
    if stream.frames and native:  # frames at 0, 1/fps, 2/fps ... up to the last one's time
        frames = int(stream.frames)
        count = frames if fps == native else int(np.floor((frames - 1) / native * fps + 1e-9)) + 1
        count = min(count, max_frames) if max_frames else count
    step = None if fps is None or fps == native else 1.0 / fps

    def read() -> Iterator[Tensor]:
        kept, decoded, next_time = 0, 0, 0.0
        try:
            packets = container.decode(stream)
            while max_frames is None or kept < max_frames:
                try:
                    frame = next(packets, None)
                except av.FFmpegError as e:
                    raise ValueError(f"{name}: cannot decode frame {decoded} ({e}); the file is truncated or "
                                     "corrupt") from None
                if frame is None:
                    break
                decoded += 1
                t = float(frame.time) if frame.time is not None else None
                if step is not None and t is not None:
                    if t + 1e-6 < next_time:
                        continue
                    next_time += step
                    while next_time <= t:  # a gap longer than one period: do not pile frames up
                        next_time += step
                yield torch.from_numpy(frame.to_ndarray(format="rgb24").astype(np.float32) / 255)
                kept += 1
        finally:
            container.close()
        if decoded == 0:
            raise ValueError(f"{name} holds no video frames (an empty, truncated or corrupt file)")
        if count is not None and kept < count:
            log.warning("%s: the container announced %d frames but only %d could be read (truncated file?)",
                        name, count, kept)

    return FrameSource(read(), count, fps, source if not isinstance(source, (str, os.PathLike)) else Path(source))


# --------------------------------------------------------------------------------------------------
# depth out


@dataclass(frozen=True)
class ClipRange:
    """One control-picture mapping for a whole clip: disparity between two percentiles, near = 1.

    Taken from the first frames of the clip (:meth:`of`), so frames can be written as they come (bounded memory)
    and the brightness does not pump from frame to frame; a temporally consistent model (Video Depth Anything)
    keeps the clip on the first window's scale, so later frames fit the same range.

    Example:
        >>> r = ClipRange.of(torch.tensor([[[1.0, 2.0], [3.0, 5.0]]]), "disparity", low=0, high=100)
        >>> r.low, r.high, r.apply(torch.tensor([[1.0, 5.0]])).tolist()
        (1.0, 5.0, [[0.0, 1.0]])
    """

    kind: str
    low: float
    high: float

    @classmethod
    def of(cls, depth: Tensor, kind: str, *, low: float = 1.0, high: float = 99.0) -> ClipRange:
        """The range of ``depth`` (``[T, H, W]``, a few first frames) between the ``low`` and ``high`` percentiles."""
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
        disp = to_disparity(depth.reshape(-1, *depth.shape[-2:]), check_kind(kind)).flatten()
        disp = disp[torch.isfinite(disp)]
        if disp.numel() == 0:
            return cls(kind, 0.0, 1.0)
        if disp.numel() > 1_000_000:  # the percentiles of an even sample: the same to a fraction of a level
            disp = disp[torch.linspace(0, disp.numel() - 1, 1_000_000).long()]
        lo, hi = torch.quantile(disp.double(), torch.tensor([low / 100.0, high / 100.0], dtype=torch.float64)).tolist()
        return cls(kind, lo, hi if hi > lo else lo + 1.0)

    def apply(self, depth: Tensor) -> Tensor:
        """``[H, W]`` (or ``[T, H, W]``) depth -> control picture in 0..1 (near = 1), NaN -> 0."""
        disp = to_disparity(depth.reshape(-1, *depth.shape[-2:]), self.kind).reshape(depth.shape)
        return torch.nan_to_num((disp - self.low) / (self.high - self.low), nan=0.0).clamp_(0.0, 1.0).float()


class DepthVideoWriter:
    """Encode control pictures (``[H, W]`` grey or ``[H, W, 3]`` RGB, 0..1) into a video file, atomically.

    The container comes from the suffix (``.mp4``, ``.mkv``, ``.mov``, ``.webm``), the codec is H.264
    (``libx264``, yuv420p, ``crf`` quality; VP9 for ``.webm``). A grey picture is written as grey (equal RGB);
    ``colormap`` colours it (:data:`anydepth.normalize.COLORMAPS`). Odd widths / heights get their last
    column / row repeated (yuv420p needs even sizes). The file appears under its name only when :meth:`close`
    succeeds; an error or interrupt before leaves the previous file (or none) in place.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, colormap: str | None = None, crf: int = 18) -> None:
        import av

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        formats = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
        if suffix not in formats:
            raise ValueError(f"cannot write a depth video to {self.path}: use one of {', '.join(sorted(formats))}")
        if not fps or not fps > 0:
            raise ValueError(f"a depth video needs a frame rate > 0, got {fps!r}")
        if colormap is not None and colormap.lower() not in COLORMAPS:
            raise ValueError(f"unknown colormap {colormap!r}; expected one of {', '.join(COLORMAPS)}")
        self.colormap = colormap.lower() if colormap else None
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(atomic_open(self.path))
        self._container = av.open(self._file, mode="w", format=formats[suffix])
        codec = "libvpx-vp9" if suffix == ".webm" else "libx264"
        self._stream = self._container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf)}
        self.frames = 0

    def write(self, x01: Any) -> None:
        """Add one picture (numpy or torch, grey ``[H, W]`` or RGB ``[H, W, 3]``, values in 0..1)."""
        import av

        x = torch.as_tensor(np.asarray(x01.detach().cpu() if isinstance(x01, Tensor) else x01), dtype=torch.float32)
        if x.ndim == 2:
            x = apply_colormap(x[None], self.colormap)[0] if self.colormap else x[..., None].expand(*x.shape, 3)
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"a depth video frame must be [H, W] or [H, W, 3], got {tuple(x.shape)}")
        rgb = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        if self.frames == 0:
            self._stream.height, self._stream.width = rgb.shape[:2]
        elif rgb.shape[:2] != (self._stream.height, self._stream.width):
            raise ValueError(f"frame {self.frames} is {rgb.shape[0]}×{rgb.shape[1]} but the video is "
                             f"{self._stream.height}×{self._stream.width}")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        if self.frames == 0:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._stack.close()  # flush, fsync and rename
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file (the previous one, if any, stays)."""
        with contextlib.suppress(Exception):
            self._container.close()
        with contextlib.suppress(RuntimeError):  # atomic_open removes its temp file when the block raises
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> DepthVideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
