"""The diffusers backend on the tiny random-weight SDXL pipeline (CPU, float32, 64 px native)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bot.domain.errors import BackendOutOfMemory, GenerationInterrupted
from bot.domain.jobs import BatchKey, RenderMode
from bot.domain.render import ImageTask, RenderBatch
from inference.pipeline import DiffusersBackend, img2img_schedule_steps
from inference.tiny import make_tiny_pipeline, make_tokenizer
from tests.inference.images import always, pixels

# diffusers' Euler scheduler calls np.array on a tensor in a way NumPy 2 deprecates; not our code.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)

TXT2IMG = BatchKey(mode=RenderMode.TXT2IMG, width=64, height=64, steps=3, guidance=5.0, strength=None)
PROMPTS = ["a red fox in snow", "a lighthouse at dusk", "an astronaut riding a horse", "a bowl of ramen"]
NEGATIVES = ["", "blurry", "", "low quality, watermark"]  # mixed on purpose: empty ones are zeroed per row


def tasks(count: int = 4, *, seed: int = 1000, source: Image.Image | None = None) -> list[ImageTask]:
    return [
        ImageTask(
            job_id=index // 2 + 1,
            index=index,
            prompt=PROMPTS[index % 4],
            negative_prompt=NEGATIVES[index % 4],
            seed=seed + 17 * index,
            source=source,
        )
        for index in range(count)
    ]


def render(backend: DiffusersBackend, key: BatchKey, batch_tasks: list[ImageTask]) -> list[Image.Image]:
    return backend.render(RenderBatch(key=key, tasks=batch_tasks), always)


def test_batch_matches_images_rendered_alone(backend: DiffusersBackend) -> None:
    """Each image of a 4-image batch is what its task gives alone (within one 8-bit level)."""
    batch_tasks = tasks()
    together = render(backend, TXT2IMG, batch_tasks)
    alone = [render(backend, TXT2IMG, [task])[0] for task in batch_tasks]
    assert [image.size for image in together] == [(64, 64)] * 4
    assert all(image.mode == "RGB" for image in together)
    for batched, single in zip(together, alone, strict=True):
        assert np.abs(pixels(batched) - pixels(single)).max() <= 1
    # and the four are really different pictures, not one repeated
    assert np.abs(pixels(together[0]) - pixels(together[1])).mean() > 5


def test_same_seed_is_identical_and_new_seed_differs(backend: DiffusersBackend) -> None:
    """Rendering a task twice gives the same pixels; another seed gives another image."""
    task = tasks(1)[0]
    first = render(backend, TXT2IMG, [task])[0]
    again = render(backend, TXT2IMG, [task])[0]
    reseeded = render(backend, TXT2IMG, [ImageTask(1, 0, task.prompt, task.negative_prompt, task.seed + 1)])[
        0
    ]
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(reseeded)).mean() > 5


def test_variation_keeps_batch_size_and_is_per_seed(backend: DiffusersBackend) -> None:
    """img2img resizes the source to the batch size and gives each seed its own image."""
    source = render(backend, TXT2IMG, tasks(1))[0].resize((80, 48))  # a different size on purpose
    key = BatchKey(mode=RenderMode.IMG2IMG, width=64, height=64, steps=4, guidance=5.0, strength=0.6)
    images = render(backend, key, tasks(4, source=source))
    assert [image.size for image in images] == [(64, 64)] * 4
    assert np.abs(pixels(images[0]) - pixels(images[1])).mean() > 1
    alone = render(backend, key, tasks(4, source=source)[2:3])[0]
    assert np.abs(pixels(images[2]) - pixels(alone)).max() <= 1


def test_upscale_doubles_the_source(backend: DiffusersBackend) -> None:
    """An upscale of a 64 px image comes back at the doubled size the key asks for."""
    source = render(backend, TXT2IMG, tasks(1))[0]
    key = BatchKey(mode=RenderMode.UPSCALE, width=128, height=128, steps=4, guidance=5.0, strength=0.3)
    (upscaled,) = render(backend, key, tasks(1, source=source))
    assert upscaled.size == (128, 128)
    assert upscaled.mode == "RGB"


@pytest.mark.parametrize(
    ("key", "expected_total"),
    [
        (TXT2IMG, 3),
        # img2img runs int(steps × strength) steps of the schedule: int(6 × 0.5) = 3
        (BatchKey(mode=RenderMode.IMG2IMG, width=64, height=64, steps=6, guidance=5.0, strength=0.5), 3),
        # strength unset: the domain's default upscale strength 0.3 → int(10 × 0.3) = 3
        (BatchKey(mode=RenderMode.UPSCALE, width=128, height=128, steps=10, guidance=5.0, strength=None), 3),
        # one step at low strength still runs one step instead of failing
        (BatchKey(mode=RenderMode.IMG2IMG, width=64, height=64, steps=1, guidance=5.0, strength=0.3), 1),
    ],
)
def test_progress_counts_the_steps_really_run(
    backend: DiffusersBackend, key: BatchKey, expected_total: int
) -> None:
    """on_step sees 1..total in order, total being the denoising steps actually run, so it ends at 100%."""
    calls: list[tuple[int, int]] = []

    def on_step(step: int, total: int) -> bool:
        calls.append((step, total))
        return True

    source = Image.new("RGB", (64, 64), (200, 120, 40))
    backend.render(RenderBatch(key=key, tasks=tasks(2, source=source)), on_step)
    assert calls == [(step, expected_total) for step in range(1, expected_total + 1)]


def test_stopping_raises_interrupted_at_once(backend: DiffusersBackend) -> None:
    """When on_step returns False the render stops after that step and raises GenerationInterrupted."""
    calls: list[int] = []

    def stop_after_two(step: int, total: int) -> bool:
        calls.append(step)
        return step < 2

    key = BatchKey(mode=RenderMode.TXT2IMG, width=64, height=64, steps=5, guidance=5.0, strength=None)
    with pytest.raises(GenerationInterrupted, match="after step 2 of 5"):
        backend.render(RenderBatch(key=key, tasks=tasks(2)), stop_after_two)
    assert calls == [1, 2]
    assert len(render(backend, TXT2IMG, tasks(1))) == 1  # the backend still works afterwards


def test_malformed_batches_are_rejected(backend: DiffusersBackend) -> None:
    """A batch with no tasks, or an img2img/upscale task with no source, fails before any work."""
    img2img = BatchKey(mode=RenderMode.IMG2IMG, width=64, height=64, steps=4, guidance=5.0, strength=0.6)
    source = Image.new("RGB", (64, 64))
    with pytest.raises(ValueError, match="needs a source image, missing for job 1 image 1"):
        backend.render(RenderBatch(key=img2img, tasks=[*tasks(1, source=source), tasks(2)[1]]), always)
    with pytest.raises(ValueError, match="no tasks"):
        backend.render(RenderBatch(key=TXT2IMG, tasks=[]), always)
    with pytest.raises(ValueError, match="Strength"):
        backend.render(
            RenderBatch(
                key=BatchKey(RenderMode.UPSCALE, 128, 128, 4, 5.0, 1.5), tasks=tasks(1, source=source)
            ),
            always,
        )
    with pytest.raises(ValueError, match="multiple of the VAE factor 8"):
        backend.render(
            RenderBatch(key=BatchKey(RenderMode.TXT2IMG, 60, 64, 4, 5.0, None), tasks=tasks(1)), always
        )


def test_out_of_memory_becomes_backend_out_of_memory(
    backend: DiffusersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA running out of memory is reported as BackendOutOfMemory (so the scheduler can split the batch),
    and a VAE left in another dtype by the failed call is put back, so the next batch works."""
    vae = backend._txt2img.vae

    def out_of_memory(*args: object, **kwargs: object) -> list[Image.Image]:
        vae.to(dtype=torch.bfloat16)  # what an OOM in the middle of an fp16 upcast decode leaves behind
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    with monkeypatch.context() as patch:
        patch.setattr(backend, "_call", out_of_memory)
        with pytest.raises(
            BackendOutOfMemory, match=r"^4 image\(s\) did not fit: CUDA out of memory\. Tried.*GiB$"
        ):
            backend.render(RenderBatch(key=TXT2IMG, tasks=tasks()), always)
    assert vae.dtype == torch.float32
    assert len(render(backend, TXT2IMG, tasks(1))) == 1


