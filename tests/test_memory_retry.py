"""anydepth.memory: the one out-of-memory retry helper and the one activation estimate."""

from __future__ import annotations

import pytest
import torch

from anydepth.memory import MemoryPolicy, estimate_activation_bytes, retry_halving_on_oom, run_in_batches
from anydepth.models.config import ARCHS, DA3_PRESETS, ModelConfig


class _Recording(MemoryPolicy):
    """CPU policy that records its calls (and can stop, like ComfyUI's cancel button)."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__("cpu")
        self.events: list[str] = []
        self.stop_after = stop_after

    def on_oom(self) -> None:
        self.events.append("on_oom")

    def check_interrupt(self) -> None:
        self.events.append("check")
        if self.stop_after is not None and self.events.count("check") > self.stop_after:
            raise InterruptedError("cancelled")


def _fails_above(limit: int, tried: list[int], error=torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")):
    def run(size: int) -> int:
        tried.append(size)
        if size > limit:
            raise error
        return size * 10
    return run


# ------------------------------------------------------------------------------------------------ retry_halving_on_oom


def test_halves_until_it_fits_and_frees_memory_between_tries():
    tried, policy = [], _Recording()
    assert retry_halving_on_oom(_fails_above(2, tried), 9, policy, message="m") == (20, 2)
    assert tried == [9, 4, 2]
    assert policy.events == ["on_oom", "on_oom"]


def test_fits_first_time_without_freeing():
    tried, policy = [], _Recording()
    assert retry_halving_on_oom(_fails_above(8, tried), 8, policy, message="m") == (80, 8)
    assert tried == [8] and policy.events == []


def test_a_runtime_error_saying_out_of_memory_counts_too():
    tried = []
    run = _fails_above(1, tried, RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert retry_halving_on_oom(run, 4, _Recording(), message="m") == (10, 1)
    assert tried == [4, 2, 1]


def test_other_errors_pass_through_untouched():
    tried, policy = [], _Recording()
    with pytest.raises(ValueError, match="bad input"):
        retry_halving_on_oom(_fails_above(0, tried, ValueError("bad input")), 8, policy, message="m")
    assert tried == [8] and policy.events == []


def test_size_one_out_of_memory_raises_the_callers_message():
    tried, policy = [], _Recording()
    with pytest.raises(torch.OutOfMemoryError, match="even with batch size 1; lower input_size") as info:
        retry_halving_on_oom(_fails_above(0, tried), 4, policy, message="out of memory even with batch size 1; lower input_size")
    assert tried == [4, 2, 1]
    assert policy.events == ["on_oom", "on_oom"]  # nothing to free after the last try: it raises at once
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)  # the original error is kept


@pytest.mark.parametrize("size", [0, -1, 2.0, None])
def test_rejects_a_size_that_is_not_a_positive_integer(size):
    with pytest.raises(ValueError, match="positive integer"):
        retry_halving_on_oom(lambda n: n, size, _Recording(), message="m")


# ------------------------------------------------------------------------------------------------ run_in_batches


def test_batches_cover_every_item_once_in_order_and_stay_halved():
    tried = []

    def run(start: int, size: int) -> list[int]:
        items = list(range(start, min(start + size, 5)))
        tried.append(len(items))
        if len(items) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return items

    policy = _Recording()
    batches = list(run_in_batches(run, 5, 8, policy, message="m"))
    assert [(a, b) for a, b, _ in batches] == [(0, 2), (2, 4), (4, 5)]
    assert [r for _, _, r in batches] == [[0, 1], [2, 3], [4]]
    assert tried == [5, 4, 2, 2, 1]  # 8 (5 items) and 4 fail once; later batches keep the size that fitted
    assert policy.events == ["check", "on_oom", "on_oom", "check", "check"]


def test_interrupt_is_checked_before_each_batch():
    done = []
    policy = _Recording(stop_after=2)
    with pytest.raises(InterruptedError):
        for start, stop, _ in run_in_batches(lambda start, size: None, 10, 3, policy, message="m"):
            done.append((start, stop))
    assert done == [(0, 3), (3, 6)]


def test_no_items_runs_nothing():
    assert list(run_in_batches(lambda start, size: pytest.fail("ran"), 0, 4, _Recording(), message="m")) == []


def test_batch_one_out_of_memory_stops_the_run():
    def run(start: int, size: int):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError, match="one image is too big"):
        list(run_in_batches(run, 3, 2, _Recording(), message="one image is too big"))


# ------------------------------------------------------------------------------------------------ estimate_activation_bytes


def test_v2_estimate_known_value():
    cfg = ModelConfig(ARCHS["vits"], (2, 5, 8, 11))
    tokens = 37 * 37 + 1
    expected = 4 * (tokens * 384 * 12 + 518 * 518 * 64 * 3)
    assert estimate_activation_bytes(cfg, 1, (518, 518), torch.float32) == expected
    assert estimate_activation_bytes(cfg, 3, (518, 518), torch.float16) == 3 * expected // 2


def test_da3_estimate_known_value_and_chunking():
    cfg = DA3_PRESETS["da3-small"]
    tokens = 27 * 36 + 1
    per_view = tokens * 384 * 20
    head = 378 * 504 * (64 + 32)
    assert estimate_activation_bytes(cfg, 4, (378, 504), torch.float32, chunk=None) == 4 * (4 * per_view + 4 * head)
    assert estimate_activation_bytes(cfg, 4, (378, 504), torch.float32, chunk=1) == 4 * (4 * per_view + head)


def test_nested_estimate_is_its_anyview_network():
    nested = DA3_PRESETS["da3nested-giant-large"]
    assert (estimate_activation_bytes(nested, 2, (280, 504), torch.bfloat16, chunk=8)
            == estimate_activation_bytes(nested.anyview_config, 2, (280, 504), torch.bfloat16, chunk=8))


def test_estimate_names_an_unknown_config():
    with pytest.raises(TypeError, match="ModelConfig, DA3Config, NestedDA3Config or VideoModelConfig, got ArchConfig"):
        estimate_activation_bytes(ARCHS["vits"], 1, (518, 518), torch.float32)
