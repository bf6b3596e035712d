"""Output safety: what happens to a generated image that the classifier scores as unsafe.

Every image is scored in the worker before anyone sees it (P(unsafe), 0..1). Each server chooses one mode:

- `block`: an image at or over the threshold is held; the member is told, nothing is posted, and a
  moderator may release it;
- `spoiler` (the default): it is posted behind Discord's spoiler blur, with a warning;
- `age-restricted`: it is shown in age-restricted (NSFW) channels and spoilered everywhere else.

An image a moderator released is shown as in an age-restricted channel: spoilered outside one.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_THRESHOLD = 0.6


class SafetyMode(enum.StrEnum):
    BLOCK = "block"
    SPOILER = "spoiler"
    AGE_RESTRICTED = "age-restricted"


class Shown(enum.StrEnum):
    """How one result is shown, stored with its images."""

    PLAIN = "plain"  # every image under the threshold, or an age-restricted channel allows it
    SPOILER = "spoiler"
    HELD = "held"  # not posted until a moderator releases it


@dataclass(frozen=True)
class SafetyPolicy:
    mode: SafetyMode = SafetyMode.SPOILER
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"the safety threshold must be over 0 and at most 1; got {self.threshold}")

    def flagged(self, scores: Sequence[float | None]) -> bool:
        """Whether any image's score reaches the threshold (an image never scored counts as unsafe only
        under `block`, where showing it unchecked is what the server asked to avoid)."""
        return any(
            (self.mode is SafetyMode.BLOCK) if score is None else score >= self.threshold for score in scores
        )

    def shown(self, scores: Sequence[float | None], *, age_restricted_channel: bool, released: bool) -> Shown:
        """How a result with these images' scores is shown in this channel."""
        if not self.flagged(scores):
            return Shown.PLAIN
        if released or self.mode is SafetyMode.AGE_RESTRICTED:
            return Shown.PLAIN if age_restricted_channel else Shown.SPOILER
        if self.mode is SafetyMode.BLOCK:
            return Shown.HELD
        return Shown.SPOILER
