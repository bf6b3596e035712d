"""Job states and batch keys, and duration estimates."""

from __future__ import annotations

import pytest

from bot.domain.errors import InvalidTransition
from bot.domain.estimates import DurationEstimator, work_units
from bot.domain.jobs import BatchKey, JobKind, JobSpec, JobState, RenderMode, check_transition
from bot.domain.params import GenerationLimits, build_params


def test_allowed_and_forbidden_transitions() -> None:
    """Queued may run or be cancelled; final states never move."""
    check_transition(1, JobState.QUEUED, JobState.RUNNING)
    check_transition(1, JobState.RUNNING, JobState.QUEUED)
    for final in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        assert final.is_final
        with pytest.raises(InvalidTransition):
            check_transition(1, final, JobState.RUNNING)
    with pytest.raises(InvalidTransition):
        check_transition(1, JobState.QUEUED, JobState.SUCCEEDED)


def test_upscale_key_doubles_the_size_and_keeps_strength() -> None:
    """An upscale job batches at twice its source size, with its strength in the key."""
    params = build_params("a cat", limits=GenerationLimits(), seed=1)
    spec = JobSpec(JobKind.UPSCALE, user_id=1, params=params, source_image_id=3, strength=0.3)
    key = spec.batch_key()
    assert (key.mode, key.width, key.height, key.strength) == (RenderMode.UPSCALE, 2048, 2048, 0.3)
    assert spec.image_count == 1
    assert JobSpec(JobKind.GENERATE, user_id=1, params=params).batch_key() != key


def test_estimator_learns_from_observations() -> None:
    """The first measurement replaces the guess; later ones move the average."""
    key = BatchKey(RenderMode.TXT2IMG, 1024, 1024, 30, 6.0, None)
    assert work_units(key, 4) == 120
    estimator = DurationEstimator(seconds_per_unit=1.0, batch_overhead=0.0)
    estimator.observe(key, 4, 12.0)
    assert estimator.estimate(key, 4) == pytest.approx(12.0)
    estimator.observe(key, 4, 24.0)
    assert 12.0 < estimator.estimate(key, 4) < 24.0
