"""One owner per concern: checks on the source tree (ast) and on the typed outputs of the DA3 networks.

* camera maths (rigid inverse, centres, homogeneous matrices, quaternions) is defined only in
  ``anydepth/cameras.py``, and the DA3 network, ``anyview`` and ``geometry`` import it from there;
* ``anydepth/models/config.py`` imports no network module; ``depth_anything.py`` and ``da3.py`` do not
  import each other (no cycle, not even a lazy one);
* the out-of-memory retry and the activation estimate live in ``anydepth/memory.py`` only;
* every DA3 module returns a documented dataclass, not a bare tuple or dict.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from pathlib import Path

import pytest
import torch

import anydepth
from anydepth.models import DA3Config, DA3Output, DepthAnything3, NestedDepthAnything3, create_model
from anydepth.models import ArchConfig
from anydepth.models.da3 import DA3Backbone, DA3BackboneOutput, DA3HeadOutput, DualDPTHead, MonoDPTHead

PACKAGE = Path(anydepth.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

#: Names of functions whose job is a camera helper (anywhere in the name: ``_centres``, ``to_homogeneous`` ...).
CAMERA_HELPER = re.compile(r"invert_rigid|invert_extrinsics|cent(er|re)s$|homogeneous$|quaternion")
NETWORK_MODULES = {"anydepth.models.depth_anything", "anydepth.models.da3", "anydepth.models.dinov2", "anydepth.models.dpt",
                   "anydepth.models.video_depth_anything"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (lazy imports in functions too).

    ``from pkg import name`` counts as importing both ``pkg`` and ``pkg.name`` (``name`` may be a module).
    """
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(_tree(path)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_package_is_found():
    names = {_module_name(p) for p in MODULES}
    assert {"anydepth.cameras", "anydepth.geometry", "anydepth.anyview", "anydepth.models.da3"} <= names


# ------------------------------------------------------------------------------------------------ cameras


def test_camera_helpers_are_defined_once_in_cameras():
    owners: dict[str, list[str]] = {}
    for path in MODULES:
        for fn in _functions(path):
            if CAMERA_HELPER.search(fn.name):
                owners.setdefault(fn.name, []).append(_module_name(path))
    elsewhere = {name: mods for name, mods in owners.items() if mods != ["anydepth.cameras"]}
    assert not elsewhere, f"camera helpers must live in anydepth/cameras.py only (import them from there): {elsewhere}"
    assert {"invert_rigid", "camera_centers", "to_homogeneous", "quaternion_to_matrix", "matrix_to_quaternion"} <= set(owners)


def test_the_pattern_catches_the_old_copies():
    # the names this issue found duplicated: the check above would fail on any of them
    for name in ("invert_rigid", "invert_extrinsics", "_centres", "camera_centers", "_homogeneous", "to_homogeneous",
                 "quaternion_to_matrix", "matrix_to_quaternion"):
        assert CAMERA_HELPER.search(name), name
    for name in ("pose_encoding_to_cameras", "camera_frusta", "normalize_extrinsics", "scene_extent"):
        assert not CAMERA_HELPER.search(name), name


@pytest.mark.parametrize("module", ["models/da3.py", "anyview.py", "geometry.py"])
def test_camera_users_import_from_cameras(module):
    assert "anydepth.cameras" in _imports(PACKAGE / module)


def test_geometry_keeps_its_public_names_as_the_same_functions():
    from anydepth import cameras, geometry

    assert geometry.invert_extrinsics is cameras.invert_rigid
    assert geometry.camera_centers is cameras.camera_centers
    assert geometry.to_homogeneous is cameras.to_homogeneous


# ------------------------------------------------------------------------------------------------ models


def test_config_imports_no_network():
    imported = _imports(PACKAGE / "models" / "config.py")
    assert not imported & NETWORK_MODULES, f"models/config.py must not import a network: {imported & NETWORK_MODULES}"
    assert "torch" not in {m.split(".")[0] for m in imported}, "models/config.py is plain data (no torch)"


@pytest.mark.parametrize(("module", "forbidden"), [("depth_anything.py", "anydepth.models.da3"),
                                                    ("da3.py", "anydepth.models.depth_anything"),
                                                    ("video_depth_anything.py", "anydepth.models.depth_anything"),
                                                    ("video_depth_anything.py", "anydepth.models.da3")])
def test_networks_do_not_import_each_other(module, forbidden):
    assert forbidden not in _imports(PACKAGE / "models" / module)


def test_create_model_dispatches_on_the_config_type():
    cfg = DA3Config(ArchConfig(64, 6, 2, 16, (8, 16, 32, 32)), (1, 2, 3, 5), alt_start=2, qknorm_start=2, rope_start=2)
    assert type(create_model(cfg, device="meta")) is DepthAnything3
    with pytest.raises(TypeError, match="ModelConfig, DA3Config, NestedDA3Config.*got str"):
        create_model("vits")


# ------------------------------------------------------------------------------------------------ memory


def test_oom_retry_and_activation_estimate_have_one_owner():
    for path in MODULES:
        name = _module_name(path)
        if name == "anydepth.memory":
            continue
        calls = {n.func.id for n in ast.walk(_tree(path)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "is_oom" not in calls, f"{name} handles out-of-memory itself; use anydepth.memory.run_in_batches / retry_halving_on_oom"
        assert "estimate_activation_bytes" not in {f.name for f in _functions(path)}, f"{name} defines its own estimate_activation_bytes"


# ------------------------------------------------------------------------------------------------ typed outputs


@pytest.mark.parametrize(("module", "output"), [(DepthAnything3, DA3Output), (NestedDepthAnything3, DA3Output),
                                                (DA3Backbone, DA3BackboneOutput), (DualDPTHead, DA3HeadOutput),
                                                (MonoDPTHead, DA3HeadOutput)])
def test_da3_forwards_are_annotated_with_dataclasses(module, output):
    assert typing.get_type_hints(module.forward)["return"] is output
    assert dataclasses.is_dataclass(output) and output.__doc__ and "Attributes:" in output.__doc__


@pytest.mark.parametrize("mono", [False, True])
def test_da3_forwards_return_their_dataclasses(mono):
    torch.manual_seed(0)
    arch = ArchConfig(64, 6, 2, 16, (8, 16, 32, 32))
    cfg = (DA3Config(arch, (1, 2, 3, 5), cat_token=False, head="dpt", camera=False) if mono
           else DA3Config(arch, (1, 2, 3, 5), alt_start=2, qknorm_start=2, rope_start=2))
    net = create_model(cfg)
    x = torch.randn(1, 2, 3, 28, 42)
    with torch.inference_mode():
        tokens = net.backbone(x)
        head = net.head([f.flatten(0, 1) for f in tokens.features], (2, 3), 14)
        out = net(x)
    assert isinstance(tokens, DA3BackboneOutput) and len(tokens.features) == len(tokens.camera_tokens) == 4
    assert isinstance(head, DA3HeadOutput) and head.depth.shape == (2, 28, 42)
    assert isinstance(out, DA3Output) and out.depth.shape == (1, 2, 28, 42)
    torch.testing.assert_close(out.depth[0], head.depth)
    if mono:
        assert head.confidence is None and head.sky.shape == (2, 28, 42) and out.extrinsics is None
    else:
        assert head.sky is None and out.confidence.shape == (1, 2, 28, 42) and out.extrinsics.shape == (1, 2, 3, 4)
