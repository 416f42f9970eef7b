"""Prompt validation for dropdown inputs, cheap enough to run on every queue.

ComfyUI 0.3.x checks the value of a legacy dropdown against its options when a prompt is queued,
but not the value of a V3 ``io.Combo``: a typo in an API prompt would only fail (or, worse, do
something else) while running. Each node's ``validate_inputs`` calls :func:`check_choices` with the
same option tuples its schema uses, so a bad value is rejected up front with ComfyUI's normal
validation error. Nothing here builds a schema, walks a folder or opens a file: dropdowns whose options
come from disk (models, depth files) are checked by a direct lookup of the one value
(:func:`nodes.folders.check_model_option`, :func:`nodes.depth_tools_nodes.check_depth_file`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def not_available(name: str, value: object, options: Sequence) -> str:
    """The message for a dropdown value that is not among ``options``."""
    shown = ", ".join(map(str, options)) if len(options) <= 12 else f"one of {len(options)} entries"
    return f"{name} {value!r} is not available; expected {shown}"


def check_choices(**inputs: tuple[object, Sequence]) -> bool | str:
    """``True`` when each ``name=(value, options)`` has its value among its options, else a message naming it.

    ``None`` values (inputs fed by a link, unknown until the graph runs) are not checked.

    Example:
        >>> check_choices(mode=("v2_style", ("v2_style", "minmax")), scope=(None, ("image", "batch")))
        True
        >>> check_choices(mode=("v3", ("v2_style", "minmax")))
        "mode 'v3' is not available; expected v2_style, minmax"
    """
    for name, (value, options) in inputs.items():
        if value is not None and value not in options:
            return not_available(name, value, options)
    return True


def check_with(check: Callable[[Any], object], value: object) -> str | None:
    """``None`` when ``value`` is ``None`` (a linked input) or passes the library's ``check``, else its message.

    Example:
        >>> from anydepth.fit import check_fit_mode
        >>> check_with(check_fit_mode, "stretch")
        "fit mode 'stretch' is now called 'resize'; expected one of pad, resize, crop"
    """
    if value is None:
        return None
    try:
        check(value)
    except ValueError as e:
        return str(e)
    return None
