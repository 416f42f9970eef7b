from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import anydepth.normalize as nz
from anydepth.normalize import (
    COLORMAPS,
    NORMALIZE_MODES,
    apply_colormap,
    normalize_depth,
    to_disparity,
    to_image,
    to_pil,
    to_uint8,
    to_uint16,
)

NAN = math.nan
INF = math.inf


def t(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


def close(a, b, atol=1e-6):
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=a.dtype), atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------- to_disparity


def test_to_disparity_values():
    d = t([[[0.5, 2.0, 0.0]]])
    close(to_disparity(d, "metric_depth"), [[[2.0, 0.5, 1e6]]], atol=1e-1)
    close(to_disparity(d, "depth", eps=0.25), [[[2.0, 0.5, 4.0]]])
    out = to_disparity(d, "disparity")
    close(out, d)
    assert out is not d and out.data_ptr() != d.data_ptr()


def test_to_disparity_half_does_not_overflow():
    d = torch.zeros(1, 2, 2, dtype=torch.float16)
    out = to_disparity(d, "metric_depth")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------- modes


def test_minmax_disparity_exact():
    d = t([[[1.0, 2.0], [3.0, 5.0]]])
    close(normalize_depth(d, "disparity", "minmax"), [[[0.0, 0.25], [0.5, 1.0]]])


def test_minmax_metric_goes_through_disparity():
    d = t([[[1.0, 2.0, 4.0]]])  # disparity 1, .5, .25
    close(normalize_depth(d, "metric_depth", "minmax"), [[[1.0, 1 / 3, 0.0]]])
    close(normalize_depth(d, "depth", "minmax"), [[[1.0, 1 / 3, 0.0]]])


def test_scope_image_vs_batch():
    d = t([[[0.0, 1.0]], [[2.0, 4.0]]])
    close(normalize_depth(d, "disparity", "minmax", scope="image"), [[[0.0, 1.0]], [[0.0, 1.0]]])
    close(normalize_depth(d, "disparity", "minmax", scope="batch"), [[[0.0, 0.25]], [[0.5, 1.0]]])
    # v2_style with full percentile range equals minmax, in both scopes
    for scope in ("image", "batch"):
        close(
            normalize_depth(d, "disparity", "v2_style", scope=scope, low_percentile=0, high_percentile=100),
            normalize_depth(d, "disparity", "minmax", scope=scope),
        )


def test_v2_style_small_exact():
    d = t([[[0.0, 1.0, 2.0, 3.0, 4.0]]])  # 25th pct = 1, 75th = 3
    out = normalize_depth(d, "disparity", low_percentile=25, high_percentile=75)
    close(out, [[[0.0, 0.0, 0.5, 1.0, 1.0]]])


@pytest.mark.parametrize("kind", ["disparity", "metric_depth"])
def test_v2_style_ramp_matches_numpy(kind):
    ramp = np.linspace(0.5, 10.0, 12 * 9, dtype=np.float64).reshape(1, 12, 9)
    out = normalize_depth(torch.from_numpy(ramp).float(), kind).numpy()
    disp = ramp if kind == "disparity" else 1.0 / ramp
    lo, hi = np.percentile(disp, [1.0, 99.0])
    expected = (np.clip(disp, lo, hi) - lo) / (hi - lo)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.min() == 0.0 and out.max() == 1.0


def test_v2_style_per_sample_odd_batch():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(3, 7, 5, generator=g) * torch.tensor([1.0, 10.0, 100.0])[:, None, None]
    out = normalize_depth(d, "disparity", low_percentile=5, high_percentile=90)
    assert out.shape == (3, 7, 5)
    for i in range(3):
        x = d[i].double().numpy()
        lo, hi = np.percentile(x, [5, 90])
        np.testing.assert_allclose(out[i].numpy(), (np.clip(x, lo, hi) - lo) / (hi - lo), atol=1e-5)
    mm = normalize_depth(d, "disparity", "minmax")
    close(mm.amin(dim=(1, 2)), [0.0, 0.0, 0.0])
    close(mm.amax(dim=(1, 2)), [1.0, 1.0, 1.0])


