"""Convert a ComfyUI UI-format workflow (what the frontend saves) into the API prompt format.

The rules are the frontend's ``graphToPrompt``: widget values are stored positionally in
``widgets_values`` in the order of the node's widget inputs (``input_order`` from /object_info,
required then optional); an INT with ``control_after_generate`` is followed by the control value
("fixed", "randomize", ...), an upload combo by the upload button's value; a linked input takes its
link, a linked widget still keeps its slot in ``widgets_values``. Muted and bypassed nodes and notes are left
out; reroutes and primitive nodes are not supported (the shipped workflows do not use them).

Every mismatch with /object_info raises :class:`WorkflowError` naming the node and input.
"""

from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote"}
"""Node types that exist only in the frontend and never reach the prompt."""


class WorkflowError(ValueError):
    pass


def _is_widget(spec: list) -> bool:
    typ, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    return (isinstance(typ, list) or typ in WIDGET_TYPES) and not opts.get("forceInput")


def _extra_values(spec: list) -> int:
    opts = spec[1] if len(spec) > 1 else {}
    return sum(1 for k in ("control_after_generate", "image_upload", "video_upload", "audio_upload") if opts.get(k))


def to_api(workflow: dict, object_info: dict) -> dict:
    """API-format prompt ``{node_id: {"class_type": ..., "inputs": {...}}}`` for a UI-format workflow."""
    links = {lk[0]: lk for lk in workflow.get("links", [])}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    prompt: dict = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4) or node["type"] in FRONTEND_ONLY:  # muted / bypassed / a note
            continue
        where = f"node {node['id']} ({node['type']})"
        info = object_info.get(node["type"])
        if info is None:
            raise WorkflowError(f"{where}: node type {node['type']!r} does not exist in this ComfyUI")
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        linked: dict[str, int] = {}
        for slot in node.get("inputs", []):
            if slot["name"] not in specs:
                raise WorkflowError(f"{where}: has an input {slot['name']!r} that the node does not define")
            if slot.get("link") is not None:
                linked[slot["name"]] = slot["link"]
        values = list(node.get("widgets_values") or [])
        inputs: dict = {}
        i = 0
        for name in order:
            spec = specs[name]
            if _is_widget(spec):
                if i >= len(values):
                    raise WorkflowError(f"{where}: widgets_values has no value for {name!r}")
                value, i = values[i], i + 1 + _extra_values(spec)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                link = links.get(linked[name])
                if link is None:
                    raise WorkflowError(f"{where}: input {name!r} names link {linked[name]} which does not exist")
                _, src, src_slot, dst, _dst_slot, typ = link
                if dst != node["id"] or src not in nodes:
                    raise WorkflowError(f"{where}: link {link[0]} does not connect node {src} to this node")
                src_info = object_info[nodes[src]["type"]]
                out_type = src_info["output"][src_slot]
                in_type = "COMBO" if isinstance(spec[0], list) else spec[0]
                if typ != out_type or (in_type != "*" and typ != in_type):
                    raise WorkflowError(f"{where}: input {name!r} ({in_type}) is fed {typ} by link {link[0]} "
                                        f"from an output of type {out_type}")
                inputs[name] = [str(src), src_slot]
        if i != len(values):
            raise WorkflowError(f"{where}: widgets_values has {len(values)} values, the node's widgets use {i}")
        missing = [n for n in info["input_order"].get("required", []) if n not in inputs]
        if missing:
            raise WorkflowError(f"{where}: required inputs {missing} are neither set nor linked")
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