def test_native_resolution_before_and_after_load(tiny_model_path: Path) -> None:
    """The tiny model is 64 px (latent 8 × VAE factor 8), known before loading; hub ids are 1024."""
    fresh = DiffusersBackend(str(tiny_model_path), device="cpu")
    assert not fresh.loaded
    assert fresh.native_resolution == 64
    fresh.load()
    fresh.load()  # idempotent
    assert fresh.loaded
    assert fresh.native_resolution == 64
    assert (
        DiffusersBackend("stabilityai/stable-diffusion-xl-base-1.0", device="cpu").native_resolution == 1024
    )


def test_bfloat16_loads_without_fp16_variant_and_shares_weights(tiny_model_path: Path) -> None:
    """Half precision asks for fp16 files, falls back to the plain ones; img2img reuses the same modules."""
    half = DiffusersBackend(str(tiny_model_path), device="cpu", dtype="bfloat16")
    half.load()
    assert half._txt2img.unet.dtype == torch.bfloat16
    assert half._img2img.unet is half._txt2img.unet  # from_pipe shares weights, no second copy
    images = render(half, TXT2IMG, tasks(2))
    assert [image.size for image in images] == [(64, 64)] * 2
    assert np.asarray(images[0]).std() > 1  # a picture, not a blank


def test_tiny_model_is_reproducible_and_tokenizes_offline() -> None:
    """The same seed gives the same weights; the byte-level tokenizer pads and truncates to CLIP's 77."""
    first, second = make_tiny_pipeline(seed=3), make_tiny_pipeline(seed=3)
    for name, tensor in first.unet.state_dict().items():
        assert torch.equal(tensor, second.unet.state_dict()[name])
    tokenizer = make_tokenizer()
    ids = tokenizer("a cat " * 100, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77
    assert ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_img2img_schedule_steps_runs_at_least_one() -> None:
    """The schedule is lengthened only when int(steps × strength) would be zero."""
    assert img2img_schedule_steps(30, 0.6) == 30
    assert img2img_schedule_steps(1, 0.3) == 4
    assert img2img_schedule_steps(2, 0.5) == 2
