"""Scale-and-shift alignment, the SSI / gradient-matching losses and the metrics: known answers."""

from __future__ import annotations

import math

import pytest
import torch

from anydepth.align import (
    ScaleShiftInvariantLoss,
    abs_rel,
    align_scale_shift,
    align_to_points,
    delta1,
    evaluate_depth,
    fit_scale_shift,
    gradient_matching_loss,
    sample_depth,
    ssi_loss,
)

SCALE = torch.tensor([2.0, 0.5, -3.0])
SHIFT = torch.tensor([1.0, -2.0, 0.3])


def _maps(dtype=torch.float64, shape=(3, 40, 56), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    y = SCALE.to(dtype).view(-1, 1, 1) * x + SHIFT.to(dtype).view(-1, 1, 1)
    return x, y, g


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_recovers_known_scale_and_shift(dtype, tol):
    x, y, _ = _maps(dtype)
    scale, shift = fit_scale_shift(x, y)
    assert scale.dtype == dtype and scale.shape == (3,)
    torch.testing.assert_close(scale, SCALE.to(dtype), atol=tol, rtol=0)
    torch.testing.assert_close(shift, SHIFT.to(dtype), atol=tol, rtol=0)
    out = align_scale_shift(x, y)
    torch.testing.assert_close(out.aligned, y, atol=tol * 4, rtol=0)


def test_mask_excludes_corrupted_pixels_exactly():
    x, y, g = _maps()
    mask = torch.rand(x.shape, generator=g) > 0.5
    corrupted = torch.where(mask, y, y + 100.0)  # everything outside the mask is garbage
    corrupted[0, 0, 0] = math.nan  # non-finite values are never used either
    scale, shift = fit_scale_shift(x, corrupted, mask)
    torch.testing.assert_close(scale, SCALE.double(), atol=1e-12, rtol=0)
    torch.testing.assert_close(shift, SHIFT.double(), atol=1e-12, rtol=0)
    # without the mask the fit is pulled away: the mask is doing the work
    assert (fit_scale_shift(x, torch.nan_to_num(corrupted)).shift - SHIFT.double()).abs().min() > 1.0


def test_reference_and_mask_broadcast_over_the_batch():
    ref = torch.rand(1, 8, 9, dtype=torch.float64)
    s = torch.tensor([1.5, 0.25], dtype=torch.float64)
    pred = (ref - 0.5) / s.view(-1, 1, 1)  # two "frames", each an affine copy of one reference
    static = torch.ones(8, 9, dtype=torch.bool)
    out = align_scale_shift(pred, ref, static)
    torch.testing.assert_close(out.aligned, ref.expand(2, -1, -1), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.scale, s, atol=1e-12, rtol=0)


@pytest.mark.parametrize("robust, kw", [("trimmed", {"trim": 0.3}), ("irls", {})])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_robust_variants_recover_exactly_despite_outliers(robust, kw, dtype, tol):
    x, y, g = _maps(dtype)
    outliers = torch.rand(x.shape, generator=g) < 0.2  # 20 % gross outliers
    y = torch.where(outliers, y + 50 * torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype), y)
    plain = fit_scale_shift(x, y)
    assert (plain.scale - SCALE.to(dtype)).abs().max() > 0.3  # least squares is ruined
    scale, shift = fit_scale_shift(x, y, robust=robust, **kw)
    torch.testing.assert_close(scale, SCALE.to(dtype), atol=tol, rtol=0)
    torch.testing.assert_close(shift, SHIFT.to(dtype), atol=tol, rtol=0)


