"""Fixtures for the ComfyUI tests: an in-process ComfyUI and a ComfyUI server, each started once.

Both use the real ComfyUI 0.3.75 runtime from :mod:`comfy_runtime`, on the CPU, with their own
temporary base directory (models, input, output, user) so nothing touches the cached tree.

* :func:`comfy` imports ComfyUI into the test process (``--cpu``), creates the ``PromptServer``
  (not listening), loads this repository as a custom node pack with ``nodes.load_custom_node`` and
  runs prompts through ``execution.validate_prompt`` and ``PromptExecutor``.
* :func:`comfy_server` copies the pack into ``custom_nodes/<odd folder name>/`` and starts
  ``main.py --cpu --listen 127.0.0.1`` in a subprocess that cannot import the installed ``anydepth``
  (so the pack must bring its own), then talks HTTP to it.

The state behind both is kept at module level: however many test modules import these fixtures,
ComfyUI is imported once and the server started once per session (once per frontend: the browser tests also
serve a newer ``comfyui-frontend-package`` with ``--front-end-root``, see :func:`start_server`).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import comfy_runtime

REPO = comfy_runtime.REPO
PACK_ENTRIES = ("__init__.py", "pyproject.toml", "anydepth", "nodes", "js", "workflows")
"""What a user's clone of the pack holds that ComfyUI uses (tests, bench and CI files left out)."""
PACK_FOLDER_NAME = "comfyui-anydepth.copy"
"""The server loads the pack from a folder of another name, with a dot (ComfyUI rewrites it in module names)."""

ANYDEPTH_NODES = ("AnyDepthLoadModel", "AnyDepthEstimate", "AnyDepthToImage", "AnyDepthColormap", "AnyDepthAnything",
                  "AnyDepthApplyControlNet", "AnyDepthSave", "AnyDepthAlign", "AnyDepthVideoDepth", "AnyDepthStabilize",
                  "AnyDepthLoadDepth", "AnyDepthAnyViewGeometry", "AnyDepthGeometryToPointCloud",
                  "AnyDepthDepthToMesh", "AnyDepthSaveMesh", "AnyDepthSequenceGeometry")


RELATIVE_FILE = "depth_anything_v2_vits.pth"
"""The catalogue's file name for ``v2-small``: a tiny model saved under it answers that dropdown entry."""
METRIC_FILE = "depth_anything_v2_metric_hypersim_vits.pth"
"""The catalogue's file name for ``v2-metric-indoor-small`` (metres up to 20)."""
RELATIVE_OPTION = "v2-small (Apache-2.0)"
METRIC_OPTION = "v2-metric-indoor-small (Apache-2.0)"

_tiny_hf: dict = {}


def tiny_reference(metric: bool = False):
    """The transformers model whose weights the tiny checkpoints hold (the numeric reference)."""
    if metric not in _tiny_hf:
        from tiny import hf_model

        _tiny_hf[metric] = hf_model(seed=1 if metric else 0, metric=metric, max_depth=20)
    return _tiny_hf[metric]


def tiny_checkpoint(dest: Path, *, metric: bool = False) -> Path:
    """Write the tiny random Depth Anything V2 checkpoint (original ``.pth`` layout) to ``dest``."""
    from tiny import write_pth

    dest.parent.mkdir(parents=True, exist_ok=True)
    return write_pth(tiny_reference(metric), dest)


def install_tiny_models(models_dir: Path) -> dict[str, Path]:
    """Put the tiny relative and metric models where the catalogue entries look for them."""
    folder = Path(models_dir) / "depthanything"
    out = {}
    for option, name, metric in ((RELATIVE_OPTION, RELATIVE_FILE, False), (METRIC_OPTION, METRIC_FILE, True)):
        path = folder / name
        if not path.is_file():
            tiny_checkpoint(path, metric=metric)
        out[option] = path
    return out


def _rmtree_at_exit(path: str) -> None:
    atexit.register(shutil.rmtree, path, ignore_errors=True)


# --------------------------------------------------------------------------------------------- in process


@dataclass
class InProcessComfy:
    """ComfyUI imported into the test process."""

    base: Path
    nodes: object
    execution: object
    folder_paths: object
    mm: object
    server: object
    pack: object
    executor: object = None
    progress: list = field(default_factory=list)

    @property
    def models_dir(self) -> Path:
        return Path(self.folder_paths.models_dir)

    @property
    def input_dir(self) -> Path:
        return Path(self.folder_paths.get_input_directory())

    @property
    def output_dir(self) -> Path:
        return Path(self.folder_paths.get_output_directory())

    def validate(self, prompt: dict) -> tuple:
        """``execution.validate_prompt``: (valid, error, outputs, node_errors)."""
        return asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))

    def run(self, prompt: dict) -> dict:
        """Validate and execute ``prompt`` (API format) with ``PromptExecutor``; return the history entry.

        Raises AssertionError with ComfyUI's own error messages when validation or execution fails.
        """
        valid, error, outputs, node_errors = self.validate(prompt)
        assert valid, f"prompt rejected: {error} {node_errors}"
        self.executor.execute(prompt, str(uuid.uuid4()), {}, outputs)
        errors = [data for event, data in self.executor.status_messages if event in ("execution_error", "execution_interrupted")]
        assert self.executor.success, f"execution failed: {errors}"
        return self.executor.history_result

    def execution_error(self, prompt: dict) -> dict:
        """Execute a prompt that must fail; return ComfyUI's error message data."""
        valid, error, outputs, node_errors = self.validate(prompt)
        assert valid, f"prompt rejected: {error} {node_errors}"
        self.executor.execute(prompt, str(uuid.uuid4()), {}, outputs)
        assert not self.executor.success, "the prompt was expected to fail"
        return next(data for event, data in self.executor.status_messages if event in ("execution_error", "execution_interrupted"))


