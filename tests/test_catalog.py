"""The catalogue against the files users hold: every entry added for checkpoints built on V2, community
copies and renamed files is written as a tiny random file in its published layout (key names, dtype,
container, place in the repo), loads strictly, and is recognised as its variant with the right output.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from anydepth.catalog import DA3_COMMUNITY_NAMES, VARIANTS, get_variant, variant_for_file
from anydepth.kinds import METRIC_DEPTH
from anydepth.models.config import DA3Config, NestedDA3Config
from anydepth.weights import build_model, load_model, read_checkpoint, resolve_checkpoint
from conftest import rel_error
from tiny import TINY, hf_model, write_distill, write_hf_dir, write_hf_repo, write_pth, write_safetensors

#: 518² is where transformers resizes position embeddings like the original (REFERENCE.md §2).
X = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))

#: The V1/V2-network entries added to the catalogue, with the writer of their published layout.
WRITERS = {
    "v2-metric-indoor-large-fp32": write_safetensors,  # Kijai: fp32 safetensors, original keys
    "v2-metric-outdoor-large-fp32": write_safetensors,
    "distill-any-depth-small": write_safetensors,  # authors' repo: <size>/model.safetensors, original keys
    "distill-any-depth-base": write_safetensors,
    "distill-any-depth-large": write_distill,  # backbone.blocks.0.N.* (chunked DINOv2)
    "distill-any-depth-small-hf": write_hf_repo,
    "distill-any-depth-large-hf": write_hf_repo,
    "depth-anything-ac-small": write_pth,  # checkpoints/depth_anything_AC_vits.pth, a pickled OrderedDict
}


def _reference(variant, seed: int = 0):
    """A tiny transformers model with the variant's output (metric with its range, or relative)."""
    metric = variant.kind == METRIC_DEPTH
    return hf_model(TINY, seed=seed, metric=metric, max_depth=int(variant.max_depth or 20))


def _same_depth(net, ref) -> float:
    with torch.no_grad():
        return rel_error(net(X), ref(pixel_values=X).predicted_depth)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_new_entry_in_its_published_layout_loads_strictly_and_is_recognised(name, tmp_path):
    variant = get_variant(name)
    ref = _reference(variant, seed=len(name))
    models = tmp_path / "models"
    (models / variant.local_name).parent.mkdir(parents=True)
    written = WRITERS[name](ref, models / variant.local_name)
    resolved = resolve_checkpoint(name, models_dir=models, download_missing=False)
    assert resolved.path == written and resolved.variant is variant
    ckpt = read_checkpoint(written)  # the variant is recognised from the path alone
    assert ckpt.variant is variant and ckpt.format == variant.layout
    assert ckpt.config.kind == variant.kind and ckpt.config.max_depth == variant.max_depth
    assert ckpt.config.layers == (0, 1, 2, 3)  # V2 taps of a 4-block network
    net = build_model(ckpt)  # strict: raises on any missing, unexpected or reshaped key
    assert _same_depth(net, ref) <= 1e-5


def test_every_new_entry_has_a_writer_and_a_license():
    added = {v.name for v in VARIANTS.values() if v.repo_id and (v.repo_id.startswith(("xingyang1/", "ghost233lism/"))
                                                                 or v.repo_id.startswith("Kijai/") and v.kind == METRIC_DEPTH)}
    assert added == set(WRITERS)
    assert get_variant("depth-anything-ac-small").license == "CC-BY-NC-4.0"
    assert get_variant("v2-metric-indoor-large-fp32").max_depth == 20.0
    assert get_variant("v2-metric-outdoor-large-fp32").max_depth == 80.0
    for name in WRITERS:
        assert get_variant(name).license in ("Apache-2.0", "CC-BY-NC-4.0")


