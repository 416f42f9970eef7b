"""Engine benchmark: anydepth vs the transformers depth-estimation pipeline, same random weights.

Run from the repository root::

    python bench/bench_engine.py [--images 8] [--size 640x480] [--repeats 2] [--batch-size 4]
                                 [--memory-px 1036] [--no-memory] [--profile] [--json OUT]

What it does (see bench/README.md for the fairness choices):

1. builds ONE seeded set of random ViT-S-shaped Depth Anything V2 weights in a transformers
   ``DepthAnythingForDepthEstimation`` (no hub access) and writes it with ``save_pretrained``; anydepth
   loads that very folder through its real loader (``DepthEstimator(path)``);
2. makes ``--images`` smooth random uint8 images of ``--size`` (W x H);
3. times end to end, uint8 in -> normalised 8-bit depth image at input size out:
   the transformers pipeline (DPT image processor configured like Depth-Anything-V2-Small-hf),
   anydepth fp32 and anydepth ``dtype="auto"`` (bf16 on CPUs with native bf16);
4. measures numerical agreement (network level with identical pixels, and end to end);
5. measures peak memory of one forward pass at ``--memory-px`` px in fresh subprocesses.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the hub: everything is built locally
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # until the package is installable, run from the checkout
    sys.path.insert(0, str(REPO))

import numpy as np
import torch

SEED = 0
MODEL_DIR_NAME = "depth-anything-v2-vits-random-hf"  # "v2" in the name: anydepth's family hint


# ------------------------------------------------------------------------------------------------
# weights and inputs


def build_reference(seed: int = SEED):
    """transformers Depth Anything V2 with ViT-S shapes and seeded random weights (no hub)."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
    )

    backbone = Dinov2Config(
        hidden_size=384, num_attention_heads=6, num_hidden_layers=12, intermediate_size=4 * 384,
        patch_size=14, image_size=518, layerscale_value=1.0, out_indices=[3, 6, 9, 12],
        apply_layernorm=True, reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, fusion_hidden_size=64, neck_hidden_sizes=[48, 96, 192, 384],
        reassemble_hidden_size=384, head_hidden_size=32, depth_estimation_type="relative", max_depth=1,
    )
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and ("layernorm" in name or "norm1" in name or "norm2" in name):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))  # LayerNorm gains near 1, as trained nets have
            else:
                p.normal_(0.0, 0.05)
        # keep the final ReLU away from its flat end so the depth map is not all zeros
        model.head.conv3.bias.fill_(1.0)
        model.head.conv3.weight.mul_(4.0)
    return model


