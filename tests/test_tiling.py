"""Tiled inference and flip test-time augmentation.

The known answers come from :mod:`standin`: a ``DepthAnything`` whose output is a fixed per-pixel function of
the colours, standardised per call (so tiles and the whole image get different scales and shifts, as with a
real relative model). Run untiled at native resolution it gives the exact answer; tiling has to reproduce it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import anydepth.tiling as tiling
from anydepth import DepthEstimator
from anydepth.align import ScaleShift
from anydepth.profiling import track_peak_memory
from anydepth.tiling import make_tile_grid, tiled_depth, upsampled_crop
from anydepth.weights import load_model
from conftest import error_map
from standin import PointwiseDepth, known_depth

H, W = 420, 630  # multiples of 14: the untiled run at input_size=420 sees every pixel natively
TILE, GLOBAL_INPUT = 182, 84


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """[1, 3, h, w] in 0..1: a few low-frequency waves per channel."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.zeros(1, 3, h, w)
    for c in range(3):
        for _ in range(4):
            fy, fx, phase = (torch.rand(3, generator=g) * torch.tensor([3.0, 3.0, 6.28])).tolist()
            img[0, c] += torch.sin(2 * math.pi * (fy * yy + fx * xx) + phase)
    lo, hi = img.amin((2, 3), keepdim=True), img.amax((2, 3), keepdim=True)
    return (img - lo) / (hi - lo)


@pytest.fixture(scope="module")
def est():
    return DepthEstimator(PointwiseDepth(), dtype="fp32", input_size=GLOBAL_INPUT, batch_size=4)


def test_upsampled_crop_equals_a_crop_of_the_full_upsampling():
    g = torch.rand(2, 13, 17, generator=torch.Generator().manual_seed(0))
    for ac in (True, False):
        full = F.interpolate(g[:, None], (100, 90), mode="bilinear", align_corners=ac)[:, 0]
        torch.testing.assert_close(upsampled_crop(g, (100, 90), (20, 7, 50, 60), align_corners=ac),
                                   full[:, 20:70, 7:67], atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="does not lie inside"):
        upsampled_crop(g, (100, 90), (60, 0, 50, 10))


@pytest.mark.parametrize("h, w, tile, overlap", [(420, 630, 182, 45), (1000, 2000, 518, 128), (97, 301, 56, 0), (50, 60, 518, 100)])
def test_tile_grid_covers_the_image_and_blends_to_one(h, w, tile, overlap):
    grid = make_tile_grid(h, w, tile, overlap)
    for starts, size, length in ((grid.ys, grid.tile_h, h), (grid.xs, grid.tile_w, w)):
        assert starts[0] == 0 and starts[-1] + size == length  # flush with both borders
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(size - gap >= overlap - 1 for gap in gaps)  # neighbours overlap (rounding: 1 px)
    # tiles of a constant map blend back to exactly that constant (the weights form a partition of unity)
    const = lambda x, net, out: torch.full((x.shape[0], *out), 3.25)  # noqa: E731
    out = tiled_depth(torch.rand(1, 3, h, w), const, tile_size=tile, overlap=overlap, global_size=(28, 28))
    torch.testing.assert_close(out, torch.full((1, h, w), 3.25), atol=1e-5, rtol=0)


def test_tiled_matches_untiled_without_seams(est, monkeypatch):
    img = smooth_image(H, W)
    exact = known_depth(img)
    untiled = DepthEstimator(PointwiseDepth(), dtype="fp32", input_size=H).estimate(img).depth
    torch.testing.assert_close(untiled, exact, atol=1e-5, rtol=0)  # the stand-in's answer is known

    tiled = est.estimate(img, tile_size=TILE).depth
    err = error_map(tiled, untiled, affine=True)
    # Measured: max 6.3e-4, mean 1.5e-4 of the depth range (the 84-px global pass alone: max 1.9e-2), and
    # no seam: the error along tile borders is no larger than anywhere else.
    assert err.max() < 1.5e-3, err.max()
    grid = make_tile_grid(H, W, TILE)
    borders = torch.zeros(H, W, dtype=torch.bool)
    for y in grid.ys[1:]:
        borders[y - 2:y + 3] = True
    for x in grid.xs[1:]:
        borders[:, x - 2:x + 3] = True
    assert err[0][borders].max() < 1.5e-3
    coarse = est.estimate(img).depth
    assert error_map(coarse, untiled, affine=True).max() > 10 * err.max()

    # Control: the same tiles blended without the alignment step show their different scales as seams.
    ident = lambda t, *args, **kw: ScaleShift(torch.ones(t.shape[0]), torch.zeros(t.shape[0]))  # noqa: E731
    monkeypatch.setattr(tiling, "fit_scale_shift", ident)
    unaligned = est.estimate(img, tile_size=TILE).depth
    assert error_map(unaligned, untiled, affine=True).max() > 0.05


def test_tiles_recover_the_detail_the_global_pass_loses(est):
    g = torch.Generator().manual_seed(1)
    img = (0.7 * smooth_image(H, W) + 0.3 * torch.rand(1, 3, H, W, generator=g)).clamp(0, 1)  # fine texture
    exact = DepthEstimator(PointwiseDepth(), dtype="fp32", input_size=H).estimate(img).depth
    tiled = error_map(est.estimate(img, tile_size=TILE).depth, exact, affine=True)
    coarse = error_map(est.estimate(img).depth, exact, affine=True)
    # Measured: tiled mean 1.8e-3 / max 1.2e-2; the 84-px global pass alone: mean 7.1e-2 / max 0.32.
    assert tiled.mean() < 3e-3 and tiled.max() < 3e-2
    assert coarse.mean() > 10 * tiled.mean()


