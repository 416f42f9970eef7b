"""Where the model lives between and during calls: a small policy interface.

The estimator asks its policy for a device before a call (with an estimate of the memory the call
needs) and hands the model back afterwards. Outside ComfyUI the two policies below cover the usual
cases; the ComfyUI bridge implements the same interface over ``comfy.model_management`` so the host
can evict the depth model for a UNet and load it back.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

try:
    import resource  # Unix only
except ImportError:  # pragma: no cover - Windows
    resource = None

from .models.config import DA3Config, ModelConfig, NestedDA3Config, VideoModelConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        if self.device.type == "cpu":
            return host_available_bytes()
        return None

    def on_oom(self) -> None:
        """Called after an out-of-memory error, before the batch is retried at half size."""
        empty_cache(self.device)

    def check_interrupt(self) -> None:
        """Raise to stop between batches, tiles and network blocks (ComfyUI's cancel button)."""


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


# --------------------------------------------------------------------------------------------
# Out-of-memory retry (both estimators)


def retry_halving_on_oom(run: Callable[[int], T], size: int, policy: MemoryPolicy, *, message: str,
                         unit: str = "items per batch") -> tuple[T, int]:
    """``run(size)``, retried with half the ``size`` after each out-of-memory error.

    Between tries ``policy.on_oom()`` frees what it can. Errors other than out-of-memory pass
    through unchanged.

    Args:
        run: does the work for a given size (batch size, views per chunk, ...).
        size: the size to try first (≥ 1).
        policy: the memory policy of the estimator.
        message: what to tell the user when even size 1 runs out of memory (say what to change).
        unit: what ``size`` counts, for the log line of each retry.

    Returns:
        ``run``'s result and the size that worked (keep it for the next batches).

    Raises:
        torch.OutOfMemoryError: with ``message``, when size 1 runs out of memory too.

    Example:
        >>> def run(n):
        ...     if n > 2:
        ...         raise torch.OutOfMemoryError("CUDA out of memory")
        ...     return n * 10
        >>> retry_halving_on_oom(run, 8, MemoryPolicy("cpu"), message="no memory")
        (20, 2)
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    while True:
        try:
            return run(size), size
        except Exception as e:
            if not is_oom(e):
                raise
            if size == 1:
                raise torch.OutOfMemoryError(message) from e
            del e  # drop the traceback (it holds the failed batch's tensors) before freeing memory
        policy.on_oom()
        size = max(1, size // 2)
        log.warning("out of memory: retrying with %d %s", size, unit)


def run_in_batches(run: Callable[[int, int], T], total: int, batch_size: int, policy: MemoryPolicy, *,
                   message: str, unit: str = "items per batch") -> Iterator[tuple[int, int, T]]:
    """Run ``run(start, size)`` over items ``0 .. total - 1`` in batches, halving the batch on out-of-memory.

    ``run`` handles items ``start .. min(start + size, total) - 1``. ``policy.check_interrupt()`` runs
    before each batch; a halved batch size stays halved for the batches after it. Results come back
    in order, as each batch finishes, so the caller can store them and report progress.

    Args:
        run: ``run(start, size)`` -> the result for that batch.
        total: number of items.
        batch_size: items per batch to try first.
        policy, message, unit: see :func:`retry_halving_on_oom`.

    Yields:
        ``(start, stop, result)`` per batch.

    Example:
        >>> [(a, b) for a, b, _ in run_in_batches(lambda start, size: None, 5, 2, MemoryPolicy("cpu"), message="")]
        [(0, 2), (2, 4), (4, 5)]
    """
    start = 0
    while start < total:
        policy.check_interrupt()
        result, batch_size = retry_halving_on_oom(lambda size: run(start, size), batch_size, policy,
                                                  message=message, unit=unit)
        stop = min(start + batch_size, total)
        yield start, stop, result
        start = stop


def estimate_activation_bytes(config: ModelConfig | DA3Config | NestedDA3Config | VideoModelConfig, batch: int,
                              size: tuple[int, int], dtype: torch.dtype, chunk: int | None = None) -> int:
    """Rough peak activation memory of one forward pass of the network ``config`` describes.

    * V1/V2 (:class:`~anydepth.models.config.ModelConfig`, ``batch`` images; fused attention, so linear
      in tokens): tokens × width × 12 covers the widest ViT intermediates (qkv, MLP hidden); the DPT
      head's last stages hold about three full-resolution maps of ``features`` channels.
    * DA3 (:class:`~anydepth.models.config.DA3Config`, ``batch`` views of one scene): every view's tokens
      stay resident (cross-view attention): the four stored head inputs (2× width each) plus about 12
      working copies of the token width. The head runs ``chunk`` views at a time (all when ``None``):
      the last full-resolution maps (``features / 2 + 32`` channels) plus the fusion pyramid.
      Calibrated on measured peaks (``bench/bench_da3.py`` memory figures), which it slightly overestimates.
    * Nested DA3: its any-view network (the larger of the two).
    * Video Depth Anything (:class:`~anydepth.models.config.VideoModelConfig`, ``batch`` frames decoded
      together, ``chunk`` at a time through the backbone and the full-resolution stages): V2's per-image
      cost for a chunk, plus every frame's taps and low-resolution head maps (what the temporal modules
      mix), plus the temporal modules' bounded working set. The streaming cache is
      :func:`estimate_stream_cache_bytes`.

    Args:
        config: the network's config.
        batch: images (V1/V2), views (DA3) or frames (video) in the pass.
        size: ``(height, width)`` the network sees.
        dtype: the activations' dtype.
        chunk: DA3 and video only, views or frames per pass through the per-view parts.

    Example:
        >>> from anydepth.models import ARCHS, ModelConfig
        >>> estimate_activation_bytes(ModelConfig(ARCHS["vits"], (2, 5, 8, 11)), 1, (518, 518), torch.float16) // 2**20
        110
    """
    if isinstance(config, NestedDA3Config):
        config = config.anyview_config
    if not isinstance(config, (ModelConfig, DA3Config, VideoModelConfig)):
        raise TypeError("estimate_activation_bytes needs a ModelConfig, DA3Config, NestedDA3Config or VideoModelConfig, "
                        f"got {type(config).__name__}")
    a = config.arch
    h, w = size
    tokens = (h // a.patch_size) * (w // a.patch_size) + 1
    elem = torch.finfo(dtype).bits // 8
    if isinstance(config, ModelConfig):
        return batch * elem * (tokens * a.embed_dim * 12 + h * w * a.features * 3)
    if isinstance(config, VideoModelConfig):
        c0, c1, c2, c3 = a.out_channels
        f = a.features
        # per frame of a chunk: the ViT's widest intermediates, the two shallow levels (4× and 2× the token
        # grid), the full-resolution stages
        per_chunk = tokens * (a.embed_dim * 12 + 16 * (c0 + f) + 4 * (c1 + f)) + h * w * f * 3
        # per frame of the window: 4 taps; the deep levels; the 2× decoder path the temporal modules mix
        per_frame = tokens * (4 * a.embed_dim + c2 + c3 + 12 * f)
        # temporal modules: about three copies of the feed-forward hidden layer (8× wide) of the largest
        # module, in groups of at most config.temporal_chunk elements
        widest = 8 * batch * tokens * max(4 * f, c2, c3 // 4) if config.temporal else 0
        frames_at_once = batch if chunk is None else min(chunk, batch)
        return elem * (frames_at_once * per_chunk + batch * per_frame + 3 * min(widest, config.temporal_chunk))
    per_view_tokens = tokens * a.embed_dim * (4 * 2 + 12)
    head_views = batch if chunk is None else min(chunk, batch)
    return elem * (batch * per_view_tokens + head_views * h * w * (a.features + 32))



def estimate_stream_cache_bytes(config: VideoModelConfig, size: tuple[int, int], dtype: torch.dtype,
                                frames: int = 42) -> int:
    """Bytes of the streaming cache of Video Depth Anything: ``frames`` frames' temporal states at ``size``.

    Each frame keeps two states (one per attention) of every temporal module: the third and fourth
    reassembled maps (token grid, half of it rounded up) and the decoder paths at 1× and 2× the grid.
    The official online mode holds 42 frames (frame 0 and the 41 most recent).

    Example:
        >>> from anydepth.models import video_config
        >>> estimate_stream_cache_bytes(video_config("vits"), (518, 518), torch.float16) // 2**20
        134
    """
    gh, gw = size[0] // config.arch.patch_size, size[1] // config.arch.patch_size
    c2, c3, f, _ = config.temporal_widths
    per_frame = 2 * (gh * gw * (c2 + f) + -(-gh // 2) * -(-gw // 2) * c3 + 4 * gh * gw * f)
    return frames * per_frame * (torch.finfo(dtype).bits // 8)

# --------------------------------------------------------------------------------------------
# Refusing work that cannot fit (host RAM is not recoverable like an accelerator's out-of-memory)


class InsufficientMemoryError(MemoryError):
    """Work that would need more host memory than is available, refused before allocating it."""


GIB = 2**30


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _system_available() -> int | None:
    """The system's available memory: psutil when installed, else ``MemAvailable`` of ``/proc/meminfo``."""
    try:
        import psutil
    except ImportError:
        text = _read("/proc/meminfo") or ""
        for line in text.splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        return None
    return int(psutil.virtual_memory().available)


