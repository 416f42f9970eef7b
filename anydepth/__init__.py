"""anydepth: Depth Anything for ComfyUI, diffusers and plain Python."""
