"""anydepth.fit: letterbox / stretch / centre crop to a target size."""

import pytest
import torch
import torch.nn.functional as F

from anydepth.fit import FIT_MODES, fit_box, fit_to_size


@pytest.mark.parametrize(
    "src, dst, mode, box",
    [
        ((100, 200), (100, 100), "pad", (50, 100, 25, 0)),
        ((100, 200), (100, 100), "crop", (100, 200, 0, -50)),
        ((100, 200), (100, 100), "resize", (100, 100, 0, 0)),
        ((200, 100), (64, 96), "pad", (64, 32, 0, 32)),
        ((200, 100), (64, 96), "crop", (192, 96, -64, 0)),
        ((480, 640), (768, 1024), "pad", (768, 1024, 0, 0)),  # same aspect: no border
        ((480, 640), (768, 1024), "crop", (768, 1024, 0, 0)),
        ((3, 1000), (10, 10), "pad", (1, 10, 4, 0)),  # never rounds to an empty image
    ],
)
def test_fit_box_known_values(src, dst, mode, box):
    assert fit_box(src, dst, mode) == box


@pytest.mark.parametrize("mode", FIT_MODES)
@pytest.mark.parametrize("src, dst", [((37, 91), (64, 48)), ((64, 48), (37, 91)), ((5, 5), (8, 13)), ((8, 13), (8, 13))])
def test_fit_to_size_shape_dtype_device(mode, src, dst):
    x = torch.rand(3, 2, *src, dtype=torch.float64)
    out = fit_to_size(x, dst, mode)
    assert out.shape == (3, 2, *dst)
    assert out.dtype == torch.float64 and out.device == x.device


def test_pad_keeps_the_picture_and_fills_the_border():
    x = torch.rand(2, 3, 20, 40)
    out = fit_to_size(x, (40, 40), "pad", pad_value=0.25)
    # width decides: the picture keeps its 20×40 size, centred, 10 rows of border above and below
    torch.testing.assert_close(out[:, :, 10:30], x)
    assert torch.all(out[:, :, :10] == 0.25) and torch.all(out[:, :, 30:] == 0.25)


def test_pad_scales_with_bilinear_antialias():
    x = torch.rand(1, 1, 30, 60)
    out = fit_to_size(x, (30, 30), "pad")
    ref = F.interpolate(x, size=(15, 30), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out[:, :, 7:22], ref)
    assert torch.all(out[:, :, :7] == 0) and torch.all(out[:, :, 22:] == 0)


def test_crop_takes_the_centre():
    x = torch.arange(4 * 8, dtype=torch.float32).view(1, 1, 4, 8)
    out = fit_to_size(x, (4, 4), "crop")
    torch.testing.assert_close(out, x[..., 2:6])


def test_resize_stretches():
    x = torch.rand(2, 3, 10, 30)
    ref = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(fit_to_size(x, (20, 20), "resize"), ref)


def test_constant_image_stays_constant_inside():
    x = torch.full((1, 1, 33, 77), 0.7)
    for mode in FIT_MODES:
        out = fit_to_size(x, (50, 50), mode, pad_value=0.7)
        torch.testing.assert_close(out, torch.full_like(out, 0.7))


def test_input_not_modified_and_not_aliased():
    x = torch.rand(1, 3, 16, 16)
    before = x.clone()
    out = fit_to_size(x, (16, 16), "pad")
    out += 1
    torch.testing.assert_close(x, before)


def test_gradcheck():
    x = torch.rand(1, 1, 5, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fit_to_size(t, (7, 7), "pad", antialias=False), (x,))


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.rand(3, 8, 8), (4, 4), "pad"), ValueError, r"\[B, C, H, W\]"),
        ((torch.zeros(1, 1, 8, 8, dtype=torch.uint8), (4, 4), "pad"), TypeError, "floating point"),
        ((torch.rand(1, 1, 8, 8), (0, 4), "pad"), ValueError, "two integers >= 1"),
        ((torch.rand(1, 1, 8, 8), (4.0, 4), "pad"), ValueError, "two integers"),
        ((torch.rand(1, 1, 8, 8), (4, 4), "letterbox"), ValueError, "unknown fit mode 'letterbox'.*pad, resize, crop"),
        ((torch.rand(1, 1, 8, 8), (4, 4), "stretch"), ValueError, "fit mode 'stretch' is now called 'resize'"),
        ((torch.rand(0, 1, 8, 8), (4, 4), "pad"), ValueError, "empty"),
    ],
)
def test_errors(args, error, match):
    with pytest.raises(error, match=match):
        fit_to_size(*args)


def test_one_vocabulary_everywhere(capsys):
    """The library, `anydepth generate --fit` and the Apply Depth ControlNet node share these words."""
    from anydepth.cli import build_parser
    from anydepth.fit import check_fit_mode
    from anydepth.generate import GenerateSettings

    assert FIT_MODES == ("pad", "resize", "crop") and [check_fit_mode(m) for m in FIT_MODES] == list(FIT_MODES)
    with pytest.raises(ValueError, match="'stretch' is now called 'resize'"):
        fit_box((4, 4), (2, 2), "stretch")
    with pytest.raises(ValueError, match="'stretch' is now called 'resize'"):
        GenerateSettings(fit="stretch")  # refused once, before any item runs
    generate = ["generate", "--items", "x", "--pipeline", "p", "--out", "o"]
    parser = build_parser()
    assert parser.parse_args(generate).fit == "crop"
    assert parser.parse_args([*generate, "--fit", "pad"]).fit == "pad"
    with pytest.raises(SystemExit):
        parser.parse_args([*generate, "--fit", "stretch"])
    assert "fit mode 'stretch' is now called 'resize'" in capsys.readouterr().err


def test_nan_padding_marks_the_border_missing():
    out = fit_to_size(torch.ones(1, 1, 2, 4), (4, 4), "pad", pad_value=float("nan"))
    assert out[0, 0, [0, 3]].isnan().all() and (out[0, 0, 1:3] == 1).all()