def test_sparse_points_dense_result():
    x, y, g = _maps()
    points = torch.stack([torch.rand(3, 30, generator=g, dtype=torch.float64) * 55,
                          torch.rand(3, 30, generator=g, dtype=torch.float64) * 39], dim=-1)  # (B, N, 2) as (x, y)
    values = sample_depth(y, points)  # LiDAR-like samples of the reference
    valid = torch.ones(3, 30, dtype=torch.bool)
    valid[1, 20:] = False  # image 1 has only 20 points (padding)
    values[1, 20:] = 1e6
    out = align_to_points(x, points, values, valid)
    torch.testing.assert_close(out.scale, SCALE.double(), atol=1e-10, rtol=0)
    torch.testing.assert_close(out.aligned, y, atol=1e-10, rtol=0)
    # (B, N) samples fit directly through the same solver
    s2 = fit_scale_shift(sample_depth(x, points), values, valid)
    torch.testing.assert_close(s2.shift, SHIFT.double(), atol=1e-10, rtol=0)


def test_sample_depth_known_values_and_outside_points():
    d = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    got = sample_depth(d, torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [2.5, 0.0]]]))
    torch.testing.assert_close(got[:, :3], torch.tensor([[1.5, 1.0, 2.0]]))
    assert math.isnan(got[0, 3])


def test_disparity_space_fits_inverse_depth_and_returns_depth():
    g = torch.Generator().manual_seed(1)
    depth = 1.0 + 9.0 * torch.rand(2, 16, 16, generator=g, dtype=torch.float64)  # metres
    disparity = 3.0 / depth + 0.2  # relative prediction: affine in inverse depth
    out = align_scale_shift(disparity, depth, space="disparity")
    torch.testing.assert_close(out.aligned, depth, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.scale, torch.full((2,), 1 / 3, dtype=torch.float64), atol=1e-12, rtol=0)
    # in direct space the same pair is not affine: residual error remains
    assert (align_scale_shift(disparity, depth).aligned - depth).abs().max() > 0.5
    m = evaluate_depth(disparity, depth)
    torch.testing.assert_close(m.abs_rel, torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(m.delta1, torch.ones(2, dtype=torch.float64))


def test_degenerate_fits_are_defined():
    x = torch.ones(1, 4, 4)  # no spread: scale 0, shift = mean of the reference
    y = torch.arange(16.0).view(1, 4, 4)
    scale, shift = fit_scale_shift(x, y)
    assert scale.item() == 0.0 and shift.item() == pytest.approx(7.5)
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)  # no valid pixel: identity
    scale, shift = fit_scale_shift(torch.rand(1, 4, 4), y, empty)
    assert scale.item() == 1.0 and shift.item() == 0.0
    for robust in ("trimmed", "irls"):
        s, t = fit_scale_shift(torch.rand(1, 4, 4), y, empty, robust=robust)
        assert s.item() == 1.0 and t.item() == 0.0


def test_inputs_are_not_modified():
    x, y, _ = _maps()
    x0, y0 = x.clone(), y.clone()
    align_scale_shift(x, y, robust="trimmed")
    ssi_loss(x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_bad_input_errors_name_the_problem():
    x = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="does not broadcast"):
        fit_scale_shift(x, torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="mask must have dtype torch.bool"):
        fit_scale_shift(x, x, torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="unknown robust"):
        fit_scale_shift(x, x, robust="huber")
    with pytest.raises(ValueError, match="unknown space"):
        fit_scale_shift(x, x, space="log")
    with pytest.raises(ValueError, match="trim must be"):
        fit_scale_shift(x, x, robust="trimmed", trim=1.0)
    with pytest.raises(TypeError, match="floating point"):
        fit_scale_shift(x.long(), x)
    with pytest.raises(ValueError, match="batch axis"):
        fit_scale_shift(torch.rand(4), torch.rand(4))
    with pytest.raises(ValueError, match="points must have shape"):
        sample_depth(x, torch.rand(2, 5))


# --------------------------------------------------------------------------------------------- losses


def test_losses_zero_for_affine_copies_positive_otherwise():
    x, y, g = _maps()
    mask = torch.rand(x.shape, generator=g) > 0.3
    assert ssi_loss(x, y).item() < 1e-20
    assert gradient_matching_loss(x, y).item() < 1e-12
    assert ssi_loss(x, y, mask).item() < 1e-20
    assert ScaleShiftInvariantLoss()(x, y, mask).item() < 1e-12
    other = y + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    assert ssi_loss(x, other).item() > 1e-4
    assert gradient_matching_loss(x, other).item() > 1e-2
    per_image = ssi_loss(x, other, reduction="none")
    assert per_image.shape == (3,) and (per_image > 0).all()
    torch.testing.assert_close(ssi_loss(x, other), per_image.mean())


