"""Build the example workflows (ComfyUI UI format), their ``.jpg`` thumbnails and the README diagram.

``python tools/workflows.py`` rewrites ``workflows/*.json``, ``workflows/*.jpg`` and
``docs/workflow_sd15_depth_controlnet.png``. The graphs are written here once, as code, so links and
widget orders stay consistent; ``tests/test_comfy_workflows.py`` checks every file against a real
ComfyUI (node types, inputs, link types, ComfyUI's own prompt validation) and runs the ones that need
only depth nodes; ``tests/test_workflow_layout.py`` checks that the shipped files are what this script builds
and that no node covers another at the sizes the frontend draws them (``node_size``).

The drawing is a plain diagram of the graph (nodes, sockets, links, widget values) made with Pillow,
in the colours of ComfyUI's dark theme; the pack's nodes are highlighted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
DOCS = ROOT / "docs"

# Sockets of every node type used: (inputs that are sockets, outputs, widget names in widgets_values order).
# Widget inputs that a link feeds are listed in sockets as well (ComfyUI "converted widgets").
SPECS: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]] = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], ["ckpt_name"]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], ["text"]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")], ["width", "height", "batch_size"]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
                 [("LATENT", "LATENT")], ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")], []),
    "SaveImage": ([("images", "IMAGE")], [], ["filename_prefix"]),
    "PreviewImage": ([("images", "IMAGE")], [], []),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")], ["image", "upload"]),
    "ControlNetLoader": ([], [("CONTROL_NET", "CONTROL_NET")], ["control_net_name"]),
    "UNETLoader": ([], [("MODEL", "MODEL")], ["unet_name", "weight_dtype"]),
    "DualCLIPLoader": ([], [("CLIP", "CLIP")], ["clip_name1", "clip_name2", "type", "device"]),
    "VAELoader": ([], [("VAE", "VAE")], ["vae_name"]),
    "FluxGuidance": ([("conditioning", "CONDITIONING")], [("CONDITIONING", "CONDITIONING")], ["guidance"]),
    "InstructPixToPixConditioning": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"), ("pixels", "IMAGE")],
                                     [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT")], []),
    "LoadVideo": ([], [("VIDEO", "VIDEO")], ["file", "upload"]),
    "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")], []),
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")], [("VIDEO", "VIDEO")], ["fps"]),
    "SaveVideo": ([("video", "VIDEO")], [], ["filename_prefix", "format", "codec"]),
    "AnyDepthLoadModel": ([], [("depth_model", "DEPTH_MODEL")], ["model", "dtype", "memory"]),
    "AnyDepthEstimate": ([("depth_model", "DEPTH_MODEL"), ("image", "IMAGE")], [("depth", "DEPTH"), ("control_image", "IMAGE")],
                         ["input_size", "batch_size", "tile_size", "tta", "max_tokens"]),
    "AnyDepthToImage": ([("depth", "DEPTH"), ("sky_mask", "MASK")], [("image", "IMAGE")],
                        ["mode", "scope", "low_percentile", "high_percentile", "near", "far", "invert", "gamma"]),
    "AnyDepthColormap": ([("image", "IMAGE")], [("image", "IMAGE")], ["colormap"]),
    "AnyDepthAnything": ([("image", "IMAGE")], [("image", "IMAGE")], ["model", "input_size", "mode", "scope", "max_tokens"]),
    "AnyDepthApplyControlNet": ([("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("control_net", "CONTROL_NET"),
                                 ("latent", "LATENT"), ("image", "IMAGE"), ("depth", "DEPTH"), ("vae", "VAE")],
                                [("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                                ["strength", "start_percent", "end_percent", "fit"]),
    "AnyDepthSave": ([("depth", "DEPTH")], [], ["filename_prefix", "format", "mode", "scope", "near", "far", "invert"]),
    "AnyDepthVideoDepth": ([("depth_model", "DEPTH_MODEL"), ("image", "IMAGE"), ("video", "VIDEO")],
                           [("depth", "DEPTH"), ("control_image", "IMAGE")],
                           ["input_size", "batch_size", "chunk_size", "overlap", "mode", "robust", "momentum",
                            "static_threshold", "tile_size", "tta", "target_fps", "max_frames", "streaming", "max_tokens"]),
    "ImageBatch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")], []),
    "AnyDepthAnyViewGeometry": ([("depth_model", "DEPTH_MODEL"), ("image", "IMAGE")],
                                [("depth", "DEPTH"), ("confidence", "IMAGE"), ("camera_poses", "STRING"), ("geometry", "GEOMETRY"),
                                 ("sky_mask", "MASK"), ("confidence_mask", "MASK"), ("fov_degrees", "FLOAT"),
                                 ("focal_length", "FLOAT")],
                                ["ref_view_strategy", "process_res", "cameras", "max_tokens", "pose_method"]),
    "AnyDepthGeometryToPointCloud": ([("geometry", "GEOMETRY")], [],
                                     ["format", "conf_percentile", "max_points", "filename_prefix"]),
    "AnyDepthDepthToMesh": ([("depth", "DEPTH"), ("geometry", "GEOMETRY"), ("image", "IMAGE")], [("mesh", "MESH")],
                            ["view", "fov_degrees", "focal_length", "stride", "discontinuity", "conf_percentile", "near",
                             "far"]),
    "AnyDepthSaveMesh": ([("mesh", "MESH")], [("model_file", "STRING")], ["format", "filename_prefix"]),
    "Preview3D": ([("camera_info", "LOAD3D_CAMERA"), ("bg_image", "IMAGE"), ("model_file", "STRING")], [], ["model_file"]),
    "Note": ([], [], ["text"]),  # frontend-only: not part of the prompt
}
WIDGET_SOCKETS = {("CreateVideo", "fps"), ("Preview3D", "model_file")}
"""Socket inputs above that are widgets fed by a link (the UI marks them with ``"widget"``)."""

TITLES = {
    "AnyDepthLoadModel": "Load Depth Model", "AnyDepthEstimate": "Estimate Depth", "AnyDepthToImage": "Depth to Image",
    "AnyDepthColormap": "Depth Colormap", "AnyDepthAnything": "Depth Anything (one step)",
    "AnyDepthApplyControlNet": "Apply Depth ControlNet", "AnyDepthSave": "Save Depth",
    "AnyDepthVideoDepth": "Estimate Video Depth",
    "CheckpointLoaderSimple": "Load Checkpoint", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "EmptyLatentImage": "Empty Latent Image", "VAEDecode": "VAE Decode", "SaveImage": "Save Image",
    "PreviewImage": "Preview Image", "LoadImage": "Load Image", "ControlNetLoader": "Load ControlNet Model",
    "UNETLoader": "Load Diffusion Model", "DualCLIPLoader": "DualCLIPLoader", "VAELoader": "Load VAE",
    "FluxGuidance": "FluxGuidance", "InstructPixToPixConditioning": "InstructPixToPixConditioning",
    "LoadVideo": "Load Video", "GetVideoComponents": "Get Video Components", "CreateVideo": "Create Video",
    "SaveVideo": "Save Video", "KSampler": "KSampler", "Note": "Note",
    "ImageBatch": "Batch Images", "AnyDepthAnyViewGeometry": "Any-View Geometry",
    "AnyDepthGeometryToPointCloud": "Geometry to Point Cloud", "AnyDepthDepthToMesh": "Depth to Mesh",
    "AnyDepthSaveMesh": "Save Mesh", "Preview3D": "Preview 3D & Animation",
}

# -- node sizes as ComfyUI's frontend draws them -------------------------------------------------------------------
# LiteGraph (comfyui-frontend-package 1.32.9) grows a node to its computeSize() when it is opened: one row of
# NODE_SLOT_HEIGHT per socket row, NODE_WIDGET_HEIGHT + 4 per widget (upload buttons and "control after
# generate" included), 8 below the widgets. The title bar (NODE_TITLE_HEIGHT) is drawn above `pos`.
TITLE_H, SLOT_H, WIDGET_H, WIDGETS_PAD = 30.0, 20.0, 24.0, 8.0
TEXT_BOX_H = 84.0
"""A multiline prompt box: four lines of text (the frontend's minimum is smaller; prompts need room)."""
PREVIEWS: dict[str, tuple[str, float]] = {
    # Nodes that show a picture grow by it: the frontend's image/video preview widget has a minimum height of 220,
    # the pack's depth preview (js/anydepth_depth_preview.js) 220 and its 3D viewer (js/anydepth_pointcloud.js) 300,
    # shown by Any-View Geometry, Geometry to Point Cloud and Save Mesh.
    "LoadImage": ("image preview", 224.0), "PreviewImage": ("image preview", 224.0),
    "SaveImage": ("image preview", 224.0), "AnyDepthSave": ("image preview", 224.0),
    "LoadVideo": ("video preview", 224.0), "SaveVideo": ("video preview", 224.0),
    "AnyDepthEstimate": ("depth preview + probe", 224.0), "AnyDepthAnyViewGeometry": ("3D viewer", 304.0),
    "AnyDepthGeometryToPointCloud": ("3D viewer", 304.0), "AnyDepthSaveMesh": ("3D viewer", 304.0),
}
NODE_W = 340.0
PREVIEW_3D_SIZE = (400.0, 550.0)
"""Core's Preview 3D as the frontend sizes it (comfyui-frontend-package 1.32.9); it goes in a graph's last column."""
"""Every node's width: the depth preview sets Estimate Depth to at least 340, the others need less."""
LEFT, TOP, COLUMN_PITCH, ROW_GAP = 40.0, 60.0, 420.0, 30.0
"""Layout: the first column's x, the first node's y (its title above it), column pitch (room for links), the free
space between a node and the next node's title bar."""
NOTE_WRAP, NOTE_LINE_H = 58, 16.0


def node_size(type_: str, widgets: list) -> tuple[float, float]:
    """The (width, height) of a node's body in ComfyUI's frontend, title bar excluded.

    Example:
        >>> node_size("LoadImage", ["example.png", "image"])  # 2 output rows, 2 widgets, the image preview
        (340.0, 320.0)
    """
    if type_ == "Note":
        return NODE_W, 20.0 + NOTE_LINE_H * len(_wrap(widgets[0], NOTE_WRAP))
    if type_ == "Preview3D":  # the frontend's Preview3D extension makes the node at least 400 × 550 (its 3D view)
        return PREVIEW_3D_SIZE
    ins, outs, names = SPECS[type_]
    rows = max(len([1 for name, _ in ins if (type_, name) not in WIDGET_SOCKETS]), len(outs), 1)
    height = SLOT_H * rows
    if names:
        height += WIDGET_H * len(names) + WIDGETS_PAD
    if type_ == "CLIPTextEncode":
        height += TEXT_BOX_H - WIDGET_H
    return NODE_W, height + PREVIEWS.get(type_, ("", 0.0))[1]


@dataclass
class Node:
    id: int
    type: str
    widgets: list
    column: int
    title: str | None = None
    links_in: dict = field(default_factory=dict)  # input name -> link id
    links_out: dict = field(default_factory=dict)  # output slot -> [link ids]
    pos: tuple[float, float] = (0.0, 0.0)
    size: tuple[float, float] = (0.0, 0.0)


class Graph:
    """A workflow under construction: add nodes in columns, connect outputs to inputs."""

    def __init__(self, name: str, note: str) -> None:
        self.name, self.note = name, note
        self.nodes: list[Node] = []
        self.links: list[list] = []

    def add(self, type_: str, widgets: list | None = None, *, column: int, title: str | None = None) -> Node:
        specs = SPECS[type_]
        widgets = list(widgets or [])
        if len(widgets) != len(specs[2]):
            raise ValueError(f"{type_}: {len(specs[2])} widget values expected ({specs[2]}), got {widgets}")
        node = Node(len(self.nodes) + 1, type_, widgets, column, title)
        self.nodes.append(node)
        return node

    def connect(self, src: Node, output: str, dst: Node, input_: str) -> None:
        outs = SPECS[src.type][1]
        slot = next(i for i, (n, _) in enumerate(outs) if n == output)
        ins = SPECS[dst.type][0]
        in_slot = next(i for i, (n, _) in enumerate(ins) if n == input_)
        if outs[slot][1] != ins[in_slot][1]:
            raise ValueError(f"{src.type}.{output} ({outs[slot][1]}) cannot feed {dst.type}.{input_} ({ins[in_slot][1]})")
        link_id = len(self.links) + 1
        self.links.append([link_id, src.id, slot, dst.id, in_slot, outs[slot][1]])
        dst.links_in[input_] = link_id
        src.links_out.setdefault(slot, []).append(link_id)

    # -- layout and serialisation ---------------------------------------------------------------

    def layout(self) -> None:
        """Place the nodes in their columns, each as tall as the frontend will draw it, none covering another.

        The sizes are those of ComfyUI's frontend (see ``node_size``), so a node keeps its size when the workflow
        is opened, and the gap between two nodes of a column leaves room for the title bar drawn above ``pos``.
        The note comes first in its column: it is what a newcomer reads first.
        """
        tops: dict[int, float] = {}
        for node in sorted(self.nodes, key=lambda n: (n.column, n.type != "Note", n.id)):
            node.size = node_size(node.type, node.widgets)
            y = tops.get(node.column, TOP)
            node.pos = (LEFT + node.column * COLUMN_PITCH, y)
            tops[node.column] = y + node.size[1] + TITLE_H + ROW_GAP

    def order(self) -> list[Node]:
        done: set[int] = set()
        out: list[Node] = []
        by_link = {lk[0]: lk for lk in self.links}
        while len(out) < len(self.nodes):
            for node in self.nodes:
                if node.id not in done and all(by_link[i][1] in done for i in node.links_in.values()):
                    done.add(node.id)
                    out.append(node)
        return out

    def to_json(self) -> dict:
        if not any(n.type == "Note" for n in self.nodes):
            self.add("Note", [self.note], column=0, title="About this workflow")
        self.layout()
        order = {n.id: i for i, n in enumerate(self.order())}
        nodes = []
        for node in self.nodes:
            ins, outs, _ = SPECS[node.type]
            inputs = []
            for name, typ in ins:
                entry = {"name": name, "type": typ, "link": node.links_in.get(name)}
                if (node.type, name) in WIDGET_SOCKETS:
                    entry["widget"] = {"name": name}
                if name in node.links_in or (node.type, name) not in WIDGET_SOCKETS:
                    inputs.append(entry)
            outputs = [{"name": name, "type": typ, "links": node.links_out.get(i, []), "slot_index": i}
                       for i, (name, typ) in enumerate(outs)]
            item = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size), "flags": {},
                    "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": outputs,
                    "properties": {"Node name for S&R": node.type}, "widgets_values": node.widgets}
            if node.title:
                item["title"] = node.title
            if node.type == "Note":
                item.update(properties={"text": ""}, color="#432", bgcolor="#653")
            nodes.append(item)
        return {
            "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": nodes, "links": self.links,
            "groups": [], "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
            "version": 0.4,
        }


