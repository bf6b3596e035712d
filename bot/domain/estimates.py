"""How long work takes, learned from the batches that ran: for ETAs shown to members."""

from __future__ import annotations

from bot.domain.jobs import BatchKey


def work_units(key: BatchKey, images: int) -> float:
    """Cost of a batch in "1024² image-steps"; an img2img job runs only `strength` of its steps."""
    steps = key.steps * (key.strength if key.strength is not None else 1.0)
    return images * max(1.0, steps) * (key.width * key.height) / (1024 * 1024)


class DurationEstimator:
    """An exponential moving average of seconds per work unit, plus a fixed cost per batch."""

    def __init__(self, seconds_per_unit: float = 0.05, batch_overhead: float = 0.5, smoothing: float = 0.3):
        self.seconds_per_unit = seconds_per_unit
        self.batch_overhead = batch_overhead
        self._smoothing = smoothing
        self._observed = False

    def estimate(self, key: BatchKey, images: int) -> float:
        return self.batch_overhead + work_units(key, images) * self.seconds_per_unit

    def observe(self, key: BatchKey, images: int, seconds: float) -> None:
        units = work_units(key, images)
        if units <= 0 or seconds <= 0:
            return
        rate = max(0.0, seconds - self.batch_overhead) / units
        if not self._observed:
            # The first real measurement replaces the guess instead of averaging with it.
            self.seconds_per_unit, self._observed = rate, True
        else:
            self.seconds_per_unit += self._smoothing * (rate - self.seconds_per_unit)
