"""Any image shape in bounded memory and time: the token budget, the memory check and interrupts.

The reference resize makes the shorter side 518, so a 3000×2 strip would be a 777,000×518 network input
(two million tokens: tens of GiB and minutes of work). The estimators cap the tokens of one input
(``max_tokens``, default four 518² squares), refuse on the CPU what cannot fit the host memory, and check
for an interrupt between batches, tiles, chunks of views and network blocks.

Sizes in test ids and messages are width×height; tensors are (height, width).
Bounds stated below are for 2 CPU cores (the CI runner); measured figures are in the comments.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import AnyViewEstimator, DepthEstimator
from anydepth import memory as memory_module
from anydepth.anyview import da3_network_size, da3_processed_size
from anydepth.memory import InsufficientMemoryError, MemoryPolicy, estimate_activation_bytes, fit_batch
from anydepth.preprocess import capped_size, default_max_tokens, network_size, token_count
from anydepth.profiling import track_peak_memory
from standin import PointwiseDepth

STRIPS = [(2, 3000), (1, 2000), (60, 4000), (5000, 40)]  # (height, width): the shapes that hung the host
STRIP_IDS = [f"{w}x{h}" for h, w in STRIPS]
BUDGET = default_max_tokens(518)
WARNING = "over the token budget"

API_SECONDS = 30  # per strip, tiny model at input_size 518 (measured 1.6-2.6 s)
API_PEAK_BYTES = 2**30  # torch CPU tensor memory per strip (measured 113-411 MiB); uncapped it would be 3.7-84 GiB
CLI_SECONDS = 180  # the whole CLI run, interpreter start included (measured 8 s for the four strips)
CLI_ADDRESS_SPACE = 6 * 2**30  # RLIMIT_AS of the CLI subprocess (torch imports in about 1.2 GiB of it)
CLI_PEAK_RSS = 3 * 2**30  # its peak resident memory (measured 0.76 GiB for the four strips)


# ------------------------------------------------------------------------------------------------ the size rule


@pytest.mark.parametrize("hw, expected", [((480, 640), (518, 686)), ((1080, 1920), (518, 924)), ((518, 518), (518, 518)),
                                          ((640, 480), (686, 518)), ((333, 517), (518, 798)), ((1, 1), (518, 518)),
                                          ((100, 400), (518, 2072))])
def test_ordinary_sizes_keep_the_reference_size(hw, expected):
    """Aspect ratios up to 4:1 are what the reference rule gives (518×2072 is exactly the budget)."""
    assert network_size(*hw, max_tokens=BUDGET) == network_size(*hw) == expected


def test_the_default_budget_is_four_input_size_squares():
    assert BUDGET == 4 * 37 * 37 == 5476
    assert default_max_tokens(280) == 4 * 20 * 20


@pytest.mark.parametrize("hw", [*STRIPS, (100, 1000), (1000, 8000), (3, 100000), (1, 10**6), (4000, 1), (517, 2200)])
@pytest.mark.parametrize("budget", [BUDGET, 1000, 37 * 37, 1])
def test_capped_sizes_are_within_the_budget_and_multiples_of_14(hw, budget):
    size = network_size(*hw, max_tokens=budget)
    reference = network_size(*hw)
    assert all(s % 14 == 0 and s >= 14 for s in size)
    assert token_count(size) <= budget
    if token_count(reference) > budget:
        assert size == capped_size(*hw, budget)
        (short, long), aspect = sorted(size), max(hw) / min(hw)
        across = short // 14
        assert size[0] <= size[1] if hw[0] < hw[1] else size[0] >= size[1]  # the long side stays the long side
        if aspect <= budget:  # the aspect ratio is kept to within one patch along the long side
            assert abs(long / short - aspect) <= 1 / across + 1e-9
        else:  # more elongated than the budget: one patch across, the whole budget along
            assert size == ((14, 14 * budget) if hw[0] < hw[1] else (14 * budget, 14))
        assert (across + 1) ** 2 * aspect > budget  # the largest such size: one more patch across would not fit


def test_capped_size_of_the_strips():
    assert [network_size(*hw, max_tokens=BUDGET) for hw in STRIPS] == [(14, 21000), (14, 28000), (126, 8400), (10500, 84)]


@pytest.mark.parametrize("bad", [-1, 1.5, True, "many"])
def test_bad_max_tokens_says_what_to_pass(bad):
    with pytest.raises(ValueError, match="max_tokens must be None .* 0 \\(no cap\\)"):
        DepthEstimator(PointwiseDepth(), max_tokens=bad)
    with pytest.raises(ValueError, match="max_tokens"):
        AnyViewEstimator(_tiny_da3(), max_tokens=bad)


def test_da3_upper_bound_never_reaches_the_budget_and_lower_bound_is_capped():
    for hw in [*STRIPS, (480, 640)]:
        assert da3_network_size(*hw, 504, max_tokens=default_max_tokens(504)) == da3_processed_size(*hw, 504)[1]
    assert da3_network_size(480, 640, 504, "lower_bound_resize", default_max_tokens(504)) == (504, 672)
    size = da3_network_size(2, 3000, 504, "lower_bound_resize", default_max_tokens(504))
    assert size == (14, 21000) and token_count(size) <= default_max_tokens(504)


def test_estimator_keeps_ordinary_sizes_and_warns_only_when_capping(caplog):
    est = DepthEstimator(PointwiseDepth(), dtype="fp32", device="cpu")
    with caplog.at_level("WARNING"):
        r = est.estimate([torch.rand(1, 3, 48, 64), torch.rand(1, 3, 108, 192)])
    assert r.processed_size == [(518, 686), (518, 924)] and WARNING not in caplog.text
    small = DepthEstimator(PointwiseDepth(), dtype="fp32", device="cpu", input_size=28)  # budget 4 × 2 × 2 = 16
    assert small.estimate(torch.rand(1, 3, 2, 300), max_tokens=0).processed_size == [(28, 4200)]  # the reference size
    with caplog.at_level("WARNING"):
        assert small.estimate(torch.rand(1, 3, 2, 300)).processed_size == [(14, 224)]
    assert caplog.text.count(WARNING) == 1 and "300×2 px at 224×14 instead of 4200×28" in caplog.text


# ------------------------------------------------------------------------------------------------ API on the strips


@pytest.fixture(scope="module")
def tiny_v2(tiny_files):
    return DepthEstimator(tiny_files["pth"], dtype="fp32", device="cpu", input_size=518, batch_size=4)


@pytest.mark.parametrize("hw", STRIPS, ids=STRIP_IDS)
def test_api_strip_finishes_in_bounded_time_and_memory(tiny_v2, hw, caplog):
    image = torch.rand(1, *hw, 3)
    start = time.perf_counter()
    with caplog.at_level("WARNING"), track_peak_memory() as peak:
        result = tiny_v2.estimate(image)
    seconds = time.perf_counter() - start
    assert seconds < API_SECONDS
    assert peak.peak_bytes < API_PEAK_BYTES, peak.peak_mib
    assert result.depth.shape == (1, *hw) and torch.isfinite(result.depth).all()
    assert token_count(result.processed_size[0]) <= BUDGET
    warnings = [r for r in caplog.records if WARNING in r.getMessage()]
    assert len(warnings) == 1 and f"{hw[1]}×{hw[0]} px" in warnings[0].getMessage()
    # what the reference size would have needed (far beyond any laptop for the thinnest strips)
    uncapped = estimate_activation_bytes(tiny_v2.model.config, 1, network_size(*hw), torch.float32)
    assert uncapped > 3 * API_PEAK_BYTES


def test_one_warning_per_call_for_all_strips(tiny_v2, caplog):
    with caplog.at_level("WARNING"):
        result = tiny_v2.estimate([torch.rand(1, *hw, 3) for hw in STRIPS])
    assert [tuple(d.shape) for d in result.maps()] == STRIPS
    warnings = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
    assert len(warnings) == 1 and all(f"{w}×{h} px" in warnings[0] for h, w in STRIPS)


def test_uncapped_strip_is_refused_before_allocating(tiny_v2, monkeypatch):
    """With the cap off, the 777,000×518 input would need ~84 GiB: refused at once, with what to change."""
    monkeypatch.setattr(memory_module, "host_available_bytes", lambda: 8 * 2**30)
    start = time.perf_counter()
    with track_peak_memory() as peak, pytest.raises(InsufficientMemoryError) as info:
        tiny_v2.estimate(torch.rand(1, 2, 3000, 3), max_tokens=0)
    message = str(info.value)
    assert "3000×2 px" in message and "777000×518" in message and "max_tokens (--max-tokens)" in message
    assert "8.0 GiB" in message
    assert time.perf_counter() - start < 5 and peak.peak_bytes < 2**24


def test_batch_is_lowered_to_fit_host_memory(monkeypatch):
    """On the CPU the batch is sized from the host's available memory, like from free GPU memory."""
    net = PointwiseDepth()
    est = DepthEstimator(net, dtype="fp32", device="cpu", batch_size=8, input_size=56)
    per_image = estimate_activation_bytes(net.config, 1, (56, 56), torch.float32)
    monkeypatch.setattr(memory_module, "host_available_bytes", lambda: int(3 * per_image / 0.9) + 10)
    est.estimate(torch.rand(7, 3, 56, 56))
    assert [c[0] for c in net.calls] == [3, 3, 1]


