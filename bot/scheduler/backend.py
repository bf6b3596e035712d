"""The contract between the scheduler and whatever renders images (diffusers on a GPU, or a test double).

The scheduler never imports torch: it hands a `RenderBatch` to a `GenerationBackend` in a worker thread
and gets Pillow images back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from bot.domain.jobs import BatchKey


@dataclass(frozen=True)
class ImageTask:
    """One image to make. Its result depends only on these fields and the batch key, never on batch-mates."""

    job_id: int
    index: int
    prompt: str
    negative_prompt: str
    seed: int
    source: Image.Image | None = None  # the starting image for img2img and upscale


@dataclass(frozen=True)
class RenderBatch:
    key: BatchKey
    tasks: Sequence[ImageTask]


# Called from the worker thread after each denoising step with (steps_done, total_steps).
# Returning False asks the backend to stop: it then raises GenerationInterrupted.
StepCallback = Callable[[int, int], bool]


class GenerationBackend(Protocol):
    @property
    def native_resolution(self) -> int:
        """The side of the model's square training size in pixels (1024 for SDXL)."""

    def load(self) -> None:
        """Load weights; blocking, called once in a worker thread before the first batch."""

    def render(self, batch: RenderBatch, on_step: StepCallback) -> list[Image.Image]:
        """Make one image per task, in task order. Blocking; runs in a worker thread.

        Raises BackendOutOfMemory when the batch does not fit (a smaller batch may), and
        GenerationInterrupted when `on_step` returned False. Any other exception fails the batch.
        """
