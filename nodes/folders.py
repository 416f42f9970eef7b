"""Model folders: where the Load Depth Model dropdown looks, and where catalogue downloads land.

Three ComfyUI folder names are registered, so files already on disk are found: the ones existing depth
packs use, ``depthanything`` (``models/depthanything``, V1/V2) and ``depthanything3``
(``models/depthanything3``), and core's ``geometry_estimation`` (its Depth Anything 3 repacks,
``depth_anything_3_*.safetensors``; the folder's other files, e.g. MoGe, are not listed); and
``videodepthanything`` (``models/videodepthanything``, the ComfyUI Video Depth Anything pack's folder). Paths from
``extra_model_paths.yaml`` under these keys are kept (ComfyUI reads that file before custom nodes load, so a
key may already exist with its own paths).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import folder_paths

from anydepth.catalog import VARIANTS, Variant
from anydepth.weights import WEIGHT_SUFFIXES

FOLDER_NAMES: tuple[str, ...] = ("depthanything", "depthanything3", "geometry_estimation", "videodepthanything")
"""ComfyUI folder names searched, in order; downloads go to the first one's default path."""
CORE_FOLDER = "geometry_estimation"
"""Core's folder: only its Depth Anything 3 files are offered (:func:`_is_core_da3_file`)."""
VDA_FOLDER = "videodepthanything"
"""Video Depth Anything checkpoints (``video_depth_anything_vits.pth`` ...), where the existing VDA pack keeps them."""

EXTENSIONS: frozenset[str] = frozenset(WEIGHT_SUFFIXES)

_GENERIC_NAMES = ("model.safetensors", "pytorch_model.bin")


def register() -> None:
    """Register (or complete) the model folders; idempotent, keeps paths from extra_model_paths.yaml."""
    for name in FOLDER_NAMES:
        default = os.path.join(folder_paths.models_dir, name)
        paths, extensions = folder_paths.folder_names_and_paths.get(name, ([], set()))
        paths = list(paths)
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | EXTENSIONS)


def model_dirs(variant: Variant | None = None) -> list[str]:
    """Every folder searched; the first receives catalogue downloads: ``models/depthanything``, or
    ``models/depthanything3`` for a Depth Anything 3 ``variant``, or ``models`` itself for core's repacks (their
    repo path ``geometry_estimation/...`` puts them where core looks)."""
    register()
    family = variant.family if variant is not None else "v2"
    first = os.path.join(folder_paths.models_dir, _FOLDER_OF_FAMILY.get(family, FOLDER_NAMES[0]))
    if variant is not None and variant.comfy_layout:
        first = folder_paths.models_dir
    dirs = [first]
    for name in FOLDER_NAMES:
        dirs += [p for p in folder_paths.get_folder_paths(name) if p not in dirs]
    return dirs


def catalogue_label(variant: Variant) -> str:
    """Dropdown entry of a catalogue model: its name and license, e.g. ``v2-small (Apache-2.0)``."""
    return f"{variant.name} ({variant.license})"


FAMILIES: tuple[str, ...] = ("v1", "v2", "da3", "vda")
"""Catalogue families offered by Load Depth Model (DA3 models feed Any-View Geometry, VDA Estimate Video Depth)."""
DEPTH_FAMILIES: tuple[str, ...] = ("v1", "v2")
"""The families a node that estimates depth itself runs (the one-step node): no Depth Anything 3."""
_FOLDER_OF_FAMILY = {"v1": FOLDER_NAMES[0], "v2": FOLDER_NAMES[0], "da3": FOLDER_NAMES[1], "vda": VDA_FOLDER}
_FAMILY_NAMES = {"da3": "a Depth Anything 3 model", "vda": "a Video Depth Anything model"}


_ELSEWHERE = {"da3": "Load it with Load Depth Model into Any-View Geometry. ",
              "vda": "Load it with Load Depth Model into Estimate Video Depth. "}


def _folders_of(families: tuple[str, ...]) -> set[str]:
    """The folder names holding models of ``families`` (core's folder holds Depth Anything 3 files too)."""
    return {_FOLDER_OF_FAMILY[f] for f in families} | ({CORE_FOLDER} if "da3" in families else set())


def _is_core_da3_file(name: str) -> bool:
    """A Depth Anything 3 file in core's folder (which also holds other geometry models, e.g. MoGe)."""
    base = os.path.basename(name).lower()
    return "depth_anything" in base or "da3" in base


def catalogue_labels(families: tuple[str, ...] = FAMILIES) -> dict[str, Variant]:
    """Dropdown entries of the downloadable catalogue models of ``families`` (variants without weights are left
    out)."""
    return {catalogue_label(v): v for v in VARIANTS.values() if v.repo_id is not None and v.family in families}


def model_files(families: tuple[str, ...] = FAMILIES) -> list[str]:
    """Weight files found in the model folders of ``families``, as paths relative to their folder."""
    register()
    names: list[str] = []
    for name in FOLDER_NAMES:
        if name in _folders_of(families):
            names += [f for f in folder_paths.get_filename_list(name)
                      if f not in names and (name != CORE_FOLDER or _is_core_da3_file(f))]
    return sorted(names)


