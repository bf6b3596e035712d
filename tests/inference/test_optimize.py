"""The speed-ups of inference/optimize.py: what each device gets, and that they do not change the pictures.

On the CPU the tiny model runs fused QKV + channels_last for real; torch.compile is only checked to be set
up (compiling the tiny UNet and VAE takes about a minute on 2 cores, too slow for a unit test). The GPU
check (bf16 + compile vs plain fp16, same seeds) is `render_latents` on the real model, owed on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bot.domain.jobs import BatchKey, RenderMode
from bot.domain.render import ImageTask, RenderBatch
from bot.runtime.app import make_backend
from bot.runtime.settings import load_settings
from inference.optimize import RECOMPILE_LIMIT, Optimizations, apply
from inference.pipeline import DiffusersBackend
from inference.tiny import make_tiny_pipeline
from tests.inference.images import always, pixels

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)

TXT2IMG = BatchKey(mode=RenderMode.TXT2IMG, width=64, height=64, steps=3, guidance=5.0, strength=None)
WIDE = BatchKey(mode=RenderMode.TXT2IMG, width=96, height=64, steps=2, guidance=5.0, strength=None)
VARIATION = BatchKey(mode=RenderMode.IMG2IMG, width=64, height=64, steps=4, guidance=5.0, strength=0.6)
PROMPTS = ["a red fox in snow", "a lighthouse at dusk", "an astronaut riding a horse"]
NEGATIVES = ["", "blurry", ""]
CPU_DEFAULT = Optimizations(fuse_qkv=True, channels_last=True, compile=False)


def tasks(count: int = 3, *, source: Image.Image | None = None) -> list[ImageTask]:
    return [
        ImageTask(
            job_id=1,
            index=index,
            prompt=PROMPTS[index % 3],
            negative_prompt=NEGATIVES[index % 3],
            seed=4242 + 31 * index,
            source=source,
        )
        for index in range(count)
    ]


@pytest.fixture(scope="module")
def plain(tiny_model_path: Path) -> DiffusersBackend:
    backend = DiffusersBackend(
        str(tiny_model_path), device="cpu", dtype="float32", optimizations=Optimizations.none()
    )
    backend.load()
    return backend


@pytest.fixture(scope="module")
def optimized(tiny_model_path: Path) -> DiffusersBackend:
    backend = DiffusersBackend(str(tiny_model_path), device="cpu", dtype="float32")
    backend.load()
    return backend


def test_defaults_per_device() -> None:
    # torch.compile is opt-in everywhere until start-up warms the served shapes (see default_for).
    assert Optimizations.default_for("cuda") == CPU_DEFAULT
    assert Optimizations.default_for("cuda:1") == Optimizations.default_for("cuda")
    assert Optimizations.default_for("cpu") == CPU_DEFAULT
    assert not Optimizations.default_for("mps").compile
    assert Optimizations.none() == Optimizations(fuse_qkv=False, channels_last=False, compile=False)


def test_settings_choose_the_optimizations() -> None:
    assert Optimizations.from_settings("auto", "auto", "cpu") == CPU_DEFAULT
    assert Optimizations.from_settings("auto", "auto", "cuda") == Optimizations.default_for("cuda")
    assert Optimizations.from_settings("auto", "on", "cuda") == Optimizations(True, True, True)
    assert Optimizations.from_settings("auto", "off", "cuda") == CPU_DEFAULT
    assert Optimizations.from_settings("off", "auto", "cuda") == Optimizations.none()
    assert Optimizations.from_settings("off", "on", "cpu") == Optimizations(False, False, True)
    with pytest.raises(ValueError, match="COMPILE"):
        Optimizations.from_settings("auto", "always", "cpu")
    # and the settings reach the backend through the composition root (no model is loaded here)
    backend = make_backend(load_settings(_env_file=None, device="cpu", optimize="off", compile="on"))
    assert isinstance(backend, DiffusersBackend)
    assert backend.optimizations == Optimizations(fuse_qkv=False, channels_last=False, compile=True)
    assert not backend.loaded


def test_optimizations_are_really_applied(optimized: DiffusersBackend, plain: DiffusersBackend) -> None:
    """Fused projections and the NHWC layout are in the loaded modules, shared with img2img."""
    pipe: Any = optimized._txt2img
    processors = {type(processor).__name__ for processor in pipe.unet.attn_processors.values()}
    assert processors == {"FusedAttnProcessor2_0"}
    assert {type(p).__name__ for p in pipe.vae.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert optimized._img2img.unet is pipe.unet  # from_pipe shares the optimized modules
    plain_pipe: Any = plain._txt2img
    assert {type(p).__name__ for p in plain_pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert not plain_pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("key", [TXT2IMG, WIDE], ids=["square", "wide"])
def test_optimized_matches_plain(optimized: DiffusersBackend, plain: DiffusersBackend, key: BatchKey) -> None:
    """Same seeds, same pictures: latents within float32 rounding, images within one or two 8-bit levels."""
    batch = RenderBatch(key=key, tasks=tasks())
    fast, reference = optimized.render_latents(batch), plain.render_latents(batch)
    assert fast.shape == reference.shape == (3, 4, key.height // 8, key.width // 8)
    assert not torch.isnan(fast).any()
    relative = (fast - reference).norm() / reference.norm()
    assert relative < 1e-4, relative
    fast_images, reference_images = optimized.render(batch, always), plain.render(batch, always)
    for a, b in zip(fast_images, reference_images, strict=True):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2
    assert np.abs(pixels(fast_images[0]) - pixels(fast_images[1])).mean() > 5  # not one image repeated


def test_optimized_variation_matches_plain(optimized: DiffusersBackend, plain: DiffusersBackend) -> None:
    source = Image.fromarray(np.random.default_rng(3).integers(0, 256, (80, 80, 3), dtype=np.uint8))
    batch = RenderBatch(key=VARIATION, tasks=tasks(2, source=source))
    fast, reference = optimized.render_latents(batch), plain.render_latents(batch)
    assert not torch.isnan(fast).any()
    assert (fast - reference).norm() / reference.norm() < 1e-4
    for a, b in zip(optimized.render(batch, always), plain.render(batch, always), strict=True):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2


def test_compile_is_set_up_lazily() -> None:
    """compile=True wraps the UNet and vae.decode (compiling happens on the first call, not here)."""
    pipe = make_tiny_pipeline()
    unet_class = type(pipe.unet)
    apply(pipe, Optimizations(fuse_qkv=False, channels_last=False, compile=True))
    assert type(pipe.unet) is unet_class  # Module.compile keeps the class, so from_pipe accepts it
    assert pipe.unet._compiled_call_impl is not None
    assert hasattr(pipe.vae.decode, "_torchdynamo_orig_callable")
    assert torch._dynamo.config.recompile_limit >= RECOMPILE_LIMIT


def test_warm_up_renders_each_shape(optimized: DiffusersBackend) -> None:
    seen: list[tuple[int, int]] = []
    real_render = optimized.render

    def spy(batch: RenderBatch, on_step: Any) -> list[Image.Image]:
        images = real_render(batch, on_step)
        seen.append((len(batch.tasks), images[0].width * 1000 + images[0].height))
        return images

    optimized.render = spy  # type: ignore[method-assign]
    try:
        elapsed = optimized.warm_up([(1, 64, 64), (2, 96, 64)])
    finally:
        del optimized.render
    assert elapsed > 0
    assert seen == [(1, 64064), (2, 96064)]
