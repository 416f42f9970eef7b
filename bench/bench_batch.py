"""Dataset benchmark: ``anydepth batch`` (local engine) vs a plain loop over transformers' pipeline.

Run from the repository root::

    python bench/bench_batch.py [--images 64] [--size 640x480] [--batch-size 8] [--repeats 1] [--json OUT]

Both sides go from image files on disk to 8-bit depth PNGs on disk, with the same ViT-S-shaped
Depth Anything V2 random weights (seeded, built from a config: no hub access):

* reference: ``transformers.pipeline("depth-estimation", model=<folder>)`` called once per image in a
  Python loop, saving its ``"depth"`` PIL image (what most scripts do);
* anydepth: :func:`anydepth.batch.run_batch` with the local engine (threaded reads, batched inference,
  threaded atomic writes), ``--format control_png8 --normalize minmax`` (the same min-max 8-bit picture the
  pipeline gives), once in fp32 (the reference's precision) and once with ``dtype="auto"`` (bf16 on
  CPUs with native bf16).

Times include loading the model from the folder. The runs are interleaved when ``--repeats`` > 1 and
the best time of each is kept. Printed: images/s of each and the ratio to the reference, plus the
mean absolute difference between the two sides' PNGs (0..255) as a sanity check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny.py: seeded random transformers Depth Anything models

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def make_images(folder: Path, n: int, height: int, width: int, seed: int = 0) -> list[Path]:
    """Smooth random photos-like PNGs (gradients + low-frequency waves + mild noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height, dtype=np.float32), np.linspace(0, 1, width, dtype=np.float32),
                         indexing="ij")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        chans = []
        for _ in range(3):
            a, b, c = rng.uniform(-1, 1, 3)
            fx, fy, ph = rng.uniform(0.5, 4), rng.uniform(0.5, 4), rng.uniform(0, 2 * np.pi)
            chans.append(0.5 + 0.25 * (a * xx + b * yy) + 0.2 * c * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph))
        img = np.clip(np.stack(chans, -1) + rng.normal(0, 0.03, (height, width, 3)), 0, 1)
        path = folder / f"img{i:04d}.png"
        Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def build_model(folder: Path) -> Path:
    """ViT-S Depth Anything V2 with seeded random weights, saved as a ``-hf`` folder with its processor."""
    import transformers
    from tiny import VITS, hf_model

    model = hf_model(VITS, seed=0)
    model.save_pretrained(folder)
    cls = getattr(transformers, "DPTImageProcessorPil", None) or transformers.DPTImageProcessor
    # as the published Depth-Anything-V2-Small-hf preprocessor_config.json
    cls(do_resize=True, size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
        resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225], do_pad=False).save_pretrained(folder)
    return folder


def run_reference(model_dir: Path, paths: list[Path], out: Path) -> float:
    from transformers import pipeline

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pipe = pipeline("depth-estimation", model=str(model_dir), device="cpu")
    for p in paths:
        pipe(Image.open(p))["depth"].save(out / f"{p.stem}_depth.png")
    return time.perf_counter() - start


def run_anydepth(model_dir: Path, folder: Path, out: Path, dtype: str, batch_size: int) -> float:
    from anydepth.batch import OutputSpec, run_batch

    start = time.perf_counter()
    report = run_batch([folder], out, spec=OutputSpec("control_png8", "minmax"), batch_size=batch_size, progress=False,
                       model=str(model_dir), dtype=dtype, device="cpu")
    elapsed = time.perf_counter() - start
    if not report.ok or report.done != len(list(folder.glob("*.png"))):
        raise RuntimeError(f"anydepth batch failed: {report}")
    return elapsed


def mean_abs_diff(a: Path, b: Path) -> float:
    diffs = [np.abs(np.asarray(Image.open(p), dtype=np.float32) - np.asarray(Image.open(b / p.name), dtype=np.float32)).mean()
             for p in sorted(a.glob("*.png"))]
    return float(np.mean(diffs))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", default="640x480", help="W x H of the test images")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    work = Path(tempfile.mkdtemp(prefix="anydepth-bench-batch-"))
    try:
        model_dir = build_model(work / "depth-anything-v2-vits-random-hf")
        images = work / "images"
        paths = make_images(images, args.images, height, width)
        runs = {
            "transformers pipeline loop (fp32)": lambda o: run_reference(model_dir, paths, o),
            "anydepth batch local (fp32)": lambda o: run_anydepth(model_dir, images, o, "fp32", args.batch_size),
            "anydepth batch local (dtype auto)": lambda o: run_anydepth(model_dir, images, o, "auto", args.batch_size),
        }
        best = {name: float("inf") for name in runs}
        outs = {name: work / f"out{i}" for i, name in enumerate(runs)}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                shutil.rmtree(outs[name], ignore_errors=True)
                best[name] = min(best[name], fn(outs[name]))
        ref = "transformers pipeline loop (fp32)"
        from anydepth.memory import resolve_dtype

        results = {
            "images": args.images, "size": f"{width}x{height}", "batch_size": args.batch_size,
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "auto_dtype": str(resolve_dtype("auto", torch.device("cpu"))).replace("torch.", ""),
            "runs": {name: {"seconds": round(t, 2), "images_per_s": round(args.images / t, 3),
                            "ratio_vs_reference": round(best[ref] / t, 2)} for name, t in best.items()},
            "mean_abs_diff_png_0_255": {name: round(mean_abs_diff(outs[ref], outs[name]), 2)
                                        for name in runs if name != ref},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.images} images {width}x{height}, ViT-S random weights, CPU, {results['torch_threads']} torch threads "
          f"(auto = {results['auto_dtype']}), batch size {args.batch_size}, model load included\n")
    print(f"{'run':38s} {'seconds':>8s} {'images/s':>9s} {'ratio':>6s}")
    for name, r in results["runs"].items():
        print(f"{name:38s} {r['seconds']:8.2f} {r['images_per_s']:9.3f} {r['ratio_vs_reference']:5.2f}x")
    for name, d in results["mean_abs_diff_png_0_255"].items():
        print(f"mean |PNG difference| vs reference, {name}: {d} / 255")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
