"""Long sequences: chunked any-view estimation aligned into one world frame, in bounded memory.

:class:`FakeAnyView` stands in for the network: it knows a camera trajectory inside a sphere (radius 10, so every
pixel's depth is a ray-sphere intersection) and returns, for any set of frames, their true cameras and depth in a
frame of its own: a random similarity (rotation, translation, scale 0.3..3) drawn anew for every call, as a real
network picks its own reference view and scale. The chunked result must then match a single pass over all views up
to one global similarity, which checks the alignment maths. Optionally the fake "bends" each chunk (view ``j`` of a
chunk turned by ``bend · j`` rad and scaled by ``1 + stretch · j``), which makes the chained alignments drift like a
real network's small inconsistencies do; loop closure must remove most of that drift.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anydepth.anyview import GeometryResult
from anydepth.cameras import camera_centers, invert_rigid
from anydepth.sequence import (Sim3, estimate_sequence, folder_frames, frame_step, natural_key, sim3_from_cameras,
                               sim3_from_points, video_frames)

RADIUS = 10.0
PROC = (30, 40)  # the fake network's size (h, w)
FOCAL = 30.0


def trajectory(n: int, closed: bool = False) -> torch.Tensor:
    """World-to-camera ``[n, 3, 4]``: a circle of radius 3 (a full turn when ``closed``), looking outwards and a little
    up and down, with some roll."""
    out = []
    for i in range(n):
        a = 2 * math.pi * i / n if closed else 1.5 * math.pi * i / n
        centre = torch.tensor([3 * math.cos(a), 0.4 * math.sin(3 * a), 3 * math.sin(a)], dtype=torch.float64)
        yaw, pitch, roll = a + 0.3, 0.2 * math.sin(2 * a), 0.1 * math.cos(a)
        ry = torch.tensor([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
        rx = torch.tensor([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
        rz = torch.tensor([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
        c2w_r = (ry @ rx @ rz).double()
        out.append(torch.cat([c2w_r.T, (-c2w_r.T @ centre)[:, None]], 1))
    return torch.stack(out)


def random_sim(gen: torch.Generator) -> Sim3:
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    q = q / q.norm()
    x, y, z, w = q.tolist()
    r = torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]], dtype=torch.float64)
    scale = float(torch.exp(torch.empty(1, dtype=torch.float64).uniform_(math.log(0.3), math.log(3.0), generator=gen)))
    return Sim3(r, 3 * torch.randn(3, generator=gen, dtype=torch.float64), scale)


def encode(index: int, size: tuple[int, int]) -> torch.Tensor:
    """A frame ``[H, W, 3]`` whose first pixel carries its index (what the fake reads back)."""
    frame = torch.zeros(*size, 3)
    frame[0, 0, 0], frame[0, 0, 1] = (index % 256) / 255, (index // 256) / 255
    return frame


def decode(frame: torch.Tensor) -> int:
    return int(round(float(frame[0, 0, 0]) * 255)) + 256 * int(round(float(frame[0, 0, 1]) * 255))


class FakeAnyView:
    """Any-view 'network' with known answers (see the module docstring)."""

    def __init__(self, w2c: torch.Tensor, seed: int = 0, noise: float = 0.0, bend: float = 0.0, stretch: float = 0.0):
        self.w2c, self.noise, self.bend, self.stretch = w2c, noise, bend, stretch
        self.gen = torch.Generator().manual_seed(seed)
        self.k = torch.tensor([[FOCAL, 0, PROC[1] / 2], [0, FOCAL, PROC[0] / 2], [0, 0, 1]], dtype=torch.float64)
        self.calls: list[list[int]] = []

    def true_depth(self, w2c: torch.Tensor) -> torch.Tensor:
        v, u = torch.meshgrid(torch.arange(PROC[0], dtype=torch.float64), torch.arange(PROC[1], dtype=torch.float64),
                              indexing="ij")
        rays = torch.stack([(u - self.k[0, 2]) / FOCAL, (v - self.k[1, 2]) / FOCAL, torch.ones_like(u)], -1)
        c2w = invert_rigid(w2c)
        d = rays @ c2w[:3, :3].T  # world directions with camera-frame z = 1
        c = c2w[:3, 3]
        a, b, cc = (d * d).sum(-1), (d * c).sum(-1), float(c @ c) - RADIUS ** 2
        return (-b + torch.sqrt(b * b - a * cc)) / a  # the ray parameter is the camera-frame z

    def estimate(self, images, **_) -> GeometryResult:
        frames = list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
        idx = [decode(f) for f in frames]
        self.calls.append(idx)
        size = tuple(frames[0].shape[:2])
        sim = random_sim(self.gen)
        exts, depths = [], []
        for j, i in enumerate(idx):
            w2c = self.w2c[i]
            depth = self.true_depth(w2c)
            if self.bend or self.stretch:  # view j of this pass: turned about y and scaled about the world origin
                t = Sim3(Sim3.identity().rotation, torch.zeros(3, dtype=torch.float64), 1 + self.stretch * j)
                a = self.bend * j
                rot = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]],
                                   dtype=torch.float64)
                t = Sim3(rot, torch.zeros(3, dtype=torch.float64), 1.0).compose(t)
                w2c, depth = t.apply_extrinsics(w2c[None])[0], depth * t.scale
            exts.append(sim.apply_extrinsics(w2c[None])[0])
            if self.noise:
                depth = depth * (1 + self.noise * torch.randn(depth.shape, generator=self.gen, dtype=torch.float64))
            depths.append(depth * sim.scale)
        depth = torch.stack(depths).float()
        conf = 1.5 + torch.rand(depth.shape, generator=self.gen)
        n = len(idx)
        k_proc = self.k[None].repeat(n, 1, 1).float()
        scale = torch.tensor([size[1] / PROC[1], size[0] / PROC[0], 1.0])[:, None]
        up = lambda x: torch.nn.functional.interpolate(x[:, None], size=size, mode="bilinear")[:, 0]  # noqa: E731
        return GeometryResult(
            depth=up(depth), confidence=up(conf), sky=None, extrinsics=torch.stack(exts).float(), intrinsics=k_proc * scale,
            kind="depth", processed_size=PROC, processed_depth=depth, processed_confidence=conf, processed_sky=None,
            processed_intrinsics=k_proc, processed_images=torch.zeros(n, *PROC, 3), input_sizes=[size] * n)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """An H.264 MP4 of uint8 RGB frames ``[H, W, 3]`` (PyAV)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frames(n: int, size: tuple[int, int] = PROC):
    return (encode(i, size) for i in range(n))


