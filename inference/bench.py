"""`imagine-bot bench`: the serving path's speed, optimized against plain diffusers, measured in one run.

Both variants render through `DiffusersBackend.render`, at the sizes and batch sizes asked for; with
`--profile-out FILE` the optimized images/s are written as a batch profile (bot/domain/batch_profile.py)
that the bot reads at start. What is measured, the models and the results: docs/benchmarks.md.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import diffusers as _diffusers
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from bot.domain.batch_profile import BatchProfile, BucketThroughput, Size, parse_sizes
from bot.domain.jobs import BatchKey, RenderMode
from bot.domain.render import ImageTask, RenderBatch
from bot.domain.warm_up import served_sizes
from inference.device import choose_device
from inference.machine import cpu_model
from inference.optimize import COMPILE_CHOICES, Optimizations
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
    size: int | None = None  # a square side; None: `buckets`, else the model's native square
    repeats: int = 2
    guidance: float = 5.0  # > 1: classifier-free guidance, as served
    peak_tflops: float = H100_DENSE_BF16_TFLOPS
    buckets: str | None = None  # "WxH,WxH" or "all" (see the module docstring); None: the native square
    plain: bool = True  # also measure plain diffusers (not needed for a profile)
    compile: str = "auto"  # the optimized variant's torch.compile: auto = on CUDA only


@dataclass(frozen=True)
class BenchRow:
    variant: str  # "optimized" or "plain"
    dtype: str
    optimizations: str
    width: int
    height: int
    batch_size: int
    images_per_s: float
    s_per_image: float
    warm_up_s: float
    peak_memory_gib: float | None  # None off CUDA
    mfu: float | None  # model FLOP utilization, 0..1; None off CUDA or for non-SDXL models

    @property
    def detail(self) -> str:
        return f"{self.dtype}, {self.optimizations}"

    @property
    def size(self) -> Size:
        return self.width, self.height


@dataclass(frozen=True)
class BenchResult:
    device: str
    device_name: str
    model: str
    sizes: tuple[Size, ...]
    steps: int
    guidance: float
    rows: list[BenchRow]

    def speedup(self, batch_size: int, size: Size | None = None) -> float | None:
        """optimized images/s ÷ plain images/s at this batch size (and size; default: the first)."""
        size = size or self.sizes[0]
        rates = {
            row.variant: row.images_per_s
            for row in self.rows
            if row.batch_size == batch_size and row.size == size
        }
        if "optimized" in rates and "plain" in rates and rates["plain"] > 0:
            return rates["optimized"] / rates["plain"]
        return None

    def profile(self) -> BatchProfile:
        """The optimized variant's images/s per size and batch size, as the bot reads it (BATCH_PROFILE)."""
        rows = [row for row in self.rows if row.variant == "optimized"]
        if not rows:
            raise ValueError("No optimized rows were measured, so there is no profile to write.")
        return BatchProfile(
            device=self.device,
            device_name=self.device_name,
            model=self.model,
            dtype=rows[0].dtype,
            optimizations=rows[0].optimizations,
            steps=self.steps,
            guidance=self.guidance,
            buckets=tuple(
                BucketThroughput(
                    width,
                    height,
                    {row.batch_size: row.images_per_s for row in rows if row.size == (width, height)},
                )
                for width, height in self.sizes
            ),
        )


def write_profile(result: BenchResult, path: Path) -> None:
    """Write the result's batch profile to `path` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.profile().to_json(), encoding="utf-8")


def model_tflops_per_image(width: int, height: int, steps: int) -> float:
    """SDXL's counted work for one CFG image of width × height: the UNet per step plus one VAE decode."""
    area = width * height / 1024**2
    return (UNET_TFLOPS_PER_IMAGE_STEP * steps + VAE_TFLOPS_PER_IMAGE) * area


def bench_sizes(config: BenchConfig, native_resolution: int) -> tuple[Size, ...]:
    """The (width, height) sizes to measure: `size`, `buckets` ("all": every served size) or the native."""
    if config.size is not None:
        return ((config.size, config.size),)
    if config.buckets is None:
        return ((native_resolution, native_resolution),)
    if config.buckets.strip().lower() == "all":
        return tuple(served_sizes(native_resolution))
    return parse_sizes(config.buckets)


def device_name(device: str) -> str:
    """The accelerator's or CPU's model name, for the profile and the table's title."""
    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(device))
    if device == "cpu":
        return cpu_model()
    return device


def _variants(config: BenchConfig, device: str) -> list[tuple[str, str, Optimizations]]:
    cuda = device.split(":", 1)[0] == "cuda"
    # The bench measures the whole recipe, torch.compile included on CUDA (warmed up per shape below).
    compiled = cuda if config.compile == "auto" else config.compile == "on"
    variants = [("optimized", "auto", replace(Optimizations.default_for(device), compile=compiled))]
    if config.plain:
        variants.append(("plain", "float16" if cuda else "auto", Optimizations.none()))
    return variants


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
    if config.compile not in COMPILE_CHOICES:
        raise ValueError(f"Unknown compile {config.compile!r}; choose one of {', '.join(COMPILE_CHOICES)}.")
    if config.size is not None and config.buckets is not None:
        raise ValueError("Give --size or --buckets, not both.")
    if config.buckets is not None and config.buckets.strip().lower() != "all":
        parse_sizes(config.buckets)  # a typo fails now, not after loading the model
    rows: list[BenchRow] = []
    sizes: tuple[Size, ...] = ()
    for variant, dtype, opts in _variants(config, device):
        backend = _make_backend(config, device, dtype, opts)
        started = time.perf_counter()
        backend.load()
        sizes = sizes or bench_sizes(config, backend.native_resolution)
        detail = f"{str(backend.dtype).removeprefix('torch.')}, {opts.describe()}"
        report(f"{variant} ({detail}) loaded in {time.perf_counter() - started:.1f} s")
        sdxl_sized = config.model != "tiny" and backend.native_resolution == 1024
        for width, height in sizes:
            tflops = model_tflops_per_image(width, height, config.steps)
            flops = tflops * 1e12 if cuda and sdxl_sized else None
            for batch_size in config.batch_sizes:
                row = _measure(backend, config, variant, opts, batch_size, (width, height), flops)
                rows.append(row)
                report(f"{variant}, {width}×{height}, batch {batch_size}: {row.images_per_s:.3g} images/s")
        del backend
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return BenchResult(
        device=device,
        device_name=device_name(device),
        model=config.model,
        sizes=sizes,
        steps=config.steps,
        guidance=config.guidance,
        rows=rows,
    )


def _measure(
    backend: DiffusersBackend,
    config: BenchConfig,
    variant: str,
    opts: Optimizations,
    batch_size: int,
    size: Size,
    flops_per_image: float | None,
) -> BenchRow:
    key = BatchKey(
        mode=RenderMode.TXT2IMG,
        width=size[0],
        height=size[1],
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
        dtype=str(backend.dtype).removeprefix("torch."),
        optimizations=opts.describe(),
        width=size[0],
        height=size[1],
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
        speedup = result.speedup(row.batch_size, row.size) if row.variant == "optimized" else None
        out.append(
            (
                row.variant,
                row.detail,
                format_size(row.size),
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


def format_size(size: Size) -> str:
    """64² for a square, 1344×768 otherwise."""
    width, height = size
    return f"{width}²" if width == height else f"{width}×{height}"


COLUMNS = (
    "variant",
    "dtype, optimizations",
    "size",
    "batch",
    "images/s",
    "s/image",
    "warm-up s",
    "peak GPU memory",
    "MFU",
    "vs plain",
)
