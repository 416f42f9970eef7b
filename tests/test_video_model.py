"""Video Depth Anything: the network, the official offline windows and online streaming, bounded memory.

The official code is not on PyPI, so its rules are checked step by step against known answers (window
frames, fit, blend, padding, input size), the network against the V2 path, and the whole offline run
against a plain list-based re-statement of the official algorithm (:func:`official_offline`). The
same comparisons against the official code itself (random weights, fp32) are in bench/bench_video_model.py.
"""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anydepth.memory import MemoryPolicy
from anydepth.models import DepthAnything, ModelConfig, VideoDepthAnything, create_model, video_config
from anydepth.models.dpt import DPTHead
from anydepth.preprocess import network_size, prepare_batch, resize_depth
from anydepth.video_model import (BLEND, KEY_SLOTS, WINDOW, VideoDepthEstimator, VideoDepthStream, WindowAligner,
                                  blend_weights, fit_window_scale_shift, iter_frames, padded_length, stream_context_frames,
                                  video_input_size, window_frames, window_starts)
from tiny_vda import MODULE_KEYS, TINY_VDA, temporal_widths, v2_state_dict, vda_config, vda_state_dict, write_vda

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 28  # input size of the tiny tests: 2 × 3 patches for 28 × 42 frames


@pytest.fixture(scope="module")
def vda() -> VideoDepthAnything:
    net = create_model(vda_config())
    net.load_state_dict(vda_state_dict(), strict=True)
    return net


@pytest.fixture(scope="module")
def vda64() -> VideoDepthAnything:
    """The tiny model in float64 for whole runs: its 1-channel GroupNorm groups over 2 × 3 pixels amplify
    float32 rounding ~100×, which would hide what the comparisons look for."""
    net = create_model(vda_config(), dtype=torch.float64)
    net.load_state_dict(vda_state_dict(), strict=True)
    return net


@pytest.fixture(scope="module")
def v2() -> DepthAnything:
    cfg = vda_config()
    net = create_model(ModelConfig(cfg.arch, cfg.layers))
    net.load_state_dict(v2_state_dict(), strict=True)
    return net


def clip(n: int, h: int = 28, w: int = 42, seed: int = 0) -> np.ndarray:
    """``[n, h, w, 3]`` uint8: a drifting pattern plus noise, so frames differ but relate."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    frames = [127 + 100 * np.sin((xx + 2 * t) / 5.0) * np.cos(yy / 4.0 + t / 7.0) for t in range(n)]
    return np.stack([np.repeat(f[..., None], 3, -1) + rng.integers(0, 20, (h, w, 3)) for f in frames]).clip(0, 255).astype(np.uint8)


def interrupt_on(n: int) -> MemoryPolicy:
    """A CPU policy whose ``check_interrupt`` raises InterruptedError at its ``n``-th call (ComfyUI's cancel)."""
    policy, calls = MemoryPolicy("cpu"), []

    def check() -> None:
        calls.append(None)
        if len(calls) == n:
            raise InterruptedError

    policy.check_interrupt = check
    return policy


def estimator(net, **kw) -> VideoDepthEstimator:
    return VideoDepthEstimator(net, **{"dtype": torch.float64, "input_size": SIZE, "device": "cpu", **kw})


# ------------------------------------------------------------------------------------------------ the rules


def test_window_frames_of_a_50_frame_clip():
    assert padded_length(50) == 76 and list(window_starts(50)) == [0, 22, 44]
    assert window_frames(0, 50) == list(range(32))
    # the previous window's key slots 0, 12, 24..31, then 22 new frames; past frame 49: padding with frame 49
    assert window_frames(22, 50) == [0, 12, *range(24, 50), 49, 49, 49, 49]
    assert window_frames(44, 50) == [0, 34, 46, 47, 48, 49] + [49] * 26
    assert all(len(window_frames(s, 50)) == WINDOW for s in window_starts(50))
    with pytest.raises(ValueError, match="multiples of 22"):
        window_frames(10, 50)


def test_padding_fills_whole_windows():
    # n + (22 - n % 22) % 22 + 10: the last window (start 22 · ceil(n / 22) - 22) ends at the padded end
    assert [padded_length(n) for n in (1, 21, 22, 23, 44, 45)] == [32, 32, 32, 54, 54, 76]
    for n in (1, 22, 23, 50):
        assert window_starts(n)[-1] + WINDOW == padded_length(n)
    assert window_frames(0, 1) == [0] * 32
    with pytest.raises(ValueError, match="at least one frame"):
        padded_length(0)


def test_fit_recovers_a_known_scale_and_shift():
    pred = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(0))
    scale, shift = fit_window_scale_shift(pred, 2.5 * pred - 0.3)
    assert scale == pytest.approx(2.5, abs=1e-5) and shift == pytest.approx(-0.3, abs=1e-5)
    noisy = 2.5 * pred - 0.3 + 0.05 * torch.randn(2, 9, 11, generator=torch.Generator().manual_seed(1))
    a = np.stack([pred.flatten().double().numpy(), np.ones(pred.numel())], 1)
    expected = np.linalg.lstsq(a, noisy.flatten().double().numpy(), rcond=None)[0]
    assert fit_window_scale_shift(pred, noisy) == pytest.approx(tuple(expected), abs=1e-5)
    # a flat prediction has no fit: identity, as the official zero-determinant branch
    assert fit_window_scale_shift(torch.full((2, 3, 3), 0.7), pred[:, :3, :3]) == (1.0, 0.0)


