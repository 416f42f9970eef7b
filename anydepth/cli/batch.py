"""``anydepth batch``: depth for a whole dataset, locally (streaming) or on a Ray cluster."""

from __future__ import annotations

import argparse

from .jobs import add_job_options, model_options, output_spec, summarize


def add_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("batch", help="depth for a whole dataset (thousands to millions of images), with resume",
                       description="Depth for every image of a dataset, like `estimate`, with engine and I/O controls. "
                                   "Outputs mirror the input folders (a/x.png -> OUT/a/x_depth.png); existing outputs "
                                   "are skipped (resume).")
    b.set_defaults(run=run)
    add_job_options(b, batch_size=8)
    b.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: one process, streaming; ray: Ray Data actors, one model per worker/GPU")
    b.add_argument("--address", default=None,
                   help="Ray cluster address for --engine ray (auto, ray://head:10001); default: start a local Ray")
    b.add_argument("--io-workers", type=int, default=4, help="reader and writer threads (per worker)")
    b.add_argument("--prefetch", type=int, default=2, help="chunks read ahead of the one computing (local)")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (per worker)")
    b.add_argument("--workers", type=int, default=None,
                   help="Ray actors (default: one per GPU, or one per --cpus-per-worker CPUs)")
    b.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per Ray actor (default 1 with GPUs)")
    b.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs reserved per Ray actor (default 1)")


def run(args: argparse.Namespace) -> int:
    from ..batch import run_batch

    report = run_batch(
        args.inputs, args.out, engine=args.engine, spec=output_spec(args), batch_size=args.batch_size,
        overwrite=args.overwrite, recursive=args.recursive, io_workers=args.io_workers, prefetch=args.prefetch,
        threads=args.threads, address=args.address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, **model_options(args))
    return summarize(report, args.out, f"depth files ({args.engine} engine)")
