"""The render contract: what the scheduler hands to whatever renders images, and what it gets back.

`inference/` (diffusers on a GPU) and the tests' doubles implement `GenerationBackend`; the scheduler hands
it a `RenderBatch` in a worker thread and gets Pillow images back; an `ImageClassifier`
(`inference/safety.py`) then scores them before they are posted. Pillow is only named for typing here, so
the domain stays standard-library Python.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.domain.jobs import BatchKey, ModelKind, RenderMode

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

WarmUpShape = tuple[int, int, int]  # (images in one call, width, height)
WARM_UP_STEPS = 2
WARM_UP_GUIDANCE = 5.0  # > 1: the classifier-free guidance path that jobs take


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


class ImageClassifier(Protocol):
    """Output safety: how likely each rendered image is unsafe, checked before it is posted."""

    def load(self) -> None:
        """Load the classifier; blocking, called once in the worker thread before the first batch."""

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        """P(unsafe) in [0, 1] for each image, in order; one batched call. Blocking; runs in the worker
        thread after a batch renders, on the full-size images."""


@runtime_checkable
class WarmsUp(Protocol):
    def warm_up(self, shapes: Sequence[WarmUpShape], *, guidance: float, model: str) -> float:
        """Render each (images, width, height) once with `model`; returns the seconds spent."""


def warm_up(
    backend: GenerationBackend,
    shapes: Sequence[WarmUpShape],
    *,
    guidance: float = WARM_UP_GUIDANCE,
    model: str = ModelKind.DEFAULT,
) -> float:
    """Warm each shape up before jobs come: with the backend's own `warm_up` when it has one (diffusers:
    short renders that compile each shape), else one short txt2img render per shape. Blocking.
    `guidance` > 1 takes the classifier-free guidance path (the UNet sees twice the images)."""
    if isinstance(backend, WarmsUp):
        return backend.warm_up(shapes, guidance=guidance, model=model)
    started = time.perf_counter()
    for images, width, height in shapes:
        key = BatchKey(RenderMode.TXT2IMG, width, height, WARM_UP_STEPS, guidance, None, model)
        tasks = [ImageTask(0, index, "warm-up", "", index) for index in range(images)]
        backend.render(RenderBatch(key, tasks), lambda step, total: True)
    elapsed = time.perf_counter() - started
    log.info("warmed up %d shape(s) in %.1f s", len(shapes), elapsed)
    return elapsed