@pytest.mark.parametrize("chunks", [1, 2])
def test_chunked_blocks_give_the_same_depth_as_the_plain_layout(chunks, tmp_path, tiny_hf):
    plain = load_model(write_safetensors(tiny_hf, tmp_path / "plain.safetensors"))
    path = write_distill(tiny_hf, tmp_path / f"chunked{chunks}.safetensors", chunks=chunks)
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert "backbone.blocks.0.0.attn.qkv.weight" in keys and not any(k.startswith("pretrained.") for k in keys)
    assert (f"backbone.blocks.1.{TINY['layers'] - 1}.norm1.weight" in keys) == (chunks == 2)
    chunked = load_model(path)
    assert chunked.config == plain.config
    with torch.no_grad():
        assert torch.equal(chunked(X), plain(X))


@pytest.mark.parametrize("size, enc", [("small", "vits"), ("base", "vitb"), ("large", "vitl")])
def test_v1_demo_space_files_are_found_and_keep_the_v1_taps(size, enc, tmp_path):
    """``depth_anything_vit?14.pth`` (V1 demo Space, controlnet_aux): found by name, last four blocks feed the head."""
    ref = hf_model(dict(TINY, layers=8), seed=2, out_indices=[5, 6, 7, 8])  # V1: the last four of eight blocks
    models = tmp_path / "models"
    models.mkdir()
    written = write_pth(ref, models / f"depth_anything_{enc}14.pth")
    resolved = resolve_checkpoint(f"v1-{size}", models_dir=models, download_missing=False)
    assert resolved.path == written
    ckpt = read_checkpoint(written)
    assert ckpt.variant is get_variant(f"v1-{size}") and ckpt.format == "original"
    assert ckpt.config.layers == (4, 5, 6, 7)  # V2 taps would be (1, 3, 5, 7)
    assert _same_depth(build_model(ckpt), ref) <= 1e-5


def test_ac_file_is_also_found_under_its_bare_name(tmp_path, tiny_hf):
    models = tmp_path / "models"
    models.mkdir()
    written = write_pth(tiny_hf, models / "depth_anything_AC_vits.pth")
    assert resolve_checkpoint("depth-anything-ac-small", models_dir=models, download_missing=False).path == written
    assert read_checkpoint(written).variant is get_variant("depth-anything-ac-small")


def test_every_hf_entry_fetches_the_preprocessor_config():
    hf = [v for v in VARIANTS.values() if v.name.endswith("-hf")]
    assert hf and all(v.layout == "hf" and "preprocessor_config.json" in v.files for v in hf)
    assert all(v.weights_file == "model.safetensors" for v in hf)
    assert not any("preprocessor_config.json" in v.files for v in VARIANTS.values() if v.layout != "hf")


def test_older_hf_folder_without_preprocessor_config_still_counts_as_present(tmp_path, tiny_hf):
    models = tmp_path / "models"
    folder = write_hf_dir(tiny_hf, models / "Depth-Anything-V2-Small-hf")
    assert not (folder / "preprocessor_config.json").exists()
    assert resolve_checkpoint("v2-small-hf", models_dir=models, download_missing=False).path == folder


def test_downloaded_hf_folder_works_with_transformers_too(tmp_path, monkeypatch):
    """A catalogue download of a ``-hf`` entry is a folder transformers' image processor reads."""
    from PIL import Image
    from transformers import AutoImageProcessor

    from hub_server import LocalHub, hub_env

    variant = get_variant("distill-any-depth-small-hf")
    ref = _reference(variant, seed=4)
    upstream = write_hf_repo(ref, tmp_path / "upstream")
    files = {f: upstream / f for f in variant.files}
    with LocalHub({variant.repo_id: files}) as hub:
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        path = resolve_checkpoint(variant.name, models_dir=tmp_path / "models").path
    assert path == tmp_path / "models" / "Distill-Any-Depth-Small-hf"
    assert {p.name for p in path.iterdir() if p.is_file()} == set(variant.files)
    processor = AutoImageProcessor.from_pretrained(str(path))
    pixels = processor(images=Image.new("RGB", (300, 300), (120, 80, 40)), return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 518, 518)  # shorter side to 518, multiple of 14
    with torch.no_grad():
        assert rel_error(load_model(path)(pixels), ref(pixel_values=pixels).predicted_depth) <= 1e-5


