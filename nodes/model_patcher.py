"""The ComfyUI memory bridge: :class:`anydepth.memory.MemoryPolicy` over ``comfy.model_management``.

The depth network is wrapped in a ``comfy.model_patcher.ModelPatcher`` and loaded through
``load_models_gpu`` with an estimate of the activations a batch needs, exactly like a UNet, VAE or
CLIP vision model. ComfyUI therefore owns its placement: it evicts the depth model when a UNet
needs the room and loads it back when depth is estimated again. Nothing here calls ``.to("cuda")``.

How the library's hooks map onto ComfyUI:

===================  ====================================================================
``acquire``          ``load_models_gpu([patcher], memory_required=<activations>, force_full_load=True)``
``free_bytes``       ``get_free_memory(load_device)``: the estimator sizes its batch from it
``on_oom``           ``soft_empty_cache()``; the estimator then halves the batch and retries
``check_interrupt``  ``throw_exception_if_processing_interrupted()`` between batches
``release``          nothing (ComfyUI decides), except after an interrupt or with
                     ``offload_after_use``: then the model is unloaded from the device
===================  ====================================================================

``force_full_load``: the network is plain torch (no ``comfy.ops`` casting layers), so ComfyUI's
partial "lowvram" loading, which leaves some weights on the offload device, cannot run it.
"""

from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.model_patcher
import torch
from torch import nn

from anydepth.memory import DTYPES, MemoryPolicy

log = logging.getLogger(__name__)

DTYPE_CHOICES: tuple[str, ...] = ("auto", *DTYPES)
"""What the dtype dropdown offers: ``auto`` follows ComfyUI's own choice for the device."""


def comfy_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``choice`` on ``device``, following ComfyUI's conventions for ``auto``.

    ``auto`` asks ComfyUI (``should_use_bf16`` / ``should_use_fp16``), so ``--force-fp32``,
    ``--force-fp16`` and the per-GPU rules apply; on the CPU that is fp32.
    """
    if choice == "auto":
        if mm.should_use_bf16(device, prioritize_performance=True):
            return torch.bfloat16
        if mm.should_use_fp16(device, prioritize_performance=True):
            return torch.float16
        return torch.float32
    try:
        return DTYPES[choice]
    except KeyError:
        raise ValueError(f"unknown dtype {choice!r}; expected one of {', '.join(DTYPE_CHOICES)}") from None


class ComfyMemory(MemoryPolicy):
    """A :class:`~anydepth.memory.MemoryPolicy` that lets ComfyUI's model management place the model.

    Args:
        model: the depth network (on ``offload_device``); it is wrapped in a ``ModelPatcher``.
        offload_after_use: unload the model from the device after every estimate call (for cards
            that cannot hold it beside the diffusion model).
        load_device: compute device; ComfyUI's ``get_torch_device()`` by default.
        offload_device: where the weights live when unloaded; ``unet_offload_device()`` by default
            (the CPU, or the GPU itself with ``--highvram``).

    Example:
        >>> memory = ComfyMemory(net)  # doctest: +SKIP
        >>> estimator = DepthEstimator(net, memory=memory)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        offload_after_use: bool = False,
        load_device: torch.device | None = None,
        offload_device: torch.device | None = None,
    ) -> None:
        load_device = load_device if load_device is not None else mm.get_torch_device()
        offload_device = offload_device if offload_device is not None else mm.unet_offload_device()
        super().__init__(load_device)
        self.patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
        self.offload_after_use = offload_after_use
        self._unload_on_release = False

    # -- MemoryPolicy ---------------------------------------------------------------------------

    def acquire(self, model: nn.Module, required_bytes: int) -> torch.device:
        if model is not self.patcher.model:
            raise ValueError("this ComfyMemory manages another model; create one ComfyMemory per network")
        activations = max(0, int(required_bytes) - self.patcher.model_size())
        mm.load_models_gpu([self.patcher], memory_required=activations, force_full_load=True)
        self._unload_on_release = self.offload_after_use
        return self.patcher.load_device

    def release(self, model: nn.Module) -> None:
        if self._unload_on_release:
            self.unload()
        self._unload_on_release = False

    def free_bytes(self) -> int | None:
        return int(mm.get_free_memory(self.patcher.load_device))

    def on_oom(self) -> None:
        log.warning("anydepth: out of memory on %s; halving the batch and retrying", self.patcher.load_device)
        mm.soft_empty_cache()

    def check_interrupt(self) -> None:
        try:
            mm.throw_exception_if_processing_interrupted()
        except mm.InterruptProcessingException:
            self._unload_on_release = True  # the user cancelled: give the device memory back
            raise

    # -- ComfyUI side ---------------------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        """True while ComfyUI lists the model among its loaded models."""
        return any(lm.model is self.patcher for lm in mm.current_loaded_models)

    def unload(self) -> None:
        """Unload the model from the compute device now (its weights go to the offload device)."""
        for lm in list(mm.current_loaded_models):
            if lm.model is self.patcher:
                lm.model_unload()
                mm.current_loaded_models.remove(lm)
        mm.soft_empty_cache()
