"""``anydepth video``: temporally consistent depth for a video file or a folder of frames (Video Depth Anything).

Frames stream in and depth streams out (:meth:`anydepth.video_model.VideoDepthEstimator.iter_depth`): per-frame
formats are written as each frame is final, so memory is set by the model's window, not by the clip. Every file is
written atomically; ``OUT/video.json`` records the run's settings and, at the end, that it is complete.

Resume: a rerun of a complete run does nothing. After an interrupt the depth is computed again from the first
frame (each frame's depth depends on the frames before it, through the windows or the streaming cache), and only
the missing files are written; finished files are kept (``--overwrite`` rewrites them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

VIDEO_FORMATS: tuple[str, ...] = ("npy", "npz", "control_png16", "control_png8", "video")
"""``npy``: raw float32 per frame (+ JSON sidecar); ``npz``: one file with every frame (``depth`` [T, H, W]);
``control_png16`` / ``control_png8``: a PNG sequence (one mapping for the clip); ``video``: ``depth.mp4``."""

RANGE_FRAMES = 32
"""Frames whose depth fixes the clip's control mapping (one window of Video Depth Anything)."""

MANIFEST = "video.json"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..normalize import COLORMAPS
    from .options import add_max_tokens_option

    v = sub.add_parser("video", help="temporally consistent depth for a video or a folder of frames (Video Depth Anything)",
                       description="Video Depth Anything over a video file or a folder of frames (natural order: "
                                   "frame2 before frame10), in bounded memory. Raw formats keep the model's values "
                                   "(metres for metric models); control formats and the depth video use one "
                                   "mapping for the whole clip (near = bright). A rerun resumes.")
    v.set_defaults(run=run)
    v.add_argument("input", type=Path, metavar="INPUT", help="a video file or a folder of frames")
    v.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    v.add_argument("--model", default="vda-small",
                   help="Video Depth Anything catalogue name (vda-small, vda-metric-large, ...) or checkpoint path "
                        "(default vda-small)")
    v.add_argument("--format", default="control_png16", choices=VIDEO_FORMATS,
                   help="npy (raw per frame), npz (raw, one file), control_png16 / control_png8 (PNG sequence), "
                        "video (depth.mp4) (default control_png16)")
    v.add_argument("--colormap", default=None, choices=COLORMAPS,
                   help="colour the depth video or control_png8 frames (default grey)")
    v.add_argument("--input-size", type=int, default=518, help="shorter side the network sees, multiple of 14 (default 518)")
    add_max_tokens_option(v, "input-size", 518)
    v.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="compute precision (default auto)")
    v.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    v.add_argument("--batch-size", type=int, default=4, help="frames per backbone pass (default 4; a window is 32)")
    v.add_argument("--streaming", action="store_true",
                   help="online mode: one frame at a time against cached states (constant memory, a little less "
                        "consistent than the default offline windows)")
    v.add_argument("--target-fps", type=float, default=None, help="video: frames per second to keep (default all)")
    v.add_argument("--max-frames", type=int, default=None, help="at most this many frames")
    v.add_argument("--overwrite", action="store_true", help="recompute and rewrite outputs that already exist")
    v.add_argument("--models-dir", default=None, help="where models are looked for and downloaded (ANYDEPTH_MODELS)")
    v.add_argument("--revision", default=None, help="hub branch, tag or commit to download")


def _settings(args: argparse.Namespace) -> dict:
    """What decides the outputs: a rerun with other settings must not mix its files with these."""
    return {"input": str(args.input.resolve()), "model": str(args.model), "format": args.format,
            "colormap": args.colormap, "input_size": args.input_size, "streaming": args.streaming,
            "target_fps": args.target_fps, "max_frames": args.max_frames,
            # only when set, so that a run from before the option resumes with the default budget
            **({"max_tokens": args.max_tokens} if args.max_tokens is not None else {})}


def _write_manifest(out: Path, manifest: dict) -> None:
    from ..io import atomic_write

    text = json.dumps(manifest, indent=1).encode()
    atomic_write(out / MANIFEST, lambda f: f.write(text))


def _previous(out: Path, settings: dict, overwrite: bool) -> dict | None:
    """The manifest of an earlier run into ``out`` with the same settings (None: none); another run's is an error."""
    path = out / MANIFEST
    if not path.is_file() or overwrite:
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("settings") != settings:
        changed = sorted(k for k in settings if manifest.get("settings", {}).get(k) != settings[k])
        raise ValueError(f"{out} holds the outputs of a run with other settings ({', '.join(changed)}); use another "
                         "--out, or --overwrite to replace them")
    return manifest


