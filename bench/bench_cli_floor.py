"""How close `anydepth estimate` comes to the machine's fp32 floor, whole process included.

Run from the repository root (after ``pip install -e .``)::

    python bench/bench_cli_floor.py [--images 16] [--size 640x480] [--repeats 2] [--batch-size 4] [--reference]

The floor is the time the network's arithmetic would take at this machine's own fp32 GEMM peak, measured in the
same run: ViT-S Depth Anything V2 at 518x686 (the network size of a 640x480 image) is 167.5 GFLOP per image,
attention counted. The figure of merit is ``floor / wall time`` of the whole CLI process (python start, imports,
model load, decoding, preprocessing, inference, normalisation, PNG writing): 1.0 would mean every cycle did GEMM
work at peak. ``--reference`` also times the transformers depth-estimation pipeline over the same weights and
images (in-process, model built before timing, so it is favoured) for the same ratio.

Nothing is downloaded: the ViT-S weights are random and written as ``depth_anything_v2_vits.pth`` (the original
layout), which the CLI loads through its real loader.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

GFLOP_PER_IMAGE = 167.5  # ViT-S + DPT at 518x686 (37x49 patches), multiply-adds x2, attention included


def gemm_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """The machine's fp32 matrix-multiply rate with torch's default threads (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def write_inputs(folder: Path, n: int, width: int, height: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    for i in range(n):
        base = np.stack([np.sin(6 * x + i) + y, np.cos(5 * y - i) + x, x * y * 3], -1)
        img = (base - base.min()) / np.ptp(base) * 200 + rng.integers(0, 40, (height, width, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"img{i:03d}.jpg", quality=92)


def write_model(path: Path) -> Path:
    from anydepth.models import ModelConfig, create_model
    from anydepth.models.config import ARCHS, layer_indices

    torch.manual_seed(0)
    model = create_model(ModelConfig(ARCHS["vits"], layer_indices("v2", 12), "disparity", None))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    torch.save(model.state_dict(), path)
    return path


def time_cli(inputs: Path, model: Path, out: Path, batch_size: int, dtype: str) -> float:
    cmd = [sys.executable, "-m", "anydepth.cli", "estimate", str(inputs), "--model", str(model), "--out", str(out),
           "--dtype", dtype, "--batch-size", str(batch_size), "--overwrite"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


def time_reference(inputs: Path, batch_size: int) -> float:
    """transformers' pipeline on the same images, ViT-S shapes, random weights (built before timing)."""
    from PIL import Image
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, pipeline
    from transformers.models.dpt import DPTImageProcessor

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518,
                            patch_size=14, out_indices=[3, 6, 9, 12], reshape_hidden_states=False, layerscale_value=1.0)
    cfg = DepthAnythingConfig(backbone_config=backbone, fusion_hidden_size=64, neck_hidden_sizes=[48, 96, 192, 384],
                              head_hidden_size=32, reassemble_hidden_size=384)
    model = DepthAnythingForDepthEstimation(cfg).eval()
    proc = DPTImageProcessor(do_resize=True, size={"height": 518, "width": 518}, keep_aspect_ratio=True,
                             ensure_multiple_of=14, resample=3, do_pad=False)
    pipe = pipeline("depth-estimation", model=model, image_processor=proc, device="cpu")
    paths = sorted(inputs.iterdir())
    start = time.perf_counter()
    for i, out in enumerate(pipe([Image.open(p) for p in paths], batch_size=batch_size)):
        out["depth"].save(Path(tempfile.gettempdir()) / f"ref_{i}.png")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", default="640x480", help="WxH (the floor's GFLOP figure is for 640x480)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "auto"))
    ap.add_argument("--reference", action="store_true", help="also time transformers' pipeline")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        write_inputs(tmp / "in", args.images, width, height)
        model = write_model(tmp / "depth_anything_v2_vits.pth")
        # The peak is measured before and after the runs and the higher one counts: other load on the machine
        # then lowers the fraction rather than flattering it.
        peak = gemm_peak_gflops()
        runs = [time_cli(tmp / "in", model, tmp / "out", args.batch_size, args.dtype) for _ in range(args.repeats)]
        peak = max(peak, gemm_peak_gflops())
        floor = args.images * GFLOP_PER_IMAGE / peak
        res = {"cpu": _cpu(), "threads": torch.get_num_threads(), "gemm_peak_gflops": round(peak, 1),
               "images": args.images, "size": args.size, "floor_s": round(floor, 2), "cli_runs_s": [round(r, 2) for r in runs],
               "cli_fraction_of_floor": round(floor / min(runs), 3), "dtype": args.dtype}
        if args.reference:
            ref = min(time_reference(tmp / "in", args.batch_size) for _ in range(args.repeats))
            res.update(reference_s=round(ref, 2), reference_fraction_of_floor=round(floor / ref, 3))
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


def _cpu() -> str:
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor()


if __name__ == "__main__":
    main()