def make_images(n: int, height: int, width: int, seed: int = SEED) -> list[np.ndarray]:
    """Smooth random HWC uint8 images: random linear gradients + low-frequency waves + mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height, dtype=np.float32), np.linspace(0, 1, width, dtype=np.float32),
                         indexing="ij")
    out = []
    for _ in range(n):
        chans = []
        for _c in range(3):
            a, b, c = rng.uniform(-1, 1, 3)
            fx, fy, ph = rng.uniform(0.5, 4), rng.uniform(0.5, 4), rng.uniform(0, 2 * np.pi)
            v = 0.5 + 0.25 * (a * xx + b * yy) + 0.2 * c * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
            chans.append(v)
        img = np.stack(chans, -1) + rng.normal(0, 0.03, (height, width, 3)).astype(np.float32)
        out.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    return out


def make_processor(size: int = 518):
    """DPT image processor configured like the published Depth-Anything-V2-Small-hf preprocessor_config."""
    import transformers

    cls = getattr(transformers, "DPTImageProcessorPil", None) or transformers.DPTImageProcessor
    return cls(
        do_resize=True, size={"height": size, "width": size}, keep_aspect_ratio=True, ensure_multiple_of=14,
        resample=3,  # PIL bicubic
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_pad=False,
    )


def make_pipeline(ref_model, processor):
    from transformers import pipeline

    return pipeline("depth-estimation", model=ref_model, image_processor=processor, device="cpu")


# ------------------------------------------------------------------------------------------------
# anydepth side


def anydepth_normalize():
    """(normalize_depth, to_uint8) from anydepth.normalize, or a tiny per-image min-max fallback."""
    try:
        from anydepth.normalize import normalize_depth, to_uint8

        return (lambda d, kind: normalize_depth(d, kind, mode="minmax")), to_uint8, "anydepth.normalize"
    except ImportError:  # pragma: no cover - only while normalize.py is being written
        def _minmax(d, kind):
            lo = d.amin(dim=(-2, -1), keepdim=True)
            hi = d.amax(dim=(-2, -1), keepdim=True)
            return (d - lo) / (hi - lo).clamp_min(1e-12)

        def _u8(x):
            return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()

        return _minmax, _u8, "bench fallback"


def anydepth_e2e(est, arrays, norm, u8):
    r = est.estimate(arrays)
    return r, u8(norm(r.depth, r.kind))


# ------------------------------------------------------------------------------------------------
# helpers


def best_of_interleaved(fns: dict, repeats: int) -> dict:
    """Warm up every engine once, then run them round-robin ``repeats`` times; per engine the best
    (min) wall time, all times, and the last result. Interleaving spreads any background load evenly."""
    out = {k: {"result": fn(), "runs": []} for k, fn in fns.items()}
    for _ in range(repeats):
        for k, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            out[k]["result"] = fn()
            out[k]["runs"].append(time.perf_counter() - t0)
    for v in out.values():
        v["seconds"] = min(v["runs"])
    return out


class ForeignLoad:
    """Share of the machine's CPU time used by other processes while the block ran (from /proc)."""

    def __enter__(self):
        self.t0 = self._sample()
        return self

    def __exit__(self, *exc):
        t1 = self._sample()
        self.value = None
        if self.t0 and t1:
            total = t1[0] - self.t0[0]
            busy = t1[1] - self.t0[1]
            own = t1[2] - self.t0[2]
            self.value = max(0.0, (busy - own) / total) if total > 0 else None

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            total, idle = sum(v[:8]), v[3] + v[4]
            t = os.times()
            ticks = os.sysconf("SC_CLK_TCK")
            return total, total - idle, (t.user + t.system) * ticks
        except (OSError, ValueError, IndexError):
            return None


