"""Options defined once: the normalisation table drives the library defaults and every command's flags."""

from __future__ import annotations

import inspect

import pytest

from anydepth.cli import build_parser
from anydepth.normalize import COLORMAPS, NORMALIZE_MODES, NORMALIZE_OPTIONS, RELATIVE_MODES, SCOPES, normalize_depth


def test_table_matches_the_library_function():
    params = inspect.signature(normalize_depth).parameters
    for name, option in NORMALIZE_OPTIONS.items():
        if name == "colormap":  # a preview option of apply_colormap; None = grey
            assert option.choices == COLORMAPS and option.default is None
            continue
        assert params[name].default == option.default, name
        assert isinstance(option.default, option.type) or option.default is None, name
    assert NORMALIZE_OPTIONS["mode"].choices == NORMALIZE_MODES and NORMALIZE_OPTIONS["scope"].choices == SCOPES
    assert RELATIVE_MODES == ("v2_style", "minmax")
    assert NORMALIZE_OPTIONS["near"].from_ui(0.0) is None and NORMALIZE_OPTIONS["near"].from_ui(2.5) == 2.5
    assert NORMALIZE_OPTIONS["gamma"].from_ui(0.0) == 0.0  # only options with an unset value map to None


def _flags(command: str) -> dict:
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return {a.option_strings[0]: a for a in sub._actions if a.option_strings}


@pytest.mark.parametrize("command, names", [
    ("estimate", ("mode", "near", "far", "invert", "gamma", "colormap")),
    ("batch", ("mode", "near", "far", "invert", "gamma", "colormap")),
    ("generate", ("mode", "invert", "gamma")),
])
def test_command_flags_come_from_the_table(command, names):
    flags = _flags(command)
    for name in names:
        option = NORMALIZE_OPTIONS[name]
        action = flags[option.flag]
        assert action.default == option.default, (command, name)
        if option.choices is not None:
            assert tuple(action.choices) == option.choices
        assert option.help.split(";")[0][:30] in action.help or name == "colormap", (command, name)
    assert flags["--normalize"].dest == "normalize"


def test_parsed_defaults_are_unchanged():
    args = build_parser().parse_args(["estimate", "in.png", "--out", "o"])
    assert (args.normalize, args.near, args.far, args.invert, args.gamma, args.colormap) == (
        "v2_style", None, None, False, 1.0, None)
    args = build_parser().parse_args(["estimate", "in.png", "--out", "o", "--normalize", "metric_linear", "--near",
                                      "0.5", "--far", "9", "--invert", "--gamma", "0.8"])
    assert (args.normalize, args.near, args.far, args.invert, args.gamma) == ("metric_linear", 0.5, 9.0, True, 0.8)
