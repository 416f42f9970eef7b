"""Prompt validation for dropdown inputs.

ComfyUI 0.3.x checks the value of a legacy dropdown against its options when a prompt is queued,
but not the value of a V3 ``io.Combo``: a typo in an API prompt would only fail (or, worse, do
something else) while running. Each node's ``validate_inputs`` calls :func:`check_options`, so a bad
value is rejected up front with ComfyUI's normal validation error.
"""

from __future__ import annotations

from comfy_api.latest import io


def check_options(node: type[io.ComfyNode], **values) -> bool | str:
    """``True`` when every given dropdown value is one of its options, else a message naming the input.

    ``None`` values (inputs fed by a link, unknown until the graph runs) are not checked.
    """
    options = {i.id: list(i.options) for i in node.define_schema().inputs if isinstance(i, io.Combo.Input)}
    for name, value in values.items():
        if value is None or value in options[name]:
            continue
        choices = options[name]
        shown = ", ".join(map(str, choices)) if len(choices) <= 12 else f"one of {len(choices)} entries"
        return f"{name} {value!r} is not available; expected {shown}"
    return True
