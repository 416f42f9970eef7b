"""Apply Depth ControlNet with a tiny real ``comfy.controlnet.ControlNet`` (in process)."""

from __future__ import annotations

import types

import pytest
import torch

from anydepth import normalize_depth, to_image
from anydepth.estimator import DepthResult
from anydepth.fit import fit_to_size
from comfy_harness import comfy  # noqa: F401


class TinyControl(torch.nn.Module):
    """Stands in for a ControlNet network: its control signal is the mean of the hint it was given."""

    dtype = torch.float32

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.hints: list[torch.Tensor] = []

    def forward(self, x, hint, timesteps, context, **kwargs):
        self.hints.append(hint)
        return {"middle": [self.scale * hint.mean(dim=(1, 2, 3), keepdim=True).expand(x.shape[0], 4, *x.shape[2:])]}


@pytest.fixture
def control_net(comfy):
    import comfy.controlnet

    return comfy.controlnet.ControlNet(TinyControl(), load_device=torch.device("cpu"))


@pytest.fixture
def apply(comfy):
    return comfy.pack.nodes.controlnet.ApplyDepthControlNet.execute


def conditioning(n: int, tag: str) -> list:
    return [[torch.full((1, 3, 8), float(i)), {"pooled_output": torch.zeros(1, 8), "tag": f"{tag}{i}"}] for i in range(n)]


def latent(h: int, w: int) -> dict:
    return {"samples": torch.zeros(1, 4, h, w)}


def run_control(c_net, h: int, w: int, t: float) -> torch.Tensor | None:
    """Call ``get_control`` as the sampler does, for a latent of ``h × w`` at timestep ``t``."""
    out = c_net.get_control(torch.zeros(1, 4, h, w), torch.tensor([t]), {"c_crossattn": torch.zeros(1, 3, 8)}, 1, {})
    return None if out is None else out["middle"][0]


@pytest.mark.parametrize("fit", ["pad", "resize", "crop"])
def test_hint_is_fitted_to_the_latent_and_applied_with_strength_and_range(comfy, control_net, apply, fit):
    image = torch.rand(1, 40, 120, 3)  # 1:3, the latent below is 2:3
    positive, negative = conditioning(2, "p"), conditioning(1, "n")
    before = [dict(c[1]) for c in positive + negative]
    pos, neg = apply(positive, negative, control_net, latent(8, 12), 0.7, 0.2, 0.6, fit, image=image)
    assert [c[1] for c in positive + negative] == before  # the inputs were not touched
    entries = pos + neg
    assert len(entries) == 3 and [e[1]["tag"] for e in entries] == ["p0", "p1", "n0"]
    c_nets = {id(e[1]["control"]) for e in entries}
    assert len(c_nets) == 1  # one ControlNet copy shared by every entry (no previous ControlNet)
    c_net = entries[0][1]["control"]
    assert c_net is not control_net and c_net.strength == 0.7 and c_net.timestep_percent_range == (0.2, 0.6)
    assert all(e[1]["control_apply_to_uncond"] is False for e in entries)

    expected_hint = fit_to_size(image.movedim(-1, 1), (64, 96), fit)  # latent 8×12 × 8 px
    torch.testing.assert_close(c_net.cond_hint_original, expected_hint)
    if fit == "pad":  # 40×120 scaled to 32×96, centred: 16 black rows above and below
        assert torch.all(expected_hint[:, :, :16] == 0) and torch.all(expected_hint[:, :, 48:] == 0)

    # What the sampler sees: pre_run maps the percent range to timesteps, get_control scales the hint
    c_net.pre_run(types.SimpleNamespace(model_sampling=types.SimpleNamespace(
        timestep=lambda t: t, calculate_input=lambda t, x: x)), lambda p: 1000.0 * (1.0 - p))
    assert c_net.timestep_range == (800.0, 400.0)
    assert run_control(c_net, 8, 12, 900.0) is None and run_control(c_net, 8, 12, 300.0) is None  # outside 20..60 %
    middle = run_control(c_net, 8, 12, 500.0)
    hint = c_net.control_model.hints[-1]
    torch.testing.assert_close(hint, expected_hint)  # ComfyUI's own centre crop had nothing left to cut
    torch.testing.assert_close(middle, 0.7 * expected_hint.mean().expand(1, 4, 8, 12))
    c_net.cleanup()


def test_depth_input_and_chaining(comfy, control_net, apply):
    raw = torch.rand(1, 30, 30) + 0.5
    depth = DepthResult(raw, "disparity", [(28, 28)], "tiny")
    first, _ = apply(conditioning(1, "p"), conditioning(1, "n"), control_net, latent(4, 4), 1.0, 0.0, 1.0, "pad", depth=depth)
    expected = fit_to_size(to_image(normalize_depth(raw, "disparity", "v2_style")).movedim(-1, 1), (32, 32), "pad")
    torch.testing.assert_close(first[0][1]["control"].cond_hint_original, expected)
    # a second depth ControlNet stacks on the first, as with the core node
    second, _ = apply(first, conditioning(1, "n"), control_net, latent(4, 4), 0.5, 0.0, 1.0, "resize", image=torch.rand(1, 32, 32, 3))
    assert second[0][1]["control"].previous_controlnet is first[0][1]["control"]


def test_strength_zero_and_bad_inputs(comfy, control_net, apply):
    positive, negative = conditioning(1, "p"), conditioning(1, "n")
    pos, neg = apply(positive, negative, control_net, latent(4, 4), 0.0, 0.0, 1.0, "pad", image=torch.rand(1, 8, 8, 3))
    assert pos is positive and neg is negative  # the core node's shortcut
    with pytest.raises(ValueError, match="exactly one of image or depth"):
        apply(positive, negative, control_net, latent(4, 4), 1.0, 0.0, 1.0, "pad")
    with pytest.raises(ValueError, match="exactly one of image or depth"):
        apply(positive, negative, control_net, latent(4, 4), 1.0, 0.0, 1.0, "pad", image=torch.rand(1, 8, 8, 3),
              depth=DepthResult(torch.rand(1, 8, 8), "disparity", [(14, 14)], "tiny"))


def test_da3_depth_becomes_a_near_white_hint(comfy, control_net, apply):
    """DA3 gives depth (larger = farther); the hint must still be near = white, as for disparity."""
    raw = torch.linspace(1.0, 4.0, 28).repeat(28, 1)[None]  # depth grows left to right
    depth = DepthResult(raw, "depth", [(28, 28)], "tiny-da3")
    pos, _ = apply(conditioning(1, "p"), conditioning(1, "n"), control_net, latent(4, 4), 1.0, 0.0, 1.0, "resize", depth=depth)
    hint = pos[0][1]["control"].cond_hint_original
    expected = fit_to_size(to_image(normalize_depth(raw, "depth", "v2_style")).movedim(-1, 1), (32, 32), "resize")
    torch.testing.assert_close(hint, expected)
    assert hint[0, 0, 16, 0] > 0.9 and hint[0, 0, 16, -1] < 0.1  # the near (left) side is white
