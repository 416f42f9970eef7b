"""Meshes from depth: an analytic scene (a box in front of a wall) with known surfaces; files re-read.

The camera at the origin looks along +z at a wall ``z = 4``; a box with its front face ``z = 2``,
``|x|, |y| <= 0.5`` stands in front of it. Every pixel's depth is traced exactly, so each face of the mesh must lie
on the wall or on the box's front face, and none may bridge the silhouette between them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anydepth.cameras import invert_rigid
from anydepth.mesh import (MeshOptions, TriangleMesh, as_depth, depth_to_mesh, fov_from_intrinsics, gltf_transform,
                           intrinsics_from_focal, intrinsics_from_fov, read_mesh_ply, views_to_meshes, write_mesh)

H, W, F = 48, 64, 40.0
WALL, FRONT, HALF = 4.0, 2.0, 0.5


def box_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Depth ``[H, W]`` of the box-and-wall scene and its ``K``."""
    k = intrinsics_from_focal(H, W, F)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rx, ry = (u - k[0, 2]) / F, (v - k[1, 2]) / F  # the ray through the pixel at z = 1
    on_box = (rx.abs() * FRONT <= HALF) & (ry.abs() * FRONT <= HALF)
    return torch.where(on_box, torch.tensor(FRONT, dtype=torch.float64), torch.tensor(WALL, dtype=torch.float64)), k


def surface_of(points: torch.Tensor) -> torch.Tensor:
    """0 = box front face, 1 = wall, -1 = neither (per point)."""
    on_box = ((points[:, 2] - FRONT).abs() < 1e-5) & (points[:, :2].abs() <= HALF + 1e-5).all(1)
    on_wall = (points[:, 2] - WALL).abs() < 1e-5
    return torch.where(on_box, 0, torch.where(on_wall, 1, -1))


def test_box_scene_faces_lie_on_the_surfaces_and_none_cross_the_silhouette():
    depth, k = box_scene()
    mesh = depth_to_mesh(depth, k)
    corner_surface = surface_of(mesh.vertices.double())[mesh.faces]  # [F, 3]
    assert bool((corner_surface >= 0).all())  # every vertex is on the box or on the wall
    assert bool((corner_surface == corner_surface[:, :1]).all())  # no face joins the two
    box_faces = int((corner_surface[:, 0] == 0).sum())
    box_pixels = int((depth == FRONT).sum())
    side = math.isqrt(box_pixels)  # the box covers a square of pixels
    assert side * side == box_pixels and box_faces == 2 * (side - 1) ** 2  # every cell inside the silhouette
    wall_faces = mesh.num_faces - box_faces
    # the wall: both triangles of every cell with no box corner, plus one triangle in each of the two cells at the
    # square's corners whose box pixel is a corner that the cell's other triangle does not use
    assert wall_faces == 2 * ((H - 1) * (W - 1) - (side + 1) ** 2) + 2
    # the box face's area: the square of pixel centres it spans, at depth FRONT
    v = mesh.vertices.double()[mesh.faces[corner_surface[:, 0] == 0]]
    area = 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=1).sum()
    assert float(area) == pytest.approx(((side - 1) * FRONT / F) ** 2, rel=1e-6)  # float32 vertices

    # without the cut, the faces along the silhouette bridge the box and the wall
    uncut = depth_to_mesh(depth, k, options=MeshOptions(discontinuity=0))
    assert uncut.num_faces == 2 * (H - 1) * (W - 1) and uncut.num_faces > mesh.num_faces


def test_faces_wind_towards_their_camera():
    depth, k = box_scene()
    mesh = depth_to_mesh(depth, k)
    v = mesh.vertices.double()[mesh.faces]
    normal = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert bool(((normal * v.mean(1)).sum(1) < 0).all())  # the normal points back at the camera at the origin


