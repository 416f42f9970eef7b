"""ComfyUI adapter: node classes and the ModelPatcher memory bridge (built by the node-pack issue)."""
