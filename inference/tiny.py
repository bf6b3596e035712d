"""A tiny random-weight SDXL pipeline built in code, for tests and offline smoke runs.

It has the real SDXL layout (two CLIP text encoders, a text_time UNet, a KL VAE with a scale factor of 8,
SDXL's Euler schedule), so it exercises the same code paths as the real model, but its weights are random
and its native resolution is 64 px, so a 4-image batch takes well under a second on a laptop CPU.
No network is needed: the tokenizers are byte-level CLIP tokenizers with no merges.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import diffusers as _diffusers
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

TEXT_HIDDEN = 32  # per encoder; the UNet sees both concatenated (cross_attention_dim 64)
TIME_EMBED_DIM = 8  # SDXL embeds 6 size/crop numbers with this width each
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

diffusers: Any = _diffusers  # untyped under mypy (it sees placeholder classes); see inference.pipeline


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table, which CLIP's byte-level BPE uses.

    Written out here because transformers moves it between modules from one major version to the next.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def tiny_vocab() -> dict[str, int]:
    """256 byte characters, the same with the end-of-word suffix, then the two special tokens (514)."""
    chars = list(bytes_to_unicode().values())
    tokens = [*chars, *(f"{char}</w>" for char in chars), BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def make_tokenizer() -> CLIPTokenizer:
    # With no merges every word becomes one token per byte, which is all a random-weight model needs.
    # transformers 5 takes the vocab itself (it silently ignores a `vocab_file=` keyword) and defaults
    # model_max_length to 1e30, so CLIP's 77 must be given or diffusers would pad prompts to that.
    return CLIPTokenizer(
        vocab=tiny_vocab(), merges=[], model_max_length=77, bos_token=BOS, eos_token=EOS, pad_token=EOS
    )


def make_tiny_unet() -> Any:
    """The tiny SDXL-shaped UNet with random weights drawn from torch's global generator."""
    return diffusers.UNet2DConditionModel(
        sample_size=8,  # latent side; × VAE factor 8 = 64 px native resolution
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_HIDDEN,  # time ids + pooled text
        cross_attention_dim=2 * TEXT_HIDDEN,
        norm_num_groups=32,
    )


def make_tiny_pipeline(*, seed: int = 0) -> Any:
    """The StableDiffusionXLPipeline in memory, float32 on the CPU; the same seed gives the same weights."""
    torch.manual_seed(seed)
    unet = make_tiny_unet()
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # Four blocks give SDXL's scale factor of 8 (three downsamples); channels kept small for speed.
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    vocab_size = len(tiny_vocab())
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=TEXT_HIDDEN,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,  # the pooled output is read at the first EOS
        pad_token_id=vocab_size - 1,
    )
    text_encoder = CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    return assemble_pipeline(unet, vae, text_encoder, text_encoder_2)


def assemble_pipeline(unet: Any, vae: Any, text_encoder: Any, text_encoder_2: Any) -> Any:
    """An SDXL pipeline from its models, with SDXL's Euler scheduler and the offline byte-level tokenizers."""
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return diffusers.StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=make_tokenizer(),
        tokenizer_2=make_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


# Written into the tiny model's folder: FAST_MODEL=<folder>/fast-unet.safetensors (or fast-lora.safetensors).
FAST_UNET_FILE = "fast-unet.safetensors"  # a whole UNet, the SDXL-Lightning file form
FAST_LORA_FILE = "fast-lora.safetensors"  # a LoRA on the tiny UNet, the LCM-LoRA / Hyper-SD LoRA form


def make_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Build the tiny pipeline and save it (safetensors) as a diffusers folder at `path`; returns `path`.

    Beside it go a tiny "fast" UNet checkpoint (other random weights, the SDXL-Lightning file form) and,
    with peft installed, a tiny LoRA, so that fast mode can be tried offline with either FAST_MODEL form.
    """
    pipe = make_tiny_pipeline(seed=seed)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    make_tiny_fast_unet(path / FAST_UNET_FILE, seed=seed + 1)
    # Without peft the LoRA form is unavailable; the UNet form still works.
    with contextlib.suppress(ImportError):
        make_tiny_fast_lora(path / FAST_LORA_FILE, seed=seed + 2)
    return path


def make_tiny_fast_unet(path: Path, *, seed: int = 1) -> Path:
    """A UNet state dict with the tiny UNet's layout and other random weights, as one safetensors file."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    unet = make_tiny_unet()
    save_file({name: tensor.contiguous() for name, tensor in unet.state_dict().items()}, str(path))
    return path


def make_tiny_fast_lora(path: Path, *, seed: int = 2, rank: int = 4) -> Path:
    """A random LoRA on the tiny UNet's attention projections, saved the way diffusers saves LoRAs."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = make_tiny_unet()
    # init_lora_weights=False: both matrices random, so the LoRA changes the output (the default starts at 0).
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        init_lora_weights=False,
    )
    unet.add_adapter(config)
    layers = get_peft_model_state_dict(unet)
    diffusers.StableDiffusionXLPipeline.save_lora_weights(
        str(path.parent), unet_lora_layers=layers, weight_name=path.name, safe_serialization=True
    )
    return path
