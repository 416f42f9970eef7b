"""``anydepth video`` and :mod:`anydepth.video_io`: video files and frame folders in, depth files and videos out.

Every run is checked against :class:`~anydepth.video_model.VideoDepthEstimator` on the same decoded frames (the
tiny random Video Depth Anything of :mod:`tiny_vda`, 24×32 frames, input size 28): the command adds reading,
naming, resuming and writing, never other numbers. Bad inputs must give one line on stderr and exit 1.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import DepthEstimator
from anydepth.cli import main
from anydepth.export import load_depth
from anydepth.io import read_png16
from anydepth.video_io import ClipRange, DepthVideoWriter, open_frames, read_video
from anydepth.video_model import VideoDepthEstimator
from tiny import write_pth
from tiny_vda import vda_state_dict, write_vda

pytestmark = pytest.mark.usefixtures("one_thread")

H, W, SIZE = 24, 32, 28


def pattern(t: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth uint8 RGB frame that drifts with ``t`` (survives H.264 nearly unchanged)."""
    yy, xx = np.mgrid[0:h, 0:w]
    grey = 127 + 90 * np.sin((xx + 2 * t) / 6.0) * np.cos(yy / 5.0 + t / 9.0)
    return np.repeat(grey[..., None], 3, -1).clip(0, 255).astype(np.uint8)


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10, times: list[float] | None = None) -> Path:
    """An H.264 file of uint8 RGB frames; ``times`` (seconds) gives each frame its own timestamp (variable rate)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def vda_file(tmp_path_factory) -> Path:
    return write_vda(vda_state_dict(), tmp_path_factory.mktemp("vda") / "video_depth_anything_vits.pth")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", [pattern(t) for t in range(10)])


def reference(vda_file: Path, frames) -> torch.Tensor:
    """Depth of ``frames`` straight from the estimator, ``[T, H, W]``."""
    return VideoDepthEstimator(vda_file, dtype="fp32", device="cpu", input_size=SIZE).estimate(frames).depth


def cli(vda_file: Path, source: Path, out: Path, *extra: str) -> int:
    return main(["video", str(source), "--out", str(out), "--model", str(vda_file), "--input-size", str(SIZE),
                 "--dtype", "fp32", "--device", "cpu", *extra])


def one_line_error(capsys, match: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("anydepth: error:") and match in err[0], err


# ------------------------------------------------------------------------------------------------ inputs


def test_video_file_to_raw_npy_equals_the_estimator(vda_file, clip_file, tmp_path):
    assert cli(vda_file, clip_file, tmp_path / "out", "--format", "npy") == 0
    want = reference(vda_file, list(read_video(clip_file).frames))
    files = sorted((tmp_path / "out").glob("frame_*_depth.npy"))
    assert [f.name for f in files] == [f"frame_{i:06d}_depth.npy" for i in range(10)]
    got = torch.stack([torch.from_numpy(load_depth(f).depth) for f in files])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    meta = load_depth(files[3])
    assert meta.kind == "disparity" and meta.units == "relative" and meta.metadata["model"] == "vda-small"
    manifest = json.loads((tmp_path / "out" / "video.json").read_text())
    assert manifest["complete"] and manifest["frames"] == 10 and manifest["fps"] == 10.0


def test_frame_folder_in_natural_order(vda_file, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    order = ["f1.png", "f2.png", "f10.png", "f11.png"]  # a plain sort would put f10 before f2
    for t, name in enumerate(order):
        Image.fromarray(pattern(3 * t)).save(folder / name)
    assert cli(vda_file, folder, tmp_path / "npz", "--format", "npz") == 0
    want = reference(vda_file, [torch.from_numpy(pattern(3 * t).astype(np.float32) / 255) for t in range(4)])
    with np.load(tmp_path / "npz" / "depth.npz") as z:
        np.testing.assert_allclose(z["depth"], want.numpy(), rtol=0, atol=1e-6)
        meta = json.loads(str(z["metadata"]))
    assert meta["kind"] == "disparity" and meta["frames"] == 4

    assert cli(vda_file, folder, tmp_path / "png", "--format", "control_png16") == 0
    mapping = ClipRange.of(want, "disparity")  # one mapping for the clip (from its first frames)
    for t, name in enumerate(order):
        png = read_png16(tmp_path / "png" / name.replace(".png", "_depth.png")).astype(np.float64) / 65535
        np.testing.assert_allclose(png, mapping.apply(want[t]).numpy(), atol=1 / 65535)


def test_depth_video_grey_and_colour(vda_file, clip_file, tmp_path):
    import av

    assert cli(vda_file, clip_file, tmp_path / "grey", "--format", "video") == 0
    assert cli(vda_file, clip_file, tmp_path / "turbo", "--format", "video", "--colormap", "turbo") == 0
    want = ClipRange.of(reference(vda_file, list(read_video(clip_file).frames)), "disparity")
    for name in ("grey", "turbo"):
        with av.open(str(tmp_path / name / "depth.mp4")) as c:
            assert float(c.streams.video[0].average_rate) == 10.0
            frames = [f.to_ndarray(format="rgb24").astype(np.float64) for f in c.decode(video=0)]
        assert len(frames) == 10 and frames[0].shape == (H, W, 3)
        spread = np.abs(frames[0] - frames[0].mean(-1, keepdims=True)).mean()
        assert (spread < 3) == (name == "grey")  # grey: R = G = B up to compression
    assert want.high > want.low
    assert sorted(p.name for p in (tmp_path / "grey").iterdir()) == ["depth.mp4", "video.json"]  # no temp file left


def test_target_fps_and_max_frames(vda_file, tmp_path):
    clip = write_clip(tmp_path / "c.mp4", [pattern(t) for t in range(20)], fps=10)
    assert cli(vda_file, clip, tmp_path / "a", "--format", "npy", "--target-fps", "5") == 0
    assert len(list((tmp_path / "a").glob("*.npy"))) == 10
    assert cli(vda_file, clip, tmp_path / "b", "--format", "npy", "--max-frames", "3") == 0
    assert len(list((tmp_path / "b").glob("*.npy"))) == 3
    src = open_frames(clip, target_fps=5, max_frames=4)
    assert (src.count, src.fps, len(list(src.frames))) == (4, 5, 4)


def test_variable_frame_rate_is_sampled_by_time(tmp_path):
    times = [0.0, 0.05, 0.1, 0.3, 0.35, 0.6, 0.9, 1.0]
    levels = [10 * (i + 1) for i in range(len(times))]  # each frame a flat grey level: which frame is which
    clip = write_clip(tmp_path / "vfr.mp4", [np.full((H, W, 3), v, np.uint8) for v in levels], times=times)
    every = [round(float(f.mean()) * 255) for f in read_video(clip).frames]
    assert len(every) == len(times)
    kept = [round(float(f.mean()) * 255) for f in read_video(clip, target_fps=5).frames]
    # one frame per 0.2 s slot by timestamp: 0.0, 0.3 (for 0.2), 0.6 (0.4 and 0.6), 0.9 (0.8), 1.0
    want = [every[i] for i in (0, 3, 5, 6, 7)]
    assert kept == want


# ------------------------------------------------------------------------------------------------ resume


def test_resume_after_an_interrupt_writes_only_the_missing_files(vda_file, clip_file, tmp_path, monkeypatch, capsys):
    import anydepth.export as export

    real, calls = export.save_depth, []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(export, "save_depth", interrupted)
    assert cli(vda_file, clip_file, out, "--format", "npy") == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    monkeypatch.setattr(export, "save_depth", real)
    done = sorted(out.glob("*.npy"))
    assert len(done) == 3 and not json.loads((out / "video.json").read_text())["complete"]
    assert not list(out.glob(".*.tmp"))  # atomic writes: no half-written file
    before = {p.name: p.stat().st_mtime_ns for p in done}

    assert cli(vda_file, clip_file, out, "--format", "npy") == 0
    files = sorted(out.glob("*.npy"))
    assert len(files) == 10 and all(p.stat().st_mtime_ns == before[p.name] for p in done)  # kept, not rewritten
    assert cli(vda_file, clip_file, tmp_path / "whole", "--format", "npy") == 0
    for p in files:
        np.testing.assert_array_equal(np.load(p), np.load(tmp_path / "whole" / p.name))
    capsys.readouterr()
    assert cli(vda_file, clip_file, out, "--format", "npy") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli(vda_file, clip_file, out, "--format", "npy", "--input-size", "42") == 1
    one_line_error(capsys, "other settings (input_size)")


def test_an_interrupted_depth_video_leaves_no_file(vda_file, clip_file, tmp_path, monkeypatch):
    real = DepthVideoWriter.write

    def write(self, x01):
        if self.frames == 5:
            raise KeyboardInterrupt
        real(self, x01)

    monkeypatch.setattr(DepthVideoWriter, "write", write)
    assert cli(vda_file, clip_file, tmp_path / "out", "--format", "video") == 130
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["video.json"]


# ------------------------------------------------------------------------------------------------ bad input


def test_a_one_frame_clip_is_a_correct_result(vda_file, tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(pattern(0)).save(folder / "only.png")
    assert cli(vda_file, folder, tmp_path / "out", "--format", "npy") == 0
    want = reference(vda_file, [torch.from_numpy(pattern(0).astype(np.float32) / 255)])
    np.testing.assert_allclose(np.load(tmp_path / "out" / "only_depth.npy"), want[0].numpy(), atol=1e-6)


def test_bad_inputs_are_one_line_errors(vda_file, clip_file, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(vda_file, empty, tmp_path / "o1") == 1
    one_line_error(capsys, "holds no images")

    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 50)
    assert cli(vda_file, tmp_path / "junk.mp4", tmp_path / "o2") == 1
    one_line_error(capsys, "cannot open the video")

    data = clip_file.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert cli(vda_file, tmp_path / "cut.mp4", tmp_path / "o3") == 1
    one_line_error(capsys, "truncated or corrupt")

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(pattern(0)).save(mixed / "a1.png")
    Image.fromarray(pattern(1, 26, 32)).save(mixed / "a2.png")
    assert cli(vda_file, mixed, tmp_path / "o4", "--format", "npy") == 1
    one_line_error(capsys, "a2.png is 26×32 but a1.png is 24×32")

    import av

    with av.open(str(tmp_path / "empty.mp4"), "w") as c:  # a video of 0 frames
        stream = c.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = H, W, "yuv420p"
        c.start_encoding()
    assert cli(vda_file, tmp_path / "empty.mp4", tmp_path / "o7") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"empty.mp4 (has no video stream|holds no video frames)", err[0]), err

    assert cli(vda_file, tmp_path / "missing.mp4", tmp_path / "o5") == 1
    one_line_error(capsys, "does not exist")
    assert cli(vda_file, clip_file, tmp_path / "o6", "--max-frames", "0") == 1
    one_line_error(capsys, "max_frames must be a positive integer")
    (tmp_path / "a_file").write_text("")
    assert cli(vda_file, clip_file, tmp_path / "a_file" / "out") == 1  # refused before the model loads
    one_line_error(capsys, "is a file, not a folder; choose another --out")
    assert cli(vda_file, clip_file, tmp_path / "o8", "--max-tokens", "-2") == 1
    one_line_error(capsys, "max_tokens")
    assert cli(vda_file, clip_file, tmp_path / "o9", "--max-tokens", "2", "--streaming") == 1
    one_line_error(capsys, "at least 42 px")


def test_max_tokens_reaches_the_estimator_and_is_part_of_the_settings(vda_file, clip_file, tmp_path, capsys):
    """``--max-tokens 2``: the 28×42 network input (2×3 patches) runs at 14×14, as the estimator with the same budget;
    a rerun with another budget into the same folder is refused rather than mixing two runs' files."""
    frames = list(read_video(clip_file).frames)
    assert cli(vda_file, clip_file, tmp_path / "out", "--format", "npz", "--max-tokens", "2") == 0
    want = VideoDepthEstimator(vda_file, dtype="fp32", device="cpu", input_size=SIZE, max_tokens=2).estimate(frames)
    with np.load(tmp_path / "out" / "depth.npz") as z:
        np.testing.assert_allclose(z["depth"], want.depth.numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(want.depth.numpy(), reference(vda_file, frames).numpy())
    assert json.loads((tmp_path / "out" / "video.json").read_text())["settings"]["max_tokens"] == 2
    capsys.readouterr()
    assert cli(vda_file, clip_file, tmp_path / "out", "--format", "npz") == 1
    assert "anydepth: error:" in capsys.readouterr().err


def test_image_models_and_video_models_are_told_apart(vda_file, clip_file, tmp_path, capsys, tiny_hf):
    v2 = write_pth(tiny_hf, tmp_path / "depth_anything_v2_vits.pth")
    for extra in ((), ("--streaming",)):
        assert main(["video", str(clip_file), "--out", str(tmp_path / "o"), "--model", str(v2), *extra]) == 1
        one_line_error(capsys, "is an image model (Depth Anything V1/V2), not a Video Depth Anything model")
    with pytest.raises(ValueError, match="is a Video Depth Anything model .* use anydepth.VideoDepthEstimator"):
        DepthEstimator(vda_file, device="cpu")
    with pytest.raises(ValueError, match="is a Video Depth Anything model"):
        DepthEstimator("vda-small", device="cpu")  # refused before any download
    Image.fromarray(pattern(0)).save(tmp_path / "still.png")
    assert main(["estimate", str(tmp_path / "still.png"), "--out", str(tmp_path / "e"), "--model", str(vda_file)]) == 1
    assert "Video Depth Anything" in capsys.readouterr().err


def test_npz_is_written_without_holding_the_clip(tmp_path):
    """The one-file format streams: 200 maps of 256×256 (50 MB) pass through a few MB of Python/numpy memory, and the
    archive reads back with np.load as np.savez_compressed's would (no spool file left beside it)."""
    import tracemalloc

    from anydepth.cli.video import _write_npz

    def maps():
        for t in range(200):
            yield torch.full((256, 256), float(t)) + torch.linspace(0, 1, 256)

    tracemalloc.start()
    try:
        files, frames = _write_npz(tmp_path / "depth.npz", maps(), "metric_depth", {"fps": 25.0})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert files == ["depth.npz"] and frames == 200 and peak < 10 * 2**20, peak
    with np.load(tmp_path / "depth.npz") as z:
        assert z["depth"].shape == (200, 256, 256) and z["depth"].dtype == np.float32
        np.testing.assert_array_equal(z["depth"][17], (torch.full((256, 256), 17.0) + torch.linspace(0, 1, 256)).numpy())
        assert json.loads(str(z["metadata"])) == {"kind": "metric_depth", "units": "metres", "fps": 25.0, "frames": 200}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth.npz"]
