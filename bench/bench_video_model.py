"""Video Depth Anything benchmark: peak memory vs clip length, flicker, and parity with the official code.

Run from the repository root::

    python bench/bench_video_model.py memory  [--frames 100,1000,10000] [--model vits|vitb|vitl|tiny|FILE] [--threads N]
                                              [--modes offline,streaming] [--frame-size 960x540] [--input-size 518]
                                              [--device cpu|cuda] [--dtype fp32|auto|...] [--out DIR] [--json OUT]
    python bench/bench_video_model.py flicker [--frames 96] [--frame-size 320x240] [--model ...] [--v2 FILE]
    python bench/bench_video_model.py parity  --official PATH/TO/Video-Depth-Anything [--frames 50]

``memory``: for each clip length and mode, a fresh subprocess streams synthetic frames (made on the fly,
never held as a clip) through :class:`anydepth.video_model.VideoDepthEstimator` and a consumer that writes
each depth map away (to ``--out`` as ``.npy`` files, else to ``os.devnull``), and reports frames/s and
the measured peaks: the bytes of tensors alive at once (CPU, :class:`LiveTensorPeak` of bench_da3, with
``--tensor-peak``; CUDA: ``max_memory_allocated``) and the process's peak RSS (``ru_maxrss``). Flat
figures across 100 / 1,000 / 10,000 frames show the memory is set by the window (offline) or the cache
(streaming), not by the clip. ``--model tiny`` is a small random network for 2-core machines.

``flicker``: a synthetic clip (a textured static scene, a square sliding across it, per-frame sensor
noise) through VDA offline, VDA streaming, per-frame V2 (the same weights with the temporal modules
off, or ``--v2 FILE``) and per-frame V2 + :func:`anydepth.video.stabilize_depth`; prints
:func:`anydepth.video.flicker` on the static pixels (:func:`anydepth.video.static_mask`). With random
weights (no ``--model FILE``) the figures exercise the code only: give real checkpoints for real numbers.

``parity``: the official ``infer_video_depth`` and ``infer_video_depth_one`` (imported from a checkout;
trivial stand-ins for ``easydict`` and ``torchvision.transforms.Compose`` are installed if those are
missing) against anydepth on the same random ViT-S weights, fp32, CPU: relative and metric, several
windows, a non-square and a wide clip. Prints the largest per-frame error over the frame's range (the
issue asks for < 1e-4) and both run times.

Weights from a file (``--model FILE``): a published ``video_depth_anything_vit{s,b,l}.pth`` or
``metric_video_depth_anything_vit{s,b,l}.pth`` (read with ``weights_only=True``; the encoder and metric
flag come from the file name).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import numpy as np
import torch

from anydepth.models import ArchConfig, VideoModelConfig, create_model, video_config

TINY = VideoModelConfig(ArchConfig(128, 4, 2, 32, (16, 32, 64, 64)), (0, 1, 2, 3))


# ------------------------------------------------------------------------------------------------ models


def randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded random weights that give a non-flat output (norm gains near 1, small weights, a biased last conv)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
        net.head.scratch.output_conv2[2].bias.fill_(1.0)
        net.head.scratch.output_conv2[2].weight.mul_(4.0)
    return net


def load_net(model: str, metric: bool = False) -> tuple[torch.nn.Module, str]:
    """A VideoDepthAnything from ``tiny``, an encoder name (random weights) or a published file."""
    if model == "tiny":
        return randomise(create_model(TINY)), "tiny (random)"
    if model in ("vits", "vitb", "vitl"):
        return randomise(create_model(video_config(model, metric))), f"{model} (random)"
    path = Path(model)
    encoder = next((e for e in ("vits", "vitb", "vitl") if e in path.name), None)
    if encoder is None:
        raise SystemExit(f"{path}: cannot tell the encoder from the file name (expected vits, vitb or vitl in it)")
    net = create_model(video_config(encoder, "metric" in path.name), device="meta")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True, assign=True)
    return net.eval(), path.name


def synthetic_frames(n: int, width: int, height: int, seed: int = 0, noise: float = 6.0):
    """``n`` uint8 ``[H, W, 3]`` frames made one at a time: a static texture, a sliding square, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([120 + 60 * np.sin(xx / 23 + c) * np.cos(yy / 17 - c) + 40 * (yy / height) for c in range(3)], -1)
    side = max(4, height // 5)
    for t in range(n):
        frame = scene.copy()
        x0 = int((t * 3) % max(1, width - side))
        frame[height // 3: height // 3 + side, x0: x0 + side] = (230, 200, 60)
        frame += rng.normal(0, noise, frame.shape).astype(np.float32)
        yield frame.clip(0, 255).astype(np.uint8)


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


# ------------------------------------------------------------------------------------------------ memory


def memory_worker(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process."""
    from anydepth.video_model import VideoDepthEstimator

    torch.manual_seed(0)
    net, name = load_net(args.model)
    device = torch.device(args.device)
    est = VideoDepthEstimator(net, device=device, dtype=args.dtype, input_size=args.input_size,
                              batch_size=args.batch_size)
    w, h = _size(args.frame_size)
    out = Path(args.out) if args.out else None
    sink = None if out else open(os.devnull, "wb")
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracker = None
    if args.tensor_peak and device.type == "cpu":
        from bench_da3 import LiveTensorPeak

        tracker = LiveTensorPeak().__enter__()
    t0 = time.perf_counter()
    done = 0
    try:
        for i, depth in enumerate(est.iter_depth(synthetic_frames(args.n, w, h), streaming=args.mode == "streaming")):
            a = depth.numpy()
            if out:
                np.save(out / f"{i:06d}.npy", a)  # written away; nothing is kept
            else:
                sink.write(a.tobytes())
            done += 1
            if done % args.progress_every == 0:  # a memory curve on stderr: a run cut short still shows its trend
                print(f"  {done} frames {time.perf_counter() - t0:8.1f} s  peak RSS "
                      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MiB"
                      + (f"  peak tensors {tracker.peak / 2**20:7.1f} MiB" if tracker is not None else ""),
                      file=sys.stderr, flush=True)
    finally:
        if tracker is not None:
            tracker.__exit__(None, None, None)
    seconds = time.perf_counter() - t0
    result = {"model": name, "mode": args.mode, "frames": done, "frame_size": [h, w], "input_size": args.input_size,
              "device": str(device), "dtype": str(est.dtype).replace("torch.", ""), "seconds": seconds,
              "fps": done / seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "rss_before_mib": base_rss / 1024}
    if tracker is not None:
        result["peak_tensor_mib"] = tracker.peak / 2**20
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def run_memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mode in args.modes.split(","):
        for n in (int(v) for v in args.frames.split(",")):
            cmd = [sys.executable, __file__, "_memory_worker", "--n", str(n), "--mode", mode, "--model", args.model,
                   "--frame-size", args.frame_size, "--input-size", str(args.input_size), "--device", args.device,
                   "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                   "--progress-every", str(args.progress_every)]
            if args.out:
                cmd += ["--out", str(Path(args.out) / f"{mode}_{n}")]
            if args.tensor_peak:
                cmd.append("--tensor-peak")
            # stderr (the memory curve, warnings, a failure's traceback) is passed through as it comes
            res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if res.returncode:
                raise SystemExit(f"worker failed with exit status {res.returncode}: {' '.join(cmd)}")
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            peak = " ".join(f"{k.replace('_mib', '')} {v:8.1f} MiB" for k, v in row.items() if k.startswith("peak_"))
            print(f"{row['model']:>14} {mode:>9} {row['frames']:>6} frames  {row['fps']:7.2f} frames/s  {peak}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ flicker


def run_flicker(args: argparse.Namespace) -> dict:
    from anydepth.estimator import DepthEstimator
    from anydepth.video import flicker, stabilize_depth, static_mask
    from anydepth.video_model import VideoDepthEstimator

    net, name = load_net(args.model)
    w, h = _size(args.frame_size)
    frames = np.stack(list(synthetic_frames(args.frames, w, h)))
    clip01 = torch.from_numpy(frames).float() / 255
    static = static_mask(clip01, threshold=0.05)
    est = VideoDepthEstimator(net, device=args.device, dtype=args.dtype, input_size=args.input_size)
    results = {}
    results["VDA offline"] = est.estimate(frames).depth
    results["VDA streaming"] = est.estimate(frames, streaming=True).depth
    if args.v2:
        per_frame = DepthEstimator(args.v2, device=args.device, dtype=args.dtype, input_size=args.input_size).estimate(list(frames)).depth
        label = f"V2 per frame ({Path(args.v2).name})"
    else:  # the same network without its temporal modules is V2 with VDA's weights
        from anydepth.preprocess import network_size, prepare_batch, resize_depth
        from anydepth.video_model import iter_frames, video_input_size

        size = network_size(h, w, video_input_size(h, w, args.input_size))
        maps = []
        with torch.inference_mode():
            for f in iter_frames(frames):
                x = prepare_batch(f[None].to(est.policy.device), size, net.config.mean, net.config.std, dtype=est.dtype)
                maps.append(resize_depth(net(x[:, None], temporal=False)[:, 0].float(), (h, w))[0].cpu())
        per_frame = torch.stack(maps)
        label = "V2 per frame (same weights, temporal off)"
    results[label] = per_frame
    results["V2 per frame + stabilize_depth(running)"] = stabilize_depth(per_frame, mask=static).depth
    print(f"model {name}; {args.frames} frames {w}x{h}; static pixels {float(static.float().mean()):.0%}")
    out = {}
    for k, d in results.items():
        out[k] = float(flicker(d.float(), static))
        print(f"  flicker {out[k]:.4f}  {k}")
    return out


# ------------------------------------------------------------------------------------------------ parity


def _import_official(path: Path):
    for mod, attrs in (("easydict", None), ("torchvision", None)):
        try:
            __import__(mod)
        except ImportError:
            if mod == "easydict":
                m = types.ModuleType("easydict")
                m.EasyDict = type("EasyDict", (dict,), {"__getattr__": lambda self, k: self[k]})
                sys.modules["easydict"] = m
            else:
                tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")

                class Compose:
                    def __init__(self, steps):
                        self.steps = steps

                    def __call__(self, x):
                        for s in self.steps:
                            x = s(x)
                        return x

                tr.Compose, tv.transforms = Compose, tr
                sys.modules.update({"torchvision": tv, "torchvision.transforms": tr})
    sys.path.insert(0, str(path))
    from video_depth_anything.video_depth import VideoDepthAnything as Offline
    from video_depth_anything.video_depth_stream import VideoDepthAnything as Online

    return Offline, Online


def run_parity(args: argparse.Namespace) -> dict:
    from anydepth.video_model import VideoDepthEstimator

    Offline, Online = _import_official(Path(args.official))
    shape = dict(encoder="vits", features=64, out_channels=[48, 96, 192, 384])
    report = {}
    for metric, (w, h), n in ((False, (60, 40), args.frames), (True, (60, 40), args.frames), (False, (90, 24), 30)):
        official = randomise(Offline(**shape, metric=metric).eval())
        ours = create_model(video_config("vits", metric))
        ours.load_state_dict(official.state_dict(), strict=True)
        frames = np.stack(list(synthetic_frames(n, w, h)))
        t0 = time.perf_counter()
        ref, _ = official.infer_video_depth(frames, 30, input_size=56, device="cpu", fp32=True)
        t1 = time.perf_counter()
        est = VideoDepthEstimator(ours, device="cpu", dtype="fp32", input_size=56)
        got = est.estimate(frames).depth.numpy()
        t2 = time.perf_counter()
        online = Online(**shape).eval()
        online.load_state_dict(official.state_dict())
        ref_s = np.stack([online.infer_video_depth_one(f, input_size=56, device="cpu", fp32=True) for f in frames])
        got_s = est.estimate(frames, streaming=True).depth.numpy()

        def err(a, b):
            return max(float(np.abs(x - y).max() / (y.max() - y.min())) for x, y in zip(a, b))

        key = f"{'metric' if metric else 'relative'} {n} frames {w}x{h}"
        report[key] = {"offline": err(got, ref), "streaming": err(got_s, ref_s), "official_s": t1 - t0, "anydepth_s": t2 - t1}
        r = report[key]
        print(f"{key:>32}: offline {r['offline']:.1e}  streaming {r['streaming']:.1e}  "
              f"({'PASS' if max(r['offline'], r['streaming']) < 1e-4 else 'FAIL'} < 1e-4)  "
              f"time official {r['official_s']:.2f}s anydepth {r['anydepth_s']:.2f}s")
    return report


# ------------------------------------------------------------------------------------------------ speed


def speed_worker(args: argparse.Namespace) -> dict:
    """Time and peak-memory growth of one implementation on the clip, in this (fresh) process."""
    import gc

    from bench_engine import _reset_hwm, _status_kb

    w, h = _size(args.frame_size)
    frames = np.stack(list(synthetic_frames(args.frames, w, h)))  # both sides get the same uint8 clip in RAM
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    metric = "metric" in Path(args.weights).name
    if args.impl == "official":
        Offline, Online = _import_official(Path(args.official))
        shape = dict(encoder="vits", features=64, out_channels=[48, 96, 192, 384])
        net = (Online(**shape) if args.mode == "streaming" else Offline(**shape, metric=metric)).eval()
        net.load_state_dict(state, strict=True)
        if args.mode == "streaming":
            run = lambda: [net.infer_video_depth_one(f, input_size=args.input_size, device="cpu", fp32=True) for f in frames]
        else:
            run = lambda: net.infer_video_depth(frames, 30, input_size=args.input_size, device="cpu", fp32=True)[0]
    else:
        from anydepth.video_model import VideoDepthEstimator

        net = create_model(video_config("vits", metric))
        net.load_state_dict(state, strict=True)
        est = VideoDepthEstimator(net, device="cpu", dtype="fp32", input_size=args.input_size)
        run = lambda: est.estimate(frames, streaming=args.mode == "streaming").depth
    del state
    gc.collect()
    reset = _reset_hwm()
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = run()
    seconds = time.perf_counter() - t0
    hwm = _status_kb("VmHWM")
    depth = np.asarray(out, dtype=np.float32) if not isinstance(out, torch.Tensor) else out.float().numpy()
    np.save(args.out_npy, depth)
    return {"impl": args.impl, "mode": args.mode, "seconds": seconds, "fps": len(frames) / seconds,
            "peak_mib": (hwm - rss0) / 1024 if reset and hwm and rss0 else float("nan"),
            "baseline_rss_mib": (rss0 or 0) / 1024}


def run_speed(args: argparse.Namespace) -> dict:
    """The official code and anydepth on the same clip and the same random ViT-S weights, fp32, CPU, one run."""
    import tempfile

    w, h = _size(args.frame_size)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "video_depth_anything_vits.pth"  # the name tells the workers the encoder
        torch.save(randomise(create_model(video_config("vits", False))).state_dict(), weights)
        print(f"ViT-S (random weights), {args.frames} frames {w}x{h}, input_size {args.input_size}, fp32, CPU, "
              f"threads {args.threads or torch.get_num_threads()}; peak = VmHWM growth during the run")
        for mode in args.modes.split(","):
            rows = {}
            for impl in ("official", "anydepth"):  # alternating would not help: each run is minutes long
                npy = Path(tmp) / f"{impl}_{mode}.npy"
                cmd = [sys.executable, __file__, "_speed_worker", "--impl", impl, "--mode", mode, "--weights", str(weights),
                       "--official", args.official, "--frames", str(args.frames), "--frame-size", args.frame_size,
                       "--input-size", str(args.input_size), "--threads", str(args.threads), "--out-npy", str(npy)]
                res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
                if res.returncode:
                    raise SystemExit(f"worker failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
                rows[impl] = json.loads(res.stdout.strip().splitlines()[-1])
                rows[impl]["depth"] = np.load(npy)
            a, o = rows["anydepth"], rows["official"]
            err = max(float(np.abs(x - y).max() / (y.max() - y.min())) for x, y in zip(a.pop("depth"), o.pop("depth")))
            report[mode] = {"official": o, "anydepth": a, "speed_ratio": o["seconds"] / a["seconds"],
                            "memory_ratio": a["peak_mib"] / o["peak_mib"], "max_error_over_range": err}
            print(f"{mode:>9}: official {o['seconds']:7.1f} s {o['peak_mib']:7.0f} MiB | anydepth {a['seconds']:7.1f} s "
                  f"{a['peak_mib']:7.0f} MiB | anydepth {o['seconds'] / a['seconds']:.2f}x the official speed, "
                  f"{a['peak_mib'] / o['peak_mib']:.2f}x its peak memory; largest error {err:.1e} of range", flush=True)
    return report


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default="tiny", help="tiny | vits | vitb | vitl (random weights) | a .pth file")
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    common.add_argument("--dtype", default="fp32")
    common.add_argument("--input-size", type=int, default=518)
    common.add_argument("--json", default=None)
    common.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default). Use 1 on a shared machine: two OpenMP threads "
                             "on two busy cores run 20-30x slower than one")
    m = sub.add_parser("memory", parents=[common])
    m.add_argument("--frames", default="100,1000,10000")
    m.add_argument("--modes", default="offline,streaming")
    m.add_argument("--frame-size", default="960x540")
    m.add_argument("--batch-size", type=int, default=4)
    m.add_argument("--out", default=None, help="write .npy files here (default: os.devnull)")
    m.add_argument("--tensor-peak", action="store_true", help="CPU: also track the bytes of live tensors (slower)")
    m.add_argument("--progress-every", type=int, default=1000, help="print the peaks so far every N frames (stderr)")
    f = sub.add_parser("flicker", parents=[common])
    f.add_argument("--frames", type=int, default=96)
    f.add_argument("--frame-size", default="320x240")
    f.add_argument("--v2", default=None, help="a V2 checkpoint for the per-frame baseline")
    p = sub.add_parser("parity", parents=[common])
    p.add_argument("--official", required=True, help="a checkout of DepthAnything/Video-Depth-Anything")
    p.add_argument("--frames", type=int, default=50)
    sp = sub.add_parser("speed", parents=[common])
    sp.add_argument("--official", required=True, help="a checkout of DepthAnything/Video-Depth-Anything")
    sp.add_argument("--frames", type=int, default=64)
    sp.add_argument("--frame-size", default="640x360")
    sp.add_argument("--modes", default="offline,streaming")
    sw = sub.add_parser("_speed_worker", parents=[common])
    for flag in ("--impl", "--mode", "--weights", "--official", "--frame-size", "--out-npy"):
        sw.add_argument(flag, required=True)
    sw.add_argument("--frames", type=int, required=True)
    w = sub.add_parser("_memory_worker", parents=[common])
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--mode", required=True)
    w.add_argument("--frame-size", required=True)
    w.add_argument("--batch-size", type=int, default=4)
    w.add_argument("--out", default=None)
    w.add_argument("--tensor-peak", action="store_true")
    w.add_argument("--progress-every", type=int, default=1000)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command in ("_memory_worker", "_speed_worker"):
        print(json.dumps((memory_worker if args.command == "_memory_worker" else speed_worker)(args)))
        return
    result = {"memory": run_memory, "flicker": run_flicker, "parity": run_parity, "speed": run_speed}[args.command](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
