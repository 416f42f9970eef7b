"""DepthEstimator over mixed inputs, batching, dtypes, memory policies and out-of-memory fallback."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from PIL import Image

from anydepth.estimator import DepthEstimator, DepthResult
from anydepth import memory
from anydepth.memory import MemoryPolicy, OffloadAfterUse, resolve_dtype
from anydepth.weights import load_model
from conftest import random_rgb


@pytest.fixture(scope="module")
def net(tiny_files):
    return load_model(tiny_files["pth"])


def _est(net, **kw) -> DepthEstimator:
    kw.setdefault("dtype", "fp32")
    kw.setdefault("input_size", 70)
    return DepthEstimator(copy.deepcopy(net), **kw)


def test_mixed_inputs_come_back_at_their_own_size(net):
    images = [
        random_rgb(48, 64),
        Image.new("L", (30, 20), 90),
        Image.new("RGBA", (30, 20), (200, 10, 10, 128)),
        torch.rand(2, 40, 50, 3),
        Image.new("RGB", (1, 1), (255, 255, 255)),
    ]
    r = _est(net, batch_size=2).estimate(images)
    assert isinstance(r, DepthResult) and len(r) == 6
    assert [tuple(d.shape) for d in r.maps()] == [(48, 64), (20, 30), (20, 30), (40, 50), (40, 50), (1, 1)]
    assert r.processed_size == [(70, 98), (70, 112), (70, 112), (70, 84), (70, 84), (70, 70)]
    assert r.kind == "disparity" and r.units == "relative" and r.max_depth is None
    assert all(d.dtype == torch.float32 and torch.isfinite(d).all() for d in r.maps())
    with pytest.raises(ValueError, match="different sizes"):
        r.stacked()


def test_batched_equals_one_by_one_and_order_is_kept(net):
    frames = torch.rand(5, 33, 47, 3, generator=torch.Generator().manual_seed(0))
    est = _est(net, batch_size=3)
    batched = est.estimate(frames).depth
    single = torch.stack([est.estimate(frames[i:i + 1]).depth[0] for i in range(5)])
    assert batched.shape == (5, 33, 47)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # different frames, different depth


def test_matches_the_network_on_a_reference_sized_input(net):
    """At a size that needs no resize the estimator is exactly normalise -> network."""
    x = torch.rand(1, 3, 70, 70)
    mean = torch.tensor(net.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(net.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net((x - mean) / std)
    torch.testing.assert_close(_est(net).estimate(x).depth, expected, atol=1e-5, rtol=0)


def test_progress_callback_reports_every_batch(net):
    calls = []
    _est(net, batch_size=2).estimate(torch.rand(5, 14, 14, 3), callback=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_reduced_precision_stays_close_to_fp32(net, dtype):
    x = torch.rand(2, 3, 98, 126, generator=torch.Generator().manual_seed(3))
    ref = _est(net).estimate(x).depth
    low = _est(net, dtype=dtype).estimate(x).depth
    assert low.dtype == torch.float32
    # Documented bound (README): relative to the depth magnitude, bf16 ≤ 2 %, fp16 ≤ 0.5 %.
    bound = 2e-2 if dtype == "bf16" else 5e-3
    assert float((low - ref).abs().max() / ref.abs().max()) <= bound


@pytest.mark.parametrize("fast_bf16, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cpu_is_bf16_only_with_native_bf16(monkeypatch, fast_bf16, expected):
    monkeypatch.setattr(memory, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert resolve_dtype("auto", torch.device("cpu")) is expected


@pytest.mark.parametrize("bf16_supported, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_dtype_on_accelerators(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert resolve_dtype("auto", torch.device("cuda")) is expected
    assert resolve_dtype("auto", torch.device("mps")) is torch.float16


@pytest.mark.parametrize("flags, expected", [("fpu avx2 avx512_bf16", True), ("fpu amx_bf16 amx_tile", True),
                                             ("fpu avx2 avx512f", False), (None, False)])
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, flags, expected):
    def fake_open(path, *args, **kwargs):
        if flags is None:
            raise OSError("no /proc here")  # not Linux: no native bf16 is assumed
        return io.StringIO(f"processor\t: 0\nflags\t\t: {flags}\n")

    monkeypatch.setattr(memory, "open", fake_open, raising=False)  # the module's `open` shadows the builtin
    assert memory.cpu_has_fast_bf16() is expected


def test_explicit_dtypes_are_kept_and_unknown_ones_refused():
    cpu = torch.device("cpu")
    assert [resolve_dtype(n, cpu) for n in ("fp32", "fp16", "bf16")] == [torch.float32, torch.float16, torch.bfloat16]
    assert resolve_dtype(torch.float64, cpu) is torch.float64
    with pytest.raises(ValueError, match="unknown dtype 'int8'; expected auto, fp32, fp16, bf16"):
        resolve_dtype("int8", cpu)


class _OomOverTwo(torch.nn.Module):
    """Wraps the network and fails like CUDA does when a batch has more than two images."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.sizes = inner, inner.config, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_retries(net):
    est = _est(net, batch_size=8)
    reference = est.estimate(torch.rand(5, 14, 28, 3, generator=torch.Generator().manual_seed(0))).depth
    est.model = _OomOverTwo(est.model)
    got = est.estimate(torch.rand(5, 14, 28, 3, generator=torch.Generator().manual_seed(0))).depth
    assert est.model.sizes == [5, 4, 2, 2, 1]  # 5 and 4 fail, 2 fits and finishes
    torch.testing.assert_close(got, reference)


