"""``anydepth estimate``: depth maps for images and folders (the job engine, in this process)."""

from __future__ import annotations

import argparse

from .jobs import add_job_options, model_options, output_spec, summarize


def add_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("estimate", help="depth maps for images or folders of images",
                       description="Depth for images and folders. Outputs mirror the input folders under --out "
                                   "(a/x.png -> OUT/a/x_depth.png; files given one by one: OUT/x_depth.png); "
                                   "existing outputs are skipped, so a rerun resumes.")
    e.set_defaults(run=run)
    add_job_options(e, batch_size=4)
    e.add_argument("--tile-size", type=int, default=0, metavar="PIXELS",
                   help="0 = off; else native-resolution tiles of this size aligned to a global pass (large images)")
    e.add_argument("--tile-overlap", type=int, default=None, metavar="PIXELS", help="tile blend overlap (default tile-size/4)")
    e.add_argument("--tta", default="none", choices=("none", "flip"), help="flip: average with the mirrored image")


def run(args: argparse.Namespace) -> int:
    from ..batch import run_batch

    report = run_batch(args.inputs, args.out, spec=output_spec(args), batch_size=args.batch_size,
                       overwrite=args.overwrite, recursive=args.recursive, tile_size=args.tile_size,
                       tile_overlap=args.tile_overlap, tta=args.tta, **model_options(args))
    return summarize(report, args.out)