# --------------------------------------------------------------------------------------------- the graphs

SD15_CKPT = "v1-5-pruned-emaonly-fp16.safetensors"
SD15_DEPTH_CN = "control_v11f1p_sd15_depth.pth"
SDXL_CKPT = "sd_xl_base_1.0.safetensors"
SDXL_DEPTH_CN = "diffusers_xl_depth_full.safetensors"
DEFAULT_DEPTH = "v2-small (Apache-2.0)"
METRIC_DEPTH = "v2-metric-indoor-small (Apache-2.0)"
KSAMPLER_SD = [42, "fixed", 25, 7.0, "dpmpp_2m", "karras", 1.0]
AUTO = -1
"""``max_tokens`` -1: the library's default token budget (four input_size squares)."""


def _text_pair(g: Graph, clip_src: Node, positive: str, negative: str, column: int) -> tuple[Node, Node]:
    pos = g.add("CLIPTextEncode", [positive], column=column, title="Positive prompt")
    neg = g.add("CLIPTextEncode", [negative], column=column, title="Negative prompt")
    g.connect(clip_src, "CLIP", pos, "clip")
    g.connect(clip_src, "CLIP", neg, "clip")
    return pos, neg


def sd15_depth_controlnet() -> Graph:
    g = Graph("sd15_depth_controlnet", "SD1.5 + depth ControlNet: the photo's depth steers a new image. Needs "
              f"{SD15_CKPT} (models/checkpoints) and {SD15_DEPTH_CN} (models/controlnet).")
    image = g.add("LoadImage", ["example.png", "image"], column=0)
    depth_model = g.add("AnyDepthLoadModel", [DEFAULT_DEPTH, "auto", "managed"], column=0)
    ckpt = g.add("CheckpointLoaderSimple", [SD15_CKPT], column=0)
    estimate = g.add("AnyDepthEstimate", [518, 4, 0, "none", AUTO], column=1)
    pos, neg = _text_pair(g, ckpt, "a cozy reading nook with a green armchair, warm evening light, photograph",
                          "blurry, low quality, distorted", column=1)
    cnet = g.add("ControlNetLoader", [SD15_DEPTH_CN], column=1)
    latent = g.add("EmptyLatentImage", [768, 512, 1], column=1)
    apply = g.add("AnyDepthApplyControlNet", [1.0, 0.0, 1.0, "pad"], column=2)
    preview = g.add("PreviewImage", [], column=2, title="Depth control image")
    sampler = g.add("KSampler", KSAMPLER_SD, column=3)
    decode = g.add("VAEDecode", [], column=3)
    save = g.add("SaveImage", ["anydepth/sd15_depth"], column=3)
    g.connect(depth_model, "depth_model", estimate, "depth_model")
    g.connect(image, "IMAGE", estimate, "image")
    g.connect(estimate, "control_image", preview, "images")
    for a, b in ((pos, "positive"), (neg, "negative")):
        g.connect(a, "CONDITIONING", apply, b)
    g.connect(cnet, "CONTROL_NET", apply, "control_net")
    g.connect(latent, "LATENT", apply, "latent")
    g.connect(estimate, "control_image", apply, "image")
    g.connect(ckpt, "MODEL", sampler, "model")
    g.connect(apply, "positive", sampler, "positive")
    g.connect(apply, "negative", sampler, "negative")
    g.connect(latent, "LATENT", sampler, "latent_image")
    g.connect(sampler, "LATENT", decode, "samples")
    g.connect(ckpt, "VAE", decode, "vae")
    g.connect(decode, "IMAGE", save, "images")
    return g