def test_v2_style_subsamples_large_inputs(monkeypatch):
    monkeypatch.setattr(nz, "_QUANTILE_MAX_ELEMENTS", 64)
    d = torch.arange(2 * 10 * 13, dtype=torch.float32).reshape(2, 10, 13)  # 260 elements -> stride 5
    out = normalize_depth(d, "disparity", low_percentile=10, high_percentile=90)
    for i in range(2):
        x = d[i].reshape(-1).double().numpy()
        lo, hi = np.percentile(x[::5], [10, 90])
        np.testing.assert_allclose(out[i].reshape(-1).numpy(), (np.clip(x, lo, hi) - lo) / (hi - lo), atol=1e-5)


def test_metric_linear_exact():
    d = t([[[0.5, 1.0, 2.0, 3.0, 4.0]]])
    close(normalize_depth(d, "metric_depth", "metric_linear", near=1.0, far=3.0), [[[1.0, 1.0, 0.5, 0.0, 0.0]]])
    # defaults: nearest pixel -> 1, farthest -> 0
    close(normalize_depth(d, "metric_depth", "metric_linear"), [[[1.0, 6 / 7, 4 / 7, 2 / 7, 0.0]]])


def test_metric_disparity_exact():
    d = t([[[0.5, 1.0, 2.0, 4.0, 8.0]]])
    expected = [[[1.0, 1.0, (0.5 - 0.25) / 0.75, 0.0, 0.0]]]
    close(normalize_depth(d, "metric_depth", "metric_disparity", near=1.0, far=4.0), expected)
    # defaults near=0.5, far=8: (1/d - 1/8) / (2 - 1/8)
    exp = [(1 / x - 0.125) / 1.875 for x in (0.5, 1.0, 2.0, 4.0, 8.0)]
    close(normalize_depth(d, "metric_depth", "metric_disparity"), [[exp]])


def test_metric_scope_batch_defaults():
    d = t([[[1.0, 2.0]], [[3.0, 5.0]]])
    close(normalize_depth(d, "metric_depth", "metric_linear"), [[[1.0, 0.0]], [[1.0, 0.0]]])
    close(normalize_depth(d, "metric_depth", "metric_linear", scope="batch"), [[[1.0, 0.75]], [[0.5, 0.0]]])


def test_metric_one_bound_given_outside_image():
    d = t([[[3.0, 4.0]]])
    # far given nearer than every pixel: everything is beyond far -> black
    close(normalize_depth(d, "metric_depth", "metric_linear", far=2.0), [[[0.0, 0.0]]])
    # near given farther than every pixel: everything is nearer than near -> white
    close(normalize_depth(d, "metric_depth", "metric_linear", near=5.0), [[[1.0, 1.0]]])
    close(normalize_depth(d, "metric_depth", "metric_disparity", near=5.0), [[[1.0, 1.0]]])
    close(normalize_depth(d, "metric_depth", "metric_linear", far=8.0), [[[1.0, 0.8]]])


@pytest.mark.parametrize("mode", ["metric_linear", "metric_disparity"])
@pytest.mark.parametrize("kind", ["disparity", "depth"])
def test_metric_modes_reject_relative_kinds(mode, kind):
    with pytest.raises(ValueError, match=kind) as e:
        normalize_depth(torch.ones(1, 2, 2), kind, mode)
    assert "v2_style" in str(e.value)


@pytest.mark.parametrize("near,far", [(2.0, 2.0), (3.0, 1.0)])
def test_near_ge_far_raises(near, far):
    with pytest.raises(ValueError, match="near"):
        normalize_depth(torch.ones(1, 2, 2), "metric_depth", "metric_linear", near=near, far=far)


# ------------------------------------------------------------------------------------------- invert / gamma


def test_invert_and_gamma():
    d = t([[[1.0, 2.0], [3.0, 5.0]]])  # minmax -> 0, .25, .5, 1
    close(normalize_depth(d, "disparity", "minmax", invert=True), [[[1.0, 0.75], [0.5, 0.0]]])
    close(normalize_depth(d, "disparity", "minmax", gamma=2.0), [[[0.0, 0.0625], [0.25, 1.0]]])
    close(normalize_depth(d, "disparity", "minmax", gamma=0.5), [[[0.0, 0.5], [math.sqrt(0.5), 1.0]]])
    close(normalize_depth(d, "disparity", "minmax", invert=True, gamma=2.0), [[[1.0, 0.5625], [0.25, 0.0]]])


@pytest.mark.parametrize("gamma", [0.0, -1.0, NAN])
def test_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        normalize_depth(torch.ones(1, 2, 2), "disparity", gamma=gamma)


