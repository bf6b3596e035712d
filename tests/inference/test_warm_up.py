"""`DiffusersBackend.warm_up` on the tiny pipeline: each shape reaches the real UNet, at its size."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from bot.domain.errors import BackendOutOfMemory
from bot.domain.render import RenderBatch, StepCallback, warm_up
from inference.pipeline import DiffusersBackend

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"
)


@pytest.fixture
def unet_inputs(backend: DiffusersBackend) -> Iterator[list[tuple[int, ...]]]:
    """The latent shape of every UNet forward while the test runs."""
    seen: list[tuple[int, ...]] = []

    def record(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        seen.append(tuple(sample.shape))

    unet: torch.nn.Module = backend._txt2img.unet  # the loaded pipeline's UNet (no public handle)
    handle = unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_warm_up_runs_the_unet_at_every_shape(
    backend: DiffusersBackend, unet_inputs: list[tuple[int, ...]]
) -> None:
    """(images, width, height) → 2 steps of the CFG UNet on 2×images latents of height/8 × width/8."""
    seconds = warm_up(backend, [(1, 64, 64), (2, 80, 48)])
    assert seconds > 0
    assert unet_inputs == [(2, 4, 8, 8)] * 2 + [(4, 4, 6, 10)] * 2


def test_a_shape_that_does_not_fit_is_skipped(
    backend: DiffusersBackend, monkeypatch: pytest.MonkeyPatch, unet_inputs: list[tuple[int, ...]]
) -> None:
    """Out of memory at one shape: logged and skipped; the other shapes are still warmed."""
    real_render = backend.render

    def render(batch: RenderBatch, on_step: StepCallback) -> Any:
        if len(batch.tasks) > 1:
            raise BackendOutOfMemory("2 image(s) did not fit")
        return real_render(batch, on_step)

    monkeypatch.setattr(backend, "render", render)
    backend.warm_up([(2, 64, 64), (1, 64, 64)])
    assert unet_inputs == [(2, 4, 8, 8)] * 2