def sdxl_depth_controlnet() -> Graph:
    g = Graph("sdxl_depth_controlnet", "SDXL + depth ControlNet with the one-step Depth Anything node. Needs "
              f"{SDXL_CKPT} (models/checkpoints) and {SDXL_DEPTH_CN} (models/controlnet).")
    image = g.add("LoadImage", ["example.png", "image"], column=0)
    ckpt = g.add("CheckpointLoaderSimple", [SDXL_CKPT], column=0)
    depth = g.add("AnyDepthAnything", [DEFAULT_DEPTH, 518, "v2_style", "image", AUTO], column=1)
    pos, neg = _text_pair(g, ckpt, "a modern glass house in a pine forest at dawn, mist, architectural photograph",
                          "blurry, low quality, cartoon", column=1)
    cnet = g.add("ControlNetLoader", [SDXL_DEPTH_CN], column=1)
    latent = g.add("EmptyLatentImage", [1216, 832, 1], column=1)
    apply = g.add("AnyDepthApplyControlNet", [0.6, 0.0, 0.8, "pad"], column=2)
    sampler = g.add("KSampler", [42, "fixed", 30, 6.0, "dpmpp_2m", "karras", 1.0], column=3)
    decode = g.add("VAEDecode", [], column=3)
    save = g.add("SaveImage", ["anydepth/sdxl_depth"], column=3)
    g.connect(image, "IMAGE", depth, "image")
    g.connect(pos, "CONDITIONING", apply, "positive")
    g.connect(neg, "CONDITIONING", apply, "negative")
    g.connect(cnet, "CONTROL_NET", apply, "control_net")
    g.connect(latent, "LATENT", apply, "latent")
    g.connect(depth, "image", apply, "image")
    g.connect(ckpt, "MODEL", sampler, "model")
    g.connect(apply, "positive", sampler, "positive")
    g.connect(apply, "negative", sampler, "negative")
    g.connect(latent, "LATENT", sampler, "latent_image")
    g.connect(sampler, "LATENT", decode, "samples")
    g.connect(ckpt, "VAE", decode, "vae")
    g.connect(decode, "IMAGE", save, "images")
    return g


