"""Every published Depth Anything checkpoint (V1, V2, 3 and models built on them), as data.

A :class:`Variant` says where a checkpoint lives on the Hugging Face hub, which network it fits,
what it outputs and under which license it may be used. Names are short and regular:
``v<family>-[metric-<indoor|outdoor>-]<small|base|large|giant>[-hf|-fp16|-fp32]``; Depth Anything 3
variants keep the official ``model_name`` (``da3-small``, ``da3mono-large``, ``da3nested-giant-large-1.1`` ...);
models fine-tuned from V2 keep their project's name (``distill-any-depth-large``, ``depth-anything-ac-small``).

Where sources disagree on a license (a model card against the README, or a fine-tune of
non-commercial weights published under a permissive card), :attr:`Variant.license` keeps the
cautious value and :attr:`Variant.license_note` says what disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from .kinds import DEPTH, DISPARITY, METRIC_DEPTH, DepthKind

APACHE = "Apache-2.0"
CC_BY_NC = "CC-BY-NC-4.0"

#: The default model: small, fast and Apache-2.0 licensed.
DEFAULT_MODEL = "v2-small"

_GENERIC_FILE_NAMES = {"pytorch_model.bin", "model.safetensors"}

#: Files fetched with a transformers repo that a local copy may lack (older downloads): anydepth
#: does not need them, transformers' ``pipeline`` / ``AutoImageProcessor`` does.
OPTIONAL_FILES = frozenset({"preprocessor_config.json"})

#: What a transformers (``-hf``) repo holds: model config, weights, image-processor config.
HF_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")

SIZES = {"small": "vits", "base": "vitb", "large": "vitl", "giant": "vitg"}


@dataclass(frozen=True)
class Variant:
    """One published checkpoint.

    Attributes:
        name: catalogue name, e.g. ``"v2-small"``.
        family: ``"v1"``, ``"v2"`` (decides which blocks feed the head), ``"da3"`` (Depth Anything 3) or ``"vda"``
            (Video Depth Anything).
        encoder: ``"vits" | "vitb" | "vitl" | "vitg"``.
        repo_id: Hugging Face repo, or ``None`` when the weights were never released.
        files: files to fetch (paths inside the repo); a ``config.json`` among them marks a folder repo.
        layout: key layout, the format :func:`anydepth.weights.detect_format` reports for the file:
            ``"original"`` (``pretrained.*`` / ``depth_head.*``), ``"hf"`` (transformers), ``"da3"``
            (official DA3 ``model.*`` keys), ``"comfy_da3"`` (ComfyUI core's repack: transformers-named backbone,
            optionally under ``diffusion_model.``), ``"distill"`` (``backbone.*``, possibly chunked blocks) or ``"vda"``
            (``pretrained.*`` / ``head.*`` with ``head.motion_modules.*``).
        license: SPDX-like id; the cautious one where sources disagree.
        kind: ``"disparity"`` (relative), ``"metric_depth"`` (metres) or ``"depth"`` (DA3 relative depth).
        max_depth: metric range in metres, ``None`` for relative models.
        notes: anything a user should know before picking it.
        aliases: other file names the same weights are commonly kept under in a models folder
            (e.g. the V1 demo Space's ``depth_anything_vitl14.pth``); a name may hold a sub-folder
            (``geometry_estimation/...``: a ComfyUI ``models`` folder given as the models directory).
        license_note: where the model card, README or upstream weights disagree on the license.
        comfy_layout: the repo is laid out like ComfyUI's ``models`` folder (the Comfy-Org repacks): its file
            keeps its repo path under a models directory, so a download into ComfyUI's ``models`` lands where
            core looks (``models/geometry_estimation/...``).
    """

    name: str
    family: str
    encoder: str
    repo_id: str | None
    files: tuple[str, ...]
    layout: str
    license: str
    kind: DepthKind = DISPARITY
    max_depth: float | None = None
    notes: str = ""
    aliases: tuple[str, ...] = ()
    license_note: str = ""
    comfy_layout: bool = False

    @property
    def weights_file(self) -> str | None:
        """The file holding the tensors (the one that is not a ``.json``), as a path inside the repo."""
        return next((f for f in self.files if not f.endswith(".json")), None)

    @property
    def required_files(self) -> tuple[str, ...]:
        """Files a local copy must hold to count as present (``files`` less :data:`OPTIONAL_FILES`)."""
        return tuple(f for f in self.files if f not in OPTIONAL_FILES)

    @property
    def is_directory(self) -> bool:
        """True for repos kept as a folder: transformers repos and generic file names (``pytorch_model.bin``)."""
        return "config.json" in self.files or self.weights_file in _GENERIC_FILE_NAMES

    @property
    def local_name(self) -> str | None:
        """Path of the file or folder in a models directory.

        A folder repo keeps its repo name; a weights file keeps its name, under a folder named after
        the repo when it sits in a sub-folder of the repo (``Distill-Any-Depth/large/model.safetensors``).
        """
        if self.repo_id is None:
            return None
        if self.comfy_layout:
            return self.weights_file
        repo_name = self.repo_id.split("/")[-1]
        if self.is_directory:
            return repo_name
        return f"{repo_name}/{self.weights_file}" if "/" in self.weights_file else self.weights_file

    def matches(self, path: str | PurePath) -> bool:
        """True when ``path`` (a file or folder, any parent) is this variant's local name or an alias.

        Example:
            >>> get_variant("distill-any-depth-large").matches("/models/Distill-Any-Depth/large/model.safetensors")
            True
            >>> get_variant("v1-large").matches("depth_anything_vitl14.pth")
            True
            >>> get_variant("v2-small-hf").matches("Depth-Anything-V2-Small-hf/model.safetensors")
            True
        """
        parts = PurePath(str(path).rstrip("/\\")).parts
        if not parts:
            return False
        if parts[-1] in self.aliases:
            return True
        if self.local_name is None:
            return False
        if self.is_directory and parts[-1] == self.weights_file:  # the weights inside the repo folder
            parts = parts[:-1]
        wanted = PurePath(self.local_name).parts
        return tuple(parts[-len(wanted):]) == wanted


def _license_v2(size: str) -> str:
    return APACHE if size == "small" else CC_BY_NC


_KIJAI = "Kijai/DepthAnythingV2-safetensors"
_KIJAI_NOTE = ("community safetensors with the original keys; the repo card says cc-by-4.0, but the weights are "
               "Depth Anything V2's, whose license applies")
_METRIC_LICENSE_NOTE = ("the depth-anything model cards say apache-2.0 while the Depth Anything V2 README lists Base/Large "
                        "under CC-BY-NC-4.0; the cautious value is kept")


def _build() -> dict[str, Variant]:
    out: list[Variant] = []
    for size, enc in list(SIZES.items())[:3]:
        out.append(Variant(f"v1-{size}", "v1", enc, f"LiheYoung/depth_anything_{enc}14", ("pytorch_model.bin",), "original", APACHE,
                           notes="original weights (PyTorchModelHubMixin file); the same weights as the V1 demo Space's "
                                 f"checkpoints/depth_anything_{enc}14.pth", aliases=(f"depth_anything_{enc}14.pth",)))
        out.append(Variant(f"v1-{size}-hf", "v1", enc, f"LiheYoung/depth-anything-{size}-hf", HF_FILES, "hf", APACHE))
    for size, enc in SIZES.items():
        cap = size.capitalize()
        if size == "giant":
            out.append(Variant("v2-giant", "v2", enc, None, (), "original", CC_BY_NC,
                               notes="architecture only: the ViT-G weights were announced but not released"))
            continue
        lic = _license_v2(size)
        out.append(Variant(f"v2-{size}", "v2", enc, f"depth-anything/Depth-Anything-V2-{cap}", (f"depth_anything_v2_{enc}.pth",), "original", lic))
        out.append(Variant(f"v2-{size}-hf", "v2", enc, f"depth-anything/Depth-Anything-V2-{cap}-hf", HF_FILES, "hf", lic))
        for precision in ("fp16", "fp32"):
            out.append(Variant(f"v2-{size}-{precision}", "v2", enc, _KIJAI, (f"depth_anything_v2_{enc}_{precision}.safetensors",),
                               "original", lic, notes=_KIJAI_NOTE))
        metric_note = _METRIC_LICENSE_NOTE if size != "small" else ""
        for scene, dataset, max_depth in (("indoor", "Hypersim", 20.0), ("outdoor", "VKITTI", 80.0)):
            trained = f"trained on {dataset}; metres up to {max_depth:g}"
            out.append(Variant(f"v2-metric-{scene}-{size}", "v2", enc, f"depth-anything/Depth-Anything-V2-Metric-{dataset}-{cap}",
                               (f"depth_anything_v2_metric_{dataset.lower()}_{enc}.pth",), "original", lic, METRIC_DEPTH, max_depth,
                               notes=trained, license_note=metric_note))
            out.append(Variant(f"v2-metric-{scene}-{size}-hf", "v2", enc,
                               f"depth-anything/Depth-Anything-V2-Metric-{scene.capitalize()}-{cap}-hf", HF_FILES, "hf", lic,
                               METRIC_DEPTH, max_depth, notes=trained, license_note=metric_note))
            if size == "large":  # Kijai published fp32 safetensors of the ViT-L metric models only
                out.append(Variant(f"v2-metric-{scene}-large-fp32", "v2", enc, _KIJAI,
                                   (f"depth_anything_v2_metric_{dataset.lower()}_{enc}_fp32.safetensors",), "original", lic,
                                   METRIC_DEPTH, max_depth, notes=f"{trained}; {_KIJAI_NOTE}", license_note=_METRIC_LICENSE_NOTE))
    return {v.name: v for v in out}


_DISTILL_NOTE = ("the xingyang1/Distill-Any-Depth card says apache-2.0 and the authors' code is MIT, but Base and Large are fine-tuned from the "
                 "CC-BY-NC-4.0 Depth Anything V2 Base/Large weights; the cautious value is kept")
_DISTILL_SMALL_NOTE = "the xingyang1/Distill-Any-Depth card says apache-2.0, the authors' code is MIT; both permit commercial use"


def _build_derived() -> dict[str, Variant]:
    """Models fine-tuned from Depth Anything V2 that load into the V2 network unchanged."""
    out: list[Variant] = []
    about = "Distill-Any-Depth (Westlake AGI Lab): V2 network distilled from several teachers; relative"
    for size, enc in list(SIZES.items())[:3]:
        lic, note = (APACHE, _DISTILL_SMALL_NOTE) if size == "small" else (CC_BY_NC, _DISTILL_NOTE)
        # The large file was saved by the authors' training code: DINOv2 under backbone.* with chunked blocks.
        layout = "distill" if size == "large" else "original"
        out.append(Variant(f"distill-any-depth-{size}", "v2", enc, "xingyang1/Distill-Any-Depth", (f"{size}/model.safetensors",),
                           layout, lic, notes=about, license_note=note))
        if size != "base":  # the authors published transformers conversions of Small and Large only
            out.append(Variant(f"distill-any-depth-{size}-hf", "v2", enc, f"xingyang1/Distill-Any-Depth-{size.capitalize()}-hf",
                               HF_FILES, "hf", lic, notes=about, license_note=note))
    out.append(Variant("depth-anything-ac-small", "v2", "vits", "ghost233lism/DepthAnything-AC",
                       ("checkpoints/depth_anything_AC_vits.pth",), "original", CC_BY_NC,
                       notes="Depth Anything AC: V2 Small fine-tuned for adverse conditions (night, fog, snow, blur); relative",
                       aliases=("depth_anything_AC_vits.pth",)))
    return {v.name: v for v in out}


#: File names the ComfyUI-DepthAnythingV3 pack stores official DA3 weights under (models/depthanything3).
DA3_COMMUNITY_NAMES = {
    "da3-small": "da3_small.safetensors",
    "da3-base": "da3_base.safetensors",
    "da3-large-1.1": "da3_large.safetensors",
    "da3-giant-1.1": "da3_giant.safetensors",
    "da3mono-large": "da3mono_large.safetensors",
    "da3metric-large": "da3metric_large.safetensors",
    "da3nested-giant-large-1.1": "da3nested_giant_large.safetensors",
}


#: ComfyUI core's repacks of the Apache-2.0 DA3 sizes (core's own key names), in ``models/geometry_estimation``.
DA3_CORE_REPO = "Comfy-Org/Depth-Anything-3"
DA3_CORE_FILES = {
    "da3-small": "depth_anything_3_small.safetensors",
    "da3-base": "depth_anything_3_base.safetensors",
    "da3mono-large": "depth_anything_3_mono_large.safetensors",
    "da3metric-large": "depth_anything_3_metric_large.safetensors",
}
#: ComfyUI's folder for core's geometry models (DA3, MoGe).
CORE_FOLDER = "geometry_estimation"


def _build_da3() -> dict[str, Variant]:
    """Depth Anything 3 (``config.json`` + ``model.safetensors`` repos; names are the official ``model_name``),
    then ComfyUI core's repacks of the Apache-2.0 sizes as ``<name>-comfy``.

    A file core downloaded counts as the official entry too (the same weights): ``da3-small`` resolves to
    ``depth_anything_3_small.safetensors`` in a searched folder (or ``geometry_estimation/`` below it) before
    anything is downloaded."""
    files = ("config.json", "model.safetensors")
    gs = "; carries the Gaussian-splatting head (3DGS PLY: gaussians=True, --gaussians)"
    rows = [
        ("da3-small", "vits", "DA3-SMALL", APACHE, DEPTH, "any-view depth + confidence + cameras"),
        ("da3-base", "vitb", "DA3-BASE", APACHE, DEPTH, "any-view depth + confidence + cameras"),
        ("da3-large", "vitl", "DA3-LARGE", CC_BY_NC, DEPTH, "any-view depth + confidence + cameras"),
        ("da3-large-1.1", "vitl", "DA3-LARGE-1.1", CC_BY_NC, DEPTH, "any-view depth + confidence + cameras (preferred over 1.0)"),
        ("da3-giant", "vitg", "DA3-GIANT", CC_BY_NC, DEPTH, "any-view depth + confidence + cameras" + gs),
        ("da3-giant-1.1", "vitg", "DA3-GIANT-1.1", CC_BY_NC, DEPTH, "any-view depth + confidence + cameras (preferred over 1.0)" + gs),
        ("da3mono-large", "vitl", "DA3MONO-LARGE", APACHE, DEPTH, "monocular relative depth + sky mask"),
        ("da3metric-large", "vitl", "DA3METRIC-LARGE", APACHE, METRIC_DEPTH,
         "monocular depth + sky mask; metres = output × focal / 300, so it needs intrinsics"),
        ("da3nested-giant-large", "vitg", "DA3NESTED-GIANT-LARGE", CC_BY_NC, METRIC_DEPTH,
         "any-view depth + cameras in metres (GIANT + METRIC-LARGE, ~6.8 GB)" + gs),
        ("da3nested-giant-large-1.1", "vitg", "DA3NESTED-GIANT-LARGE-1.1", CC_BY_NC, METRIC_DEPTH,
         "any-view depth + cameras in metres (GIANT + METRIC-LARGE, ~6.8 GB; preferred over 1.0)" + gs),
    ]
    out = {}
    for name, enc, repo, lic, kind, notes in rows:
        aliases: tuple[str, ...] = ()
        alias = DA3_COMMUNITY_NAMES.get(name)
        if alias:
            notes += f"; also found as {alias} (ComfyUI-DepthAnythingV3 pack)"
            aliases += (alias,)
        core = DA3_CORE_FILES.get(name)
        if core:
            notes += f"; also found as ComfyUI core's {CORE_FOLDER}/{core}"
            aliases += (core, f"{CORE_FOLDER}/{core}")
        out[name] = Variant(name, "da3", enc, f"depth-anything/{repo}", files, "da3", lic, kind, None, notes,
                            aliases=aliases)
    for name, core in DA3_CORE_FILES.items():
        official = out[name]
        out[f"{name}-comfy"] = Variant(
            f"{name}-comfy", "da3", official.encoder, DA3_CORE_REPO, (f"{CORE_FOLDER}/{core}",), "comfy_da3", official.license,
            official.kind, None, f"ComfyUI core's repack of {name} (its own key names; the file core's Load Depth Anything 3 "
                                 f"reads from models/{CORE_FOLDER}): {official.notes.split(';')[0]}",
            aliases=(core,), comfy_layout=True)
    return out


#: The folder the existing ComfyUI Video Depth Anything pack keeps its checkpoints in (``models/videodepthanything``).
VDA_FOLDER = "videodepthanything"
_VDA_METRIC_NOTE = ("the Metric-Video-Depth-Anything-Small card says apache-2.0; the Base/Large cards and the official "
                    "README give no separate license for the metric weights, fine-tuned from the CC-BY-NC-4.0 relative "
                    "Base/Large: the cautious value is kept")


def _build_vda() -> dict[str, Variant]:
    """Video Depth Anything (temporally consistent video depth; plain ``.pth`` state dicts of the V2 network plus
    four temporal modules): relative ``vda-<size>`` and metric ``vda-metric-<size>``. Small is Apache-2.0,
    Base and Large CC-BY-NC-4.0 (the official README). The metric models output metres directly (no fixed
    range), fine-tuned on Virtual KITTI and IRS."""
    out: dict[str, Variant] = {}
    for size, enc in list(SIZES.items())[:3]:
        cap = size.capitalize()
        lic = APACHE if size == "small" else CC_BY_NC
        out[f"vda-{size}"] = Variant(
            f"vda-{size}", "vda", enc, f"depth-anything/Video-Depth-Anything-{cap}", (f"video_depth_anything_{enc}.pth",),
            "vda", lic, DISPARITY, None, "Video Depth Anything: temporally consistent relative depth for videos of any "
                                         f"length (VideoDepthEstimator, `anydepth video`); also found in models/{VDA_FOLDER}")
        out[f"vda-metric-{size}"] = Variant(
            f"vda-metric-{size}", "vda", enc, f"depth-anything/Metric-Video-Depth-Anything-{cap}",
            (f"metric_video_depth_anything_{enc}.pth",), "vda", lic, METRIC_DEPTH, None,
            "Video Depth Anything, metric: temporally consistent depth in metres (fine-tuned on Virtual KITTI and IRS; "
            "no fixed range)", license_note="" if size == "small" else _VDA_METRIC_NOTE)
    return out


VARIANTS: dict[str, Variant] = {**_build(), **_build_derived(), **_build_da3(), **_build_vda()}


def get_variant(name: str) -> Variant:
    """Look a variant up by name; the error lists close names so a typo is easy to fix."""
    try:
        return VARIANTS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, VARIANTS, n=5)
        hint = f" Did you mean {', '.join(close)}?" if close else " Run `anydepth info` for the list."
        raise KeyError(f"unknown model {name!r}.{hint}") from None


def variant_for_file(path: str | PurePath) -> Variant | None:
    """The catalogue entry stored at ``path`` in a models folder (a weights file, a repo folder or an alias).

    Example:
        >>> variant_for_file("models/depthanything3/da3_large.safetensors").name
        'da3-large-1.1'
        >>> variant_for_file("my_model.pth") is None
        True
    """
    return next((v for v in VARIANTS.values() if v.matches(path)), None)
