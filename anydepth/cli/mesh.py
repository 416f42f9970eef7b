"""``anydepth mesh``: triangle meshes from depth files or an ``anydepth geometry`` output folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEPTH_SUFFIXES = (".npz", ".npy", ".exr", ".png")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..mesh import DEFAULT_FOV_DEGREES, MESH_FORMATS, MeshOptions

    m = sub.add_parser("mesh", help="triangle meshes (GLB / OBJ / PLY) from depth files or a geometry folder",
                       description="A geometry folder (written by `anydepth geometry`: cameras.json + *_depth.npy) gives "
                                   "one mesh of all views in the world frame, OUT/mesh.<format>. Depth files (written by "
                                   "`anydepth estimate --format npz|npy|exr|depth_png16`) give OUT/<stem>_mesh.<format> "
                                   "each, placed with the file's intrinsics or --fov / --focal.")
    m.set_defaults(run=run)
    m.add_argument("inputs", nargs="+", metavar="DEPTH_OR_DIR", help="depth files, folders of them, or one geometry folder")
    m.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    m.add_argument("--format", nargs="+", default=["glb"], choices=MESH_FORMATS,
                   help="glb (y up, colours, cameras), obj and/or ply (world frame of the cameras) (default glb)")
    m.add_argument("--images", type=Path, default=None,
                   help="folder of the source images, for vertex colours (matched by name / stem)")
    m.add_argument("--view", type=int, default=-1, help="geometry folder: only this view (default -1: all, fused)")
    m.add_argument("--per-view", action="store_true", help="geometry folder: also write each view's mesh")
    m.add_argument("--fov", type=float, default=DEFAULT_FOV_DEGREES,
                   help=f"depth without intrinsics: horizontal field of view in degrees (default {DEFAULT_FOV_DEGREES:g})")
    m.add_argument("--focal", type=float, default=None,
                   help="depth without intrinsics: focal length in pixels (wins over --fov)")
    m.add_argument("--stride", type=int, default=1, help="keep every n-th pixel per axis (default 1)")
    m.add_argument("--discontinuity", type=float, default=MeshOptions.discontinuity,
                   help="drop faces whose depth span (max-min)/min exceeds this; 0 = off "
                        f"(default {MeshOptions.discontinuity:g})")
    m.add_argument("--conf-percentile", type=float, default=MeshOptions.conf_percentile,
                   help=f"drop the least confident N %% of pixels (default {MeshOptions.conf_percentile:g})")
    m.add_argument("--near", type=float, default=1.0, help="relative disparity: the distance its largest value stands for")
    m.add_argument("--far", type=float, default=10.0, help="relative disparity: the distance its smallest value stands for")
    m.add_argument("--kind", default=None, choices=("disparity", "depth", "metric_depth"),
                   help="what the values are, for files without anydepth metadata")


def _find_image(folder: Path | None, name: str | None = None, stem: str | None = None):
    """The source image in ``folder`` by file name or by stem (any image suffix), as a float tensor, or ``None``."""
    if folder is None:
        return None
    import numpy as np
    import torch

    from ..io import IMAGE_EXTENSIONS, read_image

    if name:
        hits = list(folder.rglob(name))
    else:
        hits = [p for p in folder.rglob(f"{stem}.*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not hits:
        print(f"note: no image for {name or stem} in {folder}: no colours for it", file=sys.stderr)
        return None
    return torch.from_numpy(np.asarray(read_image(hits[0]).convert("RGB"), dtype=np.float32) / 255)


def _depth_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in DEPTH_SUFFIXES and p.is_file())
        elif item.is_file():
            files.append(item)
        else:
            raise ValueError(f"{item} does not exist")
    return files


def run(args: argparse.Namespace) -> int:
    from ..mesh import MeshOptions, maps_to_mesh

    options = MeshOptions(stride=args.stride, discontinuity=args.discontinuity, conf_percentile=args.conf_percentile)
    common = dict(fov_degrees=args.fov, focal_px=args.focal, near=args.near, far=args.far, options=options)
    from ..batch import prepare_output_folder

    out = prepare_output_folder(args.out)  # a file in the way or no permission: one line, before any work
    if len(args.inputs) == 1 and (Path(args.inputs[0]) / "cameras.json").is_file():
        return _scene(args, Path(args.inputs[0]), out, common)
    from ..export import load_depth

    written, failures = [], []
    for f in _depth_files(args.inputs):
        try:
            d = load_depth(f)
            kind = args.kind or d.kind
            if kind is None:
                raise ValueError("the file does not say what its values are; pass --kind disparity|depth|metric_depth")
            import torch

            stem = f.name[: -len(f.suffix)].removesuffix("_depth")
            ext = None if d.extrinsics is None else torch.from_numpy(d.extrinsics)[None]
            k = None if d.intrinsics is None else torch.from_numpy(d.intrinsics)[None]
            image = _find_image(args.images, stem=stem)
            scene = maps_to_mesh([torch.from_numpy(d.depth)], kind, intrinsics=k, extrinsics=ext,
                                 images=None if image is None else [image], **common)
            for fmt in args.format:
                written.append(Path(scene.write(out / f"{stem}_mesh.{fmt}", fmt)))
            for note in scene.notes:
                print(f"note: {f.name}: {note}", file=sys.stderr)
        except ValueError as err:
            failures.append((f, str(err)))
    for src, err in failures:
        print(f"failed: {src}: {err}", file=sys.stderr)
    print(f"wrote {len(written)} mesh file(s) to {out}")
    return 1 if failures or not written else 0


def _scene(args: argparse.Namespace, folder: Path, out: Path, common: dict) -> int:
    from ..scene import read_scene_folder

    files = read_scene_folder(folder)
    images = [_find_image(args.images, name=name) for name in files.names] if args.images else None
    if images is not None and any(im is None for im in images):
        images = None
    scene = _mesh(files, images, args.view, common)
    written = [scene.write(out / f"mesh.{fmt}", fmt) for fmt in args.format]
    if args.per_view:
        for i in scene.view_indices:  # each alone: its own glTF frame and camera
            one = _mesh(files, images, i, common)
            written += [one.write(out / f"{files.stems[i]}_mesh.{fmt}", fmt) for fmt in args.format]
    print(f"wrote {', '.join(Path(p).name for p in written)} to {out} ({scene.mesh.num_vertices} vertices, "
          f"{scene.mesh.num_faces} faces, {len(scene.views)} view(s))")
    return 0


def _mesh(files, images, view: int, common: dict):
    from ..mesh import maps_to_mesh

    return maps_to_mesh(files.depth, files.kind, intrinsics=files.intrinsics, extrinsics=files.extrinsics, images=images,
                        confidence=files.confidence, sky=files.sky, view=view, **common)
