"""GPU throughput and memory of the V2 networks: ViT-S/B/L, batch 1/8/32, fp16 and bf16.

Run where a CUDA GPU is lent (``python bench/bench_cuda.py``; ``--json OUT`` keeps the figures). For each size,
batch and dtype it reports images per second of the whole estimator call (uint8 frames in host memory ->
depth at input size in host memory: upload, resize, normalise, network, resize back, download) and of the network
alone, and the peak GPU memory (``torch.cuda.max_memory_allocated``). Inputs are 640x480 frames (network
518x686), weights random (the speed and memory do not depend on the values).

Without a GPU it says so and exits 0, unless ``--device cpu`` asks for a (slow) run on the CPU to check the script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

SIZES = {"vits": "small", "vitb": "base", "vitl": "large"}


def build(arch: str, device: torch.device, dtype: torch.dtype):
    from anydepth import DepthEstimator
    from anydepth.models import ModelConfig, create_model
    from anydepth.models.config import ARCHS, layer_indices

    torch.manual_seed(0)
    net = create_model(ModelConfig(ARCHS[arch], layer_indices("v2", ARCHS[arch].depth), "disparity", None))
    return DepthEstimator(net, device=device, dtype=dtype, batch_size=1024, memory="keep")


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (kernels, autotuning, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="vits,vitb,vitl")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured (run this where a GPU is lent; --device cpu checks the script)")
        return 0
    rows = []
    frames_all = torch.randint(0, 256, (max(map(int, args.batches.split(","))), 480, 640, 3), dtype=torch.uint8)
    for arch in args.archs.split(","):
        for name in args.dtypes.split(","):
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]
            est = build(arch, device, dtype)
            for batch in map(int, args.batches.split(",")):
                frames = frames_all[:batch]
                x = torch.randn(batch, 3, 518, 686, device=device, dtype=dtype)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    e2e = timed(lambda: est.estimate(frames), device, args.repeats)
                    with torch.inference_mode():
                        net = timed(lambda: est.model(x), device, args.repeats)
                except torch.OutOfMemoryError:
                    rows.append(dict(arch=arch, dtype=name, batch=batch, error="out of memory"))
                    continue
                peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
                row = dict(arch=arch, size=SIZES[arch], dtype=name, batch=batch, images_per_s=round(batch / e2e, 2),
                           network_images_per_s=round(batch / net, 2), peak_mb=None if peak is None else round(peak))
                rows.append(row)
                print(json.dumps(row), flush=True)
            del est
            if device.type == "cuda":
                torch.cuda.empty_cache()
    info = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                torch=torch.__version__, rows=rows)
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