def test_ssi_loss_equals_residual_variance_after_the_fit():
    """Known value: the residual of the optimal affine fit of x onto y = x**2 on [0, 1]."""
    x = torch.linspace(0, 1, 10001, dtype=torch.float64).view(1, 1, -1)
    loss = ssi_loss(x, x**2)
    # continuous limit: min over (a, b) of ∫ (x^2 - a x - b)^2 dx = 1/180
    assert loss.item() == pytest.approx(1 / 180, rel=1e-3)


def test_gradients_flow_through_the_closed_form_fit():
    x, y, g = _maps()
    pred = (y + 0.05 * torch.randn(y.shape, generator=g, dtype=torch.float64)).requires_grad_()
    loss = ScaleShiftInvariantLoss(alpha=0.5)(pred, y)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # analytic gradients (float64 gradcheck) of both losses and of the aligned map
    small = pred.detach()[:2, :6, :7].clone().requires_grad_()
    target = y[:2, :6, :7]
    mask = torch.rand(small.shape, generator=g) > 0.2
    assert torch.autograd.gradcheck(lambda p: ssi_loss(p, target, mask), (small,))
    assert torch.autograd.gradcheck(lambda p: gradient_matching_loss(p, target, mask, scales=2), (small,))
    assert torch.autograd.gradcheck(lambda p: align_scale_shift(p, target).aligned, (small,))


def test_training_with_the_loss_recovers_structure():
    """A few steps of gradient descent on the SSI loss drive an arbitrary map to an affine copy of the target."""
    _, y, g = _maps(shape=(3, 12, 12))
    y = y[:1]
    pred = torch.rand(1, 12, 12, generator=g, dtype=torch.float64).requires_grad_()
    opt = torch.optim.Adam([pred], lr=0.05)
    start = ssi_loss(pred, y).item()
    for _ in range(200):
        opt.zero_grad()
        ssi_loss(pred, y).backward()
        opt.step()
    assert ssi_loss(pred, y).item() < start * 1e-3


# --------------------------------------------------------------------------------------------- metrics


def test_metrics_known_values():
    target = torch.tensor([[[1.0, 2.0, 4.0, 0.0]]])  # 0 = no ground truth
    pred = torch.tensor([[[1.1, 2.0, 6.0, 9.0]]])
    # |1.1-1|/1 = 0.1, 0, |6-4|/4 = 0.5 -> mean 0.2; ratios 1.1, 1, 1.5 -> 2 of 3 below 1.25
    torch.testing.assert_close(abs_rel(pred, target), torch.tensor([0.2]))
    torch.testing.assert_close(delta1(pred, target), torch.tensor([2 / 3]))
    assert math.isnan(abs_rel(pred, torch.zeros_like(target)).item())
    m = evaluate_depth(2 * target + 1, target, space="direct")
    torch.testing.assert_close(m.abs_rel, torch.zeros(1), atol=1e-6, rtol=0)


def test_aligned_kind_says_which_space_fits():
    from anydepth.align import aligned_kind

    assert aligned_kind("disparity", "metric_depth", "disparity") == "metric_depth"
    assert aligned_kind("depth", "metric_depth", "direct") == "metric_depth"  # DA3 relative depth to metres
    assert aligned_kind("disparity", "disparity", "direct") == "disparity"
    with pytest.raises(ValueError, match="opposite directions.*use space 'disparity'"):
        aligned_kind("disparity", "metric_depth", "direct")
    with pytest.raises(ValueError, match="use space 'direct'"):
        aligned_kind("disparity", "disparity", "disparity")
    with pytest.raises(ValueError, match="use space 'direct'"):
        aligned_kind("metric_depth", "depth", "disparity")
    with pytest.raises(ValueError, match="unknown depth kind"):
        aligned_kind("inverse", "depth")