def test_out_of_memory_at_batch_one_fails_clearly_and_releases(net):
    class AlwaysOom(_OomOverTwo):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory")

    released = []

    class Policy(MemoryPolicy):
        def release(self, model):
            released.append(True)

    est = _est(net, batch_size=2, memory=Policy("cpu"))
    est.model = AlwaysOom(est.model)
    with pytest.raises(torch.OutOfMemoryError, match="even with batch size 1"):
        est.estimate(torch.rand(3, 14, 14, 3))
    assert released == [True]


def test_offload_policy_leaves_parameters_on_the_offload_device(net):
    moves = []

    class Recording(OffloadAfterUse):
        def acquire(self, model, required_bytes):
            moves.append(("acquire", required_bytes))
            return super().acquire(model, required_bytes)

        def release(self, model):
            moves.append(("release", None))
            super().release(model)

    est = _est(net, memory=Recording("cpu", offload_device="meta"))
    est.estimate(torch.rand(1, 14, 14, 3))
    assert [m[0] for m in moves] == ["acquire", "release"]
    assert moves[0][1] > est.weight_bytes  # weights + activations
    assert all(p.device.type == "meta" for p in est.model.parameters())


def test_interrupt_is_honoured_between_batches(net):
    class Cancel(Exception):
        pass

    class Policy(MemoryPolicy):
        calls = 0

        def check_interrupt(self):
            Policy.calls += 1
            if Policy.calls == 2:
                raise Cancel

    with pytest.raises(Cancel):
        _est(net, batch_size=1, memory=Policy("cpu")).estimate(torch.rand(3, 14, 14, 3))


def test_metric_model_returns_metres(tmp_path, tiny_hf):
    from tiny import write_pth

    path = write_pth(tiny_hf, tmp_path / "depth_anything_v2_metric_vkitti_vits.pth")
    r = DepthEstimator(path, dtype="fp32", input_size=70).estimate(torch.rand(1, 20, 20, 3))
    assert r.kind == "metric_depth" and r.units == "metres" and r.max_depth == 80.0
    assert 0 < float(r.depth.min()) and float(r.depth.max()) < 80.0


@pytest.mark.parametrize("kw, match", [({"batch_size": 0}, "batch_size"), ({"input_size": 500}, "multiple of 14"),
                                        ({"memory": "sometimes"}, "memory policy")])
def test_bad_settings_are_rejected(net, kw, match):
    with pytest.raises(ValueError, match=match):
        _est(net, **kw)


def test_empty_batch_is_a_clear_error(net):
    with pytest.raises(ValueError, match="empty"):
        _est(net).estimate([])