def flux_depth_dev() -> Graph:
    g = Graph("flux_depth_dev", "FLUX.1 Depth [dev]: the depth image enters through InstructPixToPixConditioning. "
              "Needs flux1-depth-dev.safetensors (models/diffusion_models), clip_l.safetensors and "
              "t5xxl_fp16.safetensors (models/text_encoders), ae.safetensors (models/vae).")
    image = g.add("LoadImage", ["example.png", "image"], column=0)
    depth_model = g.add("AnyDepthLoadModel", [DEFAULT_DEPTH, "auto", "managed"], column=0)
    unet = g.add("UNETLoader", ["flux1-depth-dev.safetensors", "default"], column=0)
    clip = g.add("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"], column=0)
    vae = g.add("VAELoader", ["ae.safetensors"], column=0)
    estimate = g.add("AnyDepthEstimate", [518, 4, 0, "none", AUTO], column=1)
    pos, neg = _text_pair(g, clip, "a ceramic teapot on a wooden table, soft window light, product photograph", "", column=1)
    guidance = g.add("FluxGuidance", [10.0], column=2)
    ip2p = g.add("InstructPixToPixConditioning", [], column=2)
    sampler = g.add("KSampler", [42, "fixed", 20, 1.0, "euler", "simple", 1.0], column=3)
    decode = g.add("VAEDecode", [], column=3)
    save = g.add("SaveImage", ["anydepth/flux_depth"], column=3)
    g.connect(depth_model, "depth_model", estimate, "depth_model")
    g.connect(image, "IMAGE", estimate, "image")
    g.connect(pos, "CONDITIONING", guidance, "conditioning")
    g.connect(guidance, "CONDITIONING", ip2p, "positive")
    g.connect(neg, "CONDITIONING", ip2p, "negative")
    g.connect(vae, "VAE", ip2p, "vae")
    g.connect(estimate, "control_image", ip2p, "pixels")
    g.connect(unet, "MODEL", sampler, "model")
    g.connect(ip2p, "positive", sampler, "positive")
    g.connect(ip2p, "negative", sampler, "negative")
    g.connect(ip2p, "latent", sampler, "latent_image")
    g.connect(sampler, "LATENT", decode, "samples")
    g.connect(vae, "VAE", decode, "vae")
    g.connect(decode, "IMAGE", save, "images")
    return g


