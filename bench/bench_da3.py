"""Depth Anything 3 benchmark: anydepth vs the official network, same random DA3-SMALL weights.

Run from the repository root::

    python bench/bench_da3.py [--views 1,4,16] [--size 504x378] [--dtypes fp32,auto] [--repeats 1] [--threads N]
                              [--json OUT]

What it does:

1. builds the official DA3-SMALL network (``depth-anything-3==0.1.1``:
   ``create_object(load_config(MODEL_REGISTRY["da3-small"]))``) with seeded random weights and loads the
   same tensors into anydepth through its converter (``convert_da3``, strict load);
2. for each view count and dtype mode, in a fresh subprocess per implementation: one untimed warm-up
   pass with one view, then ``--repeats`` timed forward passes (the best counts) of ``N`` views of ``--size`` (W x H; 504 px on the
   longer side, the official ``process_res``) -> depth, confidence, extrinsics, intrinsics;
3. reports views/s and the peak memory of that pass above what was allocated before it
   (CUDA: ``max_memory_allocated``; CPU: the bytes of tensors alive at once, see :class:`LiveTensorPeak`),
   and the ratios anydepth / official.

Dtype modes: ``fp32`` runs both networks in fp32. ``auto`` runs each implementation's own default: the
official ``DepthAnything3.forward`` autocasts to bf16 where CUDA supports it and fp16 otherwise (also on
CPU, it checks ``torch.cuda.is_bf16_supported()``); anydepth's ``dtype="auto"`` casts the network to bf16
on CUDA with bf16 and on CPUs with native bf16, fp16 on other GPUs, fp32 otherwise.

Only the network is timed (both get the same normalised tensor); preprocessing is not part of it.
The official head also computes its ray branch, which its camera decoder does not use; anydepth skips
it unless asked for (``rays=True``): that is part of the difference.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch

SEED = 0


def _official_net(seed: int = SEED):
    import logging

    logging.getLogger("dinov2").setLevel(logging.ERROR)
    from depth_anything_3.cfg import create_object, load_config
    from depth_anything_3.registry import MODEL_REGISTRY

    torch.manual_seed(seed)
    net = create_object(load_config(MODEL_REGISTRY["da3-small"])).eval()
    with torch.no_grad():  # keep exp() in range so that both sides do real arithmetic, not inf/NaN
        for name, p in net.named_parameters():
            if p.ndim > 1 and "token" not in name and "pos_embed" not in name:
                p.mul_(0.5)
    return net


class LiveTensorPeak:
    """Peak bytes of tensors alive at once during a block, counting only tensors made inside it.

    A ``TorchDispatchMode`` sees every tensor an op returns; each storage is counted once (views share
    it) and uncounted when its last tensor dies. This is the CPU analogue of CUDA's
    ``max_memory_allocated`` (kernel-internal workspaces are not seen) and does not depend on what the
    C allocator keeps cached. The bookkeeping costs a few microseconds per op (< 1 % here).
    """

    def __enter__(self):
        import weakref

        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self
        self.live: dict[int, list] = {}  # storage pointer -> [bytes, tensors alive]
        self.current = self.peak = 0

        def release(key: int) -> None:
            entry = tracker.live.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] == 0:
                    tracker.current -= entry[0]
                    del tracker.live[key]

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor) and t.device.type != "meta":
                        st = t.untyped_storage()
                        key = st.data_ptr()
                        if key == 0:
                            continue
                        entry = tracker.live.get(key)
                        if entry is None:
                            tracker.live[key] = entry = [st.nbytes(), 0]
                            tracker.current += entry[0]
                            tracker.peak = max(tracker.peak, tracker.current)
                        entry[1] += 1
                        weakref.finalize(t, release, key)
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def worker(impl: str, views: int, size: tuple[int, int], dtype_mode: str, device: str, repeats: int = 1) -> dict:
    """One measurement in this (fresh) process."""
    from anydepth.memory import resolve_dtype
    from anydepth.models import create_model
    from anydepth.models.config import DA3_PRESETS
    from anydepth.weights import convert_da3

    dev = torch.device(device)
    ref = _official_net()
    w, h = size
    if impl == "official":
        net = ref.to(dev)
        autocast_dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16

        def run(x):
            if dtype_mode == "auto":  # exactly what DepthAnything3.forward wraps the network in
                with torch.autocast(device_type=x.device.type, dtype=autocast_dtype):
                    return net(x)
            return net(x)

        in_dtype = torch.float32
        used = f"autocast {str(autocast_dtype).replace('torch.', '')}" if dtype_mode == "auto" else "fp32"
    else:
        dtype = resolve_dtype(dtype_mode if dtype_mode == "auto" else "fp32", dev)
        net = create_model(DA3_PRESETS["da3-small"])
        net.load_state_dict(convert_da3(ref.state_dict()), strict=True)
        net = net.to(dev, dtype)
        del ref
        in_dtype = dtype

        def run(x):
            return net(x)

        used = str(dtype).replace("torch.", "")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, views, 3, h, w, generator=g).to(dev, in_dtype)
    with torch.inference_mode():
        run(x[:, :1])  # warm-up (kernel selection, allocator)
        times = []
        for _ in range(repeats):  # the best (min) time counts: other load on the machine only adds
            out = None
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
                t0 = time.perf_counter()
                out = run(x)
                torch.cuda.synchronize(dev)
                times.append(time.perf_counter() - t0)
                peak = torch.cuda.max_memory_allocated(dev) - base
            else:
                with LiveTensorPeak() as mem:
                    t0 = time.perf_counter()
                    out = run(x)
                    times.append(time.perf_counter() - t0)
                peak = mem.peak
        seconds = min(times)
    finite = bool(torch.isfinite(out.depth).all())
    return {"impl": impl, "views": views, "dtype_mode": dtype_mode, "dtype": used, "seconds": seconds, "times": times,
            "views_per_s": views / seconds, "peak_bytes": int(peak), "finite": finite}


def _spawn(impl: str, views: int, size: str, dtype_mode: str, device: str, threads: int | None, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--views", str(views), "--size", size, "--dtypes", dtype_mode,
           "--device", device, "--repeats", str(repeats)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} {views} views {dtype_mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--views", default="1,4,16", help="comma-separated view counts (default 1,4,16)")
    p.add_argument("--size", default="504x378", help="W x H of each view (default 504x378: 504 px, 4:3)")
    p.add_argument("--dtypes", default="fp32,auto", help="comma-separated: fp32, auto (default both)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=1, help="timed passes per measurement; the best counts (default 1)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.worker:
        print(json.dumps(worker(args.worker, int(args.views), size, args.dtypes, args.device, args.repeats)))
        return 0
    views = [int(v) for v in args.views.split(",")]
    modes = args.dtypes.split(",")
    dev = torch.device(args.device)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"DA3-SMALL random weights, {size[0]}x{size[1]} px views, {args.device} ({where}), torch {torch.__version__}")
    print(f"{'dtype':6} {'views':>5}  {'official':>24}  {'anydepth':>24}  {'speed':>6} {'memory':>7}")
    rows = []
    for mode in modes:
        for n in views:
            o = _spawn("official", n, args.size, mode, args.device, args.threads, args.repeats)
            a = _spawn("anydepth", n, args.size, mode, args.device, args.threads, args.repeats)
            rows += [o, a]
            fmt = lambda r: f"{r['views_per_s']:6.2f} v/s {r['peak_bytes'] / 2**20:7.0f} MiB {r['dtype'][:9]:>9}"
            speed = a["views_per_s"] / o["views_per_s"]
            mem = a["peak_bytes"] / max(o["peak_bytes"], 1)
            print(f"{mode:6} {n:5d}  {fmt(o)}  {fmt(a)}  {speed:5.2f}x {mem:6.2f}x", flush=True)
    print("speed: anydepth views/s over official (higher is better); memory: anydepth peak over official (lower is better)")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "where": where, "size": size, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
