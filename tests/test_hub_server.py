"""Self-tests of the local Hub stand-in (tests/hub_server.py) against the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

try:
    from hub_server import LocalHub, hub_env, set_hf_offline
except ImportError:  # tests/ imported as a package
    from tests.hub_server import LocalHub, hub_env, set_hf_offline

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = "org/tiny-model"
CONFIG = b'{"model_type": "tiny"}'
WEIGHTS = bytes(range(256)) * 40  # 10240 bytes, "LFS" because of the suffix


@pytest.fixture
def hub(tmp_path):
    weights = tmp_path / "src" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(WEIGHTS)
    with LocalHub({REPO: {"config.json": CONFIG, "model.safetensors": weights, "sub/extra.txt": b"x"}}) as h:
        yield h


def test_download_local_dir_and_cache(hub, tmp_path, monkeypatch):
    cache = hub_env(monkeypatch, hub, tmp_path / "hf")
    out = hf_hub_download(REPO, "model.safetensors", revision="main", local_dir=tmp_path / "out")
    assert Path(out).read_bytes() == WEIGHTS
    assert [r.method for r in hub.requests] == ["HEAD", "GET"]
    assert hub.paths == [f"/{REPO}/resolve/main/model.safetensors"] * 2

    # Into the cache; the blob is named by the sha256 (LFS) / git sha1 (regular) ETag.
    path = hf_hub_download(REPO, "model.safetensors")
    assert Path(path).read_bytes() == WEIGHTS
    assert str(path).startswith(str(cache))
    assert (cache / "models--org--tiny-model" / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()).is_file()
    ref = (cache / "models--org--tiny-model" / "refs" / "main").read_text()
    assert ref == hub.commit(REPO)

    # Cached + local_files_only: no request at all.
    hub.requests.clear()
    assert hf_hub_download(REPO, "model.safetensors", local_files_only=True) == path
    assert hub.requests == []


def test_revision_pinning(hub, tmp_path, monkeypatch):
    cache = hub_env(monkeypatch, hub, tmp_path / "hf")
    pinned = hub.pinned_commit(REPO)
    assert pinned != hub.commit(REPO) and len(pinned) == 40
    path = hf_hub_download(REPO, "config.json", revision=pinned)
    assert f"/snapshots/{pinned}/" in path.replace("\\", "/")
    assert Path(path).read_bytes() == CONFIG

    # Upstream "main" moves on; the pinned commit still serves the old content.
    new = hub.add_revision(REPO, {"config.json": b"{}"}, ref="main")
    assert hub.commit(REPO) == new
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == b"{}"
    assert Path(hf_hub_download(REPO, "config.json", revision=pinned)).read_bytes() == CONFIG
    assert (cache / "models--org--tiny-model" / "refs" / "main").read_text() == new

    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="f" * 40)


def test_errors(hub, tmp_path, monkeypatch):
    hub_env(monkeypatch, hub, tmp_path / "hf")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/nope", "config.json")
    # Hub answering an error and nothing cached -> LocalEntryNotFoundError ("check your connection" path).
    # (403, not 5xx: with nothing cached hf_hub retries 408/429/5xx and connection errors with ~23 s of back-off.)
    hub.error_status = 403
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "config.json")
    # Hub down but the file is cached for that revision -> the cached file, no retries.
    hub.error_status = None
    path = hf_hub_download(REPO, "config.json")
    hub.error_status = 503
    hub.requests.clear()
    assert hf_hub_download(REPO, "config.json") == path
    assert len(hub.requests) == 1


def test_offline_makes_no_request(hub, tmp_path, monkeypatch):
    hub_env(monkeypatch, hub, tmp_path / "hf")
    set_hf_offline(monkeypatch)
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "config.json")
    assert hub.requests == []

    # Back online: works; then offline again serves from the cache without requests.
    set_hf_offline(monkeypatch, False)
    path = hf_hub_download(REPO, "config.json")
    hub.requests.clear()
    set_hf_offline(monkeypatch)
    assert hf_hub_download(REPO, "config.json") == path
    assert hub.requests == []


def test_api_and_snapshot(hub, tmp_path, monkeypatch):
    hub_env(monkeypatch, hub, tmp_path / "hf")
    info = HfApi().model_info(REPO)
    assert info.sha == hub.commit(REPO)
    assert sorted(s.rfilename for s in info.siblings) == ["config.json", "model.safetensors", "sub/extra.txt"]
    assert HfApi().model_info(REPO, revision=hub.pinned_commit(REPO)).sha == hub.pinned_commit(REPO)

    folder = snapshot_download(REPO, local_dir=tmp_path / "snap")
    assert (tmp_path / "snap" / "sub" / "extra.txt").read_bytes() == b"x"
    assert (tmp_path / "snap" / "model.safetensors").read_bytes() == WEIGHTS
    assert str(folder).endswith("snap")


def _get_range(url: str, byte_range: str) -> tuple[int, dict[str, str], bytes]:
    """A plain ``GET`` with a ``Range`` header (the standard library's client): status, headers, body."""
    request = urllib.request.Request(url, headers={"Range": byte_range})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:  # urllib raises for 4xx/5xx answers
        return e.code, dict(e.headers), e.read()


def test_range_and_resume(hub, tmp_path, monkeypatch):
    hub_env(monkeypatch, hub, tmp_path / "hf")
    status, headers, body = _get_range(hub.url(REPO, "model.safetensors"), "bytes=10-19")
    assert status == 206 and body == WEIGHTS[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(WEIGHTS)}"
    status, _, body = _get_range(hub.url(REPO, "model.safetensors"), "bytes=-5")
    assert status == 206 and body == WEIGHTS[-5:]
    assert _get_range(hub.url(REPO, "config.json"), "bytes=999-")[0] == 416

    # A dropped connection mid-body: hf_hub retries the GET after a 1 s back-off. (It resumes with
    # "Range: bytes=<n>-" only for bytes already written, i.e. after whole 10 MiB chunks; here n == 0.)
    hub.requests.clear()
    hub.truncate_next_get = 1000
    path = hf_hub_download(REPO, "model.safetensors")
    assert Path(path).read_bytes() == WEIGHTS
    assert [r.method for r in hub.requests] == ["HEAD", "GET", "GET"]
