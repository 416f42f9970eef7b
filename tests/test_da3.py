"""Depth Anything 3: parity with the official implementation (same random weights, fp32) and loading.

The reference is the official ``depth-anything-3==0.1.1`` network code, run without its API wrapper
(which autocasts to fp16/bf16): depth, confidence, extrinsics and intrinsics must agree within 1e-4 of
each output's range, for a tiny any-view config and the real SMALL config, 1, 2 and 4 views
(4 views exercise the reference-view selection), at non-square sizes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("depth_anything_3", reason="the official reference: pip install --no-deps depth-anything-3==0.1.1")

from tiny_da3 import (
    TINY_ANYVIEW,
    TINY_FILE,
    TINY_MONO,
    TINY_SWIGLU,
    official_nested,
    official_small,
    official_tiny,
    ours_from,
    save_official,
)

from anydepth.cameras import matrix_to_quaternion, quaternion_to_matrix
from anydepth.models.config import DA3_PRESETS, NestedDA3Config
from anydepth.models.da3 import fill_sky
from anydepth.weights import CheckpointError, load_model, read_checkpoint
from conftest import rel_error as _rel

TOL = 1e-4


def _views(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(1, n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small_pair():
    ref = official_small(seed=3)
    return ref, ours_from(ref, DA3_PRESETS["da3-small"])


def _check_anyview(ref, ours, x, ext=None, k=None, chunk=8):
    with torch.no_grad():
        r = ref(x, ext, k)
        o = ours(x, ext, k, chunk=chunk)
    assert _rel(o.depth, r.depth) <= TOL
    assert _rel(o.confidence, r.depth_conf) <= TOL
    assert _rel(o.extrinsics, r.extrinsics) <= TOL
    assert _rel(o.intrinsics, r.intrinsics) <= TOL
    return r, o


@pytest.mark.parametrize("views, size", [(1, (70, 98)), (2, (98, 56)), (4, (56, 84))])
def test_small_matches_official(small_pair, views, size):
    ref, ours = small_pair
    _, o = _check_anyview(ref, ours, _views(views, *size, seed=views))
    assert (o.reference_view is not None) == (views >= 3)


@pytest.mark.parametrize("config", [TINY_ANYVIEW, TINY_SWIGLU], ids=["mlp", "swiglu"])
@pytest.mark.parametrize("views", [1, 2, 4])
def test_tiny_anyview_matches_official(config, views):
    ref = official_tiny(config, seed=views)
    ours = ours_from(ref, config)
    # chunk=1: the per-view chunking must not change any number
    _check_anyview(ref, ours, _views(views, 42, 70, seed=10 + views), chunk=1 if views > 1 else 8)


@pytest.mark.parametrize("strategy", ["first", "middle", "saddle_sim_range"])
def test_reference_view_strategies_match_official(strategy):
    ref = official_tiny(TINY_ANYVIEW, seed=5)
    ours = ours_from(ref, TINY_ANYVIEW)
    x = _views(5, 42, 56, seed=5)
    with torch.no_grad():
        r = ref(x, ref_view_strategy=strategy)
        o = ours(x, ref_view_strategy=strategy)
    assert _rel(o.depth, r.depth) <= TOL and _rel(o.extrinsics, r.extrinsics) <= TOL
    assert int(o.reference_view) == {"first": 0, "middle": 2}.get(strategy, int(o.reference_view))


def test_known_cameras_and_rays_match_official():
    ref = official_tiny(TINY_ANYVIEW, seed=7)
    ours = ours_from(ref, TINY_ANYVIEW)
    x = _views(3, 42, 70, seed=7)
    g = torch.Generator().manual_seed(7)
    q = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=-1)
    ext = torch.eye(4).repeat(3, 1, 1)
    ext[:, :3, :3] = quaternion_to_matrix(q)
    ext[:, :3, 3] = torch.randn(3, 3, generator=g)
    k = torch.tensor([[60.0, 0, 35], [0, 55.0, 21], [0, 0, 1]]).repeat(3, 1, 1)
    _check_anyview(ref, ours, x, ext[None], k[None])  # the camera encoder path (no reference view selection)
    with torch.no_grad():
        feats, _ = ref.backbone(x, cam_token=None, export_feat_layers=[])
        r = ref.head(feats, 42, 70, patch_start_idx=0)
        o = ours(x, rays=True)
    assert o.rays.shape == r.ray.shape == (1, 3, 24, 40, 6)
    assert _rel(o.rays, r.ray) <= TOL and _rel(o.ray_confidence, r.ray_conf) <= TOL


def test_mono_with_sky_matches_official():
    ref = official_tiny(TINY_MONO, seed=13)
    ours = ours_from(ref, TINY_MONO)
    for i, size in enumerate([(56, 98), (84, 42)]):
        x = _views(1, *size, seed=20 + i)
        with torch.no_grad():
            r = ref(x)  # the official forward fills the sky with the 99th percentile of the other depths
            o = ours(x)
        sky = o.sky[0]
        assert 10 < int((sky >= 0.3).sum()) < sky.numel() - 10  # both sky and non-sky pixels: the fill is exercised
        assert _rel(o.sky, r.sky) <= TOL
        assert _rel(fill_sky(o.depth[0], sky), r.depth[0]) <= TOL


def test_nested_matches_official():
    anyview = official_tiny(TINY_ANYVIEW, seed=13)
    metric_cfg = replace(TINY_MONO, metric=True, name="tiny-metric")
    metric = official_tiny(metric_cfg, seed=14)
    ref = official_nested(anyview, metric)
    cfg = NestedDA3Config(TINY_ANYVIEW, metric_cfg)
    ours = ours_from(ref, cfg)
    x = _views(2, 42, 70, seed=15)
    with torch.no_grad():
        r = ref(x)
        o = ours(x)
    assert _rel(o.depth, r.depth) <= TOL and _rel(o.confidence, r.depth_conf) <= TOL
    assert _rel(o.extrinsics, r.extrinsics) <= TOL
    assert abs(float(o.scale_factor) - r.scale_factor) <= TOL * abs(r.scale_factor)


def test_official_checkpoint_loads_strictly(small_pair, tmp_path):
    """``save_pretrained`` layout: config.json {"model_name"}, ``model.`` prefix, the shared LayerNorm once."""
    from safetensors import safe_open

    ref, _ = small_pair
    folder = save_official(ref, tmp_path / "DA3-SMALL", "da3-small")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert all(k.startswith("model.") for k in keys)
    norm = {k for k in keys if ".output_conv2_aux." in k and ".2." in k.split("output_conv2_aux.")[1][:4]}
    assert norm == {"model.head.scratch.output_conv2_aux.0.2.weight", "model.head.scratch.output_conv2_aux.0.2.bias"}
    ckpt = read_checkpoint(folder)
    assert ckpt.format == "da3" and ckpt.config == DA3_PRESETS["da3-small"] and ckpt.config.name == "da3-small"
    net = load_model(folder)  # strict: raises on any missing / unexpected key
    shared = [net.head.scratch.output_conv2_aux[i][2] for i in range(4)]
    assert all(m is shared[0] for m in shared)  # the four heads share one LayerNorm again
    assert torch.equal(shared[0].weight, ref.head.scratch.output_conv2_aux[0][2].weight)
    x = _views(2, 42, 56, seed=1)
    with torch.no_grad():
        assert _rel(net(x).depth, ref(x).depth) <= TOL


def test_nested_file_with_gaussian_head_loads(tmp_path):
    """Nested files keep both networks under ``da3.`` / ``da3_metric.``; GIANT's Gaussian head loads too."""
    anyview = official_tiny(TINY_FILE, seed=21, gs_head=True)
    metric_cfg = replace(TINY_MONO, metric=True, name="")
    ref = official_nested(anyview, official_tiny(metric_cfg, seed=19))
    folder = save_official(ref, tmp_path / "nested")
    ckpt = read_checkpoint(folder)
    assert ckpt.config == NestedDA3Config(replace(TINY_FILE, gaussians=True), metric_cfg)  # all from tensor shapes
    assert any(k.startswith("da3.gs_head.") for k in ckpt.state_dict)
    net = load_model(folder)
    x = _views(2, 42, 56, seed=23)
    with torch.no_grad():
        r, o = ref(x), net(x)
    assert _rel(o.depth, r.depth) <= TOL and _rel(o.extrinsics, r.extrinsics) <= TOL


