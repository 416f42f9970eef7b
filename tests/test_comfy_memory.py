"""The ModelPatcher memory bridge against ComfyUI's real model management (in process, CPU)."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth import DepthEstimator
from anydepth.memory import estimate_activation_bytes
from anydepth.preprocess import network_size
from comfy_harness import REPO, RELATIVE_OPTION, comfy, install_tiny_models  # noqa: F401


@pytest.fixture(scope="module")
def models(comfy):
    return install_tiny_models(comfy.models_dir)


@pytest.fixture
def node_api(comfy, models):
    """The pack's modules, a fresh fp32 model for each test and a batch of 4 frames."""
    pack = comfy.pack.nodes
    pack.loader.clear_cache()
    torch.manual_seed(0)
    frames = torch.rand(4, 42, 56, 3)
    yield pack, pack.loader.load(RELATIVE_OPTION, "fp32", "managed"), frames
    comfy.mm.interrupt_current_processing(False)
    pack.loader.clear_cache()


@pytest.fixture
def forward_batches(node_api):
    """Batch sizes reaching the network's forward, in order."""
    _, model, _ = node_api
    seen: list[int] = []
    handle = model.estimator.model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    yield seen
    handle.remove()


def spy(monkeypatch, module, name: str) -> list:
    """Record the calls of ``module.name`` (still calling it)."""
    calls: list = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def reference(models, frames: torch.Tensor, input_size: int = 42) -> torch.Tensor:
    return DepthEstimator(str(models[RELATIVE_OPTION]), dtype="fp32", device="cpu").estimate(frames, input_size=input_size).depth


def test_model_is_loaded_through_load_models_gpu_with_an_estimate(comfy, node_api, models, monkeypatch):
    pack, model, frames = node_api
    loads = spy(monkeypatch, comfy.mm, "load_models_gpu")
    assert not model.memory.is_loaded
    depth, control = pack.depth_nodes.EstimateDepth.execute(model, frames, input_size=42, batch_size=2)
    (args, kwargs), = loads
    assert args[0] == [model.memory.patcher] and kwargs["force_full_load"] is True
    net = network_size(42, 56, 42)
    assert kwargs["memory_required"] == estimate_activation_bytes(model.estimator.model.config, 2, net, torch.float32)
    assert model.memory.is_loaded  # listed in current_loaded_models
    (loaded,) = [lm for lm in comfy.mm.current_loaded_models if lm.model is model.memory.patcher]
    assert loaded.device == comfy.mm.get_torch_device()
    assert model.memory.patcher.loaded_size() == model.memory.patcher.model_size() > 0
    torch.testing.assert_close(depth.depth, reference(models, frames))
    assert control.shape == (4, 42, 56, 3) and control.dtype == torch.float32
    assert control.device == depth.depth.device == comfy.mm.intermediate_device()


def test_free_memory_unloads_and_the_next_run_reloads(comfy, node_api, models):
    pack, model, frames = node_api
    first, _ = pack.depth_nodes.EstimateDepth.execute(model, frames, input_size=42, batch_size=4)
    assert model.memory.is_loaded
    unloaded = comfy.mm.free_memory(1e30, comfy.mm.get_torch_device())  # what ComfyUI does to make room for a UNet
    assert model.memory.patcher in [lm.model for lm in unloaded]
    assert not model.memory.is_loaded and model.memory.patcher.loaded_size() == 0
    second, _ = pack.depth_nodes.EstimateDepth.execute(model, frames, input_size=42, batch_size=4)
    assert model.memory.is_loaded
    torch.testing.assert_close(second.depth, first.depth)