# ------------------------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
@pytest.mark.parametrize("scope", ["image", "batch"])
def test_constant_input_gives_zeros(mode, scope):
    d = torch.full((2, 3, 4), 2.5)
    out = normalize_depth(d, "metric_depth", mode, scope=scope)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_nan_inf_pixels(mode):
    d = t([[[NAN, 1.0, 2.0, INF, -INF, 4.0]]])
    for invert in (False, True):
        out = normalize_depth(d, "metric_depth", mode, invert=invert)
        assert torch.isfinite(out).all()
        assert out[0, 0, [0, 3, 4]].eq(0).all()
        assert 0 <= out.min() and out.max() <= 1
    close(normalize_depth(d, "disparity", "minmax"), [[[0.0, 0.0, 1 / 3, 0.0, 0.0, 1.0]]])
    close(normalize_depth(d, "disparity", "minmax", invert=True), [[[0.0, 1.0, 2 / 3, 0.0, 0.0, 0.0]]])


def test_v2_style_with_nan_matches_nanpercentile():
    g = torch.Generator().manual_seed(1)
    d = torch.rand(2, 6, 7, generator=g)
    d[0, :2] = NAN
    d[1, 3, 3] = INF
    out = normalize_depth(d, "disparity", low_percentile=10, high_percentile=80)
    for i in range(2):
        x = d[i].double().numpy()
        x = np.where(np.isfinite(x), x, np.nan)
        lo, hi = np.nanpercentile(x, [10, 80])
        exp = np.nan_to_num((np.clip(x, lo, hi) - lo) / (hi - lo), nan=0.0)
        np.testing.assert_allclose(out[i].numpy(), exp, atol=1e-5)


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
@pytest.mark.parametrize("scope", ["image", "batch"])
def test_all_nan_image(mode, scope):
    d = torch.stack([torch.full((3, 3), NAN), torch.arange(1.0, 10.0).reshape(3, 3)])
    out = normalize_depth(d, "metric_depth", mode, scope=scope)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(3, 3))
    assert out[1].max() == 1.0 and out[1].min() == 0.0
    only_nan = normalize_depth(d[:1], "metric_depth", mode, scope=scope)
    assert torch.equal(only_nan, torch.zeros(1, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_dtypes(dtype, mode):
    d = t([[[1.0, 2.0, 4.0], [8.0, 0.5, 3.0]]], dtype=dtype)
    out = normalize_depth(d, "metric_depth", mode)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    ref = normalize_depth(d.double(), "metric_depth", mode)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    assert out.shape == d.shape


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_caller_tensor_unchanged(mode):
    d = t([[[NAN, 1.0, 2.0], [INF, 0.0, 4.0]]])
    before = d.clone()
    normalize_depth(d, "metric_depth", mode, invert=True, gamma=2.0)
    to_disparity(d, "metric_depth")
    torch.testing.assert_close(d, before, equal_nan=True, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------- validation


def test_input_validation_messages():
    with pytest.raises(ValueError, match=r"\(4, 5\).*x\[None\]"):
        normalize_depth(torch.ones(4, 5), "disparity")
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 5\)"):
        normalize_depth(torch.ones(1, 1, 4, 5), "disparity")
    with pytest.raises(ValueError, match="B, H and W"):
        normalize_depth(torch.ones(0, 4, 5), "disparity")
    with pytest.raises(TypeError, match="floating"):
        normalize_depth(torch.ones(1, 4, 5, dtype=torch.int32), "disparity")
    with pytest.raises(TypeError, match="torch.Tensor"):
        normalize_depth(np.ones((1, 4, 5)), "disparity")
    with pytest.raises(ValueError, match="v2_style, minmax, metric_linear, metric_disparity"):
        normalize_depth(torch.ones(1, 2, 2), "disparity", "bogus")
    with pytest.raises(ValueError, match="disparity, metric_depth, depth"):
        normalize_depth(torch.ones(1, 2, 2), "inverse")
    with pytest.raises(ValueError, match="image, batch"):
        normalize_depth(torch.ones(1, 2, 2), "disparity", scope="video")
    with pytest.raises(ValueError, match="percentile"):
        normalize_depth(torch.ones(1, 2, 2), "disparity", low_percentile=50, high_percentile=50)
    with pytest.raises(ValueError, match="percentile"):
        normalize_depth(torch.ones(1, 2, 2), "disparity", high_percentile=101)
    with pytest.raises(ValueError, match="far"):
        normalize_depth(torch.ones(1, 2, 2), "metric_depth", "metric_linear", far=INF)
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        to_disparity(torch.ones(4, 5), "disparity")


# ------------------------------------------------------------------------------------------- formats


def test_to_image():
    x = t([[[0.0, 0.5]], [[1.0, 0.25]], [[-0.5, 2.0]]])
    img = to_image(x)
    assert img.shape == (3, 1, 2, 3) and img.dtype == torch.float32
    close(img[..., 0], img[..., 2])
    close(img[..., 1], [[[0.0, 0.5]], [[1.0, 0.25]], [[0.0, 1.0]]])
    with pytest.raises(ValueError, match="x01"):
        to_image(torch.zeros(2, 2))


def test_to_uint8_rounds():
    x = t([[[0.0, 100.6 / 255, 0.5, 254.49 / 255, 1.0, 1.5, -0.2, NAN]]])
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 8)
    np.testing.assert_array_equal(out, [[[0, 101, 128, 254, 255, 255, 0, 0]]])


def test_to_uint16_rounds():
    x = t([[[0.0, 1000.7 / 65535, 0.5, 1.0, 2.0, NAN]]], dtype=torch.float64)
    out = to_uint16(x)
    assert out.dtype == np.uint16 and out.shape == (1, 1, 6)
    np.testing.assert_array_equal(out, [[[0, 1001, 32768, 65535, 65535, 0]]])


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16"])
def test_to_pil(mode):
    x = torch.linspace(0, 1, 2 * 3 * 5).reshape(2, 3, 5)
    ims = to_pil(x, mode)
    assert len(ims) == 2
    for i, im in enumerate(ims):
        assert im.mode == mode and im.size == (5, 3)
        px = im.getpixel((4, 2))
        full = 65535 if mode == "I;16" else 255
        expected = round(float(x[i, 2, 4]) * full)
        assert (px[0] if mode == "RGB" else px) == expected
    with pytest.raises(ValueError, match="L, RGB, I;16"):
        to_pil(x, "F")


# ------------------------------------------------------------------------------------------- colormaps

KNOWN = {  # (value at 0, value at 1) from matplotlib
    "inferno": ((0.001462, 0.000466, 0.013866), (0.988362, 0.998364, 0.644924)),
    "viridis": ((0.267004, 0.004874, 0.329415), (0.993248, 0.906157, 0.143936)),
    "turbo": ((0.18995, 0.07176, 0.23217), (0.4796, 0.01583, 0.01055)),
    "spectral": ((0.619608, 0.003922, 0.258824), (0.368627, 0.309804, 0.635294)),
    "spectral_r": ((0.368627, 0.309804, 0.635294), (0.619608, 0.003922, 0.258824)),
    "gray": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


@pytest.mark.parametrize("name", COLORMAPS)
def test_colormap_shape_range(name):
    x = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(2))
    out = apply_colormap(x, name)
    assert out.shape == (2, 5, 7, 3) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_colormap_endpoints(name):
    out = apply_colormap(t([[[0.0, 1.0]]]), name)
    close(out[0, 0, 0], KNOWN[name][0], atol=1e-4)
    close(out[0, 0, 1], KNOWN[name][1], atol=1e-4)


def test_colormap_interior_and_nan():
    out = apply_colormap(t([[[0.5, 0.3, NAN, -1.0, 2.0]]]), "spectral")
    close(out[0, 0, 0], (1.0, 1.0, 0.74902), atol=1e-4)  # centre control point ffffbf
    close(out[0, 0, 2], KNOWN["spectral"][0], atol=1e-4)  # NaN -> colour of 0
    close(out[0, 0, 3], KNOWN["spectral"][0], atol=1e-4)
    close(out[0, 0, 4], KNOWN["spectral"][1], atol=1e-4)
    # matplotlib inferno entry 128 of 256 (= its inferno(0.5)), not one of the stored control points
    close(apply_colormap(t([[[128 / 255]]]), "inferno")[0, 0, 0], (0.735683, 0.215906, 0.330245), atol=3e-3)
    close(apply_colormap(t([[[0.3]]]), "gray")[0, 0, 0], (0.3, 0.3, 0.3))
    close(apply_colormap(t([[[0.0]]]), "Turbo"), apply_colormap(t([[[0.0]]]), "turbo"))


def test_colormap_unknown():
    with pytest.raises(ValueError, match="turbo, inferno"):
        apply_colormap(torch.zeros(1, 2, 2), "magma_r")
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        apply_colormap(torch.zeros(2, 2), "turbo")
