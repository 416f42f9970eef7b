"""Prompt validation that lands on the input at fault, cheap enough to run on every queue.

ComfyUI 0.3.x checks, when a prompt is queued, that a number lies within its widget's ``min``/``max`` and that a
*legacy* dropdown (declared as a list of options) holds one of its options, each error on its own input. It does
not check a V3 ``io.Combo``. A node's ``validate_inputs`` can check anything else, but ComfyUI attaches its message
to **every** input named in its signature, so a function that names three inputs turns one bad value into three
errors. Hence the rules the nodes follow:

* a dropdown with fixed options is a :class:`Choice`: ComfyUI checks it itself, on that input only;
* ``validate_inputs`` names exactly one input, the one whose check ComfyUI cannot do (a model file, a tile size,
  a renamed option), and returns the library's message for it (:func:`check_with`); a rule about two inputs
  together (Estimate Video Depth's ``overlap < chunk_size``) is left to the library, which checks it before any
  work;
* a step that ComfyUI does not check (``input_size`` in multiples of 14) is applied by the node as the widget does
  (:func:`snap_to_step`), since a second checked input would double every error of the first.

Nothing here builds a schema, walks a folder or opens a file: dropdowns whose options come from disk (models, depth
files) are checked by a direct lookup of the one value (:func:`nodes.folders.require_model_option`,
:func:`nodes.depth_tools_nodes.check_depth_file`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from comfy_api.latest import io

log = logging.getLogger(__name__)


class Choice(io.Combo.Input):
    """A dropdown of fixed options that ComfyUI validates itself when a prompt is queued.

    Its legacy type is the list of options (how core nodes declare dropdowns), so a value outside them gets
    ComfyUI's own ``value_not_in_list`` error on this input, naming the value and the options. The frontend shows it
    like any dropdown.
    """

    def get_io_type(self) -> list:  # the V1 spec ``(options, {...})`` instead of ``("COMBO", {...})``
        return list(self.options)


def check_with(check: Callable[[Any], object], value: object) -> bool | str:
    """``True`` when ``value`` is ``None`` (a linked input) or passes the library's ``check``, else its message.

    Example:
        >>> from anydepth.fit import check_fit_mode
        >>> check_with(check_fit_mode, "stretch")
        "fit mode 'stretch' is now called 'resize'; expected one of pad, resize, crop"
        >>> check_with(check_fit_mode, "pad")
        True
    """
    if value is None:
        return True
    try:
        check(value)
    except ValueError as e:
        return str(e)
    return True


def snap_to_step(value: int, step: int, minimum: int, maximum: int, *, name: str, node: str) -> int:
    """``value`` rounded to the nearest multiple of ``step`` within ``[minimum, maximum]``, as the frontend's widget
    rounds it; a value that changes is logged once per call, naming the node and the input.

    Example:
        >>> snap_to_step(500, 14, 14, 4088, name="input_size", node="Estimate Depth")
        504
        >>> snap_to_step(518, 14, 14, 4088, name="input_size", node="Estimate Depth")
        518
    """
    snapped = min(max(math.floor(value / step + 0.5) * step, minimum), maximum)  # half up, like Math.round
    if snapped != value:
        log.warning("anydepth: %s: %s %d is not a multiple of %d; using %d (the widget's step)",
                    node, name, value, step, snapped)
    return snapped