def test_blend_weights_ramp_from_old_to_new():
    torch.testing.assert_close(blend_weights(), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]) / 7.0)
    assert BLEND == 8 and KEY_SLOTS[:2] == (0, 12)


def test_wide_frames_get_a_smaller_input_size():
    assert video_input_size(1080, 1920) == 518  # 16:9 is not "wide"
    assert video_input_size(1080, 2560) == video_input_size(2560, 1080) == 392  # int(518·1.777/2.37)=388 -> 28·14
    assert video_input_size(480, 1920) == 224  # ratio 4: int(230.1) = 230 -> round(16.4) · 14
    assert video_input_size(10, 4000, 518) == 14  # never below one patch
    assert network_size(1080, 2560, video_input_size(1080, 2560)) == (392, 924)


def test_stream_context_is_frame_0_frame_k_minus_41_and_the_29_latest():
    assert stream_context_frames(100) == [0, 59, *range(71, 100)]
    assert stream_context_frames(1) == [0] * 31  # the cache starts as copies of frame 0
    assert stream_context_frames(5) == [0] * 27 + [1, 2, 3, 4]
    assert stream_context_frames(42) == [0, 1, *range(13, 42)]


def test_aligner_fits_blends_and_clamps_on_known_arrays():
    """Window 1's first two slots are (refs - 1) / 2, so its scale and shift are 2 and 1."""
    g = torch.Generator().manual_seed(0)
    w0 = torch.rand(WINDOW, 4, 5, generator=g) + 0.5
    w1 = torch.rand(WINDOW, 4, 5, generator=g) - 0.6  # some values map below 0: clamped
    w1[0], w1[1] = (w0[0] - 1) / 2, (w0[12] - 1) / 2
    aligner = WindowAligner((4, 5))
    first = list(aligner.push(w0, last=False))
    assert len(first) == WINDOW - BLEND and all(torch.equal(a, b) for a, b in zip(first, w0))
    second = list(aligner.push(w1, last=True))
    assert aligner.scales[1] == pytest.approx((2.0, 1.0), abs=1e-5)
    new = (w1 * 2 + 1).clamp(min=0)
    weights = torch.arange(8) / 7.0
    blended = [w0[24 + j] * (1 - weights[j]) + new[2 + j] * weights[j] for j in range(8)]
    expected = blended + list(new[10:])
    assert len(second) == len(expected) == 30
    for got, want in zip(second, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert min(float(f.min()) for f in second) == 0.0


def test_metric_windows_are_not_rescaled():
    g = torch.Generator().manual_seed(0)
    aligner = WindowAligner((3, 3), fit=False)
    list(aligner.push(torch.rand(WINDOW, 3, 3, generator=g), last=False))
    out = list(aligner.push(5 + torch.rand(WINDOW, 3, 3, generator=g), last=True))
    assert aligner.scales == [(1.0, 0.0), (1.0, 0.0)] and float(out[-1].min()) >= 5.0


# ------------------------------------------------------------------------------------------------ the network


def test_published_key_counts_and_names():
    # REFERENCE §9: 351 tensors for vits / vitb, 519 for vitl
    assert [len(create_model(video_config(e), device="meta").state_dict()) for e in ("vits", "vitb", "vitl")] == [351, 351, 519]
    keys = create_model(video_config("vits"), device="meta").state_dict().keys()
    assert {k.split(".temporal_transformer.")[1] for k in keys if "motion_modules.0." in k} == set(MODULE_KEYS)
    assert {k.split(".")[0] for k in keys} == {"pretrained", "head"}


def test_tiny_vda_state_dict_loads_strictly(tmp_path):
    sd = vda_state_dict()
    for suffix in (".pth", ".safetensors"):
        path = write_vda(sd, tmp_path / f"video_depth_anything_tiny{suffix}")
        loaded = torch.load(path, weights_only=True) if suffix == ".pth" else load_file(path)
        net = create_model(vda_config(), device="meta")
        result = net.load_state_dict(loaded, strict=True, assign=True)
        assert not result.missing_keys and not result.unexpected_keys
    widths = [net.head.motion_modules[i].temporal_transformer.proj_in.in_features for i in range(4)]
    assert tuple(widths) == temporal_widths()
    torch.testing.assert_close(net.head.motion_modules[2].temporal_transformer.transformer_blocks[0]
                               .attention_blocks[1].pos_encoder.pe, sd["head.motion_modules.2.temporal_transformer."
                                                                       "transformer_blocks.0.attention_blocks.1.pos_encoder.pe"])


def test_temporal_modules_off_give_v2s_numbers(vda, v2):
    x = torch.randn(2, 5, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = v2(x.flatten(0, 1)).unflatten(0, (2, 5))
        off = vda(x, temporal=False)
        on = vda(x)
    torch.testing.assert_close(off, ref, atol=1e-5, rtol=1e-5)
    assert float((on - ref).abs().max()) > 0.05 * float(ref.max() - ref.min())  # the modules are live


def test_zero_output_linears_are_exactly_v2(v2):
    net = create_model(vda_config())
    net.load_state_dict(vda_state_dict(zero_out=True), strict=True)
    x = torch.randn(1, 4, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(net(x)[0], v2(x[0]), atol=1e-5, rtol=1e-5)


def test_v2_config_builds_without_temporal_modules(v2):
    net = create_model(dataclasses.replace(vda_config(), temporal=False))
    sd = {k: v for k, v in vda_state_dict().items() if "motion_modules" not in k}
    net.load_state_dict(sd, strict=True)
    x = torch.randn(1, 3, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(net(x)[0], v2(x[0]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="temporal modules"):
        VideoDepthStream(net, device="cpu", dtype=torch.float32)


def test_sdpa_and_explicit_attention_agree(vda, monkeypatch):
    x = torch.randn(1, 6, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        fused = vda(x)
        for m in vda.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        try:
            explicit = vda(x)
        finally:
            for m in vda.modules():
                if hasattr(m, "fused_attn"):
                    m.fused_attn = True
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_dpt_chunked_fine_stages_are_the_same_numbers():
    head = DPTHead(64, 32, (8, 16, 32, 32))
    feats = [torch.randn(5, 64, 3, 4, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.inference_mode():
        torch.testing.assert_close(head(feats, chunk=2), head(feats), atol=1e-6, rtol=1e-6)


def test_streaming_first_frame_equals_a_one_frame_clip(vda):
    frames = clip(1)
    x = prepare_batch(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, (28, 42), (0.485, 0.456, 0.406),
                      (0.229, 0.224, 0.225))
    stream = VideoDepthStream(vda, device="cpu", dtype=torch.float32, input_size=SIZE)
    with torch.inference_mode():
        torch.testing.assert_close(stream.push(frames[0]), vda(x[:1, None])[0, 0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ offline runs


def official_offline(net: VideoDepthAnything, frames: np.ndarray, metric: bool = False) -> np.ndarray:
    """The official ``infer_video_depth`` restated plainly: pad, every window's input, all depth kept, then align."""
    n, h, w = frames.shape[:3]
    keyframes = [0, 12, 24, 25, 26, 27, 28, 29, 30, 31]
    frames = np.concatenate([frames, np.repeat(frames[-1:], (22 - n % 22) % 22 + 10, 0)])
    x = prepare_batch(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255,
                      network_size(h, w, video_input_size(h, w, SIZE)), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                      dtype=torch.float64)
    depth, previous = [], None
    for start in range(0, n, 22):
        window = x[start:start + 32].clone()
        if previous is not None:
            window[:10] = previous[keyframes]
        with torch.inference_mode():
            depth += list(resize_depth(net(window[None])[0], (h, w)).numpy())
        previous = window
    aligned, refs = depth[:32], [depth[0], depth[12]]
    for start in range(32, len(depth), 32):
        cur = depth[start:start + 32]
        scale, shift = 1.0, 0.0
        if not metric:
            p, t = np.concatenate(cur[:2]).astype(np.float64), np.concatenate(refs).astype(np.float64)
            a00, a01, a11, b0, b1 = (p * p).sum(), p.sum(), p.size, (p * t).sum(), t.sum()
            det = a00 * a11 - a01 * a01
            scale, shift = ((a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det) if det else (1.0, 0.0)
        fixed = [np.clip(d * scale + shift, 0, None) for d in cur]
        aligned[-8:] = [aligned[-8 + j] * (1 - j / 7) + fixed[2 + j] * (j / 7) for j in range(8)]
        aligned += fixed[10:]
        refs = [refs[0], fixed[12]]
    return np.stack(aligned[:n])


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest per-frame error over that frame's range."""
    return max(float(np.abs(g - r).max() / (r.max() - r.min())) for g, r in zip(got, ref))


@pytest.mark.parametrize(("n", "metric"), [(50, False), (23, True), (1, False)])
def test_offline_equals_the_official_algorithm(vda64, n, metric):
    net = vda64
    if metric:
        net = create_model(vda_config(metric=True), dtype=torch.float64)
        net.load_state_dict(vda_state_dict(), strict=True)
    frames = clip(n, 28, 42)
    got = estimator(net, batch_size=5).estimate(frames)
    assert got.depth.shape == (n, 28, 42) and got.kind == ("metric_depth" if metric else "disparity")
    assert rel_err(got.depth.numpy(), official_offline(net, frames, metric)) < 1e-5  # float32 output


def test_frames_stream_in_as_any_iterable(vda64):
    frames = clip(30)
    ref = estimator(vda64).estimate(frames).depth
    as_list = estimator(vda64).estimate(list(frames)).depth
    as_generator = estimator(vda64).estimate(f for f in frames).depth
    as_batches = estimator(vda64).estimate(iter([torch.from_numpy(frames[:7]), torch.from_numpy(frames[7:])])).depth
    for other in (as_list, as_generator, as_batches):
        torch.testing.assert_close(other, ref, atol=1e-5, rtol=1e-5)


def test_progress_is_reported_per_window_and_interrupts_stop_between_windows(vda64):
    calls = []
    estimator(vda64).estimate(clip(50), callback=lambda done, total: calls.append((done, total)))
    assert calls == [(24, 50), (46, 50), (50, 50)]
    calls.clear()
    estimator(vda64).estimate((f for f in clip(30)), callback=lambda done, total: calls.append((done, total)))
    assert calls == [(24, 0), (30, 0)]  # length unknown in advance

    got = []
    with pytest.raises(InterruptedError):  # before the second window, after window 0's frames came out
        got.extend(estimator(vda64, memory=interrupt_on(2)).iter_depth(clip(50)))
    assert len(got) == 24


def test_out_of_memory_halves_the_frames_per_pass(vda64):
    ref = estimator(vda64, batch_size=8).estimate(clip(30)).depth
    est = estimator(vda64, batch_size=8)
    sizes = []
    encode = vda64.encode

    def failing_encode(x):
        sizes.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(x)

    vda64.encode = failing_encode
    try:
        got = est.estimate(clip(30)).depth
        assert sizes[:3] == [8, 4, 2] and max(sizes[3:]) == 2  # halved, and kept halved for the next window
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        vda64.encode = lambda x: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory"))
        with pytest.raises(torch.OutOfMemoryError, match="even with one frame per pass"):
            est.estimate(clip(3))
    finally:
        del vda64.encode


def test_frames_per_pass_fit_the_free_memory(vda64):
    """As the image estimator: a policy that reports free memory gets fewer frames per pass, not an OOM."""
    from anydepth.memory import estimate_activation_bytes

    policy = MemoryPolicy("cpu")
    fits_two = estimate_activation_bytes(vda64.config, WINDOW, (28, 42), torch.float64, 2)
    policy.free_bytes = lambda: int(fits_two / 0.9) + 1
    sizes = []
    encode = vda64.encode
    vda64.encode = lambda x: (sizes.append(x.shape[0]), encode(x))[1]
    try:
        estimator(vda64, batch_size=8, memory=policy).estimate(clip(20))
    finally:
        del vda64.encode
    assert max(sizes) == 2


def test_bad_clips_get_clear_errors(vda64, v2):
    with pytest.raises(ValueError, match="no frames"):
        estimator(vda64).estimate([])
    with pytest.raises(ValueError, match="frame 2 is 30×42 but the clip started at 28×42"):
        estimator(vda64).estimate([clip(1)[0], clip(1)[0], clip(1, 30, 42)[0]])
    with pytest.raises(ValueError, match="image model"):
        VideoDepthEstimator(v2, device="cpu")
    with pytest.raises(ValueError, match="must be \\[T, H, W, C\\]"):
        list(iter_frames(torch.zeros(3, 4, 5)))
    stream = VideoDepthStream(vda64, device="cpu", dtype=torch.float64, input_size=SIZE)
    stream.push(clip(1)[0])
    with pytest.raises(ValueError, match="frame 1 is 30×42 but the stream started at 28×42"):
        stream.push(clip(1, 30, 42)[0])


# ------------------------------------------------------------------------------------------------ streaming and memory


def test_streaming_state_shapes_and_bounded_cache(vda64):
    stream = VideoDepthStream(vda64, device="cpu", dtype=torch.float64, input_size=SIZE)
    frames = clip(45)
    for k, frame in enumerate(frames):
        depth = stream.push(frame)
        assert depth.shape == (28, 42) and stream.cache_frames == min(k + 1, 42)
    # per temporal module, two states (one per attention) of 42 frames: [pixels of its map, frames, width]
    gh, gw = 2, 3  # 28 × 42 at 14 px per patch
    pixels = [gh * gw, ((gh + 1) // 2) * ((gw + 1) // 2), gh * gw, 4 * gh * gw]
    expected = [(p, 42, c) for p, c in zip(pixels, temporal_widths(TINY_VDA)) for _ in range(2)]
    assert [tuple(s.shape) for s in stream.bank] == expected


def official_streaming(net: VideoDepthAnything, frames: np.ndarray) -> list[torch.Tensor]:
    """The official online cache restated plainly: a list that starts as 32 copies of frame 0's states; each
    frame attends to entries [0:2] + [-29:]; from frame 11 on, entry 1 is dropped after each append."""
    h, w = frames.shape[1:3]
    x = prepare_batch(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255,
                      network_size(h, w, video_input_size(h, w, SIZE)), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                      dtype=torch.float64)
    cache, out = [], []
    for k in range(len(frames)):
        context = None
        if cache:
            picked = cache[0:2] + cache[-29:]
            context = [torch.cat([c[a] for c in picked], dim=1) for a in range(8)]
        with torch.inference_mode():
            result = net.decode(net.encode(x[k:k + 1]), 1, context=context, return_states=True)
        out.append(resize_depth(result.depth, (h, w))[0].float())
        cache = [result.states] * 32 if k == 0 else cache + [result.states]
        if k + 32 > 42:
            del cache[1]
    return out


def test_streaming_equals_the_official_cache_list(vda64):
    frames = clip(50)
    stream = VideoDepthStream(vda64, device="cpu", dtype=torch.float64, input_size=SIZE)
    got = [stream.push(f) for f in frames]
    for k, (a, b) in enumerate(zip(got, official_streaming(vda64, frames))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"frame {k}")
    streamed = estimator(vda64).estimate(frames, streaming=True).depth
    torch.testing.assert_close(streamed, torch.stack(got), atol=1e-5, rtol=1e-5)
    stream.reset()
    torch.testing.assert_close(stream.push(frames[0]), got[0])


def _live_tensor_bytes() -> int:
    """Bytes of every tensor storage alive in this process (each storage once)."""
    gc.collect()
    seen, total = set(), 0
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu":  # type(): no __class__ lookups
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


@pytest.mark.parametrize("streaming", [True, False])
def test_memory_does_not_grow_with_clip_length(vda64, streaming):
    """Frames come from a generator and depth goes to a consumer that keeps only a sum. All live tensors are
    measured after 40, 100 and 160 frames: offline never more than at 40 (a window's worth, whatever its
    phase), streaming exactly the same (the cache of 42 frames)."""
    held = {}

    def frames(n):
        for t in range(n):
            yield clip(1, seed=t)[0]

    checksum = 0.0
    for k, depth in enumerate(estimator(vda64).iter_depth(frames(170), streaming=streaming), start=1):
        checksum += float(depth.sum())
        if k in (40, 100, 160):
            held[k] = _live_tensor_bytes()
    assert max(held[100], held[160]) <= held[40], held
    if streaming:  # the cache is allocated whole at the first frame
        assert held[160] == held[100] == held[40], held
    assert checksum > 0


def test_a_thin_clip_is_capped_by_the_token_budget(tmp_path, caplog):
    """Issue 13 for video: a 2×600 clip runs at a capped size (one warning) and comes back at its own size."""
    from anydepth.video_model import video_network_size

    assert video_network_size(480, 640) == network_size(480, 640)  # ordinary frames: the official size, unchanged
    h, w = video_network_size(2, 3000)
    assert (h, w) == (14, 21000) and (h // 14) * (w // 14) <= 4 * 37 * 37
    est = VideoDepthEstimator(str(write_vda(vda_state_dict(), tmp_path / "video_depth_anything_vits.pth")),
                              dtype="fp32", input_size=70)
    with caplog.at_level("WARNING"):
        result = est.estimate(torch.rand(5, 2, 600, 3))
    assert tuple(result.depth.shape) == (5, 2, 600) and bool(torch.isfinite(result.depth).all())
    assert sum("token budget" in r.getMessage() for r in caplog.records) == 1


def test_max_tokens_caps_offline_and_streaming_alike(vda, caplog, monkeypatch):
    """The estimator's own budget: 48×64 frames at input 56 are 4×5 patches; a budget of 6 runs every frame at 2×3
    patches, offline and streaming (one warning each), and returns depth at the frames' size; bad budgets are refused."""
    from anydepth.video_model import video_network_size

    seen = []
    encode = vda.encode
    monkeypatch.setattr(vda, "encode", lambda x, *a, **k: seen.append(tuple(x.shape[-2:])) or encode(x, *a, **k))
    clip = torch.rand(6, 48, 64, 3)
    assert video_network_size(48, 64, 56) == (56, 70) and video_network_size(48, 64, 56, max_tokens=6) == (28, 42)
    full = VideoDepthEstimator(vda, dtype="fp32", input_size=56).estimate(clip)
    assert set(seen) == {(56, 70)} and full.processed_size[0] == (56, 70)
    capped = VideoDepthEstimator(vda, dtype="fp32", input_size=56, max_tokens=6)
    for streaming in (False, True):
        seen.clear()
        caplog.clear()
        with caplog.at_level("WARNING"):
            got = capped.estimate(clip, streaming=streaming)
        assert set(seen) == {(28, 42)} and got.processed_size[0] == (28, 42)
        assert tuple(got.depth.shape) == (6, 48, 64) and bool(torch.isfinite(got.depth).all())
        assert not torch.allclose(got.depth, full.depth)
        assert sum("token budget" in r.getMessage() for r in caplog.records) == 1
    for bad in (-3, 2.5, True):
        with pytest.raises(ValueError, match="max_tokens"):
            VideoDepthEstimator(vda, dtype="fp32", max_tokens=bad)


def test_streaming_refuses_a_network_input_too_small_for_its_norms(vda):
    """At 28×28 or less the coarsest head stage of one frame is 1×1: a clear error, not a GroupNorm traceback."""
    stream = VideoDepthStream(vda, device="cpu", dtype=torch.float32, input_size=28)
    with pytest.raises(ValueError, match="at least 42 px"):
        stream.push(torch.rand(28, 28, 3))
    assert stream.frames_seen == 0 and stream.frame_size is None
    assert tuple(stream.push(torch.rand(28, 42, 3)).shape) == (28, 42)
