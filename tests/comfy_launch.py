"""Run ComfyUI's ``main.py`` from the cached runtime: ``python tests/comfy_launch.py <main.py arguments>``.

Puts the cached ComfyUI tree (and its own torchvision folder) on the path, then runs ``main.py`` as
``__main__``. With ``ANYDEPTH_HIDE_INSTALLED=1`` the ``anydepth`` installed in the environment
(editable or not) cannot be imported: only a copy inside a ``custom_nodes`` folder can, so a pack
has to bring its own library, as it does for a user who cloned it without ``pip install``.
"""

from __future__ import annotations

import importlib.machinery
import os
import runpy
import sys
from pathlib import Path

import comfy_runtime  # found beside this script (sys.path[0])

sys.path.pop(0)  # the tests folder has no business on ComfyUI's path


class _OnlyFromCustomNodes:
    """Meta path finder: ``anydepth`` resolves only from ``sys.path`` entries inside a custom_nodes folder."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "anydepth":
            return None
        roots = [p for p in sys.path if p and "custom_nodes" in Path(p).parts]
        spec = importlib.machinery.PathFinder.find_spec(fullname, roots)
        if spec is None:
            raise ModuleNotFoundError("anydepth is hidden from this ComfyUI (ANYDEPTH_HIDE_INSTALLED=1): "
                                      "a pack must bring its own copy", name=fullname)
        return spec


if os.environ.get("ANYDEPTH_HIDE_INSTALLED") == "1":
    sys.meta_path.insert(0, _OnlyFromCustomNodes())
    print("anydepth launcher: the installed anydepth is hidden; only custom_nodes copies import", flush=True)

runtime = comfy_runtime.ensure()
comfy_runtime.activate(runtime)
sys.argv = [str(runtime.comfy_dir / "main.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