def test_truncated_da3_file_is_an_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.backbone.pretrained.patch_embed.proj.weight": torch.zeros(4, 3, 14, 14)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="Depth Anything 3"):
        load_model(tmp_path / "model.safetensors")


def test_quaternion_round_trip():
    q = torch.nn.functional.normalize(torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    q = torch.where(q[:, 3:] < 0, -q, q)
    m = quaternion_to_matrix(q.double())
    assert torch.allclose(m @ m.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(64, 3, 3), atol=1e-12)
    assert torch.allclose(matrix_to_quaternion(m), q.double(), atol=1e-12)


def test_catalogue_lists_every_da3_release():
    from anydepth.catalog import VARIANTS

    da3 = {k: v for k, v in VARIANTS.items() if v.family == "da3" and not v.comfy_layout}  # core's repacks: test_da3_comfy_weights
    assert set(da3) == {"da3-small", "da3-base", "da3-large", "da3-large-1.1", "da3-giant", "da3-giant-1.1", "da3mono-large",
                        "da3metric-large", "da3nested-giant-large", "da3nested-giant-large-1.1"}
    assert da3["da3-small"].repo_id == "depth-anything/DA3-SMALL" and da3["da3-small"].local_name == "DA3-SMALL"
    assert all(v.files == ("config.json", "model.safetensors") and v.is_directory for v in da3.values())
    assert {k for k, v in da3.items() if v.license == "Apache-2.0"} == {"da3-small", "da3-base", "da3mono-large", "da3metric-large"}
    assert {k for k, v in da3.items() if v.kind == "metric_depth"} == {"da3metric-large", "da3nested-giant-large",
                                                                        "da3nested-giant-large-1.1"}
    assert all("Gaussian" in v.notes for k, v in da3.items() if "giant" in k)
    for name in da3:  # every entry has an architecture
        assert name.removesuffix("-1.1") in DA3_PRESETS
