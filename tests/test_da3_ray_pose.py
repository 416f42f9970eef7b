"""Ray-based camera poses (the official ``use_ray_pose``, ComfyUI core's ``ray_pose``) against the official package.

The solver draws RANSAC samples from torch's generator; with the same seed the official code draws the same
ones, so cameras must agree within 1e-4 of each output's range (tiny and SMALL networks, 2–4 views at
non-square sizes, the estimator and the CLI). The solver itself is checked on synthetic ray maps: the
official function's numbers (including the random subset of > 8000 inliers) and a known camera recovered.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

pytest.importorskip("depth_anything_3", reason="the official reference: pip install --no-deps depth-anything-3==0.1.1")

from comfy_harness import comfy  # noqa: F401  (the in-process ComfyUI fixture)
from tiny_da3 import TINY_FILE, TINY_MONO, official_nested, official_small, official_tiny, ours_from, save_official

from anydepth.anyview import AnyViewEstimator
from anydepth.models.config import DA3_PRESETS, NestedDA3Config
from anydepth.models.ray_pose import rays_to_cameras, rays_to_pinhole
from conftest import rel_error

TOL = 1e-4


def _views(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(1, n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _run_both(ref, ours, x, seed: int, **kwargs):
    torch.manual_seed(seed)
    with torch.no_grad():
        r = ref(x, use_ray_pose=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        o = ours(x, pose_method="ray_pose", **kwargs)
    return r, o


def _check(r, o) -> None:
    assert rel_error(o.extrinsics, r.extrinsics) <= TOL
    assert rel_error(o.intrinsics, r.intrinsics) <= TOL
    assert rel_error(o.depth, r.depth) <= TOL and rel_error(o.confidence, r.depth_conf) <= TOL


@pytest.fixture(scope="module")
def tiny_pair():
    ref = official_tiny(TINY_FILE, seed=11)
    return ref, ours_from(ref, TINY_FILE)


@pytest.mark.parametrize("views, size", [(2, (42, 70)), (3, (70, 42)), (4, (56, 98))])
def test_ray_pose_matches_official(tiny_pair, views, size):
    ref, ours = tiny_pair
    r, o = _run_both(ref, ours, _views(views, *size, seed=views), seed=views, chunk=1)
    _check(r, o)
    with torch.no_grad():
        decoded = ours(_views(views, *size, seed=views))
    assert rel_error(o.extrinsics, decoded.extrinsics) > 1e-2  # really another pose method
    assert o.rays is None  # solved from the rays, not returned unless asked for


def test_ray_pose_of_the_small_network_matches_official():
    ref = official_small(seed=5)
    ours = ours_from(ref, DA3_PRESETS["da3-small"])
    _check(*_run_both(ref, ours, _views(3, 56, 84, seed=2), seed=9))


def test_nested_ray_pose_matches_official():
    metric_cfg = replace(TINY_MONO, metric=True, name="tiny-metric")
    ref = official_nested(official_tiny(TINY_FILE, seed=13), official_tiny(metric_cfg, seed=14))
    ours = ours_from(ref, NestedDA3Config(TINY_FILE, metric_cfg))
    r, o = _run_both(ref, ours, _views(2, 42, 70, seed=15), seed=3)
    _check(r, o)
    assert abs(float(o.scale_factor) - r.scale_factor) <= TOL * abs(r.scale_factor)


# ------------------------------------------------------------------------------------------------ the solver


def _synthetic_rays(h: int, w: int, rot: torch.Tensor, centre: torch.Tensor, focal=(1.3, 1.1), outliers: float = 0.1,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A ray map ``[1, 1, h, w, 6]`` of a camera with the principal point at the centre, plus noise, outliers and a
    few rays parallel to the image plane; and a confidence map."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.linspace(1 / w, 2 - 1 / w, w) - 1
    ys = torch.linspace(1 / h, 2 - 1 / h, h) - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    d = torch.stack([xx / focal[0], yy / focal[1], torch.ones_like(xx)], -1) @ rot.T
    rays = torch.cat([d, centre.expand(h, w, 3)], -1)
    rays = rays + 0.002 * torch.randn(rays.shape, generator=g)
    bad = torch.rand(h, w, generator=g) < outliers
    rays[..., :3][bad] = torch.randn(int(bad.sum()), 3, generator=g)
    rays[0, :5, 2] = 0.0  # parallel to the image plane: no weight
    return rays[None, None], 1 + torch.rand(1, 1, h, w, generator=g)


def _rotation(a: float, b: float) -> torch.Tensor:
    ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = torch.tensor([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return ry @ rx


@pytest.mark.parametrize("h, w", [(96, 128), (40, 24)])  # 12288 rays (> 8000 inliers: the random refit subset), 960
def test_solver_matches_the_official_function_and_recovers_the_camera(h, w):
    from depth_anything_3.utils.ray_utils import get_extrinsic_from_camray

    rot, centre = _rotation(0.4, 0.2), torch.tensor([0.5, -0.2, 1.0])
    rays, conf = _synthetic_rays(h, w, rot, centre)
    torch.manual_seed(3)
    ext, focal_ref, pp_ref = get_extrinsic_from_camray(rays.clone(), conf.clone(), h, w)
    torch.manual_seed(3)
    r, c, f, pp = rays_to_pinhole(rays, conf)
    assert torch.allclose(r, ext[:, :, :3, :3], atol=1e-5) and torch.allclose(c, ext[:, :, :3, 3], atol=1e-6)
    assert torch.allclose(f, focal_ref, atol=1e-5) and torch.allclose(pp, pp_ref, atol=1e-5)
    assert torch.allclose(r[0, 0], rot, atol=2e-3) and torch.allclose(c[0, 0], centre, atol=1e-3)
    assert torch.allclose(f[0, 0], torch.tensor([1.3, 1.1]), atol=2e-3) and torch.allclose(pp[0, 0], torch.ones(2), atol=2e-3)


def test_seeded_generator_reproduces_the_global_one_and_validates_input():
    rays, conf = _synthetic_rays(24, 40, _rotation(0.1, -0.3), torch.zeros(3), outliers=0.4, seed=1)
    torch.manual_seed(7)
    ext_a, k_a = rays_to_cameras(rays, conf, (42, 70))
    ext_b, k_b = rays_to_cameras(rays, conf, (42, 70), generator=torch.Generator().manual_seed(7))
    assert torch.equal(ext_a, ext_b) and torch.equal(k_a, k_b)
    assert k_a.shape == (1, 1, 3, 3) and ext_a.shape == (1, 1, 3, 4)
    with pytest.raises(ValueError, match=r"\[\.\.\., h, w, 6\]"):
        rays_to_cameras(rays[..., :3], conf, (42, 70))


# ------------------------------------------------------------------------------------------------ API and CLI


def _images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, h // 7 + 1, w // 7 + 1, generator=g)
    return torch.nn.functional.interpolate(low, (h, w), mode="bilinear").permute(0, 2, 3, 1).contiguous()


def test_estimator_ray_pose_matches_the_official_network(tiny_pair):
    ref, ours = tiny_pair
    images = _images(3, 56, 98, seed=4)  # the network sees 56×98 at process_res 98
    est = AnyViewEstimator(ours, dtype="fp32", process_res=98)
    res = est.estimate(images, pose_method="ray_pose", seed=21)
    assert res.pose_method == "ray_pose" and res.processed_size == (56, 98)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.manual_seed(21)  # seed=21 draws what torch.manual_seed(21) makes the official code draw
    with torch.no_grad():
        r = ref(((images.permute(0, 3, 1, 2) - mean) / std)[None], use_ray_pose=True)
    assert rel_error(res.extrinsics, r.extrinsics[0]) <= TOL
    assert rel_error(res.processed_intrinsics, r.intrinsics[0]) <= TOL
    again = est.estimate(images, pose_method="ray_pose", seed=21)
    assert torch.equal(again.extrinsics, res.extrinsics)  # a seed gives the same cameras every time


def test_ray_pose_needs_an_any_view_model():
    mono = ours_from(official_tiny(replace(TINY_MONO, name="tiny-mono"), seed=2), replace(TINY_MONO, name="tiny-mono"))
    est = AnyViewEstimator(mono, dtype="fp32", process_res=70)
    with pytest.raises(ValueError, match="ray_pose.*any-view"):
        est.estimate(_images(1, 42, 70, seed=0), pose_method="ray_pose")
    with pytest.raises(ValueError, match="unknown pose_method"):
        est.estimate(_images(1, 42, 70, seed=0), pose_method="rays")


def test_cli_pose_method_writes_the_api_cameras(tmp_path, capsys):
    from PIL import Image

    from anydepth.cli import main

    ref = official_tiny(TINY_FILE, seed=6)
    folder = save_official(ref, tmp_path / "tiny-da3")
    images = _images(2, 56, 84, seed=8)
    for i, im in enumerate(images):
        Image.fromarray((im.numpy() * 255).round().astype("uint8")).save(tmp_path / f"v{i}.png")
    out = tmp_path / "out"
    args = ["geometry", str(tmp_path / "v0.png"), str(tmp_path / "v1.png"), "--out", str(out), "--model", str(folder),
            "--dtype", "fp32", "--device", "cpu", "--process-res", "84", "--pose-method", "ray_pose", "--no-glb", "--no-ply"]
    assert main(args) == 0
    cams = json.loads((out / "cameras.json").read_text())
    import numpy as np

    pics = [np.asarray(Image.open(tmp_path / f"v{i}.png")) for i in range(2)]
    res = AnyViewEstimator(str(folder), dtype="fp32", device="cpu", process_res=84).estimate(pics, pose_method="ray_pose")
    got = torch.tensor([c["extrinsics"] for c in (cams["views"] if isinstance(cams, dict) else cams)], dtype=torch.float32)
    assert torch.allclose(got, res.extrinsics, atol=1e-5)


def test_node_pose_method_input(comfy, monkeypatch):
    """Any-View Geometry's optional ``pose_method`` reaches the library: the node's cameras are the API's."""
    folder = save_official(official_tiny(TINY_FILE, seed=12), comfy.models_dir / "depthanything3" / "tiny-ray")
    seen = {}
    node = comfy.pack.nodes.geometry_nodes.AnyViewGeometry
    real = node.execute.__func__

    def spy(cls, *args, **kwargs):
        out = real(cls, *args, **kwargs)
        seen["geometry"] = out.args[3]
        return out

    monkeypatch.setattr(node, "execute", classmethod(spy))
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 84, "height": 56, "batch_size": 3, "color": 0x3366AA}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": "tiny-ray/model.safetensors", "dtype": "fp32",
                                                             "memory": "managed"}},
        "3": {"class_type": "AnyDepthAnyViewGeometry",
              "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "ref_view_strategy": "first", "process_res": 84,
                         "pose_method": "ray_pose"}},
    }
    comfy.run(prompt)
    image = torch.ones(3, 56, 84, 3) * torch.tensor([0x33, 0x66, 0xAA]) / 255
    want = AnyViewEstimator(str(folder), dtype="fp32", device="cpu").estimate(image, process_res=84, ref_view_strategy="first",
                                                                               pose_method="ray_pose")
    got = seen["geometry"]
    assert got.pose_method == "ray_pose"
    torch.testing.assert_close(got.extrinsics, want.extrinsics, rtol=1e-5, atol=1e-5)

