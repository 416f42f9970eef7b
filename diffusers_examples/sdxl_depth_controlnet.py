"""SDXL + depth ControlNet, conditioned on the depth of a photo.

The depth model goes back to the CPU after estimating (``memory="offload"``) and the pipeline's
models take turns on the GPU (``enable_model_cpu_offload``): this runs in about 8 GB of GPU memory.
The fp16-fix VAE avoids black images from the original SDXL VAE in float16.

    pip install "anydepth[diffusers]"
    python diffusers_examples/sdxl_depth_controlnet.py street.jpg "a rainy street in Tokyo at night, neon reflections"

Weights (downloaded on first use): Depth Anything V2 Small (Apache-2.0),
stabilityai/stable-diffusion-xl-base-1.0, diffusers/controlnet-depth-sdxl-1.0 and
madebyollin/sdxl-vae-fp16-fix.
"""

from __future__ import annotations

import argparse

import torch
from diffusers import AutoencoderKL, ControlNetModel, StableDiffusionXLControlNetPipeline

from anydepth import DepthEstimator
from anydepth.normalize import to_pil
from anydepth.pipelines import control_image, control_inputs, default_pixels


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="the photo whose depth guides the generation")
    p.add_argument("prompt")
    p.add_argument("--negative", default="blurry, low quality")
    p.add_argument("--out", default="sdxl_depth.png")
    p.add_argument("--pipeline", default="stabilityai/stable-diffusion-xl-base-1.0")
    p.add_argument("--controlnet", default="diffusers/controlnet-depth-sdxl-1.0")
    p.add_argument("--vae", default="madebyollin/sdxl-vae-fp16-fix", help="'none' keeps the pipeline's VAE")
    p.add_argument("--depth-model", default="v2-small")
    p.add_argument("--width", type=int, default=None, help="default: about 1024×1024 px with the photo's aspect ratio")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--control-scale", type=float, default=0.5, help="how strongly depth guides the image")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    dtype = torch.float16 if cuda else torch.float32

    # 1. The pipeline: each of its models moves to the GPU only while it runs.
    extra = {} if args.vae == "none" else {"vae": AutoencoderKL.from_pretrained(args.vae, torch_dtype=dtype)}
    controlnet = ControlNetModel.from_pretrained(args.controlnet, torch_dtype=dtype)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(args.pipeline, controlnet=controlnet, torch_dtype=dtype,
                                                               **extra)
    if cuda:
        pipe.enable_model_cpu_offload()

    # 2. Depth -> control image at the generation size (a multiple of 8), near = white.
    depth = DepthEstimator(args.depth_model, memory="offload")
    pixels = None if args.width or args.height else default_pixels(pipe)
    control = control_image(depth, args.image, pipe=pipe, width=args.width, height=args.height, pixels=pixels)
    to_pil(control[:, 0])[0].save(args.out.rsplit(".", 1)[0] + "_control.png")

    # 3. Generate. control_inputs gives image=, height= and width= for this pipeline.
    image = pipe(args.prompt, negative_prompt=args.negative, num_inference_steps=args.steps,
                 controlnet_conditioning_scale=args.control_scale,
                 generator=torch.Generator("cpu").manual_seed(args.seed), **control_inputs(pipe, control)).images[0]
    image.save(args.out)
    print(f"saved {args.out} ({image.width}×{image.height})")


if __name__ == "__main__":
    main()
