"""Fast mode on the tiny pipeline: a second UNet (file or LoRA) beside the shared encoders and VAE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.domain.jobs import BatchKey, RenderMode
from bot.domain.render import ImageTask, RenderBatch
from inference import fast as fast_module
from inference.pipeline import DiffusersBackend
from inference.tiny import FAST_LORA_FILE, FAST_UNET_FILE
from tests.inference.images import pixels

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)

FAST_STEPS = 4
FAST = BatchKey(RenderMode.TXT2IMG, 64, 64, FAST_STEPS, 0.0, None, model="fast")
FULL = BatchKey(RenderMode.TXT2IMG, 64, 64, FAST_STEPS, 0.0, None)  # the same but for the model
PROMPTS = ["a red fox in snow", "a lighthouse at dusk", "an astronaut riding a horse", "a bowl of ramen"]


def tasks(count: int = 4, *, source: Image.Image | None = None) -> list[ImageTask]:
    return [
        ImageTask(1 + index // 2, index, PROMPTS[index], negative_prompt="", seed=7 + index, source=source)
        for index in range(count)
    ]


def render(backend: DiffusersBackend, key: BatchKey, batch: list[ImageTask]) -> list[Image.Image]:
    return backend.render(RenderBatch(key=key, tasks=batch), lambda step, total: True)


@pytest.fixture(scope="module")
def fast_backend(tiny_model_path: Path) -> DiffusersBackend:
    loaded = DiffusersBackend(
        str(tiny_model_path), device="cpu", dtype="float32", fast_model=str(tiny_model_path / FAST_UNET_FILE)
    )
    loaded.load()
    return loaded


def test_fast_job_renders_with_the_fast_unet_and_its_steps(fast_backend: DiffusersBackend) -> None:
    """Same prompt, seed, size, steps and guidance: the fast model gives other pixels, at the right size,
    after exactly the fast step count (progress reaches 4 of 4)."""
    calls: list[tuple[int, int]] = []

    def on_step(step: int, total: int) -> bool:
        calls.append((step, total))
        return True

    [fast] = fast_backend.render(RenderBatch(key=FAST, tasks=tasks(1)), on_step)
    [full] = render(fast_backend, FULL, tasks(1))
    assert calls == [(step, FAST_STEPS) for step in range(1, FAST_STEPS + 1)]
    assert fast.size == (64, 64)
    assert fast.mode == "RGB"
    assert np.abs(pixels(fast) - pixels(full)).mean() > 1


def test_fast_pipeline_shares_everything_but_the_unet(fast_backend: DiffusersBackend) -> None:
    """Only the UNet (and the scheduler, Euler with trailing timesteps) is the fast model's own."""
    fast_txt2img, fast_img2img = fast_backend._pipelines("fast")
    full_txt2img, _ = fast_backend._pipelines("default")
    for name in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        assert getattr(fast_txt2img, name) is getattr(full_txt2img, name)
    assert fast_txt2img.unet is not full_txt2img.unet
    assert fast_img2img.unet is fast_txt2img.unet
    assert type(fast_txt2img.scheduler).__name__ == "EulerDiscreteScheduler"
    assert fast_txt2img.scheduler.config.timestep_spacing == "trailing"


def test_fast_batch_matches_each_image_alone(fast_backend: DiffusersBackend) -> None:
    """Batching is where fast mode pays: a batch of 4 fast images equals each rendered alone (±1 level)."""
    batch = tasks(4)
    together = render(fast_backend, FAST, batch)
    alone = [render(fast_backend, FAST, [task])[0] for task in batch]
    for batched, single in zip(together, alone, strict=True):
        assert np.abs(pixels(batched) - pixels(single)).max() <= 1
    assert np.abs(pixels(together[0]) - pixels(together[1])).mean() > 5


def test_fast_variation_and_upscale(fast_backend: DiffusersBackend) -> None:
    """img2img and the 2× upscale run on the fast model too, at the asked sizes."""
    source = render(fast_backend, FAST, tasks(1))[0]
    vary = BatchKey(RenderMode.IMG2IMG, 64, 64, FAST_STEPS, 0.0, 0.6, model="fast")
    assert [image.size for image in render(fast_backend, vary, tasks(2, source=source))] == [(64, 64)] * 2
    upscale = BatchKey(RenderMode.UPSCALE, 128, 128, FAST_STEPS, 0.0, 0.3, model="fast")
    assert render(fast_backend, upscale, tasks(1, source=source))[0].size == (128, 128)