def video_frames_to_depth_images() -> Graph:
    g = Graph("video_frames_to_depth_images", "Every frame of a video to depth in batches: one normalisation for the "
              "whole clip (no flicker), saved as 16-bit control PNG frames and as a depth video. Needs only a video in "
              "input/.")
    video = g.add("LoadVideo", ["example_video.mp4", "image"], column=0)
    depth_model = g.add("AnyDepthLoadModel", [DEFAULT_DEPTH, "auto", "managed"], column=0)
    parts = g.add("GetVideoComponents", [], column=1)
    estimate = g.add("AnyDepthEstimate", [518, 8, 0, "none", AUTO], column=1)
    to_image = g.add("AnyDepthToImage", ["v2_style", "batch", 1.0, 99.0, 0.0, 0.0, False, 1.0], column=2)
    save_frames = g.add("AnyDepthSave", ["anydepth/video_depth/frame", "control_png16", "v2_style", "batch", 0.0, 0.0, False], column=2)
    create = g.add("CreateVideo", [24.0], column=3)
    save_video = g.add("SaveVideo", ["anydepth/video_depth/depth", "auto", "auto"], column=3)
    g.connect(video, "VIDEO", parts, "video")
    g.connect(depth_model, "depth_model", estimate, "depth_model")
    g.connect(parts, "images", estimate, "image")
    g.connect(estimate, "depth", to_image, "depth")
    g.connect(estimate, "depth", save_frames, "depth")
    g.connect(to_image, "image", create, "images")
    g.connect(parts, "fps", create, "fps")
    g.connect(create, "VIDEO", save_video, "video")
    return g


VDA_DEPTH = "vda-small (Apache-2.0)"
"""Video Depth Anything Small (temporal), downloaded into models/videodepthanything on first use."""


def video_to_depth_video() -> Graph:
    g = Graph("video_to_depth_video", "A video to a flicker-free depth video with Video Depth Anything (its temporal "
              "network over 32-frame windows, as the official code): raw depth of every frame as NPY (kind and units "
              "kept) plus 16-bit control PNGs, and an MP4 of the control video at the source's frame rate. Needs only a "
              "video in input/ (vda-small downloads into models/videodepthanything on first use).")
    video = g.add("LoadVideo", ["example_video.mp4", "image"], column=0)
    depth_model = g.add("AnyDepthLoadModel", [VDA_DEPTH, "auto", "managed"], column=0)
    estimate = g.add("AnyDepthVideoDepth", [518, 4, 16, 4, "running", "irls", 0.2, 0.0, 0, "none", 0.0, 0, False, AUTO],
                     column=1)
    parts = g.add("GetVideoComponents", [], column=1)
    save = g.add("AnyDepthSave", ["anydepth/vda/depth", "control_png16+npy", "v2_style", "batch", 0.0, 0.0, False], column=2)
    create = g.add("CreateVideo", [24.0], column=2)
    save_video = g.add("SaveVideo", ["anydepth/vda/depth", "auto", "auto"], column=3)
    g.connect(video, "VIDEO", estimate, "video")
    g.connect(depth_model, "depth_model", estimate, "depth_model")
    g.connect(video, "VIDEO", parts, "video")
    g.connect(estimate, "depth", save, "depth")
    g.connect(estimate, "control_image", create, "images")
    g.connect(parts, "fps", create, "fps")
    g.connect(create, "VIDEO", save_video, "video")
    return g


