"""Where the model lives between and during calls: a small policy interface.

The estimator asks its policy for a device before a call (with an estimate of the memory the call
needs) and hands the model back afterwards. Outside ComfyUI the two policies below cover the usual
cases; the ComfyUI bridge implements the same interface over ``comfy.model_management`` so the host
can evict the depth model for a UNet and load it back.
"""

from __future__ import annotations

import gc

import torch
from torch import nn


def is_oom(error: BaseException) -> bool:
    """True for an out-of-memory error on any backend (CUDA, MPS, XPU, CPU allocator)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def empty_cache(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


class MemoryPolicy:
    """Interface: override what differs. Default: the model stays where it is."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()

    def acquire(self, model: nn.Module, required_bytes: int) -> torch.device:
        """Make ``model`` ready on the compute device for work needing about ``required_bytes``."""
        model.to(self.device)
        return self.device

    def release(self, model: nn.Module) -> None:
        """Called after every estimate call, also when it failed."""

    def free_bytes(self) -> int | None:
        """Memory available for activations on the compute device, or ``None`` when unknown."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free)
        return None

    def on_oom(self) -> None:
        """Called after an out-of-memory error, before the batch is retried at half size."""
        empty_cache(self.device)

    def check_interrupt(self) -> None:
        """Raise to stop between batches (ComfyUI's cancel button)."""


class KeepOnDevice(MemoryPolicy):
    """Load once, keep the model on the compute device (fastest for repeated calls)."""


class OffloadAfterUse(MemoryPolicy):
    """Move the model to ``offload_device`` (CPU) after each call, freeing the accelerator for others."""

    def __init__(self, device: torch.device | str | None = None, offload_device: torch.device | str = "cpu") -> None:
        super().__init__(device)
        self.offload_device = torch.device(offload_device)

    def release(self, model: nn.Module) -> None:
        model.to(self.offload_device)
        empty_cache(self.device)


POLICIES = {"keep": KeepOnDevice, "offload": OffloadAfterUse}


def make_policy(policy: str | MemoryPolicy, device: torch.device | str | None = None) -> MemoryPolicy:
    if isinstance(policy, MemoryPolicy):
        return policy
    try:
        return POLICIES[policy](device)
    except KeyError:
        raise ValueError(f"unknown memory policy {policy!r}; expected one of {', '.join(POLICIES)} or a MemoryPolicy") from None


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 or AMX).

    There bf16 matmuls run ~3× faster than fp32; the CPU attention kernel does not, so a ViT-S
    forward gains ~1.5× end to end (bench/bench_engine.py).
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"`` picks the fastest dtype that is safe on ``device``.

    CUDA: bf16 where supported (no fp16 overflow risk), else fp16. MPS: fp16. CPU: bf16 with native
    bf16 instructions, else fp32 (emulated bf16 is slower than fp32).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
        return torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, {', '.join(DTYPES)}") from None
