"""Input canonicalisation and the reference resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth.preprocess import network_size, prepare_batch, resize_depth, to_tensor_list

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize(
    "hw, expected",
    [((480, 640), (518, 686)), ((640, 480), (686, 518)), ((518, 518), (518, 518)), ((1, 1), (518, 518)),
     ((100, 1000), (518, 5180)), ((1080, 1920), (518, 924)), ((333, 517), (518, 798))],
)
def test_network_size_lower_bound_multiple_of_14(hw, expected):
    assert network_size(*hw) == expected


def test_network_size_other_input_size_and_errors():
    assert network_size(480, 640, 280) == (280, 378)
    with pytest.raises(ValueError, match="multiple of 14"):
        network_size(480, 640, 500)


def _reference_resize(img_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference pipeline: RGB/255 in float64, OpenCV INTER_CUBIC, ImageNet normalisation."""
    cv2 = pytest.importorskip("cv2")
    x = img_u8.astype(np.float64) / 255.0
    x = cv2.resize(x, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    return ((x - MEAN) / STD).transpose(2, 0, 1)


@pytest.mark.parametrize("hw", [(480, 640), (97, 131), (700, 900)], ids=["up", "odd-up", "down"])
def test_resize_matches_opencv_reference(hw):
    """Torch bicubic (a = -0.75, no antialias) and OpenCV INTER_CUBIC agree to 1e-4 of the 0..1 colour range.

    The residual difference is OpenCV's fixed-point interpolation tables."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    size = network_size(*hw)
    ref = _reference_resize(img, size)
    ours = prepare_batch(to_tensor_list(img)[0], size, MEAN, STD)[0].double().numpy()
    err = np.abs(ours - ref).max() * max(STD)
    assert err < 1e-4 if hw[0] < size[0] else err < 2e-3


def test_antialias_is_an_option_that_changes_downscaling():
    img = torch.rand(1, 3, 1400, 1400)
    plain = prepare_batch(img, (518, 518), MEAN, STD)
    smooth = prepare_batch(img, (518, 518), MEAN, STD, antialias=True)
    assert (plain - smooth).abs().max() > 0.1


def test_layouts_and_types_agree():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    expected = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255
    inputs = [
        Image.fromarray(u8),
        u8,
        u8.astype(np.float32) / 255,
        torch.from_numpy(u8)[None].float() / 255,  # ComfyUI [B,H,W,C]
        torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255,  # [B,C,H,W]
        torch.from_numpy(u8).permute(2, 0, 1),  # uint8 [C,H,W]
        (u8.astype(np.uint16) * 257),
    ]
    for i, x in enumerate(inputs):
        (got,) = to_tensor_list(x)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0, msg=f"input {i}")


def test_gray_rgba_and_palette_become_rgb():
    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 0))
    gray = Image.new("L", (5, 4), 128)
    pal = Image.new("RGB", (5, 4), (1, 2, 3)).convert("P")
    i16 = Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16))
    for img in (rgba, gray, pal, i16):
        (t,) = to_tensor_list(img)
        assert t.shape == (1, 3, 4, 5)
    assert to_tensor_list(rgba)[0][0, :, 0, 0].mul(255).round().tolist() == [10, 20, 30]
    assert to_tensor_list(i16)[0].min() == 1.0
    (t,) = to_tensor_list(torch.rand(2, 6, 7, 1))
    assert t.shape == (2, 3, 6, 7) and torch.equal(t[:, 0], t[:, 1])
    (t,) = to_tensor_list(torch.rand(1, 6, 7, 4))
    assert t.shape == (1, 3, 6, 7)


def test_input_is_not_modified():
    x = torch.rand(1, 8, 8, 3)
    before = x.clone()
    prepare_batch(to_tensor_list(x)[0], (14, 14), MEAN, STD)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ([], ValueError, "empty list"),
        (torch.rand(0, 8, 8, 3), ValueError, "empty batch"),
        (torch.rand(1, 8, 8, 7), ValueError, "colour channels"),
        (np.zeros((4, 4, 3)) + 200.0, ValueError, "divide 0..255"),
        (torch.full((1, 4, 4, 3), float("nan")), ValueError, "NaN"),
        (torch.zeros(2, 2, 2, 2, 2), ValueError, "shape"),
        ("not-an-image.xyz", ValueError, "not-an-image.xyz"),
        (42, TypeError, "int"),
        ([[np.zeros((4, 4, 3), np.uint8)]], TypeError, "nested"),
        (np.zeros((4, 4, 3), dtype=np.complex64), TypeError, "complex"),
    ],
)
def test_bad_input_gets_a_clear_error(bad, error, match):
    with pytest.raises(error, match=match):
        to_tensor_list(bad)


def test_resize_depth_back_to_input_size():
    d = torch.arange(4.0).reshape(1, 2, 2)
    up = resize_depth(d, (3, 3))
    assert up.shape == (1, 3, 3)
    assert up[0, 1, 1] == pytest.approx(1.5)  # align_corners=True keeps the corner values
    assert up[0, 0, 0] == 0 and up[0, 2, 2] == 3


def test_32bit_integer_images_are_read_as_16_bit():
    img = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32), mode="I")
    (t,) = to_tensor_list(img)
    torch.testing.assert_close(t[0, 0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))
    with pytest.raises(ValueError, match="16-bit"):
        to_tensor_list(Image.fromarray(np.array([[70000]], dtype=np.int32), mode="I"))
