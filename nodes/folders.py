"""Model folders: where the Load Depth Model dropdown looks, and where catalogue downloads land.

Two ComfyUI folder names are registered, the ones existing depth packs use, so files already on disk
are found: ``depthanything`` (``models/depthanything``, V1/V2) and ``depthanything3``
(``models/depthanything3``). Paths from ``extra_model_paths.yaml`` under either key are kept (ComfyUI
reads that file before custom nodes load, so the key may already exist with its own paths).
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from anydepth.catalog import VARIANTS, Variant
from anydepth.weights import WEIGHT_SUFFIXES

FOLDER_NAMES: tuple[str, ...] = ("depthanything", "depthanything3")
"""ComfyUI folder names searched, in order; downloads go to the first one's default path."""

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
    ``models/depthanything3`` for a Depth Anything 3 ``variant``."""
    register()
    first = os.path.join(folder_paths.models_dir, FOLDER_NAMES[1 if variant is not None and variant.family == "da3" else 0])
    dirs = [first]
    for name in FOLDER_NAMES:
        dirs += [p for p in folder_paths.get_folder_paths(name) if p not in dirs]
    return dirs


def catalogue_label(variant: Variant) -> str:
    """Dropdown entry of a catalogue model: its name and license, e.g. ``v2-small (Apache-2.0)``."""
    return f"{variant.name} ({variant.license})"


FAMILIES: tuple[str, ...] = ("v1", "v2", "da3")
"""Catalogue families offered by Load Depth Model (DA3 models feed Any-View Geometry)."""


def catalogue_labels() -> dict[str, Variant]:
    """Dropdown entries of the downloadable catalogue models (variants without weights are left out)."""
    return {catalogue_label(v): v for v in VARIANTS.values() if v.repo_id is not None and v.family in FAMILIES}


def model_files() -> list[str]:
    """Weight files found in the model folders, as paths relative to their folder."""
    register()
    names: list[str] = []
    for name in FOLDER_NAMES:
        names += [f for f in folder_paths.get_filename_list(name) if f not in names]
    return sorted(names)


def model_options() -> list[str]:
    """The Load Depth Model dropdown: files on disk first, then the catalogue (downloaded on first use)."""
    return model_files() + list(catalogue_labels())


def require_model_option(option: str) -> str:
    """``option`` if it is a catalogue entry or a weight file in a model folder, else a ``ValueError`` saying why.

    For prompt validation on every queue: one lookup of this value (a stat per model folder), no listing.
    """
    if option in catalogue_labels():
        return option
    if os.path.splitext(option)[1].lower() not in EXTENSIONS:
        raise ValueError(f"model {option!r} is neither a weight file ({', '.join(sorted(EXTENSIONS))}) nor a catalogue "
                         "entry; pick an entry of the dropdown")
    try:
        resolve(option)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    return option


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
    register()
    for name in FOLDER_NAMES:
        full = folder_paths.get_full_path(name, option)
        if full is not None:
            path = Path(full)
            repo_folder = path.name in _GENERIC_NAMES and (path.parent / "config.json").is_file()
            return (path.parent if repo_folder else path), None
    raise FileNotFoundError(
        f"depth model {option!r} is not in any depth model folder ({', '.join(model_dirs())}); "
        "put the file there, or pick a catalogue entry to download it"
    )
