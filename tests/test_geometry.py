"""Geometry: unprojection and pose composition against a synthetic scene with known answers; exports re-read."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from anydepth.anyview import normalize_extrinsics, umeyama_sim3
from anydepth.cameras import quaternion_to_matrix
from anydepth.geometry import (
    PointCloud,
    camera_centers,
    camera_frusta,
    depth_to_points,
    fuse_point_cloud,
    glb_alignment,
    invert_extrinsics,
    project_points,
    unproject_depth,
    write_cameras_json,
    write_colmap_text,
    write_glb,
    write_ply,
)


def _look_at(centre: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """World-to-camera ``[3, 4]`` of an OpenCV camera at ``centre`` looking at ``target`` (y down)."""
    z = torch.nn.functional.normalize(target - centre, dim=0)
    x = torch.nn.functional.normalize(torch.linalg.cross(z, torch.tensor([0.0, -1.0, 0.0], dtype=z.dtype)), dim=0)
    y = torch.linalg.cross(z, x)
    r = torch.stack([x, y, z])  # rows: camera axes in world coordinates
    return torch.cat([r, (-r @ centre)[:, None]], dim=1)


@pytest.fixture
def scene():
    """Three cameras looking at the ground plane y = 2 (OpenCV world: y down, so the plane is below them)."""
    dt = torch.float64
    centres = torch.tensor([[0.0, 0.0, 0.0], [1.5, -0.5, 0.5], [-1.0, 0.3, -0.5]], dtype=dt)
    targets = torch.tensor([[0.0, 2.0, 3.0], [0.5, 2.0, 2.5], [-0.5, 2.0, 2.5]], dtype=dt)  # every pixel sees the plane
    ext = torch.stack([_look_at(c, t) for c, t in zip(centres, targets)])
    h, w = 30, 40
    k = torch.tensor([[[35.0, 0, 20], [0, 33.0, 15], [0, 0, 1]]], dtype=dt).repeat(3, 1, 1)
    k[1, 0, 0] = 45.0
    # Analytic depth of the plane y = 2: the ray d = Rᵀ K⁻¹ [u, v, 1] from C hits it at s = (2 - C_y) / d_y, z_cam = s.
    v, u = torch.meshgrid(torch.arange(h, dtype=dt), torch.arange(w, dtype=dt), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1)
    rays_cam = torch.einsum("nij,hwj->nhwi", torch.linalg.inv(k), pix)
    rays_world = torch.einsum("nji,nhwj->nhwi", ext[:, :, :3], rays_cam)
    s = (2.0 - centres[:, 1, None, None]) / rays_world[..., 1]
    depth = s  # rays_cam has z = 1, so the camera-frame depth is the ray parameter
    world = centres[:, None, None] + s[..., None] * rays_world
    assert bool((depth > 0).all())
    return {"ext": ext, "k": k, "depth": depth, "world": world, "centres": centres, "size": (h, w)}


def test_unproject_known_answer():
    k = torch.tensor([[[2.0, 0, 1], [0, 4.0, 2], [0, 0, 1]]])
    depth = torch.full((1, 3, 3), 2.0)
    pts = unproject_depth(depth, k)
    assert torch.allclose(pts[0, 0, 0], torch.tensor([-1.0, -1.0, 2.0]))  # ((0 - 1) / 2 · 2, (0 - 2) / 4 · 2, 2)
    assert torch.allclose(pts[0, 2, 1], torch.tensor([0.0, 0.0, 2.0]))
    assert torch.allclose(pts[0, 1, 2], torch.tensor([1.0, -0.5, 2.0]))


def test_scene_points_land_on_the_known_surface(scene):
    pts = depth_to_points(scene["depth"], scene["k"], scene["ext"])
    assert torch.allclose(pts, scene["world"], atol=1e-9)
    assert torch.allclose(pts[..., 1], torch.full_like(pts[..., 1], 2.0), atol=1e-9)
    assert torch.allclose(camera_centers(scene["ext"]), scene["centres"], atol=1e-12)
    # Every world point projects back to its pixel in its own camera, with its depth.
    h, w = scene["size"]
    uv, z = project_points(pts[1].reshape(-1, 3), scene["k"][1:2], scene["ext"][1:2])
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    assert torch.allclose(uv[0], torch.stack([u, v], -1).reshape(-1, 2), atol=1e-8)
    assert torch.allclose(z[0], scene["depth"][1].reshape(-1), atol=1e-9)


def test_fused_cloud_is_consistent_across_views(scene):
    """Points fused from view 0 are seen by view 2 exactly at the depth view 2 measures there."""
    cloud = fuse_point_cloud(scene["depth"].float(), scene["k"], scene["ext"], max_points=None)
    assert len(cloud) == 3 * 30 * 40 and cloud.points.dtype == torch.float32
    assert torch.allclose(cloud.points[:, 1], torch.full((len(cloud),), 2.0), atol=1e-4)
    p0 = cloud.points[cloud.view == 0].double()
    uv, z = project_points(p0, scene["k"][2:], scene["ext"][2:])
    inside = (uv[0, :, 0] >= 0) & (uv[0, :, 0] <= 39) & (uv[0, :, 1] >= 0) & (uv[0, :, 1] <= 29) & (z[0] > 0)
    assert int(inside.sum()) > 100
    # View 2's depth of the plane at those (sub-pixel) positions, from the same analytic formula as the fixture.
    uv1 = torch.cat([uv[0, inside], torch.ones(int(inside.sum()), 1, dtype=torch.float64)], -1)
    ray = (uv1 @ torch.linalg.inv(scene["k"][2]).T) @ scene["ext"][2, :, :3]
    seen = (2.0 - scene["centres"][2, 1]) / ray[:, 1]
    assert torch.allclose(z[0, inside], seen, rtol=1e-5)


def test_confidence_sky_stride_and_subsampling():
    depth = torch.ones(2, 4, 5)
    k = torch.tensor([[5.0, 0, 2], [0, 5.0, 2], [0, 0, 1]]).repeat(2, 1, 1)
    ext = torch.eye(4)[:3].repeat(2, 1, 1)
    conf = torch.arange(40, dtype=torch.float32).reshape(2, 4, 5) + 1
    sky = torch.zeros(2, 4, 5)
    sky[0, 0] = 1.0  # five sky pixels
    depth[1, 3, 4] = float("nan")
    cloud = fuse_point_cloud(depth, k, ext, confidence=conf, sky=sky, conf_threshold=11.0, max_points=None)
    expected = (conf >= 11) & (sky < 0.3) & torch.isfinite(depth)
    assert len(cloud) == int(expected.sum()) == 29
    # The official adaptive threshold: 40th percentile of the non-sky confidences, clamped to [1.05, 90th].
    adaptive = fuse_point_cloud(depth, k, ext, confidence=conf, max_points=None)
    valid = torch.isfinite(depth)
    assert len(adaptive) == int((conf[valid] >= torch.quantile(conf[valid], 0.4)).sum())
    assert len(fuse_point_cloud(depth, k, ext, stride=2, max_points=None)) == 2 * 2 * 3 - 0  # rows 0, 2; cols 0, 2, 4
    a = fuse_point_cloud(depth, k, ext, max_points=7, seed=3)
    b = fuse_point_cloud(depth, k, ext, max_points=7, seed=3)
    assert len(a) == 7 and torch.equal(a.points, b.points)
    with pytest.raises(ValueError, match="intrinsics"):
        fuse_point_cloud(depth, k[:1], ext)


def test_pose_helpers():
    g = torch.Generator().manual_seed(0)
    r = quaternion_to_matrix(torch.nn.functional.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=-1))
    t = torch.randn(5, 3, generator=g, dtype=torch.float64)
    ext = torch.cat([r, t[..., None]], -1)
    inv = invert_extrinsics(ext)
    assert torch.allclose(inv[:, :3, :3] @ r, torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-12)
    assert torch.allclose(invert_extrinsics(inv), ext, atol=1e-12)
    # Known similarity: dst = 2.5 R src + t
    src = torch.randn(10, 3, generator=g, dtype=torch.float64)
    dst = 2.5 * src @ r[0].T + t[0]
    r_est, t_est, s_est = umeyama_sim3(src, dst)
    assert abs(s_est - 2.5) < 1e-10 and torch.allclose(r_est, r[0], atol=1e-10) and torch.allclose(t_est, t[0], atol=1e-10)
    # Collinear centres: the scale is still the ratio of spreads.
    line = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None] * torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    assert abs(umeyama_sim3(line, 3 * line)[2] - 3.0) < 1e-10
    norm = normalize_extrinsics(ext)
    assert torch.allclose(norm[0], torch.eye(4, dtype=torch.float64), atol=1e-12)
    dist = torch.linalg.inv(norm)[:, :3, 3].norm(dim=-1)
    assert abs(float(torch.median(dist)) - 1.0) < 1e-12


def _cloud(n: int = 50) -> PointCloud:
    g = torch.Generator().manual_seed(1)
    return PointCloud(torch.randn(n, 3, generator=g), torch.randint(0, 256, (n, 3), generator=g, dtype=torch.uint8),
                      torch.zeros(n, dtype=torch.long))


def _cameras(n: int = 3):
    ext = torch.eye(4)[:3].repeat(n, 1, 1)
    ext[:, 0, 3] = torch.arange(n, dtype=torch.float32)
    k = torch.tensor([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]).repeat(n, 1, 1)
    return ext, k


def test_ply_round_trip(tmp_path):
    import plyfile
    cloud = _cloud()
    ext, k = _cameras()
    frusta = camera_frusta(k, ext, (48, 64), 0.2)
    assert frusta.shape == (3, 8, 2, 3)
    write_ply(tmp_path / "plain.ply", cloud)
    write_ply(tmp_path / "cams.ply", cloud, frusta)
    plain = plyfile.PlyData.read(str(tmp_path / "plain.ply"))
    assert plain["vertex"].count == 50
    np.testing.assert_allclose(np.stack([plain["vertex"][a] for a in "xyz"], 1), cloud.points.numpy())
    assert np.array_equal(np.stack([plain["vertex"][c] for c in ("red", "green", "blue")], 1), cloud.colors.numpy())
    cams = plyfile.PlyData.read(str(tmp_path / "cams.ply"))
    assert cams["vertex"].count == 50 + 5 * 3 and cams["edge"].count == 8 * 3
    assert "anydepth points 50 cameras 3" in cams.comments
    centre = np.stack([cams["vertex"][a] for a in "xyz"], 1)[50]
    np.testing.assert_allclose(centre, [0.0, 0.0, 0.0], atol=1e-6)  # camera 0 sits at the origin


def test_glb_round_trip(tmp_path):
    import pygltflib
    cloud = _cloud(41)
    ext, k = _cameras(2)
    frusta = camera_frusta(k, ext, (48, 64), 0.1)
    a = glb_alignment(ext[0], cloud.points)
    write_glb(tmp_path / "scene.glb", cloud, frusta, transform=a)
    gltf = pygltflib.GLTF2().load(str(tmp_path / "scene.glb"))
    modes = {m.name: m.primitives[0].mode for m in gltf.meshes}
    assert modes == {"points": 0, "cameras": 1}
    pos = {m.name: gltf.accessors[m.primitives[0].attributes.POSITION] for m in gltf.meshes}
    assert pos["points"].count == 41 and pos["cameras"].count == 2 * 16  # 8 line segments per camera
    blob = gltf.binary_blob()
    view = gltf.bufferViews[pos["points"].bufferView]
    got = np.frombuffer(blob[view.byteOffset:view.byteOffset + view.byteLength], dtype="<f4").reshape(-1, 3)
    expected = (cloud.points.double() @ a[:3, :3].T + a[:3, 3]).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.allclose(np.median(got, axis=0), 0, atol=1e-5)  # centred on the points' median
    assert gltf.scenes[0].extras["anydepth_cameras"] == 2


def test_cameras_json_and_colmap(tmp_path):
    ext, k = _cameras(2)
    ext[1, :3, :3] = quaternion_to_matrix(torch.tensor([0.0, math.sin(0.3), 0.0, math.cos(0.3)]))
    write_cameras_json(tmp_path / "cameras.json", ext, k, names=["a.png", "b.png"], sizes=[(48, 64), (48, 64)])
    views = json.loads((tmp_path / "cameras.json").read_text())
    assert isinstance(views, list) and len(views) == 2
    assert np.asarray(views[1]["extrinsics"]).shape == (3, 4) and np.asarray(views[1]["intrinsics"]).shape == (3, 3)
    np.testing.assert_allclose(views[1]["extrinsics"], ext[1].numpy(), atol=1e-7)
    write_colmap_text(tmp_path / "colmap", ext, k, [(48, 64)] * 2, ["a.png", "b.png"], _cloud(5))
    cams = [l for l in (tmp_path / "colmap/cameras.txt").read_text().splitlines() if not l.startswith("#")]
    assert cams[0].split() == ["1", "PINHOLE", "64", "48", "50", "50", "32", "24"]
    lines = [l for l in (tmp_path / "colmap/images.txt").read_text().splitlines() if not l.startswith("#")]
    imgs, points2d = lines[0::2], lines[1::2]  # two lines per image: the pose, then its POINTS2D (may be empty)
    assert len(imgs) == 2 and sum(len(p.split()) // 3 for p in points2d) <= 5
    qw, qx, qy, qz = map(float, imgs[1].split()[1:5])
    r = quaternion_to_matrix(torch.tensor([qx, qy, qz, qw], dtype=torch.float64))
    assert torch.allclose(r, ext[1, :3, :3].double(), atol=1e-6) and imgs[1].split()[-1] == "b.png"
    pts = [l for l in (tmp_path / "colmap/points3D.txt").read_text().splitlines() if not l.startswith("#")]
    assert len(pts) == 5


# ------------------------------------------------------------------------------------------------ scene files


def _result(scene, confidence: bool = True, cameras: bool = True):
    """A GeometryResult of the analytic scene (metres), as AnyViewEstimator would return it."""
    from anydepth.anyview import GeometryResult

    depth = scene["depth"].float()
    n, (h, w) = depth.shape[0], scene["size"]
    conf = (1.0 + torch.arange(n * h * w, dtype=torch.float32).reshape(n, h, w) / (n * h * w)) if confidence else None
    colours = torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(0))
    return GeometryResult(depth=depth, confidence=conf, sky=None, extrinsics=scene["ext"].float() if cameras else None,
                          intrinsics=scene["k"].float() if cameras else None, kind="metric_depth", processed_size=(h, w),
                          processed_depth=depth, processed_confidence=conf, processed_sky=None,
                          processed_intrinsics=scene["k"].float() if cameras else None, processed_images=colours,
                          input_sizes=[(h, w)] * n, model_name="synthetic")


def test_cameras_json_reads_back_what_is_written(tmp_path, scene):
    from anydepth.scene import parse_cameras, read_cameras_json

    path = write_cameras_json(tmp_path / "cameras.json", scene["ext"], scene["k"], names=["a", "b", "c"], sizes=[(30, 40)] * 3)
    ext, k = read_cameras_json(path, 3)
    torch.testing.assert_close(ext, scene["ext"][:, :3])
    torch.testing.assert_close(k, scene["k"])
    views = json.loads(open(path).read())
    ext2, k2 = parse_cameras(json.dumps({"views": [{"intrinsics": v["intrinsics"]} for v in views]}), 3)
    assert ext2 is None and torch.equal(k2, k)
    four = [{"extrinsics": np.vstack([v["extrinsics"], [0, 0, 0, 1]]).tolist()} for v in views]
    assert parse_cameras(json.dumps(four), 3).extrinsics.shape == (3, 4, 4)


@pytest.mark.parametrize("text, match", [
    ("{oops", "cams: not valid JSON"),
    ("[]", "expected a list of 2 views .* got a list of 0"),
    ('{"a": 1}', "expected a list of 2 views .* got a JSON dict"),
    ('[1, 2]', "view 0 must be an object"),
    ('[{"name": "a"}, {"name": "b"}]', "no view has 'extrinsics'"),
    ('[{"intrinsics": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}, {}]', r"intrinsics for every view or for none; views \[1\]"),
    ('[{"intrinsics": [[1, 0], [0, 1]]}, {"intrinsics": [[1, 0], [0, 1]]}]', "view 0: intrinsics must be a 3×3 matrix"),
    ('[{"extrinsics": [[1, 0, 0, 0]]}, {"extrinsics": "x"}]', "view 0: extrinsics must be a 3×4 or 4×4 matrix"),
])
def test_cameras_json_errors_name_the_source_and_the_view(text, match):
    from anydepth.scene import parse_cameras

    with pytest.raises(ValueError, match=match):
        parse_cameras(text, 2, source="cams")


def test_cameras_file_errors_name_the_file(tmp_path):
    from anydepth.scene import read_cameras_json

    with pytest.raises(ValueError, match="cannot read the cameras file .*missing.json"):
        read_cameras_json(tmp_path / "missing.json", 2)
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match=r"bad.json: expected a list of 2 views"):
        read_cameras_json(tmp_path / "bad.json", 2)


def test_point_cloud_files_are_the_same_bytes_for_the_same_result(tmp_path, scene):
    import plyfile
    import pygltflib

    from anydepth.geometry import scene_extent
    from anydepth.scene import FRUSTUM_SCALE, write_point_cloud

    res = _result(scene)
    saved = write_point_cloud(res, {"ply": tmp_path / "a.ply", "glb": tmp_path / "a.glb"}, max_points=500)
    again = write_point_cloud(res, {"ply": tmp_path / "b.ply"}, max_points=500)
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()
    cloud = res.point_cloud(max_points=500)
    assert saved.points == again.points == len(cloud) == 500 and saved.cameras == 3
    ply = plyfile.PlyData.read(str(saved.paths["ply"]))
    assert ply["vertex"].count == 500 + 5 * 3 and ply["edge"].count == 8 * 3
    np.testing.assert_allclose(np.stack([ply["vertex"][c][:500] for c in "xyz"], -1), cloud.points.numpy(), rtol=1e-6)
    # the frusta are FRUSTUM_SCALE of the written cloud's extent: centre to a corner of camera 0
    frusta = res.frusta(FRUSTUM_SCALE * scene_extent(cloud.points))
    np.testing.assert_allclose(np.stack([ply["vertex"][c][500:505] for c in "xyz"], -1),
                               torch.cat([frusta[0, :1, 0], frusta[0, :4, 1]]).numpy(), rtol=1e-5, atol=1e-6)
    gltf = pygltflib.GLTF2().load(str(saved.paths["glb"]))
    assert gltf.scenes[0].extras["anydepth_points"] == 500 and gltf.scenes[0].extras["anydepth_cameras"] == 3
    with pytest.raises(ValueError, match="formats must be some of ply, glb"):
        write_point_cloud(res, {"obj": tmp_path / "a.obj"})
    with pytest.raises(ValueError, match="has no cameras"):
        write_point_cloud(_result(scene, cameras=False), {"ply": tmp_path / "c.ply"})


def test_confidence_map_is_min_max_over_all_views(scene):
    from anydepth.scene import confidence_map

    res = _result(scene)
    conf = confidence_map(res)
    assert conf.shape == (3, 30, 40) and float(conf.min()) == 0.0 and float(conf.max()) == 1.0
    torch.testing.assert_close(conf, (res.confidence - res.confidence.min()) / (res.confidence.max() - res.confidence.min()))
    assert torch.equal(confidence_map(_result(scene, confidence=False)), torch.zeros(3, 30, 40))
    res.confidence = [res.confidence[0], res.confidence[1, :15, :20], res.confidence[2]]  # views of other sizes
    assert confidence_map(res).shape == (3, 30, 40)
