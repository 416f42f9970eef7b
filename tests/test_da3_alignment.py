"""Known-pose alignment and mixed-size views, as the official ``DepthAnything3.inference`` does them.

* Given poses are aligned to the predicted ones by Umeyama, or from 10 views on by the official RANSAC loop
  (NumPy ``default_rng(42)`` subsets, median nearest-centre inlier distance): the same similarity as the
  official ``align_poses_umeyama`` (evo's Umeyama, or a NumPy stand-in where evo is not installed).
* Views whose network sizes differ are centre-cropped to the smallest height and width (the official
  ``InputProcessor``), intrinsics shifted with the crop: the same pixels and intrinsics as the official
  processor (run on a minimal torchvision stand-in where torchvision is not installed).
"""

from __future__ import annotations

import sys
import types
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("depth_anything_3", reason="the official reference: pip install --no-deps depth-anything-3==0.1.1")

from tiny_da3 import TINY_FILE, TINY_MONO, install_evo_stub, official_tiny, ours_from

from anydepth.anyview import AnyViewEstimator, align_poses, normalize_extrinsics, umeyama_sim3, view_layouts
from anydepth.cameras import camera_centers, invert_rigid, quaternion_to_matrix, to_homogeneous
from conftest import rel_error


def _poses(n: int, seed: int) -> torch.Tensor:
    """``n`` random world-to-camera poses ``[n, 4, 4]`` (float64) spread around the origin."""
    g = torch.Generator().manual_seed(seed)
    ext = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    ext[:, :3, :3] = quaternion_to_matrix(torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1))
    ext[:, :3, 3] = 3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return ext


def _similar(ext: torch.Tensor, s: float, seed: int) -> torch.Tensor:
    """The same cameras in another world: centres ``s R c + t``, orientations turned by ``R``."""
    g = torch.Generator().manual_seed(seed)
    r = quaternion_to_matrix(torch.nn.functional.normalize(torch.randn(4, generator=g, dtype=torch.float64), dim=0))
    c2w = invert_rigid(ext)
    c2w[:, :3, :3] = r @ c2w[:, :3, :3]
    c2w[:, :3, 3] = s * c2w[:, :3, 3] @ r.T + torch.randn(3, generator=g, dtype=torch.float64)
    return invert_rigid(c2w)


@pytest.mark.parametrize("n, corrupt", [(5, 0), (12, 3), (16, 5)])
def test_pose_alignment_matches_official(n, corrupt):
    install_evo_stub()
    from depth_anything_3.utils.pose_align import align_poses_umeyama

    given = _poses(n, seed=n)
    predicted = _similar(given, 0.37, seed=1)
    predicted[:corrupt, :3, 3] += 5.0  # a few badly predicted cameras
    r_ref, t_ref, s_ref, aligned_ref = align_poses_umeyama(predicted.numpy(), given.numpy(), ransac=n >= 10,
                                                           return_aligned=True, random_state=42)
    r, t, s = align_poses(predicted, given)
    assert abs(s - s_ref) <= 1e-9 * s_ref
    assert np.allclose(r.numpy(), r_ref, atol=1e-9) and np.allclose(t.numpy(), t_ref, atol=1e-9)
    if corrupt:  # RANSAC keeps the scale of the good views; a plain Umeyama fit would not
        assert abs(s - 0.37) < 1e-9 and abs(umeyama_sim3(camera_centers(given), camera_centers(predicted))[2] - 0.37) > 1e-3


def test_estimator_with_many_known_poses_uses_the_ransac_alignment():
    install_evo_stub()
    from depth_anything_3.utils.pose_align import align_poses_umeyama

    ref = official_tiny(TINY_FILE, seed=2)
    n = 10
    g = torch.Generator().manual_seed(4)
    images = torch.nn.functional.interpolate(torch.rand(n, 3, 7, 9, generator=g), (42, 56), mode="bilinear").movedim(1, -1)
    given = _poses(n, seed=5)
    k = torch.tensor([[50.0, 0, 28], [0, 48.0, 21], [0, 0, 1]], dtype=torch.float64).repeat(n, 1, 1)
    res = AnyViewEstimator(ours_from(ref, TINY_FILE), dtype="fp32", process_res=56).estimate(images, extrinsics=given, intrinsics=k)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        r = ref(((images.permute(0, 3, 1, 2) - mean) / std)[None], normalize_extrinsics(given).float()[None], k.float()[None])
    pred = to_homogeneous(r.extrinsics[0].double())
    _, _, s = align_poses_umeyama(pred.numpy(), given.numpy(), ransac=True, random_state=42)[:3]
    assert abs(res.scale_factor - s) <= 1e-5 * s
    assert rel_error(res.processed_depth, r.depth[0] / s) <= 1e-4
    assert torch.allclose(res.extrinsics.double(), given[:, :3], atol=1e-6)