def metric_depth_to_png16() -> Graph:
    g = Graph("metric_depth_to_png16", "Metric depth in metres, kept: raw float32 NPY (Load Depth reads it back) plus "
              "a 16-bit control PNG with a fixed mapping (metric_linear, near 0.01 m = 65535, far 20 m = 0) and a colour "
              "preview. Needs only an image.")
    image = g.add("LoadImage", ["example.png", "image"], column=0)
    depth_model = g.add("AnyDepthLoadModel", [METRIC_DEPTH, "auto", "managed"], column=0)
    estimate = g.add("AnyDepthEstimate", [518, 4, 0, "none", AUTO], column=1)
    save = g.add("AnyDepthSave", ["anydepth/metric/depth", "control_png16+npy", "metric_linear", "image", 0.01, 20.0, False], column=2)
    to_image = g.add("AnyDepthToImage", ["metric_disparity", "image", 1.0, 99.0, 0.0, 0.0, False, 1.0], column=2)
    colormap = g.add("AnyDepthColormap", ["inferno"], column=3)
    preview = g.add("PreviewImage", [], column=3, title="Metric depth preview")
    g.connect(depth_model, "depth_model", estimate, "depth_model")
    g.connect(image, "IMAGE", estimate, "image")
    g.connect(estimate, "depth", save, "depth")
    g.connect(estimate, "depth", to_image, "depth")
    g.connect(to_image, "image", colormap, "image")
    g.connect(colormap, "image", preview, "images")
    return g


def image_to_depth_map() -> Graph:
    g = Graph("image_to_depth_map", "An image to a depth ControlNet image. Estimate Depth shows the depth (hover to read "
              "values, pick a colour map); Depth to Image normalises it for ControlNets; Save Image writes it. Needs "
              "only an image (the model downloads on first use).")
    image = g.add("LoadImage", ["example.png", "image"], column=0)
    depth_model = g.add("AnyDepthLoadModel", [DEFAULT_DEPTH, "auto", "managed"], column=0)
    estimate = g.add("AnyDepthEstimate", [518, 4, 0, "none", AUTO], column=1)
    to_image = g.add("AnyDepthToImage", ["v2_style", "image", 1.0, 99.0, 0.0, 0.0, False, 1.0], column=2)
    save = g.add("SaveImage", ["anydepth/depth_map"], column=2)
    g.connect(image, "IMAGE", estimate, "image")
    g.connect(depth_model, "depth_model", estimate, "depth_model")
    g.connect(estimate, "depth", to_image, "depth")
    g.connect(to_image, "image", save, "images")
    return g


DA3_MODEL = "DA3-SMALL/model.safetensors"
"""The DA3-SMALL repo (config.json + model.safetensors, Apache-2.0) downloaded into models/depthanything3/DA3-SMALL."""
PHOTOS = ("photo_1.png", "photo_2.png", "photo_3.png")


def _photo_scene(g: Graph) -> Node:
    """Three photos batched into Any-View Geometry with DA3-SMALL (columns 0-2); returns the geometry node."""
    photos = [g.add("LoadImage", [name, "image"], column=0) for name in PHOTOS]
    depth_model = g.add("AnyDepthLoadModel", [DA3_MODEL, "auto", "managed"], column=1)
    batch12 = g.add("ImageBatch", [], column=1)
    batch123 = g.add("ImageBatch", [], column=1)
    geometry = g.add("AnyDepthAnyViewGeometry", ["saddle_balanced", 504, "", AUTO, "cam_dec"], column=2)
    g.connect(photos[0], "IMAGE", batch12, "image1")
    g.connect(photos[1], "IMAGE", batch12, "image2")
    g.connect(batch12, "IMAGE", batch123, "image1")
    g.connect(photos[2], "IMAGE", batch123, "image2")
    g.connect(depth_model, "depth_model", geometry, "depth_model")
    g.connect(batch123, "IMAGE", geometry, "image")
    return geometry


def photos_to_point_cloud() -> Graph:
    g = Graph("photos_to_point_cloud", "A few photos of one scene to a coloured point cloud with the cameras (PLY + GLB in "
              "output/anydepth/), plus per-view depth and confidence. Needs photo_1..3.png in input/ and the DA3-SMALL "
              "files (config.json + model.safetensors from depth-anything/DA3-SMALL) in models/depthanything3/DA3-SMALL.")
    geometry = _photo_scene(g)
    cloud = g.add("AnyDepthGeometryToPointCloud", ["ply+glb", 40.0, 1000000, "anydepth/point_cloud"], column=3)
    to_image = g.add("AnyDepthToImage", ["v2_style", "batch", 1.0, 99.0, 0.0, 0.0, False, 1.0], column=3)
    preview = g.add("PreviewImage", [], column=3, title="Depth per view")
    g.connect(geometry, "geometry", cloud, "geometry")
    g.connect(geometry, "depth", to_image, "depth")
    g.connect(to_image, "image", preview, "images")
    return g


