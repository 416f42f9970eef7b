"""Shared test setup: an isolated models folder per test, tiny models, photos and one error measure.

Fixtures are found by pytest. The plain helpers (:func:`rel_error`, :func:`error_map`, :func:`random_rgb`,
:func:`write_photo`, :data:`TINY_EST`) are imported with ``from conftest import ...``: ``tests/`` is on
``sys.path`` (a rootdir conftest in pytest's default ``prepend`` import mode), as for the other helper modules
(``tiny``, ``tiny_da3``, ``standin``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Tests must never reach the real hub; the download tests start their own local endpoint.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

#: DepthEstimator settings of the tiny-model tests: fp32 (comparable to 1e-5) and 70 px (5 patches: fast).
TINY_EST: dict = dict(dtype="fp32", input_size=70, device="cpu")


# ------------------------------------------------------------------------------------------------ helpers


def error_map(got: torch.Tensor, ref: torch.Tensor, *, affine: bool = False) -> torch.Tensor:
    """``|got - ref|`` over the reference's range, per element; a flat reference fails (nothing to compare).

    With ``affine``, ``got`` is first fitted to ``ref`` by one scale and shift per map (the ambiguity of
    relative depth), so only the shape of the prediction is measured.

    Shape:
        got, ref: the same shape, ``(B, *)`` when ``affine``; output: that shape.
    """
    span = float(ref.max() - ref.min())
    assert span > 1e-3, "flat reference: the comparison would be vacuous"
    if affine:
        from anydepth.align import align_scale_shift

        got = align_scale_shift(got, ref).aligned
    return (got.float() - ref.float()).abs() / span


def rel_error(got: torch.Tensor, ref: torch.Tensor, *, affine: bool = False) -> float:
    """The largest :func:`error_map` value: the parity measure (max abs difference over the reference's range)."""
    return float(error_map(got, ref, affine=affine).max())


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Uniform random colours, ``(h, w, 3)`` uint8: a photo stand-in no model finds flat."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_photo(path: str | os.PathLike, h: int = 45, w: int = 61, seed: int = 0) -> Path:
    """Save :func:`random_rgb` to ``path`` (format from the suffix; parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_rgb(h, w, seed)).save(path)
    return path


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def _isolated_models_dir(tmp_path, monkeypatch):
    """Every test gets its own empty models folder and hub cache."""
    monkeypatch.setenv("ANYDEPTH_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: per-op overhead dominates them, so it is faster and steadier.

    Use it for a whole module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def photo(tmp_path) -> Path:
    """A 61×45 random RGB ``photo.png`` (odd sizes: every resize and fit path is exercised)."""
    return write_photo(tmp_path / "photo.png", 45, 61)


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


@pytest.fixture(scope="module")
def tiny_estimator(tiny_files):
    """A :class:`~anydepth.DepthEstimator` over the tiny ``.pth`` with :data:`TINY_EST` (one per module)."""
    from anydepth import DepthEstimator

    return DepthEstimator(tiny_files["pth"], **TINY_EST)


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory):
    """Tiny random diffusers pipelines and ControlNets saved with save_pretrained (see tiny_diffusers.py)."""
    from tiny_diffusers import build_all

    return build_all(tmp_path_factory.mktemp("pipelines"))
