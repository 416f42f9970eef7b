"""Long-sequence benchmark: peak memory and time of chunked Depth Anything 3 for 100 / 1000 / 5000 views.

Run from the repository root::

    python bench/bench_sequence.py [--views 100,1000,5000] [--size 504x378] [--chunk 16] [--overlap 4]
                                   [--tiny] [--model NAME_OR_DIR] [--official 8,16,32] [--device cpu|cuda] [--json OUT]

What it does, each view count in a fresh subprocess:

1. a DA3-SMALL network with seeded random weights (``--tiny``: a 10-layer, 64-wide any-view network for 2-core
   machines; ``--model``: real weights by catalogue name or folder) in an :class:`~anydepth.anyview.AnyViewEstimator`
   at ``process_res`` 504;
2. ``N`` synthetic frames of ``--size`` (a window panning over a large random texture) made lazily, one at a time,
   as a video decoder would hand them out;
3. :func:`anydepth.sequence.estimate_sequence` in chunks of ``--chunk`` views overlapping by ``--overlap``, each
   view's outputs dropped after its callback (as ``anydepth sequence`` writes them to disk and forgets them);
4. reports seconds, views/s, the process's peak resident memory (``ru_maxrss``, with glibc returning large blocks
   to the system so that it follows live memory) and on CUDA ``max_memory_allocated``.

``--official 8,16,...`` also runs the official ``depth-anything-3`` network (same architecture, random weights)
over all N views in one pass — its way of handling a scene — in a subprocess per count, and reports the counts it
survives within ``--official-mem-gb`` (the process's address space is capped there; a ``MemoryError`` or an
out-of-memory kill is "did not survive").

Nothing is downloaded. On a 2-core CPU use ``--tiny`` and a few hundred views (see bench/README.md for figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

SEED = 0
ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # large blocks are mmap'ed and returned when freed: RSS follows live memory


def _network(tiny: bool, model: str | None):
    """The DA3 network to run: real weights when ``model`` is given, else seeded random weights."""
    from anydepth.models import ArchConfig, create_model
    from anydepth.models.config import DA3_PRESETS, DA3Config

    if model:
        return model
    cfg = (DA3Config(ArchConfig(64, 10, 2, 16, (8, 16, 32, 32)), (3, 5, 6, 9), alt_start=2, qknorm_start=2,
                     rope_start=2, name="tiny") if tiny else DA3_PRESETS["da3-small"])
    torch.manual_seed(SEED)
    net = create_model(cfg).eval()
    with torch.no_grad():  # small weights keep exp() in range: real arithmetic, finite depth and cameras
        for name, p in net.named_parameters():
            if p.ndim > 1 and "token" not in name and "pos_embed" not in name:
                p.mul_(0.5)
    return net


def synthetic_frames(n: int, size: tuple[int, int], seed: int = SEED):
    """``n`` frames ``[H, W, 3]`` in 0..1: a window sliding over a smooth random texture, made one at a time."""
    w, h = size
    g = torch.Generator().manual_seed(seed)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 48, generator=g), size=(2 * h, 4 * w),
                                              mode="bicubic", align_corners=False).clamp(0, 1)[0]
    for i in range(n):
        x = int((i * 7) % (3 * w))  # panning back and forth over the texture
        yield texture[:, h // 2: h // 2 + h, x: x + w].permute(1, 2, 0).contiguous()


def worker(views: int, size: tuple[int, int], chunk: int, overlap: int, tiny: bool, model: str | None, device: str) -> dict:
    from anydepth.anyview import AnyViewEstimator
    from anydepth.sequence import estimate_sequence

    dev = torch.device(device)
    est = AnyViewEstimator(_network(tiny, model), device=dev, dtype="fp32" if dev.type == "cpu" else "auto",
                           process_res=504)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    done = 0

    def on_view(_view) -> None:  # a memory curve on stderr: a run cut short still shows whether the peak grows
        nonlocal done
        done += 1
        if done % 100 == 0 or done == views:
            print(f"  {done}/{views} views {time.perf_counter() - t0:8.1f} s  peak RSS "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MB", file=sys.stderr, flush=True)

    seq = estimate_sequence(est, synthetic_frames(views, size), chunk_size=chunk, overlap=overlap, on_view=on_view)
    seconds = time.perf_counter() - t0
    out = {"impl": "anydepth", "views": views, "chunks": len(seq.chunks), "seconds": seconds, "views_per_s": views / seconds,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "finite": bool(torch.isfinite(seq.extrinsics).all())}
    if dev.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def official_worker(views: int, size: tuple[int, int], tiny: bool, device: str, mem_gb: float) -> dict:
    """The official network over all ``views`` at once, with the address space capped at ``mem_gb``."""
    if device == "cpu" and mem_gb:
        cap = int(mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from depth_anything_3.cfg import create_object, load_config
    from depth_anything_3.registry import MODEL_REGISTRY

    if tiny:
        raise SystemExit("--official compares DA3-SMALL; drop --tiny")
    torch.manual_seed(SEED)
    net = create_object(load_config(MODEL_REGISTRY["da3-small"])).eval().to(device)
    w, h = size
    frames = torch.stack(list(synthetic_frames(views, (w // 14 * 14, h // 14 * 14)))).permute(0, 3, 1, 2)[None].to(device)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            net(frames)
        ok = True
    except (MemoryError, RuntimeError) as e:  # RuntimeError: torch's "can't allocate memory" / CUDA OOM
        ok = "memory" not in str(e).lower() and "alloc" not in str(e).lower()
        if ok:
            raise
    out = {"impl": "official", "views": views, "survived": ok, "seconds": time.perf_counter() - t0,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device != "cpu":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _spawn(args: list[str]) -> dict:
    # stderr (progress, warnings, a failure's traceback) goes to this process's stderr as it comes
    out = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=REPO,
                         env={**os.environ, **ENV}, check=False)
    if out.returncode != 0:
        return {"error": f"exit status {out.returncode} (see stderr)", "returncode": out.returncode}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--views", default="100,1000,5000", help="comma-separated view counts (default 100,1000,5000)")
    p.add_argument("--size", default="504x378", help="W x H of each frame (default 504x378)")
    p.add_argument("--chunk", type=int, default=16, help="views per chunk (default 16)")
    p.add_argument("--overlap", type=int, default=4, help="views shared by consecutive chunks (default 4)")
    p.add_argument("--tiny", action="store_true", help="a tiny random DA3 network instead of DA3-SMALL (2-core machines)")
    p.add_argument("--model", default=None, help="real DA3 weights (catalogue name or folder) instead of random ones")
    p.add_argument("--official", default="", help="comma-separated view counts for the official one-pass network")
    p.add_argument("--official-mem-gb", type=float, default=16.0, help="address-space cap of the official runs (CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.worker == "anydepth":
        print(json.dumps(worker(int(args.views), (w, h), args.chunk, args.overlap, args.tiny, args.model, args.device)))
        return 0
    if args.worker == "official":
        print(json.dumps(official_worker(int(args.views), (w, h), args.tiny, args.device, args.official_mem_gb)))
        return 0

    common = ["--size", args.size, "--chunk", str(args.chunk), "--overlap", str(args.overlap), "--device", args.device]
    common += ["--tiny"] if args.tiny else []
    common += ["--model", args.model] if args.model else []
    common += ["--threads", str(args.threads)] if args.threads else []
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.device}, "
          f"{'tiny' if args.tiny else args.model or 'DA3-SMALL (random)'}, frames {args.size}, chunk {args.chunk} "
          f"overlap {args.overlap}, process_res 504")
    print(f"{'impl':9} {'views':>6} {'chunks':>6} {'seconds':>9} {'views/s':>8} {'peak RSS MB':>12} {'CUDA MB':>8}")
    rows = []
    for n in [int(v) for v in args.views.split(",") if v]:
        r = _spawn(["--worker", "anydepth", "--views", str(n), *common])
        rows.append(r)
        if "error" in r:
            print(f"{'anydepth':9} {n:>6} failed: {r['error']}")
            continue
        print(f"{'anydepth':9} {n:>6} {r['chunks']:>6} {r['seconds']:>9.1f} {r['views_per_s']:>8.2f} "
              f"{r['peak_rss_mb']:>12.0f} {r.get('cuda_peak_mb', float('nan')):>8.0f}")
    for n in [int(v) for v in args.official.split(",") if v]:
        r = _spawn(["--worker", "official", "--views", str(n), "--official-mem-gb", str(args.official_mem_gb), *common])
        rows.append({**r, "views": n})
        if "error" in r or not r.get("survived", False):
            print(f"{'official':9} {n:>6} did not survive ({args.official_mem_gb:g} GB cap): "
                  f"{r.get('error', 'out of memory')[-120:]!r}")
            continue
        print(f"{'official':9} {n:>6} {1:>6} {r['seconds']:>9.1f} {n / r['seconds']:>8.2f} {r['peak_rss_mb']:>12.0f} "
              f"{r.get('cuda_peak_mb', float('nan')):>8.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