def photos_to_mesh() -> Graph:
    g = Graph("photos_to_mesh", "A few photos of one scene to a coloured triangle mesh in one world frame (cut at depth "
              "jumps, least confident pixels dropped), saved as GLB in output/anydepth/ and shown in core's Preview 3D. "
              "Depth to Mesh gives ComfyUI's MESH, so core's Save GLB takes it too. Needs photo_1..3.png in input/ and "
              "the DA3-SMALL files (config.json + model.safetensors from depth-anything/DA3-SMALL) in "
              "models/depthanything3/DA3-SMALL.")
    geometry = _photo_scene(g)
    mesh = g.add("AnyDepthDepthToMesh", [-1, 60.0, 0.0, 1, 0.1, 10.0, 1.0, 10.0], column=3)
    save = g.add("AnyDepthSaveMesh", ["glb", "anydepth/mesh"], column=3)
    preview = g.add("Preview3D", [""], column=4)
    g.connect(geometry, "geometry", mesh, "geometry")
    g.connect(mesh, "mesh", save, "mesh")
    g.connect(save, "model_file", preview, "model_file")
    return g


GRAPHS = (sd15_depth_controlnet, sdxl_depth_controlnet, flux_depth_dev, video_frames_to_depth_images, video_to_depth_video,
          metric_depth_to_png16, image_to_depth_map, photos_to_point_cloud, photos_to_mesh)


# --------------------------------------------------------------------------------------------- drawing

BG, GRID = (32, 32, 32), (40, 40, 40)
NOTE_BG, NOTE_TITLE = (102, 85, 51), (68, 51, 34)
NODE_BG, NODE_TITLE, ANYDEPTH_TITLE = (53, 53, 53), (34, 34, 34), (34, 74, 110)
TEXT, DIM, WIDGET_BG, PREVIEW_BG = (225, 225, 225), (160, 160, 160), (34, 34, 34), (26, 26, 26)
TYPE_COLOURS = {
    "MODEL": (179, 157, 219), "CLIP": (255, 214, 0), "VAE": (255, 100, 100), "CONDITIONING": (255, 160, 50),
    "LATENT": (255, 156, 249), "IMAGE": (100, 181, 246), "MASK": (129, 199, 132), "CONTROL_NET": (0, 214, 163),
    "DEPTH_MODEL": (77, 208, 225), "DEPTH": (38, 198, 218), "VIDEO": (230, 130, 200), "FLOAT": (170, 238, 136),
    "AUDIO": (170, 170, 170), "MESH": (255, 183, 77), "GEOMETRY": (149, 117, 205), "STRING": (120, 144, 156),
}


def _font(size: int):
    return ImageFont.load_default(size=size)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in str(text).split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return lines + [line]


def _short(value) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 30 else text[:28] + "…"


