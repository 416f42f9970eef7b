"""Tiny random diffusers pipelines built from configs and saved with save_pretrained (no hub).

Real pipeline classes, real loading code, random weights of a few hundred kB. The VAEs have four
levels, so ``vae_scale_factor`` is 8 as in the published models: SD1.5/SDXL need multiples of 8 and
Flux multiples of 16, exactly like the real pipelines. The only part that normally comes from the
hub, the tokenizer, is built from a handmade byte-level vocabulary (CLIP) and a character unigram
vocabulary (T5).

``build_all(root)`` writes:

==================  ==========================================================================
``sd15``            StableDiffusionPipeline (no safety checker)
``sd15-controlnet`` ControlNetModel.from_unet of its UNet
``sdxl``            StableDiffusionXLPipeline (two text encoders)
``sdxl-controlnet`` ControlNetModel.from_unet of its UNet (text_time embedding)
``flux``            FluxPipeline (16 packed latent channels)
``flux-controlnet`` FluxControlNetModel
``flux-depth``      FluxControlPipeline (transformer input = image latents + control latents)
==================  ==========================================================================
"""

from __future__ import annotations

from pathlib import Path

import torch


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: printable bytes map to themselves, the rest to 256+."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clip_tokenizer():
    """CLIPTokenizer over single bytes: 256 characters, their ``</w>`` forms, and the two specials (514)."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer():
    """T5Tokenizer over printable ASCII characters (unigram), ids 0-2 the usual specials."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)] + [(chr(c), -1.0) for c in range(32, 127)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _clip_config(**kw):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=512, eos_token_id=513, pad_token_id=513, vocab_size=514, hidden_size=32,
                          intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32, **kw)


def _vae(latent_channels: int, flux: bool = False):
    from diffusers import AutoencoderKL

    extra = dict(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035) if flux else {}
    return AutoencoderKL(block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         latent_channels=latent_channels, norm_num_groups=8, sample_size=32, **extra)


def _unet(**kw):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=2, **kw)


def _t5_encoder():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1))


def _flux_transformer_kwargs(in_channels: int) -> dict:
    return dict(patch_size=1, in_channels=in_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])


def _wake(controlnet):
    """ControlNets start with zero convolutions (no effect until trained): give them random weights."""
    with torch.no_grad():
        for p in controlnet.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0.0, 0.3)
    return controlnet


def build_sd15(root: Path) -> dict[str, Path]:
    from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = _unet(cross_attention_dim=32)
    controlnet = _wake(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8)))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=_vae(4), text_encoder=CLIPTextModel(_clip_config()), tokenizer=clip_tokenizer(),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "sd15")
    controlnet.save_pretrained(root / "sd15-controlnet")
    return {"sd15": root / "sd15", "sd15-controlnet": root / "sd15-controlnet"}


def build_sdxl(root: Path) -> dict[str, Path]:
    from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    # text_time: 2 × 32 pooled + 6 time ids × 8 = 80 added-condition channels, as SDXL's 2816 at full size
    unet = _unet(cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=80)
    controlnet = _wake(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8)))
    pipe = StableDiffusionXLPipeline(
        vae=_vae(4), text_encoder=CLIPTextModel(_clip_config()), text_encoder_2=CLIPTextModelWithProjection(_clip_config()),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=unet,
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1))
    pipe.save_pretrained(root / "sdxl")
    controlnet.save_pretrained(root / "sdxl-controlnet")
    return {"sdxl": root / "sdxl", "sdxl-controlnet": root / "sdxl-controlnet"}


def build_flux(root: Path) -> dict[str, Path]:
    from diffusers import (FlowMatchEulerDiscreteScheduler, FluxControlNetModel, FluxControlPipeline, FluxPipeline,
                           FluxTransformer2DModel)
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    # FluxPipeline + FluxControlNetModel: 4 latent channels packed 2×2 -> 16 transformer channels
    transformer = FluxTransformer2DModel(**_flux_transformer_kwargs(16))
    controlnet = _wake(FluxControlNetModel(**_flux_transformer_kwargs(16)))
    base = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(4, flux=True),
                        text_encoder=CLIPTextModel(_clip_config()), tokenizer=clip_tokenizer(),
                        text_encoder_2=_t5_encoder(), tokenizer_2=t5_tokenizer(), transformer=transformer)
    base.save_pretrained(root / "flux")
    controlnet.save_pretrained(root / "flux-controlnet")
    # FLUX.1-Depth-dev layout: 1 latent channel packed -> 4; image + control latents concatenated -> 8 in, 4 out
    depth_transformer = FluxTransformer2DModel(**_flux_transformer_kwargs(8), out_channels=4)
    depth = FluxControlPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(1, flux=True),
                                text_encoder=CLIPTextModel(_clip_config()), tokenizer=clip_tokenizer(),
                                text_encoder_2=_t5_encoder(), tokenizer_2=t5_tokenizer(), transformer=depth_transformer)
    depth.save_pretrained(root / "flux-depth")
    return {"flux": root / "flux", "flux-controlnet": root / "flux-controlnet", "flux-depth": root / "flux-depth"}


def build_all(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {**build_sd15(root), **build_sdxl(root), **build_flux(root)}