def test_fit_batch_rules():
    need = lambda k: 100 * k  # noqa: E731
    assert fit_batch(8, need, None, refuse=True, what="w", advice="a") == 8  # unknown free memory: as asked
    assert fit_batch(8, need, 10_000, refuse=True, what="w", advice="a") == 8
    assert fit_batch(8, need, 350, refuse=True, what="w", advice="a") == 3
    assert fit_batch(8, need, 50, refuse=False, what="w", advice="a") == 1  # GPU: the OOM retry has the last word
    with pytest.raises(InsufficientMemoryError, match="w needs about .* GiB .*; a$"):
        fit_batch(8, need, 50, refuse=True, what="w", advice="a")


def test_host_memory_honours_an_address_space_limit():
    """``ulimit -v`` (RLIMIT_AS) bounds what the process can still map, whatever the machine has."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30)); "
            "from anydepth.memory import host_available_bytes; print(host_available_bytes())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 0 < int(out) < 4 * 2**30


# ------------------------------------------------------------------------------------------------ Depth Anything 3


def _tiny_da3():
    from tiny_da3 import TINY_FILE
    from anydepth.models import create_model

    torch.manual_seed(0)
    return create_model(TINY_FILE).eval()


@pytest.mark.parametrize("hw", STRIPS, ids=STRIP_IDS)
def test_da3_strips_lower_bound_are_capped(hw, caplog):
    est = AnyViewEstimator(_tiny_da3(), dtype="fp32", device="cpu", process_res_method="lower_bound_resize")
    start = time.perf_counter()
    with caplog.at_level("WARNING"):
        res = est.estimate(torch.rand(2, *hw, 3))
    assert time.perf_counter() - start < API_SECONDS
    assert res.depth.shape == res.confidence.shape == (2, *hw) and torch.isfinite(res.depth).all()
    assert token_count(res.processed_size) <= default_max_tokens(504)
    assert sum(WARNING in r.getMessage() for r in caplog.records) == 1


def test_da3_scene_that_cannot_fit_is_refused(monkeypatch):
    monkeypatch.setattr(memory_module, "host_available_bytes", lambda: 2**20)
    est = AnyViewEstimator(_tiny_da3(), dtype="fp32", device="cpu")
    with pytest.raises(InsufficientMemoryError, match=r"3 view\(s\) of 640×480 px .* fewer views.*--max-tokens"):
        est.estimate(torch.rand(3, 480, 640, 3))


def test_da3_chunk_is_lowered_to_fit(monkeypatch):
    net = _tiny_da3()
    size = da3_processed_size(98, 98, 98)[1]
    need = lambda chunk: estimate_activation_bytes(net.config, 4, size, torch.float32, chunk)  # noqa: E731
    monkeypatch.setattr(memory_module, "host_available_bytes", lambda: int(need(2) / 0.9) + 10)
    heads = []
    net.head.register_forward_hook(lambda m, args, out: heads.append(args[0][0].shape[0]))
    AnyViewEstimator(net, dtype="fp32", device="cpu", process_res=98, chunk=8).estimate(torch.rand(4, 98, 98, 3))
    assert heads == [2, 2]


# ------------------------------------------------------------------------------------------------ interrupts


class Cancel(Exception):
    pass


class StopAfter(MemoryPolicy):
    """A CPU policy whose interrupt check raises once ``done()`` says enough work happened."""

    def __init__(self, done) -> None:
        super().__init__("cpu")
        self.done = done
        self.checks = 0

    def check_interrupt(self) -> None:
        self.checks += 1
        if self.done():
            raise Cancel


def test_interrupt_between_tiles_stops_a_tiled_run():
    forwards = []
    net = PointwiseDepth()
    net.register_forward_hook(lambda m, args, out: forwards.append(args[0].shape))
    policy = StopAfter(lambda: len(forwards) >= 3)  # the global pass and two tiles
    est = DepthEstimator(net, dtype="fp32", memory=policy, input_size=70, tile_size=140, batch_size=1)
    with pytest.raises(Cancel):
        est.estimate(torch.rand(1, 3, 420, 560))
    assert len(forwards) == 3 and len(net.calls) == 3  # of 1 + 4 × 5 = 21: stopped at the next check
    assert policy.checks >= 3


def test_interrupt_between_da3_chunks():
    net = _tiny_da3()
    heads = []
    net.head.register_forward_hook(lambda m, args, out: heads.append(1))
    policy = StopAfter(lambda: len(heads) >= 1)
    est = AnyViewEstimator(net, dtype="fp32", memory=policy, process_res=98, chunk=1)
    with pytest.raises(Cancel):
        est.estimate(torch.rand(4, 98, 98, 3))
    assert heads == [1]  # one chunk of four ran its head, then the check between chunks stopped it


def test_interrupt_is_checked_within_one_forward_pass(tiny_v2):
    """Between the network's blocks: a single pass never runs to its end without a check."""
    policy = StopAfter(lambda: False)
    est = DepthEstimator(tiny_v2.model, dtype="fp32", memory=policy, input_size=70, batch_size=1)
    est.estimate(torch.rand(1, 3, 70, 70))
    assert policy.checks >= len(est.model.pretrained.blocks) + 1  # the batch, then every block


