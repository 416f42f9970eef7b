"""``anydepth batch``: depth for a whole dataset, locally (streaming) or on a Ray cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalog import DEFAULT_MODEL
from .options import add_normalize_options

FORMATS = ("png16", "png8", "npy")


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("batch", help="depth for a whole dataset (thousands to millions of images), with resume",
                       description="Depth for every image of a dataset. Outputs mirror the input folders as "
                                   "<stem>_depth.png/.npy; existing outputs are skipped (resume).")
    b.set_defaults(run=run)
    b.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="folders, glob patterns, image files, or .txt files listing one image path per line")
    b.add_argument("--out", required=True, type=Path, help="output root folder (shared storage for --engine ray)")
    b.add_argument("--model", default=DEFAULT_MODEL, help=f"catalogue name or checkpoint path (default {DEFAULT_MODEL})")
    b.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: one process, streaming; ray: Ray Data actors, one model per worker/GPU")
    b.add_argument("--address", default=None,
                   help="Ray cluster address for --engine ray (auto, ray://head:10001); default: start a local Ray")
    b.add_argument("--format", default="png16", choices=FORMATS,
                   help="png16/png8: normalised control image; npy: raw float32 depth")
    add_normalize_options(b)
    b.add_argument("--batch-size", type=int, default=8, help="images per forward pass / chunk (default 8)")
    b.add_argument("--input-size", type=int, default=518, help="shorter side the network sees, multiple of 14")
    b.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="compute precision")
    b.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    b.add_argument("--io-workers", type=int, default=4, help="reader and writer threads (per worker)")
    b.add_argument("--prefetch", type=int, default=2, help="chunks read ahead of the one computing (local)")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (per worker)")
    b.add_argument("--workers", type=int, default=None,
                   help="Ray actors (default: one per GPU, or one per --cpus-per-worker CPUs)")
    b.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per Ray actor (default 1 with GPUs)")
    b.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs reserved per Ray actor (default 1)")
    b.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    b.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    b.add_argument("--models-dir", default=None, help="where models are looked for and downloaded (ANYDEPTH_MODELS)")
    b.add_argument("--revision", default=None, help="hub branch, tag or commit to download")
    b.add_argument("--kind", default=None, choices=("disparity", "metric_depth"), help="override what the model outputs")
    b.add_argument("--max-depth", type=float, default=None, help="override the metric range in metres")


def run(args: argparse.Namespace) -> int:
    from ..batch import OutputSpec, run_batch

    if args.colormap and args.format != "png8":
        raise SystemExit("anydepth: --colormap gives an 8-bit RGB preview; add --format png8")
    spec = OutputSpec(args.format, args.normalize, args.near, args.far, args.invert, args.gamma, args.colormap)
    report = run_batch(
        args.inputs, args.out, engine=args.engine, spec=spec, batch_size=args.batch_size, overwrite=args.overwrite,
        recursive=args.recursive, io_workers=args.io_workers, prefetch=args.prefetch, threads=args.threads,
        address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        model=args.model if not Path(args.model).exists() else str(Path(args.model).absolute()),
        device=args.device, dtype=args.dtype, input_size=args.input_size, models_dir=args.models_dir,
        revision=args.revision, kind=args.kind, max_depth=args.max_depth,
    )
    rate = f", {report.done / report.seconds:.2f} images/s" if report.seconds and report.done else ""
    print(f"wrote {report.done} depth files to {args.out} with the {args.engine} engine in {report.seconds:.1f} s"
          f"{rate}; skipped {report.skipped} existing")
    for src, err in report.failed:
        print(f"failed: {src}: {err}", file=sys.stderr)
    if report.failed:
        print(f"{len(report.failed)} image(s) failed", file=sys.stderr)
    return 1 if report.failed else 0
