"""The COLMAP model anydepth writes, read back by COLMAP's own reader (pycolmap, test-only).

Cameras, images (names, poses) and points must come back as written, and COLMAP's projection of every point into
every image must agree with :func:`anydepth.geometry.project_points` (so the quaternion order, the translation and
the intrinsics mean what COLMAP means). Then the whole recipe for splat training: photos -> ``anydepth geometry
--colmap`` -> a folder a trainer reads (``images/``, ``sparse/0``, depth maps), checked with pycolmap.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from anydepth.geometry import PointCloud, project_points, write_colmap_text

pycolmap = pytest.importorskip("pycolmap")


def look_at(centre: list[float], target: list[float]) -> torch.Tensor:
    """World-to-camera ``[3, 4]`` of an OpenCV camera at ``centre`` looking at ``target`` (y down)."""
    c, t = torch.tensor(centre, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    z = torch.nn.functional.normalize(t - c, dim=0)
    x = torch.nn.functional.normalize(torch.linalg.cross(z, torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)), dim=0)
    r = torch.stack([x, torch.linalg.cross(z, x), z])
    return torch.cat([r, (-r @ c)[:, None]], 1)


def cam_from_world(image) -> np.ndarray:
    """``[3, 4]`` of a pycolmap image (a method since COLMAP 3.12's rigs and frames, a property before)."""
    pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
    return np.asarray(pose.matrix())


def img_from_cam(cam, x_cam: np.ndarray) -> np.ndarray:
    """COLMAP's projection of a camera-frame point (pycolmap 4 takes the 3D point, older releases x/z, y/z)."""
    try:
        return np.asarray(cam.img_from_cam(np.asarray(x_cam, dtype=np.float64)))
    except TypeError:
        return np.asarray(cam.img_from_cam(x_cam[:2] / x_cam[2]))


def test_pycolmap_reads_cameras_images_and_points_as_written(tmp_path):
    ext = torch.stack([look_at([0, 0, 0], [0, 2, 3]), look_at([1.5, -0.5, 0.5], [0.5, 2, 2.5]),
                       look_at([-1, 0.3, -0.5], [-0.5, 2, 2.5]), look_at([0.2, -1, 0], [0, 2, 4])])  # one turned ~180°
    k = torch.tensor([[[35.0, 0, 20.5], [0, 33.0, 15], [0, 0, 1]]], dtype=torch.float64).repeat(4, 1, 1)
    k[1, 0, 0], k[2, 1, 2] = 45.0, 14.0
    sizes = [(30, 41), (30, 41), (31, 40), (30, 41)]
    names = ["a.jpg", "b.jpg", "sub_c.png", "d.jpg"]
    g = torch.Generator().manual_seed(0)
    cloud = PointCloud(torch.randn(300, 3, generator=g) + torch.tensor([0.0, 2.0, 3.0]),
                       torch.randint(0, 256, (300, 3), generator=g, dtype=torch.uint8),
                       torch.randint(-1, 5, (300,), generator=g))  # -1 and 4: no such view, so no track
    write_colmap_text(tmp_path / "sparse", ext, k, sizes, names, cloud)

    rec = pycolmap.Reconstruction(str(tmp_path / "sparse"))
    assert (rec.num_cameras(), rec.num_images(), rec.num_points3D()) == (4, 4, 300)
    uv, z = project_points(cloud.points.double(), k, ext)
    for i in range(4):
        image = rec.find_image_with_name(names[i])
        cam = rec.camera(image.camera_id)
        assert cam.model == pycolmap.CameraModelId.PINHOLE and (cam.height, cam.width) == sizes[i]
        np.testing.assert_allclose(cam.params, [k[i, 0, 0], k[i, 1, 1], k[i, 0, 2], k[i, 1, 2]], rtol=1e-9)
        np.testing.assert_allclose(cam_from_world(image), ext[i].numpy(), atol=1e-9)
        # COLMAP's own projection of every point in front of the camera equals ours
        front = (z[i] > 0.1).nonzero()[:, 0]
        for j in front[:50].tolist():
            x_cam = cam_from_world(image) @ np.append(cloud.points[j].double().numpy(), 1.0)
            np.testing.assert_allclose(img_from_cam(cam, x_cam), uv[i, j].numpy(), atol=1e-6)
    tracked = 0
    for pid, point in rec.points3D.items():
        np.testing.assert_allclose(point.xyz, cloud.points[pid - 1].double().numpy(), atol=1e-5)
        assert list(point.color) == cloud.colors[pid - 1].tolist()
        # one track element, as the official export: the view the point came from and its pixel there
        view = int(cloud.view[pid - 1])
        if 0 <= view < 4 and z[view, pid - 1] > 0:
            (element,) = point.track.elements
            assert element.image_id == rec.find_image_with_name(names[view]).image_id
            observed = rec.image(element.image_id).points2D[element.point2D_idx]
            assert observed.point3D_id == pid
            np.testing.assert_allclose(observed.xy, uv[view, pid - 1].numpy(), atol=1e-5)
            tracked += 1
        else:
            assert point.track.length() == 0
    assert tracked > 150 and sum(rec.image(i).num_points3D for i in rec.images) == tracked


def test_photos_to_a_training_ready_folder(tmp_path):
    """The docs' recipe: `anydepth geometry photos/ --colmap`, then images/ + sparse/0/ + depth maps, read by
    pycolmap with the cameras of cameras.json and depth maps of the images' sizes."""
    from PIL import Image
    from tiny_da3 import TINY_FILE, official_tiny, save_official

    from anydepth.cli import main
    from anydepth.export import load_depth

    model = save_official(official_tiny(TINY_FILE, seed=3), tmp_path / "model")
    photos = tmp_path / "photos"
    photos.mkdir()
    base = Image.fromarray(np.random.default_rng(1).integers(0, 255, (3, 4, 3), dtype=np.uint8)).resize((84, 56))
    for i in range(3):
        base.rotate(4 * i).save(photos / f"IMG_{i:04d}.png")
    scene = tmp_path / "scene"
    rc = main(["geometry", str(photos), "--out", str(scene), "--model", str(model), "--dtype", "fp32", "--device", "cpu",
               "--process-res", "84", "--colmap", "--max-points", "2000", "--no-glb"])
    assert rc == 0
    train = tmp_path / "train"  # the layout 3DGS-style trainers read
    shutil.copytree(photos, train / "images")
    shutil.copytree(scene / "colmap", train / "sparse" / "0")
    (train / "depths").mkdir()
    for f in scene.rglob("*_depth.*"):  # the .npy and its .json (kind and units)
        shutil.copy(f, train / "depths" / f.name)

    rec = pycolmap.Reconstruction(str(train / "sparse" / "0"))
    cams = json.loads((scene / "cameras.json").read_text())
    assert rec.num_images() == 3 and 0 < rec.num_points3D() <= 2000
    for view in cams:
        image = rec.find_image_with_name(view["name"])
        assert image is not None and (train / "images" / image.name).is_file()
        cam = rec.camera(image.camera_id)
        k = np.asarray(view["intrinsics"])
        np.testing.assert_allclose(cam.params, [k[0, 0], k[1, 1], k[0, 2], k[1, 2]], rtol=1e-7)
        np.testing.assert_allclose(cam_from_world(image), np.asarray(view["extrinsics"]), atol=1e-7)
        with Image.open(train / "images" / image.name) as im:
            assert (cam.width, cam.height) == im.size
        depth = load_depth(train / "depths" / f"{image.name.rsplit('.', 1)[0]}_depth.npy")
        assert depth.depth.shape == (cam.height, cam.width) and depth.kind == "depth"
    # the points lie in front of the cameras that saw them: most project inside some image
    inside = 0
    for point in rec.points3D.values():
        for image in rec.images.values():
            x = cam_from_world(image) @ np.append(point.xyz, 1.0)
            cam = rec.camera(image.camera_id)
            if x[2] > 0:
                u, v = img_from_cam(cam, x)
                if -1 <= u <= cam.width and -1 <= v <= cam.height:
                    inside += 1
                    break
    assert inside >= 0.95 * rec.num_points3D()
    assert math.isfinite(sum(p.xyz.sum() for p in rec.points3D.values()))
    # every point keeps the pixel it was lifted from: inside its image, where COLMAP projects it
    for pid, point in rec.points3D.items():
        (element,) = point.track.elements
        image = rec.image(element.image_id)
        cam = rec.camera(image.camera_id)
        xy = image.points2D[element.point2D_idx].xy
        assert -0.5 <= xy[0] <= cam.width - 0.5 and -0.5 <= xy[1] <= cam.height - 0.5, (pid, xy)
        np.testing.assert_allclose(img_from_cam(cam, cam_from_world(image) @ np.append(point.xyz, 1.0)), xy, atol=1e-3)
