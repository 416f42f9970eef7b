"""``anydepth estimate``: depth maps for images and folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalog import DEFAULT_MODEL
from .options import add_normalize_options

FORMATS = ("png16", "png8", "npy", "exr", "npz")
SUFFIX = {"png16": ".png", "png8": ".png", "npy": ".npy", "exr": ".exr", "npz": ".npz"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("estimate", help="depth maps for images or folders of images")
    e.set_defaults(run=run)
    e.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, folders or glob patterns")
    e.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    e.add_argument("--model", default=DEFAULT_MODEL, help=f"catalogue name or checkpoint path (default {DEFAULT_MODEL})")
    e.add_argument("--input-size", type=int, default=518, help="shorter side the network sees, multiple of 14 (default 518)")
    e.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    e.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="compute precision (default auto)")
    e.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    e.add_argument("--format", default="png16", choices=FORMATS,
                   help="png16/png8: normalised control image; npy: raw float32 depth as the model gives it; "
                        "exr/npz: raw float32 depth with its kind and units (exr needs pip install OpenEXR)")
    add_normalize_options(e)
    e.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    e.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    e.add_argument("--models-dir", default=None, help="where models are looked for and downloaded (ANYDEPTH_MODELS)")
    e.add_argument("--revision", default=None, help="hub branch, tag or commit to download")
    e.add_argument("--kind", default=None, choices=("disparity", "metric_depth"), help="override what the model outputs")
    e.add_argument("--max-depth", type=float, default=None, help="override the metric range in metres")
    e.add_argument("--tile-size", type=int, default=0, metavar="PIXELS",
                   help="0 = off; else native-resolution tiles of this size aligned to a global pass (large images)")
    e.add_argument("--tile-overlap", type=int, default=None, metavar="PIXELS", help="tile blend overlap (default tile-size/4)")
    e.add_argument("--tta", default="none", choices=("none", "flip"), help="flip: average with the mirrored image")



def _output_names(images: list[Path], fmt: str) -> list[str]:
    """``<stem>_depth.<ext>``; inputs sharing a stem (a.png, a.jpg) keep their extension in the name."""
    stems = [p.stem for p in images]
    return [(f"{p.stem}_depth" if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix[1:]}_depth") + SUFFIX[fmt] for p in images]


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..estimator import DepthEstimator
    from ..io import list_images, read_image, save_npy, save_png8, save_png16
    from ..normalize import apply_colormap, normalize_depth, to_uint8, to_uint16

    if args.colormap and args.format != "png8":
        raise SystemExit("anydepth: --colormap gives an 8-bit RGB preview; add --format png8")
    images: list[Path] = []
    for item in args.inputs:
        images += list_images(item, recursive=args.recursive)
    names = _output_names(images, args.format)
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [(src, args.out / n) for src, n in zip(images, names) if args.overwrite or not (args.out / n).exists()]
    skipped = len(images) - len(todo)
    if not todo:
        print(f"all {len(images)} outputs exist in {args.out}; nothing to do (--overwrite recomputes)")
        return 0
    est = DepthEstimator(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                         input_size=args.input_size, models_dir=args.models_dir, revision=args.revision,
                         kind=args.kind, max_depth=args.max_depth, tile_size=args.tile_size,
                         tile_overlap=args.tile_overlap, tta=args.tta)
    if args.normalize.startswith("metric") and args.format not in ("npy", "exr", "npz") and est.kind != "metric_depth":
        raise ValueError(f"--normalize {args.normalize} needs a metric model; {est.model_name} gives {est.kind} "
                         "(use v2_style or minmax, or --kind metric_depth --max-depth M for a metric file)")
    failures: list[tuple[Path, str]] = []
    with tqdm(total=len(todo), unit="img", desc="depth") as bar:
        for start in range(0, len(todo), args.batch_size):
            chunk = todo[start:start + args.batch_size]
            loaded = []
            for src, dst in chunk:
                try:
                    loaded.append((read_image(src), dst))
                except ValueError as err:
                    failures.append((src, str(err)))
                    bar.update(1)
            if not loaded:
                continue
            result = est.estimate([img for img, _ in loaded])
            for depth, (_, dst) in zip(result.maps(), loaded):
                if args.format == "npy":
                    save_npy(dst, depth.numpy().astype(np.float32))
                elif args.format in ("exr", "npz"):
                    from ..export import save_depth

                    save_depth(dst, depth, kind=result.kind, metadata={"model": est.model_name})
                else:
                    x = normalize_depth(depth[None], result.kind, args.normalize, near=args.near, far=args.far,
                                        invert=args.invert, gamma=args.gamma)
                    if args.format == "png16":
                        save_png16(dst, to_uint16(x)[0])
                    elif args.colormap:
                        save_png8(dst, to_uint8(apply_colormap(x, args.colormap))[0])
                    else:
                        save_png8(dst, to_uint8(x)[0])
                bar.update(1)
    done = len(todo) - len(failures)
    print(f"wrote {done} depth maps to {args.out} ({est.model_name}, {result.kind}); skipped {skipped} existing")
    for src, err in failures:
        print(f"failed: {src}: {err}", file=sys.stderr)
    return 1 if failures else 0
