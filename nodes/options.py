"""Node inputs built from the library's option tables, so each option is defined once.

:data:`anydepth.normalize.NORMALIZE_OPTIONS` holds every normalisation option's name, default, range and help;
:func:`normalize_inputs` turns them into ComfyUI inputs and :func:`normalize_kwargs` turns the node's values
back into :func:`anydepth.normalize.normalize_depth` keywords (``0`` for ``near``/``far`` means "from the image").
The command line builds its flags from the same table (:mod:`anydepth.cli.options`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from comfy_api.latest import io

from anydepth.normalize import NORMALIZE_OPTIONS, NormalizeOption

from .validation import Choice


def _tooltip(option: NormalizeOption, note: str) -> str:
    text = option.help[0].upper() + option.help[1:]
    if option.unset is not None:
        text += f"; {option.unset:g} = {option.unset_help}"
    return f"{text}.{' ' + note if note else ''}"


def _input(option: NormalizeOption, default: object, choices: Sequence[str] | None, note: str) -> io.Input:
    if choices is not None:  # the shared help may describe choices this node does not offer
        note = f"Offered here: {', '.join(choices)}.{' ' + note if note else ''}"
    tooltip = _tooltip(option, note)
    if option.type is bool:
        return io.Boolean.Input(option.name, default=default, tooltip=tooltip)
    if option.type is float:
        value = option.unset if default is None else default
        return io.Float.Input(option.name, default=value, min=option.min, max=option.max, step=option.step,
                              tooltip=tooltip)
    options = list(choices if choices is not None else option.choices)
    return Choice(option.name, options=options, default=default, tooltip=tooltip)  # checked by ComfyUI at queue time


def normalize_inputs(*names: str, defaults: Mapping[str, object] | None = None,
                     choices: Mapping[str, Sequence[str]] | None = None, note: str = "") -> list[io.Input]:
    """ComfyUI inputs for the normalisation options ``names``, in that order.

    Args:
        names: keys of :data:`~anydepth.normalize.NORMALIZE_OPTIONS`.
        defaults: another default for a node whose use differs (e.g. a colour map for a colour node).
        choices: a subset of a dropdown's options (e.g. only the relative modes).
        note: a sentence added to every tooltip (e.g. which outputs use the option).
    """
    defaults, choices = defaults or {}, choices or {}
    return [_input(NORMALIZE_OPTIONS[n], defaults.get(n, NORMALIZE_OPTIONS[n].default), choices.get(n), note)
            for n in names]


def normalize_kwargs(values: Mapping[str, object]) -> dict[str, object]:
    """The node's values of normalisation inputs as :func:`~anydepth.normalize.normalize_depth` keywords
    (``mode`` included; ``near = 0`` -> ``None``); other keys (``colormap`` too) are left out."""
    return {k: NORMALIZE_OPTIONS[k].from_ui(v) for k, v in values.items() if k in NORMALIZE_OPTIONS and k != "colormap"}