def compare(seq_ext: torch.Tensor, ref_ext: torch.Tensor) -> tuple[float, float, Sim3]:
    """Largest camera-centre error (relative to the trajectory's extent) and rotation error (rad) of ``seq_ext``
    after the one similarity that best maps it onto ``ref_ext``."""
    g = sim3_from_cameras(seq_ext, ref_ext)
    moved = g.apply_extrinsics(seq_ext)
    ref_c = camera_centers(ref_ext.double())
    extent = float((ref_c.max(0).values - ref_c.min(0).values).norm())
    centre_err = float((camera_centers(moved) - ref_c).norm(dim=1).max()) / extent
    return centre_err, float(rotation_angle(moved, ref_ext).max()), g


def rotation_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle (rad) between the rotations of two sets of cameras; ``||R - I||_F = 2√2 sin(θ/2)`` stays precise near 0,
    where ``arccos((tr R - 1) / 2)`` does not."""
    rel = a.double()[:, :, :3] @ b.double()[:, :, :3].transpose(1, 2)
    return 2 * torch.asin(((rel - torch.eye(3, dtype=torch.float64)).flatten(1).norm(dim=1) / (2 * math.sqrt(2))).clamp(max=1))


def test_similarity_maths():
    gen = torch.Generator().manual_seed(3)
    s, t = random_sim(gen), random_sim(gen)
    x = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    assert torch.allclose(s.compose(t).apply(x), s.apply(t.apply(x)))
    assert torch.allclose(s.inverse().apply(s.apply(x)), x)
    assert torch.allclose(s.power(1.0).apply(x), s.apply(x)) and torch.allclose(s.power(0.0).apply(x), x)
    half = s.power(0.5)  # half the angle, half the translation, the square root of the scale
    assert torch.allclose(half.rotation @ half.rotation, s.rotation, atol=1e-12)
    assert half.scale == pytest.approx(math.sqrt(s.scale)) and torch.allclose(2 * half.translation, s.translation)
    fit = sim3_from_points(x, s.apply(x))
    assert torch.allclose(fit.rotation, s.rotation, atol=1e-9) and fit.scale == pytest.approx(s.scale)
    bad = s.apply(x)
    bad[:5] += 50.0  # outliers: dropped by the refit
    assert torch.allclose(sim3_from_points(x, bad).rotation, s.rotation, atol=1e-6)
    w2c = trajectory(6)
    cams = sim3_from_cameras(w2c, s.apply_extrinsics(w2c))
    assert torch.allclose(cams.rotation, s.rotation, atol=1e-9) and cams.scale == pytest.approx(s.scale)
    # the moved cameras see the moved world: a world point's camera coordinates scale by s
    p = torch.randn(1, 3, dtype=torch.float64)
    cam = w2c[0, :, :3] @ p[0] + w2c[0, :, 3]
    moved = s.apply_extrinsics(w2c[:1])[0]
    assert torch.allclose(moved[:, :3] @ s.apply(p)[0] + moved[:, 3], s.scale * cam)


def test_60_views_in_chunks_of_16_match_one_60_view_pass():
    """Exact fake: the chunked cameras equal the single pass's up to one similarity (tolerance 1e-4 of the
    trajectory's extent and 1e-4 rad: float32 maps), depth too."""
    w2c = trajectory(60)
    single = FakeAnyView(w2c, seed=1).estimate(torch.stack(list(frames(60))))
    fake = FakeAnyView(w2c, seed=2)
    views = []
    done = []
    res = estimate_sequence(fake, frames(60), chunk_size=16, overlap=4, on_view=views.append,
                            progress=lambda d, t: done.append((d, t)), total=60)
    assert [c[0] for c in fake.calls] == [0, 12, 24, 36, 48] and all(len(c) <= 16 for c in fake.calls)
    assert res.chunks == [(0, 16), (12, 28), (24, 40), (36, 52), (48, 60)]
    assert [v.index for v in views] == list(range(60)) and done[-1] == (60, 60) and len(done) == 5
    centre_err, angle_err, g = compare(res.extrinsics, single.extrinsics)
    assert centre_err < 1e-4 and angle_err < 1e-4
    depth = torch.stack([v.processed_depth for v in views]) * g.scale
    assert float(((depth - single.processed_depth) / single.processed_depth).abs().max()) < 1e-4
    assert torch.allclose(torch.stack([v.extrinsics for v in views]), res.extrinsics)


