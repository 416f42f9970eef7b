"""Long sequences in bounded memory: Depth Anything 3 over chunks of views, aligned into one world frame.

A scene of thousands of views does not fit one any-view pass (every view's tokens stay resident for the
cross-view attention). :func:`estimate_sequence` runs the views in chunks of ``chunk_size`` that overlap by
``overlap`` views:

1. chunk ``k`` holds views ``[k·(chunk_size - overlap), ... + chunk_size)``; the network gives its cameras and depth
   in a frame of its own, with a scale of its own;
2. the views chunk ``k`` shares with chunk ``k - 1`` are seen in both frames. Their pixels are unprojected with each
   chunk's depth and cameras: the same pixel is the same surface point, so the pairs give a similarity transform
   (rotation, translation **and scale**, Umeyama's least squares over the confident pixels, refitted once without
   the worst residuals) from chunk ``k``'s frame onto the world frame (chunk 0's). With too few valid pixels the
   overlapping cameras are used instead (rotations averaged, then scale and translation from the centres);
3. the chunk's new views are moved into the world frame (extrinsics, depth × scale) and handed to ``on_view`` one by
   one; only the overlapping views' maps are kept for the next chunk;
4. with ``loop_closure`` (a trajectory that returns to its start) one more pass runs the last and the first views
   together; the disagreement of the two alignments it gives is the drift, spread over the sequence (view ``i`` gets
   the fraction ``i / (N - 1)`` of the correction: rotation angle, log scale and translation). Views are already
   handed out by then, so the corrected cameras and a depth factor per view come in the result
   (:attr:`SequenceResult.depth_scale`).

Peak memory is set by ``chunk_size`` (the frames of one chunk, its network pass and its result, plus ``overlap`` views
of maps), not by the number of views: frames are read lazily (:func:`folder_frames`, :func:`video_frames`) and the
per-view outputs go to ``on_view`` (write them, or keep what you need). The result keeps only the cameras
(``N × 21`` numbers). ``check_interrupt`` runs between chunks; ``progress(done, total)`` after each.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .cameras import camera_centers, invert_rigid
from .geometry import depth_to_points

__all__ = [
    "GeometryCollector",
    "PointReservoir",
    "SequenceResult",
    "SequenceView",
    "SequenceWriter",
    "Sim3",
    "estimate_sequence",
    "folder_frames",
    "frame_step",
    "natural_key",
    "sim3_from_cameras",
    "sim3_from_points",
    "tensor_frames",
    "video_frames",
]


# --------------------------------------------------------------------------------------------
# Similarity transforms


@dataclass(frozen=True)
class Sim3:
    """``x -> scale · rotation @ x + translation`` (float64).

    Example:
        >>> s = Sim3(torch.eye(3, dtype=torch.float64), torch.tensor([1.0, 0, 0], dtype=torch.float64), 2.0)
        >>> s.apply(torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)).tolist()
        [[3.0, 2.0, 2.0]]
        >>> s.inverse().apply(s.apply(torch.ones(1, 3, dtype=torch.float64))).tolist()
        [[1.0, 1.0, 1.0]]
    """

    rotation: Tensor
    translation: Tensor
    scale: float

    @staticmethod
    def identity() -> Sim3:
        return Sim3(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 1.0)

    def apply(self, points: Tensor) -> Tensor:
        """Points ``[..., 3]`` through the transform."""
        return self.scale * points.double() @ self.rotation.T + self.translation

    def inverse(self) -> Sim3:
        rt = self.rotation.T
        return Sim3(rt, -(rt @ self.translation) / self.scale, 1.0 / self.scale)

    def compose(self, other: Sim3) -> Sim3:
        """``self ∘ other`` (``other`` first)."""
        return Sim3(self.rotation @ other.rotation, self.apply(other.translation[None])[0], self.scale * other.scale)

    def power(self, fraction: float) -> Sim3:
        """The transform a ``fraction`` of the way from identity (angle, log scale and translation scaled)."""
        return Sim3(_rotation_power(self.rotation, fraction), self.translation * fraction, self.scale ** fraction)

    def apply_extrinsics(self, extrinsics: Tensor) -> Tensor:
        """World-to-camera ``[N, 3|4, 4]`` of the old frame -> of the new frame (camera frames scaled with the world,
        so depth in the new frame is ``scale ×`` the old depth).

        With ``X_new = s R X + t`` and ``X_cam = R_c X + t_c``: ``s X_cam = R_c Rᵀ X_new + (s t_c - R_c Rᵀ t)``.
        """
        ext = extrinsics.double()
        r_new = ext[:, :3, :3] @ self.rotation.T
        t_new = self.scale * ext[:, :3, 3] - r_new @ self.translation
        return torch.cat([r_new, t_new[..., None]], dim=-1)


def _rotation_power(r: Tensor, fraction: float) -> Tensor:
    """``R^fraction`` through the axis-angle form."""
    angle = math.acos(max(-1.0, min(1.0, (float(torch.trace(r)) - 1) / 2)))
    if angle < 1e-12:
        return torch.eye(3, dtype=torch.float64)
    axis = torch.stack([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * math.sin(angle))
    if angle > math.pi - 1e-6:  # near 180° the formula above loses the axis: take it from R + I
        m = (r + torch.eye(3, dtype=torch.float64)) / 2
        axis = m[int(torch.argmax(torch.diagonal(m)))]
    axis = axis / axis.norm()
    k = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64)
    a = angle * fraction
    return torch.eye(3, dtype=torch.float64) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def _umeyama(src: Tensor, dst: Tensor) -> Sim3:
    """:func:`anydepth.anyview.umeyama_sim3` as a :class:`Sim3`."""
    from .anyview import umeyama_sim3

    return Sim3(*umeyama_sim3(src, dst))


def sim3_from_points(src: Tensor, dst: Tensor, *, trim: float = 3.0) -> Sim3:
    """Similarity mapping corresponding points ``src`` onto ``dst``: Umeyama, then once more without the pairs whose
    residual exceeds ``trim`` × the median residual (outliers: occlusion edges, bad depth).

    Shape: ``[M, 3]`` each (M >= 3).
    """
    src, dst = src.double(), dst.double()
    if src.shape != dst.shape or src.ndim != 2 or src.shape[0] < 3:
        raise ValueError(f"need at least 3 corresponding points [M, 3], got {tuple(src.shape)} and {tuple(dst.shape)}")
    sim = _umeyama(src, dst)
    res = (sim.apply(src) - dst).norm(dim=1)
    keep = res <= trim * res.median().clamp_min(1e-12)
    return _umeyama(src[keep], dst[keep]) if int(keep.sum()) >= 3 and not bool(keep.all()) else sim


def sim3_from_cameras(src_extrinsics: Tensor, dst_extrinsics: Tensor) -> Sim3:
    """Similarity mapping the frame of ``src`` cameras onto that of the same cameras ``dst``: the rotation averaged
    over the views (chordal mean), then scale and translation from the camera centres (scale 1 for a single view).

    Shape: ``[N, 3|4, 4]`` each.
    """
    rs = invert_rigid(src_extrinsics.double()[:, :3])[:, :, :3]  # camera-to-world rotations
    rd = invert_rigid(dst_extrinsics.double()[:, :3])[:, :, :3]
    u, _, vt = torch.linalg.svd((rd @ rs.transpose(1, 2)).sum(0))
    r = u @ torch.diag(torch.tensor([1.0, 1.0, float(torch.det(u @ vt))], dtype=torch.float64)) @ vt
    cs, cd = camera_centers(src_extrinsics.double()), camera_centers(dst_extrinsics.double())
    xs, xd = (cs - cs.mean(0)) @ r.T, cd - cd.mean(0)
    var = float((xs ** 2).sum())
    s = float((xs * xd).sum() / var) if var > 1e-18 else 1.0
    return Sim3(r, cd.mean(0) - s * r @ cs.mean(0), s)


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class SequenceView:
    """One view of the sequence in the world frame, as :func:`estimate_sequence` hands it out.

    Attributes:
        index: the view's position in the sequence.
        chunk: the chunk that estimated it.
        depth: ``[H, W]`` at the input frame's size, in world units; confidence, sky: ``[H, W]`` or ``None``.
        extrinsics: ``[3, 4]`` world-to-camera; intrinsics: ``[3, 3]`` in pixels of the input frame.
        processed_depth, processed_confidence, processed_intrinsics, image: the same at the network's size, with
            the colours it saw (``[h, w, 3]`` in 0..1), for point clouds and meshes.
        kind: the depth's kind (:mod:`anydepth.kinds`).
    """

    index: int
    chunk: int
    depth: Tensor
    confidence: Tensor | None
    sky: Tensor | None
    extrinsics: Tensor
    intrinsics: Tensor
    processed_depth: Tensor
    processed_confidence: Tensor | None
    processed_intrinsics: Tensor
    image: Tensor
    kind: str = "depth"


@dataclass
class SequenceResult:
    """Cameras of every view in one world frame (chunk 0's), and how the chunks were placed.

    Attributes:
        extrinsics: ``[N, 3, 4]`` world-to-camera (loop-closed when asked).
        intrinsics: ``[N, 3, 3]`` in pixels of each input frame.
        chunks: ``(start, stop)`` view range of each chunk.
        transforms: each chunk's frame -> world similarity.
        depth_scale: ``[N]`` factor for the depth handed out (1 unless loop closure rescaled it).
        loop_correction: the drift loop closure found (view ``i`` was moved by its ``power(i / (N - 1))``), or ``None``.
        kind: the depth's kind.
        notes: what the caller should know.
    """

    extrinsics: Tensor
    intrinsics: Tensor
    chunks: list[tuple[int, int]]
    transforms: list[Sim3]
    depth_scale: Tensor
    loop_correction: Sim3 | None = None
    kind: str = "depth"
    notes: list[str] = field(default_factory=list)

    def correct(self, index: int, points: Tensor) -> Tensor:
        """World points of view ``index`` as handed out -> loop-closed (unchanged without loop closure)."""
        if self.loop_correction is None:
            return points
        return self.loop_correction.power(index / max(len(self) - 1, 1)).apply(points).to(points.dtype)

    def __len__(self) -> int:
        return int(self.extrinsics.shape[0])


@dataclass
class _Kept:
    """Maps of views kept for aligning the next pass, in the world frame."""

    depth: Tensor  # [V, h, w] processed size, world units
    intrinsics: Tensor  # [V, 3, 3] processed size
    extrinsics: Tensor  # [V, 3, 4] world
    confidence: Tensor | None  # [V, h, w]


def _as_chunk(frames: list) -> object:
    """A chunk's frames as the estimator takes them: one ``[N, H, W, 3]`` batch when they are tensors of one size."""
    if frames and all(isinstance(f, Tensor) and f.ndim == 3 and f.shape == frames[0].shape for f in frames):
        return torch.stack(frames)
    return list(frames)


def _align(res, first: int, count: int, kept: _Kept, max_points: int) -> Sim3:
    """The similarity from ``res``'s frame onto the world, from its views ``first .. first + count`` = ``kept``."""
    sl = slice(first, first + count)
    depth, k, ext = res.processed_depth[sl].float(), res.processed_intrinsics[sl].double(), res.extrinsics[sl].double()
    if tuple(depth.shape) == tuple(kept.depth.shape):
        src = depth_to_points(depth.double(), k, ext)
        dst = depth_to_points(kept.depth.double(), kept.intrinsics, kept.extrinsics)
        ok = torch.isfinite(src).all(-1) & torch.isfinite(dst).all(-1) & (depth > 0) & (kept.depth > 0)
        if res.processed_confidence is not None and kept.confidence is not None:
            both = torch.minimum(res.processed_confidence[sl].float(), kept.confidence.float())
            if int(ok.sum()) > 16:
                ok &= both >= both[ok].median()  # the more confident half of the shared pixels
        idx = ok.reshape(-1).nonzero()[:, 0]
        if idx.numel() >= 16:
            idx = idx[:: max(1, idx.numel() // max_points)]
            return sim3_from_points(src.reshape(-1, 3)[idx], dst.reshape(-1, 3)[idx])
    return sim3_from_cameras(ext, kept.extrinsics)


def _keep(res, sel: slice, sim: Sim3) -> _Kept:
    conf = None if res.processed_confidence is None else res.processed_confidence[sel].float().clone()
    return _Kept(res.processed_depth[sel].float() * sim.scale, res.processed_intrinsics[sel].double().clone(),
                 sim.apply_extrinsics(res.extrinsics[sel]), conf)


def _emit(res, i: int, index: int, chunk: int, sim: Sim3) -> SequenceView:
    """View ``i`` of a pass in the world frame; copies, so that a sink keeping it does not keep the whole pass."""
    pick = lambda name: None if getattr(res, name) is None else res.maps(name)[i].clone()  # noqa: E731
    return SequenceView(
        index=index, chunk=chunk, depth=res.maps("depth")[i].float() * sim.scale, confidence=pick("confidence"),
        sky=pick("sky"), extrinsics=sim.apply_extrinsics(res.extrinsics[i:i + 1])[0], intrinsics=res.intrinsics[i].double(),
        processed_depth=res.processed_depth[i].float() * sim.scale,
        processed_confidence=None if res.processed_confidence is None else res.processed_confidence[i].float().clone(),
        processed_intrinsics=res.processed_intrinsics[i].double(), image=res.processed_images[i].clone(), kind=res.kind)


def estimate_sequence(
    estimator,
    frames: Iterable,
    *,
    chunk_size: int = 16,
    overlap: int = 4,
    loop_closure: bool = False,
    on_view: Callable[[SequenceView], None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    total: int | None = None,
    max_points: int = 20_000,
    **estimate_kwargs,
) -> SequenceResult:
    """Depth and cameras of a long sequence of views in one world frame, ``chunk_size`` views at a time.

    Args:
        estimator: an :class:`~anydepth.anyview.AnyViewEstimator` (any object whose ``estimate(images, **kwargs)``
            returns a :class:`~anydepth.anyview.GeometryResult` with cameras).
        frames: the views in order, read lazily: an iterator of images (``[H, W, 3]`` tensors in 0..1, arrays, PIL
            images or paths), e.g. :func:`folder_frames` or :func:`video_frames`.
        chunk_size: views per network pass (memory: one pass holds this many views).
        overlap: views shared by consecutive chunks (at least 1; 3 or more for a stable fit).
        loop_closure: the trajectory returns to its start: correct the drift (see the module docstring).
        on_view: called once per view, in order, with the :class:`SequenceView` in the world frame.
        progress: ``progress(views_done, total)`` after each chunk (``total`` may be ``None``).
        check_interrupt: called between chunks; raise from it to stop.
        total: the number of views if known (for ``progress``).
        max_points: pixel pairs per alignment (an even subset of the confident shared pixels).
        estimate_kwargs: passed to ``estimator.estimate`` (e.g. ``process_res``, ``ref_view_strategy``).

    Returns:
        :class:`SequenceResult`.

    Raises:
        ValueError: bad chunk sizes, no frames, or an estimator without cameras.
    """
    if not isinstance(chunk_size, int) or chunk_size < 2:
        raise ValueError(f"chunk_size must be an integer >= 2, got {chunk_size!r}")
    if not isinstance(overlap, int) or not 1 <= overlap < chunk_size:
        raise ValueError(f"overlap must be an integer from 1 to chunk_size - 1 ({chunk_size - 1}), got {overlap!r}; "
                         "3 or more views give a stable alignment")
    it: Iterator = iter(frames)
    carried: list = []  # the frames the next chunk shares with the last one
    first_frames: list = []  # loop closure: the sequence's first views
    first_kept: _Kept | None = None
    kept: _Kept | None = None
    exts: list[Tensor] = []
    ks: list[Tensor] = []
    chunks: list[tuple[int, int]] = []
    sims: list[Sim3] = []
    kind = "depth"
    start = 0
    while True:
        if check_interrupt is not None:
            check_interrupt()
        batch = list(carried)
        for frame in it:
            batch.append(frame)
            if len(batch) == chunk_size:
                break
        if len(batch) == len(carried):
            break  # no new view
        res = estimator.estimate(_as_chunk(batch), **estimate_kwargs)
        if not res.has_cameras:
            raise ValueError("the model gives no cameras: long sequences need an any-view Depth Anything 3 model "
                             "(da3-small, da3-base, ...)")
        kind = res.kind
        n_old = len(carried)
        sim = Sim3.identity() if kept is None else _align(res, 0, n_old, kept, max_points)
        chunk = len(chunks)
        for i in range(n_old, len(batch)):
            view = _emit(res, i, start + i, chunk, sim)
            exts.append(view.extrinsics.double())
            ks.append(view.intrinsics)
            if on_view is not None:
                on_view(view)
        chunks.append((start, start + len(batch)))
        sims.append(sim)
        if chunk == 0 and loop_closure:
            first_frames = batch[:overlap]
            first_kept = _keep(res, slice(0, min(overlap, len(batch))), sim)
        keep_n = min(overlap, len(batch))
        kept = _keep(res, slice(len(batch) - keep_n, len(batch)), sim)
        carried = batch[len(batch) - keep_n:]
        start += len(batch) - keep_n
        del res, batch
        if progress is not None:
            progress(len(exts), total)
    if not exts:
        raise ValueError("no frames: the sequence is empty")
    extrinsics, intrinsics = torch.stack(exts), torch.stack(ks)
    scale = torch.ones(len(exts), dtype=torch.float64)
    notes: list[str] = []
    correction = None
    if loop_closure:
        if len(chunks) < 2:
            notes.append("loop closure skipped: the sequence fits one chunk")
        else:
            if check_interrupt is not None:
                check_interrupt()
            correction = _loop_drift(estimator, carried, first_frames, kept, first_kept, max_points, estimate_kwargs)
            extrinsics, scale = _spread(correction, extrinsics)
    return SequenceResult(extrinsics, intrinsics, chunks, sims, scale, correction, kind, notes)


def _loop_drift(estimator, last_frames: list, first_frames: list, last: _Kept, first: _Kept, max_points: int,
                estimate_kwargs: dict) -> Sim3:
    """The drift one pass over the last and first views reveals: the similarity that moves the end of the chain onto
    where the start says it is (see the module docstring)."""
    res = estimator.estimate(_as_chunk(list(last_frames) + list(first_frames)), **estimate_kwargs)
    a = _align(res, 0, len(last_frames), last, max_points)  # loop frame -> world, as the end of the chain has it
    b = _align(res, len(last_frames), len(first_frames), first, max_points)  # loop frame -> world, as the start has it
    return b.compose(a.inverse())


def _spread(correction: Sim3, extrinsics: Tensor) -> tuple[Tensor, Tensor]:
    """View ``i`` moved by ``correction.power(i / (N - 1))``: the cameras and the depth factor of each view."""
    n = extrinsics.shape[0]
    out = torch.empty_like(extrinsics)
    scale = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        part = correction.power(i / (n - 1))
        out[i] = part.apply_extrinsics(extrinsics[i:i + 1])[0]
        scale[i] = part.scale
    return out, scale


# --------------------------------------------------------------------------------------------
# Frame sources


def natural_key(name: str) -> list:
    """Sort key that orders numbers by value: ``frame2`` before ``frame10``.

    Example:
        >>> sorted(["f10.png", "f2.png", "f1.png"], key=natural_key)
        ['f1.png', 'f2.png', 'f10.png']
    """
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def frame_step(source_fps: float | None, target_fps: float | None) -> int:
    """Keep every n-th frame to go from ``source_fps`` to about ``target_fps`` (1 when either is unset or the
    target is not lower).

    Example:
        >>> frame_step(30, 2), frame_step(24, None), frame_step(10, 30)
        (15, 1, 1)
    """
    if not source_fps or not target_fps or target_fps >= source_fps:
        return 1
    return max(1, round(source_fps / target_fps))


def folder_frames(folder: str | os.PathLike, *, step: int = 1,
                  limit: int | None = None) -> tuple[list[Path], Iterator[Tensor]]:
    """The images of a folder in natural order (``frame2`` before ``frame10``), every ``step``-th, read lazily.

    Returns:
        ``(paths, frames)``: the chosen files and an iterator of ``[H, W, 3]`` float32 tensors in 0..1.
    """
    from .io import IMAGE_EXTENSIONS, read_image

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of frames")
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    paths = sorted((p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                   key=lambda p: natural_key(p.name))[::step][:limit]
    if not paths:
        raise ValueError(f"{root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")

    def read() -> Iterator[Tensor]:
        for p in paths:
            yield torch.from_numpy(np.asarray(read_image(p).convert("RGB"), dtype=np.float32) / 255)

    return paths, read()


def tensor_frames(images: Tensor, *, source_fps: float | None = None, fps: float | None = None,
                  limit: int | None = None) -> tuple[int, Iterator[Tensor]]:
    """Frames of an image batch ``[N, H, W, 3]`` (a ComfyUI IMAGE, decoded video frames), every
    :func:`frame_step`-th to go from ``source_fps`` to about ``fps``.

    Example:
        >>> count, it = tensor_frames(torch.zeros(30, 2, 2, 3), source_fps=30, fps=10)
        >>> count, len(list(it))
        (10, 10)
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a batch [N, H, W, 3], got {got}")
    pick = range(0, images.shape[0], frame_step(source_fps, fps))[:limit]
    return len(pick), (images[i] for i in pick)


def video_frames(source, *, fps: float | None = None, limit: int | None = None) -> tuple[int | None, Iterator[Tensor]]:
    """The frames of a video file (PyAV), sampled to about ``fps`` by their timestamps, decoded lazily
    (:func:`anydepth.video_io.read_video`).

    Args:
        source: a path or a binary file object.
        fps: frames per second to keep (``None``: every frame).
        limit: at most this many frames.

    Returns:
        ``(count, frames)``: the number of frames that will come when the container says (else ``None``), and an
        iterator of ``[H, W, 3]`` float32 tensors in 0..1.
    """
    from .video_io import read_video

    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    src = read_video(source, target_fps=fps, max_frames=limit)
    return src.count, src.frames


# --------------------------------------------------------------------------------------------
# Sinks: keep the views in memory, or write them as they come


class GeometryCollector:
    """An ``on_view`` sink that keeps every view (input-size depth, network-size maps and colours) and makes one
    :class:`~anydepth.anyview.GeometryResult` of the whole sequence at the end (memory grows with the views: for
    the nodes and short sequences; long ones go to :class:`SequenceWriter`): pass it as ``on_view``, then call
    :meth:`result` with what :func:`estimate_sequence` returned.
    """

    def __init__(self) -> None:
        self.views: list[SequenceView] = []

    def __call__(self, view: SequenceView) -> None:
        self.views.append(view)

    def result(self, seq: SequenceResult, model_name: str = ""):
        from .anyview import GeometryResult

        scale = seq.depth_scale.float()
        stack = lambda xs: torch.stack(xs) if len({tuple(x.shape) for x in xs}) == 1 else list(xs)  # noqa: E731
        depth = stack([v.depth * scale[i] for i, v in enumerate(self.views)])
        conf = None if self.views[0].confidence is None else stack([v.confidence for v in self.views])
        sky = None if self.views[0].sky is None else stack([v.sky for v in self.views])
        size = tuple(self.views[0].processed_depth.shape)
        return GeometryResult(
            depth=depth, confidence=conf, sky=sky, extrinsics=seq.extrinsics.float(), intrinsics=seq.intrinsics.float(),
            kind=seq.kind, processed_size=size,
            processed_depth=torch.stack([v.processed_depth * scale[i] for i, v in enumerate(self.views)]),
            processed_confidence=None if conf is None else torch.stack([v.processed_confidence for v in self.views]),
            processed_sky=None if sky is None else torch.stack([_processed(v.sky, size) for v in self.views]),
            processed_intrinsics=torch.stack([v.processed_intrinsics for v in self.views]).float(),
            processed_images=torch.stack([v.image for v in self.views]),
            input_sizes=[tuple(v.depth.shape) for v in self.views], model_name=model_name, notes=list(seq.notes))


def _processed(x: Tensor, size: tuple[int, int]) -> Tensor:
    """An input-size map at the network's size (bilinear)."""
    if tuple(x.shape) == size:
        return x.float()
    return torch.nn.functional.interpolate(x[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


class PointReservoir:
    """A uniform random sample of at most ``capacity`` confident points over the whole sequence (reservoir
    sampling), so a point cloud of any number of views takes bounded memory. Use it as (or inside) an ``on_view``
    sink, then :meth:`cloud` gives the points loop-closed.

    Args:
        capacity: points kept in all.
        per_view: at most this many candidates per view (an even subset of its confident pixels).
        conf_percentile: drop this percentage of each view's least confident pixels.
        seed: random seed (the same views give the same cloud).
    """

    def __init__(self, capacity: int = 200_000, per_view: int = 4000, conf_percentile: float = 40.0, seed: int = 0) -> None:
        self.capacity, self.per_view, self.conf_percentile = capacity, per_view, conf_percentile
        self.points = torch.empty(0, 3)
        self.colors = torch.empty(0, 3, dtype=torch.uint8)
        self.view = torch.empty(0, dtype=torch.int64)
        self.seen = 0
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, view: SequenceView) -> None:
        from .geometry import confidence_threshold

        d = view.processed_depth.float()
        pts = depth_to_points(d[None], view.processed_intrinsics[None], view.extrinsics[None])[0].float()
        ok = torch.isfinite(pts).all(-1) & (d > 0)
        if view.processed_confidence is not None and self.conf_percentile > 0:
            conf = view.processed_confidence
            ok &= conf >= confidence_threshold(conf, ok, self.conf_percentile)
        idx = ok.reshape(-1).nonzero()[:, 0]
        idx = idx[:: max(1, -(-idx.numel() // self.per_view))]
        new_p = pts.reshape(-1, 3)[idx]
        new_c = (view.image.reshape(-1, 3)[idx].float().clamp(0, 1) * 255).round().to(torch.uint8)
        m = new_p.shape[0]
        room = max(0, min(m, self.capacity - len(self.points)))
        self.points = torch.cat([self.points, new_p[:room]])
        self.colors = torch.cat([self.colors, new_c[:room]])
        self.view = torch.cat([self.view, torch.full((room,), view.index, dtype=torch.int64)])
        rest = torch.arange(room, m)
        if rest.numel():  # Algorithm R: the t-th point seen replaces a random slot with probability capacity / t
            t = self.seen + rest + 1
            take = torch.rand(rest.numel(), generator=self.gen, dtype=torch.float64) < self.capacity / t.double()
            slots = torch.randint(0, self.capacity, (int(take.sum()),), generator=self.gen)
            src = rest[take]
            self.points[slots], self.colors[slots] = new_p[src], new_c[src]
            self.view[slots] = view.index
        self.seen += m

    def cloud(self, seq: SequenceResult | None = None):
        """The sample as a :class:`~anydepth.geometry.PointCloud`, moved by the loop closure of ``seq`` if any."""
        from .geometry import PointCloud

        pts = self.points.clone()
        if seq is not None and seq.loop_correction is not None:
            for v in self.view.unique().tolist():
                sel = self.view == v
                pts[sel] = seq.correct(v, pts[sel].double()).float()
        return PointCloud(pts, self.colors.clone(), self.view.clone())


class SequenceWriter:
    """An ``on_view`` sink that writes each view as it comes: ``<stem>_depth.npy`` (with its kind), ``_conf.npy``
    and ``_sky.npy``; :meth:`finish` then applies the loop-closure depth factors (rewriting only the files whose
    factor is not 1, one at a time) and writes ``cameras.json`` and, if asked, a COLMAP text model in ``colmap/``.
    The folder is what ``anydepth geometry`` writes, so ``anydepth mesh`` reads it. With ``points`` a bounded
    random sample of confident points (:class:`PointReservoir`) becomes ``points.ply`` and COLMAP's ``points3D.txt``.

    Args:
        folder: the output folder.
        names: ``index -> image name`` (its stem names the files).
        kind: the depth's kind for the files' metadata (taken from the views as they come).
        points: at most this many points in ``points.ply`` / COLMAP (0: none).
    """

    def __init__(self, folder: str | os.PathLike, names: Callable[[int], str], kind: str = "depth",
                 points: int = 200_000) -> None:
        self.folder = Path(folder)
        self.names = names
        self.kind = kind
        self.sizes: list[tuple[int, int]] = []
        self.stems: list[str] = []
        self.reservoir = PointReservoir(points) if points else None

    def __call__(self, view: SequenceView) -> None:
        from .export import save_depth
        from .io import save_npy

        stem = Path(self.names(view.index)).stem
        self.kind = view.kind
        save_depth(self.folder / f"{stem}_depth.npy", view.depth.numpy().astype(np.float32), kind=self.kind)
        if view.confidence is not None:
            save_npy(self.folder / f"{stem}_conf.npy", view.confidence.float().numpy())
        if view.sky is not None:
            save_npy(self.folder / f"{stem}_sky.npy", view.sky.float().numpy())
        self.sizes.append(tuple(view.depth.shape))
        self.stems.append(stem)
        if self.reservoir is not None:
            self.reservoir(view)

    def finish(self, seq: SequenceResult, *, colmap: bool = False) -> list[Path]:
        """Write the cameras (and apply ``seq.depth_scale``); returns the files written here."""
        from .export import load_depth, save_depth
        from .geometry import write_cameras_json, write_colmap_text, write_ply

        for stem, factor in zip(self.stems, seq.depth_scale.tolist()):
            if factor != 1.0:
                path = self.folder / f"{stem}_depth.npy"
                save_depth(path, load_depth(path).depth * np.float32(factor), kind=self.kind)
        names = [self.names(i) for i in range(len(seq))]
        out = [Path(write_cameras_json(self.folder / "cameras.json", seq.extrinsics, seq.intrinsics, names=names,
                                       sizes=self.sizes))]
        cloud = None if self.reservoir is None else self.reservoir.cloud(seq)
        if cloud is not None and len(cloud):
            out.append(Path(write_ply(self.folder / "points.ply", cloud)))
        if colmap:
            out.append(Path(write_colmap_text(self.folder / "colmap", seq.extrinsics, seq.intrinsics, self.sizes, names,
                                              cloud)))
        return out