def test_info_shows_the_license_notes(tmp_path, capsys):
    from anydepth.cli import main

    models = tmp_path / "models"
    models.mkdir()
    (models / "da3_large.safetensors").write_bytes(b"")  # a community name counts as present
    assert main(["info", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("v2-metric-indoor-large "))
    assert "CC-BY-NC-4.0 *" in row
    notes = out.split("license notes", 1)[1]
    note = next(line for line in notes.splitlines() if "v2-metric-indoor-large," in line)
    assert "apache-2.0" in note and "cautious" in note
    assert "distill-any-depth-large" in notes
    da3_row = next(line for line in out.splitlines() if line.startswith("da3-large-1.1 "))
    assert " yes " in da3_row


# ------------------------------------------------------------------------------------------------ DA3


needs_official_da3 = pytest.mark.skipif(importlib.util.find_spec("depth_anything_3") is None,
                                        reason="the official reference: pip install --no-deps depth-anything-3==0.1.1")


def _community_file(name: str, path):
    """The official tiny network a community DA3 name stands for, written as that single file; the config it implies."""
    from tiny_da3 import TINY_FILE, TINY_MONO, official_nested, official_tiny, write_single_file

    giant = replace(TINY_FILE, arch=replace(TINY_FILE.arch, ffn="swiglu"), gaussians=True)  # GIANT's SwiGLU MLP and GS head
    mono = replace(TINY_MONO, name="")
    metric = replace(mono, metric=True)
    if name == "da3nested-giant-large-1.1":
        net, cfg = official_nested(official_tiny(giant, seed=1, gs_head=True), official_tiny(metric, seed=2)), NestedDA3Config(giant, metric)
    elif name == "da3-giant-1.1":
        net, cfg = official_tiny(giant, seed=3, gs_head=True), giant
    elif name == "da3mono-large":
        net, cfg = official_tiny(mono, seed=4), mono
    elif name == "da3metric-large":
        net, cfg = official_tiny(metric, seed=5), metric
    else:
        net, cfg = official_tiny(TINY_FILE, seed=6), TINY_FILE
    return write_single_file(net, path), net, cfg


@needs_official_da3
@pytest.mark.parametrize("name", sorted(DA3_COMMUNITY_NAMES))
def test_community_da3_file_names_load_strictly(name, tmp_path):
    """``da3_large.safetensors`` ... in models/depthanything3: official ``model.*`` keys, no config.json."""
    variant = get_variant(name)
    models = tmp_path / "depthanything3"
    written, ref, expected = _community_file(name, models / DA3_COMMUNITY_NAMES[name])
    with safe_open(str(written), "pt") as f:
        assert all(k.startswith("model.") for k in f.keys())
    assert variant_for_file(written) is variant
    assert resolve_checkpoint(name, models_dir=models, download_missing=False).path == written
    ckpt = read_checkpoint(written)
    assert ckpt.format == "da3" and ckpt.variant is variant and ckpt.config.name == name
    assert ckpt.config == expected  # the name's preset where shapes agree; here everything from the tiny shapes
    net = build_model(ckpt)  # strict
    if isinstance(expected, DA3Config) and expected.camera:  # any-view: compare the depth with the official network
        x = torch.randn(1, 2, 3, 42, 56, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            assert rel_error(net(x).depth, ref(x).depth) <= 1e-4


# ------------------------------------------------------------------------------------------------ Video Depth Anything

#: The six published checkpoints: (repo, file, license) as the hub and the official README give them.
VDA_RELEASES = {
    "vda-small": ("depth-anything/Video-Depth-Anything-Small", "video_depth_anything_vits.pth", "Apache-2.0"),
    "vda-base": ("depth-anything/Video-Depth-Anything-Base", "video_depth_anything_vitb.pth", "CC-BY-NC-4.0"),
    "vda-large": ("depth-anything/Video-Depth-Anything-Large", "video_depth_anything_vitl.pth", "CC-BY-NC-4.0"),
    "vda-metric-small": ("depth-anything/Metric-Video-Depth-Anything-Small", "metric_video_depth_anything_vits.pth",
                         "Apache-2.0"),
    "vda-metric-base": ("depth-anything/Metric-Video-Depth-Anything-Base", "metric_video_depth_anything_vitb.pth",
                        "CC-BY-NC-4.0"),
    "vda-metric-large": ("depth-anything/Metric-Video-Depth-Anything-Large", "metric_video_depth_anything_vitl.pth",
                         "CC-BY-NC-4.0"),
}


def test_vda_entries_name_the_published_repos_files_and_licenses():
    assert {k for k, v in VARIANTS.items() if v.family == "vda"} == set(VDA_RELEASES)
    for name, (repo, file, license) in VDA_RELEASES.items():
        v = get_variant(name)
        assert (v.repo_id, v.files, v.license, v.layout) == (repo, (file,), license, "vda")
        assert v.kind == (METRIC_DEPTH if "metric" in name else "disparity") and v.max_depth is None
        assert v.encoder == {"small": "vits", "base": "vitb", "large": "vitl"}[name.rsplit("-", 1)[1]]


@pytest.mark.parametrize("name", ["vda-small", "vda-metric-small"])
def test_tiny_vda_and_v2_files_are_told_apart_and_load_strictly(name, tmp_path):
    from anydepth.models import DepthAnything, VideoDepthAnything
    from tiny_vda import v2_state_dict, vda_config, vda_state_dict, write_vda

    variant = get_variant(name)
    models = tmp_path / "videodepthanything"
    vda = write_vda(vda_state_dict(seed=3), models / variant.local_name)  # the published name and layout (.pth)
    v2 = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(v2_state_dict(seed=3), v2)  # the V2 part of the same weights, in V2's layout

    assert resolve_checkpoint(name, models_dir=models, download_missing=False).path == vda
    ckpt = read_checkpoint(vda)
    assert ckpt.format == "vda" and ckpt.variant is variant and ckpt.config.name == name
    assert ckpt.config == vda_config(metric="metric" in name)
    net = build_model(ckpt)  # strict: every published key, no other
    assert isinstance(net, VideoDepthAnything) and net.config.kind == variant.kind
    image = build_model(read_checkpoint(v2))
    assert read_checkpoint(v2).format == "original" and isinstance(image, DepthAnything)
    # the same backbone tensors, wherever they came from
    torch.testing.assert_close(net.pretrained.patch_embed.proj.weight, image.pretrained.patch_embed.proj.weight)
    st = write_vda(vda_state_dict(seed=3), tmp_path / "renamed_vda.safetensors")  # a community copy
    assert read_checkpoint(st).format == "vda" and read_checkpoint(st).config.kind == "disparity"
    assert type(load_model(st)) is VideoDepthAnything


def test_a_damaged_vda_file_names_what_is_missing(tmp_path):
    from tiny_vda import vda_state_dict, write_vda

    sd = vda_state_dict()
    del sd["head.motion_modules.3.temporal_transformer.proj_out.weight"]
    path = write_vda(sd, tmp_path / "video_depth_anything_vits.pth")
    with pytest.raises(ValueError, match=r"1 missing keys \(head.motion_modules.3.temporal_transformer.proj_out.weight\)"):
        load_model(path)
    with pytest.raises(ValueError, match="no family/max_depth override"):
        read_checkpoint(write_vda(vda_state_dict(), tmp_path / "v.pth"), max_depth=20.0)