def test_noisy_depth_keeps_the_poses_within_one_percent():
    """2 % per-pixel depth noise in every pass: poses within 1 % of the extent and 0.01 rad of the single pass."""
    w2c = trajectory(60)
    single = FakeAnyView(w2c, seed=1).estimate(torch.stack(list(frames(60))))
    res = estimate_sequence(FakeAnyView(w2c, seed=4, noise=0.02), frames(60), chunk_size=16, overlap=4)
    centre_err, angle_err, _ = compare(res.extrinsics, single.extrinsics)
    assert centre_err < 0.01 and angle_err < 0.01


def test_loop_closure_removes_most_of_the_drift():
    w2c = trajectory(120, closed=True)
    kw = dict(chunk_size=16, overlap=4)
    fake = lambda: FakeAnyView(w2c, seed=5, bend=0.002, stretch=0.002)  # noqa: E731
    open_ = estimate_sequence(fake(), frames(120), **kw)
    closed = estimate_sequence(fake(), frames(120), loop_closure=True, **kw)

    def end_error(ext: torch.Tensor) -> tuple[float, float]:
        """Error of the last views once the first chunk is put onto the truth."""
        g = sim3_from_cameras(ext[:16], w2c[:16])
        return _errors(g.apply_extrinsics(ext[-8:]), w2c[-8:])

    open_c, open_a = end_error(open_.extrinsics)
    closed_c, closed_a = end_error(closed.extrinsics)
    assert open_c > 0.05 and open_a > 0.05  # the bend does drift
    assert closed_c < 0.25 * open_c and closed_a < 0.25 * open_a
    assert float(closed.depth_scale[0]) == 1.0 and float(closed.depth_scale[-1]) != 1.0
    assert torch.equal(open_.depth_scale, torch.ones(120, dtype=torch.float64))


