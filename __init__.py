"""ComfyUI entry point of the anydepth pack.

ComfyUI imports this folder from ``custom_nodes/<any name>/``. The library lives beside it in
``anydepth/`` and imports nothing from ComfyUI; the node classes (``nodes/``) are thin adapters.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    # Lets `import anydepth` find the bundled library when the pack is not pip-installed.
    sys.path.insert(0, _PACK_DIR)

WEB_DIRECTORY = "./js"

# The node pack (issue: ComfyUI node pack) registers its nodes here; the engine ships none yet.
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