def run(args: argparse.Namespace) -> int:
    from ..video_io import open_frames
    from ..video_model import VideoDepthEstimator

    if args.colormap and args.format not in ("video", "control_png8"):
        raise ValueError("--colormap colours the depth video or 8-bit PNGs; add --format video or --format control_png8")
    from ..batch import prepare_output_folder

    out = prepare_output_folder(args.out)  # a file in the way or no permission: one line, before any work
    settings = _settings(args)
    previous = _previous(out, settings, args.overwrite)
    if previous and previous.get("complete") and all((out / f).is_file() for f in previous.get("files", [])):
        print(f"{len(previous['files'])} files of {previous['frames']} frames already in {out}, nothing to do "
              "(--overwrite recomputes)")
        return 0
    src = open_frames(args.input, target_fps=args.target_fps, max_frames=args.max_frames)
    model = str(Path(args.model).absolute()) if Path(args.model).exists() else args.model
    est = VideoDepthEstimator(model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                              input_size=args.input_size, max_tokens=args.max_tokens, models_dir=args.models_dir,
                              revision=args.revision)
    _write_manifest(out, {"settings": settings, "complete": False})
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        of = f"/{total}" if total else f"/{src.count}" if src.count else ""
        print(f"  {done}{of} frames ({time.perf_counter() - start:.1f} s)", file=sys.stderr)

    depth = est.iter_depth(src.frames, streaming=args.streaming, callback=progress)
    meta = {"model": est.model_name, "source": str(args.input)}
    files, written = _write(args, src, depth, est.kind, meta, out)
    _write_manifest(out, {"settings": settings, "complete": True, "frames": written, "kind": est.kind,
                          "model": est.model_name, "fps": src.fps, "files": files})
    seconds = time.perf_counter() - start
    print(f"{written} frames of depth ({est.kind}, {est.model_name}) in {out}: {len(files)} files "
          f"in {seconds:.1f} s ({written / seconds:.2f} frames/s)")
    return 0


def _write(args: argparse.Namespace, src, depth: Iterator, kind: str, meta: dict, out: Path) -> tuple[list[str], int]:
    """Write the depth maps as ``args.format`` asks; ``(files relative to out, frames)``."""
    from ..export import save_control_image, save_depth

    if args.format == "npz":
        return _write_npz(out / "depth.npz", depth, kind, {**meta, "fps": src.fps})
    if args.format == "npy":
        files = []
        for i, d in enumerate(depth):
            name = f"{src.name(i)}_depth.npy"
            if args.overwrite or not (out / name).is_file():
                save_depth(out / name, d, kind=kind, metadata={**meta, "frame": i})
            files.append(name)
        return files, len(files)
    pictures = _control_pictures(depth, kind)
    if args.format == "video":
        from ..video_io import DepthVideoWriter

        with DepthVideoWriter(out / "depth.mp4", src.fps or 24.0, colormap=args.colormap) as writer:
            for x01 in pictures:
                writer.write(x01)
        return ["depth.mp4"], writer.frames
    files = []
    for i, x01 in enumerate(pictures):
        name = f"{src.name(i)}_depth.png"
        if args.overwrite or not (out / name).is_file():
            image = x01 if not args.colormap else _colour(x01, args.colormap)
            save_control_image(out / name, image, format=args.format, metadata={**meta, "mode": "clip_v2_style"})
        files.append(name)
    return files, len(files)


def _colour(x01, name: str):
    from ..normalize import apply_colormap

    return apply_colormap(x01[None], name)[0]


def _control_pictures(depth: Iterator, kind: str) -> Iterator:
    """Control pictures (0..1, near = 1) with one mapping fixed by the first :data:`RANGE_FRAMES` frames."""
    import torch

    from ..video_io import ClipRange

    head = []
    for d in depth:
        head.append(d)
        if len(head) == RANGE_FRAMES:
            break
    if not head:
        return
    mapping = ClipRange.of(torch.stack(head), kind)
    for d in head:
        yield mapping.apply(d)
    del head
    for d in depth:
        yield mapping.apply(d)


def _write_npz(path: Path, depth: Iterator, kind: str, meta: dict) -> tuple[list[str], int]:
    """One compressed ``.npz``: ``depth`` [T, H, W] float32 and ``metadata`` (JSON: kind, units, model, fps).

    The maps are spooled to a temporary file beside ``path`` as they come, then streamed into the archive: an
    ``.npy`` header needs the frame count first, and holding the clip in RAM would not fit a long video."""
    import shutil
    import tempfile
    import zipfile

    import numpy as np

    from ..io import atomic_write
    from ..kinds import UNITS

    with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".spool") as spool:
        shape, frames = None, 0
        for d in depth:
            a = np.ascontiguousarray(d.float().numpy(), dtype="<f4")
            shape = shape or a.shape
            spool.write(a.tobytes())
            frames += 1
        spool.seek(0)
        text = np.array(json.dumps({"kind": kind, "units": UNITS.get(kind), **meta, "frames": frames}))
        header = {"descr": "<f4", "fortran_order": False, "shape": (frames, *shape)}

        def write(f) -> None:  # what np.savez_compressed writes, one member at a time
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
                with z.open("depth.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(member, header)
                    shutil.copyfileobj(spool, member, 1 << 20)
                with z.open("metadata.npy", "w") as member:
                    np.lib.format.write_array(member, text)

        atomic_write(path, write)
    return [path.name], frames
