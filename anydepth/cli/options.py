"""Command-line options shared by several commands, built from the library's one definition of each.

The normalisation flags come from :data:`anydepth.normalize.NORMALIZE_OPTIONS` (names, defaults, choices,
help), the fit modes from :mod:`anydepth.fit`; the nodes build their inputs from the same tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..fit import FIT_MODES, check_fit_mode
from ..normalize import NORMALIZE_OPTIONS, NormalizeOption

CLI_NORMALIZE_OPTIONS: tuple[str, ...] = ("mode", "near", "far", "invert", "gamma", "colormap")
"""The normalisation options of ``estimate`` and ``batch`` (``--normalize --near --far --invert --gamma --colormap``)."""

_CLI_HELP = {"colormap": "8-bit RGB preview instead of grey (png8)"}
"""Where a command's flag means more than the library option: ``--colormap`` also picks the png8 output."""


def _help(option: NormalizeOption) -> str:
    text = _CLI_HELP.get(option.name, option.help)
    if option.default is None:
        return f"{text} (default: {option.unset_help})" if option.unset_help else text
    return text if option.type is bool else f"{text} (default {option.default})"


def add_normalize_options(p: argparse.ArgumentParser, names: Sequence[str] = CLI_NORMALIZE_OPTIONS) -> None:
    """Add the flags of the normalisation options ``names`` (see :data:`CLI_NORMALIZE_OPTIONS`).

    Each flag stores into ``args.<name>`` except ``mode``, whose flag ``--normalize`` stores into
    ``args.normalize``; booleans are ``store_true`` switches.
    """
    for name in names:
        option = NORMALIZE_OPTIONS[name]
        if option.type is bool:
            p.add_argument(option.flag, action="store_true", default=option.default, help=_help(option))
        else:
            p.add_argument(option.flag, type=option.type, default=option.default, choices=option.choices,
                           help=_help(option))


def _fit_mode(text: str) -> str:
    try:
        return check_fit_mode(text)
    except ValueError as e:  # argparse shows an ArgumentTypeError's message as it is
        raise argparse.ArgumentTypeError(str(e)) from None


def add_fit_option(p: argparse.ArgumentParser, default: str = "crop") -> None:
    """``--fit {pad,resize,crop}``: how an image meets another aspect ratio (see :mod:`anydepth.fit`)."""
    p.add_argument("--fit", type=_fit_mode, default=default, choices=FIT_MODES,
                   help=f"how depth meets another aspect ratio: pad (letterbox, black = far), resize (stretch) or "
                        f"crop (centre crop) (default {default})")


def add_max_tokens_option(p: argparse.ArgumentParser, size_flag: str, default_size: int) -> None:
    """``--max-tokens N``: the token budget of one network input (see :func:`anydepth.preprocess.capped_size`)."""
    from ..preprocess import MAX_TOKENS_FACTOR, default_max_tokens

    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help=f"at most N 14×14 patches per network input (default: {MAX_TOKENS_FACTOR}× the patches of a "
                        f"--{size_flag} square, {default_max_tokens(default_size)} at {default_size}); longer inputs (thin "
                        "strips) run at the largest size of their aspect ratio within it and are resized back, with a "
                        "warning. 0 = no cap")
