"""The ``anydepth`` command: estimate (formats, skip-existing, failures) and info."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from anydepth.cli import main
from anydepth.io import read_npy, read_png16


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)).save(d / "b.jpg")
    return d


def _run(*args) -> int:
    return main([str(a) for a in args])


def test_npy_is_raw_depth_at_input_size(photos, tiny_files, tmp_path):
    out = tmp_path / "out"
    assert _run("estimate", photos, "--model", tiny_files["pth"], "--out", out, "--format", "npy",
                "--input-size", "70", "--dtype", "fp32") == 0
    a = read_npy(out / "a_depth.npy")
    assert a.dtype == np.float32 and a.shape == (30, 40)
    from anydepth import DepthEstimator

    expected = DepthEstimator(tiny_files["pth"], dtype="fp32", input_size=70).estimate(str(photos / "a.png")).depth[0]
    np.testing.assert_allclose(a, expected.numpy(), rtol=0, atol=1e-6)  # raw values, never normalised
    assert read_npy(out / "b_depth.npy").shape == (25, 25)


def test_png16_is_normalised_and_existing_outputs_are_skipped(photos, tiny_files, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("estimate", photos, "--model", tiny_files["pth"], "--out", out, "--input-size", "70")
    assert _run(*args) == 0
    png = read_png16(out / "a_depth.png")
    assert png.dtype == np.uint16 and png.shape == (30, 40) and png.max() == 65535 and png.min() == 0
    before = (out / "a_depth.png").stat().st_mtime_ns
    assert _run(*args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "a_depth.png").stat().st_mtime_ns == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_colormap_preview_is_rgb(photos, tiny_files, tmp_path):
    out = tmp_path / "out"
    assert _run("estimate", photos / "a.png", "--model", tiny_files["pth"], "--out", out, "--format", "png8",
                "--colormap", "turbo", "--input-size", "70") == 0
    img = Image.open(out / "a_depth.png")
    assert img.mode == "RGB" and img.size == (40, 30)


def test_unreadable_image_is_reported_and_others_are_written(photos, tiny_files, tmp_path, capsys):
    (photos / "c.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert _run("estimate", photos, "--model", tiny_files["pth"], "--out", out, "--input-size", "70") == 1
    assert "c.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a_depth.png", "b_depth.png"]


def test_clear_errors(tiny_files, tmp_path, capsys):
    assert _run("estimate", tmp_path / "missing.png", "--model", tiny_files["pth"], "--out", tmp_path) == 2
    assert "missing.png" in capsys.readouterr().err
    assert _run("estimate", tmp_path, "--model", "v2-smal", "--out", tmp_path / "o") == 2
    with pytest.raises(SystemExit):
        _run("estimate", tmp_path, "--out", tmp_path, "--colormap", "turbo")


def test_metric_modes_need_a_metric_model(photos, tmp_path, tiny_hf, tiny_files, capsys):
    from tiny import write_pth

    model = write_pth(tiny_hf, tmp_path / "depth_anything_v2_metric_hypersim_vits.pth")
    out = tmp_path / "out"
    assert _run("estimate", photos / "a.png", "--model", model, "--out", out, "--normalize", "metric_linear",
                "--near", "0.5", "--far", "20", "--input-size", "70") == 0
    assert read_png16(out / "a_depth.png").dtype == np.uint16
    assert _run("estimate", photos / "a.png", "--model", tiny_files["pth"], "--out", tmp_path / "rel",
                "--normalize", "metric_linear", "--input-size", "70") == 2
    assert "needs a metric model" in capsys.readouterr().err
    assert not (tmp_path / "rel" / "a_depth.png").exists()


def test_info_lists_licenses_and_local_presence(tmp_path, tiny_files):
    import shutil

    shutil.copy(tiny_files["pth"], tmp_path / "depth_anything_v2_vits.pth")
    proc = subprocess.run([sys.executable, "-m", "anydepth.cli", "info", "--models-dir", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "Apache-2.0" in lines["v2-small"] and lines["v2-small"].split()[5] == "yes"
    assert "CC-BY-NC-4.0" in lines["v2-large"] and lines["v2-large"].split()[5] == "no"
    assert "metres ≤ 80" in lines["v2-metric-outdoor-small"]
