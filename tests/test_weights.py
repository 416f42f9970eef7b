"""Reading every checkpoint format, detecting what it is, and refusing what it must not load."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from anydepth.catalog import VARIANTS, get_variant
from anydepth.weights import (
    CheckpointError,
    WeightsNotFoundError,
    build_model,
    load_model,
    read_checkpoint,
    resolve_checkpoint,
)
from tiny import TINY, hf_model, write_hf_dir, write_pth, write_safetensors

FORMATS = ["pth", "safetensors_fp32", "safetensors_fp16", "hf_old", "hf_new"]


@pytest.fixture(scope="module")
def image():
    # 518² is where transformers resizes position embeddings like the original (REFERENCE.md §2).
    return torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_strictly_and_gives_the_same_depth(fmt, tiny_files, tiny_hf, image):
    model = load_model(tiny_files[fmt])
    with torch.no_grad():
        got = model(image)
        expected = tiny_hf(pixel_values=image).predicted_depth
    tol = 2e-3 if fmt == "safetensors_fp16" else 1e-5  # fp16 storage rounds the weights
    assert float((got - expected).abs().max() / (expected.max() - expected.min())) <= tol
    assert model.config.arch.embed_dim == TINY["hidden"] and model.config.arch.depth == TINY["layers"]
    assert model.config.kind == "disparity"


def test_original_layout_has_the_released_key_names(tiny_files):
    ckpt = read_checkpoint(tiny_files["pth"])
    assert ckpt.format == "original"
    assert "pretrained.blocks.0.attn.qkv.weight" in ckpt.state_dict
    assert "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight" in ckpt.state_dict
    assert read_checkpoint(tiny_files["hf_old"]).format == "hf"


def test_released_key_counts():
    """Golden numbers from REFERENCE.md: 239 tensors for ViT-S/B, 407 for ViT-L."""
    from anydepth.models import ARCHS, ModelConfig, create_model, layer_indices

    counts = {enc: len(create_model(ModelConfig(ARCHS[enc], layer_indices("v2", ARCHS[enc].depth)), device="meta").state_dict())
              for enc in ("vits", "vitb", "vitl")}
    assert counts == {"vits": 239, "vitb": 239, "vitl": 407}


def test_metric_and_layers_come_from_hf_config(tmp_path):
    ref = hf_model(TINY, seed=5, metric=True, max_depth=80, out_indices=[1, 2, 3, 4])
    model = load_model(write_hf_dir(ref, tmp_path / "Depth-Anything-V2-Metric-Outdoor-Small-hf"))
    assert model.config.kind == "metric_depth" and model.config.max_depth == 80.0
    x = torch.rand(1, 3, 518, 518)
    with torch.no_grad():
        expected = ref(pixel_values=x).predicted_depth
        torch.testing.assert_close(model(x), expected, atol=1e-4 * float(expected.max()), rtol=0)


def _metric_hf_without_max_depth(folder):
    """A metric ``-hf`` folder whose config.json has no ``max_depth`` (transformers would use 1 m); its reference."""
    import json

    ref = hf_model(TINY, seed=6, metric=True, max_depth=20)
    write_hf_dir(ref, folder)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["max_depth"]
    (folder / "config.json").write_text(json.dumps(cfg))
    return ref


def test_metric_hf_config_without_max_depth_takes_the_catalogue_range(tmp_path):
    folder = tmp_path / "Depth-Anything-V2-Metric-Indoor-Small-hf"  # a catalogue variant: indoor, 20 m
    ref = _metric_hf_without_max_depth(folder)
    model = load_model(folder)
    assert model.config.kind == "metric_depth" and model.config.max_depth == 20.0
    x = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ref(pixel_values=x).predicted_depth  # built with max_depth=20
        torch.testing.assert_close(model(x), expected, atol=1e-4 * float(expected.max()), rtol=0)
    assert read_checkpoint(folder, max_depth=5.0).config.max_depth == 5.0  # the caller still wins


def test_metric_hf_config_without_max_depth_and_unknown_file_is_an_error(tmp_path):
    folder = tmp_path / "my-indoor-metric-model"  # not a catalogue name; "indoor" in it is no evidence of a range
    _metric_hf_without_max_depth(folder)
    with pytest.raises(CheckpointError) as e:
        load_model(folder)
    msg = str(e.value)
    assert str(folder / "config.json") in msg and "max_depth=" in msg and "--max-depth" in msg
    assert read_checkpoint(folder, max_depth=12.5).config.max_depth == 12.5


def test_metric_from_file_name_and_caller_override(tmp_path, tiny_hf):
    p = write_pth(tiny_hf, tmp_path / "depth_anything_v2_metric_hypersim_vits.pth")
    assert read_checkpoint(p).config.kind == "metric_depth" and read_checkpoint(p).config.max_depth == 20.0
    override = read_checkpoint(p, kind="disparity")
    assert override.config.kind == "disparity" and override.config.max_depth is None
    plain = write_pth(tiny_hf, tmp_path / "my_model.pth")
    assert read_checkpoint(plain).config.kind == "disparity"
    with pytest.raises(CheckpointError, match="max_depth=.*--max-depth"):
        read_checkpoint(plain, kind="metric_depth")


def test_v1_family_from_name_and_override(tmp_path, tiny_hf):
    ckpt = read_checkpoint(write_pth(tiny_hf, tmp_path / "depth_anything_vits14.pth"))
    assert ckpt.config.layers == (0, 1, 2, 3)  # last four of four blocks
    hf = read_checkpoint(tmp_path / "depth_anything_vits14.pth", family="v2")
    assert hf.config.layers == (0, 1, 2, 3)


def test_truncated_file_names_the_file(tmp_path, tiny_files):
    for key in ("pth", "safetensors_fp32"):
        data = tiny_files[key].read_bytes()
        broken = tmp_path / f"broken_{tiny_files[key].name}"
        broken.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=str(broken.name)) as e:
            load_model(broken)
        assert "truncated or corrupt" in str(e.value)


def test_checkpoint_of_another_architecture_is_reported(tmp_path, tiny_hf):
    sd = torch.load(write_pth(tiny_hf, tmp_path / "a.pth"), weights_only=True)
    del sd["depth_head.scratch.output_conv1.weight"]
    sd["depth_head.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "mismatch.pth")
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "mismatch.pth")
    msg = str(e.value)
    assert "mismatch.pth" in msg and "1 missing keys" in msg and "1 unexpected keys" in msg
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a Depth Anything V1/V2 checkpoint"):
        load_model(tmp_path / "other.pth")


def test_wrong_shape_is_reported(tmp_path, tiny_hf):
    sd = torch.load(write_pth(tiny_hf, tmp_path / "a.pth"), weights_only=True)
    sd["depth_head.scratch.output_conv1.bias"] = torch.zeros(3)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="other shapes"):
        load_model(tmp_path / "shape.pth")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"pretrained.patch_embed.proj.weight": torch.zeros(1), "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_model(path)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(CheckpointError):
        load_model(raw)


def test_da3_checkpoint_gets_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"backbone.pretrained.patch_embed.proj.weight": torch.zeros(4, 3, 14, 14)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="Depth Anything 3"):
        load_model(tmp_path / "model.safetensors")


def test_unknown_name_and_missing_file():
    with pytest.raises(KeyError, match="v2-small"):
        resolve_checkpoint("v2-smal")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_checkpoint("/nowhere/model.pth")


def test_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as e:
        resolve_checkpoint("v2-small", models_dir=tmp_path)
    msg = str(e.value)
    assert "not present locally" in msg and str(tmp_path) in msg
    assert "depth-anything/Depth-Anything-V2-Small/resolve/main/depth_anything_v2_vits.pth" in msg


def test_name_found_in_models_folder_without_download(tmp_path, tiny_hf, monkeypatch):
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir()
    write_safetensors(tiny_hf, (d2 / "x").parent.mkdir() or d2 / "depth_anything_v2_vits_fp16.safetensors", torch.float16)
    monkeypatch.setenv("ANYDEPTH_MODELS", os.pathsep.join([str(d1), str(d2)]))
    resolved = resolve_checkpoint("v2-small-fp16")
    assert resolved.path == d2 / "depth_anything_v2_vits_fp16.safetensors"
    assert resolved.variant is get_variant("v2-small-fp16")
    model = load_model("v2-small-fp16")
    assert model.config.name == "v2-small-fp16"
    write_hf_dir(tiny_hf, d1 / "Depth-Anything-V2-Small-hf")
    assert resolve_checkpoint("v2-small-hf").path == d1 / "Depth-Anything-V2-Small-hf"


def test_catalogue_covers_the_published_variants():
    names = set(VARIANTS)
    for fam in ("v1", "v2"):
        for size in ("small", "base", "large"):
            assert {f"{fam}-{size}", f"{fam}-{size}-hf"} <= names
    for size in ("small", "base", "large"):
        for scene in ("indoor", "outdoor"):
            assert {f"v2-metric-{scene}-{size}", f"v2-metric-{scene}-{size}-hf"} <= names
        assert {f"v2-{size}-fp16", f"v2-{size}-fp32"} <= names
    assert "v2-giant" in names and VARIANTS["v2-giant"].repo_id is None
    assert VARIANTS["v2-small"].license == "Apache-2.0" and VARIANTS["v2-large"].license == "CC-BY-NC-4.0"
    assert VARIANTS["v2-metric-outdoor-base"].max_depth == 80.0
    assert len({v.local_name for v in VARIANTS.values() if v.local_name}) == sum(1 for v in VARIANTS.values() if v.local_name)


@pytest.mark.parametrize("wanted", ["image", "da3", "vda"])
def test_each_estimator_refuses_the_other_families_and_names_the_right_door(wanted, tmp_path, monkeypatch):
    """One owner (weights.load_network) for the three estimators: a catalogue name of another family is refused before
    any download, a built network of another family with the class, command and node that run it."""
    from tiny_da3 import TINY_ANYVIEW
    from tiny_vda import vda_config

    from anydepth import AnyViewEstimator, DepthEstimator
    from anydepth.models import ArchConfig, ModelConfig, create_model
    from anydepth.video_model import VideoDepthEstimator
    from anydepth.weights import ESTIMATOR_FAMILIES

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ANYDEPTH_MODELS", str(tmp_path))  # nothing on disk: a load attempt would fail differently
    estimator = {"image": DepthEstimator, "da3": AnyViewEstimator, "vda": VideoDepthEstimator}[wanted]
    names = {"image": "v2-small", "da3": "da3-small", "vda": "vda-small"}
    nets = {"image": create_model(ModelConfig(ArchConfig(32, 4, 2, 8, (8, 8, 8, 8)), (0, 1, 2, 3))),
            "da3": create_model(TINY_ANYVIEW), "vda": create_model(vda_config())}
    for got in ("image", "da3", "vda"):
        if got == wanted:
            assert estimator(nets[got], dtype="fp32", device="cpu").model is nets[got]
            continue
        kind, cls, cli, node = ESTIMATOR_FAMILIES[got]
        for model, what in ((names[got], names[got]), (nets[got], type(nets[got]).__name__)):
            with pytest.raises(ValueError) as e:
                estimator(model, dtype="fp32", device="cpu")
            message = str(e.value)
            assert message.startswith(f"{what} is {kind}, not ") and f"anydepth.{cls}" in message
            assert f"`{cli}`" in message and node in message
    with pytest.raises(ValueError, match="is not "):
        estimator(torch.nn.Linear(2, 2), dtype="fp32", device="cpu")
