"""Fast mode in the domain: the --fast / --quality flags, the fast model's bounds, and its own batch key."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bot.domain.batching import Batch, BatchingConfig, FairBatchPolicy, QueueEntry
from bot.domain.errors import InvalidRequest
from bot.domain.flags import parse_prompt
from bot.domain.jobs import JobKind, JobSpec, ModelKind
from bot.domain.params import GenerationLimits
from bot.domain.requests import FAST_UNAVAILABLE, ImagineRequest, request_from_text

FULL = GenerationLimits(base_resolution=64, default_steps=30, max_steps=60, default_guidance=6.0)
FAST = GenerationLimits(
    base_resolution=64, default_steps=4, max_steps=8, default_guidance=0.0, max_guidance=2.0
)


def request(text: str, **kwargs: Any) -> ImagineRequest:
    options: dict[str, Any] = {"limits": FULL, "fast_limits": FAST, "rng": random.Random(0), **kwargs}
    return request_from_text(text, **options)


def test_fast_and_quality_flags_take_no_value() -> None:
    """--fast and --quality are switches; absent, the choice is left to the server (None)."""
    assert parse_prompt("a cat --fast").fast is True
    assert parse_prompt("a cat --quality --seed 3").fast is False
    assert parse_prompt("a cat —FAST").fast is True  # any case, a phone's dash
    assert parse_prompt("a cat").fast is None
    assert parse_prompt("a cat --fast --ar 16:9").aspect == "16:9"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a cat --fast yes", "takes no value"),
        ("a cat --fast --quality", "give one of them"),
        ("a cat --fast --fast", "twice"),
    ],
)
def test_malformed_switches_are_refused(text: str, needle: str) -> None:
    """A value after a switch, both switches, or one twice: refused with a message that says so."""
    with pytest.raises(InvalidRequest, match=needle):
        parse_prompt(text)


def test_fast_job_gets_few_steps_and_no_guidance() -> None:
    """--fast picks the fast model with its own defaults: few steps, guidance 0 (no CFG)."""
    made = request("a cat --fast")
    assert made.model is ModelKind.FAST
    assert (made.params.steps, made.params.guidance) == (4, 0.0)
    full = request("a cat")
    assert full.model is ModelKind.DEFAULT
    assert (full.params.steps, full.params.guidance) == (30, 6.0)


def test_fast_bounds_are_its_own() -> None:
    """--steps and --guidance with --fast are checked against the fast range, and the error says how
    to get the full model; within the range they are kept."""
    with pytest.raises(InvalidRequest, match=r"between 1 and 8; got 30.*--quality"):
        request("a cat --fast --steps 30")
    with pytest.raises(InvalidRequest, match=r"between 0 and 2; got 6.*--quality"):
        request("a cat --fast --guidance 6")
    made = request("a cat --fast --steps 8 --guidance 1.5")
    assert (made.params.steps, made.params.guidance) == (8, 1.5)


def test_server_default_and_member_choice() -> None:
    """A server default of fast applies unless the member says --quality (or fast=False); the option and
    the flag must agree."""
    assert request("a cat", fast_by_default=True).model is ModelKind.FAST
    quality = request("a cat --quality --steps 30", fast_by_default=True)
    assert (quality.model, quality.params.steps) == (ModelKind.DEFAULT, 30)
    assert request("a cat", fast_by_default=True, fast=False).model is ModelKind.DEFAULT
    assert request("a cat", fast=True).model is ModelKind.FAST
    with pytest.raises(InvalidRequest, match="option says yes but the prompt says `--quality`"):
        request("a cat --quality", fast=True)


def test_without_a_fast_model_fast_is_refused_kindly_and_the_default_ignored() -> None:
    """No fast model: --fast is refused with a friendly message; a server default of fast falls back to
    the full model, so members still get images."""
    with pytest.raises(InvalidRequest) as refused:
        request("a cat --fast", fast_limits=None)
    assert str(refused.value) == FAST_UNAVAILABLE
    assert refused.value.field == "fast"
    fallback = request("a cat", fast_limits=None, fast_by_default=True)
    assert fallback.model is ModelKind.DEFAULT
    with pytest.raises(InvalidRequest, match="Fast mode isn't set up"):
        request_from_text("a cat --fast", limits=FULL)


def test_fast_jobs_have_their_own_batch_key() -> None:
    """Two jobs alike in all but the model have different batch keys."""
    params = request("a cat --steps 4 --guidance 0 --seed 1", fast_limits=None).params
    full = JobSpec(JobKind.GENERATE, user_id=1, params=params)
    fast = JobSpec(JobKind.GENERATE, user_id=2, params=params, model=ModelKind.FAST)
    assert fast.is_fast
    assert not full.is_fast
    assert fast.batch_key().model == "fast"
    assert full.batch_key() != fast.batch_key()
    assert full.batch_key() == JobSpec(JobKind.GENERATE, user_id=3, params=params).batch_key()


def test_fast_and_full_jobs_never_share_a_batch() -> None:
    """The policy batches fast jobs with fast jobs and full with full, however they are interleaved."""
    params = request("a cat --steps 4 --guidance 0 --seed 1", fast_limits=None).params
    keys = {
        model: JobSpec(JobKind.GENERATE, user_id=1, params=params, model=model).batch_key()
        for model in ModelKind
    }
    policy = FairBatchPolicy(BatchingConfig(max_images=16, max_wait=0))
    models = [ModelKind.FAST, ModelKind.DEFAULT, ModelKind.FAST, ModelKind.DEFAULT]
    for job_id, model in enumerate(models, start=1):
        policy.add(QueueEntry(job_id, user_id=job_id, key=keys[model], images=4, enqueued_at=0.0))
    batches = []
    while (decision := policy.schedule(1.0)) is not None:
        assert isinstance(decision, Batch)
        batches.append(decision)
    assert [(batch.key.model, batch.job_ids) for batch in batches] == [("fast", (1, 3)), ("default", (2, 4))]