# ------------------------------------------------------------------------------------------------ mixed sizes


@pytest.fixture()
def official_input_processor(monkeypatch):
    """The official ``InputProcessor``; torchvision's three transforms it uses (and imageio, which its module imports)
    are stood in for when absent."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        def to_tensor(img):
            return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)

        class Normalize:
            def __init__(self, mean, std):
                self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

            def __call__(self, x):
                return (x - self.mean) / self.std

        class CenterCrop:  # torchvision's rounding: top = round((h - ch) / 2)
            def __init__(self, size):
                self.size = size

            def __call__(self, x):
                (h, w), (ch, cw) = x.shape[-2:], self.size
                top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
                return x[..., top:top + ch, left:left + cw]

        transforms = types.ModuleType("torchvision.transforms")
        transforms.ToTensor = lambda: to_tensor
        transforms.Normalize, transforms.CenterCrop = Normalize, CenterCrop
        tv = types.ModuleType("torchvision")
        tv.transforms = transforms
        monkeypatch.setitem(sys.modules, "torchvision", tv)
        monkeypatch.setitem(sys.modules, "torchvision.transforms", transforms)
        monkeypatch.delitem(sys.modules, "depth_anything_3.utils.io.input_processor", raising=False)
    try:
        import imageio  # noqa: F401  (imported by the official parallel helpers, used only to save images)
    except Exception:
        monkeypatch.setitem(sys.modules, "imageio", types.ModuleType("imageio"))
    from depth_anything_3.utils.io.input_processor import InputProcessor

    return InputProcessor()


def _photos(sizes, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        low = torch.from_numpy(rng.random((1, 3, h // 9 + 2, w // 9 + 2))).float()
        img = torch.nn.functional.interpolate(low, (h, w), mode="bilinear")[0].permute(1, 2, 0)
        out.append((img.numpy() * 255).round().astype(np.uint8))
    return out


def test_mixed_sizes_are_centre_cropped_like_the_official_processor(official_input_processor):
    sizes = [(300, 400), (400, 300), (250, 250)]  # own network sizes 70×98, 98×70, 98×98 at process_res 98
    photos = _photos(sizes)
    k_in = np.stack([np.array([[1.1 * w, 0, w / 2 + 3], [0, 1.2 * w, h / 2 - 2], [0, 0, 1]]) for h, w in sizes])
    ref_images, _, ref_k = official_input_processor(photos, None, k_in.copy(), process_res=98, num_workers=1)
    size, layouts = view_layouts(sizes, 98)
    assert size == tuple(ref_images.shape[-2:]) == (70, 70)
    assert [lay.crop for lay in layouts] == [(0, 14), (14, 0), (14, 14)]
    mono_cfg = replace(TINY_MONO, name="tiny-mono")
    est = AnyViewEstimator(ours_from(official_tiny(mono_cfg, seed=1), mono_cfg), dtype="fp32", process_res=98)
    res = est.estimate(photos, intrinsics=k_in)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    seen = ref_images * std + mean  # the official processor's pixels in 0..1 (cv2 on uint8)
    assert float((res.processed_images.permute(0, 3, 1, 2) - seen).abs().max()) <= 1 / 255 + 1e-5
    assert torch.allclose(res.processed_intrinsics.double(), ref_k.double(), atol=1e-4)
    # maps come back at each input's size; the region the network saw is reported
    assert [tuple(m.shape) for m in res.maps("depth")] == sizes
    assert res.view_regions == [(0, 57, 300, 286), (57, 0, 286, 300), (36, 36, 178, 178)]  # 14 px crops, ×4.08 and ×2.55
    assert any("centre-cropped" in note for note in res.notes)
    top, left, h, w = res.view_regions[0]
    d = res.maps("depth")[0]
    assert torch.equal(d[:, :left], d[:, left:left + 1].expand(-1, left))  # outside: the crop's edge repeated


def test_mixed_sizes_any_view_intrinsics_map_back_through_the_crop():
    ref = official_tiny(TINY_FILE, seed=3)
    sizes = [(140, 196), (196, 140)]
    photos = _photos(sizes, seed=2)
    res = AnyViewEstimator(ours_from(ref, TINY_FILE), dtype="fp32", process_res=98).estimate(photos)
    size, layouts = view_layouts(sizes, 98)
    assert res.processed_size == size == (70, 70)
    for (h, w), lay, k_proc, k in zip(sizes, layouts, res.processed_intrinsics, res.intrinsics):
        sx, sy = w / lay.own[1], h / lay.own[0]
        assert torch.allclose(k[0], torch.tensor([k_proc[0, 0] * sx, 0, (k_proc[0, 2] + lay.crop[1]) * sx]), atol=1e-4)
        assert torch.allclose(k[1], torch.tensor([0, k_proc[1, 1] * sy, (k_proc[1, 2] + lay.crop[0]) * sy]), atol=1e-4)
