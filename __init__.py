"""ComfyUI entry point of the anydepth pack (V3 ``comfy_entrypoint``).

ComfyUI imports this folder as a package from ``custom_nodes/<any name>/``. The library lives
beside it in ``anydepth/`` and imports nothing from ComfyUI; the node classes (``nodes/``) are thin
adapters over it. The pack works without ``pip install``: the bundled library is imported from this
folder (a pip-installed ``anydepth`` imported earlier by something else is used as is).
"""

import os
import sys


def _import_bundled_library() -> None:
    """Import ``anydepth`` from this folder without leaving the folder on ``sys.path``.

    Keeping the pack folder on ``sys.path`` would expose its ``nodes/`` package as a top-level
    ``nodes``, the name of ComfyUI's core module; once imported, the library finds its own
    submodules through its package path.
    """
    if "anydepth" in sys.modules:
        return
    pack_dir = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, pack_dir)
    try:
        import anydepth  # noqa: F401
    finally:
        sys.path.remove(pack_dir)


_import_bundled_library()

WEB_DIRECTORY = "./js"

try:
    from comfy_api.latest import ComfyExtension
except ImportError:  # not inside ComfyUI: pytest, for one, imports the repository root as a package
    __all__ = ["WEB_DIRECTORY"]
else:
    from .nodes import AnyDepthExtension

    async def comfy_entrypoint() -> ComfyExtension:
        """Called by ComfyUI to get the pack's nodes (no NODE_CLASS_MAPPINGS: ComfyUI would prefer it)."""
        return AnyDepthExtension()

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