def test_world_frame_stride_colours_sky_and_confidence():
    depth, k = box_scene()
    # a camera turned 30° about y and moved: the world mesh is the camera-frame mesh moved by camera-to-world
    a = math.radians(30)
    r = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64)
    w2c = torch.cat([r, torch.tensor([[0.3], [-0.2], [1.0]], dtype=torch.float64)], 1)
    image = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(0))
    cam = depth_to_mesh(depth, k, image=image)
    world = depth_to_mesh(depth, k, w2c, image=image)
    c2w = invert_rigid(w2c)
    expected = cam.vertices.double() @ c2w[:, :3].T + c2w[:, 3]
    assert torch.allclose(world.vertices.double(), expected, atol=1e-5) and torch.equal(world.faces, cam.faces)
    assert world.colors.dtype == torch.uint8 and world.colors.shape == (world.num_vertices, 3)

    half = depth_to_mesh(depth, k, options=MeshOptions(stride=2))
    assert half.num_faces < cam.num_faces / 3.5  # about a quarter

    sky = torch.zeros(H, W)
    sky[:10] = 1.0  # the top rows are sky
    no_sky = depth_to_mesh(depth, k, sky=sky)
    assert float(no_sky.vertices[:, 1].min()) > float(cam.vertices[:, 1].min())  # the top (y down) is gone
    conf = torch.ones(H, W)
    conf[:, :8] = 0.5  # the least confident columns
    confident = depth_to_mesh(depth, k, confidence=conf, options=MeshOptions(conf_percentile=10.0))
    assert float(confident.vertices[:, 0].min()) > float(cam.vertices[:, 0].min())


def test_views_fuse_in_one_world_frame():
    depth, k = box_scene()
    w2c = torch.stack([torch.eye(4, dtype=torch.float64)[:3], torch.eye(4, dtype=torch.float64)[:3]])
    w2c[1, 0, 3] = -1.0  # the second camera one unit to the right (its centre at x = +1)
    # its view of the same box: trace again from the shifted centre
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rx, ry = (u - k[0, 2]) / F, (v - k[1, 2]) / F
    on_box = ((rx * FRONT + 1.0).abs() <= HALF) & ((ry * FRONT).abs() <= HALF)
    depth2 = torch.where(on_box, FRONT, WALL).double()
    meshes = views_to_meshes(torch.stack([depth, depth2]), k[None].repeat(2, 1, 1), w2c)
    fused = TriangleMesh.concat(meshes)
    assert fused.num_faces == sum(m.num_faces for m in meshes)
    surf = surface_of(fused.vertices.double())[fused.faces]
    assert bool((surf >= 0).all()) and bool((surf == surf[:, :1]).all())  # both views land on the same surfaces


def test_disparity_becomes_depth_exactly_for_the_stated_near_and_far():
    depth, _ = box_scene()
    disparity = 3.0 / depth + 0.7  # any positive scale and shift of 1 / depth
    back = as_depth(disparity[None].float(), "disparity", near=FRONT, far=WALL)
    assert torch.allclose(back[0].double(), depth, rtol=1e-5)
    metres = as_depth(depth[None].float(), "metric_depth")
    assert torch.equal(metres[0], depth.float())
    with pytest.raises(ValueError, match="near < far"):
        as_depth(disparity[None].float(), "disparity", near=5.0, far=1.0)


def test_intrinsics_from_fov_and_back():
    k = intrinsics_from_fov(H, W, 70.0)
    assert fov_from_intrinsics(k, H, W)[0] == pytest.approx(70.0)
    assert k[0, 2] == W / 2 and k[1, 2] == H / 2 and k[0, 0] == k[1, 1]
    kv = intrinsics_from_fov(H, W, 50.0, axis="vertical")
    assert fov_from_intrinsics(kv, H, W)[1] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="between 0 and 180"):
        intrinsics_from_fov(H, W, 180.0)
    with pytest.raises(ValueError, match="positive number of pixels"):
        intrinsics_from_focal(H, W, 0.0)
    with pytest.raises(ValueError, match="stride"):
        MeshOptions(stride=0)


