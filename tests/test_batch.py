"""``anydepth batch``: planning, the streaming local engine, resume, and the Ray engine's identical output."""

from __future__ import annotations

import shutil

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import DepthEstimator, normalize_depth, to_uint16
from anydepth.batch import OutputSpec, plan_jobs, run_batch
from anydepth.cli import main
from anydepth.io import read_npy, read_png16
from conftest import TINY_EST, write_photo

EST = TINY_EST
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def dataset(tmp_path):
    """10 images of two sizes, three in a sub-folder."""
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    for i in range(10):
        h, w = (30, 40) if i % 2 else (42, 28)
        write_photo((root / "sub" if i % 4 == 0 else root) / f"im{i:02d}.png", h, w, seed=i)
    return root


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ planning


def test_plan_jobs_mirrors_folders_and_keeps_names_unique(tmp_path):
    d = tmp_path / "in"
    (d / "a" / "b").mkdir(parents=True)
    for name in ("x.png", "x.jpg", "a/y.png", "a/b/z.webp"):
        Image.new("RGB", (4, 4)).save(d / name)
    out = tmp_path / "out"
    jobs = plan_jobs([d], out, "npy", recursive=True)
    assert [(s.relative_to(d).as_posix(), t.relative_to(out).as_posix()) for s, t in jobs] == [
        ("a/b/z.webp", "in/a/b/z_depth.npy"), ("a/y.png", "in/a/y_depth.npy"),
        ("x.jpg", "in/x_jpg_depth.npy"), ("x.png", "in/x_png_depth.npy")]
    assert [t.name for _, t in plan_jobs([d], out)] == ["x_jpg_depth.png", "x_png_depth.png"]  # not recursive
    assert [t.name for _, t in plan_jobs([d], out, "depth_png16")] == ["x_jpg_depth_raw.png", "x_png_depth_raw.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\nin/a/y.png\n\nin/a/b/z.webp\n")
    assert [t.relative_to(out).as_posix() for _, t in plan_jobs([listing], out)] == ["y_depth.png", "b/z_depth.png"]
    assert [t.name for _, t in plan_jobs([str(d / "a" / "**" / "*.webp")], out, recursive=True)] == ["z_depth.png"]
    # a file given twice is one job; two files of one name are both kept
    assert [t.name for _, t in plan_jobs([d / "x.png", d / "a" / "y.png", tmp_path / "in" / "x.png"], out)] == [
        "x_depth.png", "y_depth.png"]
    assert [t.name for _, t in plan_jobs([d / "x.png", d / "a" / "b" / ".." / ".." / "x.png"], out)] == ["x_depth.png"]
    with pytest.raises(ValueError, match="'png16' is now control_png16"):
        plan_jobs([d], out, "png16")


