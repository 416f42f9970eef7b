"""Depth Anything 3 inference API and CLI: the official preprocessing, post-processing and file outputs."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("depth_anything_3", reason="the official reference: pip install --no-deps depth-anything-3==0.1.1")

from tiny_da3 import TINY_FILE, TINY_MONO, official_nested, official_tiny, ours_from, save_official

from anydepth import DepthEstimator
from anydepth.anyview import AnyViewEstimator, area_resize, da3_processed_size, normalize_extrinsics, resize_views, umeyama_sim3
from anydepth.cameras import quaternion_to_matrix
from anydepth.models.config import NestedDA3Config
from anydepth.normalize import normalize_depth
from anydepth.preprocess import resize_depth
from conftest import rel_error as _rel

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _official_size(h: int, w: int, res: int = 504) -> tuple[int, int]:
    """Transcription of the official ``InputProcessor`` size rule (upper_bound_resize)."""
    longest = max(w, h)
    if longest != res:
        s = res / float(longest)
        w, h = max(1, round(w * s)), max(1, round(h * s))

    def nearest(x: int, p: int = 14) -> int:
        down = (x // p) * p
        return down + p if abs(down + p - x) <= abs(x - down) else down

    return max(1, nearest(h)), max(1, nearest(w))


def _official_preprocess(img: np.ndarray, res: int = 504) -> np.ndarray:
    """The official uint8 OpenCV pipeline (``InputProcessor._process_one``), returning floats in 0..1."""
    h, w = img.shape[:2]
    if max(w, h) != res:
        s = res / float(max(w, h))
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
    h2, w2 = _official_size(*img.shape[:2], res=max(img.shape[:2]))
    if (h2, w2) != img.shape[:2]:
        up = w2 > img.shape[1] or h2 > img.shape[0]
        img = cv2.resize(img, (w2, h2), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
    return img.astype(np.float32) / 255


@pytest.mark.parametrize("hw", [(480, 640), (1080, 1920), (200, 150), (333, 777), (504, 377), (20, 1000)])
def test_processed_size_follows_the_official_rule(hw):
    first, size = da3_processed_size(*hw)
    expected = _official_size(*hw)
    assert size == (max(14, expected[0]), max(14, expected[1]))  # never below one patch (the official gives 0 -> 1)
    assert max(first) == 504 and size[0] % 14 == 0 and size[1] % 14 == 0


def test_resize_matches_opencv():
    rng = np.random.default_rng(0)
    img = rng.random((100, 133, 3)).astype(np.float32)
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    ref = cv2.resize(img, (50, 37), interpolation=cv2.INTER_AREA)  # non-integer footprints
    assert np.abs(area_resize(t, (37, 50))[0].permute(1, 2, 0).numpy() - ref).max() < 1e-6
    for hw in [(480, 640), (200, 150), (333, 777)]:  # the whole uint8 pipeline, shrinking and enlarging
        u8 = (rng.random((*hw, 3)) * 255).astype(np.uint8)
        ref = _official_preprocess(u8)
        got = resize_views(torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255, da3_processed_size(*hw)[1])
        assert got.shape[-2:] == ref.shape[:2]
        assert np.abs(got[0].permute(1, 2, 0).numpy() - ref).max() <= 1.0 / 255 + 1e-6  # OpenCV's uint8 rounding between steps


@pytest.fixture(scope="module")
def tiny_anyview():
    ref = official_tiny(TINY_FILE, seed=31)
    return ref, ours_from(ref, TINY_FILE)


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """ComfyUI IMAGE layout ``[N, H, W, 3]`` in 0..1, smooth enough to look like photos."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, h // 7 + 1, w // 7 + 1, generator=g)
    return torch.nn.functional.interpolate(low, (h, w), mode="bilinear").permute(0, 2, 3, 1).contiguous()


