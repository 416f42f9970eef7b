"""Tiled 4K inference vs running the network on the whole 4K image: time and peak memory.

Run from the repository root::

    python bench/bench_tiling.py [--size 3840x2160] [--tile-size 518] [--input-size 518] [--batch-size 4]
                                 [--dtype fp32] [--device cpu] [--skip-full] [--json OUT]

What it does:

1. builds ONE seeded set of random ViT-S-shaped Depth Anything V2 weights with ``anydepth.models.create_model``
   (no downloads) and saves it; every configuration loads that same file;
2. makes one smooth random image of ``--size`` (W x H);
3. runs each configuration in a fresh subprocess (so memory figures do not leak between them):

   * ``tiled``: ``DepthEstimator(..., tile_size=--tile-size)``: a global pass at ``--input-size`` plus
     native-resolution tiles aligned to it and blended (``anydepth.tiling``);
   * ``full``: the network on the whole image at native resolution (``input_size`` = the image's shorter
     side rounded to 14), "where it fits"; an out-of-memory error is reported as such;
   * ``global``: the plain estimate at ``--input-size`` (what you get without tiling: less detail);

4. per configuration: wall time of one ``estimate`` call (after a warm-up: the same call for ``tiled`` and
   ``global``, a 518-px call for ``full``, whose full-size call is too long to repeat), peak tensor memory
   (``anydepth.profiling.track_peak_memory``: CUDA allocator peak, or on the CPU the allocator's own
   allocation events: tensor memory allocated by the call, not counting the weights and the input);
5. prints the table and the ratios full / tiled.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SEED = 0


def build_model(path: Path) -> None:
    """ViT-S-shaped Depth Anything V2 with seeded random weights, saved as a safetensors checkpoint."""
    from safetensors.torch import save_file

    from anydepth.models import ARCHS, ModelConfig, create_model, layer_indices

    torch.manual_seed(SEED)
    model = create_model(ModelConfig(ARCHS["vits"], layer_indices("v2", 12), name="vits-random"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and ("norm" in name):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))  # LayerNorm gains near 1, as trained nets have
            else:
                p.normal_(0.0, 0.05)
        last = model.depth_head.scratch.output_conv2[2]  # the 1x1 conv before the activation
        last.bias.fill_(1.0)  # keep the final ReLU away from its flat end
        last.weight.mul_(4.0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def make_image(height: int, width: int) -> np.ndarray:
    """Smooth random HWC uint8 image with fine noise (detail for the tiles to find)."""
    rng = np.random.default_rng(SEED)
    yy, xx = np.meshgrid(np.linspace(0, 1, height, dtype=np.float32), np.linspace(0, 1, width, dtype=np.float32),
                         indexing="ij")
    chans = []
    for _ in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        fx, fy, ph = rng.uniform(0.5, 4), rng.uniform(0.5, 4), rng.uniform(0, 2 * np.pi)
        chans.append(0.5 + 0.25 * (a * xx + b * yy) + 0.2 * c * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph))
    img = np.stack(chans, -1) + rng.normal(0, 0.03, (height, width, 3)).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def worker(args: argparse.Namespace) -> dict:
    """One configuration in this (fresh) process; returns its figures."""
    from anydepth import DepthEstimator
    from anydepth.memory import is_oom
    from anydepth.preprocess import network_size
    from anydepth.profiling import track_peak_memory

    torch.set_num_threads(args.threads or torch.get_num_threads())
    image = torch.from_numpy(np.load(args.image))  # [H, W, 3] uint8
    h, w = image.shape[:2]
    est = DepthEstimator(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                         input_size=args.input_size)
    dev = est.policy.device
    if args.worker == "tiled":
        call = lambda: est.estimate(image, tile_size=args.tile_size)  # noqa: E731
        warm = call
    elif args.worker == "global":
        call = lambda: est.estimate(image)  # noqa: E731
        warm = call
    else:
        native = 14 * round(min(h, w) / 14)
        call = lambda: est.estimate(image, input_size=native)  # noqa: E731
        warm = lambda: est.estimate(image[:518, :518], input_size=518)  # noqa: E731
    warm()
    out: dict = {"config": args.worker, "device": str(dev), "dtype": str(est.dtype).replace("torch.", "")}
    try:
        t0 = time.perf_counter()
        with track_peak_memory(dev) as peak:
            depth = call().depth
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        out["seconds"] = time.perf_counter() - t0
        out["peak_tensor_mib"] = peak.peak_mib
        out["shape"] = list(depth.shape)
    except Exception as e:  # noqa: BLE001 - "where it fits"
        if not is_oom(e):
            raise
        out["error"] = f"out of memory: {str(e).splitlines()[0][:200]}"
    if args.worker == "tiled":
        from anydepth.tiling import make_tile_grid

        out["tiles"] = len(make_tile_grid(h, w, args.tile_size))
        out["global_size"] = list(network_size(h, w, args.input_size))
    return out


def run_config(name: str, args: argparse.Namespace, model: Path, image: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--model", str(model), "--image", str(image),
           "--tile-size", str(args.tile_size), "--input-size", str(args.input_size), "--batch-size", str(args.batch_size),
           "--dtype", args.dtype, "--threads", str(args.threads or 0)]
    if args.device:
        cmd += ["--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return {"config": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="3840x2160", help="W x H of the test image (default 3840x2160)")
    p.add_argument("--tile-size", type=int, default=518)
    p.add_argument("--input-size", type=int, default=518, help="global pass (and plain estimate) input size")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--dtype", default="fp32", choices=("auto", "fp32", "fp16", "bf16"))
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--skip-full", action="store_true", help="skip the whole-image run (minutes on a CPU)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per configuration")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--image", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        model, image = Path(tmp) / "depth_anything_v2_vits_random.safetensors", Path(tmp) / "image.npy"
        build_model(model)
        np.save(image, make_image(h, w))
        configs = ["tiled", "global"] + ([] if args.skip_full else ["full"])
        results = {name: run_config(name, args, model, image) for name in configs}

    print(f"\nTiled vs whole-image inference, {w}x{h}, ViT-S random weights, {args.dtype}, "
          f"tile {args.tile_size} px, global pass {args.input_size} px, {args.batch_size} tiles per forward")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"{'config':<8} {'seconds':>9} {'peak tensor MiB':>16}  notes")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<8} {'-':>9} {'-':>16}  {r['error']}")
            continue
        note = f"{r['tiles']} tiles + global {r['global_size'][1]}x{r['global_size'][0]}" if name == "tiled" else (
            "network at native resolution" if name == "full" else "no tiling: network at the input size only")
        print(f"{name:<8} {r['seconds']:>9.2f} {r['peak_tensor_mib']:>16.1f}  {note}")
    t, f = results.get("tiled", {}), results.get("full", {})
    if "seconds" in t and "seconds" in f:
        print(f"\nfull / tiled: time {f['seconds'] / t['seconds']:.2f}x, "
              f"peak tensor memory {f['peak_tensor_mib'] / t['peak_tensor_mib']:.2f}x")
    elif "seconds" in t and "error" in f:
        print(f"\nthe whole image did not fit ({f['error']}); tiled peak {t['peak_tensor_mib']:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