def test_outputs_inside_an_input_folder_are_not_read_back(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.new("RGB", (4, 4)).save(d / "x.png")
    (d / "depth" / "in").mkdir(parents=True)
    Image.new("I;16", (4, 4)).save(d / "depth" / "in" / "x_depth.png")  # what a previous run wrote
    assert [(s.name, t.relative_to(d / "depth").as_posix()) for s, t in plan_jobs([d], d / "depth", recursive=True)] \
        == [("x.png", "in/x_depth.png")]


# ------------------------------------------------------------------------------------------------ local engine


def test_local_engine_matches_the_library(dataset, tiny_files, tmp_path):
    out = tmp_path / "out"
    report = run_batch([dataset], out, recursive=True, batch_size=4, spec=OutputSpec("npy"), progress=False,
                       model=tiny_files["pth"], **EST)
    assert report.ok and (report.done, report.skipped) == (10, 0)
    jobs = plan_jobs([dataset], out, "npy", recursive=True)
    est = DepthEstimator(tiny_files["pth"], **EST)
    for start in range(0, 10, 4):  # the same chunks through the library give the same bits
        chunk = jobs[start:start + 4]
        result = est.estimate([Image.open(s) for s, _ in chunk])
        for (src, dst), depth in zip(chunk, result.maps()):
            np.testing.assert_array_equal(read_npy(dst), depth.numpy())
            assert read_npy(dst).shape == Image.open(src).size[::-1]

    png = tmp_path / "png"
    assert run_batch([dataset], png, recursive=True, batch_size=4, progress=False, model=tiny_files["pth"], **EST).ok
    for (_, dst_npy), (_, dst_png) in zip(jobs, plan_jobs([dataset], png, "control_png16", recursive=True)):
        expected = to_uint16(normalize_depth(torch.from_numpy(read_npy(dst_npy))[None], "disparity", "v2_style"))[0]
        np.testing.assert_array_equal(read_png16(dst_png), expected)


def test_interrupted_run_resumes_without_recomputing(dataset, tiny_files, tmp_path, monkeypatch):
    out = tmp_path / "out"
    estimated: list[int] = []
    original = DepthEstimator.estimate

    def counting(self, images, **kw):
        if stop_after is not None and len(estimated) == stop_after:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the second batch
        estimated.append(len(images))
        return original(self, images, **kw)

    monkeypatch.setattr(DepthEstimator, "estimate", counting)
    kwargs = dict(recursive=True, batch_size=3, spec=OutputSpec("npy"), progress=False, model=tiny_files["pth"], **EST)
    stop_after = 1
    with pytest.raises(KeyboardInterrupt):
        run_batch([dataset], out, **kwargs)
    finished = sorted(p for p in out.rglob("*.npy") if p.is_file())
    assert len(finished) == 3 and estimated == [3]  # the first chunk is complete on disk ...
    assert not [p for p in out.rglob(".*")]  # ... and nothing half-written is left
    stamps = {p: p.stat().st_mtime_ns for p in finished}

    stop_after, estimated[:] = None, []
    report = run_batch([dataset], out, **kwargs)
    assert (report.done, report.skipped) == (7, 3) and sum(estimated) == 7  # only the rest is computed
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps

    clean = tmp_path / "clean"
    run_batch([dataset], clean, **kwargs)
    assert _files(out) == _files(clean)  # resuming changed nothing in the result (same chunks)
    estimated[:] = []
    assert run_batch([dataset], out, **kwargs).skipped == 10 and estimated == []


def test_local_engine_reads_ahead_a_bounded_number_of_images(dataset, tiny_files, tmp_path, monkeypatch):
    import anydepth.batch as batch_module

    reads, processed, ahead = [0], [0], []
    real_read = batch_module.read_image

    def read(path):
        reads[0] += 1
        return real_read(path)

    original = DepthEstimator.estimate

    def estimate(self, images, **kw):
        ahead.append(reads[0] - processed[0])
        processed[0] += len(images)
        return original(self, images, **kw)

    monkeypatch.setattr(batch_module, "read_image", read)
    monkeypatch.setattr(DepthEstimator, "estimate", estimate)
    report = run_batch([dataset], tmp_path / "out", recursive=True, batch_size=2, prefetch=2, progress=False,
                       model=tiny_files["pth"], **EST)
    assert report.done == 10 and reads[0] == 10
    # at each forward pass: the batch being computed plus at most `prefetch` batches read ahead
    assert max(ahead) <= (2 + 1) * 2
    assert len(ahead) == 5


def test_unreadable_images_are_reported_and_others_written(dataset, tiny_files, tmp_path, capsys):
    (dataset / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    args = ["batch", str(dataset), "--out", str(out), "--model", str(tiny_files["pth"]), "--input-size", "70",
            "--batch-size", "4", "--dtype", "fp32", "--format", "control_png8", "--colormap", "turbo"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "cannot read image" in captured.err
    written = sorted(p.name for p in (out / dataset.name).iterdir())
    assert len(written) == 7 and "broken_depth.png" not in written
    assert Image.open(out / dataset.name / "im01_depth.png").mode == "RGB"
    assert main(args) == 1 and "7 already there" in capsys.readouterr().out


def test_an_image_the_network_fails_on_costs_only_itself(dataset, tiny_files, tmp_path, monkeypatch):
    """Per-item isolation: the failing batch is retried image by image, so its other images are still written."""
    write_photo(dataset / "im03b.png", 17, 19, seed=99)  # the image the "network" cannot take
    original = DepthEstimator.estimate
    calls = []

    def poisoned(self, images, **kw):
        calls.append(len(images))
        if any(getattr(im, "size", None) == (19, 17) for im in images):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return original(self, images, **kw)

    monkeypatch.setattr(DepthEstimator, "estimate", poisoned)
    report = run_batch([dataset], tmp_path / "out", recursive=True, batch_size=4, progress=False,
                       model=tiny_files["pth"], **EST)
    assert report.done == 10 and report.on_disk == 10 and report.total == 11
    assert [(Path(src).name, m) for src, m in report.failed] == [
        ("im03b.png", "depth failed: RuntimeError: CUDA error: an illegal memory access was encountered")]
    assert 1 in calls and len(list((tmp_path / "out").rglob("*.png"))) == 10


def test_clear_errors(dataset, tiny_files, tmp_path, capsys):
    base = ["batch", str(dataset), "--out", str(tmp_path / "o"), "--model", str(tiny_files["pth"]), "--input-size", "70"]
    assert main(base + ["--normalize", "metric_linear"]) == 1
    assert "needs a metric model" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--colormap", "turbo"]) == 1
    assert "add --format control_png8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        run_batch([dataset], tmp_path / "o", batch_size=0, model=tiny_files["pth"])
    with pytest.raises(ValueError, match="engine must be one of local, ray"):
        run_batch([dataset], tmp_path / "o", engine="spark", model=tiny_files["pth"])


# ------------------------------------------------------------------------------------------------ Ray engine


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the ray engine needs ray[data] (in the test extra)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_engine_writes_the_same_files_and_resumes(local_ray, dataset, tiny_files, tmp_path, capsys):
    common = ["--model", str(tiny_files["pth"]), "--input-size", "70", "--batch-size", "3", "--dtype", "fp32",
              "--device", "cpu", "--format", "npy", "--recursive", "--threads", "1"]
    local = tmp_path / "local"
    assert main(["batch", str(dataset), "--out", str(local), *common]) == 0

    # Ray resumes too: the first chunk's files are already there and must not be recomputed
    ray_out = tmp_path / "ray"
    stamps = {}
    for (_, done), (_, kept) in zip(plan_jobs([dataset], local, "npy", recursive=True)[:3],
                                    plan_jobs([dataset], ray_out, "npy", recursive=True)[:3]):
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(done.with_suffix(".json"), kept.with_suffix(".json"))  # the metadata sidecar
        shutil.copy2(done, kept)
        stamps[kept] = kept.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["batch", str(dataset), "--out", str(ray_out), "--engine", "ray", "--workers", "2", *common]) == 0
    out = capsys.readouterr().out
    assert "10 of 10 depth files (ray engine)" in out and "7 written now" in out and "3 already there" in out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert _files(ray_out) == _files(local)  # byte-identical depth files and metadata
    assert len(_files(ray_out)) == 20
