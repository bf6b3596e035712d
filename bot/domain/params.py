"""Generation parameters: what one job asks the model for, validated before it is queued."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, replace
from fractions import Fraction

from bot.domain.errors import InvalidRequest

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 1500
MAX_NEGATIVE_CHARS = 1000

# SDXL was trained on these buckets of about one megapixel (SDXL report, appendix); images at other
# shapes come out worse, so an aspect ratio is snapped to the nearest of them.
SDXL_BUCKETS_1024: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (896, 1152),
    (1216, 832),
    (832, 1216),
    (1344, 768),
    (768, 1344),
    (1536, 640),
    (640, 1536),
)
MAX_ASPECT = 3.0  # wider than 3:1 is far outside every trained bucket

# The aspect choices offered in menus; any W:H within MAX_ASPECT is accepted as a flag.
ASPECT_CHOICES: tuple[str, ...] = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21")


@dataclass(frozen=True)
class GenerationLimits:
    """The bounds a guild allows; the defaults are what a job gets when it does not say."""

    base_resolution: int = 1024
    default_steps: int = 30
    max_steps: int = 60
    default_guidance: float = 6.0
    max_guidance: float = 20.0
    variation_strength: float = 0.6
    upscale_strength: float = 0.3


@dataclass(frozen=True)
class AspectRatio:
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> AspectRatio:
        """Parse `16:9` (also `16x9` or `16/9`); the error names what was given and what is allowed."""
        cleaned = text.strip().lower().replace("x", ":").replace("/", ":")
        parts = cleaned.split(":")
        # ASCII digits only, and few of them: `²` or a 400-digit side are not ratios anyone means.
        if len(parts) != 2 or not all(re.fullmatch(r"[0-9]{1,4}", part) for part in parts):
            raise InvalidRequest(
                f"`{text}` is not an aspect ratio. Use width:height, for example `16:9` or `2:3`.",
                field="aspect",
            )
        width, height = int(parts[0]), int(parts[1])
        if width == 0 or height == 0:
            raise InvalidRequest(f"Aspect ratio `{text}` has a zero side.", field="aspect")
        if max(width / height, height / width) > MAX_ASPECT:
            raise InvalidRequest(
                f"Aspect ratio `{text}` is too extreme: keep it between 1:3 and 3:1.", field="aspect"
            )
        ratio = Fraction(width, height)
        return cls(ratio.numerator, ratio.denominator)

    def __str__(self) -> str:
        return f"{self.width}:{self.height}"

    def bucket(self, base_resolution: int = 1024) -> tuple[int, int]:
        """The trained SDXL size nearest to this ratio (in log space), scaled to the model's resolution."""
        target = math.log(self.width / self.height)
        width, height = min(SDXL_BUCKETS_1024, key=lambda wh: abs(math.log(wh[0] / wh[1]) - target))
        return scale_size(width, height, base_resolution)


def scale_size(width: int, height: int, base_resolution: int) -> tuple[int, int]:
    """Scale a 1024-based bucket to another native resolution, keeping sides multiples of 16."""
    if base_resolution == 1024:
        return width, height
    factor = base_resolution / 1024

    def side(value: int) -> int:
        return max(16, round(value * factor / 16) * 16)

    return side(width), side(height)


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    aspect: str = "1:1"

    def with_seed(self, seed: int) -> GenerationParams:
        return replace(self, seed=seed)

    def image_seeds(self, count: int) -> tuple[int, ...]:
        """Seeds of a job's images: consecutive, so any single image can be re-made from the shown seed."""
        return tuple((self.seed + index) % (MAX_SEED + 1) for index in range(count))


def random_seed(rng: random.Random | None = None) -> int:
    return (rng or random).randint(0, MAX_SEED)


def build_params(
    prompt: str,
    *,
    limits: GenerationLimits,
    negative_prompt: str | None = None,
    aspect: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    rng: random.Random | None = None,
) -> GenerationParams:
    """Validate every field against `limits`, fill defaults, and snap the aspect ratio to a bucket."""
    prompt = " ".join(prompt.split())
    if not prompt:
        raise InvalidRequest("The prompt is empty: describe the image you want.", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"The prompt is {len(prompt)} characters long; the most is {MAX_PROMPT_CHARS}.", field="prompt"
        )
    negative = " ".join((negative_prompt or "").split())
    if len(negative) > MAX_NEGATIVE_CHARS:
        raise InvalidRequest(
            f"The negative prompt is {len(negative)} characters long; the most is {MAX_NEGATIVE_CHARS}.",
            field="negative",
        )
    ratio = AspectRatio.parse(aspect or "1:1")
    width, height = ratio.bucket(limits.base_resolution)
    if steps is None:
        steps = min(limits.default_steps, limits.max_steps)
    if not 1 <= steps <= limits.max_steps:
        raise InvalidRequest(f"Steps must be between 1 and {limits.max_steps}; got {steps}.", field="steps")
    if guidance is None:
        guidance = limits.default_guidance
    if not (math.isfinite(guidance) and 0 <= guidance <= limits.max_guidance):
        raise InvalidRequest(
            f"Guidance must be between 0 and {limits.max_guidance:g}; got {guidance:g}.", field="guidance"
        )
    if seed is None:
        seed = random_seed(rng)
    if not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"The seed must be between 0 and {MAX_SEED}; got {seed}.", field="seed")
    return GenerationParams(
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        steps=steps,
        guidance=float(guidance),
        seed=seed,
        aspect=str(ratio),
    )