def test_tile_size_at_least_the_image_is_the_plain_estimate(est):
    img = smooth_image(98, 140)
    plain = est.estimate(img).depth
    torch.testing.assert_close(est.estimate(img, tile_size=140).depth, plain, atol=0, rtol=0)
    torch.testing.assert_close(est.estimate(img, tile_size=0).depth, plain, atol=0, rtol=0)


def test_network_only_ever_sees_tile_or_global_sized_inputs():
    model = PointwiseDepth()
    e = DepthEstimator(model, dtype="fp32", input_size=GLOBAL_INPUT, batch_size=3)
    e.estimate(smooth_image(H, W), tile_size=TILE)
    grid = make_tile_grid(H, W, TILE)
    assert model.calls[0] == (1, 3, 84, 126)  # the global pass at input_size
    assert {c[1:] for c in model.calls[1:]} == {(3, 182, 182)}
    assert max(c[0] for c in model.calls[1:]) == 3  # batch_size tiles per forward
    assert sum(c[0] for c in model.calls[1:]) == len(grid) == 15


def test_batched_tiling_equals_one_image_at_a_time():
    e = DepthEstimator(PointwiseDepth(), dtype="fp32", input_size=GLOBAL_INPUT, batch_size=4)
    g = torch.Generator().manual_seed(2)
    imgs = (0.7 * smooth_image(H, W) + 0.3 * torch.rand(2, 3, H, W, generator=g)).clamp(0, 1)
    batched = e.estimate(imgs, tile_size=TILE).depth
    single = torch.cat([e.estimate(imgs[i:i + 1], tile_size=TILE).depth for i in range(2)])
    assert batched.shape == (2, H, W) and torch.isfinite(batched).all()
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched, e.estimate(imgs).depth, atol=1e-2)  # the tiles did change the result


def test_flip_tta_averages_the_mirrored_prediction(tiny_files):
    net = load_model(tiny_files["pth"])
    e = DepthEstimator(copy.deepcopy(net), dtype="fp32", input_size=70)
    x = torch.rand(2, 3, 70, 98, generator=torch.Generator().manual_seed(3))
    plain, mirrored = e.estimate(x).depth, e.estimate(x.flip(-1)).depth.flip(-1)
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # the random network is not mirror-symmetric
    torch.testing.assert_close(e.estimate(x, tta="flip").depth, (plain + mirrored) / 2, atol=1e-5, rtol=0)
    flip_est = DepthEstimator(copy.deepcopy(net), dtype="fp32", input_size=70, tta="flip")
    torch.testing.assert_close(flip_est.estimate(x).depth, (plain + mirrored) / 2, atol=1e-5, rtol=0)
    # a mirror-equivariant model is unchanged by it
    pw = DepthEstimator(PointwiseDepth(), dtype="fp32", input_size=70)
    torch.testing.assert_close(pw.estimate(x, tta="flip").depth, pw.estimate(x).depth, atol=1e-5, rtol=0)


def test_bad_tiling_options_say_what_to_pass(est):
    with pytest.raises(ValueError, match="tile_size must be 0"):
        est.estimate(torch.rand(1, 3, 50, 50), tile_size=10)
    with pytest.raises(ValueError, match="tile_size must be 0"):
        DepthEstimator(PointwiseDepth(), tile_size=-1)
    with pytest.raises(ValueError, match="tile overlap"):
        DepthEstimator(PointwiseDepth(), tile_size=100, tile_overlap=80)
    with pytest.raises(ValueError, match="unknown tta"):
        est.estimate(torch.rand(1, 3, 50, 50), tta="rotate")


def test_tiled_4k_memory_is_bounded_by_the_tile_not_the_image():
    """Peak CPU tensor memory of a tiled 3840×2160 run, from the allocator's own events (anydepth.profiling).

    tracemalloc cannot see torch's CPU allocations and torch keeps no CPU peak statistic; the profiler's
    ``[memory]`` events are every allocation and free of torch's CPU allocator, so their running sum is the
    exact live tensor memory (see anydepth/profiling.py). The stand-in routes each pixel through 24 channels
    (96 bytes per pixel, twice: the copy and a product), like a network's activations.
    """
    h, w, tile = 2160, 3840, 1036
    img = torch.rand(1, 3, h, w)  # allocated before measuring: the caller's input is not counted
    e = DepthEstimator(PointwiseDepth(width=24), dtype="fp32", input_size=518, batch_size=1)
    with track_peak_memory() as tiled:
        out = e.estimate(img, tile_size=tile).depth
    assert out.shape == (1, h, w) and torch.isfinite(out).all()
    # the largest single forward passes of that run, measured alone: one tile, and the global pass (518×924)
    with track_peak_memory() as one_tile:
        e.estimate(img[:, :, :tile, :tile], input_size=tile)
    with track_peak_memory() as global_pass:
        e.estimate(img[:, :, :518, :924])
    full_maps = 2 * 4 * h * w  # the float32 result and the estimator's output buffer: unavoidable
    bound = full_maps + 1.1 * max(one_tile.peak_bytes, global_pass.peak_bytes) + 2**20
    # Measured: 303 MiB peak against a 317 MiB bound (one tile's forward: 229 MiB, the global pass: 102 MiB).
    # Running the same network on the whole 4K image needs its two 24-channel
    # intermediates alone, 2 * 24 * 4 bytes per pixel = 1.5 GiB.
    assert tiled.peak_bytes < bound, (tiled.peak_mib, bound / 2**20)
    assert tiled.peak_bytes < 2 * 24 * 4 * h * w / 4
