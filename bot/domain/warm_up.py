"""Which shapes to warm up at start: the (images per call, width, height) the scheduler can send the model.

Under torch.compile each new input shape compiles again (minutes with max-autotune), so the shapes a
member's job could need are rendered once before the bot reports ready. They are, for every size served:
- the sizes: each aspect-ratio bucket at the base resolution (txt2img and variations) and its double
  (upscales), or only those WARM_UP_BUCKETS lists;
- the images per call: the sums of whole jobs the budget of that size allows (4-image jobs make 4 and 8
  under a budget of 8; 1-image upscales make 1 to 8), and the pieces a job larger than the budget is cut
  into (`call_sizes`). Sizes that only out-of-memory errors would teach are not known in advance.

Plain data and code: no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.batching import BatchingConfig, call_sizes
from bot.domain.jobs import IMAGES_PER_JOB, RENDER_MODE, BatchKey, ModelKind, RenderMode
from bot.domain.params import SDXL_BUCKETS_1024, scale_size

Size = tuple[int, int]
WarmUpShape = tuple[int, int, int]  # (images in one call, width, height)


def served_sizes(base_resolution: int) -> dict[Size, set[RenderMode]]:
    """Every (width, height) a batch key can have, in bucket order, with the modes rendered at it."""
    served: dict[Size, set[RenderMode]] = {}
    for width, height in SDXL_BUCKETS_1024:
        size = scale_size(width, height, base_resolution)
        served.setdefault(size, set()).update({RenderMode.TXT2IMG, RenderMode.IMG2IMG})
    for width, height in list(served):
        served.setdefault((width * 2, height * 2), set()).add(RenderMode.UPSCALE)
    return served


def warm_up_shapes(
    config: BatchingConfig,
    base_resolution: int,
    only: Sequence[Size] | None = None,
    *,
    model: str = ModelKind.DEFAULT,
) -> tuple[WarmUpShape, ...]:
    """The shapes to warm for `model`, size by size, fewest images first (its budgets decide the images
    per call); `only` limits the sizes (each must be served).

    Raises ValueError naming a size in `only` that the bot never renders.
    """
    served = served_sizes(base_resolution)
    if only is not None:
        unknown = [size for size in only if size not in served]
        if unknown:
            listed = ", ".join(f"{width}x{height}" for width, height in served)
            raise ValueError(
                f"{', '.join(f'{w}x{h}' for w, h in unknown)} is not a size the bot renders at base "
                f"resolution {base_resolution}; the sizes are {listed}"
            )
    shapes: list[WarmUpShape] = []
    for size in only if only is not None else list(served):
        width, height = size
        images: set[int] = set()
        for mode in served[size]:
            job_images = [
                IMAGES_PER_JOB[kind] for kind, kind_mode in RENDER_MODE.items() if kind_mode is mode
            ]
            key = BatchKey(
                mode=mode, width=width, height=height, steps=1, guidance=0.0, strength=None, model=model
            )
            images.update(call_sizes(job_images, config.key_budget(key)))
        shapes.extend((count, width, height) for count in sorted(images))
    return tuple(shapes)
