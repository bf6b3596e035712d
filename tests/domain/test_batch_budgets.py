"""The batching policy with measured budgets per size, and the shapes a warm-up must cover."""

from __future__ import annotations

import itertools

import pytest

from bot.domain.batching import Batch, BatchingConfig, FairBatchPolicy, QueueEntry, Wait, call_sizes
from bot.domain.clock import FakeClock
from bot.domain.jobs import BatchKey, RenderMode
from bot.domain.warm_up import served_sizes, warm_up_shapes

SQUARE = BatchKey(RenderMode.TXT2IMG, 1024, 1024, 30, 6.0, None)
WIDE = BatchKey(RenderMode.TXT2IMG, 1344, 768, 30, 6.0, None)
UPSCALE = BatchKey(RenderMode.UPSCALE, 2048, 2048, 30, 6.0, 0.3)
_ids = itertools.count(1)


def entry(user: int, key: BatchKey, clock: FakeClock, *, images: int = 4) -> QueueEntry:
    return QueueEntry(job_id=next(_ids), user_id=user, key=key, images=images, enqueued_at=clock.monotonic())


def test_a_measured_budget_limits_its_size_only() -> None:
    """1024² measured best at 4 images: two jobs there run apart; 1344×768 (not measured) keeps 8."""
    clock = FakeClock()
    policy = FairBatchPolicy(BatchingConfig(max_images=8, max_wait=0, size_budgets={(1024, 1024): 4}))
    square = [entry(user, SQUARE, clock) for user in (1, 2)]
    wide = [entry(user, WIDE, clock) for user in (3, 4)]
    for job in square + wide:
        policy.add(job)
    assert policy.budget(SQUARE) == 4
    assert policy.budget(WIDE) == 8
    batches = []
    while isinstance(decision := policy.schedule(clock.monotonic()), Batch):
        batches.append(decision)
    # Members in turn order (1, 2, 3, 4): the square jobs cannot share a call, the wide ones do.
    assert [batch.entries for batch in batches] == [(square[0],), (square[1],), (wide[0], wide[1])]


def test_a_full_batch_under_a_measured_budget_does_not_wait() -> None:
    """A batch that fills its measured budget starts at once, even during a burst."""
    clock = FakeClock()
    policy = FairBatchPolicy(BatchingConfig(max_images=8, max_wait=1.0, size_budgets={(1024, 1024): 4}))
    first, second = entry(1, SQUARE, clock), entry(2, SQUARE, clock)
    policy.add(first)
    policy.add(second)
    decision = policy.schedule(clock.monotonic())
    assert isinstance(decision, Batch)
    assert decision.entries == (first,)


def test_a_partial_batch_still_waits_for_batch_mates_up_to_its_budget() -> None:
    """Upscales (1 image) at a size measured best at 2: the first waits for a second, then both run."""
    clock = FakeClock()
    config = BatchingConfig(max_images=8, max_wait=0.5, size_budgets={(2048, 2048): 2})
    policy = FairBatchPolicy(config)
    first = entry(1, UPSCALE, clock, images=1)
    policy.add(first)
    policy.add(entry(2, WIDE, clock))  # something else is queued: a burst
    assert isinstance(policy.schedule(clock.monotonic()), Wait)
    clock.advance(0.1)
    second, third = entry(3, UPSCALE, clock, images=1), entry(4, UPSCALE, clock, images=1)
    policy.add(second)
    policy.add(third)
    decision = policy.schedule(clock.monotonic())
    assert isinstance(decision, Batch)
    assert decision.entries == (first, second)


def test_max_batch_images_caps_a_measured_budget() -> None:
    """A profile measured at 8 never lifts the budget above MAX_BATCH_IMAGES."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, size_budgets={(1024, 1024): 8}))
    assert policy.budget(SQUARE) == 4


def test_out_of_memory_caps_a_measured_budget() -> None:
    """What running out of memory taught lowers the measured budget further, for that key only."""
    policy = FairBatchPolicy(BatchingConfig(max_images=8, size_budgets={(1024, 1024): 4, (1344, 768): 8}))
    policy.limit_key(SQUARE, 2)
    assert policy.budget(SQUARE) == 2
    assert policy.budget(WIDE) == 8
    policy.limit_key(WIDE, 6)
    assert policy.budget(WIDE) == 6


def test_budgets_apply_to_the_profiled_model_only() -> None:
    """Another model's keys at the same size (a fast few-step model, say) keep MAX_BATCH_IMAGES."""
    config = BatchingConfig(max_images=8, size_budgets={(1024, 1024): 2})
    other = BatchKey(RenderMode.TXT2IMG, 1024, 1024, 4, 0.0, None, model="fast")
    assert config.key_budget(SQUARE) == 2
    assert config.key_budget(other) == 8


def test_size_budgets_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size budgets"):
        BatchingConfig(size_budgets={(1024, 1024): 0})


def test_call_sizes_are_the_sums_of_whole_jobs_the_budget_allows() -> None:
    """4-image jobs make calls of 4 and 8 under 8; 1-image jobs make every count; a larger job is cut."""
    assert call_sizes([4], 8) == (4, 8)
    assert call_sizes([4], 12) == (4, 8, 12)
    assert call_sizes([1], 3) == (1, 2, 3)
    assert call_sizes([4, 1], 6) == (1, 2, 3, 4, 5, 6)
    assert call_sizes([4], 2) == (2,)  # a 4-image job in calls of 2
    assert call_sizes([4], 3) == (1, 3)  # 3 + 1
    with pytest.raises(ValueError, match="budget"):
        call_sizes([4], 0)


def test_served_sizes_are_the_buckets_and_their_upscale_doubles() -> None:
    """Nine SDXL buckets at 1024, each with its 2× upscale size."""
    served = served_sizes(1024)
    assert len(served) == 18
    assert served[(1024, 1024)] == {RenderMode.TXT2IMG, RenderMode.IMG2IMG}
    assert served[(2688, 1536)] == {RenderMode.UPSCALE}


def test_warm_up_shapes_follow_the_budgets() -> None:
    """1024² measured at 4: only 4-image calls; its upscale size is unmeasured: 1..MAX_BATCH_IMAGES."""
    config = BatchingConfig(max_images=8, size_budgets={(1024, 1024): 4})
    shapes = warm_up_shapes(config, 1024, [(1024, 1024), (2048, 2048), (1344, 768)])
    assert shapes == (
        (4, 1024, 1024),
        *((images, 2048, 2048) for images in range(1, 9)),
        (4, 1344, 768),
        (8, 1344, 768),
    )


def test_every_served_size_is_warmed_by_default() -> None:
    """Without a list: 9 buckets × {4, 8} plus 9 upscale sizes × 1..8 = 90 shapes at MAX_BATCH_IMAGES=8."""
    shapes = warm_up_shapes(BatchingConfig(max_images=8), 1024)
    assert len(shapes) == 9 * 2 + 9 * 8
    assert len(warm_up_shapes(BatchingConfig(max_images=4), 1024)) == 9 * 1 + 9 * 4


def test_a_size_the_bot_never_renders_is_refused() -> None:
    with pytest.raises(ValueError, match="1000x1000 is not a size the bot renders"):
        warm_up_shapes(BatchingConfig(), 1024, [(1000, 1000)])