def _cgroup_headroom() -> int | None:
    """What this process's memory cgroup (a container's limit) still allows, page cache counted as free."""
    text = _read("/proc/self/cgroup") or ""
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            files, base = ("memory.max", "memory.current", "inactive_file"), "/sys/fs/cgroup"
        elif "memory" in controllers.split(","):  # cgroup v1
            files, base = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"), "/sys/fs/cgroup/memory"
        else:
            continue
        for folder in (base + path.rstrip("/"), base):  # the process's own cgroup, else the namespace root
            limit, usage = _read(f"{folder}/{files[0]}"), _read(f"{folder}/{files[1]}")
            if limit is None or usage is None:
                continue
            if limit.strip() == "max" or int(limit) >= 2**60:  # no limit set here
                break
            stat = dict(row.split() for row in (_read(f"{folder}/memory.stat") or "").splitlines() if row.count(" ") == 1)
            return int(limit) - int(usage) + int(stat.get(files[2], 0))
    return None


def _address_space_headroom() -> int | None:
    """What ``RLIMIT_AS`` (``ulimit -v``) still allows this process to map, or ``None`` without a limit."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    status = _read(f"/proc/{os.getpid()}/status") or ""
    size = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:")), 0)
    return soft - size


def host_available_bytes() -> int | None:
    """Host RAM this process can still allocate, or ``None`` when nothing is known (not Linux, no psutil).

    The least of: the system's available memory (psutil, else ``/proc/meminfo``), the headroom of the
    process's memory cgroup (a container's limit, which the system figure does not show) and that of
    its address-space limit (``ulimit -v``).

    Example:
        >>> host_available_bytes() is None or host_available_bytes() > 0
        True
    """
    known = [v for v in (_system_available(), _cgroup_headroom(), _address_space_headroom()) if v is not None]
    return max(0, min(known)) if known else None


def fit_batch(requested: int, need: Callable[[int], int], free: int | None, *, refuse: bool, what: str,
              advice: str) -> int:
    """The largest batch up to ``requested`` whose activations fit in 90 % of ``free`` bytes.

    Args:
        requested: the batch asked for (≥ 1): images per batch, views per chunk ...
        need: ``need(k)`` -> estimated activation bytes for a batch of ``k`` (:func:`estimate_activation_bytes`),
            growing with ``k``.
        free: the device's free bytes (:meth:`MemoryPolicy.free_bytes`); ``None``: unknown, ``requested`` is used.
        refuse: raise when even a batch of 1 does not fit (host memory: running out there swaps or kills the
            process instead of raising a recoverable out-of-memory error). Otherwise the batch is 1 and the
            out-of-memory retry has the last word.
        what: the work, for the error (e.g. ``"a 3000×2 px image at network size 777000×518"``).
        advice: what to change, for the error (name the options).

    Raises:
        InsufficientMemoryError: with ``refuse``, when a batch of 1 needs more than 90 % of ``free``.

    Example:
        >>> fit_batch(8, lambda k: 100 * k, 350, refuse=True, what="x", advice="y")
        3
    """
    if free is None:
        return requested
    budget = int(free * 0.9)
    if need(1) > budget:
        if refuse:
            raise InsufficientMemoryError(
                f"{what} needs about {need(1) / GIB:.1f} GiB of activations but only {free / GIB:.1f} GiB of host "
                f"memory is available; {advice}")
        return 1
    lo, hi = 1, requested
    while lo < hi:  # need grows with the batch: bisect for the largest that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid - 1)
    return lo


@contextmanager
def interrupt_checks(model: nn.Module, check: Callable[[], None]) -> Iterator[None]:
    """Call ``check`` before every block of ``model`` while inside: a long forward pass can be stopped.

    A *block* is each element of the model's ``nn.ModuleList``s (transformer blocks, DPT head stages),
    so ``check`` also runs between the chunks of views of a Depth Anything 3 pass. Raise in ``check``
    to stop. Nothing is installed when ``check`` is the do-nothing :meth:`MemoryPolicy.check_interrupt`.

    Example:
        >>> net = nn.Sequential(nn.ModuleList([nn.Identity()]))
        >>> with interrupt_checks(net, lambda: print("checked")):
        ...     _ = net[0][0](torch.zeros(1))
        checked
    """
    if getattr(check, "__func__", None) is MemoryPolicy.check_interrupt:
        yield
        return
    hook = lambda module, args: check()  # noqa: E731 - the hook's signature; it only asks
    handles = [block.register_forward_pre_hook(hook) for blocks in model.modules() if isinstance(blocks, nn.ModuleList)
               for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes the module's parameters take, at their current dtype (what a memory estimate adds to activations).

    Example:
        >>> parameter_bytes(torch.nn.Linear(4, 2))  # 8 weights + 2 biases, float32
        40
    """
    return sum(p.numel() * p.element_size() for p in module.parameters())
