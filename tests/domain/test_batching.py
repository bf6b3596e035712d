"""The batching policy: compatible batches, round-robin fairness, bounded waits, plans."""

from __future__ import annotations

import itertools

import pytest

from bot.domain.batching import Batch, BatchingConfig, FairBatchPolicy, QueueEntry, Wait
from bot.domain.jobs import BatchKey, RenderMode

SQUARE = BatchKey(RenderMode.TXT2IMG, 1024, 1024, 30, 6.0, None)
WIDE = BatchKey(RenderMode.TXT2IMG, 1344, 768, 30, 6.0, None)
_ids = itertools.count(1)


def entry(user: int, key: BatchKey = SQUARE, *, at: float = 0.0, images: int = 4) -> QueueEntry:
    return QueueEntry(job_id=next(_ids), user_id=user, key=key, images=images, enqueued_at=at)


def run(policy: FairBatchPolicy, now: float = 100.0) -> Batch:
    decision = policy.schedule(now)
    assert isinstance(decision, Batch)
    return decision


def test_empty_queue_schedules_nothing() -> None:
    """No jobs, no batch."""
    assert FairBatchPolicy(BatchingConfig()).schedule(0.0) is None


def test_lone_job_starts_at_once() -> None:
    """With nothing else queued a job never waits for batch-mates."""
    policy = FairBatchPolicy(BatchingConfig(max_images=8, max_wait=0.02))
    job = entry(1, at=10.0)
    policy.add(job)
    decision = policy.schedule(10.0)
    assert isinstance(decision, Batch)
    assert decision.entries == (job,)
    assert len(policy) == 0


def test_compatible_jobs_share_a_batch_up_to_the_budget() -> None:
    """Same key jobs batch together until the image budget; the rest wait their turn."""
    policy = FairBatchPolicy(BatchingConfig(max_images=8))
    jobs = [entry(user) for user in (1, 2, 3)]
    for job in jobs:
        policy.add(job)
    first = run(policy)
    assert first.entries == tuple(jobs[:2])
    assert first.images == 8
    assert run(policy).entries == (jobs[2],)


def test_incompatible_jobs_never_mix() -> None:
    """Different sizes go in different batches."""
    policy = FairBatchPolicy(BatchingConfig(max_images=8, max_wait=0))
    square, wide = entry(1, SQUARE), entry(2, WIDE)
    policy.add(square)
    policy.add(wide)
    assert run(policy).entries == (square,)
    assert run(policy).entries == (wide,)


def test_one_member_with_many_jobs_does_not_block_another() -> None:
    """Member 1 queues 20 jobs first; member 2's single job runs in the second batch, not the 21st."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, max_wait=0))
    flood = [entry(1, at=float(i)) for i in range(20)]
    for job in flood:
        policy.add(job)
    late = entry(2, at=30.0)
    policy.add(late)
    assert run(policy).entries == (flood[0],)
    assert run(policy).entries == (late,)
    assert run(policy).entries == (flood[1],)


def test_round_robin_fills_one_job_per_member_per_pass() -> None:
    """A batch takes each member's next job before anyone's second."""
    policy = FairBatchPolicy(BatchingConfig(max_images=12, max_wait=0))
    a1, a2, a3 = entry(1, at=0), entry(1, at=1), entry(1, at=2)
    b1, c1 = entry(2, at=3), entry(3, at=4)
    for job in (a1, a2, a3, b1, c1):
        policy.add(job)
    assert set(run(policy).entries) == {a1, b1, c1}


def test_served_members_go_to_the_back() -> None:
    """After member 1 is served, members 2 and 3 go before member 1's next job."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, max_wait=0))
    a1, a2 = entry(1, at=0), entry(1, at=1)
    b1, c1 = entry(2, at=2), entry(3, at=3)
    for job in (a1, a2, b1, c1):
        policy.add(job)
    order = [run(policy).entries[0] for _ in range(4)]
    assert order == [a1, b1, c1, a2]


def test_burst_waits_for_batch_mates_but_not_forever() -> None:
    """With other jobs queued, a non-full batch is held until max_wait after its oldest job."""
    policy = FairBatchPolicy(BatchingConfig(max_images=8, max_wait=0.02))
    square, wide = entry(1, SQUARE, at=1.0), entry(2, WIDE, at=1.0)
    policy.add(square)
    policy.add(wide)
    decision = policy.schedule(1.005)
    assert decision == Wait(until=pytest.approx(1.02))
    mate = entry(3, SQUARE, at=1.01)
    policy.add(mate)
    assert run(policy, 1.011).entries == (square, mate)  # full now: no more waiting
    assert run(policy, 1.011).entries == (wide,)  # nothing else queued: no wait


