"""Downloads through the real huggingface_hub code, against a local hub on 127.0.0.1."""

from __future__ import annotations

import pytest
import torch

from anydepth.weights import WeightsNotFoundError, load_model, resolve_checkpoint
from hub_server import LocalHub, hub_env, set_hf_offline
from tiny import hf_model, write_hf_dir, write_preprocessor_config, write_pth

REPO = "depth-anything/Depth-Anything-V2-Small"
HF_REPO = "depth-anything/Depth-Anything-V2-Small-hf"


@pytest.fixture()
def hub_files(tmp_path, tiny_hf):
    d = tmp_path / "upstream"
    d.mkdir()
    hf = write_hf_dir(tiny_hf, d / "hf")
    return {
        REPO: {"depth_anything_v2_vits.pth": write_pth(tiny_hf, d / "depth_anything_v2_vits.pth")},
        HF_REPO: {"config.json": hf / "config.json", "model.safetensors": hf / "model.safetensors",
                  "preprocessor_config.json": write_preprocessor_config(hf)},
    }


def test_download_into_models_folder_then_offline_reuse(tmp_path, monkeypatch, hub_files, tiny_hf):
    models = tmp_path / "models"
    with LocalHub(hub_files) as hub:
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        net = load_model("v2-small", models_dir=models)
        assert (models / "depth_anything_v2_vits.pth").is_file()
        assert any(p.endswith("/resolve/main/depth_anything_v2_vits.pth") for p in hub.paths)
        x = torch.rand(1, 3, 518, 518)
        with torch.no_grad():
            torch.testing.assert_close(net(x), tiny_hf(pixel_values=x).predicted_depth, atol=1e-5, rtol=0)
        hub.requests.clear()
        set_hf_offline(monkeypatch, True)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert resolve_checkpoint("v2-small", models_dir=models).path == models / "depth_anything_v2_vits.pth"
        assert hub.requests == []  # found locally: no network at all


def test_hf_repo_downloads_as_a_folder(tmp_path, monkeypatch, hub_files):
    models = tmp_path / "models"
    with LocalHub(hub_files) as hub:
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        resolved = resolve_checkpoint("v2-small-hf", models_dir=models)
    assert resolved.path == models / "Depth-Anything-V2-Small-hf"
    assert {p.name for p in resolved.path.iterdir() if not p.name.startswith(".")} == {"config.json", "model.safetensors",
                                                                                      "preprocessor_config.json"}
    assert load_model(resolved.path).config.name == "v2-small-hf"


def test_revision_pin_downloads_that_commit(tmp_path, monkeypatch, hub_files):
    other = write_pth(hf_model(seed=9), tmp_path / "newer.pth")
    with LocalHub(hub_files) as hub:
        pinned = hub.commit(REPO, "main")
        hub.add_revision(REPO, {"depth_anything_v2_vits.pth": other}, ref="main")  # upstream moves on
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        old = resolve_checkpoint("v2-small", models_dir=tmp_path / "a", revision=pinned).path.read_bytes()
        new = resolve_checkpoint("v2-small", models_dir=tmp_path / "b").path.read_bytes()
    assert old == hub_files[REPO]["depth_anything_v2_vits.pth"].read_bytes()
    assert new == other.read_bytes()


def test_offline_mode_makes_no_request_and_says_where_to_put_the_file(tmp_path, monkeypatch, hub_files):
    with LocalHub(hub_files) as hub:
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(WeightsNotFoundError, match="not present locally") as e:
            load_model("v2-small", models_dir=tmp_path / "models")
        assert str(tmp_path / "models") in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)
        assert hub.requests == []


def test_missing_file_on_the_hub_is_a_clear_error(tmp_path, monkeypatch, hub_files):
    del hub_files[REPO]["depth_anything_v2_vits.pth"]
    hub_files[REPO]["README.md"] = b"empty"
    with LocalHub(hub_files) as hub:
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        with pytest.raises(WeightsNotFoundError, match=REPO):
            load_model("v2-small", models_dir=tmp_path / "models")
    assert not (tmp_path / "models" / "depth_anything_v2_vits.pth").exists()


def test_interrupted_transfer_leaves_no_truncated_checkpoint(tmp_path, monkeypatch, hub_files, tiny_hf):
    """The hub drops the connection mid-file; huggingface_hub resumes, the result is complete."""
    with LocalHub(hub_files) as hub:
        hub_env(monkeypatch, hub, tmp_path / "hf-home")
        hub.truncate_next_get = 1000
        net = load_model("v2-small", models_dir=tmp_path / "models")
    path = tmp_path / "models" / "depth_anything_v2_vits.pth"
    assert path.read_bytes() == hub_files[REPO]["depth_anything_v2_vits.pth"].read_bytes()
    assert net.config.arch.embed_dim == 128


def test_unreachable_hub_says_so_and_where_to_put_the_file(tmp_path, monkeypatch):
    """No network: huggingface_hub raises LocalEntryNotFoundError (an EntryNotFoundError subclass)."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline_download(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline_download)
    with pytest.raises(WeightsNotFoundError) as e:
        load_model("v2-small", models_dir=tmp_path / "models")
    assert "could not be reached" in str(e.value) and "not present locally" in str(e.value)
    assert "has no" not in str(e.value)
