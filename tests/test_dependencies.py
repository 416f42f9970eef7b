"""Every module the tests import comes from a declared dependency (pyproject ``dependencies`` or the ``test`` extra).

A package that is only present because something else pulls it in (``httpx2`` via huggingface_hub, say) can
vanish with that package's next release; then ``pip install -e ".[test]"`` in a fresh clone no longer gives
a suite that runs.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
#: Importable without a distribution of their own: this project, and the ComfyUI tree that
#: tests/comfy_runtime.py fetches for the node tests.
FIRST_PARTY = {"anydepth", "nodes", "tests"}
COMFYUI = {"comfy", "comfy_api", "execution", "folder_paths", "server", "utils"}
#: Tried inside ``try: ... except ImportError`` with a stand-in when absent (tests/test_da3_alignment.py: the
#: official InputProcessor's torchvision transforms and its imageio import); never required.
OPTIONAL = {"torchvision", "imageio"}
#: Installed by the README's test command itself (``pip install --no-deps depth-anything-3==0.1.1``).
INSTALLED_BY_THE_TEST_COMMAND = {"depth-anything-3"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    return {_canonical(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements} | INSTALLED_BY_THE_TEST_COMMAND


def _imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path``, ``pytest.importorskip("x")`` included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip" and node.args
              and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def _undeclared(files: list[Path]) -> dict[str, str]:
    """``{module: why}`` for each imported module no declared distribution provides."""
    local = {p.stem for p in TESTS.glob("*.py")} | FIRST_PARTY | COMFYUI | OPTIONAL
    provides = importlib.metadata.packages_distributions()
    declared = _declared()
    out = {}
    for module in sorted(set().union(*map(_imports, files))):
        if module in sys.stdlib_module_names or module in local:
            continue
        dists = {_canonical(d) for d in provides.get(module, [])}
        if not dists:
            out[module] = "not installed: no distribution provides it"
        elif not dists & declared:
            out[module] = f"from {', '.join(sorted(dists))}, which pyproject.toml does not declare"
    return out


def test_every_test_import_is_a_declared_dependency():
    assert _undeclared(sorted(TESTS.glob("*.py"))) == {}


def test_an_undeclared_import_is_found(tmp_path):
    """The check itself: a transitive-only package and an unknown module are both reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nimport numpy\nfrom anydepth import io\nimport httpx2\n"
                     "import pytest\npytest.importorskip('no_such_module_xyz')\n")
    found = _undeclared([probe])
    assert set(found) == {"httpx2", "no_such_module_xyz"}
    assert found["no_such_module_xyz"].startswith("not installed")
