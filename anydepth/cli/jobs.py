"""What ``estimate`` and ``batch`` share: the options of a depth job and its summary, over one engine
(:func:`anydepth.batch.run_batch`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalog import DEFAULT_MODEL
from ..export import CONTROL_FORMATS, OUTPUT_FORMATS, RAW_FORMATS, check_format
from .options import add_max_tokens_option, add_normalize_options

FORMAT_HELP = (f"control images (normalised pictures, near = bright): {', '.join(CONTROL_FORMATS)}; "
               f"raw depth (the model's values with kind and units; metres stay metres): {', '.join(RAW_FORMATS)} "
               "(exr needs pip install OpenEXR). Default control_png16")


def _format(value: str) -> str:
    try:
        return check_format(value)
    except ValueError as e:  # argparse shows it as a usage error, with the new name of a retired one
        raise argparse.ArgumentTypeError(str(e)) from None


def add_job_options(p: argparse.ArgumentParser, *, batch_size: int) -> None:
    """Inputs, output, model, precision, format and normalisation: the options of every depth job."""
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders, glob patterns, or .txt files listing one image path per line")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder (created if missing); outputs mirror the inputs' folders: "
                        "a/x.png -> OUT/a/x_depth.png")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"catalogue name or checkpoint path (default {DEFAULT_MODEL})")
    p.add_argument("--format", default="control_png16", type=_format, metavar="{" + ",".join(OUTPUT_FORMATS) + "}",
                   help=FORMAT_HELP)
    add_normalize_options(p)
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"images per forward pass (default {batch_size})")
    p.add_argument("--input-size", type=int, default=518, help="shorter side the network sees, multiple of 14 (default 518)")
    add_max_tokens_option(p, "input-size", 518)
    p.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="compute precision (default auto)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--models-dir", default=None, help="where models are looked for and downloaded (ANYDEPTH_MODELS)")
    p.add_argument("--revision", default=None, help="hub branch, tag or commit to download")
    p.add_argument("--kind", default=None, choices=("disparity", "metric_depth"), help="override what the model outputs")
    p.add_argument("--max-depth", type=float, default=None, help="override the metric range in metres")


def output_spec(args: argparse.Namespace):
    """The :class:`~anydepth.batch.OutputSpec` the options ask for (checked)."""
    from ..batch import OutputSpec

    if args.colormap and args.format != "control_png8":
        raise ValueError("--colormap gives an 8-bit RGB preview; add --format control_png8")
    spec = OutputSpec(args.format, args.normalize, args.near, args.far, args.invert, args.gamma, args.colormap)
    spec.check()
    return spec


def model_options(args: argparse.Namespace) -> dict:
    """The DepthEstimator keyword arguments the options ask for."""
    model = str(Path(args.model).absolute()) if Path(args.model).exists() else args.model
    return dict(model=model, device=args.device, dtype=args.dtype, input_size=args.input_size, max_tokens=args.max_tokens,
                models_dir=args.models_dir, revision=args.revision, kind=args.kind, max_depth=args.max_depth)


def summarize(report, out: Path, what: str = "depth files") -> int:
    """Print what is on disk and every failure; the exit status (1 when any image failed)."""
    rate = f" in {report.seconds:.1f} s ({report.done / report.seconds:.2f} images/s)" \
        if report.seconds and report.done else ""
    print(f"{report.on_disk} of {report.total} {what} in {out}: {report.done} written now{rate}, "
          f"{report.skipped} already there" + (", nothing to do (--overwrite recomputes)"
                                               if not report.done and not report.failed else ""))
    for src, err in report.failed:
        print(f"failed: {src}: {err}", file=sys.stderr)
    if report.failed:
        print(f"{len(report.failed)} of {report.total} image(s) failed; fix or remove them and run the same "
              "command again (finished outputs are kept)", file=sys.stderr)
    return 1 if report.failed else 0
