"""The batching policy: which queued jobs run together next, fair between members.

`schedule(now)` returns a `Batch` to run, a `Wait`, or None; it never touches the GPU, so it is tested
with a fake clock. Members take turns (round-robin, a deliberate departure from FIFO, so that one member
cannot hold the GPU for everyone), a batch is filled with compatible jobs up to an image budget, and a
lone job starts at once. The rules in full: docs/design-notes.md.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from bot.domain.jobs import BatchKey

MEMORY_TURNS = 1000  # how long an idle member's last turn is remembered


@dataclass(frozen=True)
class QueueEntry:
    job_id: int
    user_id: int
    key: BatchKey
    images: int
    enqueued_at: float  # monotonic seconds


@dataclass(frozen=True)
class BatchingConfig:
    max_images: int = 8  # images per pipeline call: the work budget
    max_wait: float = 0.02  # seconds a non-full batch may be held for batch-mates during a burst
    # Measured budgets per (width, height) of the keys (an upscale's key has the doubled size it renders
    # at), chosen from a batch profile (bot/domain/batch_profile.py). They apply to `profiled_model`'s
    # keys only, the model the profile measured; other sizes and models keep `max_images`.
    size_budgets: Mapping[tuple[int, int], int] = field(default_factory=dict, hash=False)
    profiled_model: str = "default"

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise ValueError("max_images must be at least 1")
        if self.max_wait < 0:
            raise ValueError("max_wait cannot be negative")
        if any(images < 1 for images in self.size_budgets.values()):
            raise ValueError("size budgets must be at least 1")

    def key_budget(self, key: BatchKey) -> int:
        """Images per call for `key` before any out-of-memory cap: the measured budget of its size, never
        more than `max_images`."""
        if key.model != self.profiled_model:
            return self.max_images
        return min(self.max_images, self.size_budgets.get((key.width, key.height), self.max_images))


@dataclass(frozen=True)
class Batch:
    key: BatchKey
    entries: tuple[QueueEntry, ...]

    @property
    def images(self) -> int:
        return sum(entry.images for entry in self.entries)

    @property
    def job_ids(self) -> tuple[int, ...]:
        return tuple(entry.job_id for entry in self.entries)


@dataclass(frozen=True)
class Wait:
    """Nothing should start before `until` (monotonic seconds), unless a new job arrives."""

    until: float


@dataclass
class _Member:
    queue: deque[QueueEntry] = field(default_factory=deque)
    last_turn: int = 0


class FairBatchPolicy:
    def __init__(self, config: BatchingConfig) -> None:
        self.config = config
        self._members: dict[int, _Member] = {}
        self._where: dict[int, int] = {}  # job id -> member id
        self._turn = 0
        self._key_caps: dict[BatchKey, int] = {}  # learned from out-of-memory errors
        # Bumped by every change, so plan() (quadratic in the queue) is computed once per change, however
        # many members ask for their place in the meantime.
        self.version = 0
        self._plan: tuple[int, tuple[Batch, ...]] | None = None

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._where

    def job_ids(self) -> set[int]:
        return set(self._where)

    def compatible(self, key: BatchKey) -> list[QueueEntry]:
        """Queued jobs that could share a batch with `key`, in the order they would run."""
        return [entry for batch in self.plan() if batch.key == key for entry in batch.entries]

    def add(self, entry: QueueEntry) -> None:
        if entry.job_id in self._where:
            raise ValueError(f"job {entry.job_id} is already queued")
        self._members.setdefault(entry.user_id, _Member()).queue.append(entry)
        self._where[entry.job_id] = entry.user_id
        self.version += 1

    def put_back(self, entries: Iterable[QueueEntry]) -> None:
        """Return jobs to the front of their members' queues (a batch that could not run)."""
        for entry in reversed(list(entries)):
            if entry.job_id in self._where:
                continue
            self._members.setdefault(entry.user_id, _Member()).queue.appendleft(entry)
            self._where[entry.job_id] = entry.user_id
            self.version += 1

    def remove(self, job_id: int, *, served: bool = False) -> bool:
        """Take a queued job out; False when it is not queued here.

        `served`: it runs elsewhere (another worker took it from a shared queue), so its member's turn
        counts as used here too; without that, each worker would keep its own turns and favour members
        whom the other workers are serving.
        """
        user_id = self._where.pop(job_id, None)
        if user_id is None:
            return False
        member = self._members[user_id]
        if member.queue[0].job_id == job_id:
            member.queue.popleft()  # the usual case: a batch takes each member's oldest jobs
        else:
            member.queue = deque(entry for entry in member.queue if entry.job_id != job_id)
        if served:
            self._turn += 1
            member.last_turn = self._turn
        self.version += 1
        return True

    def limit_key(self, key: BatchKey, images: int) -> None:
        """Serve `key` in batches of at most `images` from now on (the GPU ran out of memory above it)."""
        self._key_caps[key] = max(1, min(images, self._key_caps.get(key, images)))
        self.version += 1

    def budget(self, key: BatchKey) -> int:
        """Images per call for `key`: MAX_BATCH_IMAGES, lowered by the measured budget of its size and by
        what running out of memory taught."""
        allowed = self.config.key_budget(key)
        return min(allowed, self._key_caps.get(key, allowed))

    def schedule(self, now: float) -> Batch | Wait | None:
        batch = self._form(self._members)
        if batch is None:
            return None
        others_waiting = len(self._where) > len(batch.entries)
        deadline = min(entry.enqueued_at for entry in batch.entries) + self.config.max_wait
        if batch.images < self.budget(batch.key) and others_waiting and now < deadline:
            return Wait(until=deadline)
        self._commit(batch)
        return batch

    def plan(self) -> tuple[Batch, ...]:
        """The batches that would run, in order, if no more jobs arrived: for queue positions and ETAs."""
        if self._plan is None or self._plan[0] != self.version:
            self._plan = (self.version, tuple(self._simulate()))
        return self._plan[1]

    def _simulate(self) -> list[Batch]:
        members = {uid: _Member(deque(m.queue), m.last_turn) for uid, m in self._members.items()}
        turn = self._turn
        batches: list[Batch] = []
        while (batch := self._form(members)) is not None:
            turn += 1
            for entry in batch.entries:
                members[entry.user_id].queue.remove(entry)
                members[entry.user_id].last_turn = turn
            batches.append(batch)
        return batches

    def _order(self, members: dict[int, _Member]) -> list[int]:
        waiting = [uid for uid, member in members.items() if member.queue]
        return sorted(waiting, key=lambda uid: (members[uid].last_turn, members[uid].queue[0].enqueued_at))

    def _form(self, members: dict[int, _Member]) -> Batch | None:
        order = self._order(members)
        if not order:
            return None
        head = members[order[0]].queue[0]
        budget = self.budget(head.key)
        # Each member's compatible jobs, read lazily: a batch needs only a few jobs from the first members
        # in turn, while the queue may hold thousands from hundreds of members.
        streams: dict[int, Iterator[QueueEntry]] = {}

        def compatible(uid: int) -> Iterator[QueueEntry]:
            if uid not in streams:
                streams[uid] = (e for e in members[uid].queue if e.key == head.key)
            return streams[uid]

        next(compatible(order[0]))  # the head: its member's job for the first pass
        chosen = [head]
        spent = head.images
        # One job per member per pass, in turn order, so every member's next job comes before anyone's second.
        first_pass = True
        candidates = dict.fromkeys(order)  # members that may still have a compatible job, in turn order
        while spent < budget and candidates:
            for uid in list(candidates):
                if first_pass and uid == order[0]:
                    continue
                job = next(compatible(uid), None)
                if job is None:
                    del candidates[uid]
                elif spent + job.images <= budget:
                    chosen.append(job)
                    spent += job.images
                if spent >= budget:
                    break
            first_pass = False
        return Batch(key=head.key, entries=tuple(chosen))

    def _commit(self, batch: Batch) -> None:
        self._turn += 1
        self.version += 1
        for entry in batch.entries:
            self.remove(entry.job_id)
            self._members[entry.user_id].last_turn = self._turn
        # Forget members idle for MEMORY_TURNS turns, to bound memory. Back again, they count as never
        # served, which changes little: everyone waiting was served more recently than they were.
        idle = [
            uid for uid, m in self._members.items() if not m.queue and m.last_turn < self._turn - MEMORY_TURNS
        ]
        for user_id in idle:
            del self._members[user_id]


def call_sizes(job_images: Iterable[int], budget: int) -> tuple[int, ...]:
    """Every number of images one pipeline call can have for a key whose jobs have `job_images` images each
    and whose budget is `budget`: the warm-up shapes under torch.compile.

    A batch holds jobs whose images sum to at most the budget, or a single job that is larger on its own;
    the scheduler then renders a batch in calls of at most `budget` images (`_render_in_budget`), so a job
    larger than the budget becomes full calls and one remainder.
    """
    if budget < 1:
        raise ValueError("budget must be at least 1")
    sizes = sorted({images for images in job_images if images >= 1})
    reachable = {0}
    for total in range(1, budget + 1):
        if any(total - images in reachable for images in sizes):
            reachable.add(total)
    calls = reachable - {0}
    for images in sizes:
        if images > budget:
            calls.add(budget)
            if images % budget:
                calls.add(images % budget)
    return tuple(sorted(calls))
