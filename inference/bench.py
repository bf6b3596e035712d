"""`imagine-bot bench`: the serving path's speed, optimized against plain diffusers, measured in one run.

Both variants render through `DiffusersBackend.render` (prompt encoding, per-image generators, CFG, the
step callback, VAE decode, PIL conversion: what a member's job costs). For each batch size the first
render is the warm-up (with torch.compile it compiles that shape) and is timed on its own; then `repeats`
renders are timed. The variants:
- optimized: DTYPE auto (bf16 on CUDA), `Optimizations.default_for(device)` and, on CUDA, torch.compile;
- plain: float16 on a GPU (float32 on the CPU), no optimization at all: diffusers as documented.

Models: `tiny` (the random-weight tiny SDXL of inference/tiny.py, the default on the CPU, for CI),
`sdxl-random` (the real SDXL 1.0 architecture with random weights, built on the GPU: it costs what the real
model costs, no download; CUDA only, since a CPU would take hours), or a diffusers folder / hub id.
Model FLOP utilization uses the FLOPs counted for SDXL in PERFORMANCE.md (13.52 TFLOPs per image-step for
the CFG UNet and 10.47 TFLOPs per VAE decode at 1024², scaled by the pixel count); it is shown on CUDA for
SDXL-sized models only.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import diffusers as _diffusers
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from bot.domain.jobs import BatchKey, RenderMode
from bot.scheduler.backend import ImageTask, RenderBatch
from inference.device import choose_device
from inference.optimize import Optimizations
from inference.pipeline import DiffusersBackend
from inference.tiny import assemble_pipeline, make_tiny_pipeline, tiny_vocab

log = logging.getLogger(__name__)
diffusers: Any = _diffusers  # untyped under mypy; see inference.pipeline

UNET_TFLOPS_PER_IMAGE_STEP = 13.52  # SDXL UNet, CFG (2 latents), 1024², counted with FlopCounterMode
VAE_TFLOPS_PER_IMAGE = 10.47  # SDXL VAE decode 4×128×128 → 1024²
H100_DENSE_BF16_TFLOPS = 790.0
PROMPTS = ("a lighthouse on a cliff at dusk, oil painting", "a red fox in fresh snow, photograph")

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (2,567,463,684 parameters)
SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "upcast_attention": False,
}
# vae/config.json (the stock SDXL VAE: it overflows in float16, hence force_upcast)
SDXL_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
# text_encoder (CLIP ViT-L/14) and text_encoder_2 (OpenCLIP ViT-bigG/14) configs, less the vocabulary:
# the byte-level tiny tokenizer stands in for CLIP's BPE (514 tokens), which changes nothing of the cost.
SDXL_TEXT_ENCODERS: tuple[dict[str, Any], dict[str, Any]] = (
    {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
     "projection_dim": 768, "hidden_act": "quick_gelu"},
    {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
     "projection_dim": 1280, "hidden_act": "gelu"},
)  # fmt: skip


def make_sdxl_random_pipeline(device: str | torch.device = "cpu") -> Any:
    """The SDXL 1.0 base pipeline with random weights, float32, its modules created on `device`.

    Use `device="meta"` to build it without memory (for counting), a CUDA device to run it.
    """
    vocab_size = len(tiny_vocab())
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(**SDXL_UNET_CONFIG)
        vae = diffusers.AutoencoderKL(**SDXL_VAE_CONFIG)
        encoders = [
            CLIPTextConfig(
                vocab_size=vocab_size,
                max_position_embeddings=77,
                layer_norm_eps=1e-5,
                bos_token_id=vocab_size - 2,
                eos_token_id=vocab_size - 1,
                pad_token_id=vocab_size - 1,
                **config,
            )
            for config in SDXL_TEXT_ENCODERS
        ]
        text_encoder = CLIPTextModel(encoders[0])
        text_encoder_2 = CLIPTextModelWithProjection(encoders[1])
    return assemble_pipeline(unet, vae, text_encoder, text_encoder_2)


class BuiltBackend(DiffusersBackend):
    """A DiffusersBackend whose pipeline is built in memory instead of read from a folder or the hub."""

    def __init__(self, name: str, build: Callable[[str], Any], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._build = build

    def _load_txt2img(self) -> Any:
        return self._build(self.device).to(dtype=self.dtype)


@dataclass(frozen=True)
class BenchConfig:
    model: str = "tiny"  # tiny | sdxl-random | a diffusers folder or hub id
    device: str = "auto"
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    steps: int = 30
    size: int | None = None  # None: the model's native resolution (1024 for SDXL, 64 for tiny)
    repeats: int = 2
    guidance: float = 5.0  # > 1: classifier-free guidance, as served
    peak_tflops: float = H100_DENSE_BF16_TFLOPS


@dataclass(frozen=True)
class BenchRow:
    variant: str  # "optimized" or "plain"
    detail: str  # dtype and optimizations
    batch_size: int
    images_per_s: float
    s_per_image: float
    warm_up_s: float
    peak_memory_gib: float | None  # None off CUDA
    mfu: float | None  # model FLOP utilization, 0..1; None off CUDA or for non-SDXL models


@dataclass(frozen=True)
class BenchResult:
    device: str
    model: str
    size: int
    steps: int
    rows: list[BenchRow]

    def speedup(self, batch_size: int) -> float | None:
        """optimized images/s ÷ plain images/s at this batch size."""
        rates = {row.variant: row.images_per_s for row in self.rows if row.batch_size == batch_size}
        if "optimized" in rates and "plain" in rates and rates["plain"] > 0:
            return rates["optimized"] / rates["plain"]
        return None


def model_tflops_per_image(size: int, steps: int) -> float:
    """SDXL's counted work for one CFG image of size² pixels: the UNet per step plus one VAE decode."""
    area = (size / 1024) ** 2
    return (UNET_TFLOPS_PER_IMAGE_STEP * steps + VAE_TFLOPS_PER_IMAGE) * area


def _variants(device: str) -> list[tuple[str, str, Optimizations]]:
    cuda = device.split(":", 1)[0] == "cuda"
    return [
        # The bench measures the whole recipe, torch.compile included on CUDA (warmed up per shape below).
        ("optimized", "auto", replace(Optimizations.default_for(device), compile=cuda)),
        ("plain", "float16" if cuda else "auto", Optimizations.none()),
    ]


def _make_backend(config: BenchConfig, device: str, dtype: str, opts: Optimizations) -> DiffusersBackend:
    kwargs: dict[str, Any] = {"device": device, "dtype": dtype, "optimizations": opts}
    if config.model == "tiny":
        return BuiltBackend("tiny", lambda _device: make_tiny_pipeline(), **kwargs)
    if config.model == "sdxl-random":
        return BuiltBackend("sdxl-random", make_sdxl_random_pipeline, **kwargs)
    return DiffusersBackend(config.model, **kwargs)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_bench(config: BenchConfig, *, report: Callable[[str], None] = log.info) -> BenchResult:
    """Measure both variants, one after the other (the first freed before the second is loaded)."""
    device = choose_device(config.device)
    cuda = device.startswith("cuda")
    if config.model == "sdxl-random" and not cuda:
        raise ValueError(
            "sdxl-random builds the full SDXL (3.5 billion random parameters) and needs a CUDA GPU: on "
            f"{device} it would take hours. Use --model tiny there."
        )
    if not config.batch_sizes or min(config.batch_sizes) < 1:
        raise ValueError("Batch sizes must be positive.")
    if config.steps < 1 or config.repeats < 1:
        raise ValueError("Steps and repeats must be at least 1.")
    rows: list[BenchRow] = []
    size = config.size
    for variant, dtype, opts in _variants(device):
        backend = _make_backend(config, device, dtype, opts)
        started = time.perf_counter()
        backend.load()
        size = size or backend.native_resolution
        detail = f"{str(backend.dtype).removeprefix('torch.')}, {opts.describe()}"
        report(f"{variant} ({detail}) loaded in {time.perf_counter() - started:.1f} s")
        sdxl_sized = config.model != "tiny" and backend.native_resolution == 1024
        flops = model_tflops_per_image(size, config.steps) * 1e12 if cuda and sdxl_sized else None
        for batch_size in config.batch_sizes:
            rows.append(_measure(backend, config, variant, detail, batch_size, size, flops))
            report(f"{variant}, batch {batch_size}: {rows[-1].images_per_s:.3g} images/s")
        del backend
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    assert size is not None
    return BenchResult(device=device, model=config.model, size=size, steps=config.steps, rows=rows)


def _measure(
    backend: DiffusersBackend,
    config: BenchConfig,
    variant: str,
    detail: str,
    batch_size: int,
    size: int,
    flops_per_image: float | None,
) -> BenchRow:
    key = BatchKey(
        mode=RenderMode.TXT2IMG,
        width=size,
        height=size,
        steps=config.steps,
        guidance=config.guidance,
        strength=None,
    )
    tasks = [
        ImageTask(job_id=1, index=index, prompt=PROMPTS[index % 2], negative_prompt="", seed=1000 + index)
        for index in range(batch_size)
    ]
    batch = RenderBatch(key=key, tasks=tasks)
    cuda = backend.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(backend.device)
    started = time.perf_counter()
    backend.render(batch, _always)  # warm-up: compiles this shape under torch.compile
    _sync(backend.device)
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(config.repeats):
        backend.render(batch, _always)  # returns PIL images: the GPU work is finished when it returns
    _sync(backend.device)
    elapsed = time.perf_counter() - started
    images_per_s = batch_size * config.repeats / elapsed
    peak = torch.cuda.max_memory_allocated(backend.device) / 2**30 if cuda else None
    mfu = None
    if flops_per_image is not None:
        mfu = flops_per_image * images_per_s / (config.peak_tflops * 1e12)
    return BenchRow(
        variant=variant,
        detail=detail,
        batch_size=batch_size,
        images_per_s=images_per_s,
        s_per_image=1 / images_per_s,
        warm_up_s=warm_up,
        peak_memory_gib=peak,
        mfu=mfu,
    )


def _always(step: int, total: int) -> bool:
    return True


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """ "1,2,4,8" → (1, 2, 4, 8)."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"Batch sizes {text!r} are not a comma-separated list of integers.") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"Batch sizes {text!r} must be positive integers.")
    return sizes


def table_rows(result: BenchResult) -> Sequence[tuple[str, ...]]:
    """The rows as text, in the order of the table's columns (see `COLUMNS`)."""
    out: list[tuple[str, ...]] = []
    for row in result.rows:
        speedup = result.speedup(row.batch_size) if row.variant == "optimized" else None
        out.append(
            (
                row.variant,
                row.detail,
                str(row.batch_size),
                f"{row.images_per_s:.3g}",
                f"{row.s_per_image:.3g}",
                f"{row.warm_up_s:.1f}",
                "n/a" if row.peak_memory_gib is None else f"{row.peak_memory_gib:.1f} GiB",
                "n/a" if row.mfu is None else f"{row.mfu:.1%}",
                "" if speedup is None else f"{speedup:.2f}×",
            )
        )
    return out


COLUMNS = (
    "variant",
    "dtype, optimizations",
    "batch",
    "images/s",
    "s/image",
    "warm-up s",
    "peak GPU memory",
    "MFU",
    "vs plain",
)