def render(workflow: dict, scale: float = 1.0) -> Image.Image:
    """Draw a UI-format workflow: nodes with their sockets and widget values, links as curves."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values()) + 40
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values()) + 40
    w, h = int(x1 * scale), int(y1 * scale)
    img = Image.new("RGB", (w, h), BG)
    d = ImageDraw.Draw(img)
    s = scale
    for gx in range(0, w, int(40 * s) or 1):
        d.line([(gx, 0), (gx, h)], fill=GRID)
    for gy in range(0, h, int(40 * s) or 1):
        d.line([(0, gy), (w, gy)], fill=GRID)
    title_font, body_font = _font(max(8, int(15 * s))), _font(max(7, int(12 * s)))

    def socket_xy(node: dict, slot: int, output: bool) -> tuple[float, float]:
        x = node["pos"][0] + (node["size"][0] if output else 0)
        return x * s, (node["pos"][1] + SLOT_H * (slot + 0.5)) * s

    for link_id, src, src_slot, dst, dst_slot, typ in workflow["links"]:
        (ax, ay), (bx, by) = socket_xy(nodes[src], src_slot, True), socket_xy(nodes[dst], dst_slot, False)
        k = max(40 * s, abs(bx - ax) / 2)
        pts = []
        for i in range(33):
            t = i / 32
            pts.append(((1 - t) ** 3 * ax + 3 * (1 - t) ** 2 * t * (ax + k) + 3 * (1 - t) * t * t * (bx - k) + t ** 3 * bx,
                        (1 - t) ** 3 * ay + 3 * (1 - t) ** 2 * t * ay + 3 * (1 - t) * t * t * by + t ** 3 * by))
        d.line(pts, fill=TYPE_COLOURS.get(typ, DIM), width=max(1, int(3 * s)))

    for node in nodes.values():
        _draw_node(d, node, s, socket_xy, title_font, body_font)
    return img


def _draw_node(d: ImageDraw.ImageDraw, node: dict, s: float, socket_xy, title_font, body_font) -> None:
    """One node: title bar above ``pos``, socket rows, widget rows, then the picture area it shows (if any)."""
    x, y = node["pos"][0] * s, node["pos"][1] * s
    nw, nh = node["size"][0] * s, node["size"][1] * s
    ours = node["type"].startswith("AnyDepth")
    note = node["type"] == "Note"
    r = 8 * s
    d.rounded_rectangle([x, y - TITLE_H * s, x + nw, y + nh], radius=r, fill=NOTE_BG if note else NODE_BG,
                        outline=(77, 208, 225) if ours else (70, 70, 70), width=max(1, int(2 * s)))
    d.rounded_rectangle([x, y - TITLE_H * s, x + nw, y], radius=r,
                        fill=NOTE_TITLE if note else ANYDEPTH_TITLE if ours else NODE_TITLE)
    title = node.get("title") or TITLES.get(node["type"], node["type"])
    d.text((x + 12 * s, y - 23 * s), title, fill=TEXT, font=title_font)
    if note:
        for j, ln in enumerate(_wrap(node["widgets_values"][0], NOTE_WRAP)):
            d.text((x + 14 * s, y + (10 + NOTE_LINE_H * j) * s), ln, fill=TEXT, font=body_font)
        return
    for i, inp in enumerate(node["inputs"]):
        sx, sy = socket_xy(node, i, False)
        col = TYPE_COLOURS.get(inp["type"], DIM)
        rr = 5 * s
        d.ellipse([sx - rr, sy - rr, sx + rr, sy + rr], fill=col if inp["link"] is not None else NODE_BG, outline=col)
        d.text((sx + 10 * s, sy - 8 * s), inp["name"], fill=DIM, font=body_font)
    for i, out in enumerate(node["outputs"]):
        sx, sy = socket_xy(node, i, True)
        col = TYPE_COLOURS.get(out["type"], DIM)
        rr = 5 * s
        d.ellipse([sx - rr, sy - rr, sx + rr, sy + rr], fill=col if out["links"] else NODE_BG, outline=col)
        d.text((sx - 10 * s, sy - 8 * s), out["name"], fill=DIM, font=body_font, anchor="ra")
    rows = max(len([i for i in node["inputs"] if "widget" not in i]), len(node["outputs"]), 1)
    wy = node["pos"][1] + SLOT_H * rows + 4
    for name, value in zip(SPECS[node["type"]][2], node["widgets_values"]):
        top = wy * s
        tall = TEXT_BOX_H - 4 if node["type"] == "CLIPTextEncode" else WIDGET_H - 4
        d.rounded_rectangle([x + 10 * s, top, x + nw - 10 * s, top + tall * s], radius=6 * s, fill=WIDGET_BG)
        if node["type"] == "CLIPTextEncode":
            for j, ln in enumerate(_wrap(value, 44)[:4]):
                d.text((x + 18 * s, top + (4 + 18 * j) * s), ln, fill=TEXT, font=body_font)
        elif name == "upload":
            d.text((x + nw / 2, top + 3 * s), "choose file to upload", fill=DIM, font=body_font, anchor="ma")
        else:
            d.text((x + 18 * s, top + 3 * s), name, fill=DIM, font=body_font)
            room = nw - 46 * s - d.textlength(name, font=body_font)
            text = _short(value)
            while len(text) > 2 and d.textlength(text, font=body_font) > room:
                text = text[:-2] + "…"
            d.text((x + nw - 18 * s, top + 3 * s), text, fill=TEXT, font=body_font, anchor="ra")
        wy += tall + 4
    if node["type"] in PREVIEWS:
        label, tall = PREVIEWS[node["type"]]
        top = (node["pos"][1] + node["size"][1] - tall) * s
        d.rounded_rectangle([x + 10 * s, top, x + nw - 10 * s, y + nh - 8 * s], radius=6 * s, fill=PREVIEW_BG)
        d.text((x + nw / 2, (top + y + nh) / 2), label, fill=DIM, font=body_font, anchor="mm")


def thumbnail(workflow: dict, size: tuple[int, int] = (640, 400)) -> Image.Image:
    """A ``size`` JPEG-ready thumbnail: the whole graph scaled to fit, centred on the background."""
    full = render(workflow, scale=1.0)
    ratio = min(size[0] / full.width, size[1] / full.height)
    small = full.resize((max(1, int(full.width * ratio)), max(1, int(full.height * ratio))), Image.LANCZOS)
    canvas = Image.new("RGB", size, BG)
    canvas.paste(small, ((size[0] - small.width) // 2, (size[1] - small.height) // 2))
    return canvas


def main() -> None:
    WORKFLOWS.mkdir(exist_ok=True)
    DOCS.mkdir(exist_ok=True)
    for make in GRAPHS:
        graph = make()
        data = graph.to_json()
        (WORKFLOWS / f"{graph.name}.json").write_text(json.dumps(data, indent=2) + "\n")
        thumbnail(data).save(WORKFLOWS / f"{graph.name}.jpg", quality=88, optimize=True)
        if graph.name == "sd15_depth_controlnet":
            render(data, scale=1.0).save(DOCS / "workflow_sd15_depth_controlnet.png", optimize=True)
        print(f"wrote workflows/{graph.name}.json and .jpg")


if __name__ == "__main__":
    main()
