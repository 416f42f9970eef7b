"""The depth preview payload of Estimate Depth (nodes/preview.py): grid, preview PNG and colour maps, with numbers.

``nodes/preview.py`` imports only the library, torch, numpy and PIL, so it is loaded here without ComfyUI
(``nodes/__init__.py`` would import ComfyUI). The browser side is in ``test_browser.py``.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth.estimator import DepthResult
from anydepth.normalize import COLORMAPS, apply_colormap
from comfy_runtime import REPO


def _load_preview():
    spec = importlib.util.spec_from_file_location("anydepth_nodes_preview", REPO / "nodes" / "preview.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


preview = _load_preview()


@pytest.mark.parametrize("shape, expected", [((300, 200), (128, 85)), ((64, 96), (64, 96)), ((1, 1000), (1, 128)),
                                             ((128, 128), (128, 128)), ((4000, 3000), (128, 96))])
def test_grid_size_fits_the_longer_side_and_keeps_the_aspect(shape, expected):
    assert preview.grid_size(*shape) == expected


def test_downsample_depth_is_the_area_mean_of_the_finite_pixels():
    depth = torch.arange(256 * 256, dtype=torch.float32).reshape(256, 256)
    before = depth.clone()
    grid = preview.downsample_depth(depth)
    assert grid.shape == (128, 128)
    blocks = depth.reshape(128, 2, 128, 2).mean(dim=(1, 3))
    torch.testing.assert_close(grid, blocks)
    assert torch.equal(depth, before)  # the caller's tensor is untouched

    depth[0, 0] = math.nan  # left out of its cell's mean
    depth[2:4, 2:4] = math.inf  # a cell with no finite pixel has no value
    grid = preview.downsample_depth(depth)
    assert grid[0, 0].item() == pytest.approx((1 + 256 + 257) / 3)
    assert math.isnan(grid[1, 1].item())
    torch.testing.assert_close(grid[2:, 2:], blocks[2:, 2:])


def test_downsample_depth_rejects_a_batch():
    with pytest.raises(ValueError, match=r"\[H, W\] map, got shape \(1, 4, 4\)"):
        preview.downsample_depth(torch.zeros(1, 4, 4))


def test_preview_map_is_near_white_for_each_kind():
    metres = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    torch.testing.assert_close(preview.preview_map(metres, "metric_depth"), torch.tensor([[1.0, 0.75], [0.5, 0.0]]))
    disparity = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    torch.testing.assert_close(preview.preview_map(disparity, "disparity"), torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    x = preview.preview_map(torch.tensor([[1.0, 2.0], [4.0, 4.0]]), "depth")  # larger = farther: 1 m is nearest
    assert x[0, 0] == 1.0 and x[1, 0] == 0.0


def test_colormap_luts_sample_the_library_colour_maps():
    luts = preview.colormap_luts(5)
    assert sorted(luts) == sorted(COLORMAPS)
    assert luts["gray"] == [v for g in (0, 64, 128, 191, 255) for v in (g, g, g)]
    inferno = np.round(255 * apply_colormap(torch.linspace(0, 1, 5)[None, None], "inferno")[0, 0].numpy())
    assert luts["inferno"] == inferno.astype(int).reshape(-1).tolist()


def test_payload_writes_the_preview_and_a_json_ready_grid(tmp_path):
    depth = torch.linspace(0.5, 8.0, 300 * 200).reshape(1, 300, 200).repeat(2, 1, 1)
    depth[0, 0, :2] = math.nan
    result = DepthResult(depth=depth, kind="metric_depth", processed_size=[(294, 196)] * 2, model_name="tiny", max_depth=20.0)
    payload = preview.depth_payload(result, str(tmp_path / "temp"))
    json.dumps(payload, allow_nan=False)  # strict JSON: NaN cells are null
    assert (payload["width"], payload["height"], payload["grid_width"], payload["grid_height"]) == (200, 300, 85, 128)
    assert (payload["kind"], payload["units"], payload["batch"], payload["preview_mode"]) == ("metric_depth", "metres", 2,
                                                                                             "metric_linear")
    finite = depth[0][torch.isfinite(depth[0])]
    assert payload["min"] == pytest.approx(float(finite.min())) and payload["max"] == pytest.approx(8.0)
    grid = np.array([math.nan if v is None else v for v in payload["grid"]]).reshape(128, 85)
    np.testing.assert_allclose(grid, preview.downsample_depth(depth[0]).numpy(), rtol=1e-6, atol=1e-6, equal_nan=True)
    assert len(payload["colormaps"]["turbo"]) == 3 * preview.LUT_SIZE

    png = np.asarray(Image.open(tmp_path / "temp" / payload["image"]["filename"]))
    assert payload["image"]["type"] == "temp" and png.shape == (300, 200) and png.dtype == np.uint8
    expected = np.round(255 * (8.0 - depth[0].numpy()) / (8.0 - float(finite.min())))
    expected[0, :2] = 0  # no value: black
    assert np.abs(png.astype(int) - expected).max() <= 1
    assert [p.name for p in (tmp_path / "temp").iterdir()] == [payload["image"]["filename"]]  # no temporary left


def test_payload_preview_is_capped_but_the_sizes_are_the_depths(tmp_path):
    depth = torch.rand(1, 1100, 2200) + 0.1
    result = DepthResult(depth=depth, kind="disparity", processed_size=[(518, 1036)], model_name="tiny")
    payload = preview.depth_payload(result, str(tmp_path))
    assert (payload["width"], payload["height"], payload["grid_width"], payload["grid_height"]) == (2200, 1100, 128, 64)
    assert Image.open(tmp_path / payload["image"]["filename"]).size == (1024, 512)