_in_process: InProcessComfy | None = None


def start_in_process() -> InProcessComfy:
    global _in_process
    if _in_process is not None:
        return _in_process
    runtime = comfy_runtime.ensure()
    comfy_runtime.activate(runtime)
    base = Path(tempfile.mkdtemp(prefix="anydepth-comfy-inproc-"))
    _rmtree_at_exit(str(base))

    from comfy.cli_args import args  # parses no command line: comfy.options.args_parsing is off

    args.cpu = True
    args.base_directory = str(base)
    args.database_url = "sqlite:///:memory:"
    args.disable_metadata = True
    import utils.extra_config  # noqa: F401  ComfyUI's `utils` package, before nodes.py puts comfy/ first on sys.path
    import comfy.model_management as mm
    import comfy.utils
    import execution
    import folder_paths
    import nodes
    import server

    loop = asyncio.new_event_loop()
    prompt_server = server.PromptServer(loop)
    ok = loop.run_until_complete(nodes.load_custom_node(str(REPO), module_parent="custom_nodes"))
    assert ok, "the anydepth pack failed to load in process (see the log above)"
    pack = sys.modules[str(REPO).replace(".", "_x_")]
    executor = execution.PromptExecutor(prompt_server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0})
    comfy_ = InProcessComfy(base, nodes, execution, folder_paths, mm, prompt_server, pack, executor)
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: comfy_.progress.append((value, total)))
    _in_process = comfy_
    return comfy_


@pytest.fixture(scope="session")
def comfy() -> InProcessComfy:
    """ComfyUI imported in process, with this pack loaded."""
    return start_in_process()


# --------------------------------------------------------------------------------------------- server


@dataclass
class ComfyServer:
    """A ``main.py`` subprocess with the pack in ``custom_nodes/``."""

    url: str
    base: Path
    pack_dir: Path
    log_path: Path
    process: subprocess.Popen

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, data: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}")  # some routes (/interrupt) answer with no body
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run(self, prompt: dict, timeout: float = 120.0) -> dict:
        """POST a prompt, wait for it in /history and return its history entry (status checked by the caller)."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "anydepth-tests"})
        assert status == 200 and not body["node_errors"], f"/prompt refused the prompt: {body}"
        return self.wait(body["prompt_id"], timeout)

    def wait(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """Wait until ``prompt_id`` is in /history with a final status; return its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            assert self.process.poll() is None, f"ComfyUI exited:\n{self.log[-4000:]}"
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log[-4000:]}")


_servers: dict[str, ComfyServer] = {}
"""One server per frontend folder ('' for the tree's own frontend)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_server(front_end_root: Path | None = None) -> ComfyServer:
    """The server of this session for ``front_end_root`` (``None``: the frontend package of the environment),
    started on first use."""
    key = str(front_end_root or "")
    if key in _servers:
        return _servers[key]
    runtime = comfy_runtime.ensure()
    base = Path(tempfile.mkdtemp(prefix="anydepth-comfy-server-"))
    _rmtree_at_exit(str(base))
    pack_dir = base / "custom_nodes" / PACK_FOLDER_NAME
    pack_dir.mkdir(parents=True)
    for entry in PACK_ENTRIES:
        src = REPO / entry
        if src.is_dir():
            shutil.copytree(src, pack_dir / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.is_file():
            shutil.copy2(src, pack_dir / entry)
    for name in ("models", "input", "output", "user"):
        (base / name).mkdir(exist_ok=True)
    port = _free_port()
    log_path = base / "comfyui.log"
    env = dict(os.environ, ANYDEPTH_HIDE_INSTALLED="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(Path(__file__).with_name("comfy_launch.py")), "--cpu", "--listen", "127.0.0.1",
           "--port", str(port), "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
           "--disable-api-nodes", "--disable-metadata"]
    if front_end_root is not None:
        cmd += ["--front-end-root", str(front_end_root)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=runtime.comfy_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    atexit.register(_stop, process)
    server = ComfyServer(f"http://127.0.0.1:{port}", base, pack_dir, log_path, process)
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise AssertionError(f"ComfyUI exited with {process.returncode} at start-up:\n{server.log[-6000:]}")
        try:
            server.get("/system_stats")
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise AssertionError(f"ComfyUI did not answer in 180 s:\n{server.log[-6000:]}") from None
            time.sleep(0.5)
    _servers[key] = server
    return server


@pytest.fixture(scope="session")
def comfy_server() -> ComfyServer:
    """ComfyUI's main.py serving on 127.0.0.1 with the pack copied into custom_nodes/."""
    return start_server()