def _official_input(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Exact 2× INTER_AREA of float images (the official resize without uint8 rounding), normalised."""
    arr = [cv2.resize(im.numpy(), (size[1], size[0]), interpolation=cv2.INTER_AREA) for im in images]
    x = torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2)
    return ((x - MEAN) / STD)[None]


def test_estimator_matches_official_network_and_maps_back(tiny_anyview):
    ref, ours = tiny_anyview
    images = _images(3, 140, 196, seed=1)
    res = AnyViewEstimator(ours, dtype="fp32", process_res=98).estimate(images)
    assert res.processed_size == (70, 98) and res.kind == "depth" and res.reference_view is not None
    with torch.no_grad():
        r = ref(_official_input(images, (70, 98)))
    assert _rel(res.processed_depth, r.depth[0]) <= 1e-4
    assert _rel(res.processed_confidence, r.depth_conf[0]) <= 1e-4
    assert _rel(res.extrinsics, r.extrinsics[0]) <= 1e-4
    assert _rel(res.processed_intrinsics, r.intrinsics[0]) <= 1e-4
    # Back at the input size: bilinear depth, intrinsics scaled by the size ratio (2×).
    assert res.depth.shape == res.confidence.shape == (3, 140, 196)
    assert torch.allclose(res.depth, resize_depth(res.processed_depth, (140, 196)))
    assert torch.allclose(res.intrinsics, res.processed_intrinsics * torch.tensor([[2.0], [2.0], [1.0]]))
    assert res.processed_images.shape == (3, 70, 98, 3)
    cloud = res.point_cloud(max_points=None)
    assert 0 < len(cloud) < 3 * 70 * 98  # the confidence filter drops the least confident pixels
    # Raw DA3 depth flows into the ControlNet normalisation: near (small depth) comes out white.
    as_v2 = res.depth_result()
    assert as_v2.kind == "depth" and as_v2.depth is res.depth and as_v2.processed_size == [(70, 98)] * 3
    control = normalize_depth(res.depth, res.kind, "minmax")
    flat_d, flat_c = res.depth.flatten(1), control.flatten(1)
    assert torch.equal(flat_c.gather(1, flat_d.argmin(1, keepdim=True)), torch.ones(3, 1))


def test_known_cameras_follow_the_official_alignment(tiny_anyview):
    """Given poses are returned as given; the depth is brought to their units (official Umeyama rule)."""
    ref, ours = tiny_anyview
    images = _images(3, 70, 98, seed=2)
    g = torch.Generator().manual_seed(2)
    ext = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    ext[:, :3, :3] = quaternion_to_matrix(torch.nn.functional.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=-1))
    ext[:, :3, 3] = 4.0 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    k = torch.tensor([[80.0, 0, 49], [0, 75.0, 35], [0, 0, 1]], dtype=torch.float64).repeat(3, 1, 1)
    res = AnyViewEstimator(ours, dtype="fp32", process_res=98).estimate(images, extrinsics=ext, intrinsics=k)
    assert torch.allclose(res.extrinsics.double(), ext[:, :3], atol=1e-6) and torch.allclose(res.intrinsics.double(), k)
    x = ((images.permute(0, 3, 1, 2) - MEAN) / STD)[None]
    with torch.no_grad():
        r = ref(x, normalize_extrinsics(ext).float()[None], k.float()[None])
    # Official: align_poses_umeyama(ext_ref=predicted, ext_est=given) -> predicted ≈ s·R·given + t; depth /= s.
    centres = lambda e: -(e[:, :3, :3].transpose(1, 2) @ e[:, :3, 3:])[..., 0]
    s = umeyama_sim3(centres(ext), centres(r.extrinsics[0].double()))[2]
    assert abs(res.scale_factor - s) <= 1e-6 * s
    assert _rel(res.processed_depth, r.depth[0] / s) <= 1e-4


def test_mono_and_metric_models():
    mono_cfg = replace(TINY_MONO, name="tiny-mono")
    ref = official_tiny(mono_cfg, seed=13)
    images = _images(2, 56, 98, seed=3)
    x = ((images.permute(0, 3, 1, 2) - MEAN) / STD)
    res = AnyViewEstimator(ours_from(ref, mono_cfg), dtype="fp32", process_res=98, batch_size=1).estimate(images)
    with torch.no_grad():
        expected = torch.cat([ref(x[i:i + 1, None]).depth[0] for i in range(2)])  # each view alone, sky filled
    assert res.kind == "depth" and res.extrinsics is None and res.intrinsics is None and res.sky is not None
    assert _rel(res.processed_depth, expected) <= 1e-4
    metric_cfg = replace(TINY_MONO, metric=True, name="tiny-metric")
    metric = AnyViewEstimator(ours_from(official_tiny(metric_cfg, seed=13), metric_cfg), dtype="fp32", process_res=98)
    relative = metric.estimate(images)
    assert relative.kind == "depth" and "intrinsics" in relative.notes[0]
    k = torch.tensor([[[120.0, 0, 98], [0, 150.0, 56], [0, 0, 1]]] * 2)  # at the input size 112×196 below
    big = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), (112, 196), mode="bilinear").permute(0, 2, 3, 1)
    metres = metric.estimate(big, intrinsics=k)
    # metres = output × focal / 300 with the focal in pixels of the network input (half the input size here)
    assert metres.kind == "metric_depth" and metres.processed_size == (56, 98)
    raw = metric.estimate(big).processed_depth
    assert torch.allclose(metres.processed_depth, raw * (135.0 / 2) / 300, rtol=1e-6)
    assert torch.allclose(metres.intrinsics, k)


def test_nested_model_gives_metres():
    cfg = NestedDA3Config(TINY_FILE, replace(TINY_MONO, metric=True))
    ref = official_nested(official_tiny(TINY_FILE, seed=13), official_tiny(cfg.metric_config, seed=14))
    images = _images(2, 42, 70, seed=4)
    res = AnyViewEstimator(ours_from(ref, cfg), dtype="fp32", process_res=70).estimate(images)
    with torch.no_grad():
        r = ref(((images.permute(0, 3, 1, 2) - MEAN) / STD)[None])
    assert res.kind == "metric_depth" and abs(res.scale_factor - r.scale_factor) <= 1e-4 * r.scale_factor
    assert _rel(res.processed_depth, r.depth[0]) <= 1e-4 and _rel(res.extrinsics, r.extrinsics[0]) <= 1e-4


def test_reduced_precision_stays_close(tiny_anyview):
    _, ours = tiny_anyview
    images = _images(2, 70, 98, seed=5)
    full = AnyViewEstimator(ours, dtype="fp32", process_res=98).estimate(images)
    half = AnyViewEstimator(replace_model(ours), dtype="bf16", process_res=98).estimate(images)
    # Measured like the V2 bound: max abs difference over the output magnitude (bf16 keeps 8 bits of mantissa).
    assert float((half.processed_depth - full.processed_depth).abs().max() / full.processed_depth.abs().max()) <= 0.02
    assert float((half.extrinsics - full.extrinsics).abs().max() / full.extrinsics.abs().max()) <= 0.02


def replace_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy (the estimator casts the network it is given to its dtype)."""
    import copy

    return copy.deepcopy(model)


def test_clear_errors(tiny_anyview):
    _, ours = tiny_anyview
    est = AnyViewEstimator(ours, dtype="fp32", process_res=98)
    images = _images(2, 70, 98, seed=6)
    with pytest.raises(ValueError, match=r"extrinsics must be \[2, 3, 4\] or \[2, 4, 4\]"):
        est.estimate(images, extrinsics=torch.eye(4)[None])
    with pytest.raises(ValueError, match="need intrinsics too"):
        est.estimate(images, extrinsics=torch.eye(4).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="ref_view_strategy"):
        est.estimate(images, ref_view_strategy="best")
    with pytest.raises(ValueError, match="DepthEstimator"):
        AnyViewEstimator("v2-small")
    with pytest.raises(ValueError, match="AnyViewEstimator"):
        DepthEstimator("da3-small")


def test_geometry_cli(tmp_path, tiny_anyview, monkeypatch):
    import pygltflib
    from PIL import Image

    from anydepth.cli import main
    ref, _ = tiny_anyview
    model = save_official(ref, tmp_path / "models" / "tiny-da3")
    photos = tmp_path / "photos"
    photos.mkdir()
    images = _images(3, 84, 126, seed=7)
    for i, im in enumerate(images):
        Image.fromarray((im.numpy() * 255).astype(np.uint8)).save(photos / f"view{i}.png")
    out = tmp_path / "out"
    rc = main(["geometry", str(photos), "--model", str(model), "--out", str(out), "--dtype", "fp32", "--process-res", "98",
               "--colmap"])
    assert rc == 0
    for i in range(3):
        d = np.load(out / "photos" / f"view{i}_depth.npy")  # per-view files mirror the input folder
        c = np.load(out / "photos" / f"view{i}_conf.npy")
        assert d.shape == c.shape == (84, 126) and d.dtype == np.float32 and (d > 0).all() and (c >= 1).all()
    views = json.loads((out / "cameras.json").read_text())
    assert [v["name"] for v in views] == ["view0.png", "view1.png", "view2.png"]
    assert all(np.asarray(v["extrinsics"]).shape == (3, 4) and np.asarray(v["intrinsics"]).shape == (3, 3) for v in views)
    assert views[0]["width"] == 126 and views[0]["height"] == 84
    import plyfile

    expected = AnyViewEstimator(str(model), dtype="fp32", process_res=98).estimate(sorted(photos.iterdir())).point_cloud()
    ply = plyfile.PlyData.read(str(out / "points.ply"))  # the points, then 5 vertices per camera frustum
    assert ply["vertex"].count == len(expected) + 5 * 3 and len(expected) > 0 and ply["edge"].count == 8 * 3
    gltf = pygltflib.GLTF2().load(str(out / "scene.glb"))
    assert gltf.scenes[0].extras == {**gltf.scenes[0].extras, "anydepth_points": len(expected), "anydepth_cameras": 3}
    lines = (out / "colmap" / "images.txt").read_text().splitlines()
    poses = [line for line in lines if not line.startswith("#")][0::2]  # each pose line is followed by its 2D points
    assert [line.split()[-1] for line in poses] == ["view0.png", "view1.png", "view2.png"]
    # Known cameras from a previous run's cameras.json are used and returned as given.
    rc = main(["geometry", *sorted(map(str, photos.iterdir())), "--model", str(model), "--out", str(tmp_path / "again"),
               "--dtype", "fp32", "--process-res", "98", "--cameras", str(out / "cameras.json"), "--no-glb"])
    again = json.loads((tmp_path / "again" / "cameras.json").read_text())
    assert rc == 0 and np.allclose([v["extrinsics"] for v in again], [v["extrinsics"] for v in views], atol=1e-6)


def test_da3_downloads_as_a_repo_folder(tmp_path, monkeypatch, tiny_anyview):
    """Same download path as V1/V2: real huggingface_hub against a local hub, the repo kept as DA3-SMALL/."""
    from hub_server import LocalHub, hub_env

    from anydepth.weights import resolve_checkpoint

    ref, _ = tiny_anyview
    upstream = save_official(ref, tmp_path / "upstream")
    files = {"depth-anything/DA3-SMALL": {"config.json": upstream / "config.json", "model.safetensors": upstream / "model.safetensors"}}
    models = tmp_path / "models"
    with LocalHub(files) as hub:
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        resolved = resolve_checkpoint("da3-small", models_dir=models)
        assert any(p.endswith("/resolve/main/model.safetensors") for p in hub.paths)
    assert resolved.path == models / "DA3-SMALL" and resolved.variant.name == "da3-small"
    est = AnyViewEstimator("da3-small", models_dir=models, dtype="fp32", process_res=98)  # found locally now
    assert est.model_name == "da3-small" and est.config.layers == TINY_FILE.layers
    res = est.estimate(_images(2, 70, 98, seed=8))
    with torch.no_grad():
        r = ref(((_images(2, 70, 98, seed=8).permute(0, 3, 1, 2) - MEAN) / STD)[None])
    assert _rel(res.processed_depth, r.depth[0]) <= 1e-4