def model_options(families: tuple[str, ...] = FAMILIES) -> list[str]:
    """A model dropdown: files on disk first, then the catalogue (downloaded on first use), for ``families``."""
    return model_files(families) + list(catalogue_labels(families))


def _folders_text() -> str:
    """Where model files go, for messages: each folder with its full path."""
    paths = {name: os.path.join(folder_paths.models_dir, name) for name in FOLDER_NAMES}
    return (f"V1/V2 files go in models/{FOLDER_NAMES[0]} ({paths[FOLDER_NAMES[0]]}), Depth Anything 3 folders "
            f"(config.json + model.safetensors) in models/{FOLDER_NAMES[1]} ({paths[FOLDER_NAMES[1]]}), Video Depth "
            f"Anything files in models/{VDA_FOLDER} ({paths[VDA_FOLDER]})")


def download_hint(option: str, families: tuple[str, ...] = FAMILIES) -> str:
    """Advice naming the catalogue entries that would download what ``option`` asks for: the entry whose file has
    that name, else the entries whose names are close, else small default ones.

    Example:
        >>> download_hint("depth_anything_v2_vitl.pth")
        "pick the catalogue entry 'v2-large (CC-BY-NC-4.0)', which downloads this file on first use"
    """
    labels = catalogue_labels(families)
    base = os.path.basename(option).lower()
    if base not in (n.lower() for n in _GENERIC_NAMES):
        for label, v in labels.items():
            files = {os.path.basename(v.weights_file or "").lower(), *(a.lower() for a in v.aliases)}
            if base in files:
                return f"pick the catalogue entry {label!r}, which downloads this file on first use"
    close = difflib.get_close_matches(option, list(labels), n=3, cutoff=0.6)
    if not close:
        close = [label for label, v in labels.items() if v.name.endswith("small")][:3]
    return f"pick a catalogue entry, downloaded on first use, e.g. {', '.join(map(repr, close))}"


def require_model_option(option: str, families: tuple[str, ...] = FAMILIES, node: str = "Load Depth Model") -> str:
    """``option`` if ``node`` can run it: a catalogue entry of ``families`` or a weight file in their model folders;
    else a ``ValueError`` saying where the file goes and which catalogue entries would download it.

    For prompt validation on every queue: one lookup of this value (a stat per model folder), no listing.
    """
    variant = catalogue_labels().get(option)
    if variant is not None and variant.family not in families:
        raise ValueError(f"model {option!r} is {_FAMILY_NAMES.get(variant.family, variant.family)}; {node} runs Depth "
                         f"Anything V1/V2 models. {_ELSEWHERE.get(variant.family, '')}Or pick a v1-/v2- entry")
    if variant is not None:
        return option
    if os.path.splitext(option)[1].lower() not in EXTENSIONS:
        raise ValueError(f"model {option!r} is neither a weight file ({', '.join(sorted(EXTENSIONS))}) nor a catalogue "
                         f"entry: {download_hint(option, families)}")
    try:
        _, _, folder = _find_file(option)
    except FileNotFoundError:
        raise ValueError(f"model {option!r} is not in any depth model folder. {_folders_text()}: put it there and "
                         f"refresh (R), or {download_hint(option, families)}") from None
    if folder not in _folders_of(families):
        family = "vda" if folder == VDA_FOLDER else "da3"
        raise ValueError(f"model {option!r} is in models/{folder}, the folder of {_FAMILY_NAMES[family][2:]}s; {node} "
                         f"runs Depth Anything V1/V2 models. {_ELSEWHERE[family]}".rstrip())
    return option


def _find_file(option: str) -> tuple[Path, Path, str]:
    """``(target, file, folder name)`` of a weight file in the model folders (see :func:`resolve`).

    Raises:
        FileNotFoundError: the file is in none of the model folders.
    """
    register()
    for name in FOLDER_NAMES:
        full = folder_paths.get_full_path(name, option)
        if full is not None:
            path = Path(full)
            repo_folder = path.name in _GENERIC_NAMES and (path.parent / "config.json").is_file()
            return (path.parent if repo_folder else path), path, name
    raise FileNotFoundError(f"depth model {option!r} is not in any depth model folder ({', '.join(model_dirs())}); "
                            "put the file there, or pick a catalogue entry to download it")


def resolve(option: str) -> tuple[str | Path, Variant | None]:
    """Turn a dropdown entry into what :func:`anydepth.weights.resolve_checkpoint` takes.

    A catalogue entry gives its catalogue name. A file name is looked up in the model folders only
    (``folder_paths.get_full_path`` refuses paths that leave them); ``model.safetensors`` /
    ``pytorch_model.bin`` next to a ``config.json`` give their folder (a transformers or DA3 repo),
    whose name and ``config.json`` tell the variant; elsewhere (``Distill-Any-Depth/large/model.safetensors``)
    the file itself, whose path tells the variant.

    Raises:
        FileNotFoundError: the file is in none of the model folders.
    """
    variant = catalogue_labels().get(option)
    if variant is not None:
        return variant.name, variant
    return _find_file(option)[0], None
