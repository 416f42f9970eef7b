"""3D Gaussians from DA3-GIANT's Gaussian head, against the official package, and the 3DGS PLY file.

A tiny GIANT-shaped network (SwiGLU MLP, the official ``GSDPT`` head and ``GaussianAdapter`` with the
da3-giant settings) runs in both implementations on random weights. The head's raw output and the Gaussians
(centres, scales, rotations, opacities, colours) must agree within 1e-4 of each output's range on 2–3 views at
non-square sizes. The official adapter rotates the higher colour bands with e3nn; where e3nn is not installed
its rotation is replaced by the identity and only the base colour is compared (the rotation itself is checked
against its definition below). The PLY is re-read with plyfile: the official export's counts and values.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("depth_anything_3", reason="the official reference: pip install --no-deps depth-anything-3==0.1.1")
plyfile = pytest.importorskip("plyfile")

from tiny_da3 import TINY_MONO, TINY_SWIGLU, install_evo_stub, official_nested, official_tiny, ours_from, save_official

from anydepth.anyview import AnyViewEstimator
from anydepth.cameras import quaternion_to_matrix
from anydepth.gaussians import (Gaussians, gaussians_from_raw, rotate_sh, save_gaussian_ply, select_gaussians, sh_basis,
                                write_gaussian_ply)
from anydepth.models.config import NestedDA3Config
from conftest import rel_error

TOL = 1e-4
GIANT = replace(TINY_SWIGLU, gaussians=True, name="tiny-giant")
HAS_E3NN = importlib.util.find_spec("e3nn") is not None
PLY_FIELDS = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"] + [f"scale_{i}" for i in range(3)]
              + [f"rot_{i}" for i in range(4)])


@pytest.fixture(scope="module")
def official_sh_rotation():
    """The official adapter as it runs here: with e3nn its own SH rotation, without it the identity (base colour only)."""
    if HAS_E3NN:
        yield True
        return
    install_evo_stub()
    import depth_anything_3.model.gs_adapter as adapter

    before = adapter.rotate_sh
    adapter.rotate_sh = lambda sh, rotations: sh
    yield False
    adapter.rotate_sh = before


@pytest.fixture(scope="module")
def giant_pair(official_sh_rotation):
    ref = official_tiny(GIANT, seed=4, gs_head=True)
    return ref, ours_from(ref, GIANT)


def _views(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(1, n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _compare(g: Gaussians, ref, rotated_sh: bool) -> None:
    rg = ref.gaussians
    assert rel_error(g.means.reshape(-1, 3), rg.means[0]) <= TOL
    assert rel_error(g.scales.reshape(-1, 3), rg.scales[0]) <= TOL
    assert rel_error(g.rotations.reshape(-1, 4), rg.rotations[0]) <= TOL
    assert rel_error(g.opacities.reshape(-1), rg.opacities[0]) <= TOL
    sh = g.harmonics.reshape(-1, 3, 9)
    assert rel_error(sh[..., 0], rg.harmonics[0][..., 0]) <= TOL
    if rotated_sh:
        assert rel_error(sh, rg.harmonics[0]) <= TOL


@pytest.mark.parametrize("views, size", [(2, (42, 70)), (3, (70, 56))])
def test_gaussian_head_and_adapter_match_official(giant_pair, official_sh_rotation, views, size):
    ref, ours = giant_pair
    x = _views(views, *size, seed=views)
    with torch.no_grad():
        r = ref(x, infer_gs=True)
        o = ours(x, gaussians=True, chunk=1)  # chunked: the same numbers
        feats, _ = ref.backbone(x, cam_token=None, export_feat_layers=[])
        head = ref.gs_head(feats, size[0], size[1], patch_start_idx=0, images=x)
    assert o.gs_raw.shape == (1, views, *size, 37) and o.gs_density.shape == (1, views, *size)
    assert rel_error(o.gs_raw, head.raw_gs) <= TOL and rel_error(o.gs_density, head.raw_gs_conf) <= TOL
    g = gaussians_from_raw(o.gs_raw[0], o.gs_density[0], o.gs_depth[0], o.extrinsics[0], o.intrinsics[0])
    assert g.means.shape == (views, *size, 3) and g.harmonics.shape == (views, *size, 3, 9)
    _compare(g, r, official_sh_rotation)


def _read_ply(path) -> dict[str, np.ndarray]:
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    return {p.name: np.asarray(vertex[p.name]) for p in vertex.properties}


@pytest.mark.parametrize("sh_dc_only", [True, False])
def test_ply_matches_the_official_export(giant_pair, official_sh_rotation, sh_dc_only, tmp_path):
    """The official ``gs_ply`` export (border trim 8/256, depth ≤ 90th percentile per view, logit opacity, log
    scales) and ours, re-read with plyfile: the same Gaussians, property by property."""
    if not sh_dc_only and not official_sh_rotation:
        pytest.skip("the official higher colour bands need e3nn (pip install e3nn)")
    from depth_anything_3.utils.gsply_helpers import save_gaussian_ply as official_save

    ref, ours = giant_pair
    x = _views(2, 70, 98, seed=7)
    with torch.no_grad():
        r = ref(x, infer_gs=True)
        o = ours(x, gaussians=True)
    official_save(r.gaussians, str(tmp_path / "official.ply"), ctx_depth=r.depth[0][..., None], save_sh_dc_only=sh_dc_only,
                  prune_by_depth_percent=0.9, prune_border_gs=True)
    g = gaussians_from_raw(o.gs_raw[0], o.gs_density[0], o.gs_depth[0], o.extrinsics[0], o.intrinsics[0])
    count = save_gaussian_ply(tmp_path / "ours.ply", g, o.depth[0], sh_dc_only=sh_dc_only)
    want, got = _read_ply(tmp_path / "official.ply"), _read_ply(tmp_path / "ours.ply")
    assert list(got) == list(want)  # the same properties in the same order (the 3DGS layout)
    fields = PLY_FIELDS if sh_dc_only else PLY_FIELDS + [f"f_rest_{i}" for i in range(24)]
    assert set(got) == set(fields) and all(v.dtype == np.float32 for v in got.values())
    assert count == len(got["x"]) == len(want["x"]) > 0
    assert count < 2 * 70 * 98  # the filters dropped some
    for name in got:
        a, b = torch.from_numpy(got[name]).double(), torch.from_numpy(want[name]).double()
        finite = torch.isfinite(b)  # the official logit of an opacity of exactly 1 is inf; ours is clamped
        assert finite.float().mean() > 0.99
        span = float(b[finite].max() - b[finite].min())  # (the damped higher colour bands span little)
        assert float((a[finite] - b[finite]).abs().max()) <= TOL * max(span, 1e-3), name


def test_estimator_returns_gaussians_and_writes_them(giant_pair, tmp_path):
    ref, ours = giant_pair
    est = AnyViewEstimator(ours, dtype="fp32", process_res=98)
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 12, generator=g), (70, 98), mode="bilinear").movedim(1, -1)
    res = est.estimate(images, gaussians=True)
    assert res.gaussians is not None and res.gaussians.opacities.shape == (2, 70, 98)
    written = res.save_gaussians(tmp_path / "g.ply", views_every=2)
    chosen = select_gaussians(res.gaussians, res.processed_depth, views_every=2)
    ply = _read_ply(tmp_path / "g.ply")
    assert written == len(chosen) == len(ply["x"]) > 0
    assert np.allclose(ply["x"], chosen.means[:, 0].numpy()) and np.allclose(ply["rot_0"], chosen.rotations[:, 0].numpy())
    assert np.allclose(np.exp(ply["scale_1"]), chosen.scales[:, 1].numpy(), rtol=1e-5)
    assert np.allclose(1 / (1 + np.exp(-ply["opacity"])), chosen.opacities.numpy(), atol=1e-6)
    mono = AnyViewEstimator(ours_from(official_tiny(replace(TINY_MONO, name="m"), seed=1), replace(TINY_MONO, name="m")),
                            dtype="fp32", process_res=70)
    with pytest.raises(ValueError, match="Gaussian-splatting head"):
        mono.estimate(images[:1], gaussians=True)


def test_nested_gaussians_are_in_metres(official_sh_rotation):
    metric_cfg = replace(TINY_MONO, metric=True, name="tiny-metric")
    ref = official_nested(official_tiny(GIANT, seed=8, gs_head=True), official_tiny(metric_cfg, seed=9))
    ours = ours_from(ref, NestedDA3Config(GIANT, metric_cfg))
    images = torch.rand(2, 42, 70, 3, generator=torch.Generator().manual_seed(1))
    res = AnyViewEstimator(ours, dtype="fp32", process_res=70).estimate(images, gaussians=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        r = ref(((images.permute(0, 3, 1, 2) - mean) / std)[None], infer_gs=True)
    s = r.scale_factor  # the official Gaussians stay in the any-view network's units
    assert abs(res.scale_factor - s) <= TOL * s
    assert rel_error(res.gaussians.means.reshape(-1, 3), r.gaussians.means[0] * s) <= TOL
    assert rel_error(res.gaussians.scales.reshape(-1, 3), r.gaussians.scales[0] * s) <= TOL
    assert rel_error(res.gaussians.rotations.reshape(-1, 4), r.gaussians.rotations[0]) <= TOL


# ------------------------------------------------------------------------------------------------ pure functions


def _random_rotation(seed: int) -> torch.Tensor:
    q = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return quaternion_to_matrix(q / q.norm())


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_rotation_rotates_the_colour_function(degree):
    """``rotate_sh(c, R)`` evaluated at ``d`` equals ``c`` evaluated at ``Rᵀ d`` (for any direction)."""
    k = (degree + 1) ** 2
    g = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(5, 3, k, generator=g, dtype=torch.float64)
    rot = _random_rotation(degree)
    dirs = torch.nn.functional.normalize(torch.randn(50, 3, generator=g, dtype=torch.float64), dim=-1)
    rotated = rotate_sh(coeffs, rot)
    lhs = torch.einsum("nk,gck->gcn", sh_basis(dirs, degree), rotated)
    rhs = torch.einsum("nk,gck->gcn", sh_basis(dirs @ rot, degree), coeffs)
    assert torch.allclose(lhs, rhs, atol=1e-9)
    assert torch.equal(rotated[..., 0], coeffs[..., 0])  # the base colour does not turn
    assert torch.allclose(rotate_sh(coeffs, torch.eye(3, dtype=torch.float64)), coeffs, atol=1e-12)


def test_similarity_transform_moves_every_attribute(tmp_path):
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(10, 4, generator=g), dim=-1)
    gs = Gaussians(torch.randn(10, 3, generator=g), torch.rand(10, 3, generator=g) + 0.1, q,
                   torch.randn(10, 3, 4, generator=g), torch.rand(10, generator=g))
    rot, t, s = _random_rotation(5).float(), torch.tensor([1.0, -2.0, 0.5]), 2.5
    moved = gs.transformed(scale=s, rotation=rot, translation=t)
    assert torch.allclose(moved.means, s * gs.means @ rot.T + t, atol=1e-5)
    assert torch.allclose(moved.scales, s * gs.scales)
    as_matrix = lambda x: quaternion_to_matrix(x[:, [1, 2, 3, 0]])  # w x y z  # noqa: E731
    assert torch.allclose(as_matrix(moved.rotations), rot @ as_matrix(gs.rotations), atol=1e-5)
    assert torch.allclose(moved.harmonics, rotate_sh(gs.harmonics, rot), atol=1e-6)
    assert torch.equal(moved.opacities, gs.opacities)
    write_gaussian_ply(tmp_path / "flat.ply", moved, sh_dc_only=False)
    back = _read_ply(tmp_path / "flat.ply")
    assert len(back["x"]) == 10 and "f_rest_8" in back and "f_rest_9" not in back  # degree 1: 3 × 3 higher coefficients


def test_filters_follow_the_official_rules():
    v, h, w = 3, 64, 96
    g = torch.Generator().manual_seed(1)
    gs = Gaussians(torch.randn(v, h, w, 3, generator=g), torch.rand(v, h, w, 3, generator=g), torch.randn(v, h, w, 4, generator=g),
                   torch.randn(v, h, w, 3, 1, generator=g), torch.rand(v, h, w, generator=g))
    depth = torch.rand(v, h, w, generator=g)
    trim_h, trim_w = math.floor(8 / 256 * h), math.floor(8 / 256 * w)
    border_only = select_gaussians(gs, depth, depth_quantile=None)
    assert len(border_only) == v * (h - 2 * trim_h) * (w - 2 * trim_w)
    everything = select_gaussians(gs, trim_border=0, depth_quantile=None)
    assert len(everything) == v * h * w
    near = select_gaussians(gs, depth, trim_border=0)
    assert abs(len(near) - 0.9 * v * h * w) <= v  # at most the 90th percentile per view
    assert len(select_gaussians(gs, trim_border=0, depth_quantile=None, views_every=2)) == 2 * h * w
    with pytest.raises(ValueError, match="depth"):
        select_gaussians(gs)  # the depth filter needs the depth


def test_cli_writes_gaussians(tmp_path):
    from PIL import Image

    from anydepth.cli import main

    folder = save_official(official_tiny(GIANT, seed=4, gs_head=True), tmp_path / "tiny-giant")
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (56, 84, 3), dtype=np.uint8)).save(tmp_path / f"v{i}.png")
    out = tmp_path / "out"
    assert main(["geometry", str(tmp_path / "v0.png"), str(tmp_path / "v1.png"), "--out", str(out), "--model", str(folder),
                 "--dtype", "fp32", "--device", "cpu", "--process-res", "84", "--no-glb", "--no-ply", "--gaussians",
                 "--gaussians-sh"]) == 0
    ply = _read_ply(out / "gaussians.ply")
    assert len(ply["x"]) > 0 and "f_rest_23" in ply and np.isfinite(ply["opacity"]).all()
