"""The example scripts run as written, here against tiny pipelines instead of the published weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "diffusers_examples"

pytestmark = pytest.mark.usefixtures("one_thread")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, models, size",
    [
        ("sd15_depth_controlnet", ["--pipeline", "sd15", "--controlnet", "sd15-controlnet"], (72, 40)),
        ("sdxl_depth_controlnet", ["--pipeline", "sdxl", "--controlnet", "sdxl-controlnet", "--vae", "none"], (72, 40)),
        ("flux_depth", ["--pipeline", "flux-depth"], (64, 32)),  # Flux: multiples of 16
    ],
)
def test_example_runs(name, models, size, photo, tiny_pipelines, tiny_files, tmp_path, capsys):
    module = _load(name)
    models = [str(tiny_pipelines[m]) if m in tiny_pipelines else m for m in models]
    out = tmp_path / "result.png"
    module.main([str(photo), "a test prompt", "--out", str(out), "--depth-model", str(tiny_files["pth"]),
                 "--steps", "2", "--width", "72", "--height", "40", *models])
    assert Image.open(out).size == size
    control = Image.open(tmp_path / "result_control.png")
    assert control.size == size and control.mode == "L" and control.getextrema() == (0, 255)
    assert f"({size[0]}×{size[1]})" in capsys.readouterr().out


def test_every_example_is_tested():
    tested = {"sd15_depth_controlnet", "sdxl_depth_controlnet", "flux_depth"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested
