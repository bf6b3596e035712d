"""Speed-ups applied to a loaded SDXL pipeline: fused QKV projections, channels_last and torch.compile.

Applied once, before img2img is made from the txt2img pipeline, so that both share the optimized modules.
The recipe and why each shape must be warmed up under torch.compile: docs/design-notes.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

OPTIMIZE_CHOICES = ("auto", "off")
COMPILE_CHOICES = ("auto", "on", "off")
# Dynamo gives up compiling (and silently runs eagerly) after this many shapes of one function; a bot
# serving batch sizes 1–8 at several resolutions needs more than the default 8.
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class Optimizations:
    fuse_qkv: bool
    channels_last: bool
    compile: bool

    @classmethod
    def none(cls) -> Optimizations:
        """Plain diffusers: the baseline the benchmark compares against."""
        return cls(fuse_qkv=False, channels_last=False, compile=False)

    @classmethod
    def default_for(cls, device: str) -> Optimizations:
        """Fused QKV and channels_last everywhere. torch.compile stays opt-in (COMPILE=on) until the bot
        warms every served shape up at start and the CUDA path has been measured: without that warm-up
        the first job of each new shape would wait minutes for its compile."""
        return cls(fuse_qkv=True, channels_last=True, compile=False)

    @classmethod
    def from_settings(cls, optimize: str, compile: str, device: str) -> Optimizations:
        """OPTIMIZE (auto|off) and COMPILE (auto|on|off): auto follows `default_for(device)`."""
        if optimize not in OPTIMIZE_CHOICES:
            raise ValueError(f"Unknown OPTIMIZE {optimize!r}; choose one of {', '.join(OPTIMIZE_CHOICES)}.")
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"Unknown COMPILE {compile!r}; choose one of {', '.join(COMPILE_CHOICES)}.")
        base = cls.default_for(device) if optimize == "auto" else cls.none()
        compiled = base.compile if compile == "auto" else compile == "on"
        return cls(fuse_qkv=base.fuse_qkv, channels_last=base.channels_last, compile=compiled)

    def describe(self) -> str:
        names = [name for name in ("fuse_qkv", "channels_last", "compile") if getattr(self, name)]
        return ", ".join(names) or "none"


def apply(pipe: Any, opts: Optimizations) -> None:
    """Apply `opts` in place to a loaded (and already moved to its device and dtype) SDXL pipeline."""
    if opts.fuse_qkv:
        # The pipeline-level call fuses the UNet and the VAE (diffusers 0.42: DiffusionPipeline method).
        pipe.fuse_qkv_projections(unet=True, vae=True)
    if opts.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if opts.compile:
        _compile(pipe)
    log.info("optimizations: %s", opts.describe())


def apply_to_unet(unet: Any, opts: Optimizations) -> None:
    """The UNet's part of `apply`, for a second UNet (the fast model's) that shares an optimized VAE."""
    if opts.fuse_qkv:
        from diffusers.models import attention_processor

        processors: Any = attention_processor  # untyped module
        unet.fuse_qkv_projections()
        unet.set_attn_processor(processors.FusedAttnProcessor2_0())
    if opts.channels_last:
        unet.to(memory_format=torch.channels_last)
    if opts.compile:
        _configure_compiler()
        unet.compile(mode="max-autotune", fullgraph=True, dynamic=False)


def _configure_compiler() -> None:
    inductor: Any = torch._inductor.config  # untyped config module
    inductor.conv_1x1_as_mm = True
    inductor.coordinate_descent_tuning = True
    inductor.epilogue_fusion = False
    inductor.coordinate_descent_check_all_directions = True
    dynamo: Any = torch._dynamo.config
    dynamo.recompile_limit = max(int(dynamo.recompile_limit), RECOMPILE_LIMIT)


def _compile(pipe: Any) -> None:
    _configure_compiler()
    # dynamic=False: one specialised graph per served shape, instead of slower shape-generic kernels after
    # the second shape. Module.compile keeps the UNet's class, so from_pipe and `.config` work unchanged.
    pipe.unet.compile(mode="max-autotune", fullgraph=True, dynamic=False)
    pipe.vae.decode = torch.compile(pipe.vae.decode, mode="max-autotune", fullgraph=True, dynamic=False)