def test_files_re_read_with_the_same_mesh(tmp_path):
    import pygltflib

    depth, k = box_scene()
    image = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(1))
    mesh = depth_to_mesh(depth, k, image=image, options=MeshOptions(stride=2))

    ply = read_mesh_ply(write_mesh(tmp_path / "m.ply", mesh))
    assert torch.equal(ply.vertices, mesh.vertices) and torch.equal(ply.faces, mesh.faces)
    assert torch.equal(ply.colors, mesh.colors)
    from plyfile import PlyData

    other = PlyData.read(str(tmp_path / "m.ply"))  # an independent reader
    assert len(other["vertex"]) == mesh.num_vertices and len(other["face"]) == mesh.num_faces

    lines = Path(write_mesh(tmp_path / "m.obj", mesh)).read_text().splitlines()
    v = np.array([list(map(float, line.split()[1:])) for line in lines if line.startswith("v ")])
    f = np.array([list(map(int, line.split()[1:])) for line in lines if line.startswith("f ")])
    assert v.shape == (mesh.num_vertices, 6) and np.allclose(v[:, :3], mesh.vertices.numpy(), atol=1e-5)
    assert np.array_equal(f - 1, mesh.faces.numpy())
    assert np.allclose(v[:, 3:] * 255, mesh.colors.numpy(), atol=0.02)

    transform = gltf_transform(mesh)
    glb = pygltflib.GLTF2().load(str(write_mesh(tmp_path / "m.glb", mesh, transform=transform)))
    prim = glb.meshes[0].primitives[0]
    assert prim.mode == 4
    assert glb.accessors[prim.attributes.POSITION].count == mesh.num_vertices
    assert glb.accessors[prim.indices].count == 3 * mesh.num_faces
    assert glb.accessors[prim.attributes.COLOR_0].count == mesh.num_vertices
    blob = glb.binary_blob()
    view = glb.bufferViews[glb.accessors[prim.attributes.POSITION].bufferView]
    pos = np.frombuffer(blob, "<f4", 3 * mesh.num_vertices, view.byteOffset).reshape(-1, 3)
    expected = mesh.vertices.double() @ transform[:3, :3].T + transform[:3, 3]
    assert np.allclose(pos, expected.numpy(), atol=1e-5)
    assert pos[:, 1].max() > 0 > pos[:, 1].min()  # centred on the median vertex
    extras = json.loads(json.dumps(glb.scenes[0].extras))
    assert extras["anydepth_faces"] == mesh.num_faces
    # the camera looks along -z in glTF: the wall is farther along -z than the box front
    wall = surface_of(mesh.vertices.double()) == 1
    assert pos[wall.numpy(), 2].mean() < pos[(~wall).numpy(), 2].mean()
    with pytest.raises(ValueError, match="unknown mesh format"):
        write_mesh(tmp_path / "m.stl", mesh)


# --------------------------------------------------------------------------------------------- the CLI


def test_cli_meshes_depth_files_with_their_intrinsics_or_a_field_of_view(tmp_path):
    from anydepth.cli import main
    from anydepth.export import save_depth

    depth, k = box_scene()
    save_depth(tmp_path / "in" / "box_depth.npz", depth.float().numpy(), kind="metric_depth", intrinsics=k.numpy())
    save_depth(tmp_path / "in" / "rel_depth.npz", (1 / depth).float().numpy(), kind="disparity")
    rc = main(["mesh", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--format", "ply", "glb", "--fov", "80",
               "--near", "2", "--far", "4"])
    assert rc == 0
    got = read_mesh_ply(tmp_path / "out" / "box_mesh.ply")
    want = depth_to_mesh(depth.float(), k)
    assert torch.equal(got.faces, want.faces) and torch.allclose(got.vertices, want.vertices, atol=1e-6)
    # the disparity file: placed with an 80° field of view, its extremes at 2 and 4
    rel = read_mesh_ply(tmp_path / "out" / "rel_mesh.ply")
    want_rel = depth_to_mesh(as_depth((1 / depth)[None].float(), "disparity", near=2, far=4)[0],
                             intrinsics_from_fov(H, W, 80.0))
    assert torch.equal(rel.faces, want_rel.faces) and torch.allclose(rel.vertices, want_rel.vertices, atol=1e-5)
    assert (tmp_path / "out" / "box_mesh.glb").stat().st_size > 1000


