import os

import pytest
import torch

# Tests must never reach the real hub; the download tests start their own local endpoint.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_models_dir(tmp_path, monkeypatch):
    """Every test gets its own empty models folder and hub cache."""
    monkeypatch.setenv("ANYDEPTH_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_hf():
    from tiny import hf_model

    return hf_model()


@pytest.fixture(scope="session")
def tiny_files(tiny_hf, tmp_path_factory):
    """The same tiny relative model in every published format."""
    from tiny import write_hf_dir, write_pth, write_safetensors

    d = tmp_path_factory.mktemp("formats")
    return {
        "pth": write_pth(tiny_hf, d / "depth_anything_v2_vits.pth"),
        "safetensors_fp32": write_safetensors(tiny_hf, d / "depth_anything_v2_vits_fp32.safetensors"),
        "safetensors_fp16": write_safetensors(tiny_hf, d / "depth_anything_v2_vits_fp16.safetensors", torch.float16),
        "hf_old": write_hf_dir(tiny_hf, d / "Depth-Anything-V2-Small-hf"),
        "hf_new": write_hf_dir(tiny_hf, d / "hf-new-names", names="new"),
    }


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory):
    """Tiny random diffusers pipelines and ControlNets saved with save_pretrained (see tiny_diffusers.py)."""
    from tiny_diffusers import build_all

    return build_all(tmp_path_factory.mktemp("pipelines"))
