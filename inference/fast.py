"""The fast model: a few-step UNet that shares the base pipeline's text encoders and VAE.

Loads `FAST_MODEL` (a hub file, a local `.safetensors` file, or a diffusers UNet folder or repository)
as a whole UNet or as a LoRA fused into a copy of the base UNet, and switches the base's scheduler to the
one the checkpoint was distilled for (`FAST_SCHEDULER`). The accepted values: README, "Fast mode".
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import diffusers as _diffusers
import torch

log = logging.getLogger(__name__)

diffusers: Any = _diffusers  # untyped under mypy (it sees placeholder classes); see inference.pipeline

FAST_SCHEDULERS = ("euler", "lcm", "tcd", "ddim")
_HUB_REPO = r"[A-Za-z0-9][\w.-]*/[\w.-]+"
_HUB_FILE = re.compile(rf"(?P<repo>{_HUB_REPO}):(?P<file>[^:]+)")


def resolve_fast_model(spec: str) -> Path | str:
    """A local path for the spec (hub files are downloaded), or a hub repo id for a diffusers UNet repo."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    match = _HUB_FILE.fullmatch(spec)
    if match:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=match["repo"], filename=match["file"]))
    if re.fullmatch(_HUB_REPO, spec) and not spec.endswith(".safetensors"):
        return spec
    raise ValueError(
        f"FAST_MODEL {spec!r} is not an existing file or folder, nor a hub file like "
        "ByteDance/SDXL-Lightning:sdxl_lightning_4step_unet.safetensors."
    )


def load_fast_unet(spec: str, base_unet: Any, *, dtype: torch.dtype) -> Any:
    """The fast UNet for `spec`, in `dtype` on the CPU; `base_unet` gives the config (and a LoRA's base)."""
    source = resolve_fast_model(spec)
    if isinstance(source, str) or source.is_dir():
        unet = _unet_from_folder(source, dtype)
        _check_same_shape(spec, unet.config, base_unet.config)
        return unet
    if source.suffix != ".safetensors":
        raise ValueError(f"FAST_MODEL {spec!r}: only .safetensors files are loaded (no pickles).")
    from safetensors.torch import load_file

    state_dict = load_file(str(source))
    if any("lora" in key for key in state_dict):
        return _fused_lora_unet(spec, base_unet, state_dict, dtype)
    return _unet_from_state_dict(spec, base_unet.config, state_dict, dtype)


def make_fast_scheduler(kind: str, base_config: Any) -> Any:
    """The scheduler the few-step checkpoint expects, built from the base scheduler's config."""
    if kind == "euler":  # SDXL-Lightning's documented setting
        return diffusers.EulerDiscreteScheduler.from_config(base_config, timestep_spacing="trailing")
    if kind == "lcm":
        return diffusers.LCMScheduler.from_config(base_config)
    if kind == "tcd":
        return diffusers.TCDScheduler.from_config(base_config)
    if kind == "ddim":
        return diffusers.DDIMScheduler.from_config(base_config, timestep_spacing="trailing")
    raise ValueError(f"Unknown FAST_SCHEDULER {kind!r}; choose one of {', '.join(FAST_SCHEDULERS)}.")


def _unet_from_folder(source: Path | str, dtype: torch.dtype) -> Any:
    subfolder = None
    if isinstance(source, Path):
        if (source / "unet" / "config.json").exists():
            subfolder = "unet"
        elif not (source / "config.json").exists():
            raise ValueError(f"FAST_MODEL folder {source} has no UNet (config.json or unet/config.json).")
    try:
        return diffusers.UNet2DConditionModel.from_pretrained(
            str(source), subfolder=subfolder, torch_dtype=dtype, use_safetensors=True
        )
    except (OSError, ValueError):
        if subfolder is not None or isinstance(source, Path):
            raise
        # A hub repo keeps its UNet either at the root or in unet/, as a pipeline does.
        return diffusers.UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", torch_dtype=dtype, use_safetensors=True
        )


def _unet_from_state_dict(
    spec: str, config: Any, state_dict: dict[str, torch.Tensor], dtype: torch.dtype
) -> Any:
    from accelerate import init_empty_weights

    # Built without allocating (meta tensors), then the file's tensors are put in place: an SDXL UNet's
    # random initialisation alone would take longer than loading it.
    with init_empty_weights():
        unet = diffusers.UNet2DConditionModel.from_config(config)
    expected = set(unet.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ValueError(
            f"FAST_MODEL {spec!r} is not a UNet for this base model: {len(missing)} weights missing and "
            f"{len(unexpected)} unknown (e.g. {example!r}). Use a UNet checkpoint such as "
            "sdxl_lightning_4step_unet.safetensors, or a LoRA."
        )
    try:
        unet.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:  # shapes that differ from the base's
        raise ValueError(f"FAST_MODEL {spec!r} does not fit the base model: {exc}") from None
    return unet.to(dtype=dtype)


def _fused_lora_unet(
    spec: str, base_unet: Any, state_dict: dict[str, torch.Tensor], dtype: torch.dtype
) -> Any:
    try:
        import peft  # noqa: F401  (diffusers loads LoRAs through it)
    except ImportError as exc:
        raise RuntimeError(f"FAST_MODEL {spec!r} is a LoRA, which needs peft: pip install peft") from exc
    unet = copy.deepcopy(base_unet).to(dtype=dtype)
    pipeline = diffusers.StableDiffusionXLPipeline
    lora, alphas = pipeline.lora_state_dict(state_dict, unet_config=base_unet.config)
    others = [key for key in lora if not key.startswith("unet.")]
    if others and len(others) < len(lora):
        # Text-encoder layers would change the encoders the full model shares: the UNet's part is enough.
        log.warning("FAST_MODEL %s: ignoring %d text-encoder LoRA weights", spec, len(others))
        lora = {key: value for key, value in lora.items() if key.startswith("unet.")}
    pipeline.load_lora_into_unet(lora, alphas, unet, adapter_name="fast")
    unet.fuse_lora()
    unet.unload_lora()
    return unet


def _check_same_shape(spec: str, config: Any, base: Any) -> None:
    def value(config: Any, name: str) -> Any:
        found = config.get(name)
        return tuple(found) if isinstance(found, list) else found

    for name in ("in_channels", "cross_attention_dim", "block_out_channels", "addition_embed_type"):
        if value(config, name) != value(base, name):
            raise ValueError(
                f"FAST_MODEL {spec!r} does not fit the base model: its {name} is {value(config, name)!r}, "
                f"the base's {value(base, name)!r}."
            )
