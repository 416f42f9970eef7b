"""Numerical parity with the reference implementations (same random weights, fp32)."""

from __future__ import annotations

import pytest
import torch

from anydepth.models import ModelConfig, create_model
from anydepth.models.dinov2 import DinoVisionTransformer
from anydepth.weights import convert_hf, detect_arch
from conftest import rel_error
from tiny import TINY, VITS, hf_model


def _ours(ref, kind="disparity", max_depth=None, layers=(2, 5, 8, 11)) -> torch.nn.Module:
    sd = convert_hf(ref.state_dict())
    model = create_model(ModelConfig(detect_arch(sd), layers, kind, max_depth))
    model.load_state_dict(sd, strict=True)
    return model


@pytest.mark.parametrize("metric", [False, True], ids=["relative", "metric"])
def test_vits_matches_transformers_at_518(metric):
    ref = hf_model(VITS, seed=1, metric=metric, max_depth=20)
    ours = _ours(ref, "metric_depth" if metric else "disparity", 20.0 if metric else None)
    x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(pixel_values=x).predicted_depth
        got = ours(x)
    assert expected.max() - expected.min() > 1e-3  # a flat output would make the comparison vacuous
    assert rel_error(got, expected) <= 1e-4


def test_v1_layer_selection_matches_transformers():
    ref = hf_model(VITS, seed=2, out_indices=[9, 10, 11, 12])  # V1: the last four blocks
    ours = _ours(ref, layers=(8, 9, 10, 11))
    x = torch.randn(2, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert rel_error(ours(x), ref(pixel_values=x).predicted_depth) <= 1e-4


def _da3_backbone(sd: dict, shape: dict):
    """The DINOv2 of the official depth-anything-3 package: resizes position embeddings like the original."""
    vt = pytest.importorskip("depth_anything_3.model.dinov2.vision_transformer")
    net = vt.DinoVisionTransformer(
        img_size=518, patch_size=14, embed_dim=shape["hidden"], depth=shape["layers"], num_heads=shape["heads"],
        mlp_ratio=4, init_values=1.0, ffn_layer="mlp", cat_token=False,
    ).eval()
    own = {k[len("pretrained."):]: v for k, v in sd.items() if k.startswith("pretrained.") and "mask_token" not in k}
    missing, unexpected = net.load_state_dict(own, strict=False)
    assert not unexpected and all("camera_token" in k or "register" in k for k in missing)
    return net


@pytest.mark.parametrize(
    "shape, size",
    [(TINY, (70, 98)), (TINY, (196, 322)), (TINY, (532, 406)), (VITS, (70, 98)), (VITS, (196, 322))],
    ids=["tiny-70x98", "tiny-196x322", "tiny-532x406", "vits-70x98", "vits-196x322"],
)
def test_any_size_matches_original_position_embedding(shape, size):
    """Away from 518², the reference is the original DINOv2 (from depth-anything-3) feeding the DPT of transformers."""
    ref = hf_model(shape, seed=3)
    sd = convert_hf(ref.state_dict())
    layers = (2, 5, 8, 11) if shape is VITS else (0, 1, 2, 3)
    ours = _ours(ref, layers=layers)
    backbone = _da3_backbone(sd, shape)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    gh, gw = size[0] // 14, size[1] // 14
    with torch.no_grad():
        (feats, _aux) = backbone.get_intermediate_layers(x[:, None], list(layers))
        tokens = [torch.cat([torch.zeros_like(f[0][:, 0, :1]), f[0][:, 0]], dim=1) for f in feats]  # dummy class token
        expected = ref.head(ref.neck(tokens, gh, gw), gh, gw)
        got = ours(x)
        # transformers' own backbone resizes without the +0.1 offset and must differ: the test is meaningful.
        plain = ref(pixel_values=x).predicted_depth
    assert got.shape == (1, *size)
    assert rel_error(got, expected) <= 1e-4
    assert rel_error(plain, expected) > 1e-4


def test_fused_attention_matches_reference_path(monkeypatch):
    torch.manual_seed(0)
    fused = DinoVisionTransformer(64, 2, 2, pos_grid=4)
    monkeypatch.setenv("ANYDEPTH_FUSED_ATTN", "0")
    explicit = DinoVisionTransformer(64, 2, 2, pos_grid=4)
    explicit.load_state_dict(fused.state_dict())
    assert fused.blocks[0].attn.fused_attn and not explicit.blocks[0].attn.fused_attn
    x = torch.randn(2, 3, 70, 42)
    with torch.no_grad():
        for a, b in zip(fused.forward_intermediates(x, [0, 1]), explicit.forward_intermediates(x, [0, 1])):
            assert a.shape == (2, 64, 5, 3)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
