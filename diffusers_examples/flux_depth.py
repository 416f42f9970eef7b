"""FLUX.1 Depth [dev]: a Flux image conditioned on the depth of a photo.

FLUX.1-Depth-dev takes the depth map as ``control_image`` (its transformer reads the control
latents next to the image latents). Flux needs sides that are multiples of 16, and it takes a
tensor control image in the VAE's -1..1 range: ``control_image`` and ``control_inputs`` take care
of both. The depth model goes back to the CPU after estimating, and the pipeline's models take
turns on the GPU (``enable_model_cpu_offload``).

    pip install "anydepth[diffusers]" sentencepiece protobuf
    huggingface-cli login   # FLUX.1-Depth-dev is gated: accept its license on the hub first
    python diffusers_examples/flux_depth.py room.jpg "a sunlit scandinavian living room, photo"

Weights: Depth Anything V2 Small (Apache-2.0) and black-forest-labs/FLUX.1-Depth-dev
(FLUX.1 [dev] Non-Commercial License).
"""

from __future__ import annotations

import argparse

import torch
from diffusers import FluxControlPipeline

from anydepth import DepthEstimator
from anydepth.normalize import to_pil
from anydepth.pipelines import control_image, control_inputs, default_pixels


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="the photo whose depth guides the generation")
    p.add_argument("prompt")
    p.add_argument("--out", default="flux_depth.png")
    p.add_argument("--pipeline", default="black-forest-labs/FLUX.1-Depth-dev")
    p.add_argument("--depth-model", default="v2-small")
    p.add_argument("--width", type=int, default=None, help="default: about 1024×1024 px with the photo's aspect ratio")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--guidance", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32

    # 1. The pipeline: each of its models moves to the GPU only while it runs.
    pipe = FluxControlPipeline.from_pretrained(args.pipeline, torch_dtype=dtype)
    if cuda:
        pipe.enable_model_cpu_offload()

    # 2. Depth -> control image at the generation size (a multiple of 16), near = white.
    depth = DepthEstimator(args.depth_model, memory="offload")
    pixels = None if args.width or args.height else default_pixels(pipe)
    control = control_image(depth, args.image, pipe=pipe, width=args.width, height=args.height, pixels=pixels)
    to_pil(control[:, 0])[0].save(args.out.rsplit(".", 1)[0] + "_control.png")

    # 3. Generate. control_inputs gives control_image= (as -1..1 for Flux), height= and width=.
    image = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
                 generator=torch.Generator("cpu").manual_seed(args.seed), **control_inputs(pipe, control)).images[0]
    image.save(args.out)
    print(f"saved {args.out} ({image.width}×{image.height})")


if __name__ == "__main__":
    main()