def test_wait_expires() -> None:
    """Once the oldest job has waited max_wait, the partial batch starts."""
    policy = FairBatchPolicy(BatchingConfig(max_images=8, max_wait=0.02))
    square, wide = entry(1, SQUARE, at=1.0), entry(2, WIDE, at=1.0)
    policy.add(square)
    policy.add(wide)
    assert run(policy, 1.02).entries == (square,)


def test_remove_and_put_back() -> None:
    """A cancelled job is skipped; a batch that could not run goes back to the front."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, max_wait=0))
    a1, a2 = entry(1, at=0), entry(1, at=1)
    policy.add(a1)
    policy.add(a2)
    assert policy.remove(a1.job_id)
    assert not policy.remove(a1.job_id)
    batch = run(policy)
    assert batch.entries == (a2,)
    policy.put_back(batch.entries)
    assert a2.job_id in policy
    assert run(policy).entries == (a2,)


def test_out_of_memory_cap_shrinks_the_budget_for_that_key_only() -> None:
    """limit_key lowers the budget of one key."""
    policy = FairBatchPolicy(BatchingConfig(max_images=8, max_wait=0))
    policy.limit_key(SQUARE, 4)
    assert policy.budget(SQUARE) == 4
    assert policy.budget(WIDE) == 8
    for user in (1, 2):
        policy.add(entry(user))
    assert len(run(policy).entries) == 1


def test_plan_predicts_the_order_without_changing_state() -> None:
    """plan() lists the coming batches and leaves the queue as it was."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, max_wait=0))
    a1, a2, b1 = entry(1, at=0), entry(1, at=1), entry(2, at=2)
    for job in (a1, a2, b1):
        policy.add(job)
    planned = [batch.entries for batch in policy.plan()]
    assert planned == [(a1,), (b1,), (a2,)]
    assert len(policy) == 3
    assert [run(policy).entries for _ in range(3)] == planned


def test_duplicate_add_is_refused() -> None:
    """The same job cannot be queued twice."""
    policy = FairBatchPolicy(BatchingConfig())
    job = entry(1)
    policy.add(job)
    with pytest.raises(ValueError, match="already queued"):
        policy.add(job)


def test_returning_member_keeps_turn_while_others_wait() -> None:
    """A member served, idle briefly, then back does not jump ahead of members still waiting."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, max_wait=0))
    a1, b1, b2 = entry(1, at=0), entry(2, at=1), entry(2, at=2)
    for job in (a1, b1):
        policy.add(job)
    assert run(policy).entries == (a1,)
    policy.add(b2)
    a2 = entry(1, at=3)
    policy.add(a2)
    assert run(policy).entries == (b1,)
    assert run(policy).entries == (a2,)
    assert run(policy).entries == (b2,)


def test_member_served_while_alone_still_yields_to_a_newcomer() -> None:
    """Member 1's queue empties after a turn; when both then queue, the never-served member 2 goes first."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, max_wait=0))
    policy.add(entry(1, at=0))
    run(policy)
    a2, b1 = entry(1, at=1), entry(2, at=2)
    policy.add(a2)
    policy.add(b1)
    assert run(policy).entries == (b1,)


def test_plan_is_computed_once_per_change() -> None:
    """Asking for places again without a change reuses the plan; any change makes a new one."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, max_wait=0))
    policy.add(entry(1))
    first = policy.plan()
    assert policy.plan() is first
    policy.add(entry(2))
    second = policy.plan()
    assert second is not first
    assert len(second) == 2
    run(policy)
    assert len(policy.plan()) == 1


def test_a_job_served_elsewhere_uses_its_members_turn() -> None:
    """When another worker took member 1's job, member 2 goes before member 1's next one here."""
    policy = FairBatchPolicy(BatchingConfig(max_images=4, max_wait=0))
    a1, a2, b1 = entry(1, at=0), entry(1, at=1), entry(2, at=2)
    for job in (a1, a2, b1):
        policy.add(job)
    policy.remove(a1.job_id, served=True)
    assert run(policy).entries == (b1,)
    assert run(policy).entries == (a2,)