def rel_dev(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Per image max|a-b| and mean|a-b| over the range of ``b``; worst image for max, mean over images."""
    a, b = a.double(), b.double()
    rng = (b.flatten(1).amax(1) - b.flatten(1).amin(1)).clamp_min(1e-12)
    diff = (a - b).abs().flatten(1)
    return float((diff.amax(1) / rng).max()), float((diff.mean(1) / rng).mean())


def parse_size(s: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be WIDTHxHEIGHT, e.g. 640x480, got {s!r}") from None
    return h, w


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------------
# peak memory (child process)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) of this process to its current RSS
        return True
    except OSError:
        return False


def memory_child(which: str, model_dir: str, px: int) -> None:
    """Peak RSS growth of one forward at ``px`` x ``px`` in this (fresh) process; prints one JSON line."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, px, px)
    if which == "anydepth":
        from anydepth.estimator import DepthEstimator

        est = DepthEstimator(model_dir, dtype="fp32", device="cpu", input_size=px)
        run = lambda: est.model(x)
    elif which == "anydepth-e2e":
        from anydepth.estimator import DepthEstimator

        norm, u8, _ = anydepth_normalize()
        est = DepthEstimator(model_dir, dtype="fp32", device="cpu", input_size=px)
        img = make_images(1, px, px)
        run = lambda: anydepth_e2e(est, img, norm, u8)
    elif which in ("hf-eager", "hf-sdpa"):
        from transformers import DepthAnythingForDepthEstimation

        impl = which.split("-")[1]
        # the top-level class refuses attn_implementation="sdpa"; its default gives the backbone SDPA
        kw = {"attn_implementation": "eager"} if impl == "eager" else {}
        model = DepthAnythingForDepthEstimation.from_pretrained(model_dir, **kw).eval()
        got = model.backbone.config._attn_implementation
        if got != impl:
            raise SystemExit(f"asked transformers for {impl} attention, got {got}")
        run = lambda: model(pixel_values=x).predicted_depth
    else:
        raise SystemExit(f"unknown memory target {which}")
    gc.collect()
    reset = _reset_hwm()
    rss0 = _status_kb("VmRSS")
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = run()
    dt = time.perf_counter() - t0
    maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = _status_kb("VmHWM")
    del out
    if reset and hwm is not None and rss0 is not None:
        peak_kb, method = hwm - rss0, "VmHWM after clear_refs - VmRSS before"
    else:
        peak_kb, method = maxrss1 - maxrss0, "ru_maxrss after - before"
    print(json.dumps({"which": which, "px": px, "peak_mb": peak_kb / 1024, "ru_maxrss_delta_mb": (maxrss1 - maxrss0) / 1024,
                      "baseline_rss_mb": (rss0 or 0) / 1024, "seconds": dt, "method": method}))


def measure_memory(which: str, model_dir: Path, px: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    p = subprocess.run([sys.executable, __file__, "--_memory-child", which, "--_model-dir", str(model_dir), "--memory-px", str(px)],
                       capture_output=True, text=True, env=env, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"memory child {which} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# profile


def profile_anydepth(est, arrays, norm, u8, label: str, top: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    anydepth_e2e(est, arrays, norm, u8)  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        anydepth_e2e(est, arrays, norm, u8)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    return f"--- torch.profiler, anydepth {label}, {len(arrays)} images (top {top} by self CPU) ---\n{table}"


# ------------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the input images")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4, help="anydepth batch size (transformers: pipeline default)")
    ap.add_argument("--memory-px", type=int, default=1036)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of the anydepth path")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_model-dir", dest="model_dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        memory_child(args.memory_child, args.model_dir, args.memory_px)
        return {}

    warnings.filterwarnings("ignore")
    import transformers
    from PIL import Image
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from anydepth.estimator import DepthEstimator
    from anydepth.preprocess import network_size, prepare_batch

    h, w = parse_size(args.size)
    n = args.images
    t_start = time.perf_counter()
    res: dict = {
        "config": {"images": n, "size_hw": [h, w], "repeats": args.repeats, "anydepth_batch_size": args.batch_size,
                   "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
                   "cpu": cpu_name()},
    }
    print(f"anydepth engine bench: {n} images {w}x{h}, best of {args.repeats} after 1 warm-up, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"cpu: {res['config']['cpu']}")

    tmp = tempfile.TemporaryDirectory(prefix="anydepth-bench-")
    model_dir = Path(tmp.name) / MODEL_DIR_NAME
    ref = build_reference()
    ref.save_pretrained(model_dir)
    res["config"]["reference_attn"] = ref.backbone.config._attn_implementation

    arrays = make_images(n, h, w)
    pils = [Image.fromarray(a) for a in arrays]
    processor = make_processor()
    pipe = make_pipeline(ref, processor)
    res["config"]["image_processor"] = type(processor).__name__
    norm, u8, norm_src = anydepth_normalize()
    res["config"]["normalize"] = norm_src

    est32 = DepthEstimator(str(model_dir), dtype="fp32", batch_size=args.batch_size, device="cpu")
    est_auto = DepthEstimator(str(model_dir), dtype="auto", batch_size=args.batch_size, device="cpu")
    res["config"]["auto_dtype"] = str(est_auto.dtype).replace("torch.", "")
    res["config"]["anydepth_layers"] = list(est32.model.config.layers)
    res["config"]["anydepth_kind"] = est32.kind

    # ---- processed size agreement
    pv0 = processor(images=pils[0], return_tensors="pt")["pixel_values"]
    hf_net = tuple(pv0.shape[-2:])
    ad_net = network_size(h, w, 518)
    res["network_size"] = {"transformers": list(hf_net), "anydepth": list(ad_net), "match": hf_net == ad_net}
    probe = [(480, 640), (720, 1280), (1080, 1920), (512, 512), (1000, 700), (300, 2000), (200, 2000), (4000, 300)]
    mism = []
    for ph, pw in probe:
        a = network_size(ph, pw, 518)
        b = tuple(processor(images=Image.new("RGB", (pw, ph)), return_tensors="pt")["pixel_values"].shape[-2:])
        if a != b:
            mism.append({"input_hw": [ph, pw], "anydepth": list(a), "transformers": list(b)})
    res["network_size"]["mismatches_on_probe_sizes"] = mism

    # ---- timing, end to end (interleaved: warm-up each, then round-robin)
    auto_key = f"anydepth_auto_{res['config']['auto_dtype']}"
    with ForeignLoad() as load:
        timed = best_of_interleaved({
            "transformers": lambda: pipe(pils),
            "anydepth_fp32": lambda: anydepth_e2e(est32, arrays, norm, u8),
            auto_key: lambda: anydepth_e2e(est_auto, arrays, norm, u8),
        }, args.repeats)
    hf_out = timed["transformers"]["result"]
    r32, img32 = timed["anydepth_fp32"]["result"]
    rau, imgau = timed[auto_key]["result"]
    speed = {k: {"seconds": v["seconds"], "runs": v["runs"], "images_per_s": n / v["seconds"]} for k, v in timed.items()}
    t_hf = speed["transformers"]["seconds"]
    speed["ratio_fp32_vs_transformers"] = t_hf / speed["anydepth_fp32"]["seconds"]
    speed["ratio_auto_vs_transformers"] = t_hf / speed[auto_key]["seconds"]
    speed["foreign_cpu_load"] = load.value
    res["speed"] = speed

    # ---- parity
    par: dict = {}
    net32 = est32.model
    with torch.inference_mode():
        # identical pixels, 518 x 518: no position-embedding resize, exact parity expected
        sq = processor(images=Image.fromarray(make_images(1, 518, 518, seed=1)[0]), return_tensors="pt")["pixel_values"]
        par["network_518x518_same_pixels"] = rel_dev(net32(sq), ref(pixel_values=sq).predicted_depth)
        # identical pixels at the bench's processed size (position embeddings are resized here)
        par[f"network_{hf_net[0]}x{hf_net[1]}_same_pixels"] = rel_dev(net32(pv0), ref(pixel_values=pv0).predicted_depth)
        # preprocessing alone: transformers' processor vs anydepth's prepare_batch for image 0
        cfg = net32.config
        ours_pv = prepare_batch(torch.from_numpy(arrays[0]).permute(2, 0, 1)[None].float() / 255, ad_net, cfg.mean, cfg.std)
        if tuple(ours_pv.shape[-2:]) == hf_net:
            par["preprocess_max_abs_normalised_units"] = float((ours_pv - pv0).abs().max())
            par["preprocess_mean_abs_normalised_units"] = float((ours_pv - pv0).abs().mean())
            # anydepth's network on transformers' pixels vs on its own pixels: effect of preprocessing alone
            own = net32(ours_pv)
            par["network_own_vs_hf_pixels"] = rel_dev(own, net32(pv0))
            # output upsampling alone: anydepth's bilinear (align_corners=True, as the original) vs the
            # pipeline's bicubic post-processing, same network output
            bil = torch.nn.functional.interpolate(own[:, None], size=(h, w), mode="bilinear", align_corners=True)
            bic = torch.nn.functional.interpolate(own[:, None], size=(h, w), mode="bicubic", align_corners=False)
            par["upsample_bilinear_vs_bicubic"] = rel_dev(bil[:, 0], bic[:, 0])
    hf_depth = torch.stack([o["predicted_depth"].float() for o in hf_out])
    hf_img = np.stack([np.asarray(o["depth"]) for o in hf_out])
    par["e2e_raw_fp32_vs_transformers"] = rel_dev(r32.depth, hf_depth)
    d = np.abs(img32.astype(np.int16) - hf_img.astype(np.int16))
    par["e2e_uint8_fp32_vs_transformers"] = {"max_levels": int(d.max()), "mean_levels": float(d.mean()),
                                             "frac_gt_1_level": float((d > 1).mean())}
    par["bf16_raw_vs_fp32"] = rel_dev(rau.depth, r32.depth)
    d2 = np.abs(imgau.astype(np.int16) - img32.astype(np.int16))
    par["bf16_uint8_vs_fp32"] = {"max_levels": int(d2.max()), "mean_levels": float(d2.mean())}
    par["output_range_transformers"] = [float(hf_depth.min()), float(hf_depth.max())]
    res["parity"] = par

    # ---- memory
    if not args.no_memory:
        mem = {}
        for which in ("anydepth", "hf-eager", "hf-sdpa", "anydepth-e2e"):
            mem[which] = measure_memory(which, model_dir, args.memory_px)
        mem["ratio_anydepth_vs_hf_eager"] = mem["anydepth"]["peak_mb"] / mem["hf-eager"]["peak_mb"]
        mem["ratio_anydepth_vs_hf_sdpa"] = mem["anydepth"]["peak_mb"] / mem["hf-sdpa"]["peak_mb"]
        res["memory"] = mem

    if args.profile:
        print(profile_anydepth(est32, arrays, norm, u8, "fp32"))
        print(profile_anydepth(est_auto, arrays, norm, u8, res["config"]["auto_dtype"]))

    res["total_seconds"] = time.perf_counter() - t_start
    print_table(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")
    tmp.cleanup()
    return res


def print_table(res: dict) -> None:
    s, p = res["speed"], res["parity"]
    auto = res["config"]["auto_dtype"]
    ns = res["network_size"]
    print()
    print(f"processed size: transformers {ns['transformers']}, anydepth {ns['anydepth']} -> "
          f"{'match' if ns['match'] else 'DIFFER'}")
    for m in ns["mismatches_on_probe_sizes"]:
        print(f"  differs at input {m['input_hw']}: anydepth {m['anydepth']}, transformers {m['transformers']}")
    print()
    print(f"{'end to end (uint8 in -> 8-bit depth out)':44s} {'s/run':>8s} {'img/s':>8s} {'vs hf':>7s}")
    rows = [("transformers pipeline (fp32, " + res['config']['reference_attn'] + ")", s["transformers"], 1.0),
            ("anydepth fp32", s["anydepth_fp32"], s["ratio_fp32_vs_transformers"]),
            (f"anydepth auto ({auto})", s[f"anydepth_auto_{auto}"], s["ratio_auto_vs_transformers"])]
    for name, r, ratio in rows:
        print(f"{name:44s} {r['seconds']:8.2f} {r['images_per_s']:8.2f} {ratio:6.2f}x")
    fl = s.get("foreign_cpu_load")
    if fl is not None:
        warn = "  <- other processes competed for the CPU; timings are noisy" if fl > 0.05 else ""
        print(f"(other processes used {100 * fl:.0f}% of the CPU during the timed runs{warn})")
    print()
    print(f"parity (max abs / range, mean abs / range); anydepth read layers {res['config']['anydepth_layers']}, "
          f"kind {res['config']['anydepth_kind']} from the -hf folder")
    exact = p["network_518x518_same_pixels"][0]
    print(f"  exact-parity check at 518x518 (same pixels, no position-embedding resize): "
          f"{'PASS' if exact <= 1e-4 else 'FAIL'} ({exact:.1e} <= 1e-4 of range)")
    for k, v in p.items():
        if isinstance(v, (tuple, list)) and k != "output_range_transformers":
            print(f"  {k:44s} max {v[0]:.2e}  mean {v[1]:.2e}")
        elif isinstance(v, dict):
            print(f"  {k:44s} " + ", ".join(f"{a} {b:.3g}" for a, b in v.items()))
        elif isinstance(v, float):
            print(f"  {k:44s} {v:.3e}")
    print(f"  transformers raw depth range: {p['output_range_transformers'][0]:.4g} .. {p['output_range_transformers'][1]:.4g}")
    if "memory" in res:
        m = res["memory"]
        px = m["anydepth"]["px"]
        print()
        print(f"peak memory of one forward at {px}x{px} (fresh process each, {m['anydepth']['method']})")
        for k, label in (("anydepth", "anydepth fp32 model (SDPA)"), ("hf-eager", "transformers eager attention"),
                         ("hf-sdpa", "transformers sdpa attention"), ("anydepth-e2e", "anydepth fp32 estimator, end to end")):
            print(f"  {label:40s} {m[k]['peak_mb']:8.0f} MB   ({m[k]['seconds']:.1f} s)")
        print(f"  ratio anydepth / transformers eager: {m['ratio_anydepth_vs_hf_eager']:.2f}   "
              f"anydepth / transformers sdpa: {m['ratio_anydepth_vs_hf_sdpa']:.2f}")
    print(f"\ntotal {res['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
