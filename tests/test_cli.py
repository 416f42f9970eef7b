"""The ``anydepth`` command: estimate (formats, skip-existing, failures) and info."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from anydepth.cli import main
from anydepth.io import read_npy, read_png16
from conftest import write_photo


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "photos"
    write_photo(d / "a.png", 30, 40, seed=0)
    write_photo(d / "b.jpg", 25, 25, seed=1)
    return d


def _run(*args) -> int:
    return main([str(a) for a in args])


def test_npy_is_raw_depth_at_input_size(photos, tiny_files, tmp_path):
    out = tmp_path / "out"
    assert _run("estimate", photos, "--model", tiny_files["pth"], "--out", out, "--format", "npy",
                "--input-size", "70", "--dtype", "fp32") == 0
    a = read_npy(out / "photos" / "a_depth.npy")  # a folder's outputs mirror it under --out
    assert a.dtype == np.float32 and a.shape == (30, 40)
    from anydepth import DepthEstimator
    from anydepth.export import load_depth

    expected = DepthEstimator(tiny_files["pth"], dtype="fp32", input_size=70).estimate(str(photos / "a.png")).depth[0]
    np.testing.assert_allclose(a, expected.numpy(), rtol=0, atol=1e-6)  # raw values, never normalised
    assert read_npy(out / "photos" / "b_depth.npy").shape == (25, 25)
    assert load_depth(out / "photos" / "a_depth.npy").kind == "disparity"  # the sidecar says what the values are


def test_control_png16_is_normalised_and_existing_outputs_are_skipped(photos, tiny_files, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("estimate", photos, "--model", tiny_files["pth"], "--out", out, "--input-size", "70")
    assert _run(*args) == 0
    png = read_png16(out / "photos" / "a_depth.png")
    assert png.dtype == np.uint16 and png.shape == (30, 40) and png.max() == 65535 and png.min() == 0
    before = (out / "photos" / "a_depth.png").stat().st_mtime_ns
    assert _run(*args) == 0
    assert (out / "photos" / "a_depth.png").stat().st_mtime_ns == before
    assert not [p for p in out.rglob(".*")]  # no temp files left


def test_rerun_says_nothing_to_do(photos, tiny_files, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("estimate", photos, "--model", tiny_files["pth"], "--out", out, "--input-size", "70")
    assert _run(*args) == 0
    capsys.readouterr()
    assert _run(*args) == 0
    line = capsys.readouterr().out
    assert "2 of 2 depth files" in line and "0 written now" in line and "nothing to do" in line


def test_colormap_preview_is_rgb(photos, tiny_files, tmp_path):
    out = tmp_path / "out"
    assert _run("estimate", photos / "a.png", "--model", tiny_files["pth"], "--out", out, "--format", "control_png8",
                "--colormap", "turbo", "--input-size", "70") == 0
    img = Image.open(out / "a_depth.png")  # a file given by itself keeps its plain name
    assert img.mode == "RGB" and img.size == (40, 30)


def test_raw_png16_and_control_png16_are_told_apart(photos, tiny_files, tmp_path):
    from anydepth.export import ControlImageError, load_depth

    out = tmp_path / "out"
    for fmt in ("depth_png16", "control_png16"):
        assert _run("estimate", photos / "a.png", "--model", tiny_files["pth"], "--out", out, "--format", fmt,
                    "--input-size", "70", "--dtype", "fp32") == 0
    raw = load_depth(out / "a_depth_raw.png")
    assert raw.kind == "disparity" and raw.units == "relative" and raw.depth.shape == (30, 40)
    with pytest.raises(ControlImageError, match="control image"):
        load_depth(out / "a_depth.png")


def test_retired_format_name_says_the_new_one(photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        _run("estimate", photos, "--out", tmp_path / "o", "--format", "png16")
    assert exit_.value.code == 2 and "control_png16" in capsys.readouterr().err


def _same_name_tree(root):
    rng = np.random.default_rng(1)
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / sub / "x.png")


@pytest.mark.parametrize("how", ["two folders", "recursive", "two files"])
def test_same_names_in_different_folders_keep_both_outputs(how, tiny_files, tmp_path, capsys):
    root = tmp_path / "in"
    _same_name_tree(root)
    out = tmp_path / "out"
    inputs = {"two folders": [root / "a", root / "b"], "recursive": [root, "--recursive"],
              "two files": [root / "a" / "x.png", root / "b" / "x.png"]}[how]
    assert _run("estimate", *inputs, "--model", tiny_files["pth"], "--out", out, "--format", "npy",
                "--input-size", "70", "--dtype", "fp32") == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy"))
    assert written == {"two folders": ["a/x_depth.npy", "b/x_depth.npy"],
                       "recursive": ["in/a/x_depth.npy", "in/b/x_depth.npy"],
                       "two files": ["x_2_depth.npy", "x_depth.npy"]}[how]
    first, second = (read_npy(out / w) for w in written)
    assert not np.array_equal(first, second)  # two images, two maps: nothing overwritten
    assert "2 of 2 depth files" in capsys.readouterr().out


def test_corrupt_image_among_good_ones(photos, tiny_files, tmp_path, capsys):
    (photos / "c.png").write_bytes(b"not a png")
    (photos / "d.png").write_bytes(b"")
    out = tmp_path / "out"
    assert _run("estimate", photos, "--model", tiny_files["pth"], "--out", out, "--input-size", "70") == 1
    captured = capsys.readouterr()
    assert "c.png" in captured.err and "d.png" in captured.err and "Traceback" not in captured.err
    assert "2 of 4 depth files" in captured.out
    assert sorted(p.name for p in (out / "photos").iterdir()) == ["a_depth.png", "b_depth.png"]


def test_nothing_readable_is_exit_1_without_traceback(tmp_path, tiny_files):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "anydepth.cli", "estimate", str(bad), "--model", tiny_files["pth"],
                           "--out", str(tmp_path / "out"), "--input-size", "70"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "empty.png" in proc.stderr and "text.png" in proc.stderr
    assert "0 of 2 depth files" in proc.stdout


def test_unwritable_out_fails_before_the_model_loads(photos, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # a model that does not exist: the output folder must be refused first
    proc = subprocess.run([sys.executable, "-m", "anydepth.cli", "estimate", str(photos), "--model", "no-such-model",
                           "--out", str(blocker / "out")], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "output folder" in proc.stderr and "is a file" in proc.stderr and "no-such-model" not in proc.stderr


def test_clear_errors(tiny_files, tmp_path, capsys):
    assert _run("estimate", tmp_path / "missing.png", "--model", tiny_files["pth"], "--out", tmp_path) == 1
    assert "missing.png" in capsys.readouterr().err
    (tmp_path / "i").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "i" / "a.png")
    assert _run("estimate", tmp_path / "i", "--model", "v2-smal", "--out", tmp_path / "o") == 1
    assert "v2-smal" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run("estimate", tmp_path, "--out", tmp_path, "--colormap", "turbo", "--format", "npy", "--normalize", "x")
    assert _run("estimate", tmp_path / "i", "--out", tmp_path / "o", "--colormap", "turbo") == 1
    assert "control_png8" in capsys.readouterr().err


def test_metric_modes_need_a_metric_model(photos, tmp_path, tiny_hf, tiny_files, capsys):
    from tiny import write_pth

    model = write_pth(tiny_hf, tmp_path / "depth_anything_v2_metric_hypersim_vits.pth")
    out = tmp_path / "out"
    assert _run("estimate", photos / "a.png", "--model", model, "--out", out, "--normalize", "metric_linear",
                "--near", "0.5", "--far", "20", "--input-size", "70") == 0
    assert read_png16(out / "a_depth.png").dtype == np.uint16
    assert _run("estimate", photos / "a.png", "--model", tiny_files["pth"], "--out", tmp_path / "rel",
                "--normalize", "metric_linear", "--input-size", "70") == 1
    assert "needs a metric model" in capsys.readouterr().err
    assert not (tmp_path / "rel" / "a_depth.png").exists()


def test_ctrl_c_stops_cleanly_and_a_rerun_completes_only_the_rest(tiny_files, tmp_path):
    """SIGINT mid-run: exit 130, the message, complete files only, and a rerun computes just what is missing."""
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(2)
    n = 150
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "anydepth.cli", "estimate", str(folder), "--model", tiny_files["pth"], "--out",
           str(out), "--input-size", "140", "--batch-size", "1", "--format", "npz"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.rglob("*_depth.npz")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "run the same command again to resume" in stderr
    written = sorted(out.rglob("*_depth.npz"))
    assert 0 < len(written) < n, "the run should have been stopped part-way"
    assert f"interrupted: {len(written)} of {n} written" in stderr
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary file
    for p in written:  # every file present is complete
        assert np.load(p)["depth"].shape == (96, 128)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{n} of {n} depth files" in again.stdout and f"{n - len(written)} written now" in again.stdout


def test_info_lists_licenses_and_local_presence(tmp_path, tiny_files):
    import shutil

    shutil.copy(tiny_files["pth"], tmp_path / "depth_anything_v2_vits.pth")
    proc = subprocess.run([sys.executable, "-m", "anydepth.cli", "info", "--models-dir", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "Apache-2.0" in lines["v2-small"] and lines["v2-small"].split()[5] == "yes"
    assert "CC-BY-NC-4.0" in lines["v2-large"] and lines["v2-large"].split()[5] == "no"
    assert "metres ≤ 80" in lines["v2-metric-outdoor-small"]