def test_a_fast_lora_is_fused_into_a_copy_of_the_base_unet(
    tiny_model_path: Path, backend: DiffusersBackend
) -> None:
    """FAST_MODEL as a LoRA file: fast images differ, and the full model's images stay what they were."""
    with_lora = DiffusersBackend(
        str(tiny_model_path), device="cpu", dtype="float32", fast_model=str(tiny_model_path / FAST_LORA_FILE)
    )
    with_lora.load()
    [full] = render(with_lora, FULL, tasks(1))
    [fast] = render(with_lora, FAST, tasks(1))
    [plain] = render(backend, FULL, tasks(1))
    assert np.array_equal(pixels(full), pixels(plain))
    assert np.abs(pixels(fast) - pixels(full)).mean() > 1


def test_hub_file_goes_through_hf_hub_download(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`owner/repo:file` downloads that one file from the hub (stubbed here: the hub is not reachable)."""
    asked: list[tuple[str, str]] = []

    def download(*, repo_id: str, filename: str) -> str:
        asked.append((repo_id, filename))
        return str(tiny_model_path / FAST_UNET_FILE)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    spec = "ByteDance/SDXL-Lightning:sdxl_lightning_4step_unet.safetensors"
    assert fast_module.resolve_fast_model(spec) == tiny_model_path / FAST_UNET_FILE
    assert asked == [("ByteDance/SDXL-Lightning", "sdxl_lightning_4step_unet.safetensors")]
    assert fast_module.resolve_fast_model("latent-consistency/lcm-sdxl") == "latent-consistency/lcm-sdxl"


def test_a_unet_folder_loads_too(tiny_model_path: Path, backend: DiffusersBackend) -> None:
    """A diffusers pipeline folder (its unet/) is a valid FAST_MODEL: here the base's own UNet."""
    base: Any = backend._pipelines("default")[0]
    unet = fast_module.load_fast_unet(str(tiny_model_path), base.unet, dtype=base.unet.dtype)
    assert type(unet).__name__ == "UNet2DConditionModel"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no/such:fast.safetensors", None),
        ("./nowhere/fast.safetensors", "not an existing file or folder"),
        ("vae/diffusion_pytorch_model.safetensors", "is not a UNet for this base model"),
        ("model_index.json", "only .safetensors"),
    ],
)
def test_bad_fast_models_fail_at_load_with_a_clear_message(
    tiny_model_path: Path,
    backend: DiffusersBackend,
    spec: str,
    message: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing file, a file that is not a UNet, or a pickle: a ValueError naming the problem."""
    import huggingface_hub

    def offline(*, repo_id: str, filename: str) -> str:
        raise OSError(f"cannot reach the hub for {repo_id}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    base: Any = backend._pipelines("default")[0]
    local = tiny_model_path / spec
    target = str(local) if local.exists() else spec
    with pytest.raises((ValueError, OSError), match=message or "cannot reach the hub"):
        fast_module.load_fast_unet(target, base.unet, dtype=base.unet.dtype)


def test_a_renderer_without_a_fast_model_refuses_fast_batches(backend: DiffusersBackend) -> None:
    """A fast batch on a worker without FAST_MODEL fails at once, saying what to set."""
    with pytest.raises(ValueError, match="no fast model: set FAST_MODEL"):
        render(backend, FAST, tasks(1))


@pytest.mark.parametrize(
    ("kind", "scheduler"),
    [("lcm", "LCMScheduler"), ("tcd", "TCDScheduler"), ("ddim", "DDIMScheduler")],
)
def test_each_fast_scheduler_runs_the_asked_steps(tiny_model_path: Path, kind: str, scheduler: str) -> None:
    """FAST_SCHEDULER picks the scheduler the checkpoint was distilled for; each runs exactly the steps."""
    loaded = DiffusersBackend(
        str(tiny_model_path),
        device="cpu",
        dtype="float32",
        fast_model=str(tiny_model_path / FAST_UNET_FILE),
        fast_scheduler=kind,
    )
    loaded.load()
    assert type(loaded._pipelines("fast")[0].scheduler).__name__ == scheduler
    totals: list[int] = []
    [image] = loaded.render(
        RenderBatch(key=FAST, tasks=tasks(1)), lambda step, total: totals.append(total) or True
    )
    assert totals == [FAST_STEPS] * FAST_STEPS
    assert image.size == (64, 64)