def test_forced_oom_on_the_first_batch_is_retried_with_half_the_batch(comfy, node_api, models, forward_batches, monkeypatch):
    pack, model, frames = node_api
    failures = []

    def oom_once(module, args):
        if not failures:
            failures.append(args[0].shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    handle = model.estimator.model.register_forward_pre_hook(oom_once)
    empties = spy(monkeypatch, comfy.mm, "soft_empty_cache")
    try:
        depth, _ = pack.depth_nodes.EstimateDepth.execute(model, frames, input_size=42, batch_size=4)
    finally:
        handle.remove()
    assert failures == [4]
    assert forward_batches == [4, 2, 2]  # the failed batch of 4, then two halves
    assert len(empties) == 1  # on_oom asked ComfyUI to empty its cache once
    torch.testing.assert_close(depth.depth, reference(models, frames))


def test_batch_is_sized_from_free_memory(comfy, node_api, forward_batches, monkeypatch):
    pack, model, frames = node_api
    per_image = estimate_activation_bytes(model.estimator.model.config, 1, network_size(42, 56, 42), torch.float32)
    free = []
    monkeypatch.setattr(comfy.mm, "get_free_memory", lambda dev=None, torch_free_too=False: free.append(dev) or int(3 * per_image / 0.9))
    pack.depth_nodes.EstimateDepth.execute(model, frames, input_size=42, batch_size=4)
    assert forward_batches == [3, 1]
    assert free and all(d == model.memory.patcher.load_device for d in free)


def test_progress_is_reported_per_batch(comfy, node_api):
    pack, model, _ = node_api
    comfy.progress.clear()
    pack.depth_nodes.EstimateDepth.execute(model, torch.rand(5, 28, 28, 3), input_size=28, batch_size=2)
    assert comfy.progress == [(2, 5), (4, 5), (5, 5)]


def test_interrupt_between_batches_stops_and_unloads(comfy, node_api, forward_batches, monkeypatch):
    pack, model, frames = node_api
    monkeypatch.setattr(comfy.pack.nodes.depth_nodes.comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview=None, node_id=None: comfy.mm.interrupt_current_processing(True))
    with pytest.raises(comfy.mm.InterruptProcessingException):
        pack.depth_nodes.EstimateDepth.execute(model, frames, input_size=42, batch_size=2)
    assert forward_batches == [2]  # stopped before the second batch
    assert not model.memory.is_loaded and model.memory.patcher.loaded_size() == 0
    assert not comfy.mm.processing_interrupted()  # the flag was consumed, as ComfyUI expects


def test_interrupt_inside_a_graph_is_reported_by_comfyui(comfy, node_api, monkeypatch):
    """Cancel during a 3-frame run: ComfyUI reports the interrupt and the model is no longer loaded."""
    pack, _, _ = node_api
    frames = [Image.fromarray((np.random.default_rng(i).random((28, 42, 3)) * 255).astype(np.uint8)) for i in range(3)]
    frames[0].save(comfy.input_dir / "frames.png", save_all=True, append_images=frames[1:])  # LoadImage reads every frame
    monkeypatch.setattr(comfy.pack.nodes.depth_nodes.comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview=None, node_id=None: comfy.mm.interrupt_current_processing(True))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "frames.png"}},
        "2": {"class_type": "AnyDepthLoadModel", "inputs": {"model": RELATIVE_OPTION, "dtype": "fp32", "memory": "managed"}},
        "3": {"class_type": "AnyDepthEstimate", "inputs": {"depth_model": ["2", 0], "image": ["1", 0], "input_size": 28, "batch_size": 1}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }
    interrupted = comfy.execution_error(prompt)
    assert interrupted["node_id"] == "3" and interrupted["node_type"] == "AnyDepthEstimate"
    assert [e for e, _ in comfy.executor.status_messages][-1] == "execution_interrupted"
    model = pack.loader.load(RELATIVE_OPTION, "fp32", "managed")
    assert not model.memory.is_loaded


def test_offload_after_use(comfy, node_api):
    pack, _, frames = node_api
    model = pack.loader.load(RELATIVE_OPTION, "fp32", "offload_after_use")
    pack.depth_nodes.EstimateDepth.execute(model, frames, input_size=42, batch_size=4)
    assert not model.memory.is_loaded


def test_dtype_auto_follows_comfyui(comfy, monkeypatch):
    comfy_dtype = comfy.pack.nodes.model_patcher.comfy_dtype
    cpu = torch.device("cpu")
    assert comfy_dtype("auto", cpu) == torch.float32  # ComfyUI runs the CPU in fp32
    assert comfy_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(comfy.mm, "should_use_fp16", lambda *a, **k: True)
    assert comfy_dtype("auto", cpu) == torch.float16
    monkeypatch.setattr(comfy.mm, "should_use_bf16", lambda *a, **k: True)
    assert comfy_dtype("auto", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="expected one of auto, fp32, fp16, bf16"):
        comfy_dtype("int8", cpu)


def test_nodes_never_place_tensors_themselves():
    """Placement belongs to ComfyUI: no .cuda(), no .to("<device>"), no torch.device(...) in the adapter."""
    for path in sorted((REPO / "nodes").glob("*.py")):
        for call in (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)):
            f = call.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(getattr(f, "value", None), "id", "")
            strings = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            assert name != "cuda", f"{path.name}:{call.lineno} calls .cuda()"
            assert not (name == "to" and strings), f"{path.name}:{call.lineno} moves to {strings}"
            assert not (owner == "torch" and name == "device"), f"{path.name}:{call.lineno} builds a torch.device"
