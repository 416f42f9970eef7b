"""Depth export: PNG16 / EXR / NPY / NPZ round trips within each format's precision, metadata, CLI formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth.cli import main
from anydepth.export import (
    CONTROL_FORMATS,
    RAW_FORMATS,
    SUFFIX,
    ControlImageError,
    export_format,
    load_depth,
    save_control_image,
    save_depth,
)
from anydepth.io import save_png16
from conftest import write_photo

K = np.array([[525.0, 0.0, 31.5], [0.0, 525.0, 23.5], [0.0, 0.0, 1.0]])
E = np.hstack([np.eye(3), np.array([[0.1], [-0.2], [1.5]])])


def _depth(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = (0.3 + 79.7 * rng.random((48, 64))).astype(np.float32)  # metres, a VKITTI-like range
    d[5, 7] = np.nan  # a missing pixel survives every format
    return d


@pytest.mark.parametrize("suffix", [".png", ".exr", ".npy", ".npz"])
def test_round_trip_within_format_precision(tmp_path, suffix):
    d = _depth()
    path = save_depth(tmp_path / f"a_depth{suffix}", torch.from_numpy(d), kind="metric_depth", intrinsics=K,
                      extrinsics=E, metadata={"model": "v2-metric-outdoor-small"})
    r = load_depth(path)
    assert r.depth.dtype == np.float32 and r.depth.shape == d.shape
    assert np.isnan(r.depth[5, 7]) and np.isfinite(r.depth).sum() == np.isfinite(d).sum()
    err = np.nanmax(np.abs(r.depth - d))
    if suffix == ".png":
        step = (np.nanmax(d) - np.nanmin(d)) / 65534
        assert err <= step / 2 + 1e-5 * np.nanmax(d)  # half a quantisation step (+ float32 rounding)
        assert err > 0  # it is quantised: the bound is what is promised, not more
    else:
        assert err == 0  # 32-bit float formats are exact
    assert r.kind == "metric_depth" and r.units == "metres" and r.format == export_format(path)
    np.testing.assert_array_equal(r.intrinsics, K)
    np.testing.assert_array_equal(r.extrinsics, E)
    assert r.metadata["model"] == "v2-metric-outdoor-small"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp files


def test_png16_fixed_range_quantises_to_known_steps(tmp_path):
    d = np.array([[0.0, 1.0, 2.5, 70.0]], dtype=np.float32)
    path = save_depth(tmp_path / "mm.png", d, kind="metric_depth", png16_range=(0.0, 65.534))  # 1 mm steps
    q = np.asarray(Image.open(path)).astype(np.int64)
    np.testing.assert_array_equal(q, [[1, 1001, 2501, 65535]])  # 0 is reserved for missing pixels
    np.testing.assert_allclose(load_depth(path).depth, [[0.0, 1.0, 2.5, 65.534]], atol=1e-6)  # 70 m clipped


def test_files_without_metadata_still_load(tmp_path):
    q = np.array([[0, 65535, 32768]], dtype=np.uint16)
    save_png16(tmp_path / "control.png", q)  # a plain 16-bit control image
    r = load_depth(tmp_path / "control.png")
    np.testing.assert_allclose(r.depth, q / 65535.0, atol=1e-7)
    assert r.kind is None and r.metadata == {}
    np.save(tmp_path / "plain.npy", np.ones((3, 4), np.float32))
    assert load_depth(tmp_path / "plain.npy").depth.shape == (3, 4)
    np.savez(tmp_path / "plain.npz", whatever=np.zeros((2, 2), np.float32))
    assert load_depth(tmp_path / "plain.npz").depth.shape == (2, 2)


def test_npy_metadata_goes_to_a_sidecar(tmp_path):
    save_depth(tmp_path / "a.npy", _depth(), kind="disparity")
    assert json.loads((tmp_path / "a.json").read_text()) == {"kind": "disparity", "units": "relative"}
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), _depth())  # still a plain .npy


def test_bad_exports_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="from its suffix"):
        save_depth(tmp_path / "a.tif", _depth())
    with pytest.raises(ValueError, match="save one map at a time"):
        save_depth(tmp_path / "a.npz", np.zeros((2, 4, 4), np.float32))
    with pytest.raises(TypeError, match="floats"):
        save_depth(tmp_path / "a.npz", np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="unknown depth kind"):
        save_depth(tmp_path / "a.npz", _depth(), kind="inverse")
    with pytest.raises(ValueError, match="intrinsics must be"):
        save_depth(tmp_path / "a.npz", _depth(), intrinsics=np.eye(4))
    with pytest.raises(ValueError, match="JSON"):
        save_depth(tmp_path / "a.npz", _depth(), metadata={"x": object()})
    with pytest.raises(ValueError, match="unknown format .tiff.; expected one of npy, npz, exr, depth_png16"):
        save_depth(tmp_path / "a.npz", _depth(), format="tiff")
    with pytest.raises(ValueError, match="does not exist"):
        load_depth(tmp_path / "missing.exr")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read depth file"):
        load_depth(tmp_path / "junk.npz")
    assert not (tmp_path / "a.npz").exists()


def test_cli_writes_raw_depth_with_metadata_and_tiles(tmp_path, tiny_files):
    fmt = "exr"  # npz goes through the same save_depth call
    write_photo(tmp_path / "a.png", 60, 100)
    out = tmp_path / "out"
    args = ["estimate", str(tmp_path / "a.png"), "--model", str(tiny_files["pth"]), "--out", str(out), "--format", fmt,
            "--input-size", "42", "--dtype", "fp32", "--tile-size", "56", "--tta", "flip"]
    assert main(args) == 0
    r = load_depth(out / f"a_depth.{fmt}")
    assert r.kind == "disparity" and r.metadata["model"] and r.depth.shape == (60, 100)
    from anydepth import DepthEstimator

    expected = DepthEstimator(tiny_files["pth"], dtype="fp32", input_size=42, tile_size=56, tta="flip").estimate(
        str(tmp_path / "a.png")).depth[0]
    np.testing.assert_allclose(r.depth, expected.numpy(), atol=1e-6, rtol=0)
    untiled = DepthEstimator(tiny_files["pth"], dtype="fp32", input_size=42).estimate(str(tmp_path / "a.png")).depth[0]
    assert np.abs(r.depth - untiled.numpy()).max() > 1e-3  # the tiling options reached the estimator


def test_cli_rejects_a_bad_tile_size(tmp_path, tiny_files, capsys):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    assert main(["estimate", str(tmp_path / "a.png"), "--model", str(tiny_files["pth"]), "--out", str(tmp_path / "o"),
                 "--tile-size", "5"]) == 1
    assert "tile_size must be 0" in capsys.readouterr().err


def test_every_listed_format_keeps_its_one_meaning(tmp_path):
    """Each raw format reloads as depth with kind and units, told by its suffix; each control format is refused."""
    d = _depth()
    step = (np.nanmax(d) - np.nanmin(d)) / 65534
    for fmt in RAW_FORMATS:
        path = save_depth(tmp_path / f"raw_{fmt}{SUFFIX[fmt]}", d, kind="metric_depth", format=fmt)
        assert export_format(path) == fmt
        r = load_depth(path)
        assert (r.format, r.kind, r.units) == (fmt, "metric_depth", "metres")
        assert np.nanmax(np.abs(r.depth - d)) <= step  # lossless, or within a 16-bit step
    for fmt in CONTROL_FORMATS:
        path = save_control_image(tmp_path / f"control_{fmt}{SUFFIX[fmt]}", np.linspace(0, 1, 12).reshape(3, 4),
                                  format=fmt)
        with pytest.raises(ControlImageError, match="is a control image"):
            load_depth(path)
    with pytest.raises(ValueError, match="'png16' is now control_png16 .* or depth_png16"):
        save_depth(tmp_path / "old.png", d, format="png16")  # the retired, ambiguous name says what replaced it
