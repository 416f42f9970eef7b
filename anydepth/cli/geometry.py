"""``anydepth geometry``: Depth Anything 3 depth, confidence, cameras and a point cloud for a set of views."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REF_STRATEGIES = ("saddle_balanced", "saddle_sim_range", "first", "middle")


def add_parser(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("geometry", help="Depth Anything 3: depth, confidence, cameras and a point cloud for any number of views")
    g.set_defaults(run=run)
    g.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="the views: image files, folders or glob patterns (one scene)")
    g.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    g.add_argument("--model", default="da3-small", help="DA3 catalogue name or folder (default da3-small, Apache-2.0)")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="compute precision (default auto)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    g.add_argument("--process-res", type=int, default=504, help="longer side the network sees (default 504)")
    g.add_argument("--chunk", type=int, default=8, help="views per pass through the per-view parts (memory; default 8)")
    g.add_argument("--ref-view", default="saddle_balanced", choices=REF_STRATEGIES,
                   help="how the reference (world) view is chosen for 3 or more views")
    g.add_argument("--cameras", type=Path, default=None,
                   help="known cameras: a cameras.json as this command writes (a list of views with extrinsics and/or intrinsics)")
    g.add_argument("--conf-percentile", type=float, default=40.0, help="drop the least confident N %% of pixels from the point cloud")
    g.add_argument("--max-points", type=int, default=1_000_000, help="at most this many points (random subset)")
    g.add_argument("--no-ply", action="store_true", help="do not write points.ply")
    g.add_argument("--no-glb", action="store_true", help="do not write scene.glb")
    g.add_argument("--colmap", action="store_true", help="also write a COLMAP text model into DIR/colmap")
    g.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    g.add_argument("--models-dir", default=None, help="where models are looked for and downloaded (ANYDEPTH_MODELS)")
    g.add_argument("--revision", default=None, help="hub branch, tag or commit to download")


def _stems(images: list[Path]) -> list[str]:
    """``<stem>``; inputs sharing a stem (a.png, a.jpg, or two folders) get the suffix / a counter added."""
    stems = [p.stem for p in images]
    out, seen = [], set()
    for p, s in zip(images, stems):
        name = s if stems.count(s) == 1 else f"{s}_{p.suffix[1:]}"
        base, i = name, 1
        while name in seen:
            i += 1
            name = f"{base}_{i}"
        seen.add(name)
        out.append(name)
    return out


def _known_cameras(path: Path, n: int):
    views = json.loads(path.read_text())
    if not isinstance(views, list) or len(views) != n:
        raise ValueError(f"{path}: expected a list of {n} views (one per image, in order), got "
                         f"{len(views) if isinstance(views, list) else type(views).__name__}")
    ext = [v.get("extrinsics") for v in views]
    k = [v.get("intrinsics") for v in views]
    ext = ext if all(e is not None for e in ext) else None
    k = k if all(m is not None for m in k) else None
    if ext is None and k is None:
        raise ValueError(f"{path}: needs extrinsics (3×4 or 4×4) and/or intrinsics (3×3) for every view")
    return ext, k


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..anyview import AnyViewEstimator
    from ..geometry import camera_frusta, glb_alignment, scene_extent, write_cameras_json, write_colmap_text, write_glb, write_ply
    from ..io import list_images, read_image, save_npy

    images: list[Path] = []
    for item in args.inputs:
        images += list_images(item, recursive=args.recursive)
    loaded, failures = [], []
    for p in images:
        try:
            loaded.append((p, read_image(p)))
        except ValueError as err:
            failures.append((p, str(err)))
    if not loaded:
        for src, err in failures:
            print(f"failed: {src}: {err}", file=sys.stderr)
        return 1
    paths = [p for p, _ in loaded]
    stems = _stems(paths)
    extrinsics = intrinsics = None
    if args.cameras is not None:
        extrinsics, intrinsics = _known_cameras(args.cameras, len(paths))
    est = AnyViewEstimator(args.model, device=args.device, dtype=args.dtype, process_res=args.process_res, chunk=args.chunk,
                           models_dir=args.models_dir, revision=args.revision)
    res = est.estimate([img for _, img in loaded], extrinsics=extrinsics, intrinsics=intrinsics, ref_view_strategy=args.ref_view)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(stems):
        save_npy(out / f"{stem}_depth.npy", res.maps("depth")[i].numpy().astype(np.float32))
        if res.confidence is not None:
            save_npy(out / f"{stem}_conf.npy", res.maps("confidence")[i].numpy().astype(np.float32))
        if res.sky is not None:
            save_npy(out / f"{stem}_sky.npy", res.maps("sky")[i].numpy().astype(np.float32))
    written = [f"{len(stems)} depth maps"]
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    if res.has_cameras:
        write_cameras_json(out / "cameras.json", res.extrinsics, res.intrinsics, names=[p.name for p in paths], sizes=res.input_sizes)
        written.append("cameras.json")
        cloud = res.point_cloud(conf_percentile=args.conf_percentile, max_points=args.max_points)
        if not args.no_ply:
            write_ply(out / "points.ply", cloud)
            written.append(f"points.ply ({len(cloud)} points)")
        if not args.no_glb:
            frusta = camera_frusta(res.processed_intrinsics, res.extrinsics, res.processed_size, 0.03 * scene_extent(cloud.points))
            write_glb(out / "scene.glb", cloud, frusta, transform=glb_alignment(res.extrinsics[0], cloud.points))
            written.append("scene.glb")
        if args.colmap:
            write_colmap_text(out / "colmap", res.extrinsics, res.intrinsics, res.input_sizes, [p.name for p in paths], cloud)
            written.append("colmap/")
    else:
        print(f"{res.model_name} predicts no cameras: no cameras.json or point cloud "
              "(pass --cameras with intrinsics and extrinsics, or use an any-view model)", file=sys.stderr)
    print(f"wrote {', '.join(written)} to {out} ({res.model_name}, {res.kind}, {res.processed_size[1]}×{res.processed_size[0]} px)")
    for src, err in failures:
        print(f"failed: {src}: {err}", file=sys.stderr)
    return 1 if failures else 0
