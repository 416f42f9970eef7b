"""Command-line options shared by several commands, defined once."""

from __future__ import annotations

import argparse

from ..normalize import COLORMAPS, NORMALIZE_MODES


def add_normalize_options(p: argparse.ArgumentParser) -> None:
    """``--normalize --near --far --invert --gamma --colormap``: how raw depth becomes an image."""
    p.add_argument("--normalize", default="v2_style", choices=NORMALIZE_MODES, help="how raw depth becomes an image")
    p.add_argument("--near", type=float, default=None, help="metres shown white (metric modes)")
    p.add_argument("--far", type=float, default=None, help="metres shown black (metric modes)")
    p.add_argument("--invert", action="store_true", help="near = black")
    p.add_argument("--gamma", type=float, default=1.0, help="gamma applied after normalising")
    p.add_argument("--colormap", default=None, choices=COLORMAPS, help="8-bit RGB preview instead of grey (png8)")
