"""``anydepth sequence``: Depth Anything 3 over a long video or frame folder, in chunks aligned into one world frame."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_max_tokens_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sequence", help="Depth Anything 3 for a long video or frame folder in bounded memory",
                       description="Runs the views in overlapping chunks and aligns each chunk to the last by a "
                                   "similarity transform (scale included), so memory is set by --chunk-size, not by "
                                   "the number of views. Writes <frame>_depth.npy / _conf.npy per view as it goes, then "
                                   "cameras.json, points.ply and (--colmap) a COLMAP text model: the layout of "
                                   "`anydepth geometry`, which `anydepth mesh OUT` reads.")
    s.set_defaults(run=run)
    s.add_argument("source", type=Path, help="a video file or a folder of frames (natural order: frame2 before frame10)")
    s.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    s.add_argument("--model", default="da3-small", help="DA3 any-view catalogue name or folder (default da3-small)")
    s.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="compute precision")
    s.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    s.add_argument("--process-res", type=int, default=504, help="longer side the network sees (default 504)")
    add_max_tokens_option(s, "process-res", 504)
    s.add_argument("--chunk-size", type=int, default=16, help="views per network pass: sets the memory (default 16)")
    s.add_argument("--overlap", type=int, default=4, help="views shared by consecutive chunks (default 4)")
    s.add_argument("--loop-closure", action="store_true", help="the path returns to its start: correct the drift")
    s.add_argument("--fps", type=float, default=None, help="video: frames per second to keep (default every frame)")
    s.add_argument("--step", type=int, default=1, help="frame folder: keep every n-th frame (default 1)")
    s.add_argument("--limit", type=int, default=None, help="at most this many views")
    s.add_argument("--points", type=int, default=200_000, help="points in points.ply / COLMAP, a random sample (0: none)")
    s.add_argument("--colmap", action="store_true", help="also write a COLMAP text model into OUT/colmap")
    s.add_argument("--no-frames", action="store_true", help="video: do not save the sampled frames in OUT/images")
    s.add_argument("--models-dir", default=None, help="where models are looked for and downloaded (ANYDEPTH_MODELS)")
    s.add_argument("--revision", default=None, help="hub branch, tag or commit to download")


def run(args: argparse.Namespace) -> int:
    import time

    from ..anyview import AnyViewEstimator
    from ..sequence import SequenceWriter, estimate_sequence, folder_frames, video_frames

    from ..batch import prepare_output_folder

    out = prepare_output_folder(args.out)  # a file in the way or no permission: one line, before any work
    if args.source.is_dir():
        paths, frames = folder_frames(args.source, step=args.step, limit=args.limit)
        total = len(paths)
        names = lambda i: paths[i].name  # noqa: E731
    else:
        total, frames = video_frames(args.source, fps=args.fps, limit=args.limit)
        names = lambda i: f"frame_{i:06d}.png"  # noqa: E731
        if not args.no_frames:  # the images the cameras refer to (colours, training), saved as they are read
            frames = _saving(frames, out / "images", names)
    est = AnyViewEstimator(args.model, device=args.device, dtype=args.dtype, process_res=args.process_res,
                           max_tokens=args.max_tokens, models_dir=args.models_dir, revision=args.revision)
    writer = SequenceWriter(out, names, points=args.points)
    start = time.perf_counter()

    def progress(done: int, count: int | None) -> None:
        of = f"/{count}" if count else ""
        print(f"  {done}{of} views ({time.perf_counter() - start:.1f} s)", file=sys.stderr)

    seq = estimate_sequence(est, frames, chunk_size=args.chunk_size, overlap=args.overlap, loop_closure=args.loop_closure,
                            on_view=writer, progress=progress, total=total)
    files = writer.finish(seq, colmap=args.colmap)
    for note in seq.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {len(seq)} depth maps, {', '.join(p.name for p in files)} to {out} ({est.model_name}, "
          f"{len(seq.chunks)} chunks)")
    return 0


def _saving(frames, folder: Path, names):
    """The frames, each saved as ``folder/<name>`` (PNG) when it is read."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray((frame.numpy() * 255).round().astype(np.uint8)).save(folder / names(i))
        yield frame
