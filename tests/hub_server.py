"""A local, in-process stand-in for the Hugging Face Hub, for download tests.

`LocalHub` serves files from a mapping ``{repo_id: {filename: Path | bytes}}`` over plain HTTP on
``127.0.0.1`` (ephemeral port) and speaks enough of the Hub protocol for the *real*
``huggingface_hub.hf_hub_download`` / ``snapshot_download`` / ``HfApi.model_info`` (huggingface_hub 2.4) to
work against it::

    with LocalHub({"org/model": {"config.json": b"{}", "model.safetensors": path}}) as hub:
        cache = hub_env(monkeypatch, hub, tmp_path / "hf")
        local = hf_hub_download("org/model", "config.json")
        assert hub.paths == ["/org/model/resolve/main/config.json"] * 2   # HEAD + GET
        hub.requests.clear()
        ...                                                               # must not touch the network
        assert hub.requests == []

Routes (models only; ``repo_id`` may be ``org/name`` or a bare ``name``):

* ``HEAD|GET /<repo_id>/resolve/<revision>/<file>`` – the file, with ``Content-Length``, ``ETag``,
  ``X-Repo-Commit`` and ``Accept-Ranges: bytes``; ``Range: bytes=a-b | a- | -n`` answers 206 (hf_hub resumes
  interrupted downloads with ``Range: bytes=<n>-``). "LFS" files (weights-like suffixes or >= 10 MiB) get
  ``ETag``/``X-Linked-Etag`` = sha256 of the content and ``X-Linked-Size``; other files get the git blob sha1
  as ``ETag``, like the real Hub.
* ``GET /api/models/<repo_id>`` and ``/api/models/<repo_id>/revision/<revision>`` – JSON with ``id``, ``sha``,
  ``siblings`` (used by ``model_info`` / ``snapshot_download`` with a branch name).
* ``GET /api/models/<repo_id>/tree/<revision>[/<path>]`` – tree listing (used by ``snapshot_download``).
* ``GET /api/agent-harnesses`` – empty registry (see "agent detection" below).

Errors: unknown repo -> 401 + ``X-Error-Code: RepoNotFound`` (``RepositoryNotFoundError``); unknown revision ->
404 + ``RevisionNotFound`` (``RevisionNotFoundError``); missing file -> 404 + ``EntryNotFound`` and the
``X-Repo-Commit`` header (``RemoteEntryNotFoundError``, a subclass of ``huggingface_hub.errors.EntryNotFoundError``).

Revisions: every repo is served at branch ``"main"`` (commit ``hub.commit(repo_id)``) and at a *pinned*
40-hex commit (``hub.pinned_commit(repo_id)``; choose it with ``LocalHub(..., pinned={repo_id: sha})``), with
different ``X-Repo-Commit`` values, so revision pinning is observable. ``hub.add_revision(...)`` adds another
commit (and can move ``main`` to it) to simulate an upstream update. A revision that is neither a known branch
nor a known full commit sha gives ``RevisionNotFound``.

Every request is recorded in ``hub.requests`` (list of ``HubRequest(method, path, range)``, ``path`` including
the query string); ``hub.paths`` is the list of paths. Fault injection: ``hub.error_status = 503`` answers every
request with that status (a "Hub down" simulation); ``hub.truncate_next_get = n`` cuts the next non-range file
GET after ``n`` body bytes and drops the connection (hf_hub then sleeps 1 s and retries the GET, with
``Range: bytes=<k>-`` where ``k`` is what it already wrote -- whole 10 MiB ``DOWNLOAD_CHUNK_SIZE`` chunks only).

Beware: when the HEAD call fails and the file is *not* cached for that revision, ``hf_hub_download`` retries
408/429/500/502/503/504 answers and connection errors (also a stopped server) with exponential back-off
(1+2+4+8+8 = ~23 s) before raising ``LocalEntryNotFoundError``. Use e.g. ``error_status = 403`` for a fast
failure. When the file *is* cached for the requested revision, any such error falls back to the cached file
after a single request, without retries.

The server speaks HTTP/1.0 (one connection per request), so the process-wide pooled ``httpx2`` client of
huggingface_hub never keeps a connection to a server that a finished test has stopped.

huggingface_hub 2.4 configuration facts (why `hub_env` does what it does)
------------------------------------------------------------------------------
huggingface_hub reads its environment **once, at import**, into module attributes of
``huggingface_hub.constants``; changing ``os.environ`` afterwards has no effect on an already-imported library.
But the library reads those attributes at *call* time (``constants.ENDPOINT``, ``constants.HF_HUB_CACHE``,
``constants.is_offline_mode()``, ...), so monkeypatching the attributes works. What must be patched:

* endpoint: ``constants.ENDPOINT`` **and** ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (``hf_hub_url`` formats
  the template, which embeds the import-time endpoint). ``constants.HF_URL_HOSTS`` (hosts trusted for
  redirects/auth) is also import-time. The module-level ``huggingface_hub.hf_api.api = HfApi()`` binds
  ``api.endpoint`` at import, and the top-level helpers (``huggingface_hub.model_info``, ``list_repo_files``,
  ...) are bound methods of it, so ``api.endpoint`` is patched too. A fresh ``HfApi()`` reads
  ``constants.ENDPOINT`` when constructed.
* cache: ``constants.HF_HOME``, ``HF_HUB_CACHE``, ``HF_ASSETS_CACHE``, ``HF_XET_CACHE``, token paths and
  ``AGENT_HARNESSES_PATH`` are all computed at import; ``huggingface_hub.utils._cache_manager`` also did
  ``from ..constants import HF_HUB_CACHE`` (used by ``scan_cache_dir``). transformers reads
  ``huggingface_hub.constants.HF_HUB_CACHE`` at call time.
* offline mode: ``constants.HF_HUB_OFFLINE`` (from ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` at import).
  ``constants.is_offline_mode()`` returns it and is checked by the httpx2 request hook of every hub request
  (raises ``OfflineModeIsEnabled`` *before* anything is sent); transformers imports ``is_offline_mode`` from
  huggingface_hub, so it follows too. To toggle at run time set the attribute -- use `set_hf_offline`.
  ``hf_hub_download`` in offline mode with nothing cached raises ``LocalEntryNotFoundError``.
* telemetry: ``constants.HF_HUB_DISABLE_TELEMETRY`` (import-time).
* agent detection: ``build_hf_headers`` (called by every download) calls ``utils._detect_agent.detect_agent()``
  which, on its first call in a process, GETs ``{constants.ENDPOINT}/api/agent-harnesses`` unless a fresh copy
  is cached at ``constants.AGENT_HARNESSES_PATH`` or offline mode is on; the result is cached in the module
  global ``_detect_agent._registry``. `hub_env` pre-sets that global to an empty registry so no such request
  reaches the local hub (or the internet) and ``hub.requests`` holds only what the code under test did.
* the httpx2 client is a process-wide singleton created on first use (``utils._http.get_session``); proxy
  settings are read when it is created. `hub_env` sets ``NO_PROXY`` for 127.0.0.1/localhost and closes the
  singleton (``close_session``) so the next call builds a fresh client.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit

__all__ = ["HubRequest", "LocalHub", "hub_env", "set_hf_offline"]

_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".npz", ".gguf")
_LFS_MIN_SIZE = 10 * 1024 * 1024
_HEX40 = re.compile(r"[0-9a-f]{40}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class HubRequest(NamedTuple):
    """One request received by the hub (compares equal to a plain tuple)."""

    method: str
    path: str  # raw request target, query string included
    range: str | None  # the Range header, if any


@dataclass(frozen=True)
class _Entry:
    data: bytes
    sha256: str
    git_sha1: str
    lfs: bool

    @classmethod
    def make(cls, name: str, content: Path | str | bytes) -> _Entry:
        data = bytes(content) if isinstance(content, (bytes, bytearray, memoryview)) else Path(content).read_bytes()
        git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        lfs = name.lower().endswith(_LFS_SUFFIXES) or len(data) >= _LFS_MIN_SIZE
        return cls(data, hashlib.sha256(data).hexdigest(), git, lfs)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1


def _fake_sha(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()


class LocalHub:
    """Threaded local HTTP server imitating the Hugging Face Hub file API (see module docstring).

    Args:
        repos: ``{repo_id: {filename: Path | bytes}}``. Contents are read once, at construction.
        pinned: optional ``{repo_id: 40-hex commit}`` for the pinned commit; default: a deterministic fake sha.

    Use as a context manager (``with LocalHub(...) as hub: hub.endpoint``) or call `start` / `stop`.
    """

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, Path | str | bytes]],
        *,
        pinned: Mapping[str, str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._commits: dict[str, dict[str, dict[str, _Entry]]] = {}  # repo -> commit -> files
        self._refs: dict[str, dict[str, str]] = {}  # repo -> branch -> commit
        self._pinned: dict[str, str] = {}
        self.requests: list[HubRequest] = []
        self.error_status: int | None = None
        self.truncate_next_get: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        pinned = dict(pinned or {})
        for repo_id, files in repos.items():
            self.add_revision(repo_id, files, commit=_fake_sha(repo_id, "main"), ref="main")
            sha = pinned.pop(repo_id, None) or _fake_sha(repo_id, "pinned")
            self._pinned[repo_id] = self.add_revision(repo_id, files, commit=sha)
        if pinned:
            raise ValueError(f"pinned commits given for unknown repos {sorted(pinned)}")

    # ------------------------------------------------------------------ content
    def add_revision(
        self,
        repo_id: str,
        files: Mapping[str, Path | str | bytes],
        *,
        commit: str | None = None,
        ref: str | None = None,
    ) -> str:
        """Add a commit with `files` to `repo_id` (created if new); if `ref` is given, point that branch at it.

        Returns the commit sha (40 lowercase hex; generated when not given).
        """
        with self._lock:
            commits = self._commits.setdefault(repo_id, {})
            sha = (commit or _fake_sha(repo_id, str(len(commits)), *sorted(files))).lower()
            if not _HEX40.fullmatch(sha):
                raise ValueError(f"commit must be 40 hex characters, got {commit!r}")
            commits[sha] = {name: _Entry.make(name, content) for name, content in files.items()}
            if ref is not None:
                self._refs.setdefault(repo_id, {})[ref] = sha
            return sha

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha that `revision` (branch name or full sha) resolves to; KeyError if unknown."""
        sha = self._resolve(repo_id, revision)
        if sha is None:
            raise KeyError(f"{repo_id}@{revision}")
        return sha

    def pinned_commit(self, repo_id: str) -> str:
        """The pinned (non-``main``) commit every constructor repo is also served at."""
        return self._pinned[repo_id]

    def _resolve(self, repo_id: str, revision: str) -> str | None:
        with self._lock:
            if revision in self._refs.get(repo_id, {}):
                return self._refs[repo_id][revision]
            if revision.lower() in self._commits.get(repo_id, {}):
                return revision.lower()
            return None

    # ------------------------------------------------------------------ server
    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash), usable as ``HF_ENDPOINT``."""
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def paths(self) -> list[str]:
        """Paths of all requests received so far, in order."""
        return [r.path for r in self.requests]

    def url(self, repo_id: str, filename: str, revision: str = "main") -> str:
        """The resolve URL hf_hub requests for a file."""
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"

    def start(self) -> LocalHub:
        if self._server is not None:
            return self
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append(HubRequest(method, path, range_header))

    def _files(self, repo_id: str, commit: str) -> dict[str, _Entry]:
        with self._lock:
            return self._commits[repo_id][commit]

    def _knows(self, repo_id: str) -> bool:
        with self._lock:
            return repo_id in self._commits


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.0"
    server_version = "LocalHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    # -------------------------------------------------------------- helpers
    def _send(self, status: int, headers: Mapping[str, str], body: bytes, head: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, obj: Any, head: bool, extra: Mapping[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self._send(200, {"Content-Type": "application/json", **(extra or {})}, body, head)

    def _error(self, status: int, code: str | None, message: str, head: bool, commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code is not None:
            headers["X-Error-Code"] = code
        if commit is not None:
            headers["X-Repo-Commit"] = commit
        self._send(status, headers, json.dumps({"error": message}).encode(), head)

    def _handle(self, head: bool) -> None:
        hub = self.hub
        range_header = self.headers.get("Range")
        hub._record(self.command, self.path, range_header)
        if hub.error_status is not None:
            self._error(hub.error_status, None, f"simulated error {hub.error_status}", head)
            return
        raw_path = urlsplit(self.path).path
        if raw_path == "/api/agent-harnesses":
            self._json({"standardEnvVars": [], "harnesses": {}}, head)
        elif raw_path.startswith("/api/models/"):
            self._api(raw_path[len("/api/models/") :], head)
        elif "/resolve/" in raw_path:
            repo_part, _, rest = raw_path.lstrip("/").partition("/resolve/")
            revision, _, filename = rest.partition("/")
            self._resolve_file(unquote(repo_part), unquote(revision), unquote(filename), range_header, head)
        else:
            self._error(404, None, f"no route for {raw_path}", head)

    def _lookup(self, repo_id: str, revision: str, head: bool) -> str | None:
        if not repo_id or not self.hub._knows(repo_id):
            self._error(401, "RepoNotFound", "Repository not found", head)
            return None
        commit = self.hub._resolve(repo_id, revision)
        if commit is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision, head)
        return commit

    def _resolve_file(self, repo_id: str, revision: str, filename: str, range_header: str | None, head: bool) -> None:
        commit = self._lookup(repo_id, revision, head)
        if commit is None:
            return
        entry = self.hub._files(repo_id, commit).get(filename)
        if entry is None:
            self._error(404, "EntryNotFound", "Entry not found", head, commit=commit)
            return
        data, size = entry.data, len(entry.data)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{entry.etag}"',
            "X-Repo-Commit": commit,
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(size)
        status = 200
        if range_header and not head:
            m = _RANGE.fullmatch(range_header.strip())
            start = end = None
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start, end = max(size - int(m.group(2)), 0), size - 1
            if start is None or end is None or start >= size or start > end:
                self._send(416, {**headers, "Content-Range": f"bytes */{size}"}, b"", head)
                return
            status, data = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        truncate = self.hub.truncate_next_get
        if not head and status == 200 and truncate is not None:
            self.hub.truncate_next_get = None
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(data[:truncate])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, headers, data, head)

    def _api(self, rest: str, head: bool) -> None:
        repo_id, revision, tree_path, is_tree = rest, "main", "", False
        for marker in ("/revision/", "/tree/"):
            if marker in rest:
                repo_id, _, tail = rest.partition(marker)
                if marker == "/tree/":
                    is_tree = True
                    revision, _, tree_path = tail.partition("/")
                else:
                    revision = tail
                break
        repo_id, revision, tree_path = unquote(repo_id), unquote(revision), unquote(tree_path).strip("/")
        commit = self._lookup(repo_id, revision, head)
        if commit is None:
            return
        files = self.hub._files(repo_id, commit)
        if not is_tree:
            self._json(
                {
                    "_id": _fake_sha(repo_id)[:24],
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit,
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "tags": [],
                    "siblings": [{"rfilename": name} for name in sorted(files)],
                },
                head,
            )
            return
        recursive = "recursive=true" in urlsplit(self.path).query.lower() or "recursive=1" in urlsplit(self.path).query
        prefix = f"{tree_path}/" if tree_path else ""
        out: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            for i in range(1, len(parts)):
                if recursive or i == 1:
                    dirs.add(prefix + "/".join(parts[:i]))
            if len(parts) > 1 and not recursive:
                continue
            e = files[name]
            item: dict[str, Any] = {"type": "file", "oid": e.git_sha1, "size": len(e.data), "path": name}
            if e.lfs:
                item["lfs"] = {"oid": e.sha256, "size": len(e.data), "pointerSize": 134}
            out.append(item)
        if tree_path and not out and not dirs:
            self._error(404, "EntryNotFound", f"{tree_path} does not exist", head, commit=commit)
            return
        out += [{"type": "directory", "oid": _fake_sha(commit, d), "path": d} for d in sorted(dirs)]
        self._json(out, head)


def hub_env(monkeypatch: Any, hub: LocalHub, cache_dir: str | os.PathLike[str]) -> Path:
    """Point huggingface_hub (already imported or not) at `hub`, with an isolated cache; online mode.

    Sets the environment variables (for subprocesses and not-yet-imported libraries) *and* patches the
    import-time attributes of ``huggingface_hub.constants`` (see module docstring for why each one).
    Everything is undone by `monkeypatch` at test teardown.

    Args:
        monkeypatch: the pytest ``monkeypatch`` fixture.
        hub: a started `LocalHub`.
        cache_dir: becomes ``HF_HOME``; the hub cache is ``cache_dir / "hub"`` (the HF default layout).

    Returns:
        The hub cache directory (``HF_HUB_CACHE``), where ``models--org--name`` folders will appear.
    """
    import huggingface_hub.hf_api  # lazy-loaded submodule: import it explicitly
    from huggingface_hub import constants
    from huggingface_hub.utils import _cache_manager, _detect_agent, _http

    home = Path(cache_dir).resolve()
    hub_cache = home / "hub"
    hub_cache.mkdir(parents=True, exist_ok=True)
    endpoint = hub.endpoint

    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")])),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)

    patches = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(constants.HF_URL_HOSTS | {"127.0.0.1"}),
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(home / ".check_for_update_done"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
    }
    for name, value in patches.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
    _http.close_session()  # next call builds a fresh httpx2 client (picks up NO_PROXY)
    return hub_cache


def set_hf_offline(monkeypatch: Any, offline: bool = True) -> None:
    """Toggle huggingface_hub offline mode at run time (env var *and* the import-time constant).

    ``HF_HUB_OFFLINE`` is read once at import into ``huggingface_hub.constants.HF_HUB_OFFLINE``; every hub HTTP
    request checks ``constants.is_offline_mode()`` (which returns that attribute) and raises
    ``OfflineModeIsEnabled`` before sending. transformers uses the same function.
    """
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    if not offline:
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", bool(offline))