def _errors(ext: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """Centre error relative to the circle's diameter (6) and rotation error (rad), no re-fit."""
    c = (camera_centers(ext.double()) - camera_centers(ref.double())).norm(dim=1).max() / 6.0
    return float(c), float(rotation_angle(ext, ref).max())


def test_bad_arguments_and_interrupts():
    w2c = trajectory(20)
    with pytest.raises(ValueError, match="overlap must be"):
        estimate_sequence(FakeAnyView(w2c), frames(20), chunk_size=8, overlap=8)
    with pytest.raises(ValueError, match="empty"):
        estimate_sequence(FakeAnyView(w2c), iter([]), chunk_size=8, overlap=2)
    calls = []

    def stop():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    fake = FakeAnyView(w2c)
    with pytest.raises(KeyboardInterrupt):
        estimate_sequence(fake, frames(20), chunk_size=8, overlap=2, check_interrupt=stop)
    assert len(fake.calls) == 2  # stopped between chunks


MEMORY_SCRIPT = """
import resource, sys
sys.path.insert(0, {tests!r})
import torch
from test_sequence import FakeAnyView, frames, trajectory
from anydepth.sequence import estimate_sequence
n, keep = int(sys.argv[1]), sys.argv[2] == "keep"
kept = []
sink = (lambda v: kept.append(v)) if keep else (lambda v: None)
estimate_sequence(FakeAnyView(trajectory(n)), frames(n, (240, 320)), chunk_size=16, overlap=4, on_view=sink)
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child forked from a large pytest process would report the
# parent's peak (seen in the full suite: three equal 2.2 GB figures); VmHWM belongs to this process's own memory
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))  # kB
"""


def _peak_kib(n: int, keep: bool = False) -> int:
    script = MEMORY_SCRIPT.format(tests=str(Path(__file__).parent))
    # buffers of 64 KiB and more are mmap'ed and go back to the system when freed: the peak RSS then measures live
    # memory, not the heap fragmentation glibc leaves behind (which varies by ±15 MB from run to run)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", script, str(n), "keep" if keep else "drop"], capture_output=True,
                         text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc/self/status (Linux)")
def test_peak_memory_does_not_grow_with_the_number_of_views():
    """Measured peak RSS of a fresh process: 60 and 240 views of 240×320 in chunks of 16. A view kept costs about
    0.6 MB (depth and confidence at 240×320), so keeping every view of 240 adds about 150 MB, and a leak of the 180
    extra views over 60 about 110 MB. The check: growth from 60 to 240 views under 10 MB (measured: < 1 MB); the control (a sink that
    keeps every view) grows by more than 100 MB, so the measurement does see such growth."""
    small, large = _peak_kib(60), _peak_kib(240)
    assert large - small < 10 * 1024, (small, large)
    leaky = _peak_kib(240, keep=True)
    assert leaky - large > 100 * 1024, (large, leaky)


def test_frame_sources(tmp_path):
    from PIL import Image

    for i in (10, 2, 1, 33):
        Image.fromarray(np.full((6, 8, 3), i, np.uint8)).save(tmp_path / f"frame{i}.png")
    paths, it = folder_frames(tmp_path)
    assert [p.name for p in paths] == ["frame1.png", "frame2.png", "frame10.png", "frame33.png"]
    first = next(it)
    assert first.shape == (6, 8, 3) and float(first[0, 0, 0]) == pytest.approx(1 / 255)
    paths, _ = folder_frames(tmp_path, step=2)
    assert [p.name for p in paths] == ["frame1.png", "frame10.png"]
    assert frame_step(30, 2) == 15 and natural_key("a10") > natural_key("a9")

    video = write_video(tmp_path / "clip.mp4", [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(20)])  # 2 s
    count, it = video_frames(video, fps=2.5)
    got = list(it)
    assert count == len(got) == 5 and got[0].shape == (16, 16, 3)  # t = 0, 0.4, 0.8, 1.2, 1.6
    levels = [round(float(g.mean()) * 255 / 10) for g in got]
    assert levels == [0, 4, 8, 12, 16]
    assert len(list(video_frames(video)[1])) == 20
    with pytest.raises(ValueError, match="cannot open the video"):
        video_frames(tmp_path / "missing.mp4")


# --------------------------------------------------------------------------------------------- a real network


@pytest.fixture(scope="module")
def tiny_da3(tmp_path_factory):
    from tiny_da3 import TINY_FILE, official_tiny, save_official

    return save_official(official_tiny(TINY_FILE, seed=3), tmp_path_factory.mktemp("da3") / "tiny")


def test_cli_sequence_of_a_video_with_a_real_network(tiny_da3, tmp_path):
    """`anydepth sequence` on a 2 s clip with the tiny DA3 network: chunk 0 is the network's own answer, every view
    gets depth and a camera, and the folder is what `anydepth mesh` reads."""
    from anydepth.anyview import AnyViewEstimator
    from anydepth.cli import main
    from anydepth.export import load_depth
    from anydepth.scene import read_scene_folder

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (3, 4, 3), dtype=np.uint8)
    from PIL import Image

    picture = Image.fromarray(base).resize((96, 64), Image.BICUBIC)
    video = write_video(tmp_path / "walk.mp4", [np.asarray(picture.rotate(2 * i)) for i in range(20)])
    out = tmp_path / "out"
    rc = main(["sequence", str(video), "--out", str(out), "--model", str(tiny_da3), "--dtype", "fp32", "--device", "cpu",
               "--process-res", "56", "--chunk-size", "8", "--overlap", "3", "--fps", "5", "--colmap", "--points", "500"])
    assert rc == 0
    files = read_scene_folder(out)
    assert files.names == [f"frame_{i:06d}.png" for i in range(10)] and len(files.depth) == 10
    assert (out / "colmap" / "images.txt").is_file() and (out / "points.ply").is_file()
    assert load_depth(out / "frame_000000_depth.npy").kind == "depth"
    # chunk 0 (views 0..7) is exactly the network's answer for those frames
    frames = torch.stack([torch.from_numpy(np.asarray(Image.open(out / "images" / n), dtype=np.float32) / 255)
                          for n in files.names[:8]])
    ref = AnyViewEstimator(str(tiny_da3), dtype="fp32", device="cpu", process_res=56).estimate(frames)
    torch.testing.assert_close(files.extrinsics[:8].float(), ref.extrinsics, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(files.depth[0], ref.depth[0], atol=1e-5, rtol=1e-5)
    assert main(["mesh", str(out), "--out", str(tmp_path / "mesh"), "--format", "ply"]) == 0