def test_cli_fuses_a_geometry_folder_in_the_world_frame(tmp_path):
    from PIL import Image

    from anydepth.cli import main
    from anydepth.export import save_depth
    from anydepth.geometry import write_cameras_json
    from anydepth.io import save_npy

    depth, k = box_scene()
    ext = torch.eye(4, dtype=torch.float64)[:3].repeat(2, 1, 1)
    ext[1, 0, 3] = -0.2  # the second camera a little to the right, looking at the same (re-traced) scene
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rx, ry = (u - k[0, 2]) / F, (v - k[1, 2]) / F
    depth2 = torch.where(((rx * FRONT + 0.2).abs() <= HALF) & ((ry * FRONT).abs() <= HALF), FRONT, WALL).double()
    folder = tmp_path / "geometry"
    for stem, d in (("a", depth), ("b", depth2)):
        save_depth(folder / f"{stem}_depth.npy", d.float().numpy(), kind="depth")
        save_npy(folder / f"{stem}_conf.npy", np.full((H, W), 2.0, np.float32))
        Image.fromarray(np.full((H, W, 3), 90 if stem == "a" else 200, np.uint8)).save(tmp_path / f"{stem}.png")
    write_cameras_json(folder / "cameras.json", ext, k[None].repeat(2, 1, 1), names=["a.png", "b.png"], sizes=[(H, W)] * 2)
    rc = main(["mesh", str(folder), "--out", str(tmp_path / "out"), "--format", "ply", "--images", str(tmp_path),
               "--per-view"])
    assert rc == 0
    fused = read_mesh_ply(tmp_path / "out" / "mesh.ply")
    parts = [read_mesh_ply(tmp_path / "out" / f"{s}_mesh.ply") for s in "ab"]
    assert fused.num_faces == sum(p.num_faces for p in parts)
    surf = surface_of(fused.vertices.double())[fused.faces]
    assert bool((surf >= 0).all()) and bool((surf == surf[:, :1]).all())  # both views on the true surfaces
    assert set(fused.colors[:, 0].tolist()) == {90, 200}  # each view coloured from its own image
    assert main(["mesh", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 1


# --------------------------------------------------------------------------------------------- sky to far


def test_clip_sky_sends_sky_to_the_far_end_of_each_image():
    from anydepth.normalize import clip_sky

    depth = torch.arange(1.0, 101.0).reshape(1, 10, 10).repeat(2, 1, 1)
    sky = torch.zeros(2, 10, 10)
    sky[0, :2] = 1.0  # image 0: the top two rows are sky (values 1..20); image 1 has no sky
    out = clip_sky(depth, "depth", sky)
    rest = depth[0, 2:].flatten()
    assert torch.allclose(out[0, :2], torch.quantile(rest, 0.98).expand(2, 10))  # the official 98th percentile
    assert torch.equal(out[0, 2:], depth[0, 2:]) and torch.equal(out[1], depth[1])
    disp = clip_sky(depth, "disparity", sky)  # disparity: far is small, so the 2nd percentile
    assert torch.allclose(disp[0, :2], torch.quantile(rest, 0.02).expand(2, 10))
    assert torch.equal(depth, torch.arange(1.0, 101.0).reshape(1, 10, 10).repeat(2, 1, 1))  # input untouched
    with pytest.raises(ValueError, match="mask of the depth's shape"):
        clip_sky(depth, "depth", sky[:1])
