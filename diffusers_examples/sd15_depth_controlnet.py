"""Stable Diffusion 1.5 + depth ControlNet, conditioned on the depth of a photo.

The depth model and the pipeline share one GPU: the depth model goes back to the CPU after
estimating (``memory="offload"``) and the pipeline's models take turns on the GPU
(``enable_model_cpu_offload``), so this runs in about 4 GB of GPU memory.

    pip install "anydepth[diffusers]"
    python diffusers_examples/sd15_depth_controlnet.py room.jpg "a cosy reading room, warm evening light"

Weights (downloaded on first use): Depth Anything V2 Small (Apache-2.0),
stable-diffusion-v1-5/stable-diffusion-v1-5 and lllyasviel/control_v11f1p_sd15_depth.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

from anydepth import DepthEstimator
from anydepth.normalize import to_pil
from anydepth.pipelines import control_image, control_inputs, default_pixels


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="the photo whose depth guides the generation")
    p.add_argument("prompt")
    p.add_argument("--negative", default="blurry, low quality, deformed")
    p.add_argument("--out", default="sd15_depth.png")
    p.add_argument("--pipeline", default="stable-diffusion-v1-5/stable-diffusion-v1-5")
    p.add_argument("--controlnet", default="lllyasviel/control_v11f1p_sd15_depth")
    p.add_argument("--depth-model", default="v2-small")
    p.add_argument("--width", type=int, default=None, help="default: about 512×512 px with the photo's aspect ratio")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    dtype = torch.float16 if cuda else torch.float32

    # 1. The pipeline: each of its models moves to the GPU only while it runs.
    controlnet = ControlNetModel.from_pretrained(args.controlnet, torch_dtype=dtype)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(args.pipeline, controlnet=controlnet, torch_dtype=dtype)
    if cuda:
        pipe.enable_model_cpu_offload()

    # 2. Depth -> control image at the generation size (a multiple of 8), near = white.
    #    memory="offload": the depth model is back on the CPU when this returns.
    depth = DepthEstimator(args.depth_model, memory="offload")
    pixels = None if args.width or args.height else default_pixels(pipe)
    control = control_image(depth, args.image, pipe=pipe, width=args.width, height=args.height, pixels=pixels)
    to_pil(control[:, 0])[0].save(args.out.rsplit(".", 1)[0] + "_control.png")

    # 3. Generate. control_inputs gives image=, height= and width= for this pipeline.
    image = pipe(args.prompt, negative_prompt=args.negative, num_inference_steps=args.steps,
                 generator=torch.Generator("cpu").manual_seed(args.seed), **control_inputs(pipe, control)).images[0]
    image.save(args.out)
    print(f"saved {args.out} ({image.width}×{image.height})")


if __name__ == "__main__":
    main()