# ------------------------------------------------------------------------------------------------ command line


def _limited() -> None:  # runs in the child before exec: cap its address space
    resource.setrlimit(resource.RLIMIT_AS, (CLI_ADDRESS_SPACE, CLI_ADDRESS_SPACE))


_RUN_CLI = ("import resource, sys\n"
            "from anydepth.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(rc)\n")


def _cli(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, float, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "ANYDEPTH_MODELS": str(tmp_path / "models"), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN_CLI, *args], capture_output=True, text=True, env=env,
                          preexec_fn=_limited, timeout=CLI_SECONDS * 2)
    seconds = time.perf_counter() - start
    peak = re.search(r"PEAK_RSS_KIB (\d+)", proc.stderr)
    return proc, seconds, int(peak.group(1)) * 1024 if peak else -1


@pytest.fixture(scope="module")
def strip_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("strips")
    rng = np.random.default_rng(0)
    for h, w in STRIPS:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"strip_{w}x{h}.png")
    return folder


def test_cli_estimate_strips_under_a_memory_limit(tmp_path, tiny_files, strip_files):
    out = tmp_path / "out"
    proc, seconds, peak = _cli(["estimate", str(strip_files), "--out", str(out), "--model", str(tiny_files["pth"]),
                                "--dtype", "fp32", "--device", "cpu", "--format", "npy"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert seconds < CLI_SECONDS
    assert 0 < peak < CLI_PEAK_RSS, peak / 2**30
    for h, w in STRIPS:
        [path] = out.rglob(f"strip_{w}x{h}_depth.npy")
        depth = np.load(path)
        assert depth.shape == (h, w) and np.isfinite(depth).all()
    lines = [line for line in proc.stderr.splitlines() if WARNING in line]
    assert len(lines) == 1 and all(f"{w}×{h} px" in lines[0] for h, w in STRIPS)  # one call of 4 images: one line


def test_cli_batch_takes_max_tokens(tmp_path, tiny_files, strip_files):
    out = tmp_path / "out"
    proc, seconds, peak = _cli(["batch", str(strip_files / "strip_3000x2.png"), "--out", str(out), "--model",
                                str(tiny_files["pth"]), "--dtype", "fp32", "--device", "cpu", "--format", "npy",
                                "--max-tokens", "1000"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert np.load(out / "strip_3000x2_depth.npy").shape == (2, 3000)
    assert "over the token budget (1000 patches" in proc.stderr and "at 14000×14 instead of 777000×518" in proc.stderr
    assert seconds < CLI_SECONDS and 0 < peak < CLI_PEAK_RSS


def test_cli_without_cap_is_refused_not_exhausting_memory(tmp_path, tiny_files, strip_files):
    """--max-tokens 0 on a 3000×2 strip: an error naming the size and the option, well inside the memory limit."""
    proc, seconds, peak = _cli(["estimate", str(strip_files / "strip_3000x2.png"), "--out", str(tmp_path / "out"),
                                "--model", str(tiny_files["pth"]), "--dtype", "fp32", "--device", "cpu",
                                "--max-tokens", "0"], tmp_path)
    assert proc.returncode == 1
    assert "3000×2 px" in proc.stderr and "--max-tokens" in proc.stderr and "Traceback" not in proc.stderr
    assert seconds < 60 and 0 < peak < CLI_PEAK_RSS
