"""ComfyUI core's Depth Anything 3 files (``Comfy-Org/Depth-Anything-3``, ``models/geometry_estimation``).

Core keeps DA3 under its own key names (its DINOv2 with transformers-style names, the official head and
camera names). :func:`tiny_da3.write_comfy_file` writes a tiny official network under those names, from core's
module tree; the file must load strictly and give exactly the depth of the same network in the official
layout. A catalogue name resolves to a core file already on disk (no second download), and the ``-comfy``
entries download to where core looks.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

pytest.importorskip("depth_anything_3", reason="the official reference: pip install --no-deps depth-anything-3==0.1.1")

from comfy_harness import comfy  # noqa: F401  (the in-process ComfyUI fixture)
from tiny_da3 import TINY_FILE, TINY_MONO, official_small, official_tiny, save_official, write_comfy_file

from anydepth.catalog import DA3_CORE_FILES, DA3_CORE_REPO, VARIANTS, get_variant, variant_for_file
from anydepth.models.config import DA3_PRESETS
from anydepth.models.da3 import convert_comfy_da3
from anydepth.weights import detect_format, load_model, read_checkpoint, read_state_dict, resolve_checkpoint

METRIC = replace(TINY_MONO, metric=True, name="")
CONFIGS = {"anyview": TINY_FILE, "mono": replace(TINY_MONO, name=""), "metric": METRIC}


def _views(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("layout", ["plain", "shared-norm-once", "diffusion-model-prefix"])
def test_core_layout_loads_strictly_and_gives_the_official_layouts_depth(kind, layout, tmp_path):
    cfg = CONFIGS[kind]
    ref = official_tiny(cfg, seed=len(kind))
    official = load_model(save_official(ref, tmp_path / "official"))
    name = "depth_anything_3_metric_large.safetensors" if kind == "metric" else f"core_{kind}.safetensors"
    path = write_comfy_file(ref, tmp_path / "geometry_estimation" / name,
                            prefix="model.diffusion_model." if layout == "diffusion-model-prefix" else "",
                            shared_norm_once=layout == "shared-norm-once")
    with safe_open(str(path), "pt") as f:  # really core's names, not the official ones
        keys = set(f.keys())
    assert not any(".pretrained." in k for k in keys)
    assert any(k.endswith("backbone.embeddings.patch_embeddings.projection.weight") for k in keys)
    assert any(k.endswith("attention.attention.query.weight") for k in keys)
    raw, _ = read_state_dict(path)
    assert detect_format(raw) == ("comfy_da3", convert_comfy_da3)
    ckpt = read_checkpoint(path)
    assert ckpt.config == cfg  # architecture, block taps and metric-ness from the shapes (and the metric file name)
    net = load_model(path)  # strict: any missing, unexpected or reshaped key raises
    views = 2 if kind == "anyview" else 1
    x = _views(views, 42, 70, seed=3)
    with torch.no_grad():
        got, want = net(x), official(x)
    assert torch.equal(got.depth, want.depth)
    if kind == "anyview":
        assert torch.equal(got.extrinsics, want.extrinsics) and torch.equal(got.confidence, want.confidence)
    else:
        assert torch.equal(got.sky, want.sky)


def test_core_file_of_the_small_size_is_recognised_as_da3_small(tmp_path):
    """The real SMALL shapes under core's file name: the ``da3-small`` preset (block taps), fp16 as repacks may be."""
    ref = official_small(seed=1).half()
    path = write_comfy_file(ref, tmp_path / "geometry_estimation" / DA3_CORE_FILES["da3-small"])
    ckpt = read_checkpoint(path)
    assert ckpt.variant is get_variant("da3-small") and ckpt.config == DA3_PRESETS["da3-small"]
    assert ckpt.config.name == "da3-small"


def test_catalogue_has_the_four_core_repacks_with_the_official_licenses():
    core = {k: v for k, v in VARIANTS.items() if v.repo_id == DA3_CORE_REPO}
    assert set(core) == {f"{n}-comfy" for n in DA3_CORE_FILES} == {"da3-small-comfy", "da3-base-comfy",
                                                                    "da3mono-large-comfy", "da3metric-large-comfy"}
    for name, v in core.items():
        official = get_variant(name.removesuffix("-comfy"))
        assert v.license == official.license == "Apache-2.0" and v.kind == official.kind and v.family == "da3"
        assert v.files == (f"geometry_estimation/{DA3_CORE_FILES[official.name]}",) and not v.is_directory
        assert v.local_name == v.files[0]  # laid out like ComfyUI's models folder


@pytest.mark.parametrize("where", ["models-root", "core-folder"])
def test_a_core_file_on_disk_is_used_instead_of_a_download(where, tmp_path):
    """``da3-small`` (and ``da3-small-comfy``) resolve to core's file: in a ComfyUI ``models`` folder given as the
    models directory, or directly in a searched folder (``models/geometry_estimation`` registered in ComfyUI)."""
    root = tmp_path / "ComfyUI" / "models"
    path = write_comfy_file(official_tiny(TINY_FILE, seed=2), root / "geometry_estimation" / DA3_CORE_FILES["da3-small"])
    models_dir = root if where == "models-root" else [tmp_path / "empty", root / "geometry_estimation"]
    for name in ("da3-small", "da3-small-comfy"):  # HF_HUB_OFFLINE=1 (conftest) and download_missing=False: no hub
        resolved = resolve_checkpoint(name, models_dir=models_dir, download_missing=False)
        assert resolved.path == path and resolved.variant is get_variant(name)
    assert variant_for_file(path) is not None
    net = load_model("da3-small", models_dir=models_dir)
    assert net.config.name == "da3-small"


def test_a_comfy_entry_downloads_where_core_looks(tmp_path, monkeypatch):
    from hub_server import LocalHub, hub_env

    variant = get_variant("da3-base-comfy")
    upstream = write_comfy_file(official_tiny(TINY_FILE, seed=4), tmp_path / "upstream" / "x.safetensors")
    with LocalHub({variant.repo_id: {variant.files[0]: upstream}}) as hub:
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        models = tmp_path / "ComfyUI" / "models"
        path = resolve_checkpoint(variant.name, models_dir=models).path
    assert path == models / "geometry_estimation" / "depth_anything_3_base.safetensors" and path.is_file()
    # offline again: the file is found where it landed, by the official name too
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_checkpoint("da3-base", models_dir=models, download_missing=False).path == path


def test_comfyui_lists_core_da3_files_and_resolves_catalogue_names_to_them(comfy):
    folders = comfy.pack.nodes.folders
    core = comfy.models_dir / "geometry_estimation"
    path = write_comfy_file(official_tiny(TINY_FILE, seed=5), core / DA3_CORE_FILES["da3-small"])
    (core / "moge_2_vitl_normal_fp16.safetensors").write_bytes(b"")  # core's folder holds other models too
    folders.register()
    assert str(core) in comfy.folder_paths.get_folder_paths("geometry_estimation")
    options = folders.model_options()
    assert DA3_CORE_FILES["da3-small"] in options and "moge_2_vitl_normal_fp16.safetensors" not in options
    assert folders.resolve(DA3_CORE_FILES["da3-small"])[0] == path
    variant = get_variant("da3-small")
    assert resolve_checkpoint("da3-small", models_dir=folders.model_dirs(variant), download_missing=False).path == path
    assert folders.model_dirs(get_variant("da3-small-comfy"))[0] == str(comfy.models_dir)  # downloads land in core's folder

