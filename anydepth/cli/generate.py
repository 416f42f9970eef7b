"""``anydepth generate``: batch depth-conditioned generation with a diffusers pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..catalog import DEFAULT_MODEL
from .options import add_fit_option, add_normalize_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "generate", help="depth-conditioned images for many (image, prompt) items with a diffusers pipeline",
        description="For every item: depth of the image -> control image -> a depth ControlNet / Flux depth "
                    "pipeline. Writes <name>.png, <name>_depth.png and <name>.json per item; finished items "
                    "are skipped on the next run; failed items are listed at the end (exit code 1).")
    g.set_defaults(run=run)
    g.add_argument("--items", required=True,
                   help="folder or glob of images (prompt from --prompt or <stem>.txt), or a .jsonl/.csv file "
                        "with image, prompt[, negative, seed, name]")
    g.add_argument("--pipeline", required=True,
                   help="diffusers pipeline: hub id or folder (SD1.5, SDXL, Flux, FLUX.1-Depth-dev)")
    g.add_argument("--controlnet", default=None, help="depth ControlNet: hub id or folder (not for FLUX.1-Depth-dev)")
    g.add_argument("--out", required=True, type=Path, help="output folder")
    g.add_argument("--prompt", default=None, help="prompt for items without their own")
    g.add_argument("--negative", default=None, help="negative prompt for items without their own")
    g.add_argument("--seed", type=int, default=0, help="base seed: item i without a seed uses SEED + i (default 0)")
    g.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    g.add_argument("--control-scale", type=float, default=1.0, help="ControlNet conditioning scale (default 1.0)")
    g.add_argument("--width", type=int, default=None, help="output width (snapped to the pipeline's multiple)")
    g.add_argument("--height", type=int, default=None,
                   help="output height; default: the pipeline's default area with the input's aspect ratio")
    add_fit_option(g, default="crop")
    g.add_argument("--model", default=DEFAULT_MODEL, help=f"depth model (default {DEFAULT_MODEL})")
    add_normalize_options(g, ("mode", "invert", "gamma"))
    g.add_argument("--depth-input-size", type=int, default=518, help="shorter side the depth network sees")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="pipeline precision (auto: bf16 Flux / fp16 SD on CUDA, fp32 on CPU)")
    g.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    g.add_argument("--offload", default="none", choices=("none", "model", "sequential"),
                   help="pipeline CPU offload: model = enable_model_cpu_offload, sequential = least memory")
    g.add_argument("--overwrite", action="store_true", help="redo items that are finished")
    g.add_argument("--recursive", action="store_true", help="descend into sub-folders (folder input)")
    g.add_argument("--models-dir", default=None, help="where depth models are looked for and downloaded")


def run(args: argparse.Namespace) -> int:
    from ..estimator import DepthEstimator
    from ..generate import GenerateSettings, generate, read_items
    from ..pipelines import load_depth_pipeline

    from ..batch import prepare_output_folder

    items = read_items(args.items, recursive=args.recursive)
    prepare_output_folder(args.out)  # before the pipeline loads: a bad --out fails in a second, not minutes
    try:
        pipe = load_depth_pipeline(args.pipeline, args.controlnet, device=args.device, dtype=args.dtype,
                                   offload=args.offload)
    except OSError as e:  # diffusers: not a folder / repo, missing files
        raise ValueError(f"cannot load pipeline {args.pipeline}"
                         + (f" with ControlNet {args.controlnet}" if args.controlnet else "") + f": {e}") from e
    pipe.set_progress_bar_config(disable=True)
    # The depth model leaves the accelerator after each item, so the pipeline has the memory while denoising.
    estimator = DepthEstimator(args.model, device=args.device, input_size=args.depth_input_size,
                               memory="offload", models_dir=args.models_dir)
    settings = GenerateSettings(
        prompt=args.prompt, negative=args.negative, seed=args.seed, steps=args.steps, guidance_scale=args.guidance,
        control_scale=args.control_scale, width=args.width, height=args.height, normalize=args.normalize,
        invert=args.invert, gamma=args.gamma, fit=args.fit, overwrite=args.overwrite,
    )
    report = generate(pipe, estimator, items, args.out, settings, pipeline_name=args.pipeline,
                      controlnet_name=args.controlnet)
    print(f"generated {len(report.done)} item(s) in {args.out}; skipped {len(report.skipped)} finished; "
          f"{len(report.failed)} failed")
    if report.failed:
        print(f"{len(report.failed)} of {len(items)} item(s) failed:", file=sys.stderr)
        for name, message in report.failed:
            print(f"  {name}: {message}", file=sys.stderr)
    return 1 if report.failed else 0
