"""Every published Depth Anything V1/V2/3 checkpoint, as data.

A :class:`Variant` says where a checkpoint lives on the Hugging Face hub, which network it fits,
what it outputs and under which license it may be used. Names are short and regular:
``v<family>-[metric-<indoor|outdoor>-]<small|base|large|giant>[-hf|-fp16|-fp32]``; Depth Anything 3
variants keep the official ``model_name`` (``da3-small``, ``da3mono-large``, ``da3nested-giant-large-1.1`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from .kinds import DEPTH, DISPARITY, METRIC_DEPTH, DepthKind

APACHE = "Apache-2.0"
CC_BY_NC = "CC-BY-NC-4.0"

#: The default model: small, fast and Apache-2.0 licensed.
DEFAULT_MODEL = "v2-small"

_GENERIC_FILE_NAMES = {"pytorch_model.bin", "model.safetensors"}

SIZES = {"small": "vits", "base": "vitb", "large": "vitl", "giant": "vitg"}


@dataclass(frozen=True)
class Variant:
    """One published checkpoint.

    Attributes:
        name: catalogue name, e.g. ``"v2-small"``.
        family: ``"v1"``, ``"v2"`` (decides which blocks feed the head) or ``"da3"`` (Depth Anything 3).
        encoder: ``"vits" | "vitb" | "vitl" | "vitg"``.
        repo_id: Hugging Face repo, or ``None`` when the weights were never released.
        files: files to fetch; a ``config.json`` among them marks a transformers (``-hf``) repo.
        layout: ``"original"`` (``pretrained.*`` / ``depth_head.*`` keys), ``"hf"`` (transformers) or
            ``"da3"`` (official DA3 ``model.*`` keys).
        license: SPDX-like id, from the model card.
        kind: ``"disparity"`` (relative), ``"metric_depth"`` (metres) or ``"depth"`` (DA3 relative depth).
        max_depth: metric range in metres, ``None`` for relative models.
        notes: anything a user should know before picking it.
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

    @property
    def weights_file(self) -> str | None:
        """The file holding the tensors (the one that is not ``config.json``)."""
        return next((f for f in self.files if f != "config.json"), None)

    @property
    def is_directory(self) -> bool:
        """True for repos kept as a folder: transformers repos and generic file names (``pytorch_model.bin``)."""
        return "config.json" in self.files or self.weights_file in _GENERIC_FILE_NAMES

    @property
    def local_name(self) -> str | None:
        """Name of the file or folder in a models directory."""
        if self.repo_id is None:
            return None
        return self.repo_id.split("/")[-1] if self.is_directory else self.weights_file


def _license_v2(size: str) -> str:
    return APACHE if size == "small" else CC_BY_NC


def _build() -> dict[str, Variant]:
    out: list[Variant] = []
    for size, enc in list(SIZES.items())[:3]:
        out.append(Variant(f"v1-{size}", "v1", enc, f"LiheYoung/depth_anything_{enc}14", ("pytorch_model.bin",), "original", APACHE,
                           notes="original weights (PyTorchModelHubMixin file)"))
        out.append(Variant(f"v1-{size}-hf", "v1", enc, f"LiheYoung/depth-anything-{size}-hf",
                           ("config.json", "model.safetensors"), "hf", APACHE))
    for size, enc in SIZES.items():
        cap = size.capitalize()
        if size == "giant":
            out.append(Variant("v2-giant", "v2", enc, None, (), "original", CC_BY_NC,
                               notes="architecture only: the ViT-G weights were announced but not released"))
            continue
        lic = _license_v2(size)
        out.append(Variant(f"v2-{size}", "v2", enc, f"depth-anything/Depth-Anything-V2-{cap}", (f"depth_anything_v2_{enc}.pth",), "original", lic))
        out.append(Variant(f"v2-{size}-hf", "v2", enc, f"depth-anything/Depth-Anything-V2-{cap}-hf",
                           ("config.json", "model.safetensors"), "hf", lic))
        for precision in ("fp16", "fp32"):
            out.append(Variant(f"v2-{size}-{precision}", "v2", enc, "Kijai/DepthAnythingV2-safetensors",
                               (f"depth_anything_v2_{enc}_{precision}.safetensors",), "original", lic,
                               notes="community safetensors with the original keys"))
        for scene, dataset, max_depth in (("indoor", "Hypersim", 20.0), ("outdoor", "VKITTI", 80.0)):
            out.append(Variant(f"v2-metric-{scene}-{size}", "v2", enc, f"depth-anything/Depth-Anything-V2-Metric-{dataset}-{cap}",
                               (f"depth_anything_v2_metric_{dataset.lower()}_{enc}.pth",), "original", lic, METRIC_DEPTH, max_depth,
                               notes=f"trained on {dataset}; metres up to {max_depth:g}"))
            out.append(Variant(f"v2-metric-{scene}-{size}-hf", "v2", enc, f"depth-anything/Depth-Anything-V2-Metric-{scene.capitalize()}-{cap}-hf",
                               ("config.json", "model.safetensors"), "hf", lic, METRIC_DEPTH, max_depth,
                               notes=f"trained on {dataset}; metres up to {max_depth:g}"))
    return {v.name: v for v in out}


def _build_da3() -> dict[str, Variant]:
    """Depth Anything 3 (``config.json`` + ``model.safetensors`` repos; names are the official ``model_name``)."""
    files = ("config.json", "model.safetensors")
    gs = "; the Gaussian-splatting head in the file is skipped (not supported)"
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
    return {name: Variant(name, "da3", enc, f"depth-anything/{repo}", files, "da3", lic, kind, None, notes)
            for name, enc, repo, lic, kind, notes in rows}


VARIANTS: dict[str, Variant] = {**_build(), **_build_da3()}


def get_variant(name: str) -> Variant:
    """Look a variant up by name; the error lists close names so a typo is easy to fix."""
    try:
        return VARIANTS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, VARIANTS, n=5)
        hint = f" Did you mean {', '.join(close)}?" if close else " Run `anydepth info` for the list."
        raise KeyError(f"unknown model {name!r}.{hint}") from None


def variant_for_file(filename: str) -> Variant | None:
    """The catalogue entry stored under ``filename`` in a models folder (a weights file or a repo folder)."""
    base = filename.rstrip("/").rsplit("/", 1)[-1]
    return next((v for v in VARIANTS.values() if v.local_name == base), None)
