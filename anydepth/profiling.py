"""Measure the peak tensor memory of a block of code, on CUDA or on the CPU.

CUDA has allocator statistics (``torch.cuda.max_memory_allocated``); the CPU allocator has none, and
``tracemalloc`` does not see torch's allocations. On the CPU the peak is computed from the allocator's own
reports: with ``torch.profiler.profile(profile_memory=True)`` every allocation and free made by torch's CPU
allocator is recorded as a ``[memory]`` event with its size (positive) or freed size (negative); the running
sum of those events in time order is the live tensor memory allocated inside the block, and its maximum is
the peak. Memory allocated before the block is not counted (its frees inside the block are not reported
either), so the figure is "extra memory this block needed at its worst". Allocations that bypass torch's
allocator (e.g. oneDNN's private scratch buffers, numpy arrays) are not seen.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

__all__ = ["PeakMemory", "track_peak_memory"]


@dataclass
class PeakMemory:
    """Filled in when the ``with`` block of :func:`track_peak_memory` ends.

    Attributes:
        device: where memory was tracked.
        peak_bytes: largest amount of tensor memory allocated inside the block and alive at one time.
    """

    device: torch.device
    peak_bytes: int = 0

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


@contextlib.contextmanager
def track_peak_memory(device: torch.device | str = "cpu") -> Iterator[PeakMemory]:
    """Context manager measuring the peak of tensor memory allocated inside the block on ``device``.

    CUDA: ``max_memory_allocated`` minus what was allocated when the block started (the peak statistics
    of the device are reset). CPU: the profiler's allocator events (see the module docstring); the block
    runs under ``torch.profiler``, which costs some time per operator.

    Example:
        >>> with track_peak_memory("cpu") as m:
        ...     x = torch.empty(1024, 1024)
        ...     del x
        >>> m.peak_bytes
        4194304
    """
    dev = torch.device(device)
    result = PeakMemory(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        try:
            yield result
        finally:
            torch.cuda.synchronize(dev)
            result.peak_bytes = int(torch.cuda.max_memory_allocated(dev) - base)
        return
    if dev.type != "cpu":
        raise ValueError(f"peak memory can be tracked on cpu or cuda devices, not {dev.type!r}")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield result
    events = sorted(
        ((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
         if e.name() == "[memory]" and _is_cpu(e)),
        key=lambda t: t[0],
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    result.peak_bytes = int(peak)


def _is_cpu(event) -> bool:
    try:
        return event.device_type() == torch._C._autograd.DeviceType.CPU
    except AttributeError:  # older bindings: assume CPU-only profiling
        return True
