"""``anydepth geometry``: Depth Anything 3 depth, confidence, cameras and a point cloud for a set of views."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_max_tokens_option

REF_STRATEGIES = ("saddle_balanced", "saddle_sim_range", "first", "middle")
POSE_METHODS = ("cam_dec", "ray_pose")


def add_parser(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("geometry", help="Depth Anything 3: depth, confidence, cameras and a point cloud for any number of views")
    g.set_defaults(run=run)
    g.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="the views: image files, folders or glob patterns (one scene)")
    g.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    g.add_argument("--model", default="da3-small", help="DA3 catalogue name or folder (default da3-small, Apache-2.0)")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"), help="compute precision (default auto)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: best available)")
    g.add_argument("--process-res", type=int, default=504, help="longer side the network sees (default 504)")
    add_max_tokens_option(g, "process-res", 504)
    g.add_argument("--chunk", type=int, default=8, help="views per pass through the per-view parts (memory; default 8)")
    g.add_argument("--ref-view", default="saddle_balanced", choices=REF_STRATEGIES,
                   help="how the reference (world) view is chosen for 3 or more views")
    g.add_argument("--pose-method", default="cam_dec", choices=POSE_METHODS,
                   help="predicted cameras from the camera decoder (cam_dec, official default) or solved from the ray "
                        "branch (ray_pose, the official use_ray_pose)")
    g.add_argument("--seed", type=int, default=0, help="seed of the ray-pose RANSAC samples (default 0)")
    g.add_argument("--cameras", type=Path, default=None,
                   help="known cameras: a cameras.json as this command writes (a list of views with extrinsics and/or intrinsics)")
    g.add_argument("--conf-percentile", type=float, default=40.0, help="drop the least confident N %% of pixels from the point cloud")
    g.add_argument("--max-points", type=int, default=1_000_000, help="at most this many points (random subset)")
    g.add_argument("--no-ply", action="store_true", help="do not write points.ply")
    g.add_argument("--no-glb", action="store_true", help="do not write scene.glb")
    g.add_argument("--colmap", action="store_true", help="also write a COLMAP text model into DIR/colmap")
    g.add_argument("--gaussians", action="store_true",
                   help="also write 3D Gaussians (gaussians.ply, standard 3DGS layout) from the Gaussian head of a GIANT model")
    g.add_argument("--gaussians-depth-quantile", type=float, default=0.9, metavar="Q",
                   help="keep Gaussians whose depth is at most this per-view quantile (official 0.9; 1 keeps all)")
    g.add_argument("--gaussians-border", type=float, default=8 / 256, metavar="F",
                   help="drop this fraction of rows and columns at each view's border (official 8/256; 0 keeps all)")
    g.add_argument("--gaussians-every", type=int, default=1, metavar="N", help="Gaussians of every N-th view only (default 1)")
    g.add_argument("--gaussians-sh", action="store_true",
                   help="write all colour SH bands (f_rest_*), not only the base colour (official default: base only)")
    g.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    g.add_argument("--models-dir", default=None, help="where models are looked for and downloaded (ANYDEPTH_MODELS)")
    g.add_argument("--revision", default=None, help="hub branch, tag or commit to download")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..anyview import AnyViewEstimator
    from ..geometry import write_cameras_json, write_colmap_text
    from ..batch import plan_layout, prepare_output_folder
    from ..export import save_depth
    from ..io import read_image, save_npy
    from ..scene import read_cameras_json, write_point_cloud

    out: Path = args.out
    views = plan_layout(args.inputs, recursive=args.recursive, exclude=out)  # the layout every command uses
    prepare_output_folder(out)
    loaded, failures = [], []
    for p, stem in views:
        try:
            loaded.append((p, read_image(p), stem))
        except ValueError as err:
            failures.append((p, str(err)))
    if not loaded:
        for src, err in failures:
            print(f"failed: {src}: {err}", file=sys.stderr)
        return 1
    paths = [p for p, _, _ in loaded]
    stems = [stem for _, _, stem in loaded]
    extrinsics = intrinsics = None
    if args.cameras is not None:
        extrinsics, intrinsics = read_cameras_json(args.cameras, len(paths))
    est = AnyViewEstimator(args.model, device=args.device, dtype=args.dtype, process_res=args.process_res,
                           max_tokens=args.max_tokens, chunk=args.chunk, models_dir=args.models_dir, revision=args.revision)
    res = est.estimate([img for _, img, _ in loaded], extrinsics=extrinsics, intrinsics=intrinsics, ref_view_strategy=args.ref_view,
                       pose_method=args.pose_method, gaussians=args.gaussians, seed=args.seed)
    for i, stem in enumerate(stems):
        save_depth(out / f"{stem}_depth.npy", res.maps("depth")[i].numpy().astype(np.float32), kind=res.kind,
                   metadata={"model": res.model_name})
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
        files = {f: out / name for f, name, off in (("ply", "points.ply", args.no_ply), ("glb", "scene.glb", args.no_glb))
                 if not off}
        if files:  # the same files as the Geometry to Point Cloud node for the same options
            saved = write_point_cloud(res, files, conf_percentile=args.conf_percentile, max_points=args.max_points)
            written += [f"{p.name} ({saved.points} points)" for p in saved.paths.values()]
        if args.colmap:
            cloud = res.point_cloud(conf_percentile=args.conf_percentile, max_points=args.max_points)
            write_colmap_text(out / "colmap", res.extrinsics, res.intrinsics, res.input_sizes, [p.name for p in paths], cloud)
            written.append("colmap/")
        if args.gaussians:
            count = res.save_gaussians(out / "gaussians.ply", trim_border=args.gaussians_border,
                                       depth_quantile=args.gaussians_depth_quantile, views_every=args.gaussians_every,
                                       sh_dc_only=not args.gaussians_sh)
            written.append(f"gaussians.ply ({count} Gaussians)")
    else:
        print(f"{res.model_name} predicts no cameras: no cameras.json or point cloud "
              "(pass --cameras with intrinsics and extrinsics, or use an any-view model)", file=sys.stderr)
    print(f"wrote {', '.join(written)} to {out} ({res.model_name}, {res.kind}, {res.processed_size[1]}×{res.processed_size[0]} px)")
    for src, err in failures:
        print(f"failed: {src}: {err}", file=sys.stderr)
    return 1 if failures else 0
